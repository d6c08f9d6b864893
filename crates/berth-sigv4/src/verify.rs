//! Verifying a signed request (`Authorization` header or presigned query).

use std::collections::HashMap;
use std::sync::Mutex;

use berth_util::time::{format_amz_date, parse_amz_date, parse_http_date};
use subtle::ConstantTimeEq;

use crate::canonical::{self, sha256_hex};
use crate::{AuthError, RequestParts, ALGORITHM};

/// Where the verifier finds the secret of an access key id.
pub trait SecretLookup {
    fn secret_for(&self, access_key_id: &str) -> Option<String>;
}

/// What a valid signature says about the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
    /// `X-Amz-Security-Token`, from the header or the presigned query.
    pub session_token: Option<String>,
    /// When the request was signed (seconds since the epoch).
    pub signed_at: i64,
    pub presigned: bool,
}

/// Longest validity a presigned request may ask for (7 days), as AWS allows.
const MAX_PRESIGN_EXPIRES: i64 = 7 * 24 * 3600;
/// Derived signing keys are cached; the cache is cleared when it grows past this.
const KEY_CACHE_LIMIT: usize = 4096;
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Verifies SigV4 signatures, caching derived signing keys (they change once
/// a day per key, region and service).
pub struct Verifier {
    max_skew_secs: i64,
    key_cache: Mutex<HashMap<String, [u8; 32]>>,
}

/// The signature's claims, before checking them.
struct Claims {
    access_key_id: String,
    scope_date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    signed_at: i64,
    session_token: Option<String>,
    /// Presigned requests carry their validity in seconds.
    expires: Option<i64>,
}

impl Verifier {
    pub fn new(max_skew_secs: i64) -> Self {
        Verifier {
            max_skew_secs,
            key_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks everything about `request`'s signature that does not need
    /// its body: the form of the signature, its time, that the access key is
    /// known and that the headers which select the operation are signed.
    /// Lets the gateway refuse a bad request before reading its body.
    pub fn precheck(
        &self,
        request: &RequestParts<'_>,
        now: i64,
        secrets: &dyn SecretLookup,
    ) -> Result<(), AuthError> {
        let (claims, _) = self.checked_claims(request, now)?;
        secrets
            .secret_for(&claims.access_key_id)
            .ok_or(AuthError::UnknownKey)?;
        Ok(())
    }

    /// The signature's claims, checked for form, time and signed headers.
    fn checked_claims(
        &self,
        request: &RequestParts<'_>,
        now: i64,
    ) -> Result<(Claims, bool), AuthError> {
        let presigned = canonical::query_pairs(request.query)
            .iter()
            .any(|(k, _)| k == "X-Amz-Algorithm" || k == "X-Amz-Signature");
        let claims = if presigned {
            parse_presigned(request)?
        } else {
            parse_header(request)?
        };
        self.check_time(&claims, now)?;
        check_signed_headers(request, &claims.signed_headers)?;
        if request.header("x-amz-content-sha256") == Some(UNSIGNED_PAYLOAD) {
            // Only S3-style endpoints accept a body the signature does not
            // cover; every API Berth signs covers it.
            return Err(AuthError::Invalid(
                "UNSIGNED-PAYLOAD is not accepted by this service: the signature must cover the request body."
                    .to_string(),
            ));
        }
        Ok((claims, presigned))
    }

    /// Checks `request`'s signature as of `now` (seconds since the epoch).
    pub fn verify(
        &self,
        request: &RequestParts<'_>,
        now: i64,
        secrets: &dyn SecretLookup,
    ) -> Result<Verified, AuthError> {
        let (claims, presigned) = self.checked_claims(request, now)?;
        let secret = secrets
            .secret_for(&claims.access_key_id)
            .ok_or(AuthError::UnknownKey)?;
        let key = self.signing_key(&secret, &claims);
        let scope = format!(
            "{}/{}/{}/aws4_request",
            claims.scope_date, claims.region, claims.service
        );
        let query = canonical::canonical_query(request.query, presigned);
        let signed: Vec<&str> = claims.signed_headers.iter().map(String::as_str).collect();

        // The body is always covered, presigned or not: a presigned URL for
        // one call must not carry another call's parameters.
        let payload = payload_hash(request)?;
        let canonical_request = canonical::canonical_request(
            request.method,
            request.path,
            &query,
            request.headers,
            &signed,
            &payload,
        );
        let string_to_sign =
            canonical::string_to_sign(&claims.amz_date, &scope, &canonical_request);
        let expected = hex::encode(canonical::hmac_sha256(&key, string_to_sign.as_bytes()));
        if bool::from(expected.as_bytes().ct_eq(claims.signature.as_bytes())) {
            return Ok(Verified {
                access_key_id: claims.access_key_id,
                region: claims.region,
                service: claims.service,
                session_token: claims.session_token,
                signed_at: claims.signed_at,
                presigned,
            });
        }
        Err(AuthError::Mismatch {
            canonical_request,
            string_to_sign,
        })
    }

    fn check_time(&self, claims: &Claims, now: i64) -> Result<(), AuthError> {
        let header_day = claims.amz_date.get(..8).unwrap_or_default();
        if claims.scope_date != header_day {
            return Err(AuthError::Invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
                claims.scope_date, header_day, claims.amz_date
            )));
        }
        if claims.signed_at > now + self.max_skew_secs {
            return Err(AuthError::Expired(format!(
                "Signature not yet current: {} is still later than {} ({} + {} min.)",
                claims.amz_date,
                format_amz_date(now + self.max_skew_secs),
                format_amz_date(now),
                self.max_skew_secs / 60
            )));
        }
        match claims.expires {
            Some(expires) => {
                if now > claims.signed_at + expires {
                    return Err(AuthError::Expired(format!(
                        "Signature expired: {} is now earlier than {} ({} - {} sec.)",
                        format_amz_date(claims.signed_at + expires),
                        format_amz_date(now),
                        format_amz_date(now),
                        expires
                    )));
                }
            }
            None => {
                if claims.signed_at < now - self.max_skew_secs {
                    return Err(AuthError::Expired(format!(
                        "Signature expired: {} is now earlier than {} ({} - {} min.)",
                        claims.amz_date,
                        format_amz_date(now - self.max_skew_secs),
                        format_amz_date(now),
                        self.max_skew_secs / 60
                    )));
                }
            }
        }
        Ok(())
    }

    fn signing_key(&self, secret: &str, claims: &Claims) -> [u8; 32] {
        let cache_key = format!(
            "{}\n{}\n{}\n{}\n{}",
            claims.access_key_id, secret, claims.scope_date, claims.region, claims.service
        );
        let mut cache = self.key_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cache.get(&cache_key) {
            return *key;
        }
        let key =
            canonical::signing_key(secret, &claims.scope_date, &claims.region, &claims.service);
        if cache.len() >= KEY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(cache_key, key);
        key
    }
}

/// The headers that must be signed when present: `Host` always, and those
/// that select the operation (`X-Amz-Target`, and `Content-Type` for the JSON
/// protocols, which it names), so a signature made for one call cannot be
/// replayed as another.
fn check_signed_headers(request: &RequestParts<'_>, signed: &[String]) -> Result<(), AuthError> {
    let is_signed = |name: &str| signed.iter().any(|h| h == name);
    if !is_signed("host") {
        return Err(AuthError::Invalid(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_string(),
        ));
    }
    if request.header("x-amz-target").is_some() {
        if !is_signed("x-amz-target") {
            return Err(AuthError::Invalid(
                "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.".to_string(),
            ));
        }
        if request.header("content-type").is_some() && !is_signed("content-type") {
            return Err(AuthError::Invalid(
                "'Content-Type' must be a 'SignedHeader' in the AWS Authorization.".to_string(),
            ));
        }
    }
    Ok(())
}

/// The payload hash the signer must have used: the body's SHA-256, or what
/// `X-Amz-Content-SHA256` declares, which must then match the body.
fn payload_hash(request: &RequestParts<'_>) -> Result<String, AuthError> {
    let body_hash = sha256_hex(request.body);
    match request.header("x-amz-content-sha256") {
        None => Ok(body_hash),
        Some(UNSIGNED_PAYLOAD) => Ok(UNSIGNED_PAYLOAD.to_string()),
        Some(declared) if declared.eq_ignore_ascii_case(&body_hash) => Ok(declared.to_string()),
        Some(_) => Err(AuthError::Invalid(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
                .to_string(),
        )),
    }
}

/// Splits `AKID/20150830/us-east-1/ecs/aws4_request`.
fn parse_credential(credential: &str) -> Result<(String, String, String, String), AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts.iter().any(|p| p.is_empty()) {
        return Err(AuthError::Incomplete(format!(
            "Credential should be scoped to a valid region, not of the form '{credential}'. \
             Expected <access key>/<YYYYMMDD>/<region>/<service>/aws4_request."
        )));
    }
    if parts[4] != "aws4_request" {
        return Err(AuthError::Invalid(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
            parts[4]
        )));
    }
    Ok((
        parts[0].to_string(),
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    ))
}

