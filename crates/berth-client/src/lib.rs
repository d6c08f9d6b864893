//! Berth's own signed HTTP client, shared by the agent, `berth usage` and the
//! benchmarks: SigV4-signed AWS JSON 1.1 calls (`POST /` with
//! `X-Amz-Target`) and signed `GET`s of Berth's `/_berth/*` endpoints, over
//! hyper with one pooled connection set per server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The long-term credentials a client signs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke: try again.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server answered with an AWS error.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether another server may answer: this one cannot be reached, or it
    /// is shutting down or overloaded.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Unreachable(_) => true,
            ClientError::Api { status, .. } => *status == 502 || *status == 503,
            ClientError::Protocol(_) => false,
        }
    }

    /// Whether the credential was refused (the agent must register again).
    pub fn is_auth(&self) -> bool {
        matches!(self, ClientError::Api { code, .. }
            if code == "UnrecognizedClientException" || code == "AccessDeniedException")
    }
}

/// What a request is signed for: the server's `host[:port]`, the region and
/// the service's signing name.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub host: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// Every header of a signed JSON 1.1 call to `target` (`<prefix>.<Operation>`)
/// with `body`, as of `now` (seconds since the epoch): `host`,
/// `content-type`, `x-amz-target`, then the signature's. For callers that
/// send requests themselves (a load generator reusing a signature).
pub fn json_call_headers(
    credentials: &Credentials,
    scope: Scope<'_>,
    target: &str,
    body: &[u8],
    now: i64,
) -> Vec<(String, String)> {
    json_call_headers_with_token(credentials, None, scope, target, body, now)
}

/// [`json_call_headers`] for temporary credentials: also signs
/// `x-amz-security-token` with `session_token`.
pub fn json_call_headers_with_token(
    credentials: &Credentials,
    session_token: Option<&str>,
    scope: Scope<'_>,
    target: &str,
    body: &[u8],
    now: i64,
) -> Vec<(String, String)> {
    let params = berth_sigv4::SigningParams {
        access_key_id: &credentials.access_key_id,
        secret_access_key: &credentials.secret_access_key,
        session_token,
        region: scope.region,
        service: scope.service,
        now,
    };
    let headers = [
        ("host", scope.host),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target),
    ];
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    all.extend(berth_sigv4::sign_headers(
        &params, "POST", "/", "", &headers, body,
    ));
    all
}

/// A query string of `pairs`, each name and value encoded as SigV4
/// canonicalizes them, so what is sent is what was signed.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let enc = |v: &str| berth_sigv4::canonical::uri_encode(v, false);
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", enc(name), enc(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A signed `GET` of one of Berth's own endpoints (`/_berth/usage`,
/// `/_berth/controllers` …).
#[derive(Clone, Copy, Debug)]
pub struct Get<'a> {
    /// The path, e.g. `/_berth/usage`.
    pub path: &'a str,
    /// Decoded query parameters, in order.
    pub query: &'a [(&'a str, &'a str)],
    /// The signing name the endpoint expects (e.g. `ecs`).
    pub service: &'a str,
    /// The session token of temporary credentials.
    pub session_token: Option<&'a str>,
}

impl<'a> Get<'a> {
    /// `path` signed for `service`, without a query or a session token.
    pub fn new(path: &'a str, service: &'a str) -> Self {
        Get {
            path,
            query: &[],
            service,
            session_token: None,
        }
    }
}

/// One server the client may talk to.
#[derive(Clone, Debug)]
struct Endpoint {
    uri: hyper::Uri,
    host: String,
}

/// Talks to a Berth installation: one server, or several (`URL1,URL2,…`),
/// moving to the next when the one in use cannot be reached (a server that
/// died), as agents must when their server goes away.
#[derive(Clone)]
pub struct ServerClient {
    endpoints: std::sync::Arc<Vec<Endpoint>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    region: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

fn parse_endpoint(endpoint: &str) -> Result<Endpoint, ClientError> {
    let uri: hyper::Uri = endpoint
        .trim()
        .trim_end_matches('/')
        .parse()
        .map_err(|e| ClientError::Protocol(format!("invalid server URL '{endpoint}': {e}")))?;
    let host = uri
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| ClientError::Protocol("the server URL needs a host".into()))?;
    Ok(Endpoint { uri, host })
}

