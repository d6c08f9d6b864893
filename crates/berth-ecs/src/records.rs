//! Reading and writing JSON records in the store.

use berth_model::AwsError;
use berth_store::{KeyValue, ReadView};
use serde::{de::DeserializeOwned, Serialize};

use crate::error;

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, AwsError> {
    serde_json::from_slice(&kv.value).map_err(|e| {
        tracing::error!(key = %kv.key, error = %e, "corrupt record");
        error::server("A stored record could not be read.")
    })
}

pub fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, AwsError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| error::server(format!("A record could not be encoded: {e}")))
}

/// Reads a record and its mod revision.
pub fn load<T: DeserializeOwned>(
    view: &(impl ReadView + ?Sized),
    key: &str,
) -> Result<Option<(T, u64)>, AwsError> {
    match view.get(key) {
        Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
        None => Ok(None),
    }
}

/// Seconds since the Unix epoch, as AWS JSON timestamps carry them.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}
