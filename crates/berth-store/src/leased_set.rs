//! `LeasedSet`: a set of names shared by every server on one etcd, each
//! entry bound to the lease of the server that added it, so the entries of
//! a server that dies vanish when its lease runs out. Berth uses it for
//! agent presence (`agentConnected`): a server marks the agents polling it;
//! any server answers whether an agent is connected to some server.
//!
//! Entries live outside the store's namespace range (`<ns>#<set>/<name>`),
//! so they never take part in the store's transactions; every server keeps
//! a view of the whole set, fed by a watch.
//!
//! A server whose lease ran out anyway (etcd unreachable or too slow for
//! longer than the TTL) takes a new lease and puts its entries again, so a
//! live server's entries never stay gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use crate::etcd_client::{b64, int, range_end, unb64, EtcdClient};
use crate::{EtcdStore, StoreError};

/// A set of names shared through etcd, entries bound to server leases.
pub struct LeasedSet {
    client: EtcdClient,
    prefix: String,
    /// This server's lease; replaced when it ran out.
    lease: Arc<AtomicU64>,
    /// The entries this server put (name → value), to put again under a
    /// new lease.
    mine: Arc<Mutex<HashMap<String, String>>>,
    /// name → value (the value names the server that holds it).
    view: Arc<RwLock<HashMap<String, String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LeasedSet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl LeasedSet {
    /// Opens set `name` with a lease of `ttl` for this server's entries.
    pub async fn open(
        store: &EtcdStore,
        name: &str,
        ttl: Duration,
    ) -> Result<LeasedSet, StoreError> {
        let client = store.client();
        let prefix = format!("{}#{name}/", store.namespace());
        let ttl_secs = ttl.as_secs().max(2);
        let lease = client.grant_lease(ttl_secs).await?;
        let view = Arc::new(RwLock::new(HashMap::new()));
        let revision = load(&client, &prefix, &view).await?;
        let follower = tokio::spawn(follow(
            client.clone(),
            prefix.clone(),
            view.clone(),
            revision,
        ));
        let lease = Arc::new(AtomicU64::new(lease));
        let mine = Arc::new(Mutex::new(HashMap::new()));
        let keeper = tokio::spawn(keep(
            client.clone(),
            prefix.clone(),
            ttl_secs,
            lease.clone(),
            mine.clone(),
            view.clone(),
        ));
        Ok(LeasedSet {
            client,
            prefix,
            lease,
            mine,
            view,
            tasks: vec![follower, keeper],
        })
    }

    fn key(&self, name: &str) -> Vec<u8> {
        format!("{}{name}", self.prefix).into_bytes()
    }

    /// Adds (or takes over) `name` for this server.
    pub async fn insert(&self, name: &str, value: &str) -> Result<(), StoreError> {
        // Noted first, so a lease renewed meanwhile puts it too.
        self.mine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), value.to_string());
        let lease = self.lease.load(Ordering::SeqCst);
        let first = put(&self.client, &self.key(name), value, lease).await;
        let renewed = self.lease.load(Ordering::SeqCst);
        match first {
            // The lease ran out under the call: put it under the new one.
            Err(_) if renewed != lease => {
                put(&self.client, &self.key(name), value, renewed).await?
            }
            other => other?,
        }
        self.view
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Removes `name` if this server's entry still says `value`.
    pub async fn remove(&self, name: &str, value: &str) -> Result<(), StoreError> {
        {
            let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
            if mine.get(name).is_some_and(|v| v == value) {
                mine.remove(name);
            }
        }
        let key = self.key(name);
        self.client
            .call(
                "/v3/kv/txn",
                json!({"compare": [{"key": b64(&key), "target": "VALUE", "result": "EQUAL",
                                     "value": b64(value.as_bytes())}],
                       "success": [{"request_delete_range": {"key": b64(&key)}}]}),
            )
            .await?;
        Ok(())
    }

