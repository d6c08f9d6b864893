//! What servers of one installation say to each other.
//!
//! - **Forwarding to the leader**: the log store has one writer, the leader;
//!   the others forward CloudWatch Logs calls and agents' log shipping to it
//!   over `POST /_berth/internal/*`. A forwarded call carries the caller as
//!   the forwarding server authenticated it; the leader's handler authorizes
//!   it with the same policies. Internal calls are authenticated with an
//!   HMAC-SHA256 of the body under the installation's cluster key
//!   (`<shared-dir>/cluster.key`, 0600) and refused when older than a minute.
//! - **Presence**: which agents are connected to some server
//!   ([`EtcdPresence`], on a `LeasedSet`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use berth_model::agent_protocol::{LogPosition, TaskLogEvent};
use berth_model::authz::{Access, DenialStyle};
use berth_model::{AwsError, JsonService, Principal, PrincipalKind, RequestContext};
use berth_store::{EtcdElections, LeasedSet};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::logs_place::{from_wire, to_wire, LogsPlace};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const MAC_HEADER: &str = "x-berth-cluster-mac";
/// Internal calls older (or newer) than this are refused.
const MAX_AGE_SECS: i64 = 60;
/// The role whose holder runs the controllers and the log store.
pub const LEADER_ROLE: &str = "leader";

/// The installation's shared secret for internal calls.
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// Reads `<shared>/cluster.key`, creating it (0600) on first start; a
    /// server starting at the same moment reads the one that won.
    pub fn load_or_create(shared: &Path) -> anyhow::Result<ClusterKey> {
        let path = shared.join("cluster.key");
        let (bytes, _) = berth_util::private_file::read_or_create_private(&path, || {
            berth_util::ids::random_bytes::<32>().to_vec()
        })?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{} is not a 32-byte key; remove it on every server and restart them",
                path.display()
            )
        })?;
        Ok(ClusterKey(key))
    }

    fn mac(&self, body: &[u8]) -> String {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn verify(&self, body: &[u8], mac: &str) -> bool {
        bool::from(self.mac(body).as_bytes().ct_eq(mac.as_bytes()))
    }
}

/// Who leads, as the leader's election entry says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderIdentity {
    pub id: String,
    pub url: String,
}

/// Why a forwarded call did not get the leader's answer.
#[derive(Debug)]
pub enum Forwarded {
    /// This server leads now: serve the call here.
    Local,
    Failed(AwsError),
}

fn unavailable(message: impl Into<String>) -> AwsError {
    AwsError::new(503, "ServiceUnavailableException", message)
}

