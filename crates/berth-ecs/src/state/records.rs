//! Reading and writing JSON records in the store.

use berth_model::AwsError;
use berth_store::{KeyValue, ReadView};
use serde::{de::DeserializeOwned, Serialize};

use crate::error;

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, AwsError> {
    decoded::count::<T>();
    serde_json::from_slice(&kv.value).map_err(|e| {
        tracing::error!(key = %kv.key, error = %e, "corrupt record");
        error::server("A stored record could not be read.")
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, AwsError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| error::server(format!("A record could not be encoded: {e}")))
}

/// Reads a record and its mod revision.
pub(crate) fn load<T: DeserializeOwned>(
    view: &(impl ReadView + ?Sized),
    key: &str,
) -> Result<Option<(T, u64)>, AwsError> {
    match view.get(key) {
        Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
        None => Ok(None),
    }
}

/// Whether two stored values are equal; values read from one store share
/// their buffer, so the pointers usually answer without comparing bytes.
/// (For memos of decoded records, keyed by the value they came from.)
pub(crate) fn same_stored_value(a: &bytes::Bytes, b: &bytes::Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Loads the record each reference of a Describe call names, in order;
/// references that name nothing (or cannot be resolved to a key) come back
/// in the second list, for ECS's MISSING failures.
pub(crate) fn load_each<T: DeserializeOwned>(
    view: &(impl ReadView + ?Sized),
    references: Vec<String>,
    key_of: impl Fn(&str) -> Option<String>,
) -> Result<(Vec<T>, Vec<String>), AwsError> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for reference in references {
        let record = match key_of(&reference) {
            Some(key) => load::<T>(view, &key)?,
            None => None,
        };
        match record {
            Some((record, _)) => found.push(record),
            None => missing.push(reference),
        }
    }
    Ok((found, missing))
}

/// A digest of a request as the handler received it (SHA-256 of its JSON,
/// hex): what an idempotency token remembers of the call it came with.
pub(crate) fn fingerprint<T: Serialize>(request: &T) -> String {
    use sha2::Digest;
    let body = serde_json::to_vec(request).unwrap_or_default();
    sha2::Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How many records of each type this thread decoded, so tests and
/// measurements can see how much a call reads (e.g. that an agent's poll
/// decodes only its own instance's tasks).
pub mod decoded {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static COUNTS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub(super) fn count<T>() {
        COUNTS.with(|c| {
            *c.borrow_mut()
                .entry(std::any::type_name::<T>())
                .or_insert(0) += 1
        });
    }

    /// Records of type `T` decoded on this thread so far.
    pub fn of<T>() -> u64 {
        COUNTS.with(|c| {
            c.borrow()
                .get(std::any::type_name::<T>())
                .copied()
                .unwrap_or(0)
        })
    }
}

/// ECS's rule for the names of clusters, services, capacity providers and
/// gateways: 1 to 255 letters, digits, hyphens and underscores.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
