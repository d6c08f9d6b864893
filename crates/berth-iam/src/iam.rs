//! The IAM API (`iam`, Query protocol, version 2010-05-08).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_model::authz::Requirement;
use berth_model::{AwsError, PrincipalKind, QueryService, RequestContext};
use berth_policy::managed::{self, ManagedPolicy};
use berth_policy::Policy;
use berth_store::{Op, ReadView};
use berth_util::ids::unique_id;
use berth_util::time::{format_iso8601, now_secs};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::records::{
    access_key_key, group_key, groups_prefix, instance_profiles_prefix, policies_prefix,
    policy_key, role_key, roles_prefix, user_key, users_prefix, AccessKeyRecord, GroupRecord,
    InstanceProfileRecord, PolicyRecord, PolicyVersionRecord, RoleRecord, UserRecord,
};
use crate::util::{
    already_exists, check_description, check_document, check_name, check_path, check_path_prefix,
    check_policy_path, delete_conflict, encode_document, get_json, invalid_input, limit_exceeded,
    list_json, no_such_entity, paginate, to_bytes, validation, Params, Xml,
};

use crate::{last_segment, local_policy_name, role_not_found, user_not_found, Iam, IAM_NAMESPACE};

mod account;
mod certificates;
mod groups;
mod oidc;
mod passwords;
mod profiles;
mod simulate;
mod tags;

use groups::group_not_found;
use tags::Tagged;

const MAX_ACCESS_KEYS: usize = 2;
const MAX_ATTACHED: usize = 10;
const MAX_POLICY_VERSIONS: usize = 5;
const DEFAULT_MAX_SESSION: i64 = 3600;
/// AWS managed policies carry AWS's creation date; Berth reports one fixed date.
const AWS_POLICY_DATE: i64 = 1_423_248_000;
const ECS_SERVICE: &str = "ecs.amazonaws.com";
const ECS_SERVICE_ROLE: &str = "AWSServiceRoleForECS";

/// The IAM service. Register with `GatewayBuilder::query_service`.
pub struct IamService {
    iam: Arc<Iam>,
}

impl IamService {
    pub fn new(iam: Arc<Iam>) -> Self {
        IamService { iam }
    }
}

#[async_trait::async_trait]
impl QueryService for IamService {
    fn signing_name(&self) -> &'static str {
        "iam"
    }

    fn xml_namespace(&self) -> &'static str {
        IAM_NAMESPACE
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let p = Params(params);
        let s = self;
        // Credentials from GetSessionToken (without MFA, which Berth has not)
        // cannot call IAM, as on AWS.
        if ctx.principal.access_key_id.starts_with("ASIA")
            && matches!(
                ctx.principal.kind,
                PrincipalKind::User | PrincipalKind::Root
            )
        {
            return Err(AwsError::new(
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid",
            ));
        }
        match action {
            "CreateUser" => s.create_user(ctx, &p).await,
            "GetUser" => s.get_user(ctx, &p),
            "ListUsers" => s.list_users(ctx, &p),
            "DeleteUser" => s.delete_user(ctx, &p).await,
            "CreateAccessKey" => s.create_access_key(ctx, &p).await,
            "ListAccessKeys" => s.list_access_keys(ctx, &p),
            "UpdateAccessKey" => s.update_access_key(ctx, &p).await,
            "DeleteAccessKey" => s.delete_access_key(ctx, &p).await,
            "CreateRole" => s.create_role(ctx, &p).await,
            "GetRole" => s.get_role(ctx, &p),
            "ListRoles" => s.list_roles(ctx, &p),
            "DeleteRole" => s.delete_role(ctx, &p).await,
            "UpdateAssumeRolePolicy" => s.update_assume_role_policy(ctx, &p).await,
            "CreateServiceLinkedRole" => s.create_service_linked_role(ctx, &p).await,
            "CreatePolicy" => s.create_policy(ctx, &p).await,
            "GetPolicy" => s.get_policy(ctx, &p),
            "GetPolicyVersion" => s.get_policy_version(ctx, &p),
            "CreatePolicyVersion" => s.create_policy_version(ctx, &p).await,
            "ListPolicyVersions" => s.list_policy_versions(ctx, &p),
            "DeletePolicyVersion" => s.delete_policy_version(ctx, &p).await,
            "SetDefaultPolicyVersion" => s.set_default_policy_version(ctx, &p).await,
            "ListPolicies" => s.list_policies(ctx, &p),
            "DeletePolicy" => s.delete_policy(ctx, &p).await,
            "AttachUserPolicy" => s.attach(ctx, &p, Kind::User).await,
            "AttachRolePolicy" => s.attach(ctx, &p, Kind::Role).await,
            "DetachUserPolicy" => s.detach(ctx, &p, Kind::User).await,
            "DetachRolePolicy" => s.detach(ctx, &p, Kind::Role).await,
            "ListAttachedUserPolicies" => s.list_attached(ctx, &p, Kind::User),
            "ListAttachedRolePolicies" => s.list_attached(ctx, &p, Kind::Role),
            "PutUserPolicy" => s.put_inline(ctx, &p, Kind::User).await,
            "PutRolePolicy" => s.put_inline(ctx, &p, Kind::Role).await,
            "GetUserPolicy" => s.get_inline(ctx, &p, Kind::User),
            "GetRolePolicy" => s.get_inline(ctx, &p, Kind::Role),
            "DeleteUserPolicy" => s.delete_inline(ctx, &p, Kind::User).await,
            "DeleteRolePolicy" => s.delete_inline(ctx, &p, Kind::Role).await,
            "ListUserPolicies" => s.list_inline(ctx, &p, Kind::User),
            "ListRolePolicies" => s.list_inline(ctx, &p, Kind::Role),
            // Groups.
            "CreateGroup" => s.create_group(ctx, &p).await,
            "GetGroup" => s.get_group(ctx, &p),
            "ListGroups" => s.list_groups(ctx, &p),
            "DeleteGroup" => s.delete_group(ctx, &p).await,
            "UpdateGroup" => s.update_group(ctx, &p).await,
            "AddUserToGroup" => s.add_user_to_group(ctx, &p).await,
            "RemoveUserFromGroup" => s.remove_user_from_group(ctx, &p).await,
            "ListGroupsForUser" => s.list_groups_for_user(ctx, &p),
            "AttachGroupPolicy" => s.attach(ctx, &p, Kind::Group).await,
            "DetachGroupPolicy" => s.detach(ctx, &p, Kind::Group).await,
            "ListAttachedGroupPolicies" => s.list_attached(ctx, &p, Kind::Group),
            "PutGroupPolicy" => s.put_inline(ctx, &p, Kind::Group).await,
            "GetGroupPolicy" => s.get_inline(ctx, &p, Kind::Group),
            "DeleteGroupPolicy" => s.delete_inline(ctx, &p, Kind::Group).await,
            "ListGroupPolicies" => s.list_inline(ctx, &p, Kind::Group),
            // Instance profiles.
            "CreateInstanceProfile" => s.create_instance_profile(ctx, &p).await,
            "GetInstanceProfile" => s.get_instance_profile(ctx, &p),
            "ListInstanceProfiles" => s.list_instance_profiles(ctx, &p),
            "DeleteInstanceProfile" => s.delete_instance_profile(ctx, &p).await,
            "AddRoleToInstanceProfile" => s.add_role_to_instance_profile(ctx, &p).await,
            "RemoveRoleFromInstanceProfile" => s.remove_role_from_instance_profile(ctx, &p).await,
            "ListInstanceProfilesForRole" => s.list_instance_profiles_for_role(ctx, &p),
            "TagInstanceProfile" => s.tag(ctx, &p, Tagged::InstanceProfile).await,
            "UntagInstanceProfile" => s.untag(ctx, &p, Tagged::InstanceProfile).await,
            "ListInstanceProfileTags" => s.list_tags(ctx, &p, Tagged::InstanceProfile),
            // OpenID Connect providers.
            "CreateOpenIDConnectProvider" => s.create_oidc_provider(ctx, &p).await,
            "GetOpenIDConnectProvider" => s.get_oidc_provider(ctx, &p),
            "ListOpenIDConnectProviders" => s.list_oidc_providers(ctx, &p),
            "DeleteOpenIDConnectProvider" => s.delete_oidc_provider(ctx, &p).await,
            "UpdateOpenIDConnectProviderThumbprint" => s.update_oidc_thumbprints(ctx, &p).await,
            "AddClientIDToOpenIDConnectProvider" => s.edit_oidc_client(ctx, &p, true).await,
            "RemoveClientIDFromOpenIDConnectProvider" => s.edit_oidc_client(ctx, &p, false).await,
            "TagOpenIDConnectProvider" => s.tag(ctx, &p, Tagged::OidcProvider).await,
            "UntagOpenIDConnectProvider" => s.untag(ctx, &p, Tagged::OidcProvider).await,
            "ListOpenIDConnectProviderTags" => s.list_tags(ctx, &p, Tagged::OidcProvider),
            // Passwords.
            "CreateLoginProfile" => s.create_login_profile(ctx, &p).await,
            "GetLoginProfile" => s.get_login_profile(ctx, &p),
            "UpdateLoginProfile" => s.update_login_profile(ctx, &p).await,
            "DeleteLoginProfile" => s.delete_login_profile(ctx, &p).await,
            "ChangePassword" => s.change_password(ctx, &p).await,
            "GetAccountPasswordPolicy" => s.get_password_policy(ctx),
            "UpdateAccountPasswordPolicy" => s.update_password_policy(ctx, &p).await,
            "DeleteAccountPasswordPolicy" => s.delete_password_policy(ctx).await,
            // Tags.
            "TagUser" => s.tag(ctx, &p, Tagged::User).await,
            "UntagUser" => s.untag(ctx, &p, Tagged::User).await,
            "ListUserTags" => s.list_tags(ctx, &p, Tagged::User),
            "TagRole" => s.tag(ctx, &p, Tagged::Role).await,
            "UntagRole" => s.untag(ctx, &p, Tagged::Role).await,
            "ListRoleTags" => s.list_tags(ctx, &p, Tagged::Role),
            "TagPolicy" => s.tag(ctx, &p, Tagged::Policy).await,
            "UntagPolicy" => s.untag(ctx, &p, Tagged::Policy).await,
            "ListPolicyTags" => s.list_tags(ctx, &p, Tagged::Policy),
            "TagServerCertificate" => s.tag(ctx, &p, Tagged::ServerCertificate).await,
            "UntagServerCertificate" => s.untag(ctx, &p, Tagged::ServerCertificate).await,
            "ListServerCertificateTags" => s.list_tags(ctx, &p, Tagged::ServerCertificate),
            // Updates.
            "UpdateUser" => s.update_user(ctx, &p).await,
            "UpdateRole" => s.update_role(ctx, &p, false).await,
            "UpdateRoleDescription" => s.update_role(ctx, &p, true).await,
            // The account as a whole.
            "ListEntitiesForPolicy" => s.list_entities_for_policy(ctx, &p),
            "GetAccountAuthorizationDetails" => s.get_account_authorization_details(ctx, &p),
            "SimulatePrincipalPolicy" => s.simulate_principal_policy(ctx, &p),
            "SimulateCustomPolicy" => s.simulate_custom_policy(ctx, &p),
            "GetContextKeysForPrincipalPolicy" => s.context_keys_for_principal(ctx, &p),
            "GetContextKeysForCustomPolicy" => s.context_keys_for_custom(ctx, &p),
            "GetAccessKeyLastUsed" => s.get_access_key_last_used(ctx, &p),
            // Server certificates.
            "UploadServerCertificate" => s.upload_server_certificate(ctx, &p).await,
            "GetServerCertificate" => s.get_server_certificate(ctx, &p),
            "ListServerCertificates" => s.list_server_certificates(ctx, &p),
            "DeleteServerCertificate" => s.delete_server_certificate(ctx, &p).await,
            "UpdateServerCertificate" => s.update_server_certificate(ctx, &p).await,
            other => match crate::not_implemented::reason("iam", other) {
                Some(e) => Err(e),
                // The gateway words an empty InvalidAction with the request's version.
                None => Err(AwsError::bad_request("InvalidAction", "")),
            },
        }
    }
}

