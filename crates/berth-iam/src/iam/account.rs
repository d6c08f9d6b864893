//! Changes to users and roles (UpdateUser, UpdateRole,
//! UpdateRoleDescription) and what reads the account as a whole
//! (ListEntitiesForPolicy, GetAccountAuthorizationDetails,
//! GetAccessKeyLastUsed).

use berth_model::authz::Requirement;
use berth_model::{AwsError, RequestContext};
use berth_policy::managed;
use berth_store::{Op, ReadView};
use berth_util::time::format_iso8601;

use super::profiles::profile_xml;
use super::{
    attachment_counts, check_access_key_id, check_description, encode_document, find_policy,
    role_xml, tags_xml, Found, IamService, Kind, PolicyView, AWS_POLICY_DATE,
};
use crate::records::{
    access_key_key, group_key, groups_prefix, instance_profiles_prefix, policies_prefix, role_key,
    roles_prefix, user_key, users_prefix, AccessKeyRecord, GroupRecord, InstanceProfileRecord,
    PolicyRecord, RoleRecord, UserRecord,
};
use crate::util::{
    already_exists, check_name, check_path, check_path_prefix, get_json, list_json, no_such_entity,
    paginate, to_bytes, validation, Params, Xml,
};
use crate::{last_segment, role_not_found, user_not_found};

const ENTITY_TYPES: [&str; 5] = [
    "User",
    "Role",
    "Group",
    "LocalManagedPolicy",
    "AWSManagedPolicy",
];

fn check_entity_type(value: &str, member: &str) -> Result<(), AwsError> {
    if ENTITY_TYPES.contains(&value) {
        return Ok(());
    }
    Err(validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy enum value set: [User, Role, Group, LocalManagedPolicy, AWSManagedPolicy]"
    )))
}

fn attached_xml(x: &mut Xml, attached: &[String]) {
    x.open("AttachedManagedPolicies");
    for arn in attached {
        x.open("member")
            .text("PolicyName", last_segment(arn))
            .text("PolicyArn", arn)
            .close("member");
    }
    x.close("AttachedManagedPolicies");
}

fn inline_xml(x: &mut Xml, list: &str, inline: &std::collections::BTreeMap<String, String>) {
    x.open(list);
    for (name, document) in inline {
        x.open("member")
            .text("PolicyName", name)
            .text("PolicyDocument", &encode_document(document))
            .close("member");
    }
    x.close(list);
}

/// One entry of GetAccountAuthorizationDetails.
enum Detail {
    User(UserRecord),
    Group(GroupRecord),
    Role(RoleRecord),
    Policy(PolicyView, Vec<crate::records::PolicyVersionRecord>, usize),
}

impl IamService {
    pub(super) async fn update_user(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = Kind::User.name(p)?.to_string();
        let new_name = p.get("NewUserName");
        if let Some(n) = new_name {
            check_name(n, "newUserName", 1, 64)?;
        }
        let new_path = p.get("NewPath");
        if let Some(path) = new_path {
            check_path(path)?;
        }
        let current: Option<UserRecord> =
            get_json(self.iam.store(), &user_key(&ctx.account_id, &name))?;
        let checked = self.authorize_holder(ctx, Kind::User, "iam:UpdateUser", &name)?;
        // Renaming or moving needs the permission on the new ARN too.
        if let Some(user) = &current {
            let target = Kind::User.arn(
                &ctx.account_id,
                new_path.unwrap_or(&user.path),
                new_name.unwrap_or(&user.name),
            );
            if target != user.arn(&ctx.account_id) {
                ctx.authorize(&[Requirement::new("iam:UpdateUser", target)])?;
            }
        }
        let account = ctx.account_id.clone();
        let new_name = new_name.map(str::to_string);
        let new_path = new_path.map(str::to_string);
        self.iam
            .update(move |view| {
                let key = user_key(&account, &name);
                let mut user: UserRecord =
                    get_json(view, &key)?.ok_or_else(|| user_not_found(&name))?;
                checked.same(&user.id)?;
                if let Some(path) = &new_path {
                    user.path = path.clone();
                }
                let mut ops = Vec::new();
                match &new_name {
                    Some(n) if *n != user.name => {
                        let new_key = user_key(&account, n);
                        if new_key != key {
                            if view.get(&new_key).is_some() {
                                return Err(already_exists(format!(
                                    "User with name {n} already exists."
                                )));
                            }
                            ops.push(Op::delete(key.clone()));
                        }
                        // Access keys name their user.
                        for id in &user.access_keys {
                            let k = access_key_key(id);
                            if let Some(mut record) = get_json::<AccessKeyRecord>(view, &k)? {
                                record.user_name = n.clone();
                                ops.push(Op::put(k, to_bytes(&record)?));
                            }
                        }
                        user.name = n.clone();
                        ops.push(Op::put(new_key, to_bytes(&user)?));
                    }
                    _ => ops.push(Op::put(key.clone(), to_bytes(&user)?)),
                }
                Ok((ops, ()))
            })
            .await?;
        Ok(String::new())
    }

