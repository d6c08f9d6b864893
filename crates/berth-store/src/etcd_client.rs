//! A small client for etcd's v3 API through its HTTP/JSON gateway (the
//! `/v3/*` endpoints every etcd ≥ 3.4 serves beside gRPC, with keys and
//! values in base64 and 64-bit integers as strings).
//!
//! We speak the gateway rather than gRPC so that building Berth needs no
//! protobuf compiler (the README's first command must work on a bare
//! machine) and no second HTTP stack: this is hyper, which the rest of
//! Berth already uses. Several endpoints may be given; a call that cannot
//! reach one moves on to the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::StoreError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Time allowed for one unary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Result<Vec<u8>, StoreError> {
    B64.decode(text)
        .map_err(|e| StoreError::Io(format!("etcd sent invalid base64: {e}")))
}

/// An etcd 64-bit integer field (a JSON string, or absent for zero).
pub(crate) fn int(value: &Value, field: &str) -> u64 {
    match value.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The smallest key after every key starting with `prefix`.
pub(crate) fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("etcd: {e}"))
}

#[derive(Clone)]
pub(crate) struct EtcdClient {
    endpoints: std::sync::Arc<Vec<String>>,
    current: std::sync::Arc<AtomicUsize>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl EtcdClient {
    pub(crate) fn new(endpoints: &[String]) -> Result<EtcdClient, StoreError> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.starts_with("http://") || e.starts_with("https://") {
                    e
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::Io("no etcd endpoint given".into()));
        }
        if endpoints.iter().any(|e| e.starts_with("https://")) {
            return Err(StoreError::Io(
                "https etcd endpoints are not supported yet; use http:// on a trusted network"
                    .into(),
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(EtcdClient {
            endpoints: std::sync::Arc::new(endpoints),
            current: std::sync::Arc::new(AtomicUsize::new(0)),
            http,
        })
    }

    fn request(&self, endpoint: &str, path: &str, body: &Value) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(Bytes::from(body.to_string())));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = format!("{endpoint}{path}")
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:2379/"));
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        request
    }

    /// One unary call, trying each endpoint once from the current one.
    pub(crate) async fn call(&self, path: &str, body: Value) -> Result<Value, StoreError> {
        let count = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = StoreError::Io("etcd: no endpoint answered".into());
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let endpoint = &self.endpoints[index];
            let request = self.request(endpoint, path, &body);
            let answer = tokio::time::timeout(CALL_TIMEOUT, async {
                let response = self.http.request(request).await.map_err(io)?;
                let status = response.status();
                let bytes = response.into_body().collect().await.map_err(io)?.to_bytes();
                Ok::<_, StoreError>((status, bytes))
            })
            .await;
            match answer {
                Ok(Ok((status, bytes))) => {
                    let value: Value = serde_json::from_slice(&bytes).map_err(io)?;
                    if !status.is_success() {
                        let message = value
                            .get("message")
                            .or_else(|| value.get("error"))
                            .and_then(Value::as_str)
                            .unwrap_or("error")
                            .to_string();
                        // An unavailable member (no leader, stopping):
                        // another may answer.
                        if status.as_u16() == 503 || message.contains("no leader") {
                            last = io(format!("{endpoint}: {message}"));
                            continue;
                        }
                        return Err(io(format!("{endpoint}{path}: {status}: {message}")));
                    }
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = io(format!("{endpoint}{path} timed out")),
            }
        }
        // Start from the next endpoint next time.
        self.current.store((start + 1) % count, Ordering::Relaxed);
        Err(last)
    }

    /// A streaming call (watch, lease keep-alive): the messages of the
    /// response body, as they arrive, from one endpoint.
    pub(crate) async fn stream(
        &self,
        path: &str,
        body: Value,
    ) -> Result<MessageStream, StoreError> {
        let count = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = StoreError::Io("etcd: no endpoint answered".into());
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let endpoint = &self.endpoints[index];
            let request = self.request(endpoint, path, &body);
            match tokio::time::timeout(CALL_TIMEOUT, self.http.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(MessageStream {
                        body: response.into_body(),
                        buffer: BytesMut::new(),
                    });
                }
                Ok(Ok(response)) => last = io(format!("{endpoint}{path}: {}", response.status())),
                Ok(Err(e)) => last = io(e),
                Err(_) => last = io(format!("{endpoint}{path} timed out")),
            }
        }
        self.current.store((start + 1) % count, Ordering::Relaxed);
        Err(last)
    }

    /// `range` over `[key, end)` at `revision` (0: latest), `limit` keys.
    pub(crate) async fn range(
        &self,
        key: &[u8],
        end: &[u8],
        revision: u64,
        limit: u64,
    ) -> Result<Value, StoreError> {
        let mut body = json!({"key": b64(key), "range_end": b64(end), "limit": limit.to_string()});
        if revision > 0 {
            body["revision"] = json!(revision.to_string());
        }
        self.call("/v3/kv/range", body).await
    }

    pub(crate) async fn grant_lease(&self, ttl_secs: u64) -> Result<u64, StoreError> {
        let answer = self
            .call("/v3/lease/grant", json!({"TTL": ttl_secs.to_string()}))
            .await?;
        match int(&answer, "ID") {
            0 => Err(io(format!("lease grant answered no ID: {answer}"))),
            id => Ok(id),
        }
    }

    /// Renews a lease once; false when the lease no longer exists.
    pub(crate) async fn keep_alive(&self, lease: u64) -> Result<bool, StoreError> {
        let mut stream = self
            .stream("/v3/lease/keepalive", json!({"ID": lease.to_string()}))
            .await?;
        let message = tokio::time::timeout(CALL_TIMEOUT, stream.next())
            .await
            .map_err(|_| io("lease keep-alive timed out"))??;
        let Some(message) = message else {
            return Err(io("lease keep-alive stream ended"));
        };
        let result = message.get("result").unwrap_or(&message);
        Ok(int(result, "TTL") > 0)
    }

    pub(crate) async fn revoke_lease(&self, lease: u64) -> Result<(), StoreError> {
        self.call("/v3/lease/revoke", json!({"ID": lease.to_string()}))
            .await
            .map(|_| ())
    }
}

/// Newline-delimited JSON messages of a streaming gateway response.
pub(crate) struct MessageStream {
    body: hyper::body::Incoming,
    buffer: BytesMut,
}

impl MessageStream {
    /// The next message; `None` when the stream ended.
    pub(crate) async fn next(&mut self) -> Result<Option<Value>, StoreError> {
        loop {
            if let Some(message) = self.take_message()? {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(io(e)),
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }

    /// One complete JSON value from the front of the buffer, if there is one.
    fn take_message(&mut self) -> Result<Option<Value>, StoreError> {
        let start = self
            .buffer
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buffer.len());
        self.buffer.advance(start);
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let mut values = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => {
                let used = values.byte_offset();
                self.buffer.advance(used);
                Ok(Some(value))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(io(format!("unreadable stream message: {e}"))),
            None => Ok(None),
        }
    }
}
