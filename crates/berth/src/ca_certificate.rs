//! Berth's local certificate authority for clients: `GET
//! /_berth/ca-certificate` (the server side) answers the CA certificate's
//! PEM, and `berth ca-certificate` prints it, so users can `curl --cacert`
//! or add it to a trust store and then reach HTTPS listeners whose
//! certificates ACM's RequestCertificate issued.
//!
//! The route is unauthenticated and read-only, like `/_berth/health`: a CA
//! certificate is public by nature (every TLS handshake sends it along), and
//! a client needs it before it can trust anything. The CA itself is created
//! when the server starts (see `node.rs`), so the route only reads.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The route.
pub const CA_PATH: &str = "/_berth/ca-certificate";

/// The route, to merge beside the gateway's.
pub fn router(acm: Arc<berth_acm::AcmService>) -> Router {
    Router::new().route(
        CA_PATH,
        get(move || {
            let acm = acm.clone();
            async move {
                match acm.ca_certificate_pem().await {
                    Ok(pem) => {
                        ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response()
                    }
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.message).into_response(),
                }
            }
        }),
    )
}

#[derive(clap::Args, Clone, Debug)]
pub struct CaCertificateArgs {
    /// The Berth server.
    #[arg(
        long,
        default_value = "http://127.0.0.1:4566",
        env = "AWS_ENDPOINT_URL",
        value_name = "URL"
    )]
    pub endpoint: String,
}

/// Prints the CA certificate of the server at `--endpoint`.
pub async fn run(args: CaCertificateArgs) -> anyhow::Result<()> {
    let base = args.endpoint.trim_end_matches('/');
    if !base.starts_with("http://") {
        bail!("--endpoint must be an http:// URL (got '{base}')");
    }
    let uri: hyper::Uri = format!("{base}{CA_PATH}")
        .parse()
        .with_context(|| format!("invalid endpoint URL '{base}'"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<hyper::body::Bytes>>();
    let request = hyper::Request::get(uri)
        .body(Empty::new())
        .context("building the request")?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .context("the server did not answer within 30 s")?
        .with_context(|| format!("calling {base}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    print!("{text}");
    Ok(())
}