impl ServerClient {
    /// `endpoint`: one server URL, or several separated by commas.
    pub fn new(endpoint: &str, region: &str) -> Result<Self, ClientError> {
        let endpoints = endpoint
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(parse_endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::Protocol("no server URL given".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = Client::builder(TokioExecutor::new())
            // Below the server's default idle timeout (20 s), so the client
            // never reuses a connection the server is closing.
            .pool_idle_timeout(Duration::from_secs(10))
            .build(connector);
        Ok(ServerClient {
            endpoints: std::sync::Arc::new(endpoints),
            current: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            region: region.to_string(),
            http,
        })
    }

    fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index % self.endpoints.len()]
    }

    /// Runs `attempt` against the server in use, then each other server in
    /// turn while the answer is that the server cannot be reached (or is
    /// shutting down); the first that answers stays in use.
    async fn with_failover<O, F, Fut>(&self, mut attempt: F) -> Result<O, ClientError>
    where
        F: FnMut(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<O, ClientError>>,
    {
        use std::sync::atomic::Ordering;
        let start = self.current.load(Ordering::Relaxed);
        let count = self.endpoints.len();
        let mut last = None;
        for step in 0..count {
            let index = (start + step) % count;
            match attempt(self.endpoint(index).clone()).await {
                Err(e) if count > 1 && e.is_unavailable() => {
                    tracing::warn!(server = %self.endpoint(index).host, error = %e, "server unavailable; trying the next");
                    last = Some(e);
                }
                other => {
                    if step > 0 {
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return other;
                }
            }
        }
        // None answered: start from the next one next time.
        self.current.store((start + 1) % count, Ordering::Relaxed);
        Err(last.unwrap_or_else(|| ClientError::Unreachable("no server answered".into())))
    }

    /// The `host:port` of the server in use, which is also its registry's
    /// host.
    pub fn host(&self) -> &str {
        &self
            .endpoint(self.current.load(std::sync::atomic::Ordering::Relaxed))
            .host
    }

    /// The `host:port` of every server this client may talk to.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().map(|e| e.host.as_str())
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Calls `<prefix>.<operation>` of the agent protocol with `input`,
    /// waiting at most `timeout`.
    pub async fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        target_prefix: &str,
        operation: &str,
        input: &I,
        timeout: Duration,
    ) -> Result<O, ClientError> {
        self.call_service(
            credentials,
            berth_model::agent_protocol::SIGNING_NAME,
            target_prefix,
            operation,
            input,
            timeout,
        )
        .await
    }

    /// Like [`ServerClient::call`], signed for another AWS service (e.g. `ecr`).
    pub async fn call_service<I: Serialize, O: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        signing_service: &str,
        target_prefix: &str,
        operation: &str,
        input: &I,
        timeout: Duration,
    ) -> Result<O, ClientError> {
        self.call_signed(
            credentials,
            None,
            signing_service,
            target_prefix,
            operation,
            input,
            timeout,
        )
        .await
    }

