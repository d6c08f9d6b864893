//! Instance profiles: a named container for one role, as EC2 instances
//! (and Berth's container instances) are given a role through one.

use berth_model::authz::Requirement;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView};
use berth_util::ids::unique_id;
use berth_util::time::{format_iso8601, now_secs};

use super::tags::{instance_profile_not_found, Tagged};
use super::{list_by_path, parse_tags, role_xml, tags_xml, IamService, Kind};
use crate::records::{
    instance_profile_key, instance_profiles_prefix, role_key, InstanceProfileRecord, RoleRecord,
};
use crate::role_not_found;
use crate::util::{
    already_exists, check_name, check_path, delete_conflict, get_json, limit_exceeded, list_json,
    paginate, to_bytes, Params, Xml,
};

/// IAM's quota of roles per instance profile.
const MAX_ROLES: usize = 1;

/// An instance profile with its roles (the role records that still exist).
pub(super) fn profile_xml(
    x: &mut Xml,
    tag: &str,
    profile: &InstanceProfileRecord,
    view: &dyn ReadView,
    account: &str,
) -> Result<(), AwsError> {
    x.open(tag)
        .text("Path", &profile.path)
        .text("InstanceProfileName", &profile.name)
        .text("InstanceProfileId", &profile.id)
        .text("Arn", &profile.arn(account))
        .text("CreateDate", &format_iso8601(profile.created))
        .open("Roles");
    for name in &profile.roles {
        if let Some(role) = get_json::<RoleRecord>(view, &role_key(account, name))? {
            role_xml(x, "member", &role, account);
        }
    }
    x.close("Roles");
    if tag != "member" {
        tags_xml(x, &profile.tags);
    }
    x.close(tag);
    Ok(())
}

fn profile_name<'a>(p: &Params<'a>) -> Result<&'a str, AwsError> {
    let name = p.required("InstanceProfileName", "instanceProfileName")?;
    check_name(name, "instanceProfileName", 1, 128)?;
    Ok(name)
}

impl IamService {
    pub(super) async fn create_instance_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = profile_name(p)?;
        let path = p.get("Path").unwrap_or("/");
        check_path(path)?;
        let tags = parse_tags(p)?;
        ctx.authorize(&[Requirement::new(
            "iam:CreateInstanceProfile",
            format!(
                "arn:aws:iam::{}:instance-profile{path}{name}",
                ctx.account_id
            ),
        )
        .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
        let profile = InstanceProfileRecord {
            name: name.to_string(),
            path: path.to_string(),
            id: unique_id("AIPA"),
            created: now_secs(),
            roles: Vec::new(),
            tags,
        };
        let key = instance_profile_key(&ctx.account_id, name);
        let value = to_bytes(&profile)?;
        let taken = already_exists(format!("Instance Profile {name} already exists."));
        self.iam
            .update(move |view| {
                if view.get(&key).is_some() {
                    return Err(taken.clone());
                }
                Ok((vec![Op::put(key.clone(), value.clone())], ()))
            })
            .await?;
        let mut x = Xml::new();
        profile_xml(
            &mut x,
            "InstanceProfile",
            &profile,
            self.iam.store(),
            &ctx.account_id,
        )?;
        Ok(x.finish())
    }

    /// The stored profile an authorized call found.
    fn found_profile(entity: &super::tags::Entity) -> Result<InstanceProfileRecord, AwsError> {
        entity
            .value
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| instance_profile_not_found(&entity.given))
    }

