//! Pushes and pulls through the OCI distribution API with N concurrent
//! clients and prints throughput as one JSON line: a large image (L layers
//! adding up to the given MiB) and many small blobs, each pushed then pulled.
//!
//! Pushes go the way `docker push` does (POST, one PATCH with the whole blob,
//! PUT ?digest=) for layers, and POST + PUT ?digest= with the body for small
//! blobs; pulls stream and count bytes without hashing, so the client spends
//! its CPU on HTTP and the servers' figures are what is measured. The data is
//! generated and hashed before the clock starts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

#[derive(Parser, Debug, Clone)]
#[command(about = "Push and pull load against an OCI distribution registry")]
struct Args {
    /// Registry endpoint, e.g. http://127.0.0.1:4566
    #[arg(long)]
    endpoint: String,
    /// Repository for the large image.
    #[arg(long, default_value = "bench/big")]
    big_repo: String,
    /// Repository for the small blobs.
    #[arg(long, default_value = "bench/small")]
    small_repo: String,
    /// Password for Basic auth as user AWS (an ECR token); none when omitted.
    #[arg(long, env = "REGISTRY_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Total size of the large image's layers, MiB.
    #[arg(long, default_value_t = 1024)]
    image_mib: usize,
    #[arg(long, default_value_t = 10)]
    layers: usize,
    #[arg(long, default_value_t = 1000)]
    small_blobs: usize,
    /// Size of each small blob, bytes.
    #[arg(long, default_value_t = 4096)]
    small_size: usize,
    /// Label printed with the result.
    #[arg(long, default_value = "")]
    label: String,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Ctx {
    client: HttpClient,
    endpoint: String,
    auth: Option<String>,
}

struct Blob {
    data: Bytes,
    digest: String,
}

/// Deterministic incompressible bytes (xorshift64*), so every run pushes the
/// same content and no layer deduplicates with another.
fn generate(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn blob(data: Bytes) -> Blob {
    let digest = format!("sha256:{}", hex(&Sha256::digest(&data)));
    Blob { data, digest }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Ctx {
    fn url(&self, path_or_location: &str) -> String {
        if path_or_location.starts_with("http") {
            path_or_location.to_string()
        } else {
            format!("{}{path_or_location}", self.endpoint)
        }
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> anyhow::Result<(http::StatusCode, http::HeaderMap, u64)> {
        let mut request = hyper::Request::builder().method(method).uri(self.url(url));
        if let Some(auth) = &self.auth {
            request = request.header("authorization", auth);
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let request = request.body(Full::new(body))?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                received += data.len() as u64;
            }
        }
        Ok((status, headers, received))
    }

    fn location(headers: &http::HeaderMap) -> anyhow::Result<String> {
        Ok(headers
            .get("location")
            .context("no Location header")?
            .to_str()?
            .to_string())
    }

    fn with_digest(location: &str, digest: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    }

    /// POST, PATCH with the whole blob, PUT ?digest= (what docker does).
    async fn push_chunked(&self, repo: &str, blob: &Blob) -> anyhow::Result<()> {
        let (status, headers, _) = self
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                Bytes::new(),
                None,
            )
            .await?;
        if status != 202 {
            bail!("POST upload: {status}");
        }
        let location = Self::location(&headers)?;
        let (status, headers, _) = self
            .send(
                "PATCH",
                &location,
                blob.data.clone(),
                Some("application/octet-stream"),
            )
            .await?;
        if status != 202 {
            bail!("PATCH: {status}");
        }
        let location = Self::location(&headers)?;
        let (status, _, _) = self
            .send(
                "PUT",
                &Self::with_digest(&location, &blob.digest),
                Bytes::new(),
                None,
            )
            .await?;
        if status != 201 {
            bail!("PUT: {status}");
        }
        Ok(())
    }

    /// POST, then PUT ?digest= with the whole blob.
    async fn push_monolithic(&self, repo: &str, blob: &Blob) -> anyhow::Result<()> {
        let (status, headers, _) = self
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                Bytes::new(),
                None,
            )
            .await?;
        if status != 202 {
            bail!("POST upload: {status}");
        }
        let location = Self::location(&headers)?;
        let (status, _, _) = self
            .send(
                "PUT",
                &Self::with_digest(&location, &blob.digest),
                blob.data.clone(),
                Some("application/octet-stream"),
            )
            .await?;
        if status != 201 {
            bail!("PUT: {status}");
        }
        Ok(())
    }

    async fn pull(&self, repo: &str, blob: &Blob) -> anyhow::Result<u64> {
        let (status, _, received) = self
            .send(
                "GET",
                &format!("/v2/{repo}/blobs/{}", blob.digest),
                Bytes::new(),
                None,
            )
            .await?;
        if status != 200 || received != blob.data.len() as u64 {
            bail!("GET blob: {status}, {received} bytes");
        }
        Ok(received)
    }
}

/// Runs `op` over every blob with `clients` workers; returns seconds taken.
async fn run_all<F, Fut>(
    ctx: &Arc<Ctx>,
    blobs: &Arc<Vec<Blob>>,
    clients: usize,
    op: F,
) -> anyhow::Result<f64>
where
    F: Fn(Arc<Ctx>, Arc<Vec<Blob>>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ctx, blobs, next, op) = (ctx.clone(), blobs.clone(), next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= blobs.len() {
                    return Ok::<_, anyhow::Error>(());
                }
                op(ctx.clone(), blobs.clone(), i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.clients)
        .build_http();
    let auth = args.token.as_ref().map(|t| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{t}"))
        )
    });
    let ctx = Arc::new(Ctx {
        client,
        endpoint: args.endpoint.trim_end_matches('/').to_string(),
        auth,
    });

    let layer_len = args.image_mib * 1024 * 1024 / args.layers;
    let layers: Arc<Vec<Blob>> = Arc::new(
        (0..args.layers)
            .map(|i| blob(generate(layer_len, 1 + i as u64)))
            .collect(),
    );
    let small: Arc<Vec<Blob>> = Arc::new(
        (0..args.small_blobs)
            .map(|i| blob(generate(args.small_size, 1_000_000 + i as u64)))
            .collect(),
    );
    let big_bytes = (layer_len * args.layers) as f64;
    let mib = 1024.0 * 1024.0;

    let repo = args.big_repo.clone();
    let push_big = run_all(&ctx, &layers, args.clients, move |ctx, blobs, i| {
        let repo = repo.clone();
        async move { ctx.push_chunked(&repo, &blobs[i]).await }
    })
    .await
    .context("pushing layers")?;

    // The image's config and manifest, so the push is a real image.
    let config = blob(Bytes::from(
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    ));
    ctx.push_monolithic(&args.big_repo, &config).await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.data.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.digest, "size": l.data.len()
        })).collect::<Vec<_>>(),
    });
    let (status, _, _) = ctx
        .send(
            "PUT",
            &format!("/v2/{}/manifests/latest", args.big_repo),
            Bytes::from(manifest.to_string()),
            Some("application/vnd.oci.image.manifest.v1+json"),
        )
        .await?;
    if status != 201 {
        bail!("PUT manifest: {status}");
    }

    let repo = args.big_repo.clone();
    let pull_big = run_all(&ctx, &layers, args.clients, move |ctx, blobs, i| {
        let repo = repo.clone();
        async move { ctx.pull(&repo, &blobs[i]).await.map(|_| ()) }
    })
    .await
    .context("pulling layers")?;

    let repo = args.small_repo.clone();
    let push_small = run_all(&ctx, &small, args.clients, move |ctx, blobs, i| {
        let repo = repo.clone();
        async move { ctx.push_monolithic(&repo, &blobs[i]).await }
    })
    .await
    .context("pushing small blobs")?;

    let repo = args.small_repo.clone();
    let pull_small = run_all(&ctx, &small, args.clients, move |ctx, blobs, i| {
        let repo = repo.clone();
        async move { ctx.pull(&repo, &blobs[i]).await.map(|_| ()) }
    })
    .await
    .context("pulling small blobs")?;

    let n = args.small_blobs as f64;
    println!(
        "{{\"label\":\"{}\",\"clients\":{},\"image_mib\":{:.0},\"layers\":{},\"small_blobs\":{},\"push_mib_s\":{:.1},\"pull_mib_s\":{:.1},\"push_blobs_s\":{:.0},\"pull_blobs_s\":{:.0}}}",
        args.label,
        args.clients,
        big_bytes / mib,
        args.layers,
        args.small_blobs,
        big_bytes / mib / push_big,
        big_bytes / mib / pull_big,
        n / push_small,
        n / pull_small,
    );
    Ok(())
}