    /// UpdateRole (`describe` false) and UpdateRoleDescription (true).
    pub(super) async fn update_role(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        describe: bool,
    ) -> Result<String, AwsError> {
        let name = Kind::Role.name(p)?.to_string();
        let description = if describe {
            Some(p.required("Description", "description")?)
        } else {
            p.get("Description")
        };
        if let Some(d) = description {
            check_description(d)?;
        }
        let max_session = if describe {
            None
        } else {
            p.int("MaxSessionDuration", "maxSessionDuration", 3600, 43_200)?
        };
        let action = if describe {
            "iam:UpdateRoleDescription"
        } else {
            "iam:UpdateRole"
        };
        let checked = self.authorize_holder(ctx, Kind::Role, action, &name)?;
        let key = role_key(&ctx.account_id, &name);
        let description = description.map(str::to_string);
        let role = self
            .iam
            .update(move |view| {
                let mut role: RoleRecord =
                    get_json(view, &key)?.ok_or_else(|| role_not_found(&name))?;
                checked.same(&role.id)?;
                if let Some(d) = &description {
                    role.description = Some(d.clone());
                }
                if let Some(m) = max_session {
                    role.max_session = m as u32;
                }
                Ok((vec![Op::put(key.clone(), to_bytes(&role)?)], role))
            })
            .await?;
        if !describe {
            // UpdateRole's answer is an empty `<UpdateRoleResult>` (its model
            // output has a result wrapper, which SDKs look for); an empty
            // string would leave the wrapper out.
            return Ok(" ".to_string());
        }
        let mut x = Xml::new();
        role_xml(&mut x, "Role", &role, &ctx.account_id);
        Ok(x.finish())
    }

