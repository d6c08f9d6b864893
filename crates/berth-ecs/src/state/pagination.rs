//! `nextToken`s: opaque, and stable under concurrent inserts because they name
//! the last key returned rather than an offset.

use base64::Engine;
use berth_model::AwsError;

use crate::error;

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Wraps the last key of a page (relative to the listing's prefix).
pub(crate) fn encode(last: &str) -> String {
    ENGINE.encode(format!("berth1:{last}"))
}

/// Reads a token back; any token Berth did not hand out is refused.
pub(crate) fn decode(token: &str) -> Result<String, AwsError> {
    let bytes = ENGINE.decode(token).map_err(|_| invalid_token())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid_token())?;
    text.strip_prefix("berth1:")
        .map(str::to_string)
        .ok_or_else(invalid_token)
}

fn invalid_token() -> AwsError {
    error::invalid_parameter("Invalid nextToken: the token is not one this service returned.")
}

/// Validates `maxResults` against ECS's bounds (1–100) and applies the default.
pub(crate) fn page_size(max_results: Option<i32>, default: usize) -> Result<usize, AwsError> {
    match max_results {
        None => Ok(default),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(n) => Err(error::invalid_parameter(format!(
            "maxResults must be between 1 and 100; got {n}."
        ))),
    }
}

/// One page of a filtered listing under `prefix`: `pick` turns a record into
/// the item to list, or `None` to skip it. The token names the last listed
/// key, and is returned only when another matching record follows.
pub(crate) fn filtered_page<T>(
    view: &(impl berth_store::ReadView + ?Sized),
    prefix: &str,
    next_token: Option<&str>,
    limit: usize,
    mut pick: impl FnMut(&berth_store::KeyValue) -> Result<Option<T>, AwsError>,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let mut after = match next_token {
        Some(token) if !token.is_empty() => Some(format!("{prefix}{}", decode(token)?)),
        _ => None,
    };
    let mut items = Vec::new();
    let mut last_key: Option<String> = None;
    loop {
        let page = view.range(prefix, after.as_deref(), 256);
        if page.is_empty() {
            return Ok((items, None));
        }
        after = page.last().map(|kv| kv.key.clone());
        for kv in &page {
            if let Some(item) = pick(kv)? {
                if items.len() == limit {
                    let token = last_key.map(|k| encode(&k[prefix.len()..]));
                    return Ok((items, token));
                }
                items.push(item);
                last_key = Some(kv.key.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        assert_eq!(decode(&encode("web/0000000003")).unwrap(), "web/0000000003");
        assert!(decode("not-a-token!").is_err());
        assert!(decode(&ENGINE.encode("other")).is_err());
    }
}