fn parse_signed_headers(list: &str) -> Vec<String> {
    list.split(';')
        .filter(|h| !h.is_empty())
        .map(|h| h.trim().to_ascii_lowercase())
        .collect()
}

fn parse_header(request: &RequestParts<'_>) -> Result<Claims, AuthError> {
    let authorization = request.header("authorization").ok_or(AuthError::Missing)?;
    let rest = authorization.strip_prefix(ALGORITHM).unwrap_or("");
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            continue;
        };
        match name.trim() {
            "Credential" => credential = Some(value.trim()),
            "SignedHeaders" => signed_headers = Some(value.trim()),
            "Signature" => signature = Some(value.trim()),
            _ => {}
        }
    }
    let mut problems = String::new();
    if credential.is_none() {
        problems.push_str("Authorization header requires 'Credential' parameter. ");
    }
    if signature.is_none() {
        problems.push_str("Authorization header requires 'Signature' parameter. ");
    }
    if signed_headers.is_none() {
        problems.push_str("Authorization header requires 'SignedHeaders' parameter. ");
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(AuthError::Incomplete(format!(
            "{problems}Authorization={authorization}"
        )));
    };
    let (amz_date, signed_at) = match request.header("x-amz-date") {
        Some(value) => (
            value.to_string(),
            parse_amz_date(value).ok_or_else(|| bad_date(value))?,
        ),
        None => {
            let value = request.header("date").ok_or_else(|| {
                AuthError::Incomplete(format!(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={authorization}"
                ))
            })?;
            let epoch = parse_http_date(value).ok_or_else(|| bad_date(value))?;
            (format_amz_date(epoch), epoch)
        }
    };
    let (access_key_id, scope_date, region, service) = parse_credential(credential)?;
    Ok(Claims {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers: parse_signed_headers(signed_headers),
        signature: signature.to_string(),
        amz_date,
        signed_at,
        session_token: request.header("x-amz-security-token").map(str::to_string),
        expires: None,
    })
}