// ---- users and roles holding policies -----------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    User,
    Role,
    Group,
}

impl Kind {
    fn key(self, account: &str, name: &str) -> String {
        match self {
            Kind::User => user_key(account, name),
            Kind::Role => role_key(account, name),
            Kind::Group => group_key(account, name),
        }
    }

    fn not_found(self, name: &str) -> AwsError {
        match self {
            Kind::User => user_not_found(name),
            Kind::Role => role_not_found(name),
            Kind::Group => group_not_found(name),
        }
    }

    fn name_param(self) -> (&'static str, &'static str) {
        match self {
            Kind::User => ("UserName", "userName"),
            Kind::Role => ("RoleName", "roleName"),
            Kind::Group => ("GroupName", "groupName"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Role => "role",
            Kind::Group => "group",
        }
    }

    /// `arn:aws:iam::<account>:user<path><name>` (or `role`).
    fn arn(self, account: &str, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{account}:{}{path}{name}", self.label())
    }

    /// The IAM action `iam:<verb>User<noun>` (or `Role`), e.g.
    /// `iam:AttachUserPolicy`.
    fn action(self, verb: &str, noun: &str) -> String {
        let entity = match self {
            Kind::User => "User",
            Kind::Role => "Role",
            Kind::Group => "Group",
        };
        format!("iam:{verb}{entity}{noun}")
    }

    fn quota(self) -> &'static str {
        match self {
            Kind::User => "PoliciesPerUser",
            Kind::Role => "PoliciesPerRole",
            Kind::Group => "PoliciesPerGroup",
        }
    }

    /// The entity's name parameter, checked.
    fn name<'a>(self, p: &Params<'a>) -> Result<&'a str, AwsError> {
        let (param, member) = self.name_param();
        let name = p.required(param, member)?;
        check_name(name, member, 1, if self == Kind::Role { 64 } else { 128 })?;
        Ok(name)
    }
}

/// A user or role record: what holds attached and inline policies.
trait Holder {
    fn id(&self) -> &str;
    fn attached(&mut self) -> &mut Vec<String>;
    fn inline(&mut self) -> &mut BTreeMap<String, String>;
}

impl Holder for UserRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn attached(&mut self) -> &mut Vec<String> {
        &mut self.attached
    }
    fn inline(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.inline
    }
}

impl Holder for GroupRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn attached(&mut self) -> &mut Vec<String> {
        &mut self.attached
    }
    fn inline(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.inline
    }
}

impl Holder for RoleRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn attached(&mut self) -> &mut Vec<String> {
        &mut self.attached
    }
    fn inline(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.inline
    }
}

/// Edits a holder: `f` returns whether it changed anything.
type EditFn = Arc<dyn Fn(&dyn ReadView, &mut dyn Holder) -> Result<bool, AwsError> + Send + Sync>;

/// What a holder's policies look like to a reader.
struct Held {
    name: String,
    attached: Vec<String>,
    inline: BTreeMap<String, String>,
}

impl IamService {
    /// Edits the user or role `name` that `checked` authorized.
    async fn edit(
        &self,
        kind: Kind,
        account: &str,
        name: &str,
        checked: Checked,
        f: EditFn,
    ) -> Result<(), AwsError> {
        match kind {
            Kind::User => {
                self.edit_as::<UserRecord>(kind, account, name, checked, f)
                    .await
            }
            Kind::Role => {
                self.edit_as::<RoleRecord>(kind, account, name, checked, f)
                    .await
            }
            Kind::Group => {
                self.edit_as::<GroupRecord>(kind, account, name, checked, f)
                    .await
            }
        }
    }

    async fn edit_as<H>(
        &self,
        kind: Kind,
        account: &str,
        name: &str,
        checked: Checked,
        f: EditFn,
    ) -> Result<(), AwsError>
    where
        H: Holder + Serialize + DeserializeOwned + Send + 'static,
    {
        let key = kind.key(account, name);
        let name = name.to_string();
        self.iam
            .update(move |view| {
                let mut record: H = get_json(view, &key)?.ok_or_else(|| kind.not_found(&name))?;
                checked.same(record.id())?;
                if !f(view, &mut record)? {
                    return Ok((Vec::new(), ()));
                }
                Ok((vec![Op::put(key.clone(), to_bytes(&record)?)], ()))
            })
            .await
    }

    fn held(
        &self,
        kind: Kind,
        account: &str,
        name: &str,
        checked: &Checked,
    ) -> Result<Held, AwsError> {
        let view: &dyn ReadView = self.iam.store();
        let key = kind.key(account, name);
        Ok(match kind {
            Kind::User => {
                let u: UserRecord = get_json(view, &key)?.ok_or_else(|| kind.not_found(name))?;
                checked.same(&u.id)?;
                Held {
                    name: u.name,
                    attached: u.attached,
                    inline: u.inline,
                }
            }
            Kind::Role => {
                let r: RoleRecord = get_json(view, &key)?.ok_or_else(|| kind.not_found(name))?;
                checked.same(&r.id)?;
                Held {
                    name: r.name,
                    attached: r.attached,
                    inline: r.inline,
                }
            }
            Kind::Group => {
                let g: GroupRecord = get_json(view, &key)?.ok_or_else(|| kind.not_found(name))?;
                checked.same(&g.id)?;
                Held {
                    name: g.name,
                    attached: g.attached,
                    inline: g.inline,
                }
            }
        })
    }

