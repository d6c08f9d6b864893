//! Registry tokens: what `GetAuthorizationToken` hands out and what `/v2/`
//! accepts as the password of HTTP Basic auth (user `AWS`), as ECR does; and
//! the narrower tokens of `GetDownloadUrlForLayer`'s URLs.
//!
//! A token is `<base64url(claims JSON)>.<base64url(HMAC-SHA256(key, claims))>`.
//! The key is 32 random bytes kept in `<data-dir>/registry/token.key` (0600),
//! so tokens survive restarts and nobody without the key can forge one.
//!
//! A token names the principal it was issued to (kind, ARN, user id, access
//! key id) so that `/v2/` can authorize each request as that principal, and
//! its [`Purpose`]: a login token is a Basic-auth password and nothing else;
//! a layer token is the query parameter of one download URL and allows only
//! GET/HEAD of that blob of that repository.

use std::path::Path;

use base64::Engine;
use berth_model::{Principal, PrincipalKind};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::meta::Scope;

const URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const STD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// ECR's tokens are valid for 12 hours.
pub const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;

/// A download URL of `GetDownloadUrlForLayer` is valid this long (AWS's are
/// short-lived presigned URLs).
pub const LAYER_URL_LIFETIME_SECS: i64 = 600;

/// Who a token was issued to, as the kinds of [`PrincipalKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bearer {
    Root,
    User,
    Role,
    Agent,
}

impl From<&PrincipalKind> for Bearer {
    fn from(kind: &PrincipalKind) -> Bearer {
        match kind {
            PrincipalKind::Root => Bearer::Root,
            PrincipalKind::User => Bearer::User,
            PrincipalKind::AssumedRole => Bearer::Role,
            PrincipalKind::Agent => Bearer::Agent,
        }
    }
}

impl From<Bearer> for PrincipalKind {
    fn from(bearer: Bearer) -> PrincipalKind {
        match bearer {
            Bearer::Root => PrincipalKind::Root,
            Bearer::User => PrincipalKind::User,
            Bearer::Role => PrincipalKind::AssumedRole,
            Bearer::Agent => PrincipalKind::Agent,
        }
    }
}

/// What a token may be used for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// The password of `docker login`: every `/v2/` request, each authorized
    /// as the ECR action it is for the token's principal.
    Login,
    /// A `GetDownloadUrlForLayer` URL: GET or HEAD of blob `digest` of
    /// repository `repository`, nothing else.
    Layer { repository: String, digest: String },
}

/// What a token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Account.
    pub a: String,
    /// Region.
    pub r: String,
    /// Principal ARN.
    pub p: String,
    /// Principal kind.
    pub k: Bearer,
    /// The principal's unique id (`UserId` of GetCallerIdentity).
    pub u: String,
    /// The access key id the token was requested with (a role session is
    /// found by it).
    pub ak: String,
    /// What the token may be used for.
    pub x: Purpose,
    /// Expiry, seconds since the epoch.
    pub e: i64,
}

impl Claims {
    /// A token's claims for `principal` acting in `region`, valid until `expires`.
    pub fn new(principal: &Principal, region: &str, purpose: Purpose, expires: i64) -> Claims {
        Claims {
            a: principal.account_id.clone(),
            r: region.to_string(),
            p: principal.arn.clone(),
            k: Bearer::from(&principal.kind),
            u: principal.user_id.clone(),
            ak: principal.access_key_id.clone(),
            x: purpose,
            e: expires,
        }
    }

    pub fn scope(&self) -> Scope {
        Scope {
            account: self.a.clone(),
            region: self.r.clone(),
        }
    }

    /// The principal the token was issued to.
    pub fn principal(&self) -> Principal {
        Principal {
            kind: self.k.into(),
            arn: self.p.clone(),
            user_id: self.u.clone(),
            account_id: self.a.clone(),
            access_key_id: self.ak.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid for this request")]
    WrongPurpose,
}

/// Signs and verifies tokens with the server's key.
pub struct TokenKey {
    key: [u8; 32],
}

impl TokenKey {
    pub fn from_bytes(key: [u8; 32]) -> TokenKey {
        TokenKey { key }
    }

    /// Loads the key, creating it (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> std::io::Result<TokenKey> {
        let (bytes, _) = berth_util::private_file::read_or_create_private(path, || {
            berth_util::ids::random_bytes::<32>().to_vec()
        })?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            std::io::Error::other(format!(
                "{} is not a 32-byte registry token key; remove it to have a new one made \
                 (tokens issued before then stop working)",
                path.display()
            ))
        })?;
        Ok(TokenKey { key })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// The raw token (the Basic-auth password).
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = URL.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = URL.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Checks a raw token's signature and expiry at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = URL
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.e <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Verifies an `Authorization` header value: `Basic base64(AWS:<token>)`.
    pub fn verify_basic(&self, header: &str, now: i64) -> Result<Claims, TokenError> {
        let encoded = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
            .ok_or(TokenError::Malformed)?;
        let decoded = STD
            .decode(encoded.trim())
            .map_err(|_| TokenError::Malformed)?;
        let text = std::str::from_utf8(&decoded).map_err(|_| TokenError::Malformed)?;
        let (user, password) = text.split_once(':').ok_or(TokenError::Malformed)?;
        if user != "AWS" {
            return Err(TokenError::Malformed);
        }
        let claims = self.verify(password, now)?;
        // A download URL's token is never a password.
        if claims.x != Purpose::Login {
            return Err(TokenError::WrongPurpose);
        }
        Ok(claims)
    }