fn bad_date(value: &str) -> AuthError {
    AuthError::Incomplete(format!(
        "Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601"
    ))
}

fn parse_presigned(request: &RequestParts<'_>) -> Result<Claims, AuthError> {
    let pairs = canonical::query_pairs(request.query);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut missing = Vec::new();
    for name in [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
    ] {
        if get(name).is_none() {
            missing.push(format!("'{name}'"));
        }
    }
    if !missing.is_empty() {
        return Err(AuthError::Incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing.join(", ")
        )));
    }
    let algorithm = get("X-Amz-Algorithm").unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(AuthError::Incomplete(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\", not \"{algorithm}\"."
        )));
    }
    let amz_date = get("X-Amz-Date").unwrap_or_default().to_string();
    let signed_at = parse_amz_date(&amz_date).ok_or_else(|| bad_date(&amz_date))?;
    let expires = match get("X-Amz-Expires") {
        None => None,
        Some(raw) => {
            let value: i64 = raw.parse().map_err(|_| {
                AuthError::Incomplete(format!("X-Amz-Expires should be a number, not '{raw}'."))
            })?;
            if !(1..=MAX_PRESIGN_EXPIRES).contains(&value) {
                return Err(AuthError::Invalid(format!(
                    "X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES} seconds, not {value}."
                )));
            }
            Some(value)
        }
    };
    let (access_key_id, scope_date, region, service) =
        parse_credential(get("X-Amz-Credential").unwrap_or_default())?;
    Ok(Claims {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers: parse_signed_headers(get("X-Amz-SignedHeaders").unwrap_or_default()),
        signature: get("X-Amz-Signature").unwrap_or_default().to_string(),
        amz_date,
        signed_at,
        session_token: get("X-Amz-Security-Token")
            .map(str::to_string)
            .or_else(|| request.header("x-amz-security-token").map(str::to_string)),
        expires,
    })
}
