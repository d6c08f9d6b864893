//! Helpers both services share: the clock, store failures, pagination tokens.

use base64::Engine;
use berth_model::AwsError;

const URL: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Seconds since the epoch, as JSON 1.1 timestamps are sent.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whole seconds: AWS reports these dates without fractions.
pub fn now_secs() -> f64 {
    now().floor()
}

/// A store failure: logged, and answered without detail (the request may carry
/// a secret value, and the store error says nothing the caller can act on).
pub fn store_error(e: berth_store::StoreError) -> AwsError {
    tracing::error!(error = %e, "store failure");
    AwsError::internal("The request could not be stored; retry it.")
}

/// A stored record that does not decode: a bug or corruption, never the
/// caller's fault. The key is logged; the value never is.
pub fn corrupt(key: &str) -> AwsError {
    tracing::error!(key, "undecodable record in the store");
    AwsError::internal("An internal error occurred.")
}

/// Pagination tokens name the last key a page showed, so pages stay stable
/// when records are added or removed between calls.
pub fn encode_token(last_key: &str) -> String {
    URL.encode(last_key)
}

pub fn decode_token(token: &str) -> Option<String> {
    URL.decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}
