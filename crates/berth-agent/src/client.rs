//! A SigV4-signing JSON 1.1 client for the agent protocol.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Credentials the agent signs with.
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
    /// Whether the credential was refused (the agent must register again).
    pub fn is_auth(&self) -> bool {
        matches!(self, ClientError::Api { code, .. }
            if code == "UnrecognizedClientException" || code == "AccessDeniedException")
    }
}

/// Talks to one Berth server.
#[derive(Clone)]
pub struct ServerClient {
    endpoint: hyper::Uri,
    host: String,
    region: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ServerClient {
    pub fn new(endpoint: &str, region: &str) -> Result<Self, ClientError> {
        let endpoint: hyper::Uri = endpoint
            .trim_end_matches('/')
            .parse()
            .map_err(|e| ClientError::Protocol(format!("invalid server URL '{endpoint}': {e}")))?;
        let host = endpoint
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| ClientError::Protocol("the server URL needs a host".into()))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = Client::builder(TokioExecutor::new())
            // Below the server's default idle timeout (20 s), so the agent
            // never reuses a connection the server is closing.
            .pool_idle_timeout(Duration::from_secs(10))
            .build(connector);
        Ok(ServerClient {
            endpoint,
            host,
            region: region.to_string(),
            http,
        })
    }

    /// The server's `host:port`, which is also its registry's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Calls `<prefix>.<operation>` with `input`, waiting at most `timeout`.
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
        let body = serde_json::to_vec(input).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let target = format!("{target_prefix}.{operation}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let params = berth_sigv4::SigningParams {
            access_key_id: &credentials.access_key_id,
            secret_access_key: &credentials.secret_access_key,
            session_token: None,
            region: &self.region,
            service: signing_service,
            now,
        };
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let signed = berth_sigv4::sign_headers(&params, "POST", "/", "", &headers, &body);
        let mut request = hyper::Request::post(self.endpoint.clone());
        for (name, value) in headers.iter().copied() {
            request = request.header(name, value);
        }
        for (name, value) in &signed {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| ClientError::Unreachable(format!("{target} timed out")))?
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = tokio::time::timeout(timeout, response.into_body().collect())
            .await
            .map_err(|_| ClientError::Unreachable(format!("{target} timed out")))?
            .map_err(|e| ClientError::Unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("{target}: {e}")));
        }
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = error["__type"].as_str().unwrap_or("Unknown");
        let code = code.rsplit('#').next().unwrap_or(code).to_string();
        Err(ClientError::Api {
            status: status.as_u16(),
            code,
            message: error["message"].as_str().unwrap_or_default().to_string(),
        })
    }
}
