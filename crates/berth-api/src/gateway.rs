//! The router: authenticate, find the service, call it, render the answer.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_model::authz::{self, Access, Authorizer, DenialStyle};
use berth_model::credentials::{CredentialSource, ResolvedCredential};
use berth_model::{AwsError, JsonService, PrincipalKind, QueryService, RequestContext};
use berth_sigv4::{AuthError, RequestParts, SecretLookup, Verifier};
use berth_store::Store;
use berth_util::time::now_secs;
use futures::FutureExt;
use http::request::Parts;

use crate::admin::{self, AdminEndpoint};
use crate::body::{BodyError, BodyReader};
use crate::json_protocol;
use crate::query_protocol::{self, Dialect};

/// AWS accepts signatures up to 15 minutes off the server's clock.
const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Namespace of Query errors that name no service Berth serves.
const DEFAULT_QUERY_NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// Everything the gateway routes to, assembled once at startup.
pub struct Gateway {
    json_services: HashMap<&'static str, Arc<dyn JsonService>>,
    query_services: HashMap<&'static str, Arc<dyn QueryService>>,
    admin_endpoints: Vec<Arc<dyn AdminEndpoint>>,
    credentials: Vec<Arc<dyn CredentialSource>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    verifier: Verifier,
    bodies: BodyReader,
    store: Arc<dyn Store>,
    started: Instant,
    version: &'static str,
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    json_services: HashMap<&'static str, Arc<dyn JsonService>>,
    query_services: HashMap<&'static str, Arc<dyn QueryService>>,
    admin_endpoints: Vec<Arc<dyn AdminEndpoint>>,
    credentials: Vec<Arc<dyn CredentialSource>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    bodies: BodyReader,
    store: Arc<dyn Store>,
    version: &'static str,
}

impl GatewayBuilder {
    pub fn new(store: Arc<dyn Store>, version: &'static str) -> Self {
        GatewayBuilder {
            json_services: HashMap::new(),
            query_services: HashMap::new(),
            admin_endpoints: Vec::new(),
            credentials: Vec::new(),
            authorizer: None,
            bodies: BodyReader::default(),
            store,
            version,
        }
    }

    /// Bounds request bodies: the bytes all requests may hold at once, and
    /// the time a client has to send one.
    pub fn body_limits(mut self, budget: usize, timeout: std::time::Duration) -> Self {
        self.bodies = BodyReader::new(budget, timeout);
        self
    }

    /// Routes `X-Amz-Target: <prefix>.*` to `service`.
    pub fn json_service(mut self, service: Arc<dyn JsonService>) -> Self {
        self.json_services.insert(service.target_prefix(), service);
        self
    }

    /// Routes Query requests (form-encoded `POST /` without `X-Amz-Target`)
    /// whose credential scope names `service.signing_name()` to `service`.
    pub fn query_service(mut self, service: Arc<dyn QueryService>) -> Self {
        self.query_services.insert(service.signing_name(), service);
        self
    }

    /// Serves `GET <endpoint.path()>`, authenticated and authorized like an
    /// operation (see [`AdminEndpoint`]).
    pub fn admin_endpoint(mut self, endpoint: Arc<dyn AdminEndpoint>) -> Self {
        self.admin_endpoints.push(endpoint);
        self
    }

    /// Checks every call of a non-root caller against IAM before its
    /// handler runs. Without one, every authenticated caller may do anything.
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
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
            query_services: self.query_services,
            admin_endpoints: self.admin_endpoints,
            credentials: self.credentials,
            authorizer: self.authorizer,
            verifier: Verifier::new(MAX_CLOCK_SKEW_SECS),
            bodies: self.bodies,
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

fn header_pairs(parts: &Parts) -> Vec<(&str, &str)> {
    parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect()
}

impl Gateway {
    /// The HTTP routes the gateway answers. Other routers (the registry's
    /// `/v2/`) are merged beside it by the binary.
    pub fn router(self: Arc<Self>) -> Router {
        let mut router = Router::new()
            .route("/_berth/health", get(health))
            .route("/", post(dispatch));
        for endpoint in &self.admin_endpoints {
            let endpoint = endpoint.clone();
            router = router.route(
                endpoint.path(),
                get(
                    move |State(gateway): State<Arc<Gateway>>, request: Request| async move {
                        dispatch_admin(gateway, endpoint, request).await
                    },
                ),
            );
        }
        router.with_state(self)
    }

