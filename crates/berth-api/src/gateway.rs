//! The router: authenticate, find the service, call it, render the answer.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_model::{AwsError, JsonService, RequestContext};
use berth_sigv4::{AuthError, RequestParts, SecretLookup, Verifier};
use berth_store::Store;
use futures::FutureExt;
use http::request::Parts;

use crate::credentials::{CredentialSource, ResolvedCredential};
use crate::json_protocol;

/// Largest request body a JSON service accepts.
const MAX_JSON_BODY: usize = 16 * 1024 * 1024;
/// AWS accepts signatures up to 15 minutes off the server's clock.
const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Everything the gateway routes to, assembled once at startup.
pub struct Gateway {
    json_services: HashMap<&'static str, Arc<dyn JsonService>>,
    credentials: Vec<Arc<dyn CredentialSource>>,
    verifier: Verifier,
    store: Arc<dyn Store>,
    started: Instant,
    version: &'static str,
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    json_services: HashMap<&'static str, Arc<dyn JsonService>>,
    credentials: Vec<Arc<dyn CredentialSource>>,
    store: Arc<dyn Store>,
    version: &'static str,
}

impl GatewayBuilder {
    pub fn new(store: Arc<dyn Store>, version: &'static str) -> Self {
        GatewayBuilder {
            json_services: HashMap::new(),
            credentials: Vec::new(),
            store,
            version,
        }
    }

    /// Routes `X-Amz-Target: <prefix>.*` to `service`.
    pub fn json_service(mut self, service: Arc<dyn JsonService>) -> Self {
        self.json_services.insert(service.target_prefix(), service);
        self
    }

    /// Adds a source of credentials; sources are asked in the order added.
    pub fn credentials(mut self, source: Arc<dyn CredentialSource>) -> Self {
        self.credentials.push(source);
        self
    }

    pub fn build(self) -> Arc<Gateway> {
        Arc::new(Gateway {
            json_services: self.json_services,
            credentials: self.credentials,
            verifier: Verifier::new(MAX_CLOCK_SKEW_SECS),
            store: self.store,
            started: Instant::now(),
            version: self.version,
        })
    }
}

/// Resolves the signing key once and keeps the credential, so the caller's
/// principal comes from the same lookup the signature was checked with.
struct Lookup<'a> {
    gateway: &'a Gateway,
    found: std::cell::RefCell<Option<ResolvedCredential>>,
}

impl SecretLookup for Lookup<'_> {
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        let credential = self.gateway.resolve(access_key_id)?;
        let secret = credential.secret_access_key.clone();
        *self.found.borrow_mut() = Some(credential);
        Some(secret)
    }
}

fn auth_error(e: &AuthError) -> AwsError {
    AwsError::new(403, e.code(), e.message())
}

fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Gateway {
    /// The HTTP routes the gateway answers. Other routers (the registry's
    /// `/v2/`) are merged beside it by the binary.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/_berth/health", get(health))
            .route("/", post(dispatch))
            .with_state(self)
    }

    fn resolve(&self, access_key_id: &str) -> Option<ResolvedCredential> {
        self.credentials
            .iter()
            .find_map(|source| source.resolve(access_key_id))
    }

    /// Verifies the request's signature; returns the caller's credential and
    /// the signature's region and service.
    pub fn authenticate(
        &self,
        parts: &Parts,
        body: &[u8],
    ) -> Result<(ResolvedCredential, berth_sigv4::Verified), AwsError> {
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let request = RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            body,
        };
        let now = now_epoch();
        let lookup = Lookup {
            gateway: self,
            found: std::cell::RefCell::new(None),
        };
        let verified = self
            .verifier
            .verify(&request, now, &lookup)
            .map_err(|e| auth_error(&e))?;
        let credential = lookup
            .found
            .into_inner()
            .ok_or_else(|| auth_error(&AuthError::UnknownKey))?;
        if credential.session_token != verified.session_token {
            return Err(auth_error(&AuthError::UnknownKey));
        }
        if credential.expires_at.is_some_and(|at| at <= now) {
            return Err(AwsError::new(
                403,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ));
        }
        Ok((credential, verified))
    }

    async fn handle(
        &self,
        request_id: &str,
        parts: &Parts,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        let (credential, verified) = self.authenticate(parts, body)?;
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                AwsError::unknown_operation(
                    "The request has no X-Amz-Target header naming the operation.",
                )
            })?;
        let (prefix, operation) = target.split_once('.').ok_or_else(|| {
            AwsError::unknown_operation(format!("X-Amz-Target '{target}' names no operation."))
        })?;
        let service = self.json_services.get(prefix).ok_or_else(|| {
            AwsError::unknown_operation(format!(
                "Berth does not serve the API '{prefix}' (X-Amz-Target '{target}')."
            ))
        })?;
        if verified.service != service.signing_name() {
            return Err(AwsError::new(
                403,
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: '{}'. ",
                    service.signing_name()
                ),
            ));
        }
        let ctx = RequestContext {
            request_id: request_id.to_string(),
            account_id: credential.principal.account_id.clone(),
            region: verified.region,
            principal: credential.principal,
        };
        // A bug in a handler must answer 500, not drop the connection.
        AssertUnwindSafe(service.handle(&ctx, operation, body))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(AwsError::internal(format!(
                    "Berth failed while handling {target}; the server log has the details."
                )))
            })
    }
}

async fn dispatch(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(Body::new(body), MAX_JSON_BODY).await {
        Ok(body) => body,
        Err(_) => {
            let e = AwsError::new(
                413,
                "SerializationException",
                format!("The request body is larger than {MAX_JSON_BODY} bytes."),
            );
            return json_protocol::error(&request_id, &e);
        }
    };
    let result = gateway.handle(&request_id, &parts, &body).await;
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    match result {
        Ok(out) => {
            tracing::debug!(%request_id, target, elapsed_us = started.elapsed().as_micros() as u64, "ok");
            json_protocol::success(&request_id, out)
        }
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%request_id, target, code = %e.code, message = %e.message, "request failed");
            } else {
                tracing::debug!(%request_id, target, code = %e.code, "client error");
            }
            json_protocol::error(&request_id, &e)
        }
    }
}

async fn health(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "version": gateway.version,
        "store": {
            "backend": gateway.store.backend(),
            "revision": gateway.store.revision(),
        },
        "uptimeSeconds": gateway.started.elapsed().as_secs(),
    }))
}
