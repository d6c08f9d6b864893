//! The OCI distribution API under `/v2/`: pull, push (monolithic, chunked,
//! cross-repository mount), content discovery (tags list, referrers,
//! catalog) and content management (DELETE of manifests, tags and blobs).
//!
//! Paths hold repository names with slashes, so one catch-all route parses
//! them from the right (`…/manifests/<ref>`, `…/blobs/uploads/<id>`, …).
//! Bodies stream in both directions; nothing buffers a blob in memory.
//!
//! Every request but `GET /v2/` is authorized as the ECR action it is (see
//! [`need`]) for the principal its token was issued to, on the repository's
//! ARN, by the same authorizer as the API (so repository policies take
//! part); a refusal answers the spec's 403 `DENIED` in AWS's words. The
//! catalog lists only the repositories the caller may
//! `ecr:DescribeRepositories`. A download URL's token allows GET/HEAD of its
//! one blob and nothing else.
//!
//! Parsing is total: no path, query or header makes a handler panic.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use berth_model::authz::{Access, Authorizer, Denial, DenialStyle};
use berth_model::RequestContext;
use berth_store::{Op, StoreExt};
use futures::StreamExt;
use http::{HeaderValue, Method, StatusCode};
use percent_encoding::percent_decode_str;

use crate::blobs::{read_all, read_stream, UploadError};
use crate::digest::Digest;
use crate::gc::CompleteError;
use crate::meta::{self, ManifestRecord, PutError, Scope, TagRecord};
use crate::token::{Claims, TokenError};
use crate::Registry;

/// Blobs up to this size are read into memory and sent in one piece.
const SMALL_BLOB: u64 = 1024 * 1024;

/// The query parameter of a download URL that carries its layer token.
pub(crate) const LAYER_TOKEN_PARAM: &str = "berth-token";

/// What the `/v2/` routes share: the registry and who decides.
struct Front {
    registry: Arc<Registry>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

pub fn router(registry: Arc<Registry>, authorizer: Option<Arc<dyn Authorizer>>) -> Router {
    Router::new()
        .route("/v2", any(handle))
        .route("/v2/", any(handle))
        .route("/v2/{*rest}", any(handle))
        // Uploads stream to disk with no size limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(Arc::new(Front {
            registry,
            authorizer,
        }))
}

/// An error in the distribution spec's shape: `{"errors": [{code, message}]}`.
#[derive(Debug)]
pub struct OciError {
    status: StatusCode,
    code: &'static str,
    message: String,
    headers: Vec<(&'static str, String)>,
}

impl OciError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> OciError {
        OciError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> OciError {
        self.headers.push((name, value));
        self
    }

    fn into_response(self, head: bool) -> Response {
        let body = serde_json::json!({
            "errors": [{"code": self.code, "message": self.message, "detail": null}]
        })
        .to_string();
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", "application/json");
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        let body = if head {
            Body::empty()
        } else {
            Body::from(body)
        };
        builder
            .body(body)
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

fn name_unknown(name: &str) -> OciError {
    OciError::new(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        format!("The repository with name '{name}' does not exist in the registry."),
    )
}

fn internal(e: impl std::fmt::Display) -> OciError {
    tracing::error!(error = %e, "registry request failed");
    OciError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "The registry failed; the server log has the details.",
    )
}

fn digest_invalid(message: impl Into<String>) -> OciError {
    OciError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
}

fn upload_unknown() -> OciError {
    OciError::new(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "The upload is unknown to the registry: it finished, was cancelled, expired or was interrupted by a restart.",
    )
}

fn complete_error(e: CompleteError, name: &str) -> OciError {
    match e {
        CompleteError::Upload(UploadError::DigestMismatch { expected, actual }) => {
            digest_invalid(format!(
                "The uploaded content has digest {actual}, not {expected}; nothing was stored."
            ))
        }
        CompleteError::Upload(UploadError::Broken) => OciError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            "The upload lost bytes it had accepted and cannot continue; start a new one.",
        ),
        CompleteError::Upload(UploadError::Unknown) => upload_unknown(),
        CompleteError::Upload(UploadError::Busy { size }) => OciError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            format!("Another request is writing this upload; it has {size} bytes."),
        ),
        CompleteError::Upload(UploadError::Lost) => OciError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            "This request's hold on the upload lapsed and another request took it over; \
             ask where the upload stands and continue from there.",
        ),
        CompleteError::Upload(UploadError::Body(e)) => OciError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            format!("The request body could not be read: {e}"),
        ),
        CompleteError::RepositoryNotFound => name_unknown(name),
        other => internal(other),
    }
}

/// Percent-decodes a path or query component (a `%` not followed by two hex
/// digits stays as it is; bytes that are not UTF-8 become U+FFFD, which no
/// name, tag or digest accepts).
fn decode_component(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// The first value of `key` in a query string (`+` is a space in forms, not
/// here: registry clients percent-encode).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k) == key).then(|| decode_component(v))
    })
}

/// A byte range of a blob, inclusive.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` header against a blob of `size` bytes. Forms the spec
/// names (`bytes=a-b`, `bytes=a-`, `bytes=-n`); anything else (several
/// ranges, other units) is ignored, which HTTP allows, and the whole blob is
/// served.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (start.is_empty(), end.is_empty()) {
        (true, false) => match parse(end) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => RangeRequest::Part(size.saturating_sub(n), size - 1),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, true) => match parse(start) {
            Some(s) if s < size => RangeRequest::Part(s, size - 1),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, false) => match (parse(start), parse(end)) {
            (Some(s), Some(e)) if s <= e && s < size => RangeRequest::Part(s, e.min(size - 1)),
            (Some(s), Some(e)) if s <= e => RangeRequest::Unsatisfiable,
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// Parses a `Content-Range` of a chunk: `<start>-<end>` (optionally with a
/// `bytes ` prefix).
fn parse_content_range(text: &str) -> Option<(u64, u64)> {
    let text = text.trim();
    let text = text.strip_prefix("bytes ").unwrap_or(text);
    let text = text.split('/').next()?;
    let (s, e) = text.split_once('-')?;
    Some((s.trim().parse().ok()?, e.trim().parse().ok()?))
}

/// What a `/v2/` path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Referrers(String, String),
    Uploads(String, Option<String>),
    Blob(String, String),
}

