//! Service-level tests over a real log store: operations as a client calls
//! them (JSON in, JSON out), the agent ingest path and retention.

use std::sync::Arc;

use berth_model::{AwsError, JsonService, Principal, PrincipalKind, RequestContext};
use berth_util::time::now_millis;
use serde_json::{json, Value};

use crate::{AgentEvent, LogsService, Position};

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

struct Fixture {
    dir: tempfile::TempDir,
    logs: Arc<LogsService>,
    ctx: RequestContext,
}

fn ctx() -> RequestContext {
    RequestContext {
        request_id: "r".into(),
        account_id: ACCOUNT.into(),
        region: REGION.into(),
        principal: Principal {
            kind: PrincipalKind::Root,
            arn: format!("arn:aws:iam::{ACCOUNT}:root"),
            user_id: ACCOUNT.into(),
            account_id: ACCOUNT.into(),
            access_key_id: "AKIA".into(),
        },
        source_ip: None,
        secure_transport: false,
        access: Default::default(),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogsService::open(dir.path()).unwrap();
    Fixture {
        dir,
        logs,
        ctx: ctx(),
    }
}

impl Fixture {
    async fn call(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        let out = self
            .logs
            .handle(&self.ctx, op, body.to_string().as_bytes())
            .await?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    async fn ok(&self, op: &str, body: Value) -> Value {
        match self.call(op, body).await {
            Ok(v) => v,
            Err(e) => panic!("{op} failed: {} {}", e.code, e.message),
        }
    }

    async fn err(&self, op: &str, body: Value) -> AwsError {
        match self.call(op, body).await {
            Ok(v) => panic!("{op} should fail, answered {v}"),
            Err(e) => e,
        }
    }

    async fn group_and_stream(&self, group: &str, stream: &str) {
        self.ok("CreateLogGroup", json!({"logGroupName": group}))
            .await;
        self.ok(
            "CreateLogStream",
            json!({"logGroupName": group, "logStreamName": stream}),
        )
        .await;
    }

    async fn put(&self, group: &str, stream: &str, events: &[(i64, &str)]) -> Value {
        let events: Vec<Value> = events
            .iter()
            .map(|(t, m)| json!({"timestamp": t, "message": m}))
            .collect();
        self.ok(
            "PutLogEvents",
            json!({"logGroupName": group, "logStreamName": stream, "logEvents": events}),
        )
        .await
    }

    /// Every message of a stream, reading forward from the head.
    async fn read_all(&self, group: &str, stream: &str, limit: i64) -> Vec<String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10_000 {
            let mut body = json!({"logGroupName": group, "logStreamName": stream,
                                  "startFromHead": true, "limit": limit});
            if let Some(t) = &token {
                body["nextToken"] = json!(t);
            }
            let page = self.ok("GetLogEvents", body).await;
            for e in page["events"].as_array().unwrap() {
                out.push(e["message"].as_str().unwrap().to_string());
            }
            let next = page["nextForwardToken"].as_str().unwrap().to_string();
            if token.as_deref() == Some(next.as_str()) {
                return out;
            }
            token = Some(next);
        }
        panic!("GetLogEvents never returned the same token");
    }
}

#[tokio::test]
async fn groups_are_created_once_listed_by_prefix_and_paginated() {
    let f = fixture();
    for name in ["/ecs/a", "/ecs/b", "/ecs/c", "/other"] {
        f.ok("CreateLogGroup", json!({"logGroupName": name})).await;
    }
    let e = f
        .err("CreateLogGroup", json!({"logGroupName": "/ecs/a"}))
        .await;
    assert_eq!(e.code, "ResourceAlreadyExistsException");
    let e = f
        .err("CreateLogGroup", json!({"logGroupName": "bad name!"}))
        .await;
    assert_eq!(e.code, "InvalidParameterException");

    let page = f
        .ok(
            "DescribeLogGroups",
            json!({"logGroupNamePrefix": "/ecs/", "limit": 2}),
        )
        .await;
    let names: Vec<&str> = page["logGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["logGroupName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/ecs/a", "/ecs/b"]);
    let token = page["nextToken"].as_str().unwrap();
    let page = f
        .ok(
            "DescribeLogGroups",
            json!({"logGroupNamePrefix": "/ecs/", "limit": 2, "nextToken": token}),
        )
        .await;
    assert_eq!(page["logGroups"][0]["logGroupName"], "/ecs/c");
    assert!(page.get("nextToken").is_none_or(Value::is_null));
    assert!(page["logGroups"][0]["arn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:logs:us-east-1:000000000000:log-group:/ecs/c"));

    f.ok("DeleteLogGroup", json!({"logGroupName": "/ecs/b"}))
        .await;
    let e = f
        .err("DeleteLogGroup", json!({"logGroupName": "/ecs/b"}))
        .await;
    assert_eq!(e.code, "ResourceNotFoundException");
}

#[tokio::test]
async fn get_log_events_pages_forward_and_backward_and_repeats_the_token_at_the_end() {
    let f = fixture();
    f.group_and_stream("g", "s").await;
    let now = now_millis();
    let lines: Vec<String> = (0..250).map(|i| format!("line {i}")).collect();
    let events: Vec<(i64, &str)> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (now - 1000 + (i as i64 / 10), l.as_str()))
        .collect();
    f.put("g", "s", &events).await;
    assert_eq!(f.read_all("g", "s", 7).await, lines);

    // Without startFromHead the first page is the newest events; the
    // backward token walks towards the head.
    let page = f
        .ok(
            "GetLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "limit": 100}),
        )
        .await;
    assert_eq!(page["events"][0]["message"], "line 150");
    let back = page["nextBackwardToken"].as_str().unwrap();
    assert!(back.starts_with("b/"));
    let page = f
        .ok(
            "GetLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "limit": 100, "nextToken": back}),
        )
        .await;
    assert_eq!(page["events"][0]["message"], "line 50");
    assert_eq!(page["events"][99]["message"], "line 149");

    // New events show up after the token that reported the end.
    let page = f
        .ok(
            "GetLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "startFromHead": true, "limit": 10000}),
        )
        .await;
    let end = page["nextForwardToken"].as_str().unwrap().to_string();
    f.put("g", "s", &[(now, "later")]).await;
    let page = f
        .ok(
            "GetLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "nextToken": end}),
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["message"], "later");

    let e = f
        .err(
            "GetLogEvents",
            json!({"logGroupName": "g", "logStreamName": "s", "nextToken": "garbage"}),
        )
        .await;
    assert_eq!(e.code, "InvalidParameterException");
}

#[tokio::test]
async fn put_log_events_enforces_aws_batch_rules() {
    let f = fixture();
    f.group_and_stream("g", "s").await;
    let now = now_millis();
    let body =
        |events: Value| json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events});

    let e = f
        .err(
            "PutLogEvents",
            body(
                json!([{"timestamp": now, "message": "b"}, {"timestamp": now - 5, "message": "a"}]),
            ),
        )
        .await;
    assert_eq!(e.code, "InvalidParameterException");
    assert!(e.message.contains("chronological"), "{}", e.message);

    let many: Vec<Value> = (0..10_001)
        .map(|_| json!({"timestamp": now, "message": "x"}))
        .collect();
    let e = f.err("PutLogEvents", body(json!(many))).await;
    assert_eq!(e.code, "InvalidParameterException");

    let e = f
        .err(
            "PutLogEvents",
            json!({"logGroupName": "g", "logStreamName": "nope",
                                    "logEvents": [{"timestamp": now, "message": "x"}]}),
        )
        .await;
    assert_eq!(e.code, "ResourceNotFoundException");
    assert!(f.read_all("g", "s", 100).await.is_empty());

    let day = 24 * 60 * 60 * 1000;
    let out = f
        .ok(
            "PutLogEvents",
            body(json!([
                {"timestamp": now - 15 * day, "message": "too old"},
                {"timestamp": now - 15 * day + 1000, "message": "too old too"}
            ])),
        )
        .await;
    assert_eq!(out["rejectedLogEventsInfo"]["tooOldLogEventEndIndex"], 1);
    let out = f
        .ok(
            "PutLogEvents",
            body(json!([
                {"timestamp": now - 1, "message": "kept"},
                {"timestamp": now + 3 * 60 * 60 * 1000, "message": "too new"}
            ])),
        )
        .await;
    assert_eq!(out["rejectedLogEventsInfo"]["tooNewLogEventStartIndex"], 1);
    assert!(out["rejectedLogEventsInfo"]
        .get("tooOldLogEventEndIndex")
        .is_none());
    assert_eq!(f.read_all("g", "s", 100).await, ["kept"]);
}

