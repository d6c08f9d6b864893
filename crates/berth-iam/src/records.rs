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

pub const ACCESS_KEYS_PREFIX: &str = "/iam/access-keys/";

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
}

impl PolicyRecord {
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:policy{}{}", self.path, self.name)
    }

    pub fn default_document(&self) -> Option<&PolicyVersionRecord> {
        self.versions.iter().find(|v| v.id == self.default_version)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    pub account: String,
    pub role_name: String,
    pub role_path: String,
    pub role_id: String,
    pub session_name: String,
    /// The session's secret access key, sealed as an access key's is.
    pub secret: String,
    pub token: String,
    pub created: i64,
    pub expires: i64,
}

impl SessionRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:sts::{}:assumed-role/{}/{}",
            self.account, self.role_name, self.session_name
        )
    }

    pub fn user_id(&self) -> String {
        format!("{}:{}", self.role_id, self.session_name)
    }
}
