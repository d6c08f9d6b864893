//! The gateway's view of IAM user access keys and STS session keys. Their
//! secrets are opened once per record revision and kept in memory, so a
//! signature check reads no store and decrypts nothing.

use std::sync::Arc;

use berth_model::credentials::{CredentialSource, ResolvedCredential};
use berth_model::{Principal, PrincipalKind};
use berth_store::ReadView;
use berth_util::time::now_secs;

use crate::records::{user_key, AccessKeyRecord, SessionKind};
use crate::Iam;

/// Resolves active IAM user access keys (`AKIA…`) and unexpired STS
/// sessions (`ASIA…`). Inactive keys and expired sessions do not resolve.
pub struct IamCredentials {
    iam: Arc<Iam>,
}

impl IamCredentials {
    pub fn new(iam: Arc<Iam>) -> Self {
        IamCredentials { iam }
    }

    fn user_key(&self, view: &dyn ReadView, access_key_id: &str) -> Option<ResolvedCredential> {
        let key: Arc<AccessKeyRecord> = self.iam.access_key(view, access_key_id).ok()??;
        if key.status != "Active" {
            return None;
        }
        let user = self
            .iam
            .holder(view, &user_key(&key.account, &key.user_name))
            .ok()??;
        Some(ResolvedCredential {
            secret_access_key: key.secret.clone(),
            session_token: None,
            expires_at: None,
            principal: Principal {
                kind: PrincipalKind::User,
                arn: format!(
                    "arn:aws:iam::{}:user{}{}",
                    key.account, user.path, user.name
                ),
                user_id: user.id.clone(),
                account_id: key.account.clone(),
                access_key_id: access_key_id.to_string(),
            },
        })
    }

    fn session(&self, view: &dyn ReadView, access_key_id: &str) -> Option<ResolvedCredential> {
        let session = self.iam.session(view, access_key_id).ok()??;
        if session.expires <= now_secs() {
            return None;
        }
        let kind = match session.kind {
            SessionKind::Role | SessionKind::Federated => PrincipalKind::AssumedRole,
            SessionKind::User => PrincipalKind::User,
            SessionKind::Root => PrincipalKind::Root,
        };
        Some(ResolvedCredential {
            principal: Principal {
                kind,
                arn: session.arn(),
                user_id: session.user_id(),
                account_id: session.account.clone(),
                access_key_id: access_key_id.to_string(),
            },
            secret_access_key: session.secret.clone(),
            session_token: Some(session.token.clone()),
            expires_at: Some(session.expires),
        })
    }
}

impl CredentialSource for IamCredentials {
    fn resolve(&self, access_key_id: &str) -> Option<ResolvedCredential> {
        let view: &dyn ReadView = self.iam.store();
        if access_key_id.starts_with("ASIA") {
            self.session(view, access_key_id)
        } else {
            let found = self.user_key(view, access_key_id);
            if found.is_some() {
                // In memory only; flushed to the store now and then.
                self.iam.usage.touch(access_key_id, None);
                self.iam.usage.flush_if_due(&self.iam);
            }
            found
        }
    }
}