    fn parse_identity(&self, document: &str) -> Result<Arc<Policy>, AwsError> {
        self.iam.cached(
            format!("inline:{document}"),
            document,
            Policy::parse_identity,
        )
    }
}

// ---- authorization ----------------------------------------------------------------
//
// Every action is authorized as `iam:<Action>` on the resource's canonical
// ARN: a user or role named by `UserName`/`RoleName` is resolved to the
// stored record, whose ARN carries its path (`user/division/bob`) and whose
// name is spelt as stored (names are case-insensitive, ARNs are not), with
// its tags as `aws:ResourceTag/*`; a name with no record is checked at path
// `/` and then answers NoSuchEntity. Policies are named by ARN, which must
// match the stored policy exactly to find it. An attachment is authorized on
// the user or role it changes, with `iam:PolicyARN`.

/// The record a user or role check was decided on (`None`: there was none).
/// The write that follows must find the same record, so a user deleted and
/// created again at another path in between is not changed under the first
/// one's authorization.
#[derive(Clone, Debug)]
struct Checked(Option<String>);

impl Checked {
    fn same(&self, id: &str) -> Result<(), AwsError> {
        if self.0.as_deref() == Some(id) {
            return Ok(());
        }
        Err(AwsError::new(
            409,
            "ConcurrentModification",
            "The entity changed while the request was being authorized; retry the request.",
        ))
    }
}

impl IamService {
    /// Authorizes `action` on the user or role `name` (its canonical ARN,
    /// its tags as `aws:ResourceTag/*`), with `conditions` besides.
    fn authorize_holder_with(
        &self,
        ctx: &RequestContext,
        kind: Kind,
        action: &str,
        name: &str,
        conditions: &[(&str, &str)],
    ) -> Result<Checked, AwsError> {
        let view: &dyn ReadView = self.iam.store();
        let holder = self.iam.holder(view, &kind.key(&ctx.account_id, name))?;
        let (mut requirement, checked) = match &holder {
            Some(h) => (
                Requirement::new(action, kind.arn(&ctx.account_id, &h.path, &h.name))
                    .resource_tags(h.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                Checked(Some(h.id.clone())),
            ),
            None => (
                Requirement::new(action, kind.arn(&ctx.account_id, "/", name)),
                Checked(None),
            ),
        };
        for (key, value) in conditions {
            requirement = requirement.condition(*key, *value);
        }
        ctx.authorize(&[requirement])?;
        Ok(checked)
    }

    fn authorize_holder(
        &self,
        ctx: &RequestContext,
        kind: Kind,
        action: &str,
        name: &str,
    ) -> Result<Checked, AwsError> {
        self.authorize_holder_with(ctx, kind, action, name, &[])
    }

    /// Authorizes `action` on the user an access-key or GetUser call acts
    /// on: the named one, else the caller; the root user (no user) is
    /// checked on its own ARN.
    fn authorize_target_user(
        &self,
        ctx: &RequestContext,
        action: &str,
        user: Option<&str>,
    ) -> Result<Checked, AwsError> {
        match user {
            Some(name) => self.authorize_holder(ctx, Kind::User, action, name),
            None => {
                ctx.authorize(&[Requirement::new(action, ctx.principal.arn.clone())])?;
                Ok(Checked(None))
            }
        }
    }
}

/// ListUsers/ListRoles are authorized on the path they list
/// (`arn:aws:iam::<account>:user/division/` for `PathPrefix=/division/`).
fn authorize_list(
    ctx: &RequestContext,
    p: &Params<'_>,
    kind: Kind,
    action: &str,
) -> Result<(), AwsError> {
    let prefix = p.get("PathPrefix").unwrap_or("/");
    check_path_prefix(prefix)?;
    ctx.authorize(&[Requirement::new(
        action,
        kind.arn(&ctx.account_id, prefix, ""),
    )])
}

// ---- rendering ----------------------------------------------------------------

/// `<Tags>` when there are any (IAM leaves tags out of list results).
fn tags_xml(x: &mut Xml, tags: &[(String, String)]) {
    if tags.is_empty() {
        return;
    }
    x.open("Tags");
    for (key, value) in tags {
        x.open("member")
            .text("Key", key)
            .text("Value", value)
            .close("member");
    }
    x.close("Tags");
}

/// A user or role is deleted only once its inline policies are deleted and
/// its managed policies detached, as IAM requires.
fn check_no_policies(has_inline: bool, has_attached: bool) -> Result<(), AwsError> {
    if has_inline {
        return Err(delete_conflict(
            "Cannot delete entity, must delete policies first.",
        ));
    }
    if has_attached {
        return Err(delete_conflict(
            "Cannot delete entity, must detach all policies first.",
        ));
    }
    Ok(())
}

/// ListUsers/ListRoles: the records under `PathPrefix`, in name order
/// (case-insensitive, as IAM orders them), one `Marker`/`MaxItems` page.
fn list_by_path<T>(
    p: &Params<'_>,
    records: Vec<T>,
    list: &str,
    path_and_name: impl Fn(&T) -> (&String, &String),
    mut member: impl FnMut(&mut Xml, &T),
) -> Result<String, AwsError> {
    let prefix = p.get("PathPrefix").unwrap_or("/");
    check_path_prefix(prefix)?;
    let max = p.max_items()?;
    let records: Vec<(String, T)> = records
        .into_iter()
        .filter(|r| path_and_name(r).0.starts_with(prefix))
        .map(|r| (path_and_name(&r).1.to_ascii_lowercase(), r))
        .collect();
    let (page, next) = paginate(records, p.get("Marker"), max);
    let mut x = Xml::new();
    x.open(list);
    for record in &page {
        member(&mut x, record);
    }
    x.close(list).page(next.as_deref());
    Ok(x.finish())
}

fn user_xml(x: &mut Xml, tag: &str, user: &UserRecord, account: &str) {
    x.open(tag)
        .text("Path", &user.path)
        .text("UserName", &user.name)
        .text("UserId", &user.id)
        .text("Arn", &user.arn(account))
        .text("CreateDate", &format_iso8601(user.created));
    if tag != "member" {
        tags_xml(x, &user.tags);
    }
    x.close(tag);
}

fn role_xml(x: &mut Xml, tag: &str, role: &RoleRecord, account: &str) {
    x.open(tag)
        .text("Path", &role.path)
        .text("RoleName", &role.name)
        .text("RoleId", &role.id)
        .text("Arn", &role.arn(account))
        .text("CreateDate", &format_iso8601(role.created))
        .text("AssumeRolePolicyDocument", &encode_document(&role.trust))
        .opt("Description", role.description.as_deref())
        .text("MaxSessionDuration", &role.max_session.to_string());
    if tag != "member" {
        tags_xml(x, &role.tags);
    }
    x.close(tag);
}

const MAX_TAGS: usize = 50;

fn tag_constraint(value: &str, member: &str, constraint: &str) -> AwsError {
    validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    ))
}

fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

