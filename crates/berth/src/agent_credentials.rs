//! The credentials minted for agents at registration, as the gateway
//! resolves them. Their secrets are stored sealed with the master key
//! (`/berth/agent-credentials/<key id>`); each is opened once and kept in
//! memory, so a signature check decrypts nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_api::{CredentialSource, ResolvedCredential};
use berth_ecs::agent_api::{agent_credential, agent_principal, AgentCredential};
use berth_model::seal::{self, Sealer};
use berth_store::{Op, Store, StoreExt};

/// Where the agent protocol keeps agent credentials.
const PREFIX: &str = "/berth/agent-credentials/";
/// Opened secrets kept at most; past that the cache starts over.
const MAX_OPENED: usize = 4096;

pub struct AgentCredentials {
    store: Arc<dyn Store>,
    sealer: Arc<dyn Sealer>,
    /// Key id → (the secret as stored, its plaintext).
    opened: Mutex<HashMap<String, (String, String)>>,
}

impl AgentCredentials {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<dyn Sealer>) -> AgentCredentials {
        AgentCredentials {
            store,
            sealer,
            opened: Mutex::new(HashMap::new()),
        }
    }

    fn secret(&self, access_key_id: &str, stored: &str) -> Option<String> {
        let mut opened = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((was, plain)) = opened.get(access_key_id) {
            if was == stored {
                return Some(plain.clone());
            }
        }
        let plain = match seal::open_text(Some(self.sealer.as_ref()), stored) {
            Ok(plain) => plain,
            Err(e) => {
                tracing::warn!(access_key_id, error = %e, "an agent credential cannot be opened");
                return None;
            }
        };
        if opened.len() >= MAX_OPENED {
            opened.clear();
        }
        opened.insert(
            access_key_id.to_string(),
            (stored.to_string(), plain.clone()),
        );
        Some(plain)
    }
}

impl CredentialSource for AgentCredentials {
    fn resolve(&self, access_key_id: &str) -> Option<ResolvedCredential> {
        let credential = agent_credential(self.store.as_ref(), access_key_id)?;
        Some(ResolvedCredential {
            secret_access_key: self.secret(access_key_id, &credential.secret_access_key)?,
            session_token: None,
            expires_at: None,
            principal: agent_principal(access_key_id, &credential),
        })
    }
}

/// Seals the agent credential secrets an older data directory stored in
/// plaintext; returns how many.
pub async fn seal_stored(store: &dyn Store, sealer: Arc<dyn Sealer>) -> anyhow::Result<usize> {
    let outcome = store
        .update(move |view| {
            let mut ops = Vec::new();
            for kv in view.range(PREFIX, None, usize::MAX) {
                let Ok(mut credential) = serde_json::from_slice::<AgentCredential>(&kv.value)
                else {
                    continue;
                };
                if seal::is_sealed(&credential.secret_access_key) {
                    continue;
                }
                credential.secret_access_key =
                    seal::seal_text(Some(sealer.as_ref()), &credential.secret_access_key)
                        .map_err(|e| e.to_string())?;
                let value = serde_json::to_vec(&credential).map_err(|e| e.to_string())?;
                ops.push(Op::put(kv.key, value));
            }
            let n = ops.len();
            Ok::<_, String>((ops, n))
        })
        .await
        .map_err(|e| anyhow::anyhow!("sealing agent credentials: {e}"))?;
    let (_, n) = outcome.map_err(|e| anyhow::anyhow!("sealing agent credentials: {e}"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn agent_secrets_are_opened_and_old_ones_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            berth_store::SqliteStore::open(berth_store::SqliteOptions::new(
                dir.path().join("store.db"),
            ))
            .unwrap(),
        );
        let key: Arc<dyn Sealer> = Arc::new(berth_secrets::MasterKey::from_bytes([3; 32]));
        let credential = |secret: &str| AgentCredential {
            secret_access_key: secret.to_string(),
            account: "000000000000".into(),
            region: "us-east-1".into(),
            cluster: "default".into(),
            instance_id: "i".into(),
            instance_arn: "arn:aws:ecs:us-east-1:000000000000:container-instance/default/i".into(),
        };
        let plain_id = "ABIAPLAINPLAINPLAIN1";
        store
            .put(
                &format!("{PREFIX}{plain_id}"),
                serde_json::to_vec(&credential("old/secret"))
                    .unwrap()
                    .into(),
            )
            .await
            .unwrap();
        let sealed_id = "ABIASEALEDSEALEDSEA1";
        let sealed = seal::seal_text(Some(key.as_ref()), "new/secret").unwrap();
        store
            .put(
                &format!("{PREFIX}{sealed_id}"),
                serde_json::to_vec(&credential(&sealed)).unwrap().into(),
            )
            .await
            .unwrap();
        let source = AgentCredentials::new(store.clone(), key.clone());
        assert_eq!(
            source.resolve(plain_id).unwrap().secret_access_key,
            "old/secret"
        );
        assert_eq!(
            source.resolve(sealed_id).unwrap().secret_access_key,
            "new/secret"
        );
        assert_eq!(seal_stored(store.as_ref(), key.clone()).await.unwrap(), 1);
        assert_eq!(seal_stored(store.as_ref(), key.clone()).await.unwrap(), 0);
        let raw = store.get(&format!("{PREFIX}{plain_id}")).unwrap();
        assert!(!String::from_utf8_lossy(&raw.value).contains("old/secret"));
        assert_eq!(
            source.resolve(plain_id).unwrap().secret_access_key,
            "old/secret"
        );
        // Another key cannot open them.
        let other = AgentCredentials::new(
            store.clone(),
            Arc::new(berth_secrets::MasterKey::from_bytes([4; 32])),
        );
        assert!(other.resolve(sealed_id).is_none());
    }
}