#[tokio::test]
async fn filter_log_events_applies_terms_exclusions_and_json_patterns() {
    let f = fixture();
    f.group_and_stream("g", "a").await;
    f.ok(
        "CreateLogStream",
        json!({"logGroupName": "g", "logStreamName": "b"}),
    )
    .await;
    let now = now_millis();
    f.put(
        "g",
        "a",
        &[
            (now - 50, "ERROR disk full"),
            (now - 40, "ERROR timeout talking to db"),
            (now - 30, "INFO all good"),
        ],
    )
    .await;
    f.put(
        "g",
        "b",
        &[
            (now - 45, r#"{"level":"error","msg":"boom"}"#),
            (now - 35, r#"{"level":"info","msg":"fine"}"#),
            (now - 20, "ERROR again"),
        ],
    )
    .await;
    let messages = |v: &Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let out = f
        .ok(
            "FilterLogEvents",
            json!({"logGroupName": "g", "filterPattern": "\"ERROR\" -timeout"}),
        )
        .await;
    assert_eq!(messages(&out), ["ERROR disk full", "ERROR again"]);
    let out = f
        .ok(
            "FilterLogEvents",
            json!({"logGroupName": "g", "filterPattern": "{ $.level = \"error\" }"}),
        )
        .await;
    assert_eq!(messages(&out), [r#"{"level":"error","msg":"boom"}"#]);
    let out = f
        .ok(
            "FilterLogEvents",
            json!({"logGroupName": "g", "logStreamNames": ["a"], "startTime": now - 45}),
        )
        .await;
    assert_eq!(
        messages(&out),
        ["ERROR timeout talking to db", "INFO all good"]
    );
    assert_eq!(out["events"][0]["logStreamName"], "a");
    let e = f
        .err(
            "FilterLogEvents",
            json!({"logGroupName": "g", "filterPattern": "{ $.level = "}),
        )
        .await;
    assert_eq!(e.code, "InvalidParameterException");
}

#[tokio::test]
async fn retention_compaction_removes_only_expired_events() {
    let f = fixture();
    f.group_and_stream("g", "s").await;
    let now = now_millis();
    let day = 24 * 60 * 60 * 1000;
    f.put(
        "g",
        "s",
        &[(now - 3 * day, "old"), (now - 2 * day, "older-ish")],
    )
    .await;
    f.put("g", "s", &[(now - 1000, "fresh")]).await;
    assert_eq!(f.logs.compact_once(now).unwrap(), 0);
    let e = f
        .err(
            "PutRetentionPolicy",
            json!({"logGroupName": "g", "retentionInDays": 2}),
        )
        .await;
    assert_eq!(e.code, "InvalidParameterException");
    f.ok(
        "PutRetentionPolicy",
        json!({"logGroupName": "g", "retentionInDays": 1}),
    )
    .await;
    let described = f.ok("DescribeLogGroups", json!({})).await;
    assert_eq!(described["logGroups"][0]["retentionInDays"], 1);
    assert_eq!(f.logs.compact_once(now).unwrap(), 2);
    assert_eq!(f.read_all("g", "s", 100).await, ["fresh"]);
}

fn line(nanos: i64, seq: u32, message: &str) -> AgentEvent {
    AgentEvent {
        timestamp_ms: nanos / 1_000_000,
        message: message.to_string(),
        position: Position { nanos, seq },
    }
}

#[tokio::test]
async fn ingest_deduplicates_resends_and_survives_a_restart() {
    let f = fixture();
    let e = f
        .logs
        .ensure_stream(ACCOUNT, REGION, "/ecs/app", "ecs/app/1", false)
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceNotFoundException");
    f.logs
        .ensure_stream(ACCOUNT, REGION, "/ecs/app", "ecs/app/1", true)
        .await
        .unwrap();
    assert_eq!(
        f.logs.cursor(ACCOUNT, REGION, "/ecs/app", "ecs/app/1"),
        None
    );
    let base = now_millis() * 1_000_000;
    let first: Vec<AgentEvent> = (0..5)
        .map(|i| line(base + i, 0, &format!("n{i}")))
        .collect();
    let cursor = f
        .logs
        .ingest(ACCOUNT, REGION, "/ecs/app", "ecs/app/1", first.clone())
        .await
        .unwrap();
    assert_eq!(
        cursor,
        Some(Position {
            nanos: base + 4,
            seq: 0
        })
    );
    // The agent re-sends an overlapping batch after a crash.
    let mut second = first[3..].to_vec();
    second.extend((5..8).map(|i| line(base + i, 0, &format!("n{i}"))));
    f.logs
        .ingest(ACCOUNT, REGION, "/ecs/app", "ecs/app/1", second.clone())
        .await
        .unwrap();

    // The server restarts: the cursor and events are durable.
    let dir = f.dir;
    drop(f.logs);
    let f = Fixture {
        logs: LogsService::open(dir.path()).unwrap(),
        dir,
        ctx: ctx(),
    };
    assert_eq!(
        f.logs.cursor(ACCOUNT, REGION, "/ecs/app", "ecs/app/1"),
        Some(Position {
            nanos: base + 7,
            seq: 0
        })
    );
    f.logs
        .ingest(ACCOUNT, REGION, "/ecs/app", "ecs/app/1", second)
        .await
        .unwrap();
    let expected: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    assert_eq!(f.read_all("/ecs/app", "ecs/app/1", 3).await, expected);
}