/// `Tags.member.N.Key` / `Tags.member.N.Value`, in member order.
fn parse_tags(p: &Params<'_>) -> Result<Vec<(String, String)>, AwsError> {
    let mut members: BTreeMap<u32, (Option<&str>, Option<&str>)> = BTreeMap::new();
    for (name, value) in p.0 {
        let Some(rest) = name.strip_prefix("Tags.member.") else {
            continue;
        };
        let (index, field) = rest
            .split_once('.')
            .and_then(|(i, f)| Some((i.parse::<u32>().ok()?, f)))
            .ok_or_else(|| invalid_input(format!("Unknown parameter {name}.")))?;
        let entry = members.entry(index).or_default();
        match field {
            "Key" => entry.0 = Some(value),
            "Value" => entry.1 = Some(value),
            _ => return Err(invalid_input(format!("Unknown parameter {name}."))),
        }
    }
    if members.len() > MAX_TAGS {
        return Err(validation(format!(
            "1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to {MAX_TAGS}"
        )));
    }
    let mut tags: Vec<(String, String)> = Vec::with_capacity(members.len());
    for (index, (key, value)) in members {
        let key_member = format!("tags.{index}.member.key");
        let value_member = format!("tags.{index}.member.value");
        let key = key.ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at '{key_member}' failed to satisfy constraint: Member must not be null"
            ))
        })?;
        let value = value.ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at '{value_member}' failed to satisfy constraint: Member must not be null"
            ))
        })?;
        let key_len = key.chars().count();
        if key_len == 0 || key_len > 128 {
            return Err(tag_constraint(
                key,
                &key_member,
                "Member must have length less than or equal to 128",
            ));
        }
        if !key.chars().all(is_tag_char) {
            return Err(tag_constraint(
                key,
                &key_member,
                r"Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]+",
            ));
        }
        if value.chars().count() > 256 {
            return Err(tag_constraint(
                value,
                &value_member,
                "Member must have length less than or equal to 256",
            ));
        }
        if !value.chars().all(is_tag_char) {
            return Err(tag_constraint(
                value,
                &value_member,
                r"Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]*",
            ));
        }
        // The `aws:` prefix (any case) is reserved for AWS's own tags.
        if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(invalid_input(
                "Tag keys starting with 'aws:' are reserved for AWS use.",
            ));
        }
        if tags.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            return Err(invalid_input(
                "Duplicate tag keys found. Please note that Tag keys are case insensitive.",
            ));
        }
        tags.push((key.to_string(), value.to_string()));
    }
    Ok(tags)
}

/// A managed policy as the API shows it, AWS's or the account's.
struct PolicyView {
    name: String,
    id: String,
    arn: String,
    path: String,
    default_version: String,
    description: Option<String>,
    created: i64,
    updated: i64,
    aws: bool,
    tags: Vec<(String, String)>,
}

impl PolicyView {
    fn aws(m: &ManagedPolicy) -> Self {
        PolicyView {
            name: m.name.to_string(),
            id: crate::util::stable_id("ANPA", m.name),
            arn: m.arn.to_string(),
            path: m.path().to_string(),
            default_version: m.version_id.to_string(),
            description: None,
            created: AWS_POLICY_DATE,
            updated: AWS_POLICY_DATE,
            aws: true,
            tags: Vec::new(),
        }
    }

    fn local(p: &PolicyRecord, account: &str) -> Self {
        PolicyView {
            name: p.name.clone(),
            id: p.id.clone(),
            arn: p.arn(account),
            path: p.path.clone(),
            default_version: p.default_version.clone(),
            description: p.description.clone(),
            created: p.created,
            updated: p.updated,
            aws: false,
            tags: p.tags.clone(),
        }
    }

    fn xml(&self, x: &mut Xml, tag: &str, attachments: usize) {
        x.open(tag)
            .text("PolicyName", &self.name)
            .text("PolicyId", &self.id)
            .text("Arn", &self.arn)
            .text("Path", &self.path)
            .text("DefaultVersionId", &self.default_version)
            .text("AttachmentCount", &attachments.to_string())
            .text("PermissionsBoundaryUsageCount", "0")
            .text("IsAttachable", "true")
            .opt("Description", self.description.as_deref())
            .text("CreateDate", &format_iso8601(self.created))
            .text("UpdateDate", &format_iso8601(self.updated));
        if tag != "member" {
            tags_xml(x, &self.tags);
        }
        x.close(tag);
    }
}

fn version_xml(x: &mut Xml, version: &PolicyVersionRecord, default: &str, with_document: bool) {
    x.open("PolicyVersion");
    if with_document {
        x.text("Document", &encode_document(&version.document));
    }
    x.text("VersionId", &version.id)
        .text(
            "IsDefaultVersion",
            if version.id == default {
                "true"
            } else {
                "false"
            },
        )
        .text("CreateDate", &format_iso8601(version.created))
        .close("PolicyVersion");
}

/// The default version's document of the managed policy `arn` (AWS's or
/// of `account`), for session policies given by ARN.
pub(crate) fn managed_policy_document(
    iam: &Iam,
    account: &str,
    arn: &str,
) -> Result<Option<String>, AwsError> {
    Ok(account::managed_document(iam.store(), account, arn)?.map(|(text, _)| text))
}

/// STS session tags (`Tags.member.N.Key`/`Value`), checked as IAM tags are.
pub(crate) fn parse_session_tags(p: &Params<'_>) -> Result<Vec<(String, String)>, AwsError> {
    parse_tags(p)
}

// ---- policy lookups -----------------------------------------------------------

enum Found {
    Aws(&'static ManagedPolicy),
    Local(PolicyRecord),
}

/// Checks that `arn` is shaped like a policy ARN.
fn check_policy_arn(arn: &str) -> Result<(), AwsError> {
    let ok = arn.len() >= 20
        && arn
            .strip_prefix("arn:aws:iam::")
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(acct, res)| {
                !acct.is_empty() && res.starts_with("policy/") && res.len() > 7
            });
    if ok {
        Ok(())
    } else {
        Err(invalid_input(format!("ARN {arn} is not valid.")))
    }
}

fn find_policy(view: &dyn ReadView, account: &str, arn: &str) -> Result<Option<Found>, AwsError> {
    if let Some(m) = managed::by_arn(arn) {
        return Ok(Some(Found::Aws(m)));
    }
    let Some(name) = local_policy_name(account, arn) else {
        return Ok(None);
    };
    let record: Option<PolicyRecord> = get_json(view, &policy_key(account, name))?;
    Ok(record.filter(|r| r.arn(account) == arn).map(Found::Local))
}

fn policy_not_found(arn: &str) -> AwsError {
    no_such_entity(format!("Policy {arn} was not found."))
}

fn policy_not_attachable(arn: &str) -> AwsError {
    no_such_entity(format!("Policy {arn} does not exist or is not attachable."))
}

fn version_not_found(arn: &str, version: &str) -> AwsError {
    no_such_entity(format!(
        "Policy {arn} version {version} does not exist or is not attachable."
    ))
}

fn aws_policy_unmodifiable(arn: &str) -> AwsError {
    invalid_input(format!(
        "Policy {arn} is an AWS managed policy and cannot be changed."
    ))
}