    /// Authenticates and authorizes a call of an [`AdminEndpoint`], then
    /// runs it on a blocking thread.
    async fn handle_admin(
        &self,
        endpoint: &Arc<dyn AdminEndpoint>,
        request_id: &str,
        parts: &Parts,
        body: &[u8],
    ) -> Result<serde_json::Value, AwsError> {
        let (credential, verified) = self.authenticate(parts, body)?;
        if verified.service != endpoint.signing_name() {
            return Err(AwsError::new(
                403,
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: '{}'. ",
                    endpoint.signing_name()
                ),
            ));
        }
        let ctx = self.context(
            request_id,
            parts,
            credential,
            verified.region,
            self.access(DenialStyle::Json, false),
        );
        ctx.authorize(&authz::on(endpoint.action(), Vec::new()))?;
        let query = admin::query_params(parts.uri.query());
        let endpoint = endpoint.clone();
        let path = endpoint.path();
        tokio::task::spawn_blocking(move || endpoint.get(&ctx, &query))
            .await
            .unwrap_or_else(|_| {
                Err(AwsError::internal(format!(
                    "Berth failed while answering GET {path}; the server log has the details."
                )))
            })
    }

    /// The authorization a request of this gateway carries.
    fn access(&self, style: DenialStyle, agent_allowed: bool) -> Access {
        Access::new(self.authorizer.clone(), style, agent_allowed)
    }

    /// The context handed to a service: who calls, from where, and who
    /// decides what they may do.
    fn context(
        &self,
        request_id: &str,
        parts: &Parts,
        credential: ResolvedCredential,
        region: String,
        access: Access,
    ) -> RequestContext {
        RequestContext {
            request_id: request_id.to_string(),
            account_id: credential.principal.account_id.clone(),
            region,
            principal: credential.principal,
            source_ip: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
            secure_transport: false,
            access,
        }
    }

    /// Checks what the headers alone can tell (signature form and time, a
    /// known access key, the operation's headers signed), so a request
    /// that cannot be authentic is refused before its body is read.
    fn precheck(&self, parts: &Parts) -> Result<(), AwsError> {
        let headers = header_pairs(parts);
        let request = RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            body: b"",
        };
        let lookup = Lookup {
            gateway: self,
            found: std::cell::RefCell::new(None),
        };
        self.verifier
            .precheck(&request, now_secs(), &lookup)
            .map_err(|e| auth_error(&e))
    }

    /// The largest body the request's operation accepts.
    fn body_limit(&self, parts: &Parts) -> usize {
        if let Some(target) = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
        {
            let (prefix, operation) = target.split_once('.').unwrap_or((target, ""));
            return self
                .json_services
                .get(prefix)
                .map_or(berth_model::service::DEFAULT_MAX_BODY, |s| {
                    s.max_body(operation)
                });
        }
        let authorization = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        query_protocol::scope_service(authorization, parts.uri.query())
            .and_then(|service| self.query_services.get(service.as_str()))
            .map_or(berth_model::service::DEFAULT_MAX_BODY, |s| s.max_body())
    }

    /// Prechecks the request, then reads its body within its operation's
    /// limit and the shared budget.
    async fn admit(
        &self,
        parts: &Parts,
        body: Body,
        limit: usize,
    ) -> Result<(bytes::Bytes, crate::body::Lease), AwsError> {
        self.precheck(parts)?;
        let content_length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        self.bodies
            .read(body, content_length, limit)
            .await
            .map_err(|e: BodyError| e.to_aws())
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
        let headers = header_pairs(parts);
        let request = RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            body,
        };
        let now = now_secs();
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
    ) -> Result<JsonAnswer, AwsError> {
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
        let agent_may_call = prefix == berth_model::agent_protocol::TARGET_PREFIX
            || (service.signing_name() == "ecr" && operation == "GetAuthorizationToken");
        let ctx = self.context(
            request_id,
            parts,
            credential,
            verified.region,
            self.access(DenialStyle::Json, agent_may_call),
        );
        fn failed<T>(target: &str) -> Result<T, AwsError> {
            Err(AwsError::internal(format!(
                "Berth failed while handling {target}; the server log has the details."
            )))
        }
        // A bug in a handler must answer 500, not drop the connection.
        let result = if service.streams(operation) {
            AssertUnwindSafe(service.handle_streaming(&ctx, operation, body))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| failed(target))
                .map(JsonAnswer::Stream)
        } else {
            AssertUnwindSafe(service.handle(&ctx, operation, body))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| failed(target))
                .map(JsonAnswer::Body)
        };
        unchecked_is_refused(&ctx, target, result)
    }
}

