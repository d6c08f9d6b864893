//! Leader election: which server runs a controller when several share a
//! store. With the embedded store there is one server, which always leads;
//! on etcd a server leads while it holds a key bound to its lease.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::etcd_client::{b64, int, EtcdClient};
use crate::{EtcdStore, StoreError};

/// Leadership of one named role; `lost` resolves when it ends.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    /// Keeps the channel open for a leadership nobody ends.
    _never: Option<watch::Sender<bool>>,
    _guard: Option<Guard>,
}

/// Ends the keep-alive and gives the role up when the leadership is dropped.
struct Guard {
    keepalive: tokio::task::JoinHandle<()>,
    release: Option<(EtcdClient, u64)>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.keepalive.abort();
        if let Some((client, lease)) = self.release.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = client.revoke_lease(lease).await;
                });
            }
        }
    }
}

impl Leadership {
    /// A leadership that never ends (the only server).
    pub fn forever() -> Leadership {
        let (tx, lost) = watch::channel(false);
        Leadership {
            lost,
            _never: Some(tx),
            _guard: None,
        }
    }

    /// Resolves once this server no longer leads.
    pub async fn lost(&mut self) {
        loop {
            if *self.lost.borrow_and_update() {
                return;
            }
            if self.lost.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }
}

/// Campaigns for named roles.
#[async_trait::async_trait]
pub trait Elections: Send + Sync + 'static {
    /// Waits until this server leads `role` (e.g. `service-controller`).
    async fn campaign(&self, role: &str, identity: &str) -> Result<Leadership, StoreError>;
}

/// The single server of an embedded store: always the leader.
pub struct SoleServer;

#[async_trait::async_trait]
impl Elections for SoleServer {
    async fn campaign(&self, _role: &str, _identity: &str) -> Result<Leadership, StoreError> {
        Ok(Leadership::forever())
    }
}

/// Elections on etcd: the leader of `role` holds
/// `<namespace>#leader/<role>`, bound to a lease it keeps alive; a server
/// that stops renewing loses it after the lease's TTL and another takes
/// over.
pub struct EtcdElections {
    client: EtcdClient,
    namespace: String,
    ttl: Duration,
}

impl EtcdElections {
    /// `ttl`: how long a silent leader keeps its role (default 10 s).
    pub fn new(store: &EtcdStore, ttl: Duration) -> Arc<EtcdElections> {
        Arc::new(EtcdElections {
            client: store.client(),
            namespace: store.namespace().to_string(),
            ttl: ttl.max(Duration::from_secs(1)),
        })
    }

    fn key(&self, role: &str) -> Vec<u8> {
        format!("{}#leader/{role}", self.namespace).into_bytes()
    }

    /// Who leads `role` now, if anyone.
    pub async fn leader(&self, role: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(role);
        let answer = self
            .client
            .call("/v3/kv/range", json!({"key": b64(&key)}))
            .await?;
        let value = answer
            .get("kvs")
            .and_then(Value::as_array)
            .and_then(|kvs| kvs.first())
            .and_then(|kv| kv.get("value"))
            .and_then(Value::as_str)
            .map(crate::etcd_client::unb64)
            .transpose()?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Waits until `key` is deleted (its holder gave up or its lease ran out).
    async fn wait_vacant(&self, key: &[u8], revision: u64) -> Result<(), StoreError> {
        let mut stream = self
            .client
            .stream(
                "/v3/watch",
                json!({"create_request": {"key": b64(key),
                        "start_revision": (revision + 1).to_string()}}),
            )
            .await?;
        // Bounded: re-check the key now and then even without an event.
        let deadline = tokio::time::Instant::now() + self.ttl;
        loop {
            let message = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Ok(()),
                Ok(message) => message?,
            };
            let Some(message) = message else {
                return Ok(());
            };
            let result = message.get("result").unwrap_or(&message);
            let deleted = result
                .get("events")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|e| e.get("type").and_then(Value::as_str) == Some("DELETE"));
            if deleted {
                return Ok(());
            }
        }
    }
}

#[async_trait::async_trait]
impl Elections for EtcdElections {
    async fn campaign(&self, role: &str, identity: &str) -> Result<Leadership, StoreError> {
        let key = self.key(role);
        loop {
            let lease = self.client.grant_lease(self.ttl.as_secs().max(1)).await?;
            let txn = json!({
                "compare": [{"key": b64(&key), "target": "CREATE", "result": "EQUAL",
                              "create_revision": "0"}],
                "success": [{"request_put": {"key": b64(&key), "value": b64(identity.as_bytes()),
                                             "lease": lease.to_string()}}],
                "failure": [{"request_range": {"key": b64(&key)}}],
            });
            let answer = self.client.call("/v3/kv/txn", txn).await?;
            if answer
                .get("succeeded")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                tracing::info!(role, identity, "leading");
                return Ok(self.hold(lease));
            }
            let _ = self.client.revoke_lease(lease).await;
            let revision = int(answer.get("header").unwrap_or(&Value::Null), "revision");
            self.wait_vacant(&key, revision).await?;
        }
    }
}

impl EtcdElections {
    /// Keeps `lease` alive; the leadership ends when renewing fails for
    /// longer than the TTL allows or the lease is gone.
    fn hold(&self, lease: u64) -> Leadership {
        let (tx, lost) = watch::channel(false);
        let client = self.client.clone();
        let ttl = self.ttl;
        let keepalive = tokio::spawn(async move {
            let mut last_renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(ttl / 3).await;
                match client.keep_alive(lease).await {
                    Ok(true) => last_renewed = tokio::time::Instant::now(),
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the leader lease failed");
                        // Give up before the lease can have run out, so two
                        // servers never lead at once.
                        if last_renewed.elapsed() >= ttl * 2 / 3 {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(true);
        });
        Leadership {
            lost,
            _never: None,
            _guard: Some(Guard {
                keepalive,
                release: Some((self.client.clone(), lease)),
            }),
        }
    }
}
