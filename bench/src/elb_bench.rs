//! `elb-bench`: the pieces of `bench/elb` (see bench/README.md).
//!
//! - `backend --listen ADDR`: a small, fast HTTP/1.1 server (hyper,
//!   keep-alive) answering every request with a fixed 13-byte body.
//! - `load --url URL --connections N --seconds S [--cacert PEM]`: N
//!   keep-alive connections, each sending GET requests one after the other
//!   for S seconds (HTTPS when the URL says so, trusting `--cacert`); prints
//!   one JSON line: requests/s, p50/p99 (ms), errors.
//! - `idle --addr HOST:PORT --connections N --hold S [--tls --cacert PEM
//!   --server-name NAME]`: opens N connections (completing the TLS
//!   handshake when asked), prints `ready N` and holds them S seconds, so
//!   the caller can read the proxy's memory.
//! - `certs --out DIR --name NAME`: a CA (`ca.pem`) and a server
//!   certificate for NAME signed by it (`server.pem` chain, `server.key`,
//!   and `haproxy.pem`: chain followed by the key, as haproxy's `crt`
//!   wants).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Backend {
        #[arg(long)]
        listen: SocketAddr,
    },
    Load {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// PEM of the CA to trust for https:// URLs.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// The TLS server name (SNI), when the URL's host is an address.
        #[arg(long)]
        server_name: Option<String>,
        /// Host header to send.
        #[arg(long)]
        host: Option<String>,
    },
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        hold: u64,
        #[arg(long)]
        tls: bool,
        #[arg(long)]
        cacert: Option<PathBuf>,
        #[arg(long, default_value = "bench.example.test")]
        server_name: String,
    },
    Certs {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "bench.example.test")]
        name: String,
    },
}

const BODY: &[u8] = b"hello, world\n";

async fn backend(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    BODY,
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn tls_connector(cacert: Option<&PathBuf>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let path = cacert.ok_or_else(|| anyhow!("https needs --cacert"))?;
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.context("reading the CA certificate")?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

async fn connect(
    addr: &str,
    tls: Option<(&tokio_rustls::TlsConnector, &str)>,
) -> anyhow::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some((connector, name)) => {
            let name = ServerName::try_from(name.to_string())?;
            Ok(Box::new(connector.connect(name, tcp).await?))
        }
    }
}

struct Target {
    addr: String,
    host: String,
    path: String,
    tls: Option<(tokio_rustls::TlsConnector, String)>,
}

fn target(
    url: &str,
    cacert: Option<&PathBuf>,
    server_name: Option<String>,
    host: Option<String>,
) -> anyhow::Result<Target> {
    let uri: hyper::Uri = url.parse()?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("the URL must be http:// or https://"),
    };
    let authority = uri.authority().ok_or_else(|| anyhow!("no host in {url}"))?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = format!("{}:{port}", authority.host());
    let tls = if https {
        let name = server_name.unwrap_or_else(|| authority.host().to_string());
        Some((tls_connector(cacert)?, name))
    } else {
        None
    };
    Ok(Target {
        addr,
        host: host.unwrap_or_else(|| authority.to_string()),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        tls,
    })
}

/// One keep-alive connection sending requests back to back until
/// `deadline`: the latency of each, in microseconds, and the errors.
async fn one_connection(target: Arc<Target>, deadline: Instant) -> (Vec<u32>, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    while Instant::now() < deadline {
        let tls = target.tls.as_ref().map(|(c, n)| (c, n.as_str()));
        let io = match connect(&target.addr, tls).await {
            Ok(io) => io,
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let request = Request::get(target.path.as_str())
                .header(hyper::header::HOST, target.host.as_str())
                .body(Empty::new());
            let Ok(request) = request else {
                errors += 1;
                break;
            };
            let started = Instant::now();
            let ok = match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    response.into_body().collect().await.is_ok() && status.is_success()
                }
                Err(_) => false,
            };
            if ok {
                latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
            } else {
                errors += 1;
                // The connection may be gone: open another.
                break;
            }
        }
    }
    (latencies, errors)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn load(target: Target, connections: usize, seconds: u64) -> anyhow::Result<()> {
    let target = Arc::new(target);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(one_connection(target.clone(), deadline)));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await?;
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "connections": connections,
            "requests": all.len(),
            "errors": errors,
            "rps": all.len() as f64 / elapsed,
            "p50_ms": percentile(&all, 0.50),
            "p99_ms": percentile(&all, 0.99),
        })
    );
    Ok(())
}

async fn idle(
    addr: SocketAddr,
    connections: usize,
    hold: u64,
    tls: Option<(tokio_rustls::TlsConnector, String)>,
) -> anyhow::Result<()> {
    let addr = addr.to_string();
    let mut held = Vec::with_capacity(connections);
    let mut failed = 0usize;
    // Open in batches so the proxy's accept queue keeps up.
    for batch in (0..connections).collect::<Vec<_>>().chunks(200) {
        let mut opening = Vec::new();
        for _ in batch {
            let addr = addr.clone();
            let tls = tls.clone();
            opening.push(tokio::spawn(async move {
                let tls = tls.as_ref().map(|(c, n)| (c, n.as_str()));
                connect(&addr, tls).await
            }));
        }
        for task in opening {
            match task.await? {
                Ok(io) => held.push(io),
                Err(_) => failed += 1,
            }
        }
    }
    println!("ready {} failed {failed}", held.len());
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(held);
    Ok(())
}

fn certs(out: PathBuf, name: String) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    std::fs::create_dir_all(&out)?;
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "bench/elb CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![name.clone()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let cert = params.signed_by(&key, &issuer)?;
    let chain = format!("{}{}", cert.pem(), ca_cert.pem());
    std::fs::write(out.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(out.join("server.pem"), &chain)?;
    std::fs::write(out.join("server.key"), key.serialize_pem())?;
    std::fs::write(
        out.join("haproxy.pem"),
        format!("{chain}{}", key.serialize_pem()),
    )?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Backend { listen } => runtime.block_on(backend(listen)),
        Command::Load {
            url,
            connections,
            seconds,
            cacert,
            server_name,
            host,
        } => {
            let target = target(&url, cacert.as_ref(), server_name, host)?;
            runtime.block_on(load(target, connections, seconds))
        }
        Command::Idle {
            addr,
            connections,
            hold,
            tls,
            cacert,
            server_name,
        } => {
            let tls = if tls {
                Some((tls_connector(cacert.as_ref())?, server_name))
            } else {
                None
            };
            runtime.block_on(idle(addr, connections, hold, tls))
        }
        Command::Certs { out, name } => certs(out, name),
    }
}