/// What a JSON service answered: a body, or a stream sent as it is made.
enum JsonAnswer {
    Body(Vec<u8>),
    Stream(berth_model::StreamingBody),
}

/// An event stream response: its chunks are sent as the service makes them.
fn streaming_response(request_id: &str, body: berth_model::StreamingBody) -> Response {
    let chunks = futures::stream::unfold(body.chunks, |mut source| async move {
        source
            .next_chunk()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), source))
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(body.content_type),
    );
    if let Ok(id) = http::HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

impl Gateway {
    /// How a Query request's errors are rendered: as the service its
    /// credential scope names answers, read before verifying anything.
    fn query_dialect(&self, parts: &Parts) -> Dialect {
        let authorization = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        query_protocol::scope_service(authorization, parts.uri.query())
            .and_then(|service| self.query_services.get(service.as_str()))
            .map_or(
                Dialect {
                    namespace: DEFAULT_QUERY_NAMESPACE,
                    ec2: false,
                },
                |s| dialect_of(s.as_ref()),
            )
    }

    /// Authenticates and runs a Query request. Returns the dialect and
    /// action to render with, and the inner XML of the result.
    async fn handle_query(
        &self,
        request_id: &str,
        parts: &Parts,
        body: &[u8],
    ) -> (Dialect, Option<String>, Result<String, AwsError>) {
        let namespace = self.query_dialect(parts);
        let (credential, verified) = match self.authenticate(parts, body) {
            Ok(ok) => ok,
            Err(e) => return (namespace, None, Err(query_protocol::query_error_code(e))),
        };
        let Some(service) = self.query_services.get(verified.service.as_str()) else {
            let e = AwsError::bad_request(
                "InvalidAction",
                format!(
                    "Berth does not serve a Query API with the signing name '{}'.",
                    verified.service
                ),
            );
            return (namespace, None, Err(e));
        };
        let namespace = dialect_of(service.as_ref());
        let mut action = None;
        let mut version = None;
        let mut params = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            match name.as_ref() {
                "Action" if action.is_none() => action = Some(value.into_owned()),
                "Version" if version.is_none() => version = Some(value.into_owned()),
                _ => params.push((name.into_owned(), value.into_owned())),
            }
        }
        let Some(action) = action.filter(|a| !a.is_empty()) else {
            let e = AwsError::bad_request("MissingAction", "Missing Action");
            return (namespace, None, Err(e));
        };
        let version = version.unwrap_or_default();
        let invalid_action = || {
            let message = if namespace.ec2 {
                format!("The action {action} is not valid for this web service.")
            } else {
                format!("Could not find operation {action} for version {version}")
            };
            AwsError::bad_request("InvalidAction", message)
        };
        if !query_protocol::valid_action_name(&action) {
            return (namespace, None, Err(invalid_action()));
        }
        let style = if service.ec2_protocol() {
            DenialStyle::Ec2
        } else {
            DenialStyle::Query
        };
        let ctx = self.context(
            request_id,
            parts,
            credential,
            verified.region,
            self.access(style, false),
        );
        // A bug in a handler must answer 500, not drop the connection.
        let result = AssertUnwindSafe(service.handle(&ctx, &action, &params))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(AwsError::internal(format!(
                    "Berth failed while handling {action}; the server log has the details."
                )))
            });
        let result = unchecked_is_refused(&ctx, &action, result);
        // Services answer an unknown action with an empty `InvalidAction`;
        // the gateway words it with the version the client asked for.
        let result = result.map_err(|e| {
            if e.code == "InvalidAction" && e.message.is_empty() {
                invalid_action()
            } else {
                e
            }
        });
        (namespace, Some(action), result)
    }
}

