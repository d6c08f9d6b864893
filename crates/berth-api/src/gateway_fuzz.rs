//! Property tests over raw requests through the whole gateway router: no
//! input, signed or not, may panic it or make it answer 5xx (a stub service
//! that answers every well-formed call keeps 5xx meaningful).

use std::sync::Arc;

use axum::body::Body;
use berth_model::{AwsError, JsonService, Principal, PrincipalKind, QueryService, RequestContext};
use berth_store::{MemoryStore, Store};
use http::Request;
use proptest::prelude::*;
use tower::ServiceExt;

use crate::{GatewayBuilder, ResolvedCredential, StaticCredentials};

const KEY: &str = "AKIAFUZZROOT00000001";
const SECRET: &str = "fuzz-secret-key-00000000000000000000000";

struct JsonEcho;

#[async_trait::async_trait]
impl JsonService for JsonEcho {
    fn target_prefix(&self) -> &'static str {
        "FuzzService_20260101"
    }

    fn signing_name(&self) -> &'static str {
        "fuzz"
    }

    async fn handle(
        &self,
        _ctx: &RequestContext,
        _operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        let value: serde_json::Value = berth_model::json::parse_input(body)?;
        Ok(value.to_string().into_bytes())
    }
}

struct QueryEcho;

#[async_trait::async_trait]
impl QueryService for QueryEcho {
    fn signing_name(&self) -> &'static str {
        "iam"
    }

    fn xml_namespace(&self) -> &'static str {
        "https://iam.amazonaws.com/doc/2010-05-08/"
    }

    async fn handle(
        &self,
        _ctx: &RequestContext,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        if action != "Echo" {
            return Err(AwsError::bad_request("InvalidAction", ""));
        }
        Ok(params
            .iter()
            .map(|(k, v)| format!("<P>{}={}</P>", crate::xml_escape(k), crate::xml_escape(v)))
            .collect())
    }
}

fn router() -> axum::Router {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let credentials = Arc::new(StaticCredentials::new());
    credentials.insert(ResolvedCredential {
        secret_access_key: SECRET.into(),
        session_token: None,
        expires_at: None,
        principal: Principal {
            kind: PrincipalKind::Root,
            arn: "arn:aws:iam::000000000000:root".into(),
            user_id: "000000000000".into(),
            account_id: "000000000000".into(),
            access_key_id: KEY.into(),
        },
    });
    GatewayBuilder::new(store, "fuzz")
        .credentials(credentials)
        .json_service(Arc::new(JsonEcho))
        .query_service(Arc::new(QueryEcho))
        .build()
        .router()
}

/// Sends `request` and returns the status; a panic inside the router fails
/// the test through the runtime.
fn status_of(router: &axum::Router, request: Request<Body>) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime
        .block_on(router.clone().oneshot(request))
        .map(|r| r.status().as_u16())
        .unwrap_or(500)
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("authorization".to_string()),
        Just("x-amz-target".to_string()),
        Just("content-type".to_string()),
        Just("x-amz-date".to_string()),
        Just("x-amz-content-sha256".to_string()),
        Just("x-amz-security-token".to_string()),
        Just("content-length".to_string()),
        "[a-z][a-z0-9-]{0,12}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        Just("AWS4-HMAC-SHA256 Credential=AKIAFUZZROOT00000001/20260101/us-east-1/fuzz/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".to_string()),
        Just("AWS4-HMAC-SHA256 Credential=/////, SignedHeaders=, Signature=".to_string()),
        Just("FuzzService_20260101.Op".to_string()),
        Just("application/x-www-form-urlencoded".to_string()),
        Just("20260101T000000Z".to_string()),
        Just("UNSIGNED-PAYLOAD".to_string()),
    ]
}

fn raw_request() -> impl Strategy<Value = (String, String, Vec<(String, String)>, Vec<u8>)> {
    (
        prop_oneof![Just("POST"), Just("GET"), Just("PUT"), Just("HEAD")].prop_map(String::from),
        prop_oneof![
            Just("/".to_string()),
            Just("/_berth/health".to_string()),
            "/[a-zA-Z0-9%._~/-]{0,30}",
        ],
        proptest::collection::vec((header_name(), header_value()), 0..6),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Unsigned or wrongly signed garbage: never a panic, never a 5xx.
    #[test]
    fn garbage_requests_never_fail_the_server(
        (method, path, headers, body) in raw_request(),
        query in "[a-zA-Z0-9%=&._~-]{0,60}",
    ) {
        let router = router();
        let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
        let mut builder = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .header("host", "localhost");
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let Ok(request) = builder.body(Body::from(body)) else {
            return Ok(());
        };
        let status = status_of(&router, request);
        prop_assert!(status < 500, "status {status} for {uri} {headers:?}");
    }

    /// Correctly signed calls with arbitrary targets and bodies reach the
    /// protocol decoders (JSON and Query): never a panic, never a 5xx.
    #[test]
    fn signed_arbitrary_bodies_never_fail_the_server(
        json in any::<bool>(),
        operation in "[A-Za-z]{0,12}",
        body in proptest::collection::vec(any::<u8>(), 0..300),
        form in "[a-zA-Z0-9%=&.+_-]{0,120}",
    ) {
        let router = router();
        let (service, content_type, target, body) = if json {
            ("fuzz", "application/x-amz-json-1.1", Some(format!("FuzzService_20260101.{operation}")), body)
        } else {
            ("iam", "application/x-www-form-urlencoded; charset=utf-8", None, form.into_bytes())
        };
        let mut headers: Vec<(&str, &str)> = vec![("host", "localhost"), ("content-type", content_type)];
        if let Some(target) = &target {
            headers.push(("x-amz-target", target.as_str()));
        }
        let params = berth_sigv4::SigningParams {
            access_key_id: KEY,
            secret_access_key: SECRET,
            session_token: None,
            region: "us-east-1",
            service,
            now: berth_util::time::now_secs(),
        };
        let extra = berth_sigv4::sign_headers(&params, "POST", "/", "", &headers, &body);
        let mut builder = Request::builder().method("POST").uri("/");
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        for (name, value) in extra {
            builder = builder.header(name, value);
        }
        let request = builder.body(Body::from(body)).expect("a request");
        let status = status_of(&router, request);
        prop_assert!(status < 500, "status {status}");
    }
}