    pub(super) fn list_entities_for_policy(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let arn = Self::policy_arn(p)?;
        let filter = p.get("EntityFilter");
        if let Some(f) = filter {
            check_entity_type(f, "entityFilter")?;
        }
        let usage = p.get("PolicyUsageFilter");
        if let Some(u) = usage {
            if !["PermissionsPolicy", "PermissionsBoundary"].contains(&u) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{u}' at 'policyUsageFilter' failed to satisfy constraint: Member must satisfy enum value set: [PermissionsPolicy, PermissionsBoundary]"
                )));
            }
        }
        let prefix = p.get("PathPrefix").unwrap_or("/");
        check_path_prefix(prefix)?;
        let max = p.max_items()?;
        self.authorize_policy(ctx, "iam:ListEntitiesForPolicy", arn)?;
        let view: &dyn ReadView = self.iam.store();
        if find_policy(view, &ctx.account_id, arn)?.is_none() {
            return Err(super::policy_not_found(arn));
        }
        let wants = |kind: &str| filter.is_none_or(|f| f == kind);
        // Berth has no permissions boundaries: that filter finds nothing.
        let boundary_only = usage == Some("PermissionsBoundary");
        let mut items: Vec<(String, (&'static str, String, String))> = Vec::new();
        if !boundary_only {
            if wants("User") {
                for u in list_json::<UserRecord>(view, &users_prefix(&ctx.account_id))? {
                    if u.attached.iter().any(|a| a == arn) && u.path.starts_with(prefix) {
                        items.push((
                            format!("1{}", u.name.to_ascii_lowercase()),
                            ("User", u.name, u.id),
                        ));
                    }
                }
            }
            if wants("Group") {
                for g in list_json::<GroupRecord>(view, &groups_prefix(&ctx.account_id))? {
                    if g.attached.iter().any(|a| a == arn) && g.path.starts_with(prefix) {
                        items.push((
                            format!("0{}", g.name.to_ascii_lowercase()),
                            ("Group", g.name, g.id),
                        ));
                    }
                }
            }
            if wants("Role") {
                for r in list_json::<RoleRecord>(view, &roles_prefix(&ctx.account_id))? {
                    if r.attached.iter().any(|a| a == arn) && r.path.starts_with(prefix) {
                        items.push((
                            format!("2{}", r.name.to_ascii_lowercase()),
                            ("Role", r.name, r.id),
                        ));
                    }
                }
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (page, next) = paginate(items, p.get("Marker"), max);
        let mut x = Xml::new();
        for (kind, list) in [
            ("Group", "PolicyGroups"),
            ("User", "PolicyUsers"),
            ("Role", "PolicyRoles"),
        ] {
            x.open(list);
            for (k, name, id) in page.iter().filter(|(k, _, _)| *k == kind) {
                x.open("member")
                    .text(&format!("{k}Name"), name)
                    .text(&format!("{k}Id"), id)
                    .close("member");
            }
            x.close(list);
        }
        x.page(next.as_deref());
        Ok(x.finish())
    }

    pub(super) fn get_account_authorization_details(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let mut filters = Vec::new();
        for (k, v) in p.0 {
            if k.starts_with("Filter.member.") {
                check_entity_type(v, "filter")?;
                filters.push(v.as_str());
            }
        }
        let max = p.max_items()?;
        ctx.authorize(&[Requirement::new("iam:GetAccountAuthorizationDetails", "*")])?;
        let wants = |kind: &str| filters.is_empty() || filters.contains(&kind);
        let view: &dyn ReadView = self.iam.store();
        let account = ctx.account_id.as_str();
        let counts = attachment_counts(view, account)?;
        let mut items: Vec<(String, Detail)> = Vec::new();
        if wants("User") {
            for u in list_json::<UserRecord>(view, &users_prefix(account))? {
                items.push((format!("0{}", u.name.to_ascii_lowercase()), Detail::User(u)));
            }
        }
        if wants("Group") {
            for g in list_json::<GroupRecord>(view, &groups_prefix(account))? {
                items.push((
                    format!("1{}", g.name.to_ascii_lowercase()),
                    Detail::Group(g),
                ));
            }
        }
        if wants("Role") {
            for r in list_json::<RoleRecord>(view, &roles_prefix(account))? {
                items.push((format!("2{}", r.name.to_ascii_lowercase()), Detail::Role(r)));
            }
        }
        if wants("LocalManagedPolicy") {
            for pol in list_json::<PolicyRecord>(view, &policies_prefix(account))? {
                let count = counts.get(&pol.arn(account)).copied().unwrap_or(0);
                items.push((
                    format!("3{} local", pol.name.to_ascii_lowercase()),
                    Detail::Policy(
                        PolicyView::local(&pol, account),
                        pol.versions.clone(),
                        count,
                    ),
                ));
            }
        }
        if wants("AWSManagedPolicy") {
            // AWS's own policies appear once something uses them.
            for m in managed::ALL.iter() {
                let count = counts.get(m.arn).copied().unwrap_or(0);
                if count == 0 {
                    continue;
                }
                let version = crate::records::PolicyVersionRecord {
                    id: m.version_id.to_string(),
                    document: m.document.to_string(),
                    created: AWS_POLICY_DATE,
                };
                items.push((
                    format!("3{} aws", m.name.to_ascii_lowercase()),
                    Detail::Policy(PolicyView::aws(m), vec![version], count),
                ));
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (page, next) = paginate(items, p.get("Marker"), max);
        let profiles =
            list_json::<InstanceProfileRecord>(view, &instance_profiles_prefix(account))?;
        let mut x = Xml::new();
        x.open("UserDetailList");
        for d in &page {
            if let Detail::User(u) = d {
                x.open("member")
                    .text("Path", &u.path)
                    .text("UserName", &u.name)
                    .text("UserId", &u.id)
                    .text("Arn", &u.arn(account))
                    .text("CreateDate", &format_iso8601(u.created));
                inline_xml(&mut x, "UserPolicyList", &u.inline);
                x.open("GroupList");
                for g in &u.groups {
                    x.text("member", g);
                }
                x.close("GroupList");
                attached_xml(&mut x, &u.attached);
                tags_xml(&mut x, &u.tags);
                x.close("member");
            }
        }
        x.close("UserDetailList").open("GroupDetailList");
        for d in &page {
            if let Detail::Group(g) = d {
                x.open("member")
                    .text("Path", &g.path)
                    .text("GroupName", &g.name)
                    .text("GroupId", &g.id)
                    .text("Arn", &g.arn(account))
                    .text("CreateDate", &format_iso8601(g.created));
                inline_xml(&mut x, "GroupPolicyList", &g.inline);
                attached_xml(&mut x, &g.attached);
                x.close("member");
            }
        }
        x.close("GroupDetailList").open("RoleDetailList");
        for d in &page {
            if let Detail::Role(r) = d {
                x.open("member")
                    .text("Path", &r.path)
                    .text("RoleName", &r.name)
                    .text("RoleId", &r.id)
                    .text("Arn", &r.arn(account))
                    .text("CreateDate", &format_iso8601(r.created))
                    .text("AssumeRolePolicyDocument", &encode_document(&r.trust))
                    .open("InstanceProfileList");
                for profile in profiles
                    .iter()
                    .filter(|p| p.roles.iter().any(|n| n.eq_ignore_ascii_case(&r.name)))
                {
                    profile_xml(&mut x, "member", profile, view, account)?;
                }
                x.close("InstanceProfileList");
                inline_xml(&mut x, "RolePolicyList", &r.inline);
                attached_xml(&mut x, &r.attached);
                tags_xml(&mut x, &r.tags);
                x.open("RoleLastUsed").close("RoleLastUsed");
                x.close("member");
            }
        }
        x.close("RoleDetailList").open("Policies");
        for d in &page {
            if let Detail::Policy(view, versions, count) = d {
                x.open("member")
                    .text("PolicyName", &view.name)
                    .text("PolicyId", &view.id)
                    .text("Arn", &view.arn)
                    .text("Path", &view.path)
                    .text("DefaultVersionId", &view.default_version)
                    .text("AttachmentCount", &count.to_string())
                    .text("PermissionsBoundaryUsageCount", "0")
                    .text("IsAttachable", "true")
                    .opt("Description", view.description.as_deref())
                    .text("CreateDate", &format_iso8601(view.created))
                    .text("UpdateDate", &format_iso8601(view.updated))
                    .open("PolicyVersionList");
                for v in versions.iter().rev() {
                    x.open("member")
                        .text("Document", &encode_document(&v.document))
                        .text("VersionId", &v.id)
                        .text(
                            "IsDefaultVersion",
                            if v.id == view.default_version {
                                "true"
                            } else {
                                "false"
                            },
                        )
                        .text("CreateDate", &format_iso8601(v.created))
                        .close("member");
                }
                x.close("PolicyVersionList").close("member");
            }
        }
        x.close("Policies").page(next.as_deref());
        Ok(x.finish())
    }

    pub(super) fn get_access_key_last_used(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let id = p.required("AccessKeyId", "accessKeyId")?;
        check_access_key_id(id)?;
        let view: &dyn ReadView = self.iam.store();
        let key: Option<AccessKeyRecord> = get_json(view, &access_key_key(id))?
            .filter(|k: &AccessKeyRecord| k.account == ctx.account_id);
        let Some(key) = key else {
            ctx.authorize(&[Requirement::new("iam:GetAccessKeyLastUsed", "*")])?;
            return Err(no_such_entity(format!(
                "The Access Key with id {id} cannot be found."
            )));
        };
        self.authorize_holder(ctx, Kind::User, "iam:GetAccessKeyLastUsed", &key.user_name)?;
        let usage = self.iam.usage.last_used(view, id)?;
        let mut x = Xml::new();
        x.text("UserName", &key.user_name).open("AccessKeyLastUsed");
        match usage {
            Some(u) => {
                x.text("LastUsedDate", &format_iso8601(u.date))
                    .text("ServiceName", &u.service)
                    .text("Region", &u.region);
            }
            None => {
                x.text("ServiceName", "N/A").text("Region", "N/A");
            }
        }
        x.close("AccessKeyLastUsed");
        Ok(x.finish())
    }
}

/// A user's group records (for simulation), in the order the user joined.
pub(super) fn groups_of(
    view: &dyn ReadView,
    account: &str,
    user: &UserRecord,
) -> Result<Vec<GroupRecord>, AwsError> {
    let mut out = Vec::new();
    for g in &user.groups {
        if let Some(group) = get_json::<GroupRecord>(view, &group_key(account, g))? {
            out.push(group);
        }
    }
    Ok(out)
}

/// The document of a managed policy's default version, by ARN.
pub(super) fn managed_document(
    view: &dyn ReadView,
    account: &str,
    arn: &str,
) -> Result<Option<(String, bool)>, AwsError> {
    Ok(match find_policy(view, account, arn)? {
        Some(Found::Aws(m)) => Some((m.document.to_string(), true)),
        Some(Found::Local(r)) => r.default_document().map(|v| (v.document.clone(), false)),
        None => None,
    })
}
