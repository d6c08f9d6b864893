//! Where the gateway finds the secret behind an access key id: a port the
//! root keys, agent credentials, IAM users and STS sessions implement.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::Principal;

/// A credential the gateway can verify a signature with.
#[derive(Clone, Debug)]
pub struct ResolvedCredential {
    pub secret_access_key: String,
    /// Temporary credentials must present this token (`X-Amz-Security-Token`).
    pub session_token: Option<String>,
    /// When temporary credentials stop working (seconds since the epoch).
    pub expires_at: Option<i64>,
    pub principal: Principal,
}

/// Resolves access key ids to credentials. IAM users, STS sessions and agents
/// plug in their own sources later; the gateway asks each in turn.
pub trait CredentialSource: Send + Sync + 'static {
    fn resolve(&self, access_key_id: &str) -> Option<ResolvedCredential>;
}

/// A fixed set of credentials, such as the root keys.
#[derive(Default)]
pub struct StaticCredentials {
    keys: RwLock<HashMap<String, ResolvedCredential>>,
}

impl StaticCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, credential: ResolvedCredential) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(credential.principal.access_key_id.clone(), credential);
    }
}

impl CredentialSource for StaticCredentials {
    fn resolve(&self, access_key_id: &str) -> Option<ResolvedCredential> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(access_key_id)
            .cloned()
    }
}
