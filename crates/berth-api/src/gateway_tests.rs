//! The gateway's Query protocol path, end to end through the router.

use std::sync::Arc;

use axum::body::Body;
use berth_model::{AwsError, Principal, PrincipalKind, QueryService, RequestContext};
use berth_store::{SqliteOptions, SqliteStore, Store};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::{GatewayBuilder, ResolvedCredential, StaticCredentials};

const KEY: &str = "AKIAGATEWAYTEST00001";
const SECRET: &str = "gateway-test-secret-key-0000000000000000";
const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const EC2_NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

struct Stub {
    name: &'static str,
    namespace: &'static str,
}

#[async_trait::async_trait]
impl QueryService for Stub {
    fn signing_name(&self) -> &'static str {
        self.name
    }

    fn xml_namespace(&self) -> &'static str {
        self.namespace
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        match action {
            "Echo" => {
                let mut out = format!(
                    "<Service>{}</Service><Caller>{}</Caller>",
                    self.name, ctx.principal.arn
                );
                for (k, v) in params {
                    out.push_str(&format!(
                        "<P>{}={}</P>",
                        crate::xml_escape(k),
                        crate::xml_escape(v)
                    ));
                }
                Ok(out)
            }
            "Nothing" => Ok(String::new()),
            "Boom" => Err(AwsError::internal("it broke")),
            "Missing" => Err(AwsError::new(
                404,
                "NoSuchEntity",
                "The user with name <b> cannot be found.",
            )),
            "Panic" => panic!("handler bug"),
            _ => Err(AwsError::bad_request("InvalidAction", "")),
        }
    }
}

/// A service speaking EC2's dialect of Query.
struct Ec2Stub;