/// A handler that answered a caller other than root without asking IAM is a
/// bug; its answer is withheld so a forgotten check fails closed.
fn unchecked_is_refused<T>(
    ctx: &RequestContext,
    operation: &str,
    result: Result<T, AwsError>,
) -> Result<T, AwsError> {
    if ctx.access.checked() || ctx.principal.kind == PrincipalKind::Root {
        return result;
    }
    // Input errors found before the check (a body that does not parse)
    // change nothing and may be answered; an answer is withheld.
    let _withheld = result?;
    tracing::error!(
        operation,
        "a handler answered without authorizing the call; refusing it"
    );
    Err(AwsError::internal(format!(
        "Berth did not authorize {operation}; the server log has the details."
    )))
}

fn dialect_of(service: &dyn QueryService) -> Dialect {
    Dialect {
        namespace: service.xml_namespace(),
        ec2: service.ec2_protocol(),
    }
}

/// Whether a request speaks the Query protocol: a form-encoded body and no
/// `X-Amz-Target`.
fn is_query_request(parts: &Parts) -> bool {
    if parts.headers.contains_key("x-amz-target") {
        return false;
    }
    parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with(query_protocol::FORM_CONTENT_TYPE)
        })
}

async fn dispatch_query(
    gateway: &Gateway,
    request_id: &str,
    started: Instant,
    parts: &Parts,
    body: &[u8],
) -> Response {
    let (dialect, action, result) = gateway.handle_query(request_id, parts, body).await;
    let action_name = action.as_deref().unwrap_or("-");
    match (result, action.as_deref()) {
        (Ok(inner), Some(action)) => {
            tracing::debug!(%request_id, action, elapsed_us = started.elapsed().as_micros() as u64, "ok");
            dialect.success(action, request_id, &inner)
        }
        (Ok(_), None) => {
            let e = AwsError::internal("The request produced no action.");
            dialect.error(request_id, &e)
        }
        (Err(e), _) => {
            if e.status >= 500 {
                tracing::error!(%request_id, action = action_name, code = %e.code, message = %e.message, "request failed");
            } else {
                tracing::debug!(%request_id, action = action_name, code = %e.code, "client error");
            }
            dialect.error(request_id, &e)
        }
    }
}