/// Sends calls to the current leader.
pub struct Forwarder {
    key: Arc<ClusterKey>,
    elections: Arc<EtcdElections>,
    own_url: String,
    leader: Mutex<Option<(String, Instant)>>,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// How long a leader's URL is trusted without asking etcd again.
const LEADER_CACHE: Duration = Duration::from_secs(2);

impl Forwarder {
    pub fn new(key: Arc<ClusterKey>, elections: Arc<EtcdElections>, own_url: String) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Arc::new(Forwarder {
            key,
            elections,
            own_url,
            leader: Mutex::new(None),
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(10))
                .build(connector),
        })
    }

    async fn leader_url(&self, fresh: bool) -> Result<String, AwsError> {
        if !fresh {
            let cached = self
                .leader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some((url, at)) = cached {
                if at.elapsed() < LEADER_CACHE {
                    return Ok(url);
                }
            }
        }
        let identity = self
            .elections
            .leader(LEADER_ROLE)
            .await
            .map_err(|e| unavailable(format!("finding the leader failed: {e}")))?
            .ok_or_else(|| unavailable("No Berth server leads at the moment; retry shortly."))?;
        let identity: LeaderIdentity = serde_json::from_str(&identity)
            .map_err(|_| unavailable("The leader's entry is unreadable."))?;
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((identity.url.clone(), Instant::now()));
        Ok(identity.url)
    }

    /// POSTs `payload` to the leader's `path`, finding the leader again and
    /// retrying while leadership moves (about a lease TTL at most). Answers
    /// [`Forwarded::Local`] once this server itself leads with the log store
    /// open (`local_ready`), so the caller serves the call here.
    async fn call(
        &self,
        path: &str,
        mut payload: Value,
        local_ready: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Value, Forwarded> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut fresh = false;
        loop {
            if local_ready() {
                return Err(Forwarded::Local);
            }
            let url = self.leader_url(fresh).await;
            fresh = true;
            let attempt = match url {
                Ok(url) if url == self.own_url => {
                    // This server is taking over or giving up: wait.
                    Err(unavailable("leadership is moving"))
                }
                Ok(url) => {
                    payload["ts"] = json!(berth_util::time::now_secs());
                    self.post(&url, path, &payload).await
                }
                Err(e) => Err(e),
            };
            match attempt {
                Err(e) if e.status == 503 && Instant::now() < deadline => {
                    tracing::debug!(error = %e.message, "forwarding to the leader; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other.map_err(Forwarded::Failed),
            }
        }
    }

    async fn post(&self, base: &str, path: &str, payload: &Value) -> Result<Value, AwsError> {
        let body = payload.to_string().into_bytes();
        let request = http::Request::post(format!("{}{path}", base.trim_end_matches('/')))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(MAC_HEADER, self.key.mac(&body))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AwsError::internal(format!("building an internal call: {e}")))?;
        let response = tokio::time::timeout(Duration::from_secs(60), self.http.request(request))
            .await
            .map_err(|_| unavailable("the leader did not answer in time"))?
            .map_err(|e| unavailable(format!("the leader cannot be reached: {e}")))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unavailable(format!("the leader's answer broke: {e}")))?
            .to_bytes();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(unavailable("the leader is not serving the log store"));
        }
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|_| AwsError::internal("The leader's answer is unreadable."))?;
        if let Some(error) = answer.get("error") {
            return Err(AwsError::new(
                error["status"].as_u64().unwrap_or(500) as u16,
                error["code"]
                    .as_str()
                    .unwrap_or("InternalFailure")
                    .to_string(),
                error["message"].as_str().unwrap_or_default(),
            ));
        }
        Ok(answer)
    }

    /// A CloudWatch Logs API call, answered by the leader.
    pub async fn logs_api(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
        local_ready: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Vec<u8>, Forwarded> {
        let payload = json!({
            "requestId": ctx.request_id,
            "account": ctx.account_id,
            "region": ctx.region,
            "principal": principal_json(&ctx.principal),
            "sourceIp": ctx.source_ip.map(|ip| ip.to_string()),
            "operation": operation,
            "body": B64.encode(body),
        });
        let answer = self
            .call("/_berth/internal/logs", payload, local_ready)
            .await?;
        let body = answer["body"].as_str().unwrap_or_default();
        B64.decode(body).map_err(|_| {
            Forwarded::Failed(AwsError::internal("The leader's answer is unreadable."))
        })
    }

    pub async fn open_stream(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        create_group: bool,
        local_ready: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Option<LogPosition>, Forwarded> {
        let answer = self
            .call(
                "/_berth/internal/log-sink",
                json!({"op": "open", "account": account, "region": region, "group": group,
                       "stream": stream, "createGroup": create_group}),
                local_ready,
            )
            .await?;
        cursor_of(&answer).map_err(Forwarded::Failed)
    }

    pub async fn ingest(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        events: &[TaskLogEvent],
        local_ready: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Option<LogPosition>, Forwarded> {
        let answer = self
            .call(
                "/_berth/internal/log-sink",
                json!({"op": "ingest", "account": account, "region": region, "group": group,
                       "stream": stream, "events": events}),
                local_ready,
            )
            .await?;
        cursor_of(&answer).map_err(Forwarded::Failed)
    }
}

fn cursor_of(answer: &Value) -> Result<Option<LogPosition>, AwsError> {
    match answer.get("cursor") {
        None | Some(Value::Null) => Ok(None),
        Some(cursor) => serde_json::from_value(cursor.clone())
            .map(Some)
            .map_err(|_| AwsError::internal("The leader's answer is unreadable.")),
    }
}

fn kind_name(kind: &PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::Root => "root",
        PrincipalKind::User => "user",
        PrincipalKind::AssumedRole => "assumed-role",
        PrincipalKind::Agent => "agent",
    }
}

fn principal_json(p: &Principal) -> Value {
    json!({"kind": kind_name(&p.kind), "arn": p.arn, "userId": p.user_id,
           "accountId": p.account_id, "accessKeyId": p.access_key_id})
}

fn principal_of(v: &Value) -> Option<Principal> {
    let kind = match v["kind"].as_str()? {
        "root" => PrincipalKind::Root,
        "user" => PrincipalKind::User,
        "assumed-role" => PrincipalKind::AssumedRole,
        "agent" => PrincipalKind::Agent,
        _ => return None,
    };
    Some(Principal {
        kind,
        arn: v["arn"].as_str()?.to_string(),
        user_id: v["userId"].as_str()?.to_string(),
        account_id: v["accountId"].as_str()?.to_string(),
        access_key_id: v["accessKeyId"].as_str()?.to_string(),
    })
}

/// What the leader needs to answer internal calls.
pub struct Internal {
    pub key: Arc<ClusterKey>,
    pub logs: Arc<LogsPlace>,
    pub authorizer: Option<Arc<dyn berth_api::Authorizer>>,
}

/// `POST /_berth/internal/logs` and `/_berth/internal/log-sink`.
pub fn internal_routes(internal: Arc<Internal>) -> axum::Router {
    axum::Router::new()
        .route("/_berth/internal/logs", post(logs_call))
        .route("/_berth/internal/log-sink", post(log_sink_call))
        .with_state(internal)
}

type Answer = (StatusCode, axum::Json<Value>);

fn error_answer(e: &AwsError) -> Answer {
    (
        StatusCode::OK,
        axum::Json(json!({"error": {"status": e.status, "code": e.code, "message": e.message}})),
    )
}

/// The request's JSON when its MAC and age are right.
fn authenticated(internal: &Internal, headers: &HeaderMap, body: &[u8]) -> Result<Value, Answer> {
    let refused = |why: &str| {
        (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": {"status": 403, "code": "AccessDenied", "message": why}})),
        )
    };
    let mac = headers
        .get(MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("Internal calls must carry the installation's MAC."))?;
    if !internal.key.verify(body, mac) {
        return Err(refused("The internal call's MAC is wrong."));
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|_| refused("The internal call is unreadable."))?;
    let ts = payload["ts"].as_i64().unwrap_or(0);
    if (berth_util::time::now_secs() - ts).abs() > MAX_AGE_SECS {
        return Err(refused("The internal call is too old."));
    }
    Ok(payload)
}

fn not_leading() -> Answer {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(
            json!({"error": {"status": 503, "code": "ServiceUnavailableException",
                                    "message": "This server does not serve the log store."}}),
        ),
    )
}

