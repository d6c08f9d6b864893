//! When access keys were last used (GetAccessKeyLastUsed).
//!
//! Recording a use must cost a request nothing durable: the gateway resolves
//! a key for every signed request, so a use is noted in memory (a mutex and a
//! map insert) and the notes are written to the store at most once a minute,
//! by a task spawned from the request that finds the minute past. A server
//! that stops loses at most the last minute of notes, which only makes a
//! "last used" date a little older.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use berth_model::AwsError;
use berth_store::{Op, ReadView};
use berth_util::time::now_secs;

use crate::records::{access_key_key, access_key_usage_key, KeyUsage};
use crate::util::{get_json, to_bytes};
use crate::Iam;

/// Seconds between flushes of the notes to the store.
pub const FLUSH_INTERVAL_SECS: i64 = 60;
/// Notes kept at most between flushes; past that new keys wait.
const MAX_PENDING: usize = 100_000;

/// A use noted in memory; `service` is `None` when the use was seen before
/// the call was known (signature checks), so a flush keeps the service and
/// region already stored.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    date: i64,
    service: Option<(String, String)>,
}

#[derive(Default)]
pub struct UsageTracker {
    pending: Mutex<HashMap<String, Pending>>,
    last_flush: AtomicI64,
    flushing: Arc<AtomicBool>,
}

impl UsageTracker {
    /// Notes that `access_key_id` was used now, for `service` in `region`
    /// when known.
    pub fn touch(&self, access_key_id: &str, service: Option<(&str, &str)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING && !pending.contains_key(access_key_id) {
            return;
        }
        let entry = pending
            .entry(access_key_id.to_string())
            .or_insert_with(|| Pending {
                date: 0,
                service: None,
            });
        entry.date = now_secs();
        if let Some((service, region)) = service {
            entry.service = Some((service.to_string(), region.to_string()));
        }
    }

    /// Spawns a flush when the last one is a minute old and a runtime is
    /// at hand; cheap otherwise.
    pub fn flush_if_due(&self, iam: &Arc<Iam>) {
        let now = now_secs();
        let last = self.last_flush.load(Ordering::Relaxed);
        if last == 0 {
            // The first use starts the clock.
            self.last_flush.store(now, Ordering::Relaxed);
            return;
        }
        if now - last < FLUSH_INTERVAL_SECS || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_flush.store(now, Ordering::Relaxed);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.flushing.store(false, Ordering::Release);
            return;
        };
        let iam = iam.clone();
        runtime.spawn(async move {
            if let Err(e) = iam.usage.flush(&iam).await {
                tracing::warn!(code = %e.code, "recording access key use failed");
            }
            iam.usage.flushing.store(false, Ordering::Release);
        });
    }

    /// Writes the notes to the store (merged with what it holds) and forgets
    /// them.
    pub async fn flush(&self, iam: &Iam) -> Result<usize, AwsError> {
        let notes: HashMap<String, Pending> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *pending)
        };
        if notes.is_empty() {
            return Ok(0);
        }
        let kept = notes.clone();
        let result = iam
            .update(move |view| {
                let mut ops = Vec::new();
                for (id, note) in &notes {
                    // A key deleted meanwhile has no use to record.
                    if view.get(&access_key_key(id)).is_none() {
                        continue;
                    }
                    let key = access_key_usage_key(id);
                    let stored: Option<KeyUsage> = get_json(view, &key)?;
                    let (service, region) = match (&note.service, &stored) {
                        (Some((s, r)), _) => (s.clone(), r.clone()),
                        (None, Some(old)) => (old.service.clone(), old.region.clone()),
                        (None, None) => ("N/A".to_string(), "N/A".to_string()),
                    };
                    let usage = KeyUsage {
                        date: note.date.max(stored.as_ref().map_or(0, |u| u.date)),
                        service,
                        region,
                    };
                    if stored.as_ref() != Some(&usage) {
                        ops.push(Op::put(key, to_bytes(&usage)?));
                    }
                }
                let n = ops.len();
                Ok((ops, n))
            })
            .await;
        if result.is_err() {
            // Put the notes back (newer ones win) for the next flush.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (id, note) in kept {
                pending.entry(id).or_insert(note);
            }
        }
        result
    }

    /// The last use of `access_key_id`: the note in memory over the stored
    /// record.
    pub fn last_used(
        &self,
        view: &dyn ReadView,
        access_key_id: &str,
    ) -> Result<Option<KeyUsage>, AwsError> {
        let stored: Option<KeyUsage> = get_json(view, &access_key_usage_key(access_key_id))?;
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(access_key_id)
            .cloned();
        Ok(match (pending, stored) {
            (None, stored) => stored,
            (Some(note), stored) => {
                let (service, region) = match (note.service, &stored) {
                    (Some(sr), _) => sr,
                    (None, Some(old)) => (old.service.clone(), old.region.clone()),
                    (None, None) => ("N/A".to_string(), "N/A".to_string()),
                };
                Some(KeyUsage {
                    date: note.date.max(stored.map_or(0, |u| u.date)),
                    service,
                    region,
                })
            }
        })
    }
}
