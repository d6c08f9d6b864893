//! Helpers both services share: store failures, pagination tokens and page
//! sizes.

use base64::Engine;
use berth_model::AwsError;

const URL: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

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

/// A request that breaks the model's constraints, worded as AWS's request
/// validation words it.
pub fn validation(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("ValidationException", message)
}

/// `MaxResults`: `max` when absent, else 1 to `max`.
pub fn page_size(max_results: Option<i32>, max: usize) -> Result<usize, AwsError> {
    match max_results {
        None => Ok(max),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(validation(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy \
             constraint: Member must have value {} {max}",
            if n < 1 {
                "greater than or equal to 1 and less than or equal to"
            } else {
                "less than or equal to"
            }
        ))),
    }
}

/// The Regions of the `aws` partition (botocore's endpoints), the only
/// partition Berth's ARNs use. Berth serves every one of them: a request
/// signed for a Region acts in that Region's scope.
pub const AWS_REGIONS: [&str; 34] = [
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];