    /// Like [`ServerClient::call_service`], with the session token of
    /// temporary credentials when there is one.
    #[allow(clippy::too_many_arguments)]
    pub async fn call_signed<I: Serialize, O: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        session_token: Option<&str>,
        signing_service: &str,
        target_prefix: &str,
        operation: &str,
        input: &I,
        timeout: Duration,
    ) -> Result<O, ClientError> {
        let body = serde_json::to_vec(input).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let target = format!("{target_prefix}.{operation}");
        self.with_failover(|endpoint| {
            let scope = Scope {
                host: &endpoint.host,
                region: &self.region,
                service: signing_service,
            };
            let headers = json_call_headers_with_token(
                credentials,
                session_token,
                scope,
                &target,
                &body,
                berth_util::time::now_secs(),
            );
            let mut request = hyper::Request::post(endpoint.uri.clone());
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = request
                .body(Full::new(Bytes::from(body.clone())))
                .map_err(|e| ClientError::Protocol(e.to_string()));
            let target = target.clone();
            async move { self.send(request?, &target, timeout).await }
        })
        .await
    }

    /// A signed `GET` of `get.path` with `get.query`, answering the JSON
    /// document the endpoint returns.
    pub async fn get<O: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        get: Get<'_>,
        timeout: Duration,
    ) -> Result<O, ClientError> {
        let query = query_string(get.query);
        let path_and_query = if query.is_empty() {
            get.path.to_string()
        } else {
            format!("{}?{query}", get.path)
        };
        self.with_failover(|endpoint| {
            let request = self.signed_get(credentials, get, &endpoint, &query, &path_and_query);
            async move { self.send(request?, get.path, timeout).await }
        })
        .await
    }

    fn signed_get(
        &self,
        credentials: &Credentials,
        get: Get<'_>,
        endpoint: &Endpoint,
        query: &str,
        path_and_query: &str,
    ) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let uri = hyper::Uri::builder()
            .scheme(endpoint.uri.scheme_str().unwrap_or("http"))
            .authority(endpoint.host.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| ClientError::Protocol(format!("{}: {e}", get.path)))?;
        let params = berth_sigv4::SigningParams {
            access_key_id: &credentials.access_key_id,
            secret_access_key: &credentials.secret_access_key,
            session_token: get.session_token,
            region: &self.region,
            service: get.service,
            now: berth_util::time::now_secs(),
        };
        let headers = [("host", endpoint.host.as_str())];
        let signed = berth_sigv4::sign_headers(&params, "GET", get.path, query, &headers, b"");
        let mut request = hyper::Request::get(uri);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        for (name, value) in &signed {
            request = request.header(name.as_str(), value.as_str());
        }
        request
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends `request` and reads its JSON answer or AWS error, waiting at
    /// most `timeout` for each of the answer's head and body.
    async fn send<O: DeserializeOwned>(
        &self,
        request: hyper::Request<Full<Bytes>>,
        what: &str,
        timeout: Duration,
    ) -> Result<O, ClientError> {
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| ClientError::Unreachable(format!("{what} timed out")))?
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = tokio::time::timeout(timeout, response.into_body().collect())
            .await
            .map_err(|_| ClientError::Unreachable(format!("{what} timed out")))?
            .map_err(|e| ClientError::Unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("{what}: {e}")));
        }
        Err(api_error(status.as_u16(), &bytes))
    }
}