impl Target {
    /// The repository the request concerns, if any.
    fn repository(&self) -> Option<&str> {
        match self {
            Target::Base | Target::Catalog => None,
            Target::Tags(name)
            | Target::Manifest(name, _)
            | Target::Referrers(name, _)
            | Target::Uploads(name, _)
            | Target::Blob(name, _) => Some(name),
        }
    }
}

/// What a request must be allowed before it is served.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// `/v2/`: any valid token (clients probe it to learn how to log in).
    Nothing,
    /// The catalog: each repository is listed only if the caller may
    /// `ecr:DescribeRepositories` it.
    EachRepository,
    /// Any one of these ECR actions on the request's repository.
    AnyOf(&'static [&'static str]),
}

pub(crate) const BATCH_GET_IMAGE: &str = "ecr:BatchGetImage";
pub(crate) const GET_DOWNLOAD_URL: &str = "ecr:GetDownloadUrlForLayer";
const CHECK_LAYERS: &str = "ecr:BatchCheckLayerAvailability";
const LIST_IMAGES: &str = "ecr:ListImages";
const DESCRIBE_REPOSITORIES: &str = "ecr:DescribeRepositories";
const INITIATE_UPLOAD: &str = "ecr:InitiateLayerUpload";
const UPLOAD_PART: &str = "ecr:UploadLayerPart";
const COMPLETE_UPLOAD: &str = "ecr:CompleteLayerUpload";
const PUT_IMAGE: &str = "ecr:PutImage";
const DELETE_IMAGE: &str = "ecr:BatchDeleteImage";

/// The actions that only read: a Berth agent may do these (its tasks need
/// images), never the others.
const READ_ACTIONS: &[&str] = &[
    BATCH_GET_IMAGE,
    GET_DOWNLOAD_URL,
    CHECK_LAYERS,
    LIST_IMAGES,
    DESCRIBE_REPOSITORIES,
];

/// The ECR action a request is, by route and method; None when the route
/// does not take the method.
fn need(target: &Target, method: &Method) -> Option<Need> {
    let read = *method == Method::GET || *method == Method::HEAD;
    Some(match target {
        Target::Base => Need::Nothing,
        Target::Catalog if *method == Method::GET => Need::EachRepository,
        Target::Tags(_) if *method == Method::GET => Need::AnyOf(&[LIST_IMAGES]),
        Target::Referrers(..) if *method == Method::GET => Need::AnyOf(&[BATCH_GET_IMAGE]),
        Target::Manifest(..) if read => Need::AnyOf(&[BATCH_GET_IMAGE]),
        Target::Manifest(..) if *method == Method::PUT => Need::AnyOf(&[PUT_IMAGE]),
        Target::Manifest(..) if *method == Method::DELETE => Need::AnyOf(&[DELETE_IMAGE]),
        Target::Blob(..) if *method == Method::GET => Need::AnyOf(&[GET_DOWNLOAD_URL]),
        // Pushes HEAD a blob to learn whether to upload it, pulls to learn
        // its size: either permission answers.
        Target::Blob(..) if *method == Method::HEAD => {
            Need::AnyOf(&[CHECK_LAYERS, GET_DOWNLOAD_URL])
        }
        // ECR has no action for a blob's deletion; it removes image content.
        Target::Blob(..) if *method == Method::DELETE => Need::AnyOf(&[DELETE_IMAGE]),
        Target::Uploads(_, None) if *method == Method::POST => Need::AnyOf(&[INITIATE_UPLOAD]),
        // Asking where an upload stands and cancelling it belong to the
        // uploader, as sending its parts does.
        Target::Uploads(_, Some(_))
            if *method == Method::GET || *method == Method::PATCH || *method == Method::DELETE =>
        {
            Need::AnyOf(&[UPLOAD_PART])
        }
        Target::Uploads(_, Some(_)) if *method == Method::PUT => Need::AnyOf(&[COMPLETE_UPLOAD]),
        _ => return None,
    })
}

fn parse_target(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/v2")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Target::Base);
    }
    let rest = decode_component(rest);
    if rest == "_catalog" {
        return Some(Target::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Target::Tags(name.to_string()));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Target::Uploads(name.to_string(), None));
    }
    if let Some(i) = rest.rfind("/blobs/uploads/") {
        let id = &rest[i + "/blobs/uploads/".len()..];
        if !id.contains('/') {
            return Some(Target::Uploads(rest[..i].to_string(), Some(id.to_string())));
        }
    }
    for (marker, make) in [
        (
            "/manifests/",
            Target::Manifest as fn(String, String) -> Target,
        ),
        ("/referrers/", Target::Referrers),
        ("/blobs/", Target::Blob),
    ] {
        if let Some(i) = rest.rfind(marker) {
            let reference = &rest[i + marker.len()..];
            if !reference.is_empty() && !reference.contains('/') {
                return Some(make(rest[..i].to_string(), reference.to_string()));
            }
        }
    }
    None
}

async fn handle(State(front): State<Arc<Front>>, request: Request) -> Response {
    let head = request.method() == Method::HEAD;
    let mut response = match dispatch(&front, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(head),
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

/// How the bearer was let in.
enum Grant {
    /// A login token: each request is authorized for its principal.
    Login,
    /// A download URL's token, already checked against the request.
    Layer,
}

struct Ctx<'a> {
    registry: &'a Registry,
    authorizer: Option<&'a Arc<dyn Authorizer>>,
    /// The token's principal acting in the token's account and region.
    caller: RequestContext,
    grant: Grant,
    scope: Scope,
}

fn denied(denial: &Denial, caller_arn: &str) -> OciError {
    OciError::new(StatusCode::FORBIDDEN, "DENIED", denial.message(caller_arn))
}

impl Ctx<'_> {
    fn valid_name(name: &str) -> Result<(), OciError> {
        if !meta::valid_repository_name(name) {
            return Err(OciError::new(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                format!("Invalid repository name '{name}'."),
            ));
        }
        Ok(())
    }

    /// Checks the name and that the repository exists.
    fn repository(&self, name: &str) -> Result<(), OciError> {
        Self::valid_name(name)?;
        if self.registry.store.get(&self.scope.repo(name)).is_none() {
            return Err(name_unknown(name));
        }
        Ok(())
    }

    /// Whether the caller may do `action` on repository `name`.
    fn decide(&self, action: &str, name: &str) -> Result<(), Denial> {
        let access = Access::new(
            self.authorizer.cloned(),
            DenialStyle::Json,
            READ_ACTIONS.contains(&action),
        );
        let requirement = self
            .registry
            .repository_requirement(&self.scope, action, name);
        self.caller
            .clone()
            .with_access(access)
            .decide(std::slice::from_ref(&requirement))
    }

    /// Refuses unless the caller may do one of `actions` on `name`.
    fn authorize_any(&self, actions: &[&str], name: &str) -> Result<(), OciError> {
        let mut refusal = None;
        for action in actions {
            match self.decide(action, name) {
                Ok(()) => return Ok(()),
                Err(denial) => {
                    refusal.get_or_insert(denial);
                }
            }
        }
        let denial = refusal
            .unwrap_or_else(|| Denial::implicit(&berth_model::authz::Requirement::new("", "*")));
        Err(denied(&denial, &self.caller.principal.arn))
    }
}