    /// Verifies the token of a download URL: a layer token for blob
    /// `digest` of `repository`, and nothing else.
    pub fn verify_layer(
        &self,
        token: &str,
        now: i64,
        repository: &str,
        digest: &str,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify(token, now)?;
        match &claims.x {
            Purpose::Layer {
                repository: r,
                digest: d,
            } if r == repository && d == digest => Ok(claims),
            _ => Err(TokenError::WrongPurpose),
        }
    }
}

/// ECR's `authorizationToken`: base64 of `AWS:<token>`.
pub fn authorization_token(raw: &str) -> String {
    STD.encode(format!("AWS:{raw}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(e: i64) -> Claims {
        Claims {
            a: "000000000000".into(),
            r: "us-east-1".into(),
            p: "arn:aws:iam::000000000000:root".into(),
            k: Bearer::Root,
            u: "000000000000".into(),
            ak: "AKIAROOT".into(),
            x: Purpose::Login,
            e,
        }
    }

    fn layer(e: i64) -> Claims {
        Claims {
            x: Purpose::Layer {
                repository: "team/app".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
            },
            ..claims(e)
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let key = TokenKey::from_bytes([7; 32]);
        let token = key.sign(&claims(1000));
        assert_eq!(key.verify(&token, 999).unwrap(), claims(1000));
        assert_eq!(key.verify(&token, 1000), Err(TokenError::Expired));
        let header = format!("Basic {}", authorization_token(&token));
        assert_eq!(key.verify_basic(&header, 10).unwrap().a, "000000000000");
    }

    #[test]
    fn rejects_forgeries() {
        let key = TokenKey::from_bytes([7; 32]);
        let other = TokenKey::from_bytes([8; 32]);
        let token = other.sign(&claims(1000));
        assert_eq!(key.verify(&token, 1), Err(TokenError::BadSignature));
        // A changed payload with the old signature.
        let good = key.sign(&claims(1000));
        let (_, sig) = good.split_once('.').unwrap();
        let forged = format!(
            "{}.{sig}",
            URL.encode(serde_json::to_vec(&claims(9999)).unwrap())
        );
        assert_eq!(key.verify(&forged, 1), Err(TokenError::BadSignature));
        assert_eq!(key.verify("garbage", 1), Err(TokenError::Malformed));
        let wrong_user = format!("Basic {}", STD.encode(format!("bob:{good}")));
        assert_eq!(key.verify_basic(&wrong_user, 1), Err(TokenError::Malformed));
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let a = TokenKey::load_or_create(&path).unwrap();
        let b = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(a.key, b.key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn claims_carry_the_principal() {
        let principal = Principal {
            kind: PrincipalKind::AssumedRole,
            arn: "arn:aws:sts::000000000000:assumed-role/r/s".into(),
            user_id: "AROAX:s".into(),
            account_id: "000000000000".into(),
            access_key_id: "ASIAX".into(),
        };
        let c = Claims::new(&principal, "eu-west-1", Purpose::Login, 5);
        assert_eq!(c.principal(), principal);
        assert_eq!(c.scope().region, "eu-west-1");
        let key = TokenKey::from_bytes([7; 32]);
        assert_eq!(key.verify(&key.sign(&c), 1).unwrap(), c);
    }

    #[test]
    fn layer_tokens_allow_one_blob_and_are_no_password() {
        let key = TokenKey::from_bytes([7; 32]);
        let digest = format!("sha256:{}", "a".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        let token = key.sign(&layer(1000));
        assert!(key.verify_layer(&token, 1, "team/app", &digest).is_ok());
        assert_eq!(
            key.verify_layer(&token, 1, "team/app", &other),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            key.verify_layer(&token, 1, "team/other", &digest),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            key.verify_layer(&token, 1000, "team/app", &digest),
            Err(TokenError::Expired)
        );
        let basic = format!("Basic {}", authorization_token(&token));
        assert_eq!(key.verify_basic(&basic, 1), Err(TokenError::WrongPurpose));
        // A login token is no download URL either.
        let login = key.sign(&claims(1000));
        assert_eq!(
            key.verify_layer(&login, 1, "team/app", &digest),
            Err(TokenError::WrongPurpose)
        );
    }

    #[test]
    fn tokens_without_a_principal_kind_are_refused() {
        // Tokens minted before they named their principal do not verify.
        let key = TokenKey::from_bytes([7; 32]);
        let old = serde_json::json!({"a": "0", "r": "us-east-1", "p": "arn", "ro": false, "e": 99});
        let payload = URL.encode(serde_json::to_vec(&old).unwrap());
        let mut mac = key.mac();
        mac.update(payload.as_bytes());
        let token = format!("{payload}.{}", URL.encode(mac.finalize().into_bytes()));
        assert_eq!(key.verify(&token, 1), Err(TokenError::Malformed));
    }
}
