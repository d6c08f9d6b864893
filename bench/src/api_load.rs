//! Drives one AWS operation (JSON 1.1 with `X-Amz-Target`, or the Query
//! protocol's form-encoded `Action=…&Version=…` body) at a fixed number of
//! concurrent clients for a fixed time and prints throughput and latency
//! percentiles as one JSON line. Every request carries a valid SigV4
//! signature; identical requests reuse their signature for a few seconds
//! (well inside the 15-minute skew), so the generator spends its CPU on HTTP,
//! not on HMAC. A body with the `{n}` placeholder differs on every request
//! (a unique name per call for writes) and is signed for each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_client::{json_call_headers, Credentials, Scope};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::RwLock;

#[derive(Parser, Debug, Clone)]
#[command(about = "Load-test one AWS JSON 1.1 or Query operation")]
struct Args {
    /// Endpoint, e.g. http://127.0.0.1:4566
    #[arg(long)]
    endpoint: String,
    /// The wire protocol: `json` (AWS JSON 1.1, needs --target) or `query`
    /// (AWS Query: --body is the form-encoded `Action=…&Version=…&…`, sent as
    /// `application/x-www-form-urlencoded`; --service names the signing name).
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    protocol: Protocol,
    /// X-Amz-Target (JSON 1.1), e.g.
    /// AmazonEC2ContainerServiceV20141113.DescribeClusters
    #[arg(long, default_value = "")]
    target: String,
    /// The body: JSON, or a form-encoded Query body (values already
    /// encoded). `{client}` is replaced by the client's number and `{n}` by a
    /// counter shared by all clients, one value per request.
    #[arg(long, default_value = "{}")]
    body: String,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of warm-up (requests sent but not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value = "ecs")]
    service: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY")]
    secret_access_key: String,
    /// Label printed with the result.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Json,
    Query,
}

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Every header of a signed request with `body`: `host`, `content-type`
/// (and `x-amz-target` for JSON 1.1), then the signature's.
fn signed_headers(args: &Args, host: &str, body: &[u8]) -> Vec<(String, String)> {
    let now = berth_util::time::now_secs();
    match args.protocol {
        Protocol::Json => json_call_headers(
            &Credentials {
                access_key_id: args.access_key_id.clone(),
                secret_access_key: args.secret_access_key.clone(),
            },
            Scope {
                host,
                region: &args.region,
                service: &args.service,
            },
            &args.target,
            body,
            now,
        ),
        Protocol::Query => {
            let params = berth_sigv4::SigningParams {
                access_key_id: &args.access_key_id,
                secret_access_key: &args.secret_access_key,
                session_token: None,
                region: &args.region,
                service: &args.service,
                now,
            };
            let headers = [("host", host), ("content-type", FORM_CONTENT_TYPE)];
            let mut all: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            all.extend(berth_sigv4::sign_headers(
                &params, "POST", "/", "", &headers, body,
            ));
            all
        }
    }
}

/// A signed request, re-signed when it gets old.
struct SignedRequest {
    signed_at: Instant,
    headers: Vec<(String, String)>,
}

const RESIGN_AFTER: Duration = Duration::from_secs(10);

struct Worker {
    args: Arc<Args>,
    host: String,
    /// The body with `{client}` replaced; still holds `{n}` when `varies`.
    body: Bytes,
    template: String,
    varies: bool,
    counter: Arc<AtomicU64>,
    signed: RwLock<SignedRequest>,
}

impl Worker {
    fn sign(&self) -> SignedRequest {
        SignedRequest {
            signed_at: Instant::now(),
            headers: signed_headers(&self.args, &self.host, &self.body),
        }
    }

    /// The next request's headers and body: the same body under a reused
    /// signature, or, with `{n}`, a fresh body signed for itself.
    async fn next(&self) -> (Vec<(String, String)>, Bytes) {
        if self.varies {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let body = Bytes::from(self.template.replace("{n}", &n.to_string()));
            return (signed_headers(&self.args, &self.host, &body), body);
        }
        {
            let signed = self.signed.read().await;
            if signed.signed_at.elapsed() < RESIGN_AFTER {
                return (signed.headers.clone(), self.body.clone());
            }
        }
        let fresh = self.sign();
        let headers = fresh.headers.clone();
        *self.signed.write().await = fresh;
        (headers, self.body.clone())
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if args.protocol == Protocol::Json && args.target.is_empty() {
        bail!("--target is required with --protocol json");
    }
    let counter = Arc::new(AtomicU64::new(0));
    let uri: hyper::Uri = args.endpoint.parse().context("--endpoint")?;
    let host = uri
        .authority()
        .map(|a| a.to_string())
        .context("--endpoint needs a host")?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.clients)
        .build_http();

    let warmup = Duration::from_secs_f64(args.warmup);
    let measure = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..args.clients {
        let template = args.body.replace("{client}", &n.to_string());
        let worker = Arc::new(Worker {
            args: args.clone(),
            host: host.clone(),
            body: Bytes::from(template.clone()),
            varies: template.contains("{n}"),
            template,
            counter: counter.clone(),
            signed: RwLock::new(SignedRequest {
                signed_at: Instant::now() - RESIGN_AFTER * 2,
                headers: Vec::new(),
            }),
        });
        let client = client.clone();
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            loop {
                let elapsed = started.elapsed();
                if elapsed >= warmup + measure {
                    break;
                }
                let mut request = hyper::Request::post(uri.clone());
                let (headers, body) = worker.next().await;
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let request = match request.body(Full::new(body)) {
                    Ok(r) => r,
                    Err(e) => return Err(anyhow::anyhow!("building request: {e}")),
                };
                let sent = Instant::now();
                let outcome = match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.into_body().collect().await.map(|b| b.to_bytes());
                        match body {
                            Ok(_) if status.is_success() => Ok(()),
                            Ok(b) => Err(format!("{status}: {}", String::from_utf8_lossy(&b))),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                let took = sent.elapsed();
                if sent.duration_since(started) < warmup {
                    continue;
                }
                match outcome {
                    Ok(()) => latencies_us.push(took.as_micros().min(u32::MAX as u128) as u32),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            Ok::<_, anyhow::Error>((latencies_us, errors, first_error))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (latencies, e, first) = task.await??;
        all.extend(latencies);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    if all.is_empty() {
        bail!(
            "{}: no request succeeded ({errors} errors; first: {})",
            args.label,
            first_error.unwrap_or_default()
        );
    }
    all.sort_unstable();
    let rps = all.len() as f64 / measure.as_secs_f64();
    println!(
        "{{\"label\":\"{}\",\"clients\":{},\"requests\":{},\"errors\":{},\"rps\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        args.label,
        args.clients,
        all.len(),
        errors,
        rps,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
    );
    if let Some(e) = first_error {
        eprintln!("{}: first error: {e}", args.label);
    }
    Ok(())
}