fn unauthorized(registry: &Registry, e: TokenError) -> OciError {
    let message = match e {
        TokenError::Expired => {
            "Your authorization token has expired. Reauthenticate and try again.".to_string()
        }
        TokenError::WrongPurpose => "This token is not valid for this request: a download URL \
             allows only its own layer, and only a GetAuthorizationToken token is a password."
            .to_string(),
        _ => {
            "Authenticate with the token from ECR GetAuthorizationToken: user AWS, the token as \
              password (aws ecr get-login-password | docker login --username AWS --password-stdin)."
                .to_string()
        }
    };
    OciError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).header(
        "www-authenticate",
        format!("Basic realm=\"http://{}/\",service=\"ecr\"", registry.host),
    )
}

/// Who sent `request`: a login token as the Basic password, or a download
/// URL's token in the query, which holds only for GET/HEAD of its blob.
fn authenticate(
    registry: &Registry,
    request: &Request,
    target: &Target,
) -> Result<(Claims, Grant), OciError> {
    let now = berth_util::time::now_secs();
    let result = match request.headers().get("authorization") {
        Some(value) => value
            .to_str()
            .map_err(|_| TokenError::Malformed)
            .and_then(|v| registry.tokens.verify_basic(v, now))
            .map(|claims| (claims, Grant::Login)),
        None => match (
            query_param(request.uri().query(), LAYER_TOKEN_PARAM),
            target,
        ) {
            (Some(token), Target::Blob(name, digest))
                if request.method() == Method::GET || request.method() == Method::HEAD =>
            {
                registry
                    .tokens
                    .verify_layer(&token, now, name, digest)
                    .map(|claims| (claims, Grant::Layer))
            }
            (Some(_), _) => Err(TokenError::WrongPurpose),
            (None, _) => Err(TokenError::Malformed),
        },
    };
    result.map_err(|e| unauthorized(registry, e))
}

async fn dispatch(front: &Front, request: Request) -> Result<Response, OciError> {
    let registry = front.registry.as_ref();
    let target = parse_target(request.uri().path()).ok_or_else(|| {
        OciError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "No such registry endpoint.",
        )
    })?;
    let (claims, grant) = authenticate(registry, &request, &target)?;
    let method = request.method().clone();
    let unsupported = || {
        OciError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!("{method} is not supported here."),
        )
    };
    let need = need(&target, &method).ok_or_else(unsupported)?;
    let mut caller = RequestContext::for_principal(claims.principal(), &claims.r);
    caller.request_id = uuid::Uuid::new_v4().to_string();
    caller.source_ip = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let ctx = Ctx {
        registry,
        authorizer: front.authorizer.as_ref(),
        caller,
        grant,
        scope: claims.scope(),
    };
    // A download URL's token was checked against this very request (GET or
    // HEAD of its blob); anything else is authorized as its ECR action.
    match (&ctx.grant, &need, target.repository()) {
        (Grant::Layer, _, _) | (Grant::Login, Need::Nothing | Need::EachRepository, _) => {}
        (Grant::Login, Need::AnyOf(actions), Some(name)) => {
            Ctx::valid_name(name)?;
            ctx.authorize_any(actions, name)?;
        }
        (Grant::Login, Need::AnyOf(_), None) => return Err(unsupported()),
    }
    match target {
        Target::Base => Ok(json_response(StatusCode::OK, "{}".into())),
        Target::Catalog if method == Method::GET => catalog(&ctx, &request),
        Target::Tags(name) if method == Method::GET => tags_list(&ctx, &name, &request),
        Target::Referrers(name, digest) if method == Method::GET => {
            referrers(&ctx, &name, &digest, &request)
        }
        Target::Manifest(name, reference) => match method {
            Method::GET | Method::HEAD => {
                pull_through(&ctx, &name, &reference).await?;
                get_manifest(&ctx, &name, &reference, method == Method::HEAD)
            }
            Method::PUT => put_manifest(&ctx, &name, &reference, request).await,
            Method::DELETE => delete_manifest(&ctx, &name, &reference).await,
            _ => Err(unsupported()),
        },
        Target::Blob(name, digest) => match method {
            Method::GET | Method::HEAD => {
                let range = request
                    .headers()
                    .get("range")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                get_blob(&ctx, &name, &digest, range, method == Method::HEAD).await
            }
            Method::DELETE => delete_blob(&ctx, &name, &digest).await,
            _ => Err(unsupported()),
        },
        Target::Uploads(name, None) if method == Method::POST => {
            start_upload(&ctx, &name, request).await
        }
        Target::Uploads(name, Some(id)) => match method {
            Method::GET => upload_status(&ctx, &name, &id).await,
            Method::PATCH => patch_upload(&ctx, &name, &id, request).await,
            Method::PUT => put_upload(&ctx, &name, &id, request).await,
            Method::DELETE => cancel_upload(&ctx, &name, &id).await,
            _ => Err(unsupported()),
        },
        _ => Err(unsupported()),
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn empty(status: StatusCode, headers: &[(&str, String)]) -> Response {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn page_size(request: &Request) -> Result<Option<usize>, OciError> {
    match query_param(request.uri().query(), "n") {
        None => Ok(None),
        Some(n) if n.is_empty() => Ok(None),
        Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
            OciError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("n must be a non-negative integer, got '{n}'."),
            )
        }),
    }
}

