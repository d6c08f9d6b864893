//! Signing requests, for Berth's own clients (the agent, the benchmarks).

use berth_util::time::format_amz_date;

use crate::canonical::{self, sha256_hex};

/// Who signs, for which region and service, and when.
#[derive(Clone, Debug)]
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
    /// Seconds since the epoch.
    pub now: i64,
}

/// The headers to add to a request so it verifies: `x-amz-date`,
/// `x-amz-security-token` when there is a session token, and `authorization`.
/// `headers` must include `host`; every header given is signed.
pub fn sign_headers(
    params: &SigningParams<'_>,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(params.now);
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    all.push(("x-amz-date".to_string(), amz_date.clone()));
    if let Some(token) = params.session_token {
        all.push(("x-amz-security-token".to_string(), token.to_string()));
    }
    let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let borrowed: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let canonical_request = canonical::canonical_request(
        method,
        path,
        &canonical::canonical_query(query, false),
        &borrowed,
        &names,
        &sha256_hex(body),
    );
    let date = &amz_date[..8];
    let scope = format!("{date}/{}/{}/aws4_request", params.region, params.service);
    let string_to_sign = canonical::string_to_sign(&amz_date, &scope, &canonical_request);
    let key = canonical::signing_key(
        params.secret_access_key,
        date,
        params.region,
        params.service,
    );
    let signature = hex::encode(canonical::hmac_sha256(&key, string_to_sign.as_bytes()));
    let authorization = format!(
        "{} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
        crate::ALGORITHM,
        params.access_key_id,
        names.join(";")
    );
    let mut out = vec![("x-amz-date".to_string(), amz_date)];
    if let Some(token) = params.session_token {
        out.push(("x-amz-security-token".to_string(), token.to_string()));
    }
    out.push(("authorization".to_string(), authorization));
    out
}
