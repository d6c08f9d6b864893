//! What IAM and STS keep in the store, and where.
//!
//! Layout: `/iam/<account>/users/<lowercased name>`, `/iam/<account>/roles/<…>`,
//! `/iam/<account>/policies/<…>` (names are unique without regard to case, as
//! in IAM), `/iam/access-keys/<access key id>` (key ids are global, so the
//! gateway finds a key with one read), `/sts/sessions/<access key id>`.
//! Secret access keys are stored sealed with the master key.
//! A user or role record carries its inline policies and the ARNs of its
//! attached managed policies, so deleting or authorizing needs one read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub fn users_prefix(account: &str) -> String {
    format!("/iam/{account}/users/")
}

pub fn user_key(account: &str, name: &str) -> String {
    format!("/iam/{account}/users/{}", name.to_ascii_lowercase())
}

pub fn roles_prefix(account: &str) -> String {
    format!("/iam/{account}/roles/")
}

pub fn role_key(account: &str, name: &str) -> String {
    format!("/iam/{account}/roles/{}", name.to_ascii_lowercase())
}

pub fn policies_prefix(account: &str) -> String {
    format!("/iam/{account}/policies/")
}

pub fn policy_key(account: &str, name: &str) -> String {
    format!("/iam/{account}/policies/{}", name.to_ascii_lowercase())
}

pub fn groups_prefix(account: &str) -> String {
    format!("/iam/{account}/groups/")
}

pub fn group_key(account: &str, name: &str) -> String {
    format!("/iam/{account}/groups/{}", name.to_ascii_lowercase())
}

pub fn instance_profiles_prefix(account: &str) -> String {
    format!("/iam/{account}/instance-profiles/")
}

pub fn instance_profile_key(account: &str, name: &str) -> String {
    format!(
        "/iam/{account}/instance-profiles/{}",
        name.to_ascii_lowercase()
    )
}

pub fn oidc_providers_prefix(account: &str) -> String {
    format!("/iam/{account}/oidc-providers/")
}

/// An OpenID Connect provider by its URL without the scheme (`host/path`,
/// lowercased: IAM compares provider URLs without regard to case); the
/// slashes are escaped so every provider is one level under the prefix.
pub fn oidc_provider_key(account: &str, url: &str) -> String {
    format!(
        "/iam/{account}/oidc-providers/{}",
        url.to_ascii_lowercase()
            .replace('%', "%25")
            .replace('/', "%2F")
    )
}

pub fn server_certificates_prefix(account: &str) -> String {
    format!("/iam/{account}/server-certificates/")
}

pub fn server_certificate_key(account: &str, name: &str) -> String {
    format!(
        "/iam/{account}/server-certificates/{}",
        name.to_ascii_lowercase()
    )
}

pub fn password_policy_key(account: &str) -> String {
    format!("/iam/{account}/password-policy")
}

pub const ACCESS_KEYS_PREFIX: &str = "/iam/access-keys/";

/// When an access key was last used, flushed from memory now and then.
pub fn access_key_usage_key(access_key_id: &str) -> String {
    format!("/iam/access-key-usage/{access_key_id}")
}

pub fn access_key_key(access_key_id: &str) -> String {
    format!("{ACCESS_KEYS_PREFIX}{access_key_id}")
}

pub const SESSIONS_PREFIX: &str = "/sts/sessions/";

pub fn session_key(access_key_id: &str) -> String {
    format!("{SESSIONS_PREFIX}{access_key_id}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub path: String,
    pub id: String,
    pub created: i64,
    /// Inline policies: name → document.
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    /// ARNs of attached managed policies, in attachment order.
    #[serde(default)]
    pub attached: Vec<String>,
    #[serde(default)]
    pub access_keys: Vec<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The groups the user is in, by name as stored in the group record.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The user's console password, if it has one.
    #[serde(default)]
    pub login: Option<LoginProfile>,
}

/// A console password: PBKDF2-HMAC-SHA256 of the password, never the
/// password itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginProfile {
    pub created: i64,
    pub reset_required: bool,
    /// Base64 salt and derived key.
    pub salt: String,
    pub hash: String,
    /// Earlier passwords' salts and keys, newest first (for the password
    /// policy's reuse prevention).
    #[serde(default)]
    pub previous: Vec<(String, String)>,
}