/// One page of keys under `prefix` after `last`, at most `n` (all when
/// `None`); the second value says whether more follow.
pub fn page_of(
    keys: impl Iterator<Item = String>,
    last: Option<&str>,
    n: Option<usize>,
) -> (Vec<String>, bool) {
    let mut items: Vec<String> = keys
        .filter(|k| last.is_none_or(|l| k.as_str() > l))
        .collect();
    items.sort();
    match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            (items, true)
        }
        _ => (items, false),
    }
}

fn tags_list(ctx: &Ctx, name: &str, request: &Request) -> Result<Response, OciError> {
    ctx.repository(name)?;
    let n = page_size(request)?;
    let last = query_param(request.uri().query(), "last");
    let prefix = ctx.scope.tags(name);
    let start = last.as_ref().map(|l| format!("{prefix}{l}"));
    // Read one more than asked to know whether a next page exists.
    let limit = n.map_or(usize::MAX, |n| n.saturating_add(1));
    let mut keys = Vec::new();
    let mut after = start;
    while keys.len() < limit {
        let page = ctx.registry.store.range(&prefix, after.as_deref(), 1024);
        let done = page.len() < 1024;
        after = page.last().map(|kv| kv.key.clone());
        keys.extend(
            page.into_iter()
                .map(|kv| kv.key[prefix.len()..].to_string()),
        );
        if done {
            break;
        }
    }
    let (tags, more) = page_of(keys.into_iter(), last.as_deref(), n);
    let body = serde_json::json!({"name": name, "tags": tags}).to_string();
    let mut response = json_response(StatusCode::OK, body);
    if let (true, Some(n), Some(last)) = (more, n, tags.last()) {
        let link = format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert("link", v);
        }
    }
    Ok(response)
}

fn catalog(ctx: &Ctx, request: &Request) -> Result<Response, OciError> {
    let n = page_size(request)?;
    let last = query_param(request.uri().query(), "last");
    let prefix = ctx.scope.repos();
    // Only what the caller may see, so pages are counted after filtering.
    let names = meta::scan(ctx.registry.store.as_ref(), &prefix)
        .into_iter()
        .filter_map(|kv| kv.key.get(prefix.len()..).map(str::to_string))
        .filter(|name| ctx.decide(DESCRIBE_REPOSITORIES, name).is_ok());
    let (repos, more) = page_of(names, last.as_deref(), n);
    let body = serde_json::json!({ "repositories": repos }).to_string();
    let mut response = json_response(StatusCode::OK, body);
    if let (true, Some(n), Some(last)) = (more, n, repos.last()) {
        let link = format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert("link", v);
        }
    }
    Ok(response)
}

fn referrers(ctx: &Ctx, name: &str, digest: &str, request: &Request) -> Result<Response, OciError> {
    ctx.repository(name)?;
    Digest::parse(digest).map_err(|e| digest_invalid(e.to_string()))?;
    let filter = query_param(request.uri().query(), "artifactType");
    let descriptors: Vec<serde_json::Value> = meta::scan(
        ctx.registry.store.as_ref(),
        &ctx.scope.referrers(name, digest),
    )
    .iter()
    .filter_map(meta::decode::<serde_json::Value>)
    .filter(|d| {
        filter
            .as_deref()
            .is_none_or(|f| d.get("artifactType").and_then(|v| v.as_str()) == Some(f))
    })
    .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": meta::OCI_INDEX,
        "manifests": descriptors,
    })
    .to_string();
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", meta::OCI_INDEX);
    if filter.is_some() {
        builder = builder.header("oci-filters-applied", "artifactType");
    }
    builder.body(Body::from(body)).map_err(internal)
}

/// A push to a repository that does not exist creates it when a
/// repository creation template applies for CREATE_ON_PUSH and the caller
/// may `ecr:CreateRepository` it.
async fn create_on_push(ctx: &Ctx<'_>, name: &str) -> Result<(), OciError> {
    Ctx::valid_name(name)?;
    let store = ctx.registry.store.as_ref();
    if store.get(&ctx.scope.repo(name)).is_some() {
        return Ok(());
    }
    let applies = crate::settings::template_for(
        store,
        &ctx.scope,
        name,
        crate::settings::Creation::CreateOnPush,
    )
    .is_some();
    if !applies {
        return Ok(());
    }
    ctx.authorize_any(&["ecr:CreateRepository"], name)?;
    ctx.registry
        .ensure_repository(&ctx.scope, name, crate::settings::Creation::CreateOnPush)
        .await
        .map_err(internal)?;
    Ok(())
}

/// A pull by tag of an image a pull-through cache holds, once the tag is
/// older than the refresh interval, asks the upstream again (as ECR does
/// every 24 hours) when the caller may import upstream images; the cached
/// image is served whatever the upstream answers.
async fn refresh_cached_tag(ctx: &Ctx<'_>, name: &str, reference: &str) {
    if reference.contains(':') {
        return;
    }
    let now = berth_util::time::now_epoch();
    if !ctx
        .registry
        .tag_refresh_due(&ctx.scope, name, reference, now)
    {
        return;
    }
    let Some((rule, upstream_repo)) = ctx.registry.cache_rule_for(&ctx.scope, name) else {
        return;
    };
    if ctx
        .authorize_any(&["ecr:BatchImportUpstreamImage"], name)
        .is_err()
    {
        return;
    }
    if let Err(e) = ctx
        .registry
        .refresh_tag(&ctx.scope, name, reference, &rule, &upstream_repo)
        .await
    {
        tracing::warn!(repository = %name, tag = %reference, error = %e,
            "refreshing a pull-through cached tag failed; serving the cached image");
    }
}

