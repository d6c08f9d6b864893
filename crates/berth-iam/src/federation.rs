//! Web identity federation: STS AssumeRoleWithWebIdentity with an OpenID
//! Connect ID token (a JWT) from a provider registered in IAM.
//!
//! What Berth verifies, in order:
//! 1. the token is a JWT (three base64url parts) whose header names an RSA
//!    PKCS#1 v1.5 signature (`RS256`, `RS384` or `RS512`);
//! 2. its `iss` names an OpenID Connect provider registered in the role's
//!    account (`<scheme>://<provider url>`);
//! 3. its signature verifies with a key of the provider's JWKS, found by
//!    `kid` (or the only key when the token names none). The keys come from
//!    the provider's discovery document (`<iss>/.well-known/openid-configuration`,
//!    then its `jwks_uri`), fetched over plain HTTP from a provider on this
//!    machine's loopback (Berth has no TLS client: an `https://` provider's
//!    keys cannot be fetched and its tokens are refused with
//!    IDPCommunicationError), cached ten minutes and fetched again when a
//!    token names an unknown `kid`;
//! 4. `aud` (a string or a list) holds one of the provider's client IDs;
//! 5. `exp` is in the future, `nbf` and `iat` are not (five minutes of
//!    skew allowed), `sub` is present;
//! 6. the role's trust policy allows the provider (`Federated`) the action
//!    `sts:AssumeRoleWithWebIdentity`, with the condition keys
//!    `<provider url>:aud`, `:sub`, `:azp` (when the token has it) and
//!    `:oaud`, as on AWS.
//!
//! The thumbprints registered with a provider are kept but not checked (they
//! pin the provider's TLS certificate, and Berth fetches keys without TLS).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use berth_model::AwsError;
use berth_policy::{evaluate_trust, Context, Policy, PrincipalRef, Request, Timestamp};
use berth_util::time::now_secs;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::{BigUint, RsaPublicKey};
use serde_json::Value;

use crate::records::{oidc_provider_key, OidcProviderRecord};
use crate::util::get_json;
use crate::Iam;

/// How long fetched keys are trusted before they are fetched again.
const JWKS_TTL_SECS: i64 = 600;
/// An unknown `kid` fetches the keys again at most this often.
const JWKS_REFRESH_SECS: i64 = 10;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const SKEW_SECS: i64 = 300;
/// The largest discovery document or key set read.
const MAX_DOCUMENT: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One RSA key of a provider.
#[derive(Clone)]
struct Jwk {
    kid: Option<String>,
    key: RsaPublicKey,
}

/// A provider's keys and when they were fetched (epoch seconds).
type FetchedKeys = (i64, Arc<Vec<Jwk>>);

/// Keys fetched from providers, by issuer: when, and the keys.
#[derive(Default)]
pub struct JwksCache {
    keys: Mutex<HashMap<String, FetchedKeys>>,
}

/// A token Berth verified.
pub(crate) struct VerifiedToken {
    pub provider: OidcProviderRecord,
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub claims: serde_json::Map<String, Value>,
}

pub(crate) fn invalid_token(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidIdentityToken", message)
}

fn communication_error(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("IDPCommunicationError", message)
}

fn b64url(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

fn not_a_jwt() -> AwsError {
    invalid_token(
        "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)",
    )
}

/// `GET url` over plain HTTP to this machine's loopback.
async fn http_get(url: &str) -> Result<Vec<u8>, AwsError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| communication_error(format!("Berth cannot fetch {url}: not a URL.")))?;
    let loopback = uri.host().is_some_and(|h| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if uri.scheme_str() != Some("http") || !loopback {
        return Err(communication_error(format!(
            "Berth cannot fetch the provider's keys from {url}: Berth fetches OpenID Connect \
             keys over plain HTTP from providers on this machine's loopback only (it has no TLS client)."
        )));
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let fetch = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| communication_error(format!("Berth could not reach {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(communication_error(format!(
                "{url} answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|_| {
                communication_error(format!("{url} answered an unreadable or too large body"))
            })?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| communication_error(format!("{url} did not answer within 5 seconds")))?
}

fn parse_jwks(document: &[u8]) -> Result<Vec<Jwk>, AwsError> {
    let value: Value = serde_json::from_slice(document)
        .map_err(|_| communication_error("The provider's key set is not JSON."))?;
    let mut out = Vec::new();
    for key in value
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if key.get("kty").and_then(Value::as_str) != Some("RSA") {
            continue;
        }
        let part = |k: &str| key.get(k).and_then(Value::as_str).and_then(b64url);
        let (Some(n), Some(e)) = (part("n"), part("e")) else {
            continue;
        };
        let Ok(public) = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
        else {
            continue;
        };
        out.push(Jwk {
            kid: key.get("kid").and_then(Value::as_str).map(str::to_string),
            key: public,
        });
    }
    Ok(out)
}

impl JwksCache {
    /// The keys of `issuer`, fetched when not cached (or stale, or when
    /// `refresh` and the last fetch is not very recent).
    async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<Vec<Jwk>>, AwsError> {
        let now = now_secs();
        if let Some((at, keys)) = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(issuer)
            .cloned()
        {
            let fresh = now - at < JWKS_TTL_SECS;
            if fresh && (!refresh || now - at < JWKS_REFRESH_SECS) {
                return Ok(keys);
            }
        }
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Value = serde_json::from_slice(&http_get(&discovery_url).await?)
            .map_err(|_| communication_error(format!("{discovery_url} is not JSON.")))?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| communication_error(format!("{discovery_url} names no jwks_uri.")))?;
        let keys = Arc::new(parse_jwks(&http_get(jwks_uri).await?)?);
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(issuer.to_string(), (now, keys.clone()));
        Ok(keys)
    }
}