    pub(super) fn get_instance_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        profile_name(p)?;
        let entity = self.authorize_entity(
            ctx,
            Tagged::InstanceProfile,
            p,
            "iam:GetInstanceProfile",
            |r| r,
        )?;
        let profile = Self::found_profile(&entity)?;
        let mut x = Xml::new();
        profile_xml(
            &mut x,
            "InstanceProfile",
            &profile,
            self.iam.store(),
            &ctx.account_id,
        )?;
        Ok(x.finish())
    }

    pub(super) fn list_instance_profiles(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let prefix = p.get("PathPrefix").unwrap_or("/");
        crate::util::check_path_prefix(prefix)?;
        ctx.authorize(&[Requirement::new(
            "iam:ListInstanceProfiles",
            format!("arn:aws:iam::{}:instance-profile{prefix}", ctx.account_id),
        )])?;
        let view: &dyn ReadView = self.iam.store();
        let profiles =
            list_json::<InstanceProfileRecord>(view, &instance_profiles_prefix(&ctx.account_id))?;
        let mut failed = None;
        let out = list_by_path(
            p,
            profiles,
            "InstanceProfiles",
            |r| (&r.path, &r.name),
            |x, r| {
                if let Err(e) = profile_xml(x, "member", r, view, &ctx.account_id) {
                    failed = Some(e);
                }
            },
        )?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    pub(super) async fn delete_instance_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        profile_name(p)?;
        let entity = self.authorize_entity(
            ctx,
            Tagged::InstanceProfile,
            p,
            "iam:DeleteInstanceProfile",
            |r| r,
        )?;
        let profile = Self::found_profile(&entity)?;
        let key = entity.key.clone();
        self.iam
            .update(move |view| {
                let current: InstanceProfileRecord = get_json(view, &key)?
                    .filter(|c: &InstanceProfileRecord| c.id == profile.id)
                    .ok_or_else(|| instance_profile_not_found(&profile.name))?;
                if !current.roles.is_empty() {
                    return Err(delete_conflict(
                        "Cannot delete entity, must remove roles from instance profile first.",
                    ));
                }
                Ok((vec![Op::delete(key.clone())], ()))
            })
            .await?;
        Ok(String::new())
    }

    pub(super) async fn add_role_to_instance_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        profile_name(p)?;
        let role = Kind::Role.name(p)?.to_string();
        // Putting a role in a profile passes it to whoever gets the profile.
        let view: &dyn ReadView = self.iam.store();
        let role_arn = match get_json::<RoleRecord>(view, &role_key(&ctx.account_id, &role))? {
            Some(r) => r.arn(&ctx.account_id),
            None => Kind::Role.arn(&ctx.account_id, "/", &role),
        };
        let entity = self.authorize_entity(
            ctx,
            Tagged::InstanceProfile,
            p,
            "iam:AddRoleToInstanceProfile",
            |r| r,
        )?;
        ctx.authorize(&[Requirement::new("iam:PassRole", role_arn)])?;
        let profile = Self::found_profile(&entity)?;
        let account = ctx.account_id.clone();
        let key = entity.key.clone();
        self.iam
            .update(move |view| {
                let mut current: InstanceProfileRecord = get_json(view, &key)?
                    .filter(|c: &InstanceProfileRecord| c.id == profile.id)
                    .ok_or_else(|| instance_profile_not_found(&profile.name))?;
                let record: RoleRecord = get_json(view, &role_key(&account, &role))?
                    .ok_or_else(|| role_not_found(&role))?;
                if current
                    .roles
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&record.name))
                {
                    return Err(already_exists(format!(
                        "Role {} is already associated with instance profile {}.",
                        record.name, current.name
                    )));
                }
                if current.roles.len() >= MAX_ROLES {
                    return Err(limit_exceeded(format!(
                        "Cannot exceed quota for InstanceSessionsPerInstanceProfile: {MAX_ROLES}"
                    )));
                }
                current.roles.push(record.name);
                Ok((vec![Op::put(key.clone(), to_bytes(&current)?)], ()))
            })
            .await?;
        Ok(String::new())
    }

    pub(super) async fn remove_role_from_instance_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        profile_name(p)?;
        let role = Kind::Role.name(p)?.to_string();
        let entity = self.authorize_entity(
            ctx,
            Tagged::InstanceProfile,
            p,
            "iam:RemoveRoleFromInstanceProfile",
            |r| r,
        )?;
        let profile = Self::found_profile(&entity)?;
        let key = entity.key.clone();
        self.iam
            .update(move |view| {
                let mut current: InstanceProfileRecord = get_json(view, &key)?
                    .filter(|c: &InstanceProfileRecord| c.id == profile.id)
                    .ok_or_else(|| instance_profile_not_found(&profile.name))?;
                let before = current.roles.len();
                current.roles.retain(|r| !r.eq_ignore_ascii_case(&role));
                if current.roles.len() == before {
                    return Err(role_not_found(&role));
                }
                Ok((vec![Op::put(key.clone(), to_bytes(&current)?)], ()))
            })
            .await?;
        Ok(String::new())
    }

    pub(super) fn list_instance_profiles_for_role(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = Kind::Role.name(p)?;
        let max = p.max_items()?;
        let checked =
            self.authorize_holder(ctx, Kind::Role, "iam:ListInstanceProfilesForRole", name)?;
        let view: &dyn ReadView = self.iam.store();
        let role: RoleRecord = get_json(view, &role_key(&ctx.account_id, name))?
            .ok_or_else(|| role_not_found(name))?;
        checked.same(&role.id)?;
        let profiles: Vec<(String, InstanceProfileRecord)> =
            list_json::<InstanceProfileRecord>(view, &instance_profiles_prefix(&ctx.account_id))?
                .into_iter()
                .filter(|p| p.roles.iter().any(|r| r.eq_ignore_ascii_case(&role.name)))
                .map(|p| (p.name.to_ascii_lowercase(), p))
                .collect();
        let (page, next) = paginate(profiles, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("InstanceProfiles");
        for profile in &page {
            profile_xml(&mut x, "member", profile, view, &ctx.account_id)?;
        }
        x.close("InstanceProfiles").page(next.as_deref());
        Ok(x.finish())
    }
}