/// A pull of an image the registry lacks, in a repository a pull-through
/// cache rule covers, fetches it from the rule's upstream first. The caller
/// needs `ecr:BatchImportUpstreamImage` (and `ecr:CreateRepository` when the
/// repository is new), as with ECR.
async fn pull_through(ctx: &Ctx<'_>, name: &str, reference: &str) -> Result<(), OciError> {
    Ctx::valid_name(name)?;
    let store = ctx.registry.store.as_ref();
    let exists = store.get(&ctx.scope.repo(name)).is_some();
    if exists && resolve(ctx, name, reference).is_ok() {
        refresh_cached_tag(ctx, name, reference).await;
        return Ok(());
    }
    let Some((rule, upstream_repo)) = ctx.registry.cache_rule_for(&ctx.scope, name) else {
        return Ok(());
    };
    if reference.contains(':') {
        Digest::parse(reference).map_err(|e| digest_invalid(e.to_string()))?;
    } else if !meta::valid_tag(reference) {
        return Err(OciError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            format!("Invalid tag '{reference}'."),
        ));
    }
    ctx.authorize_any(&["ecr:BatchImportUpstreamImage"], name)?;
    if !exists {
        ctx.authorize_any(&["ecr:CreateRepository"], name)?;
    }
    use crate::pull_through::PullError;
    match ctx
        .registry
        .pull_through(&ctx.scope, name, reference, &rule, &upstream_repo)
        .await
    {
        Ok(()) => Ok(()),
        Err(PullError::NotFound(what)) => Err(OciError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("Manifest '{reference}' is unknown to repository '{name}': the upstream registry {} does not have {what}.", rule.upstream_registry_url.as_deref().unwrap_or("")),
        )),
        Err(PullError::Denied(why)) => Err(OciError::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!("The pull through cache rule for '{name}' could not authenticate to its upstream registry: {why}"),
        )),
        Err(e) => Err(OciError::new(
            StatusCode::BAD_GATEWAY,
            "UNKNOWN",
            format!("Pulling '{name}:{reference}' through the cache failed: {e}"),
        )),
    }
}

/// Finds a manifest by tag or digest.
fn resolve(ctx: &Ctx, name: &str, reference: &str) -> Result<ManifestRecord, OciError> {
    let unknown = || {
        OciError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("Manifest '{reference}' is unknown to repository '{name}'."),
        )
    };
    let store = ctx.registry.store.as_ref();
    let digest = if reference.contains(':') {
        Digest::parse(reference).map_err(|e| digest_invalid(e.to_string()))?;
        reference.to_string()
    } else {
        if !meta::valid_tag(reference) {
            return Err(OciError::new(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                format!("Invalid tag '{reference}'."),
            ));
        }
        meta::get::<TagRecord>(store, &ctx.scope.tag(name, reference))
            .ok_or_else(unknown)?
            .digest
    };
    meta::get(store, &ctx.scope.manifest(name, &digest)).ok_or_else(unknown)
}

fn get_manifest(ctx: &Ctx, name: &str, reference: &str, head: bool) -> Result<Response, OciError> {
    ctx.repository(name)?;
    let record = resolve(ctx, name, reference)?;
    let len = record.manifest.len();
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", &record.media_type)
        .header("docker-content-digest", &record.digest)
        .header("etag", format!("\"{}\"", record.digest))
        .header("content-length", len);
    let body = if head {
        Body::empty()
    } else {
        Body::from(record.manifest)
    };
    builder.body(body).map_err(internal)
}

async fn put_manifest(
    ctx: &Ctx<'_>,
    name: &str,
    reference: &str,
    request: Request,
) -> Result<Response, OciError> {
    create_on_push(ctx, name).await?;
    ctx.repository(name)?;
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(request.into_body(), meta::MAX_MANIFEST)
        .await
        .map_err(|_| {
            OciError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "MANIFEST_INVALID",
                format!("The manifest is larger than {} bytes.", meta::MAX_MANIFEST),
            )
        })?;
    let manifest_invalid =
        |m: String| OciError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m);
    let parsed = meta::parse_manifest(&bytes, content_type.as_deref()).map_err(manifest_invalid)?;
    let (digest, tag) = if reference.contains(':') {
        let claimed = Digest::parse(reference).map_err(|e| digest_invalid(e.to_string()))?;
        let actual = claimed.of_same_kind(&bytes);
        if actual != claimed {
            return Err(digest_invalid(format!(
                "The manifest has digest {actual}, not {claimed}."
            )));
        }
        (claimed.to_string(), None)
    } else {
        if !meta::valid_tag(reference) {
            return Err(OciError::new(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                format!("Invalid tag '{reference}'."),
            ));
        }
        (Digest::sha256_of(&bytes).to_string(), Some(reference))
    };
    let result = meta::put_manifest(
        ctx.registry.store.as_ref(),
        &ctx.scope,
        name,
        &bytes,
        &parsed,
        &digest,
        tag,
        berth_util::time::now_epoch(),
    )
    .await;
    match result {
        Ok(_) => {}
        Err(PutError::RepositoryNotFound) => return Err(name_unknown(name)),
        Err(PutError::Invalid(m)) => return Err(manifest_invalid(m)),
        Err(PutError::BlobsUnknown(missing)) | Err(PutError::ManifestsUnknown(missing)) => {
            return Err(OciError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_BLOB_UNKNOWN",
                format!(
                    "The manifest references content this repository does not have: {}",
                    missing.join(", ")
                ),
            ))
        }
        Err(PutError::TagImmutable(tag)) => {
            return Err(OciError::new(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                format!(
                    "The image tag '{tag}' already exists in the '{name}' repository and cannot be overwritten because the tag is immutable."
                ),
            ))
        }
        Err(PutError::Store(e)) => return Err(internal(e)),
    }
    ctx.registry
        .replicate_after_push(&ctx.scope, name, &digest, tag);
    let mut headers = vec![
        ("location", format!("/v2/{name}/manifests/{digest}")),
        ("docker-content-digest", digest.clone()),
    ];
    if let Some(subject) = &parsed.subject {
        headers.push(("oci-subject", subject.clone()));
    }
    Ok(empty(StatusCode::CREATED, &headers))
}

async fn delete_manifest(ctx: &Ctx<'_>, name: &str, reference: &str) -> Result<Response, OciError> {
    ctx.repository(name)?;
    let scope = ctx.scope.clone();
    let (repo, reference, shown) = (
        name.to_string(),
        reference.to_string(),
        reference.to_string(),
    );
    let by_digest = reference.contains(':');
    if by_digest {
        Digest::parse(&reference).map_err(|e| digest_invalid(e.to_string()))?;
    } else if !meta::valid_tag(&reference) {
        return Err(OciError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            format!("Invalid tag '{reference}'."),
        ));
    }
    let deleted = ctx
        .registry
        .store
        .update(move |view| {
            let ops = if by_digest {
                meta::delete_image_ops(view, &scope, &repo, &reference)
            } else if view.get(&scope.tag(&repo, &reference)).is_some() {
                vec![Op::delete(scope.tag(&repo, &reference))]
            } else {
                Vec::new()
            };
            if ops.is_empty() {
                Err(())
            } else {
                Ok((ops, ()))
            }
        })
        .await
        .map_err(internal)?;
    match deleted {
        Ok(_) => Ok(empty(StatusCode::ACCEPTED, &[])),
        Err(()) => Err(OciError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("Manifest '{shown}' is unknown to repository '{name}'."),
        )),
    }
}

