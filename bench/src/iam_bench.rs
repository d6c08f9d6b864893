//! Authorizations per second on one core for a principal with 20 policies:
//! the policy engine alone (`berth-policy`'s `evaluate`), and the gateway's
//! whole check (`IamAuthorizer`: the caller's policies from the store's
//! in-memory view and the parsed-policy cache, then `evaluate`).
//!
//!   cargo run --release -p berth-bench --bin iam-bench -- [--seconds N]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use berth_model::authz::{Authorizer, Requirement};
use berth_model::{Principal, PrincipalKind, QueryService, RequestContext};
use berth_policy::{evaluate, Context, Policy, PrincipalRef, Request, Timestamp};
use berth_store::{SqliteOptions, SqliteStore, Store};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
}

const ACCOUNT: &str = "123456789012";

/// Twenty policies of the shape people write: a few statements each, action
/// and resource wildcards, conditions, one explicit deny that does not apply.
fn policy_documents() -> Vec<String> {
    let mut docs = Vec::new();
    for i in 0..20 {
        let doc = match i % 5 {
            0 => format!(
                r#"{{"Version":"2012-10-17","Statement":[
                  {{"Sid":"Read{i}","Effect":"Allow","Action":["ecs:Describe*","ecs:List*"],
                    "Resource":"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/team-{i}-*"}},
                  {{"Effect":"Allow","Action":"logs:GetLogEvents",
                    "Resource":"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/ecs/team-{i}/*"}}]}}"#
            ),
            1 => format!(
                r#"{{"Version":"2012-10-17","Statement":[
                  {{"Effect":"Allow","Action":"secretsmanager:GetSecretValue",
                    "Resource":"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:team-{i}/*",
                    "Condition":{{"StringEquals":{{"aws:ResourceTag/team":"t{i}"}}}}}}]}}"#
            ),
            2 => format!(
                r#"{{"Version":"2012-10-17","Statement":[
                  {{"Effect":"Deny","NotAction":["ecs:*","logs:*","ssm:Get*"],
                    "Resource":"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/locked-{i}/*"}}]}}"#
            ),
            3 => format!(
                r#"{{"Version":"2012-10-17","Statement":[
                  {{"Effect":"Allow","Action":["ssm:GetParameter*"],
                    "Resource":"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/${{aws:username}}/{i}/*"}},
                  {{"Effect":"Allow","Action":"ecr:BatchGetImage",
                    "Resource":"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team-{i}",
                    "Condition":{{"Bool":{{"aws:SecureTransport":"true"}}}}}}]}}"#
            ),
            _ => format!(
                r#"{{"Version":"2012-10-17","Statement":[
                  {{"Effect":"Allow","Action":["ecs:RunTask","ecs:StopTask"],
                    "Resource":"*","Condition":{{"ArnEquals":{{"ecs:cluster":
                    "arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/team-{i}"}}}}}}]}}"#
            ),
        };
        docs.push(doc);
    }
    docs
}

/// Calls `f` on this thread for `seconds`; returns calls per second.
fn measure(seconds: u64, mut f: impl FnMut() -> bool) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut calls = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            if !f() {
                bail!("a request the policies allow was refused");
            }
        }
        calls += 1000;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let docs = policy_documents();
    let resource = format!("arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/team-15-web");
    // The allowing statement is in the last policy: every policy is read.
    let last = docs.len() - 5;
    let mut documents = docs.clone();
    documents.swap(0, last);

    // 1. The engine alone.
    let policies: Vec<Policy> = documents
        .iter()
        .map(|d| Policy::parse_identity(d))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let refs: Vec<&Policy> = policies.iter().collect();
    let alice = PrincipalRef::user(ACCOUNT, "/", "alice", "AIDAEXAMPLEALICE0000");
    let mut context = Context::new();
    context.set_current_time(Timestamp::from_epoch_seconds(1_800_000_000));
    let engine = measure(args.seconds, || {
        let request = Request::new(&alice, "ecs:DescribeClusters", &resource, &context);
        evaluate(&refs, None, &request).is_allowed()
    })?;

    // 2. The gateway's check over a real store.
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(dir.path().join("store.db")))
            .context("opening the store")?,
    );
    let iam = berth_iam::Iam::new(store);
    let service = iam.iam_service();
    let root = RequestContext {
        request_id: "bench".into(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        principal: Principal {
            kind: PrincipalKind::Root,
            arn: format!("arn:aws:iam::{ACCOUNT}:root"),
            user_id: ACCOUNT.into(),
            account_id: ACCOUNT.into(),
            access_key_id: "AKIAROOT".into(),
        },
        source_ip: None,
        secure_transport: false,
        access: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let user_id = runtime.block_on(async {
        let call = |action: &'static str, params: Vec<(String, String)>| {
            let service = service.clone();
            let root = root.clone();
            async move {
                service
                    .handle(&root, action, &params)
                    .await
                    .map_err(|e| anyhow::anyhow!("{action}: {} {}", e.code, e.message))
            }
        };
        let created = call("CreateUser", query(&[("UserName", "alice")])).await?;
        // Half managed (attached), half inline, as accounts tend to have.
        for (i, doc) in documents.iter().enumerate() {
            if i % 2 == 0 {
                let name = format!("p{i}");
                call(
                    "CreatePolicy",
                    query(&[("PolicyName", &name), ("PolicyDocument", doc)]),
                )
                .await?;
                let arn = format!("arn:aws:iam::{ACCOUNT}:policy/{name}");
                call(
                    "AttachUserPolicy",
                    query(&[("UserName", "alice"), ("PolicyArn", &arn)]),
                )
                .await?;
            } else {
                call(
                    "PutUserPolicy",
                    query(&[
                        ("UserName", "alice"),
                        ("PolicyName", &format!("inline{i}")),
                        ("PolicyDocument", doc),
                    ]),
                )
                .await?;
            }
        }
        let id = created
            .split("<UserId>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap_or_default()
            .to_string();
        Ok::<_, anyhow::Error>(id)
    })?;
    let authorizer = berth_iam::IamAuthorizer::new(iam.clone());
    let ctx = RequestContext {
        principal: Principal {
            kind: PrincipalKind::User,
            arn: format!("arn:aws:iam::{ACCOUNT}:user/alice"),
            user_id,
            account_id: ACCOUNT.into(),
            access_key_id: "AKIAALICE".into(),
        },
        source_ip: None,
        secure_transport: false,
        access: Default::default(),
        ..root.clone()
    };
    let requirements = [Requirement::new("ecs:DescribeClusters", resource.clone())];
    let gateway = measure(args.seconds, || {
        authorizer.authorize(&ctx, &requirements).is_ok()
    })?;

    println!("policies per principal          20 (10 attached, 10 inline)");
    println!("engine authorizations/s (1 core)  {engine:.0}");
    println!("engine ns per authorization       {:.0}", 1e9 / engine);
    println!("gateway check/s (1 core)          {gateway:.0}");
    println!("gateway ns per check              {:.0}", 1e9 / gateway);
    Ok(())
}