#[async_trait::async_trait]
impl QueryService for Ec2Stub {
    fn signing_name(&self) -> &'static str {
        "ec2"
    }

    fn xml_namespace(&self) -> &'static str {
        EC2_NS
    }

    fn ec2_protocol(&self) -> bool {
        true
    }

    async fn handle(
        &self,
        _ctx: &RequestContext,
        action: &str,
        _params: &[(String, String)],
    ) -> Result<String, AwsError> {
        match action {
            "DescribeVpcs" => Ok("<vpcSet><item><vpcId>vpc-1</vpcId></item></vpcSet>".into()),
            "DeleteVpc" => Err(AwsError::bad_request(
                "InvalidVpcID.NotFound",
                "The vpc ID 'vpc-1' does not exist",
            )),
            _ => Err(AwsError::bad_request("InvalidAction", "")),
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    router: axum::Router,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
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
    let gateway = GatewayBuilder::new(store, "test")
        .credentials(credentials)
        .query_service(Arc::new(Stub {
            name: "iam",
            namespace: IAM_NS,
        }))
        .query_service(Arc::new(Stub {
            name: "sts",
            namespace: STS_NS,
        }))
        .query_service(Arc::new(Ec2Stub))
        .build();
    Fixture {
        router: gateway.router(),
        _dir: dir,
    }
}

fn signed(
    service: &str,
    secret: &str,
    key: &str,
    body: &str,
    target: Option<&str>,
) -> Request<Body> {
    let now = berth_util::time::now_secs();
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let mut headers = vec![("host", "localhost:4566"), ("content-type", content_type)];
    if let Some(target) = target {
        headers.push(("x-amz-target", target));
    }
    let params = berth_sigv4::SigningParams {
        access_key_id: key,
        secret_access_key: secret,
        session_token: None,
        region: "us-east-1",
        service,
        now,
    };
    let extra = berth_sigv4::sign_headers(&params, "POST", "/", "", &headers, body.as_bytes());
    let mut builder = Request::builder().method("POST").uri("/");
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

async fn send(f: &Fixture, request: Request<Body>) -> (StatusCode, String, String) {
    let response = f.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn request_id(body: &str) -> &str {
    let start = body.find("<RequestId>").unwrap() + "<RequestId>".len();
    let end = body.find("</RequestId>").unwrap();
    &body[start..end]
}

#[tokio::test]
async fn query_success_wraps_the_result() {
    let f = fixture();
    let body = "Action=Echo&Version=2010-05-08&UserName=a%26b&Tags.member.1.Key=k";
    let (status, content_type, out) = send(&f, signed("iam", SECRET, KEY, body, None)).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(content_type, "text/xml");
    let id = request_id(&out).to_string();
    assert_eq!(
        out,
        format!(
            "<EchoResponse xmlns=\"{IAM_NS}\"><EchoResult><Service>iam</Service><Caller>arn:aws:iam::000000000000:root</Caller><P>UserName=a&amp;b</P><P>Tags.member.1.Key=k</P></EchoResult><ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata></EchoResponse>"
        )
    );

    // The credential scope picks the service.
    let (status, _, out) = send(
        &f,
        signed("sts", SECRET, KEY, "Action=Echo&Version=2011-06-15", None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        out.starts_with(&format!(
            "<EchoResponse xmlns=\"{STS_NS}\"><EchoResult><Service>sts</Service>"
        )),
        "{out}"
    );

    // No result members: no Result element.
    let (status, _, out) = send(
        &f,
        signed(
            "iam",
            SECRET,
            KEY,
            "Action=Nothing&Version=2010-05-08",
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let id = request_id(&out).to_string();
    assert_eq!(
        out,
        format!("<NothingResponse xmlns=\"{IAM_NS}\"><ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata></NothingResponse>")
    );
}

#[tokio::test]
async fn query_errors_are_error_responses() {
    let f = fixture();
    let (status, content_type, out) = send(
        &f,
        signed("iam", SECRET, KEY, "Action=Frob&Version=2010-05-08", None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type, "text/xml");
    let id = request_id(&out).to_string();
    assert_eq!(
        out,
        format!("<ErrorResponse xmlns=\"{IAM_NS}\"><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>Could not find operation Frob for version 2010-05-08</Message></Error><RequestId>{id}</RequestId></ErrorResponse>")
    );

    let (status, _, out) = send(&f, signed("iam", SECRET, KEY, "Action=Missing", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(out.contains("<Code>NoSuchEntity</Code><Message>The user with name &lt;b&gt; cannot be found.</Message>"), "{out}");

    let (status, _, out) = send(&f, signed("iam", SECRET, KEY, "Version=2010-05-08", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(out.contains("<Code>MissingAction</Code>"), "{out}");

    let (status, _, out) = send(
        &f,
        signed("iam", SECRET, KEY, "Action=Bad%3Cname&Version=1", None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(out.contains("<Code>InvalidAction</Code><Message>Could not find operation Bad&lt;name for version 1</Message>"), "{out}");

    for action in ["Boom", "Panic"] {
        let (status, _, out) = send(
            &f,
            signed("sts", SECRET, KEY, &format!("Action={action}"), None),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            out.starts_with(&format!(
                "<ErrorResponse xmlns=\"{STS_NS}\"><Error><Type>Receiver</Type>"
            )),
            "{out}"
        );
    }

    // A signing name no Query service has.
    let (status, _, out) = send(&f, signed("ecs", SECRET, KEY, "Action=Echo", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(out.contains("<Code>InvalidAction</Code>"), "{out}");
}

#[tokio::test]
async fn query_auth_errors_use_query_codes() {
    let f = fixture();
    let (status, _, out) = send(&f, signed("sts", "wrong", KEY, "Action=Echo", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        out.starts_with(&format!("<ErrorResponse xmlns=\"{STS_NS}\"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code>")),
        "{out}"
    );
    let (status, _, out) = send(
        &f,
        signed("iam", SECRET, "AKIAUNKNOWNKEY000000", "Action=Echo", None),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(out.contains("<Code>InvalidClientTokenId</Code>"), "{out}");

    // Unsigned.
    let request = Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("Action=Echo"))
        .unwrap();
    let (status, content_type, out) = send(&f, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(content_type, "text/xml");
    assert!(
        out.contains("<Code>MissingAuthenticationToken</Code>"),
        "{out}"
    );
}

#[tokio::test]
async fn a_target_header_keeps_the_json_protocol() {
    let f = fixture();
    let (status, content_type, out) = send(
        &f,
        signed("iam", SECRET, KEY, "Action=Echo", Some("Nope.Echo")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type, "application/x-amz-json-1.1");
    assert!(out.contains("UnknownOperationException"), "{out}");
}

/// The text between `<{name}>` and `</{name}>`.
fn element<'a>(body: &'a str, name: &str) -> &'a str {
    let open = format!("<{name}>");
    let start = body.find(&open).unwrap() + open.len();
    let end = body.find(&format!("</{name}>")).unwrap();
    &body[start..end]
}

#[tokio::test]
async fn ec2_services_answer_in_ec2_shapes() {
    let f = fixture();
    let (status, content_type, out) = send(
        &f,
        signed(
            "ec2",
            SECRET,
            KEY,
            "Action=DescribeVpcs&Version=2016-11-15",
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(content_type, "text/xml");
    let id = element(&out, "requestId").to_string();
    assert_eq!(
        out,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeVpcsResponse xmlns=\"{EC2_NS}\"><requestId>{id}</requestId><vpcSet><item><vpcId>vpc-1</vpcId></item></vpcSet></DescribeVpcsResponse>")
    );

    let (status, _, out) = send(
        &f,
        signed(
            "ec2",
            SECRET,
            KEY,
            "Action=DeleteVpc&Version=2016-11-15",
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let id = element(&out, "RequestID").to_string();
    assert_eq!(
        out,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidVpcID.NotFound</Code><Message>The vpc ID &apos;vpc-1&apos; does not exist</Message></Error></Errors><RequestID>{id}</RequestID></Response>")
    );

    // Unknown actions are worded as EC2 does.
    let (status, _, out) = send(
        &f,
        signed("ec2", SECRET, KEY, "Action=Frob&Version=2016-11-15", None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(out.contains("<Code>InvalidAction</Code><Message>The action Frob is not valid for this web service.</Message>"), "{out}");

    // Failed authentication is rendered in the scope's service's dialect.
    let (status, _, out) = send(&f, signed("ec2", "wrong", KEY, "Action=DescribeVpcs", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        out.contains("<Response><Errors><Error><Code>SignatureDoesNotMatch</Code>"),
        "{out}"
    );
}

/// An admin endpoint that echoes who called it and with what.
struct EchoEndpoint;

impl crate::AdminEndpoint for EchoEndpoint {
    fn path(&self) -> &'static str {
        "/_berth/echo"
    }

    fn signing_name(&self) -> &'static str {
        "ecs"
    }

    fn action(&self) -> &'static str {
        "berth:Echo"
    }

    fn get(
        &self,
        ctx: &RequestContext,
        query: &[(String, String)],
    ) -> Result<serde_json::Value, AwsError> {
        if query.iter().any(|(k, _)| k == "fail") {
            return Err(AwsError::bad_request("ValidationException", "failing"));
        }
        Ok(serde_json::json!({
            "caller": ctx.principal.arn,
            "account": ctx.account_id,
            "region": ctx.region,
            "query": query,
        }))
    }
}

const AGENT_KEY: &str = "AKIAGATEWAYAGENT0001";

fn admin_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
    let credentials = Arc::new(StaticCredentials::new());
    for (kind, key, arn) in [
        (PrincipalKind::Root, KEY, "arn:aws:iam::000000000000:root"),
        (
            PrincipalKind::Agent,
            AGENT_KEY,
            "arn:aws:sts::000000000000:assumed-role/agent/i-1",
        ),
    ] {
        credentials.insert(ResolvedCredential {
            secret_access_key: SECRET.into(),
            session_token: None,
            expires_at: None,
            principal: Principal {
                kind,
                arn: arn.into(),
                user_id: "000000000000".into(),
                account_id: "000000000000".into(),
                access_key_id: key.into(),
            },
        });
    }
    let gateway = GatewayBuilder::new(store, "test")
        .credentials(credentials)
        .admin_endpoint(Arc::new(EchoEndpoint))
        .build();
    Fixture {
        router: gateway.router(),
        _dir: dir,
    }
}

fn signed_get(service: &str, key: &str, path: &str, query: &str) -> Request<Body> {
    let now = berth_util::time::now_secs();
    let headers = [("host", "localhost:4566")];
    let params = berth_sigv4::SigningParams {
        access_key_id: key,
        secret_access_key: SECRET,
        session_token: None,
        region: "eu-west-1",
        service,
        now,
    };
    let extra = berth_sigv4::sign_headers(&params, "GET", path, query, &headers, b"");
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut builder = Request::builder().method("GET").uri(uri);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn admin_endpoints_are_signed_and_authorized() {
    let f = admin_fixture();
    let (status, content_type, out) = send(
        &f,
        signed_get("ecs", KEY, "/_berth/echo", "cluster=demo&tag=team%3Da"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["caller"], "arn:aws:iam::000000000000:root");
    assert_eq!(v["region"], "eu-west-1");
    assert_eq!(
        v["query"],
        serde_json::json!([["cluster", "demo"], ["tag", "team=a"]])
    );

    // Unsigned.
    let unsigned = Request::builder()
        .method("GET")
        .uri("/_berth/echo")
        .body(Body::empty())
        .unwrap();
    let (status, _, out) = send(&f, unsigned).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{out}");
    assert!(out.contains("__type"), "{out}");

    // Scoped to another service.
    let (status, _, out) = send(&f, signed_get("iam", KEY, "/_berth/echo", "")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(out.contains("InvalidSignatureException"), "{out}");

    // An agent's credential may not read it.
    let (status, _, out) = send(&f, signed_get("ecs", AGENT_KEY, "/_berth/echo", "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        out.contains("AccessDeniedException") && out.contains("berth:Echo"),
        "{out}"
    );

    // Handler errors render as JSON 1.1 errors.
    let (status, _, out) = send(&f, signed_get("ecs", KEY, "/_berth/echo", "fail=1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(out.contains("ValidationException"), "{out}");
}