fn parse_blob_digest(digest: &str) -> Result<Digest, OciError> {
    Digest::parse(digest).map_err(|e| digest_invalid(e.to_string()))
}

fn blob_unknown(digest: &str) -> OciError {
    OciError::new(
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
        format!("Blob {digest} is unknown to the repository."),
    )
}

async fn get_blob(
    ctx: &Ctx<'_>,
    name: &str,
    digest: &str,
    range: Option<String>,
    head: bool,
) -> Result<Response, OciError> {
    ctx.repository(name)?;
    let parsed = parse_blob_digest(digest)?;
    if ctx
        .registry
        .store
        .get(&ctx.scope.layer(name, digest))
        .is_none()
    {
        return Err(blob_unknown(digest));
    }
    let file = ctx
        .registry
        .blobs
        .open_blob(&parsed)
        .map_err(internal)?
        .ok_or_else(|| blob_unknown(digest))?;
    let size = file.metadata().map_err(internal)?.len();
    let range = parse_range(range.as_deref(), size);
    let (status, start, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        RangeRequest::Unsatisfiable => {
            return Err(OciError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!("The range is outside the blob's {size} bytes."),
            )
            .header("content-range", format!("bytes */{size}")))
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/octet-stream")
        .header("docker-content-digest", digest)
        .header("accept-ranges", "bytes")
        .header("etag", format!("\"{digest}\""))
        .header("content-length", len);
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            "content-range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    let body = if head || len == 0 {
        Body::empty()
    } else if len <= SMALL_BLOB {
        // One buffer, so headers and body leave in one write: a body that
        // trails its headers in a second small packet waits out the peer's
        // delayed ACK (Nagle), which caps small-blob pulls at ~25/s a client.
        Body::from(read_all(file, start, len).await.map_err(internal)?)
    } else {
        Body::from_stream(read_stream(file, start, len))
    };
    builder.body(body).map_err(internal)
}

async fn delete_blob(ctx: &Ctx<'_>, name: &str, digest: &str) -> Result<Response, OciError> {
    ctx.repository(name)?;
    parse_blob_digest(digest)?;
    let key = ctx.scope.layer(name, digest);
    let existed = ctx
        .registry
        .store
        .update(move |view| {
            if view.get(&key).is_some() {
                Ok((vec![Op::delete(key.clone())], ()))
            } else {
                Err(())
            }
        })
        .await
        .map_err(internal)?;
    match existed {
        Ok(_) => Ok(empty(StatusCode::ACCEPTED, &[])),
        Err(()) => Err(blob_unknown(digest)),
    }
}

fn upload_headers(name: &str, id: &uuid::Uuid, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("range", format!("0-{}", size.saturating_sub(1))),
        ("docker-upload-uuid", id.to_string()),
    ]
}

fn created_blob(name: &str, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{digest}")),
            ("docker-content-digest", digest.to_string()),
        ],
    )
}

async fn start_upload(ctx: &Ctx<'_>, name: &str, request: Request) -> Result<Response, OciError> {
    create_on_push(ctx, name).await?;
    ctx.repository(name)?;
    let query = request.uri().query().map(str::to_string);
    if let Some(mount) = query_param(query.as_deref(), "mount") {
        let digest = parse_blob_digest(&mount)?;
        if let Some(from) = query_param(query.as_deref(), "from") {
            // Mounting reads the source repository's layer: without that
            // permission the client uploads the blob itself.
            // The BLOB_MOUNTING account setting turns mounts off.
            let mounting = crate::settings::account_setting(
                ctx.registry.store.as_ref(),
                &ctx.scope,
                "BLOB_MOUNTING",
            ) != "DISABLED";
            if mounting
                && meta::valid_repository_name(&from)
                && ctx.decide(GET_DOWNLOAD_URL, &from).is_ok()
            {
                let mounted = ctx
                    .registry
                    .mount_blob(&ctx.scope, name, &from, &digest)
                    .await
                    .map_err(|e| complete_error(e, name))?;
                if mounted.is_some() {
                    return Ok(created_blob(name, &digest));
                }
            }
        }
        // Not mountable: the spec says to fall back to a new upload.
    }
    let uploads = &ctx.registry.uploads;
    if let Some(digest) = query_param(query.as_deref(), "digest") {
        // A monolithic upload: the whole blob in this request.
        let digest = parse_blob_digest(&digest)?;
        let mut session = uploads.start_sealed(&ctx.scope, name).map_err(internal)?;
        let body = request.into_body().into_data_stream();
        if let Err(e) = uploads.append(&mut session, body).await {
            uploads.cancel(session).await;
            return Err(complete_error(CompleteError::Upload(e), name));
        }
        ctx.registry
            .complete_upload(session, &digest)
            .await
            .map_err(|e| complete_error(e, name))?;
        return Ok(created_blob(name, &digest));
    }
    let id = uploads.start(&ctx.scope, name).await.map_err(internal)?;
    Ok(empty(StatusCode::ACCEPTED, &upload_headers(name, &id, 0)))
}

/// An upload another request holds: where it stands, as for a chunk out of
/// order.
fn upload_busy(name: &str, id: &str, size: u64) -> OciError {
    OciError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UPLOAD_INVALID",
        format!("Another request is writing this upload; it has {size} bytes."),
    )
    .header("location", format!("/v2/{name}/blobs/uploads/{id}"))
    .header("range", format!("0-{}", size.saturating_sub(1)))
    .header("docker-upload-uuid", id.to_string())
}

/// An upload error answered before the upload changed.
fn session_error(e: UploadError, name: &str, id: &str) -> OciError {
    match e {
        UploadError::Unknown => upload_unknown(),
        UploadError::Busy { size } => upload_busy(name, id, size),
        other => complete_error(CompleteError::Upload(other), name),
    }
}