    /// The value of `name`, as this server last saw it.
    pub fn get(&self, name: &str) -> Option<String> {
        self.view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The lease this server's entries are bound to now.
    #[cfg(test)]
    pub(crate) fn lease_id(&self) -> u64 {
        self.lease.load(Ordering::SeqCst)
    }

    pub fn len(&self) -> usize {
        self.view.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn put(client: &EtcdClient, key: &[u8], value: &str, lease: u64) -> Result<(), StoreError> {
    client
        .call(
            "/v3/kv/put",
            json!({"key": b64(key), "value": b64(value.as_bytes()), "lease": lease.to_string()}),
        )
        .await
        .map(|_| ())
}

/// Keeps this server's lease alive; when it ran out anyway, takes a new one
/// and puts this server's entries again (those no other server took over
/// meanwhile).
async fn keep(
    client: EtcdClient,
    prefix: String,
    ttl_secs: u64,
    lease: Arc<AtomicU64>,
    mine: Arc<Mutex<HashMap<String, String>>>,
    view: Arc<RwLock<HashMap<String, String>>>,
) {
    let mut expired = false;
    loop {
        if !expired {
            tokio::time::sleep(Duration::from_secs(ttl_secs) / 3).await;
            match client.keep_alive(lease.load(Ordering::SeqCst)).await {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::warn!("this server's presence lease ran out; taking a new one and publishing its entries again");
                    expired = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the presence lease failed");
                    continue;
                }
            }
        }
        let renewed = match client.grant_lease(ttl_secs).await {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::warn!(error = %e, "taking a new presence lease failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        lease.store(renewed, Ordering::SeqCst);
        expired = false;
        let entries: Vec<(String, String)> = {
            let view = view.read().unwrap_or_else(|p| p.into_inner());
            let mut mine = mine.lock().unwrap_or_else(|p| p.into_inner());
            // An entry another server holds now is no longer this one's.
            mine.retain(|name, value| view.get(name).is_none_or(|held| held == value));
            mine.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
        };
        for (name, value) in entries {
            let key = format!("{prefix}{name}").into_bytes();
            if let Err(e) = put(&client, &key, &value, renewed).await {
                tracing::warn!(error = %e, entry = %name, "publishing a presence entry again failed");
            }
        }
    }
}

async fn load(
    client: &EtcdClient,
    prefix: &str,
    view: &RwLock<HashMap<String, String>>,
) -> Result<u64, StoreError> {
    let start = prefix.as_bytes().to_vec();
    let end = range_end(&start);
    let answer = client.range(&start, &end, 0, 0).await?;
    let revision = int(answer.get("header").unwrap_or(&Value::Null), "revision");
    let mut fresh = HashMap::new();
    for kv in answer
        .get("kvs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some((name, value)) = entry(prefix, kv)? {
            fresh.insert(name, value);
        }
    }
    *view.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    Ok(revision)
}

fn entry(prefix: &str, kv: &Value) -> Result<Option<(String, String)>, StoreError> {
    let key = unb64(kv.get("key").and_then(Value::as_str).unwrap_or(""))?;
    let value = unb64(kv.get("value").and_then(Value::as_str).unwrap_or(""))?;
    let key = String::from_utf8_lossy(&key).into_owned();
    Ok(key.strip_prefix(prefix).map(|name| {
        (
            name.to_string(),
            String::from_utf8_lossy(&value).into_owned(),
        )
    }))
}

async fn follow(
    client: EtcdClient,
    prefix: String,
    view: Arc<RwLock<HashMap<String, String>>>,
    mut revision: u64,
) {
    loop {
        let start = prefix.as_bytes().to_vec();
        let end = range_end(&start);
        let stream = client
            .stream(
                "/v3/watch",
                json!({"create_request": {"key": b64(&start), "range_end": b64(&end),
                        "start_revision": (revision + 1).to_string()}}),
            )
            .await;
        if let Ok(mut stream) = stream {
            while let Ok(Some(message)) = stream.next().await {
                let result = message.get("result").unwrap_or(&message);
                if int(result, "compact_revision") > 0 {
                    break;
                }
                for event in result
                    .get("events")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(kv) = event.get("kv") else { continue };
                    revision = revision.max(int(kv, "mod_revision"));
                    let Ok(Some((name, value))) = entry(&prefix, kv) else {
                        continue;
                    };
                    let mut view = view.write().unwrap_or_else(|p| p.into_inner());
                    if event.get("type").and_then(Value::as_str) == Some("DELETE") {
                        view.remove(&name);
                    } else {
                        view.insert(name, value);
                    }
                }
            }
        }
        // Lost the stream (or etcd compacted): list again, then follow.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(at) = load(&client, &prefix, &view).await {
            revision = at;
        }
    }
}