impl UserRecord {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:user{}{}", self.path, self.name)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    pub account: String,
    pub user_name: String,
    pub id: String,
    /// The secret access key, sealed (`sealed:v1:…`) with the master key;
    /// plaintext in records of older data directories.
    pub secret: String,
    /// `Active` or `Inactive`.
    pub status: String,
    pub created: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleRecord {
    pub name: String,
    pub path: String,
    pub id: String,
    pub created: i64,
    pub trust: String,
    #[serde(default)]
    pub description: Option<String>,
    pub max_session: u32,
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    #[serde(default)]
    pub attached: Vec<String>,
    /// Service-linked roles can only be changed by their service.
    #[serde(default)]
    pub service_linked: bool,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl RoleRecord {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:role{}{}", self.path, self.name)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub path: String,
    pub id: String,
    pub created: i64,
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    #[serde(default)]
    pub attached: Vec<String>,
}

impl GroupRecord {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:group{}{}", self.path, self.name)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceProfileRecord {
    pub name: String,
    pub path: String,
    pub id: String,
    pub created: i64,
    /// Role names (at most one, as IAM allows).
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl InstanceProfileRecord {
    pub fn arn(&self, account: &str) -> String {
        format!(
            "arn:aws:iam::{account}:instance-profile{}{}",
            self.path, self.name
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OidcProviderRecord {
    /// The provider URL without its scheme, as its ARN carries it.
    pub url: String,
    /// `https`, or `http` for a provider on this machine's loopback.
    pub scheme: String,
    #[serde(default)]
    pub client_ids: Vec<String>,
    #[serde(default)]
    pub thumbprints: Vec<String>,
    pub created: i64,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl OidcProviderRecord {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:oidc-provider/{}", self.url)
    }

    /// The issuer tokens of this provider carry (`iss`).
    pub fn issuer(&self) -> String {
        format!("{}://{}", self.scheme, self.url)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerCertificateRecord {
    pub name: String,
    pub path: String,
    pub id: String,
    pub created: i64,
    /// Seconds since the epoch (the certificate's notAfter).
    pub expiration: i64,
    pub body: String,
    #[serde(default)]
    pub chain: Option<String>,
    /// The private key, sealed like a secret access key.
    pub private_key: String,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl ServerCertificateRecord {
    pub fn arn(&self, account: &str) -> String {
        format!(
            "arn:aws:iam::{account}:server-certificate{}{}",
            self.path, self.name
        )
    }
}

/// The account password policy; `None` members were not set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PasswordPolicyRecord {
    pub minimum_length: u32,
    pub require_symbols: bool,
    pub require_numbers: bool,
    pub require_uppercase: bool,
    pub require_lowercase: bool,
    pub allow_users_to_change: bool,
    pub max_age: Option<u32>,
    pub reuse_prevention: Option<u32>,
    pub hard_expiry: Option<bool>,
}

/// When an access key was last used and for what.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyUsage {
    pub date: i64,
    pub service: String,
    pub region: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyVersionRecord {
    pub id: String,
    pub document: String,
    pub created: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub name: String,
    pub path: String,
    pub id: String,
    pub created: i64,
    pub updated: i64,
    #[serde(default)]
    pub description: Option<String>,
    pub default_version: String,
    /// The number of the next version handed out (`v<n>`).
    pub next_version: u32,
    pub versions: Vec<PolicyVersionRecord>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl PolicyRecord {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:policy{}{}", self.path, self.name)
    }

    pub fn default_document(&self) -> Option<&PolicyVersionRecord> {
        self.versions.iter().find(|v| v.id == self.default_version)
    }
}

/// Whose credentials a session's are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionKind {
    /// A role session (AssumeRole, AssumeRoleWithWebIdentity, task roles):
    /// `role_*` name the role.
    #[default]
    Role,
    /// GetSessionToken of an IAM user: `user_*` name the user.
    User,
    /// GetSessionToken of the root user.
    Root,
    /// GetFederationToken of an IAM user (`user_*`), named `session_name`.
    Federated,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    pub account: String,
    #[serde(default)]
    pub kind: SessionKind,
    #[serde(default)]
    pub role_name: String,
    #[serde(default)]
    pub role_path: String,
    #[serde(default)]
    pub role_id: String,
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub user_path: String,
    #[serde(default)]
    pub user_id: String,
    /// The role session's name, or the federated user's name.
    pub session_name: String,
    /// Session policies (AssumeRole's or GetFederationToken's `Policy`,
    /// and the documents of their `PolicyArns`): the session may do only
    /// what these allow too.
    #[serde(default)]
    pub session_policies: Option<Vec<String>>,
    /// Session tags (GetFederationToken's `Tags`): the session's
    /// `aws:PrincipalTag/*`.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The session's secret access key, sealed as an access key's is.
    pub secret: String,
    pub token: String,
    pub created: i64,
    pub expires: i64,
}

impl SessionRecord {
    pub fn arn(&self) -> String {
        match self.kind {
            SessionKind::Role => format!(
                "arn:aws:sts::{}:assumed-role/{}/{}",
                self.account, self.role_name, self.session_name
            ),
            SessionKind::User => format!(
                "arn:aws:iam::{}:user{}{}",
                self.account, self.user_path, self.user_name
            ),
            SessionKind::Root => format!("arn:aws:iam::{}:root", self.account),
            SessionKind::Federated => format!(
                "arn:aws:sts::{}:federated-user/{}",
                self.account, self.session_name
            ),
        }
    }

    pub fn user_id(&self) -> String {
        match self.kind {
            SessionKind::Role => format!("{}:{}", self.role_id, self.session_name),
            SessionKind::User => self.user_id.clone(),
            SessionKind::Root => self.account.clone(),
            SessionKind::Federated => format!("{}:{}", self.account, self.session_name),
        }
    }
}