async fn upload_status(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<Response, OciError> {
    ctx.repository(name)?;
    let (id, size) = ctx
        .registry
        .uploads
        .status(&ctx.scope, name, id)
        .await
        .map_err(|e| session_error(e, name, id))?;
    Ok(empty(
        StatusCode::NO_CONTENT,
        &upload_headers(name, &id, size),
    ))
}

async fn patch_upload(
    ctx: &Ctx<'_>,
    name: &str,
    id: &str,
    request: Request,
) -> Result<Response, OciError> {
    ctx.repository(name)?;
    let start = match request.headers().get("content-range") {
        None => None,
        Some(range) => Some(
            range
                .to_str()
                .ok()
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    OciError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "BLOB_UPLOAD_INVALID",
                        "Content-Range must be <start>-<end>.",
                    )
                })?
                .0,
        ),
    };
    let uploads = &ctx.registry.uploads;
    let mut session = uploads
        .claim(&ctx.scope, name, id, false)
        .await
        .map_err(|e| session_error(e, name, id))?;
    if let Some(start) = start.filter(|s| *s != session.size) {
        // Out of order: tell the client where the upload stands.
        let size = session.size;
        let id = session.id;
        uploads
            .release(session)
            .await
            .map_err(|e| session_error(e, name, &id.to_string()))?;
        return Err(OciError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("The chunk starts at {start}; the upload has {size} bytes."),
        )
        .header("location", format!("/v2/{name}/blobs/uploads/{id}"))
        .header("range", format!("0-{}", size.saturating_sub(1)))
        .header("docker-upload-uuid", id.to_string()));
    }
    let body = request.into_body().into_data_stream();
    let appended = uploads.append(&mut session, body).await;
    let id = session.id;
    // What arrived is kept even when the body broke off.
    let released = uploads.release(session).await;
    if let Err(e) = appended {
        return Err(complete_error(CompleteError::Upload(e), name));
    }
    let size = released.map_err(|e| session_error(e, name, &id.to_string()))?;
    Ok(empty(
        StatusCode::ACCEPTED,
        &upload_headers(name, &id, size),
    ))
}

async fn put_upload(
    ctx: &Ctx<'_>,
    name: &str,
    id: &str,
    request: Request,
) -> Result<Response, OciError> {
    ctx.repository(name)?;
    let uploads = &ctx.registry.uploads;
    let mut session = uploads
        .claim(&ctx.scope, name, id, true)
        .await
        .map_err(|e| session_error(e, name, id))?;
    let digest = query_param(request.uri().query(), "digest")
        .ok_or_else(|| digest_invalid("PUT needs ?digest=<digest> to finish an upload."))
        .and_then(|d| parse_blob_digest(&d));
    let digest = match digest {
        Ok(d) => d,
        Err(e) => {
            // Nothing changed: the client may still finish it properly.
            let _ = uploads.release(session).await;
            return Err(e);
        }
    };
    let mut body = request.into_body().into_data_stream().peekable();
    if std::pin::Pin::new(&mut body).peek().await.is_some() {
        if let Err(e) = uploads.append(&mut session, body).await {
            uploads.cancel(session).await;
            return Err(complete_error(CompleteError::Upload(e), name));
        }
    }
    ctx.registry
        .complete_upload(session, &digest)
        .await
        .map_err(|e| complete_error(e, name))?;
    Ok(created_blob(name, &digest))
}