/// An AWS JSON error answer (`{"__type", "message"}`); a body that is not
/// one gives code `Unknown` and the body as the message.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let error: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = error["__type"].as_str().unwrap_or("Unknown");
    let code = code.rsplit('#').next().unwrap_or(code).to_string();
    let message = match error["message"].as_str() {
        Some(message) => message.to_string(),
        None if error.is_null() => String::from_utf8_lossy(body).into_owned(),
        None => String::new(),
    };
    ClientError::Api {
        status,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::{RawQuery, Request};
    use axum::routing::{get as get_route, post};
    use serde_json::{json, Value};

    fn credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIATEST".into(),
            secret_access_key: "secret".into(),
        }
    }

    /// A server that checks signatures with berth-sigv4's verifier and
    /// echoes what it was sent.
    async fn server() -> (String, tokio::task::JoinHandle<()>) {
        struct Keys;
        impl berth_sigv4::SecretLookup for Keys {
            fn secret_for(&self, id: &str) -> Option<String> {
                (id == "AKIATEST").then(|| "secret".to_string())
            }
        }
        async fn check(request: Request) -> (hyper::StatusCode, axum::Json<Value>) {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            let borrowed: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let request = berth_sigv4::RequestParts {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or(""),
                headers: &borrowed,
                body: &body,
            };
            let verified = berth_sigv4::Verifier::new(900).verify(
                &request,
                berth_util::time::now_secs(),
                &Keys,
            );
            match verified {
                Ok(v) => (
                    hyper::StatusCode::OK,
                    axum::Json(json!({
                        "service": v.service,
                        "query": parts.uri.query(),
                        "target": request.header("x-amz-target"),
                        "token": request.header("x-amz-security-token"),
                        "body": String::from_utf8_lossy(&body),
                    })),
                ),
                Err(e) => (
                    hyper::StatusCode::FORBIDDEN,
                    axum::Json(
                        json!({"__type": "com.amazon#InvalidSignatureException", "message": e.to_string()}),
                    ),
                ),
            }
        }
        let router = axum::Router::new()
            .route("/", post(check))
            .route("/_berth/echo", get_route(check))
            .route(
                "/_berth/text",
                get_route(|_: RawQuery| async { (hyper::StatusCode::BAD_GATEWAY, "down") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        (format!("http://{address}"), task)
    }

    #[tokio::test]
    async fn signed_calls_and_gets_verify() {
        let (endpoint, task) = server().await;
        let client = ServerClient::new(&endpoint, "us-east-1").unwrap();
        let timeout = Duration::from_secs(10);
        let answer: Value = client
            .call(
                &credentials(),
                "BerthAgentV1",
                "PollTasks",
                &json!({"a": 1}),
                timeout,
            )
            .await
            .unwrap();
        assert_eq!(answer["service"], "ecs");
        assert_eq!(answer["target"], "BerthAgentV1.PollTasks");
        assert_eq!(answer["body"], r#"{"a":1}"#);

        let answer: Value = client
            .get(
                &credentials(),
                Get {
                    query: &[("tag", "a b=c+d/é"), ("cluster", "demo")],
                    session_token: Some("tok"),
                    ..Get::new("/_berth/echo", "ecs")
                },
                timeout,
            )
            .await
            .unwrap();
        assert_eq!(answer["query"], "tag=a%20b%3Dc%2Bd%2F%C3%A9&cluster=demo");
        assert_eq!(answer["token"], "tok");

        let wrong = Credentials {
            secret_access_key: "wrong".into(),
            ..credentials()
        };
        let e = client
            .get::<Value>(&wrong, Get::new("/_berth/echo", "ecs"), timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Api { status: 403, code, .. } if code == "InvalidSignatureException"),
            "{e:?}"
        );
        let e = client
            .get::<Value>(&credentials(), Get::new("/_berth/text", "ecs"), timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Api { status: 502, code, message } if code == "Unknown" && message == "down"),
            "{e:?}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn an_absent_server_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let client = ServerClient::new(&format!("http://{address}/"), "us-east-1").unwrap();
        assert_eq!(client.host(), address.to_string());
        let e = client
            .call::<_, Value>(&credentials(), "X", "Y", &json!({}), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Unreachable(_)), "{e:?}");
        assert!(ServerClient::new("/no/host", "us-east-1").is_err());
    }

    #[tokio::test]
    async fn moves_to_the_next_server_when_one_is_gone() {
        let (up, _task) = server().await;
        // A port nothing listens on: the first server "died".
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let client = ServerClient::new(&format!("{dead},{up}"), "us-east-1").unwrap();
        let answer: Value = client
            .call(
                &credentials(),
                "BerthAgentV1",
                "PollTasks",
                &json!({"a": 1}),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(answer["target"], "BerthAgentV1.PollTasks");
        // The answering server stays in use (its host signs the next call).
        assert_eq!(client.host(), up.trim_start_matches("http://"));
        let again: Value = client
            .get(
                &credentials(),
                Get::new("/_berth/echo", "ecs"),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(again["service"], "ecs");
        // Only the dead one: the error says it cannot be reached.
        let alone = ServerClient::new(&dead, "us-east-1").unwrap();
        let e = alone
            .call::<_, Value>(
                &credentials(),
                "BerthAgentV1",
                "PollTasks",
                &json!({}),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(e.is_unavailable());
    }
}