async fn logs_call(
    State(internal): State<Arc<Internal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let payload = match authenticated(&internal, &headers, &body) {
        Ok(payload) => payload,
        Err(answer) => return answer,
    };
    let Some(service) = internal.logs.local() else {
        return not_leading();
    };
    let Some(principal) = principal_of(&payload["principal"]) else {
        return error_answer(&AwsError::internal("The forwarded caller is unreadable."));
    };
    let Ok(request_body) = B64.decode(payload["body"].as_str().unwrap_or_default()) else {
        return error_answer(&AwsError::internal("The forwarded body is unreadable."));
    };
    let ctx = RequestContext {
        request_id: payload["requestId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        account_id: payload["account"].as_str().unwrap_or_default().to_string(),
        region: payload["region"].as_str().unwrap_or_default().to_string(),
        principal,
        source_ip: payload["sourceIp"].as_str().and_then(|ip| ip.parse().ok()),
        secure_transport: false,
        // The leader decides as the forwarding server would have.
        access: Access::new(internal.authorizer.clone(), DenialStyle::Json, false),
    };
    let operation = payload["operation"].as_str().unwrap_or_default();
    match service.handle(&ctx, operation, &request_body).await {
        Ok(out) => (StatusCode::OK, axum::Json(json!({"body": B64.encode(out)}))),
        Err(e) => error_answer(&e),
    }
}

async fn log_sink_call(
    State(internal): State<Arc<Internal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let payload = match authenticated(&internal, &headers, &body) {
        Ok(payload) => payload,
        Err(answer) => return answer,
    };
    let Some(service) = internal.logs.local() else {
        return not_leading();
    };
    let text = |field: &str| payload[field].as_str().unwrap_or_default().to_string();
    let (account, region, group, stream) = (
        text("account"),
        text("region"),
        text("group"),
        text("stream"),
    );
    let result = match payload["op"].as_str() {
        Some("open") => {
            let create = payload["createGroup"].as_bool().unwrap_or(false);
            match service
                .ensure_stream(&account, &region, &group, &stream, create)
                .await
            {
                Ok(()) => Ok(service
                    .cursor(&account, &region, &group, &stream)
                    .map(to_wire)),
                Err(e) => Err(e),
            }
        }
        Some("ingest") => {
            let events: Vec<TaskLogEvent> =
                serde_json::from_value(payload["events"].clone()).unwrap_or_default();
            service
                .ingest(&account, &region, &group, &stream, from_wire(events))
                .await
                .map(|cursor| cursor.map(to_wire))
        }
        _ => Err(AwsError::internal("Unknown internal log operation.")),
    };
    match result {
        Ok(cursor) => (StatusCode::OK, axum::Json(json!({"cursor": cursor}))),
        Err(e) => error_answer(&e),
    }
}

/// Agent presence shared through etcd: an entry per agent, held by the
/// server it polls, bound to that server's lease.
pub struct EtcdPresence {
    set: Arc<LeasedSet>,
    server_id: String,
}

impl EtcdPresence {
    pub fn new(set: Arc<LeasedSet>, server_id: String) -> Arc<Self> {
        Arc::new(EtcdPresence { set, server_id })
    }
}

impl berth_ecs::SharedPresence for EtcdPresence {
    fn mark(&self, instance_arn: &str) {
        let (set, arn, id) = (
            self.set.clone(),
            instance_arn.to_string(),
            self.server_id.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = set.insert(&arn, &id).await {
                tracing::warn!(error = %e, "publishing an agent's presence failed");
            }
        });
    }

    fn unmark(&self, instance_arn: &str) {
        let (set, arn, id) = (
            self.set.clone(),
            instance_arn.to_string(),
            self.server_id.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = set.remove(&arn, &id).await {
                tracing::warn!(error = %e, "withdrawing an agent's presence failed");
            }
        });
    }

    fn connected(&self, instance_arn: &str) -> bool {
        self.set.get(instance_arn).is_some()
    }

    fn held_here(&self, instance_arn: &str) -> bool {
        self.set.get(instance_arn).as_deref() == Some(self.server_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_principals_round_trip() {
        let key = ClusterKey([7; 32]);
        let mac = key.mac(b"body");
        assert!(key.verify(b"body", &mac));
        assert!(!key.verify(b"bodY", &mac));
        assert!(!ClusterKey([8; 32]).verify(b"body", &mac));
        let p = Principal {
            kind: PrincipalKind::AssumedRole,
            arn: "arn:aws:sts::1:assumed-role/r/s".into(),
            user_id: "AROA:s".into(),
            account_id: "000000000001".into(),
            access_key_id: "ASIA1".into(),
        };
        assert_eq!(principal_of(&principal_json(&p)), Some(p));
    }
}