async fn dispatch(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    if is_query_request(&parts) && carries_no_signature(&parts) {
        return dispatch_unsigned(&gateway, &request_id, &parts, Body::new(body)).await;
    }
    let limit = gateway.body_limit(&parts);
    let (body, _lease) = match gateway.admit(&parts, Body::new(body), limit).await {
        Ok(admitted) => admitted,
        Err(e) => {
            tracing::debug!(%request_id, code = %e.code, "refused before reading the body");
            if is_query_request(&parts) {
                let e = query_protocol::query_error_code(e);
                return gateway.query_dialect(&parts).error(&request_id, &e);
            }
            return json_protocol::error(&request_id, &e);
        }
    };
    if is_query_request(&parts) {
        return dispatch_query(&gateway, &request_id, started, &parts, &body).await;
    }
    let result = gateway.handle(&request_id, &parts, &body).await;
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    match result {
        Ok(JsonAnswer::Body(out)) => {
            tracing::debug!(%request_id, target, elapsed_us = started.elapsed().as_micros() as u64, "ok");
            json_protocol::success(&request_id, out)
        }
        Ok(JsonAnswer::Stream(body)) => {
            tracing::debug!(%request_id, target, "streaming");
            streaming_response(&request_id, body)
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

/// Whether a request carries no signature at all: no `Authorization`
/// header and no presigned query.
fn carries_no_signature(parts: &Parts) -> bool {
    !parts.headers.contains_key(http::header::AUTHORIZATION)
        && !parts
            .uri
            .query()
            .is_some_and(|q| q.contains("X-Amz-Signature=") || q.contains("X-Amz-Credential="))
}

/// A Query request without a signature: served only when it names an action
/// a service declares unsigned (`QueryService::unsigned_actions`, e.g. STS
/// AssumeRoleWithWebIdentity); anything else is refused as unauthenticated.
async fn dispatch_unsigned(
    gateway: &Gateway,
    request_id: &str,
    parts: &Parts,
    body: Body,
) -> Response {
    let unauthenticated = || {
        let e = gateway.precheck(parts).err().unwrap_or_else(|| {
            AwsError::new(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )
        });
        gateway
            .query_dialect(parts)
            .error(request_id, &query_protocol::query_error_code(e))
    };
    let content_length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = berth_model::service::DEFAULT_MAX_BODY;
    let (body, _lease) = match gateway.bodies.read(body, content_length, limit).await {
        Ok(read) => read,
        Err(e) => {
            let e = query_protocol::query_error_code(e.to_aws());
            return gateway.query_dialect(parts).error(request_id, &e);
        }
    };
    let mut action = None;
    let mut params = Vec::new();
    for (name, value) in form_urlencoded::parse(&body) {
        match name.as_ref() {
            "Action" if action.is_none() => action = Some(value.into_owned()),
            "Action" | "Version" => {}
            _ => params.push((name.into_owned(), value.into_owned())),
        }
    }
    let Some(action) = action else {
        return unauthenticated();
    };
    let Some(service) = gateway
        .query_services
        .values()
        .find(|s| s.unsigned_actions().contains(&action.as_str()))
    else {
        return unauthenticated();
    };
    let dialect = dialect_of(service.as_ref());
    let result = AssertUnwindSafe(service.handle_unsigned(request_id, &action, &params))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(AwsError::internal(format!(
                "Berth failed while handling {action}; the server log has the details."
            )))
        });
    match result {
        Ok(inner) => dialect.success(&action, request_id, &inner),
        Err(e) => {
            tracing::debug!(%request_id, action, code = %e.code, "unsigned request refused");
            dialect.error(request_id, &e)
        }
    }
}

/// Largest body a signed GET may carry (it is hashed into the signature).
const MAX_ADMIN_BODY: usize = 64 * 1024;

async fn dispatch_admin(
    gateway: Arc<Gateway>,
    endpoint: Arc<dyn AdminEndpoint>,
    request: Request,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (body, _lease) = match gateway.admit(&parts, Body::new(body), MAX_ADMIN_BODY).await {
        Ok(admitted) => admitted,
        Err(e) => return json_protocol::error(&request_id, &e),
    };
    let path = endpoint.path();
    match gateway
        .handle_admin(&endpoint, &request_id, &parts, &body)
        .await
    {
        Ok(value) => {
            tracing::debug!(%request_id, path, elapsed_us = started.elapsed().as_micros() as u64, "ok");
            json_protocol::success_json(&request_id, value.to_string().into_bytes())
        }
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%request_id, path, code = %e.code, message = %e.message, "request failed");
            } else {
                tracing::debug!(%request_id, path, code = %e.code, "client error");
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