fn verify_signature(alg: &str, key: &RsaPublicKey, input: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = Signature::try_from(signature) else {
        return false;
    };
    match alg {
        "RS256" => VerifyingKey::<rsa::sha2::Sha256>::new(key.clone())
            .verify(input, &sig)
            .is_ok(),
        "RS384" => VerifyingKey::<rsa::sha2::Sha384>::new(key.clone())
            .verify(input, &sig)
            .is_ok(),
        "RS512" => VerifyingKey::<rsa::sha2::Sha512>::new(key.clone())
            .verify(input, &sig)
            .is_ok(),
        _ => false,
    }
}

impl Iam {
    /// Verifies an OpenID Connect ID token against the providers of
    /// `account` (see the module documentation for what is checked).
    pub(crate) async fn verify_web_identity(
        &self,
        account: &str,
        token: &str,
    ) -> Result<VerifiedToken, AwsError> {
        let parts: Vec<&str> = token.trim().split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err(not_a_jwt());
        };
        let header: Value = b64url(header)
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(not_a_jwt)?;
        let claims: serde_json::Map<String, Value> = b64url(payload)
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or_else(not_a_jwt)?;
        let signature = b64url(signature).ok_or_else(not_a_jwt)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !["RS256", "RS384", "RS512"].contains(&alg) {
            return Err(invalid_token(format!(
                "Berth verifies ID tokens signed with RS256, RS384 or RS512; this one is signed with '{alg}'."
            )));
        }
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_token("The ID Token has no issuer (iss)."))?
            .trim_end_matches('/')
            .to_string();
        let bare = issuer
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&issuer);
        let provider: OidcProviderRecord =
            get_json(self.store(), &oidc_provider_key(account, bare))?
                .filter(|p: &OidcProviderRecord| p.issuer().eq_ignore_ascii_case(&issuer))
                .ok_or_else(|| {
                    invalid_token(format!(
                        "No OpenIDConnect provider found in your account for {issuer}"
                    ))
                })?;
        let kid = header.get("kid").and_then(Value::as_str);
        let input = token
            .trim()
            .rsplit_once('.')
            .map(|(i, _)| i)
            .unwrap_or_default();
        let pick = |keys: &[Jwk]| -> Option<RsaPublicKey> {
            match kid {
                Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
                None if keys.len() == 1 => keys.first(),
                None => None,
            }
            .map(|k| k.key.clone())
        };
        let mut key = pick(&self.jwks.keys(&issuer, false).await?);
        if key.is_none() {
            key = pick(&self.jwks.keys(&issuer, true).await?);
        }
        let key = key.ok_or_else(|| {
            invalid_token("The ID Token's signing key (kid) is not one of the provider's keys.")
        })?;
        if !verify_signature(alg, &key, input.as_bytes(), &signature) {
            return Err(invalid_token(
                "The web identity token that was passed could not be validated by AWS: its signature does not verify with the provider's keys.",
            ));
        }
        let audiences: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let audience = audiences
            .iter()
            .find(|a| provider.client_ids.contains(a))
            .cloned()
            .ok_or_else(|| invalid_token("Incorrect token audience"))?;
        let now = now_secs();
        let time = |k: &str| claims.get(k).and_then(Value::as_i64);
        let exp =
            time("exp").ok_or_else(|| invalid_token("The ID Token has no expiration (exp)."))?;
        if exp + SKEW_SECS <= now {
            return Err(AwsError::bad_request(
                "ExpiredTokenException",
                format!(
                    "Token expired: current date/time {} must be before the expiration date/time {}",
                    berth_util::time::format_iso8601(now),
                    berth_util::time::format_iso8601(exp)
                ),
            ));
        }
        if time("nbf").is_some_and(|nbf| nbf > now + SKEW_SECS)
            || time("iat").is_some_and(|iat| iat > now + SKEW_SECS)
        {
            return Err(invalid_token(
                "The ID Token is not valid yet (nbf or iat is in the future).",
            ));
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_token("The ID Token has no subject (sub)."))?
            .to_string();
        Ok(VerifiedToken {
            provider,
            issuer,
            subject,
            audience,
            claims,
        })
    }
}

/// Whether `trust` lets the token's provider assume `role_arn` with it.
pub(crate) fn trust_allows(
    trust: &Policy,
    account: &str,
    role_arn: &str,
    token: &VerifiedToken,
) -> bool {
    let provider_arn = token.provider.arn(account);
    let principal = PrincipalRef::federated(account, &provider_arn);
    let prefix = &token.provider.url;
    let mut context = Context::new();
    context.set_current_time(Timestamp::from_epoch_seconds(now_secs()));
    context.set(&format!("{prefix}:aud"), token.audience.as_str());
    context.set(&format!("{prefix}:sub"), token.subject.as_str());
    if let Some(azp) = token.claims.get("azp").and_then(Value::as_str) {
        context.set(&format!("{prefix}:azp"), azp);
    }
    let oaud: Vec<String> = match token.claims.get("aud") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(a)) => vec![a.clone()],
        _ => Vec::new(),
    };
    context.set(&format!("{prefix}:oaud"), oaud);
    context.set("aws:FederatedProvider", provider_arn.as_str());
    let request = Request::new(
        &principal,
        "sts:AssumeRoleWithWebIdentity",
        role_arn,
        &context,
    );
    evaluate_trust(trust, &request).is_allowed()
}