/// How many users, groups and roles of `account` each managed policy is
/// attached to.
fn attachment_counts(
    view: &dyn ReadView,
    account: &str,
) -> Result<HashMap<String, usize>, AwsError> {
    let mut counts = HashMap::new();
    for user in list_json::<UserRecord>(view, &users_prefix(account))? {
        for arn in user.attached {
            *counts.entry(arn).or_insert(0) += 1;
        }
    }
    for role in list_json::<RoleRecord>(view, &roles_prefix(account))? {
        for arn in role.attached {
            *counts.entry(arn).or_insert(0) += 1;
        }
    }
    for group in list_json::<GroupRecord>(view, &groups_prefix(account))? {
        for arn in group.attached {
            *counts.entry(arn).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn check_version_id(version: &str) -> Result<(), AwsError> {
    let ok = version.strip_prefix('v').is_some_and(|n| {
        !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(validation(format!(
            "1 validation error detected: Value '{version}' at 'versionId' failed to satisfy constraint: Member must satisfy regular expression pattern: v[1-9][0-9]*(\\.[A-Za-z0-9-]*)?"
        )))
    }
}

/// The user an operation with an optional `UserName` acts on: the named
/// one, else the calling user. `None` for the root user.
fn target_user<'a>(ctx: &'a RequestContext, p: &Params<'a>) -> Result<Option<&'a str>, AwsError> {
    if let Some(name) = p.get("UserName") {
        check_name(name, "userName", 1, 128)?;
        return Ok(Some(name));
    }
    match ctx.principal.kind {
        PrincipalKind::User => Ok(Some(last_segment(&ctx.principal.arn))),
        PrincipalKind::Root => Ok(None),
        _ => Err(validation(
            "Must specify userName when calling with non-User credentials",
        )),
    }
}

fn access_key_not_found(id: &str) -> AwsError {
    no_such_entity(format!("The Access Key with id {id} cannot be found."))
}

fn check_access_key_id(id: &str) -> Result<(), AwsError> {
    if id.len() < 16
        || id.len() > 128
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(validation(format!(
            "1 validation error detected: Value '{id}' at 'accessKeyId' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w]+"
        )));
    }
    Ok(())
}

// ---- users --------------------------------------------------------------------

impl IamService {
    async fn create_user(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let name = p.required("UserName", "userName")?;
        check_name(name, "userName", 1, 64)?;
        let path = p.get("Path").unwrap_or("/");
        check_path(path)?;
        let tags = parse_tags(p)?;
        ctx.authorize(&[Requirement::new(
            "iam:CreateUser",
            Kind::User.arn(&ctx.account_id, path, name),
        )
        .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
        let account = ctx.account_id.clone();
        let user = UserRecord {
            name: name.to_string(),
            path: path.to_string(),
            id: unique_id("AIDA"),
            created: now_secs(),
            inline: BTreeMap::new(),
            attached: Vec::new(),
            access_keys: Vec::new(),
            tags,
            groups: Vec::new(),
            login: None,
        };
        let key = user_key(&account, name);
        let value = to_bytes(&user)?;
        let existing = user.name.clone();
        self.iam
            .update(move |view| {
                if view.get(&key).is_some() {
                    return Err(already_exists(format!(
                        "User with name {existing} already exists."
                    )));
                }
                Ok((vec![Op::put(key.clone(), value.clone())], ()))
            })
            .await?;
        let mut x = Xml::new();
        user_xml(&mut x, "User", &user, &account);
        Ok(x.finish())
    }

    fn get_user(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let target = target_user(ctx, p)?;
        let checked = self.authorize_target_user(ctx, "iam:GetUser", target)?;
        let mut x = Xml::new();
        match target {
            Some(name) => {
                let user: UserRecord =
                    get_json(self.iam.store(), &user_key(&ctx.account_id, name))?
                        .ok_or_else(|| user_not_found(name))?;
                checked.same(&user.id)?;
                user_xml(&mut x, "User", &user, &ctx.account_id);
            }
            None => {
                x.open("User")
                    .text("UserId", &ctx.account_id)
                    .text("Arn", &ctx.principal.arn)
                    .close("User");
            }
        }
        Ok(x.finish())
    }

    fn list_users(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        authorize_list(ctx, p, Kind::User, "iam:ListUsers")?;
        let users = list_json::<UserRecord>(self.iam.store(), &users_prefix(&ctx.account_id))?;
        list_by_path(
            p,
            users,
            "Users",
            |u| (&u.path, &u.name),
            |x, u| user_xml(x, "member", u, &ctx.account_id),
        )
    }

    async fn delete_user(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let name = p.required("UserName", "userName")?;
        check_name(name, "userName", 1, 128)?;
        let checked = self.authorize_holder(ctx, Kind::User, "iam:DeleteUser", name)?;
        let key = user_key(&ctx.account_id, name);
        let name = name.to_string();
        self.iam
            .update(move |view| {
                let user: UserRecord =
                    get_json(view, &key)?.ok_or_else(|| user_not_found(&name))?;
                checked.same(&user.id)?;
                if user.login.is_some() {
                    return Err(delete_conflict(
                        "Cannot delete entity, must delete login profile first.",
                    ));
                }
                if !user.access_keys.is_empty() {
                    return Err(delete_conflict(
                        "Cannot delete entity, must delete access keys first.",
                    ));
                }
                check_no_policies(!user.inline.is_empty(), !user.attached.is_empty())?;
                if !user.groups.is_empty() {
                    return Err(delete_conflict(
                        "Cannot delete entity, must remove users from group first.",
                    ));
                }
                Ok((vec![Op::delete(key.clone())], ()))
            })
            .await?;
        Ok(String::new())
    }

    // ---- access keys ------------------------------------------------------------

    async fn create_access_key(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let target = target_user(ctx, p)?;
        let checked = self.authorize_target_user(ctx, "iam:CreateAccessKey", target)?;
        let Some(name) = target else {
            return Err(invalid_input(
                "Berth does not issue access keys for the root user; create an IAM user.",
            ));
        };
        let account = ctx.account_id.clone();
        let user_key = user_key(&account, name);
        let name = name.to_string();
        let id = berth_util::ids::access_key_id("AKIA");
        let secret = berth_util::ids::secret_access_key();
        // The store keeps the secret sealed; only this answer carries it.
        let sealed = self.iam.seal_secret(&secret)?;
        let created = now_secs();
        let key = {
            let id = id.clone();
            self.iam
                .update(move |view| {
                    let mut user: UserRecord =
                        get_json(view, &user_key)?.ok_or_else(|| user_not_found(&name))?;
                    checked.same(&user.id)?;
                    if user.access_keys.len() >= MAX_ACCESS_KEYS {
                        return Err(limit_exceeded(format!(
                            "Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS}"
                        )));
                    }
                    let record = AccessKeyRecord {
                        account: account.clone(),
                        user_name: user.name.clone(),
                        id: id.clone(),
                        secret: sealed.clone(),
                        status: "Active".into(),
                        created,
                    };
                    user.access_keys.push(id.clone());
                    let ops = vec![
                        Op::put(access_key_key(&id), to_bytes(&record)?),
                        Op::put(user_key.clone(), to_bytes(&user)?),
                    ];
                    Ok((ops, record))
                })
                .await?
        };
        let mut x = Xml::new();
        x.open("AccessKey")
            .text("UserName", &key.user_name)
            .text("AccessKeyId", &key.id)
            .text("Status", &key.status)
            .text("SecretAccessKey", &secret)
            .text("CreateDate", &format_iso8601(key.created))
            .close("AccessKey");
        Ok(x.finish())
    }

    fn list_access_keys(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let target = target_user(ctx, p)?;
        let max = p.max_items()?;
        let checked = self.authorize_target_user(ctx, "iam:ListAccessKeys", target)?;
        let view: &dyn ReadView = self.iam.store();
        let mut keys = Vec::new();
        if let Some(name) = target {
            let user: UserRecord = get_json(view, &user_key(&ctx.account_id, name))?
                .ok_or_else(|| user_not_found(name))?;
            checked.same(&user.id)?;
            for id in &user.access_keys {
                if let Some(key) = get_json::<AccessKeyRecord>(view, &access_key_key(id))? {
                    keys.push((key.id.clone(), key));
                }
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let (page, next) = paginate(keys, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("AccessKeyMetadata");
        for key in &page {
            x.open("member")
                .text("UserName", &key.user_name)
                .text("AccessKeyId", &key.id)
                .text("Status", &key.status)
                .text("CreateDate", &format_iso8601(key.created))
                .close("member");
        }
        x.close("AccessKeyMetadata").page(next.as_deref());
        Ok(x.finish())
    }

    /// Checks the key parameters and returns (user name, key id).
    fn key_target(
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<(Option<String>, String), AwsError> {
        let id = p.required("AccessKeyId", "accessKeyId")?;
        check_access_key_id(id)?;
        let user = target_user(ctx, p)?.map(str::to_string);
        Ok((user, id.to_string()))
    }

    async fn update_access_key(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let (user, id) = Self::key_target(ctx, p)?;
        let status = p.required("Status", "status")?;
        if !["Active", "Inactive", "Expired"].contains(&status) {
            return Err(validation(format!(
                "1 validation error detected: Value '{status}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Expired, Inactive]"
            )));
        }
        if status == "Expired" {
            return Err(invalid_input(
                "The status of an access key can only be Active or Inactive.",
            ));
        }
        let checked = self.authorize_target_user(ctx, "iam:UpdateAccessKey", user.as_deref())?;
        let status = status.to_string();
        let account = ctx.account_id.clone();
        self.iam
            .update(move |view| {
                let key_key = access_key_key(&id);
                let mut key = owned_key(view, &account, user.as_deref(), &checked, &id)?;
                if key.status == status {
                    return Ok((Vec::new(), ()));
                }
                key.status = status.clone();
                Ok((vec![Op::put(key_key, to_bytes(&key)?)], ()))
            })
            .await?;
        Ok(String::new())
    }

    async fn delete_access_key(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let (user, id) = Self::key_target(ctx, p)?;
        let checked = self.authorize_target_user(ctx, "iam:DeleteAccessKey", user.as_deref())?;
        let account = ctx.account_id.clone();
        self.iam
            .update(move |view| {
                let key = owned_key(view, &account, user.as_deref(), &checked, &id)?;
                let mut ops = vec![Op::delete(access_key_key(&id))];
                let user_key = user_key(&account, &key.user_name);
                if let Some(mut user) = get_json::<UserRecord>(view, &user_key)? {
                    user.access_keys.retain(|k| *k != id);
                    ops.push(Op::put(user_key, to_bytes(&user)?));
                }
                Ok((ops, ()))
            })
            .await?;
        Ok(String::new())
    }
}

/// The access key `id` when it belongs to `user` of `account`.
fn owned_key(
    view: &dyn ReadView,
    account: &str,
    user: Option<&str>,
    checked: &Checked,
    id: &str,
) -> Result<AccessKeyRecord, AwsError> {
    let Some(user) = user else {
        return Err(access_key_not_found(id));
    };
    let Some(record) = get_json::<UserRecord>(view, &user_key(account, user))? else {
        return Err(user_not_found(user));
    };
    checked.same(&record.id)?;
    let key: AccessKeyRecord =
        get_json(view, &access_key_key(id))?.ok_or_else(|| access_key_not_found(id))?;
    if key.account != account || !key.user_name.eq_ignore_ascii_case(user) {
        return Err(access_key_not_found(id));
    }
    Ok(key)
}

// ---- roles --------------------------------------------------------------------

impl IamService {
    fn check_trust(&self, document: &str, member: &str) -> Result<(), AwsError> {
        check_document(document, member)?;
        self.iam
            .cached(format!("trust:{document}"), document, Policy::parse_trust)
            .map(|_| ())
    }

    async fn insert_role(
        &self,
        account: &str,
        role: RoleRecord,
        taken: AwsError,
    ) -> Result<(), AwsError> {
        let key = role_key(account, &role.name);
        let value = to_bytes(&role)?;
        self.iam
            .update(move |view| {
                if view.get(&key).is_some() {
                    return Err(taken.clone());
                }
                Ok((vec![Op::put(key.clone(), value.clone())], ()))
            })
            .await
    }

    async fn create_role(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let name = p.required("RoleName", "roleName")?;
        check_name(name, "roleName", 1, 64)?;
        let path = p.get("Path").unwrap_or("/");
        check_path(path)?;
        let trust = p.required("AssumeRolePolicyDocument", "assumeRolePolicyDocument")?;
        let description = p.get("Description");
        if let Some(d) = description {
            check_description(d)?;
        }
        let max_session = p
            .int("MaxSessionDuration", "maxSessionDuration", 3600, 43_200)?
            .unwrap_or(DEFAULT_MAX_SESSION);
        let tags = parse_tags(p)?;
        self.check_trust(trust, "assumeRolePolicyDocument")?;
        ctx.authorize(&[Requirement::new(
            "iam:CreateRole",
            Kind::Role.arn(&ctx.account_id, path, name),
        )
        .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
        let role = RoleRecord {
            name: name.to_string(),
            path: path.to_string(),
            id: unique_id("AROA"),
            created: now_secs(),
            trust: trust.to_string(),
            description: description.map(str::to_string),
            max_session: max_session as u32,
            inline: BTreeMap::new(),
            attached: Vec::new(),
            service_linked: false,
            tags,
        };
        let taken = already_exists(format!("Role with name {name} already exists."));
        self.insert_role(&ctx.account_id, role.clone(), taken)
            .await?;
        let mut x = Xml::new();
        role_xml(&mut x, "Role", &role, &ctx.account_id);
        Ok(x.finish())
    }

    async fn create_service_linked_role(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let service = p.required("AWSServiceName", "aWSServiceName")?;
        check_name(service, "aWSServiceName", 1, 128)?;
        if service != ECS_SERVICE {
            return Err(invalid_input(format!(
                "Berth does not support a service-linked role for {service}."
            )));
        }
        if p.get("CustomSuffix").is_some() {
            return Err(invalid_input(format!(
                "Custom suffix is not allowed for {service}"
            )));
        }
        let description = p.get("Description");
        if let Some(d) = description {
            check_description(d)?;
        }
        let path = format!("/aws-service-role/{service}/");
        ctx.authorize(&[Requirement::new(
            "iam:CreateServiceLinkedRole",
            Kind::Role.arn(&ctx.account_id, &path, ECS_SERVICE_ROLE),
        )
        .condition("iam:AWSServiceName", service)])?;
        let trust = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"{service}"}},"Action":"sts:AssumeRole"}}]}}"#
        );
        let role = RoleRecord {
            name: ECS_SERVICE_ROLE.to_string(),
            path,
            id: unique_id("AROA"),
            created: now_secs(),
            trust,
            description: description.map(str::to_string),
            max_session: DEFAULT_MAX_SESSION as u32,
            inline: BTreeMap::new(),
            attached: Vec::new(),
            service_linked: true,
            tags: Vec::new(),
        };
        let taken = invalid_input(format!(
            "Service role name {ECS_SERVICE_ROLE} has been taken in this account, please try a different suffix."
        ));
        self.insert_role(&ctx.account_id, role.clone(), taken)
            .await?;
        let mut x = Xml::new();
        role_xml(&mut x, "Role", &role, &ctx.account_id);
        Ok(x.finish())
    }

    fn get_role(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let name = Kind::Role.name(p)?;
        let checked = self.authorize_holder(ctx, Kind::Role, "iam:GetRole", name)?;
        let role: RoleRecord = get_json(self.iam.store(), &role_key(&ctx.account_id, name))?
            .ok_or_else(|| role_not_found(name))?;
        checked.same(&role.id)?;
        let mut x = Xml::new();
        role_xml(&mut x, "Role", &role, &ctx.account_id);
        Ok(x.finish())
    }

    fn list_roles(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        authorize_list(ctx, p, Kind::Role, "iam:ListRoles")?;
        let roles = list_json::<RoleRecord>(self.iam.store(), &roles_prefix(&ctx.account_id))?;
        list_by_path(
            p,
            roles,
            "Roles",
            |r| (&r.path, &r.name),
            |x, r| role_xml(x, "member", r, &ctx.account_id),
        )
    }

    async fn delete_role(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let name = Kind::Role.name(p)?.to_string();
        let checked = self.authorize_holder(ctx, Kind::Role, "iam:DeleteRole", &name)?;
        let key = role_key(&ctx.account_id, &name);
        let account = ctx.account_id.clone();
        self.iam
            .update(move |view| {
                let role: RoleRecord =
                    get_json(view, &key)?.ok_or_else(|| role_not_found(&name))?;
                checked.same(&role.id)?;
                if role.service_linked {
                    return Err(unmodifiable(&role.name));
                }
                check_no_policies(!role.inline.is_empty(), !role.attached.is_empty())?;
                let in_profile =
                    list_json::<InstanceProfileRecord>(view, &instance_profiles_prefix(&account))?
                        .iter()
                        .any(|p| p.roles.iter().any(|r| r.eq_ignore_ascii_case(&role.name)));
                if in_profile {
                    return Err(delete_conflict(
                        "Cannot delete entity, must remove roles from instance profile first.",
                    ));
                }
                Ok((vec![Op::delete(key.clone())], ()))
            })
            .await?;
        Ok(String::new())
    }

    async fn update_assume_role_policy(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = Kind::Role.name(p)?.to_string();
        let document = p.required("PolicyDocument", "policyDocument")?;
        self.check_trust(document, "policyDocument")?;
        let checked =
            self.authorize_holder(ctx, Kind::Role, "iam:UpdateAssumeRolePolicy", &name)?;
        let document = document.to_string();
        let key = role_key(&ctx.account_id, &name);
        self.iam
            .update(move |view| {
                let mut role: RoleRecord =
                    get_json(view, &key)?.ok_or_else(|| role_not_found(&name))?;
                checked.same(&role.id)?;
                if role.service_linked {
                    return Err(unmodifiable(&role.name));
                }
                role.trust = document.clone();
                Ok((vec![Op::put(key.clone(), to_bytes(&role)?)], ()))
            })
            .await?;
        Ok(String::new())
    }
}

fn unmodifiable(name: &str) -> AwsError {
    AwsError::bad_request(
        "UnmodifiableEntity",
        format!("Cannot perform the operation on the protected role '{name}' - this role is only modifiable by AWS"),
    )
}

// ---- managed policies -----------------------------------------------------------

impl IamService {
    async fn create_policy(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = p.required("PolicyName", "policyName")?;
        check_name(name, "policyName", 1, 128)?;
        let path = p.get("Path").unwrap_or("/");
        check_policy_path(path)?;
        let document = p.required("PolicyDocument", "policyDocument")?;
        check_document(document, "policyDocument")?;
        let description = p.get("Description");
        if let Some(d) = description {
            check_description(d)?;
        }
        let tags = parse_tags(p)?;
        ctx.authorize(&[Requirement::new(
            "iam:CreatePolicy",
            format!("arn:aws:iam::{}:policy{path}{name}", ctx.account_id),
        )
        .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
        let id = unique_id("ANPA");
        let version = PolicyVersionRecord {
            id: "v1".into(),
            document: document.to_string(),
            created: now_secs(),
        };
        let _ = self
            .iam
            .cached(format!("local:{id}#v1"), document, Policy::parse_identity)?;
        let record = PolicyRecord {
            name: name.to_string(),
            path: path.to_string(),
            id,
            created: version.created,
            updated: version.created,
            description: description.map(str::to_string),
            default_version: "v1".into(),
            next_version: 2,
            versions: vec![version],
            tags,
        };
        let key = policy_key(&ctx.account_id, name);
        let value = to_bytes(&record)?;
        let taken = already_exists(format!(
            "A policy called {name} already exists. Duplicate names are not allowed."
        ));
        self.iam
            .update(move |view| {
                if view.get(&key).is_some() {
                    return Err(taken.clone());
                }
                Ok((vec![Op::put(key.clone(), value.clone())], ()))
            })
            .await?;
        let mut x = Xml::new();
        PolicyView::local(&record, &ctx.account_id).xml(&mut x, "Policy", 0);
        Ok(x.finish())
    }

    fn policy_arn<'a>(p: &Params<'a>) -> Result<&'a str, AwsError> {
        let arn = p.required("PolicyArn", "policyArn")?;
        check_policy_arn(arn)?;
        Ok(arn)
    }

    /// Authorizes `action` on the managed policy `arn` (its canonical ARN:
    /// a policy is found only by its exact ARN), with a customer managed
    /// policy's tags as `aws:ResourceTag/*`.
    fn authorize_policy(
        &self,
        ctx: &RequestContext,
        action: &str,
        arn: &str,
    ) -> Result<(), AwsError> {
        let tags = match find_policy(self.iam.store(), &ctx.account_id, arn)? {
            Some(Found::Local(record)) => record.tags,
            _ => Vec::new(),
        };
        ctx.authorize(&[Requirement::new(action, arn)
            .resource_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])
    }

    fn get_policy(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let arn = Self::policy_arn(p)?;
        self.authorize_policy(ctx, "iam:GetPolicy", arn)?;
        let view: &dyn ReadView = self.iam.store();
        let found =
            find_policy(view, &ctx.account_id, arn)?.ok_or_else(|| policy_not_found(arn))?;
        let count = attachment_counts(view, &ctx.account_id)?
            .get(arn)
            .copied()
            .unwrap_or(0);
        let policy = match &found {
            Found::Aws(m) => PolicyView::aws(m),
            Found::Local(r) => PolicyView::local(r, &ctx.account_id),
        };
        let mut x = Xml::new();
        policy.xml(&mut x, "Policy", count);
        Ok(x.finish())
    }

    fn get_policy_version(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let arn = Self::policy_arn(p)?;
        let version = p.required("VersionId", "versionId")?;
        check_version_id(version)?;
        self.authorize_policy(ctx, "iam:GetPolicyVersion", arn)?;
        let found = find_policy(self.iam.store(), &ctx.account_id, arn)?
            .ok_or_else(|| version_not_found(arn, version))?;
        let (record, default) = match found {
            Found::Aws(m) => (
                PolicyVersionRecord {
                    id: m.version_id.to_string(),
                    document: m.document.to_string(),
                    created: AWS_POLICY_DATE,
                },
                m.version_id.to_string(),
            ),
            Found::Local(r) => (
                r.versions
                    .iter()
                    .find(|v| v.id == version)
                    .cloned()
                    .ok_or_else(|| version_not_found(arn, version))?,
                r.default_version.clone(),
            ),
        };
        if record.id != version {
            return Err(version_not_found(arn, version));
        }
        let mut x = Xml::new();
        version_xml(&mut x, &record, &default, true);
        Ok(x.finish())
    }

    fn list_policy_versions(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let arn = Self::policy_arn(p)?;
        let max = p.max_items()?;
        self.authorize_policy(ctx, "iam:ListPolicyVersions", arn)?;
        let found = find_policy(self.iam.store(), &ctx.account_id, arn)?
            .ok_or_else(|| policy_not_found(arn))?;
        let (versions, default) = match found {
            Found::Aws(m) => (
                vec![PolicyVersionRecord {
                    id: m.version_id.to_string(),
                    document: m.document.to_string(),
                    created: AWS_POLICY_DATE,
                }],
                m.version_id.to_string(),
            ),
            Found::Local(r) => (r.versions, r.default_version),
        };
        // Newest first, as IAM lists them.
        let mut items: Vec<(String, PolicyVersionRecord)> = versions
            .into_iter()
            .rev()
            .enumerate()
            .map(|(i, v)| (format!("{i:04}"), v))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (page, next) = paginate(items, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("Versions");
        for v in &page {
            x.open("member")
                .text("VersionId", &v.id)
                .text(
                    "IsDefaultVersion",
                    if v.id == default { "true" } else { "false" },
                )
                .text("CreateDate", &format_iso8601(v.created))
                .close("member");
        }
        x.close("Versions").page(next.as_deref());
        Ok(x.finish())
    }

    /// Edits a customer managed policy in one mutation.
    async fn edit_policy<T, F>(&self, account: &str, arn: &str, f: F) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: Fn(&dyn ReadView, &mut PolicyRecord) -> Result<(Option<Op>, T), AwsError>
            + Send
            + 'static,
    {
        let account = account.to_string();
        let arn = arn.to_string();
        self.iam
            .update(move |view| match find_policy(view, &account, &arn)? {
                None => Err(policy_not_found(&arn)),
                Some(Found::Aws(_)) => Err(aws_policy_unmodifiable(&arn)),
                Some(Found::Local(mut record)) => {
                    let (op, value) = f(view, &mut record)?;
                    let mut ops = vec![Op::put(
                        policy_key(&account, &record.name),
                        to_bytes(&record)?,
                    )];
                    if let Some(op) = op {
                        ops = vec![op];
                    }
                    Ok((ops, value))
                }
            })
            .await
    }

    async fn create_policy_version(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let arn = Self::policy_arn(p)?;
        let document = p.required("PolicyDocument", "policyDocument")?;
        check_document(document, "policyDocument")?;
        let set_default = p.bool("SetAsDefault", "setAsDefault")?.unwrap_or(false);
        self.parse_identity(document)?;
        self.authorize_policy(ctx, "iam:CreatePolicyVersion", arn)?;
        let document = document.to_string();
        let now = now_secs();
        let (version, default) = self
            .edit_policy(&ctx.account_id, arn, move |_, record| {
                if record.versions.len() >= MAX_POLICY_VERSIONS {
                    return Err(limit_exceeded(format!(
                        "A managed policy can have up to {MAX_POLICY_VERSIONS} versions. Before you create a new version, you must delete at least one existing version."
                    )));
                }
                let version = PolicyVersionRecord {
                    id: format!("v{}", record.next_version),
                    document: document.clone(),
                    created: now,
                };
                record.next_version += 1;
                record.versions.push(version.clone());
                if set_default {
                    record.default_version = version.id.clone();
                    record.updated = now;
                }
                Ok((None, (version, record.default_version.clone())))
            })
            .await?;
        let mut x = Xml::new();
        version_xml(&mut x, &version, &default, false);
        Ok(x.finish())
    }

    async fn delete_policy_version(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let arn = Self::policy_arn(p)?;
        let version = p.required("VersionId", "versionId")?;
        check_version_id(version)?;
        self.authorize_policy(ctx, "iam:DeletePolicyVersion", arn)?;
        let version = version.to_string();
        let arn_owned = arn.to_string();
        self.edit_policy(&ctx.account_id, arn, move |_, record| {
            if !record.versions.iter().any(|v| v.id == version) {
                return Err(version_not_found(&arn_owned, &version));
            }
            if record.default_version == version {
                return Err(delete_conflict(
                    "Cannot delete the default version of a policy.",
                ));
            }
            record.versions.retain(|v| v.id != version);
            Ok((None, ()))
        })
        .await?;
        Ok(String::new())
    }

    async fn set_default_policy_version(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let arn = Self::policy_arn(p)?;
        let version = p.required("VersionId", "versionId")?;
        check_version_id(version)?;
        self.authorize_policy(ctx, "iam:SetDefaultPolicyVersion", arn)?;
        let version = version.to_string();
        let arn_owned = arn.to_string();
        let now = now_secs();
        self.edit_policy(&ctx.account_id, arn, move |_, record| {
            if !record.versions.iter().any(|v| v.id == version) {
                return Err(version_not_found(&arn_owned, &version));
            }
            record.default_version = version.clone();
            record.updated = now;
            Ok((None, ()))
        })
        .await?;
        Ok(String::new())
    }

    fn list_policies(&self, ctx: &RequestContext, p: &Params<'_>) -> Result<String, AwsError> {
        let scope = p.get("Scope").unwrap_or("All");
        if !["All", "AWS", "Local"].contains(&scope) {
            return Err(validation(format!(
                "1 validation error detected: Value '{scope}' at 'scope' failed to satisfy constraint: Member must satisfy enum value set: [All, AWS, Local]"
            )));
        }
        let only_attached = p.bool("OnlyAttached", "onlyAttached")?.unwrap_or(false);
        let prefix = p.get("PathPrefix").unwrap_or("/");
        check_policy_path(prefix)?;
        let max = p.max_items()?;
        ctx.authorize(&[Requirement::new("iam:ListPolicies", "*")])?;
        let view: &dyn ReadView = self.iam.store();
        let counts = attachment_counts(view, &ctx.account_id)?;
        let mut policies: Vec<PolicyView> = Vec::new();
        if scope != "Local" {
            policies.extend(managed::ALL.iter().map(PolicyView::aws));
        }
        if scope != "AWS" {
            policies.extend(
                list_json::<PolicyRecord>(view, &policies_prefix(&ctx.account_id))?
                    .iter()
                    .map(|r| PolicyView::local(r, &ctx.account_id)),
            );
        }
        let mut items: Vec<(String, (usize, PolicyView))> = policies
            .into_iter()
            .filter(|pv| pv.path.starts_with(prefix))
            .map(|pv| (counts.get(&pv.arn).copied().unwrap_or(0), pv))
            .filter(|(count, _)| !only_attached || *count > 0)
            .map(|(count, pv)| {
                let local = if pv.aws { "aws" } else { "local" };
                (
                    format!("{} {local}", pv.name.to_ascii_lowercase()),
                    (count, pv),
                )
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (page, next) = paginate(items, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("Policies");
        for (count, pv) in &page {
            pv.xml(&mut x, "member", *count);
        }
        x.close("Policies").page(next.as_deref());
        Ok(x.finish())
    }

    async fn delete_policy(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let arn = Self::policy_arn(p)?;
        self.authorize_policy(ctx, "iam:DeletePolicy", arn)?;
        let account = ctx.account_id.clone();
        let arn_owned = arn.to_string();
        self.edit_policy(&ctx.account_id, arn, move |view, record| {
            let attached = attachment_counts(view, &account)?
                .get(&arn_owned)
                .copied()
                .unwrap_or(0);
            if attached > 0 {
                return Err(delete_conflict("Cannot delete a policy attached to entities."));
            }
            if record.versions.len() > 1 {
                return Err(delete_conflict(
                    "This policy has more than one version. Before you delete a policy, you must delete the policy's versions. The default version is deleted with the policy.",
                ));
            }
            Ok((Some(Op::delete(policy_key(&account, &record.name))), ()))
        })
        .await?;
        Ok(String::new())
    }

    // ---- attachments ----------------------------------------------------------------

    async fn attach(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        kind: Kind,
    ) -> Result<String, AwsError> {
        let name = kind.name(p)?;
        let arn = Self::policy_arn(p)?.to_string();
        let checked = self.authorize_holder_with(
            ctx,
            kind,
            &kind.action("Attach", "Policy"),
            name,
            &[("iam:PolicyARN", &arn)],
        )?;
        let account = ctx.account_id.clone();
        let f: EditFn = Arc::new(move |view, holder| {
            if find_policy(view, &account, &arn)?.is_none() {
                return Err(policy_not_attachable(&arn));
            }
            if holder.attached().contains(&arn) {
                return Ok(false);
            }
            if holder.attached().len() >= MAX_ATTACHED {
                return Err(limit_exceeded(format!(
                    "Cannot exceed quota for {}: {MAX_ATTACHED}",
                    kind.quota()
                )));
            }
            holder.attached().push(arn.clone());
            Ok(true)
        });
        self.edit(kind, &ctx.account_id, name, checked, f).await?;
        Ok(String::new())
    }

    async fn detach(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        kind: Kind,
    ) -> Result<String, AwsError> {
        let name = kind.name(p)?;
        let arn = Self::policy_arn(p)?.to_string();
        let checked = self.authorize_holder_with(
            ctx,
            kind,
            &kind.action("Detach", "Policy"),
            name,
            &[("iam:PolicyARN", &arn)],
        )?;
        let f: EditFn = Arc::new(move |_, holder| {
            let before = holder.attached().len();
            holder.attached().retain(|a| *a != arn);
            if holder.attached().len() == before {
                return Err(policy_not_found(&arn));
            }
            Ok(true)
        });
        self.edit(kind, &ctx.account_id, name, checked, f).await?;
        Ok(String::new())
    }

    fn list_attached(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        kind: Kind,
    ) -> Result<String, AwsError> {
        let name = kind.name(p)?;
        let prefix = p.get("PathPrefix").unwrap_or("/");
        check_policy_path(prefix)?;
        let max = p.max_items()?;
        let checked =
            self.authorize_holder(ctx, kind, &kind.action("ListAttached", "Policies"), name)?;
        let held = self.held(kind, &ctx.account_id, name, &checked)?;
        let mut items: Vec<(String, String)> = held
            .attached
            .into_iter()
            .filter(|arn| {
                let path = arn
                    .split_once(":policy")
                    .map(|(_, rest)| &rest[..rest.len() - last_segment(rest).len()])
                    .unwrap_or("/");
                path.starts_with(prefix)
            })
            .map(|arn| (arn.clone(), arn))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (page, next) = paginate(items, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("AttachedPolicies");
        for arn in &page {
            x.open("member")
                .text("PolicyName", last_segment(arn))
                .text("PolicyArn", arn)
                .close("member");
        }
        x.close("AttachedPolicies").page(next.as_deref());
        Ok(x.finish())
    }

    // ---- inline policies ---------------------------------------------------------------

    fn inline_name<'a>(p: &Params<'a>) -> Result<&'a str, AwsError> {
        let name = p.required("PolicyName", "policyName")?;
        check_name(name, "policyName", 1, 128)?;
        Ok(name)
    }

    fn inline_not_found(kind: Kind, policy: &str) -> AwsError {
        no_such_entity(format!(
            "The {} policy with name {policy} cannot be found.",
            kind.label()
        ))
    }

    async fn put_inline(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        kind: Kind,
    ) -> Result<String, AwsError> {
        let name = kind.name(p)?;
        let policy = Self::inline_name(p)?.to_string();
        let document = p.required("PolicyDocument", "policyDocument")?;
        check_document(document, "policyDocument")?;
        self.parse_identity(document)?;
        let checked = self.authorize_holder(ctx, kind, &kind.action("Put", "Policy"), name)?;
        let document = document.to_string();
        let f: EditFn = Arc::new(move |_, holder| {
            if holder.inline().get(&policy) == Some(&document) {
                return Ok(false);
            }
            holder.inline().insert(policy.clone(), document.clone());
            Ok(true)
        });
        self.edit(kind, &ctx.account_id, name, checked, f).await?;
        Ok(String::new())
    }

    fn get_inline(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        kind: Kind,
    ) -> Result<String, AwsError> {
        let name = kind.name(p)?;
        let policy = Self::inline_name(p)?;
        let checked = self.authorize_holder(ctx, kind, &kind.action("Get", "Policy"), name)?;
        let held = self.held(kind, &ctx.account_id, name, &checked)?;
        let document = held
            .inline
            .get(policy)
            .ok_or_else(|| Self::inline_not_found(kind, policy))?;
        let mut x = Xml::new();
        x.text(kind.name_param().0, &held.name)
            .text("PolicyName", policy)
            .text("PolicyDocument", &encode_document(document));
        Ok(x.finish())
    }

    async fn delete_inline(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        kind: Kind,
    ) -> Result<String, AwsError> {
        let name = kind.name(p)?;
        let policy = Self::inline_name(p)?.to_string();
        let checked = self.authorize_holder(ctx, kind, &kind.action("Delete", "Policy"), name)?;
        let f: EditFn = Arc::new(move |_, holder| {
            if holder.inline().remove(&policy).is_none() {
                return Err(Self::inline_not_found(kind, &policy));
            }
            Ok(true)
        });
        self.edit(kind, &ctx.account_id, name, checked, f).await?;
        Ok(String::new())
    }

    fn list_inline(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        kind: Kind,
    ) -> Result<String, AwsError> {
        let name = kind.name(p)?;
        let max = p.max_items()?;
        let checked = self.authorize_holder(ctx, kind, &kind.action("List", "Policies"), name)?;
        let held = self.held(kind, &ctx.account_id, name, &checked)?;
        let items: Vec<(String, String)> =
            held.inline.into_keys().map(|k| (k.clone(), k)).collect();
        let (page, next) = paginate(items, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("PolicyNames");
        for policy in &page {
            x.text("member", policy);
        }
        x.close("PolicyNames").page(next.as_deref());
        Ok(x.finish())
    }
}