async fn cancel_upload(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<Response, OciError> {
    ctx.repository(name)?;
    ctx.registry
        .uploads
        .cancel_id(&ctx.scope, name, id)
        .await
        .map_err(|e| session_error(e, name, id))?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), RangeRequest::Part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), RangeRequest::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeRequest::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), RangeRequest::Part(0, 9));
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            RangeRequest::Part(8, 9)
        );
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=12-20"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeRequest::Full);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("x"), None);
    }

    #[test]
    fn targets() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_target("/v2/"), Some(Target::Base));
        assert_eq!(parse_target("/v2"), Some(Target::Base));
        assert_eq!(parse_target("/v2/_catalog"), Some(Target::Catalog));
        assert_eq!(
            parse_target("/v2/a/b/tags/list"),
            Some(Target::Tags("a/b".into()))
        );
        assert_eq!(
            parse_target("/v2/a/manifests/x/manifests/latest"),
            Some(Target::Manifest("a/manifests/x".into(), "latest".into()))
        );
        assert_eq!(
            parse_target(&format!("/v2/app/blobs/{d}")),
            Some(Target::Blob("app".into(), d.clone()))
        );
        assert_eq!(
            parse_target(&format!("/v2/app/blobs/sha256%3A{}", "a".repeat(64))),
            Some(Target::Blob("app".into(), d.clone()))
        );
        assert_eq!(
            parse_target("/v2/team/app/blobs/uploads/"),
            Some(Target::Uploads("team/app".into(), None))
        );
        assert_eq!(
            parse_target("/v2/app/blobs/uploads/abc"),
            Some(Target::Uploads("app".into(), Some("abc".into())))
        );
        assert_eq!(
            parse_target(&format!("/v2/app/referrers/{d}")),
            Some(Target::Referrers("app".into(), d))
        );
        assert_eq!(parse_target("/v2/app/unknown"), None);
    }

    #[test]
    fn tag_pages() {
        let tags = || ["b", "a", "d", "c"].iter().map(|s| s.to_string());
        assert_eq!(
            page_of(tags(), None, None),
            (vec!["a".into(), "b".into(), "c".into(), "d".into()], false)
        );
        assert_eq!(
            page_of(tags(), None, Some(2)),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            page_of(tags(), Some("b"), Some(2)),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(page_of(tags(), Some("d"), Some(2)), (vec![], false));
        assert_eq!(page_of(tags(), None, Some(0)), (vec![], true));
        assert_eq!(
            query_param(Some("n=2&last=v%2D1"), "last"),
            Some("v-1".to_string())
        );
        assert_eq!(query_param(Some("n=2"), "last"), None);
    }

    #[test]
    fn every_route_is_the_ecr_action_it_is() {
        let d = format!("sha256:{}", "a".repeat(64));
        let m = |t: &str| Method::from_bytes(t.as_bytes()).unwrap();
        let cases: Vec<(String, &str, Option<Need>)> = vec![
            ("/v2/".into(), "GET", Some(Need::Nothing)),
            ("/v2/_catalog".into(), "GET", Some(Need::EachRepository)),
            ("/v2/_catalog".into(), "DELETE", None),
            (
                "/v2/a/tags/list".into(),
                "GET",
                Some(Need::AnyOf(&[LIST_IMAGES])),
            ),
            ("/v2/a/tags/list".into(), "PUT", None),
            (
                "/v2/a/manifests/v1".into(),
                "GET",
                Some(Need::AnyOf(&[BATCH_GET_IMAGE])),
            ),
            (
                "/v2/a/manifests/v1".into(),
                "HEAD",
                Some(Need::AnyOf(&[BATCH_GET_IMAGE])),
            ),
            (
                "/v2/a/manifests/v1".into(),
                "PUT",
                Some(Need::AnyOf(&[PUT_IMAGE])),
            ),
            (
                "/v2/a/manifests/v1".into(),
                "DELETE",
                Some(Need::AnyOf(&[DELETE_IMAGE])),
            ),
            ("/v2/a/manifests/v1".into(), "POST", None),
            (
                format!("/v2/a/referrers/{d}"),
                "GET",
                Some(Need::AnyOf(&[BATCH_GET_IMAGE])),
            ),
            (
                format!("/v2/a/blobs/{d}"),
                "GET",
                Some(Need::AnyOf(&[GET_DOWNLOAD_URL])),
            ),
            (
                format!("/v2/a/blobs/{d}"),
                "HEAD",
                Some(Need::AnyOf(&[CHECK_LAYERS, GET_DOWNLOAD_URL])),
            ),
            (
                format!("/v2/a/blobs/{d}"),
                "DELETE",
                Some(Need::AnyOf(&[DELETE_IMAGE])),
            ),
            (format!("/v2/a/blobs/{d}"), "PUT", None),
            (
                "/v2/a/blobs/uploads/".into(),
                "POST",
                Some(Need::AnyOf(&[INITIATE_UPLOAD])),
            ),
            ("/v2/a/blobs/uploads/".into(), "GET", None),
            (
                "/v2/a/blobs/uploads/u1".into(),
                "PATCH",
                Some(Need::AnyOf(&[UPLOAD_PART])),
            ),
            (
                "/v2/a/blobs/uploads/u1".into(),
                "GET",
                Some(Need::AnyOf(&[UPLOAD_PART])),
            ),
            (
                "/v2/a/blobs/uploads/u1".into(),
                "DELETE",
                Some(Need::AnyOf(&[UPLOAD_PART])),
            ),
            (
                "/v2/a/blobs/uploads/u1".into(),
                "PUT",
                Some(Need::AnyOf(&[COMPLETE_UPLOAD])),
            ),
            ("/v2/a/blobs/uploads/u1".into(), "POST", None),
        ];
        for (path, method, expected) in cases {
            let target = parse_target(&path).unwrap();
            assert_eq!(need(&target, &m(method)), expected, "{method} {path}");
        }
        // Only reads are open to agents.
        for write in [
            PUT_IMAGE,
            DELETE_IMAGE,
            INITIATE_UPLOAD,
            UPLOAD_PART,
            COMPLETE_UPLOAD,
        ] {
            assert!(!READ_ACTIONS.contains(&write));
        }
    }

    #[test]
    fn decoding_never_panics_on_broken_escapes() {
        // The input of issue 16 item 10: a `%` before a multi-byte character.
        assert_eq!(decode_component("%a\u{e9}"), "%a\u{e9}");
        assert_eq!(decode_component("%C3%A9"), "\u{e9}");
        assert_eq!(decode_component("%"), "%");
        assert_eq!(decode_component("%%41"), "%A");
        assert_eq!(decode_component("%FF"), "\u{fffd}");
        assert_eq!(parse_target("/v2/%a\u{e9}"), None);
        assert_eq!(
            parse_target("/v2/%a\u{e9}/tags/list"),
            Some(Target::Tags("%a\u{e9}".into()))
        );
        assert_eq!(query_param(Some("%=%\u{e9}&n=%3"), "n"), Some("%3".into()));
    }

    mod fuzz {
        use super::*;
        use proptest::arbitrary::any;
        use proptest::prelude::*;

        /// Pieces that steer a path into every route, and garbage around them.
        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("/".to_string()),
                Just("_catalog".to_string()),
                Just("manifests".to_string()),
                Just("blobs".to_string()),
                Just("uploads".to_string()),
                Just("tags/list".to_string()),
                Just("referrers".to_string()),
                Just("sha256:".to_string()),
                Just(format!("sha256:{}", "a".repeat(64))),
                Just("%".to_string()),
                Just("%a".to_string()),
                Just("%C3%A9".to_string()),
                Just("%2F".to_string()),
                Just("%00".to_string()),
                Just("\u{e9}".to_string()),
                Just("..".to_string()),
                any::<String>(),
            ]
        }

        pub(crate) fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 0..10).prop_map(|p| format!("/v2/{}", p.concat()))
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 2000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn parsing_is_total(
                path in path(),
                raw in any::<String>(),
                query in any::<String>(),
                key in prop_oneof![Just("n".to_string()), Just("last".to_string()), any::<String>()],
                size in any::<u64>(),
            ) {
                let _ = parse_target(&path);
                let _ = parse_target(&raw);
                let _ = query_param(Some(&query), &key);
                let _ = decode_component(&raw);
                let _ = parse_content_range(&raw);
                if let Some(target) = parse_target(&path) {
                    for m in [Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::PATCH, Method::DELETE] {
                        let _ = need(&target, &m);
                    }
                }
                match parse_range(Some(&raw), size) {
                    RangeRequest::Part(s, e) => prop_assert!(s <= e && e < size),
                    RangeRequest::Full | RangeRequest::Unsatisfiable => {}
                }
                let header = format!("bytes={raw}");
                match parse_range(Some(&header), size) {
                    RangeRequest::Part(s, e) => prop_assert!(s <= e && e < size),
                    RangeRequest::Full | RangeRequest::Unsatisfiable => {}
                }
            }

            #[test]
            fn ranges_of_numbers_stay_inside_the_blob(
                a in any::<Option<u64>>(),
                b in any::<Option<u64>>(),
                size in 0u64..1_000_000,
            ) {
                let fmt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
                let header = format!("bytes={}-{}", fmt(a), fmt(b));
                match parse_range(Some(&header), size) {
                    RangeRequest::Part(s, e) => prop_assert!(s <= e && e < size),
                    RangeRequest::Full | RangeRequest::Unsatisfiable => {}
                }
            }
        }
    }
}
