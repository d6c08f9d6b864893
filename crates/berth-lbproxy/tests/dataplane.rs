//! The data plane with real sockets on 127.0.0.0/8: tiny hyper backends on ephemeral ports.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_lbproxy::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// A backend answering its name; /headers echoes the request's headers; /status/N answers N;
/// /slow sleeps 3 s; /upload reads the body, then answers its length; /ws upgrades and echoes.
async fn backend(name: &'static str, health_status: u16) -> SocketAddr {
    backend_with(name, Arc::new(AtomicU16::new(health_status))).await
}

/// As `backend`, with a health status the test can change.
async fn backend_with(name: &'static str, health: Arc<AtomicU16>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, peer)) = l.accept().await else {
                return;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let health = health.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let mut resp = Response::new(Full::new(Bytes::from(name)));
                        if path == "/peer" {
                            *resp.body_mut() = Full::new(Bytes::from(peer.ip().to_string()));
                        } else if path == "/peer-port" {
                            *resp.body_mut() = Full::new(Bytes::from(peer.to_string()));
                        } else if path == "/health" {
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(health.load(Ordering::Relaxed))
                                    .unwrap();
                        } else if path == "/headers" {
                            let mut out = String::new();
                            for (k, v) in req.headers() {
                                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("")));
                            }
                            *resp.body_mut() = Full::new(Bytes::from(out));
                        } else if path == "/slow" {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        } else if let Some(ms) = path.strip_prefix("/sleep/") {
                            let ms = ms.parse().unwrap_or(0);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        } else if path == "/upload" {
                            // Reads the whole body first, then answers its length.
                            let mut n = 0;
                            while let Some(Ok(frame)) = req.body_mut().frame().await {
                                n += frame.data_ref().map_or(0, |d| d.len());
                            }
                            *resp.body_mut() = Full::new(Bytes::from(n.to_string()));
                        } else if path == "/ws" {
                            let up = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(u) = up.await {
                                    let mut io = TokioIo::new(u);
                                    let mut buf = [0u8; 64];
                                    while let Ok(n) = io.read(&mut buf).await {
                                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            });
                            *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                            resp.headers_mut()
                                .insert("upgrade", "websocket".parse().unwrap());
                            resp.headers_mut()
                                .insert("connection", "upgrade".parse().unwrap());
                            *resp.body_mut() = Full::new(Bytes::new());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn free_port(ip: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
    l.local_addr().unwrap()
}

fn fast_hc() -> HealthCheckConfig {
    HealthCheckConfig {
        path: "/health".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..HealthCheckConfig::alb_default()
    }
}

fn group(targets: &[(&str, SocketAddr)]) -> TargetGroupConfig {
    TargetGroupConfig {
        protocol: TargetProtocol::Http,
        protocol_version: HttpVersion::Http1,
        targets: targets
            .iter()
            .map(|(id, a)| TargetConfig {
                id: id.to_string(),
                port: a.port(),
                address: *a,
                draining: false,
            })
            .collect(),
        health_check: fast_hc(),
        algorithm: Algorithm::RoundRobin,
        stickiness: None,
        slow_start: Duration::ZERO,
        source_addresses: vec![],
    }
}

fn listener(id: &str, bind: SocketAddr, rules: Vec<RuleConfig>) -> ListenerConfig {
    ListenerConfig {
        id: id.into(),
        kind: LbKind::Application,
        protocol: ListenerProtocol::Http,
        bind: vec![bind],
        certificates: vec![],
        alpn_http2: true,
        idle_timeout: Duration::from_secs(60),
        source_filter: None,
        rules,
        lb_id: "app/test/1".into(),
    }
}

fn forward(tg: &str) -> Action {
    Action::Forward {
        groups: vec![(tg.into(), 1)],
        group_stickiness: None,
    }
}

fn default_rule(action: Action) -> RuleConfig {
    RuleConfig {
        priority: u32::MAX,
        conditions: vec![],
        action,
    }
}

/// Waits until `n` distinct targets reported `state`; returns the reports seen.
async fn wait_health(
    rx: &mut mpsc::Receiver<HealthReport>,
    state: HealthState,
    n: usize,
) -> Vec<HealthReport> {
    let mut seen: HashMap<(String, String), HealthReport> = HashMap::new();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, async {
        while seen.values().filter(|r| r.state == state).count() < n {
            let r = rx.recv().await.expect("health channel open");
            all.push(r.clone());
            seen.insert((r.target_group.clone(), r.target_id.clone()), r);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {n} targets {state:?}: {all:?}"));
    all
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

async fn get(c: &Client, url: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c.request(b.body(Empty::new()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, h, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alb_round_robin_headers_and_health() {
    let (a, b, c) = (
        backend("a", 200).await,
        backend("b", 200).await,
        backend("c", 200).await,
    );
    let bind = free_port("127.0.0.2");
    let (dp, mut rx) = DataPlane::new();
    let cfg = DataPlaneConfig {
        listeners: vec![listener("l1", bind, vec![default_rule(forward("tg"))])],
        target_groups: BTreeMap::from([(
            "tg".to_string(),
            group(&[("i-a", a), ("i-b", b), ("i-c", c)]),
        )]),
    };
    assert!(dp.apply(cfg.clone()).await.is_empty());
    let reports = wait_health(&mut rx, HealthState::Healthy, 3).await;
    assert!(reports.iter().any(|r| r.state == HealthState::Initial
        && r.reason.as_deref() == Some("Elb.InitialHealthChecking")));
    // Idempotent: applying again changes nothing and reports nothing. (And the controller can
    // share the data plane and apply from a spawned task.)
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    send_sync(&dp);
    let fut = dp.apply(cfg);
    send(&fut);
    assert!(fut.await.is_empty());

    let cl = client();
    let url = format!("http://{bind}/");
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..300 {
        let (s, h, body) = get(&cl, &url, &[]).await;
        assert_eq!(s, 200);
        assert!(h.get("set-cookie").is_none());
        *counts.entry(body).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| (85..=115).contains(&n)),
        "{counts:?}"
    );

    let (_, _, echoed) = get(
        &cl,
        &format!("http://{bind}/headers"),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("host", "app.example.com"),
        ],
    )
    .await;
    assert!(
        echoed.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{echoed}"
    );
    assert!(echoed.contains("x-forwarded-proto: http\n"), "{echoed}");
    assert!(
        echoed.contains(&format!("x-forwarded-port: {}\n", bind.port())),
        "{echoed}"
    );
    assert!(echoed.contains("host: app.example.com\n"), "{echoed}");
    let trace = echoed
        .lines()
        .find(|l| l.starts_with("x-amzn-trace-id: Root=1-"))
        .expect("trace id");
    assert_eq!(
        trace.len(),
        "x-amzn-trace-id: Root=1-".len() + 8 + 1 + 24,
        "{trace}"
    );
    assert!(rx.try_recv().is_err(), "no report without a change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_fixed_redirect_and_errors() {
    let (api, stat) = (backend("api", 200).await, backend("static", 200).await);
    let bind = free_port("127.0.0.3");
    let (dp, mut rx) = DataPlane::new();
    let slow_listener = free_port("127.0.0.3");
    let mut slow = listener("slow", slow_listener, vec![default_rule(forward("api"))]);
    slow.idle_timeout = Duration::from_millis(500);
    let refused = free_port("127.0.0.1");
    let cfg = DataPlaneConfig {
        listeners: vec![
            listener(
                "l",
                bind,
                vec![
                    RuleConfig {
                        priority: 1,
                        conditions: vec![Condition::PathPattern(vec!["/api/*".into()])],
                        action: forward("api"),
                    },
                    RuleConfig {
                        priority: 2,
                        conditions: vec![Condition::PathPattern(vec!["/static/*".into()])],
                        action: forward("static"),
                    },
                    RuleConfig {
                        priority: 3,
                        conditions: vec![Condition::HostHeader(vec!["*.static.example".into()])],
                        action: forward("static"),
                    },
                    RuleConfig {
                        priority: 4,
                        conditions: vec![Condition::PathPattern(vec!["/old/*".into()])],
                        action: Action::Redirect {
                            protocol: "HTTPS".into(),
                            host: "#{host}".into(),
                            port: "443".into(),
                            path: "/new/#{path}".into(),
                            query: "#{query}&r=1".into(),
                            status_code: 301,
                        },
                    },
                    RuleConfig {
                        priority: 5,
                        conditions: vec![Condition::PathPattern(vec!["/empty".into()])],
                        action: forward("empty"),
                    },
                    RuleConfig {
                        priority: 6,
                        conditions: vec![Condition::PathPattern(vec!["/down".into()])],
                        action: forward("down"),
                    },
                    default_rule(Action::FixedResponse {
                        status_code: 404,
                        content_type: Some("text/plain".into()),
                        body: "nothing here".into(),
                    }),
                ],
            ),
            slow,
        ],
        target_groups: BTreeMap::from([
            ("api".to_string(), group(&[("i-api", api)])),
            ("static".to_string(), group(&[("i-static", stat)])),
            ("empty".to_string(), group(&[])),
            ("down".to_string(), group(&[("i-down", refused)])),
        ]),
    };
    assert!(dp.apply(cfg).await.is_empty());
    wait_health(&mut rx, HealthState::Healthy, 2).await;
    let cl = client();
    assert_eq!(
        get(&cl, &format!("http://{bind}/api/x"), &[]).await.2,
        "api"
    );
    assert_eq!(
        get(&cl, &format!("http://{bind}/static/y"), &[]).await.2,
        "static"
    );
    assert_eq!(
        get(
            &cl,
            &format!("http://{bind}/z"),
            &[("host", "a.STATIC.example")]
        )
        .await
        .2,
        "static"
    );
    let (s, h, body) = get(&cl, &format!("http://{bind}/other"), &[]).await;
    assert_eq!((s, body.as_str()), (404, "nothing here"));
    assert_eq!(h["server"], "awselb/2.0");
    assert_eq!(h["content-type"], "text/plain");
    let (s, h, _) = get(
        &cl,
        &format!("http://{bind}/old/a/b?x=1"),
        &[("host", "www.example.com")],
    )
    .await;
    assert_eq!(s, 301);
    assert_eq!(h["location"], "https://www.example.com/new/old/a/b?x=1&r=1");
    // 503: a group without targets.
    let (s, h, body) = get(&cl, &format!("http://{bind}/empty"), &[]).await;
    assert_eq!(s, 503);
    assert_eq!(h["server"], "awselb/2.0");
    assert!(
        body.starts_with(
            "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>"
        ),
        "{body}"
    );
    // 502: the only target refuses connections (unhealthy, so fail-open sends to it).
    let (s, _, body) = get(&cl, &format!("http://{bind}/down"), &[]).await;
    assert_eq!(s, 502);
    assert_eq!(
        body,
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    // 504: the target does not answer within the idle timeout.
    let (s, _, body) = get(&cl, &format!("http://{slow_listener}/slow"), &[]).await;
    assert_eq!(s, 504);
    assert!(body.contains("504 Gateway Time-out"));
    // The refusing target turns unhealthy with AWS's reason.
    let reports = wait_health(&mut rx, HealthState::Unhealthy, 1).await;
    let r = reports
        .iter()
        .find(|r| r.state == HealthState::Unhealthy)
        .unwrap();
    assert_eq!(
        (r.target_id.as_str(), r.reason.as_deref()),
        ("i-down", Some("Target.FailedHealthChecks"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_mismatch_fail_open_stickiness_and_draining() {
    let (bad, good1, good2) = (
        backend("bad", 500).await,
        backend("g1", 200).await,
        backend("g2", 200).await,
    );
    let bind = free_port("127.0.0.4");
    let (dp, mut rx) = DataPlane::new();
    let mut tg = group(&[("i-bad", bad)]);
    let cfg = |tg: TargetGroupConfig| DataPlaneConfig {
        listeners: vec![listener("l", bind, vec![default_rule(forward("tg"))])],
        target_groups: BTreeMap::from([("tg".to_string(), tg)]),
    };
    assert!(dp.apply(cfg(tg.clone())).await.is_empty());
    let reports = wait_health(&mut rx, HealthState::Unhealthy, 1).await;
    let r = reports.last().unwrap();
    assert_eq!(r.reason.as_deref(), Some("Target.ResponseCodeMismatch"));
    assert_eq!(
        r.description.as_deref(),
        Some("Health checks failed with these codes: [500]")
    );
    // Fail-open: the only target is unhealthy, it still gets the traffic.
    let cl = client();
    assert_eq!(get(&cl, &format!("http://{bind}/"), &[]).await.2, "bad");

    // Two healthy targets join: the unhealthy one gets nothing; stickiness pins a client.
    tg.targets.push(TargetConfig {
        id: "i-g1".into(),
        port: good1.port(),
        address: good1,
        draining: false,
    });
    tg.targets.push(TargetConfig {
        id: "i-g2".into(),
        port: good2.port(),
        address: good2,
        draining: false,
    });
    tg.stickiness = Some(Duration::from_secs(3600));
    assert!(dp.apply(cfg(tg.clone())).await.is_empty());
    wait_health(&mut rx, HealthState::Healthy, 2).await;
    let (_, h, first) = get(&cl, &format!("http://{bind}/"), &[]).await;
    assert_ne!(first, "bad");
    let cookies: Vec<&str> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let awsalb = cookies
        .iter()
        .find(|c| c.starts_with("AWSALB="))
        .expect("AWSALB cookie");
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("AWSALBCORS=") && c.contains("SameSite=None")));
    let value = awsalb.split(';').next().unwrap().to_string();
    for _ in 0..20 {
        assert_eq!(
            get(&cl, &format!("http://{bind}/"), &[("cookie", &value)])
                .await
                .2,
            first
        );
    }
    // Draining the sticky target: no new request goes to it.
    for t in tg.targets.iter_mut() {
        if (first == "g1" && t.id == "i-g1") || (first == "g2" && t.id == "i-g2") {
            t.draining = true;
        }
    }
    assert!(dp.apply(cfg(tg.clone())).await.is_empty());
    for _ in 0..20 {
        let body = get(&cl, &format!("http://{bind}/"), &[("cookie", &value)])
            .await
            .2;
        assert!(body != first && body != "bad", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_forward_and_listener_removal() {
    let (a, b) = (backend("a", 200).await, backend("b", 200).await);
    let bind = free_port("127.0.0.5");
    let (dp, mut rx) = DataPlane::new();
    let mut cfg = DataPlaneConfig {
        listeners: vec![listener(
            "l",
            bind,
            vec![default_rule(Action::Forward {
                groups: vec![("A".into(), 80), ("B".into(), 20)],
                group_stickiness: None,
            })],
        )],
        target_groups: BTreeMap::from([
            ("A".to_string(), group(&[("i-a", a)])),
            ("B".to_string(), group(&[("i-b", b)])),
        ]),
    };
    assert!(dp.apply(cfg.clone()).await.is_empty());
    wait_health(&mut rx, HealthState::Healthy, 2).await;
    let cl = client();
    let mut na = 0;
    for _ in 0..2000 {
        if get(&cl, &format!("http://{bind}/"), &[]).await.2 == "a" {
            na += 1;
        }
    }
    assert!((1500..=1700).contains(&na), "{na}");
    // Binding the same address twice is reported, not a panic.
    let mut dup = cfg.clone();
    dup.listeners
        .push(listener("other", bind, vec![default_rule(forward("A"))]));
    let errors = dp.apply(dup).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].listener_id, "other");
    // Removing the listener closes its socket.
    cfg.listeners.clear();
    assert!(dp.apply(cfg).await.is_empty());
    assert!(TcpStream::connect(bind).await.is_err());
}

fn cert(names: &[&str]) -> (CertificatePem, String) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let pem = ck.cert.pem();
    (
        CertificatePem {
            chain_pem: pem.clone(),
            key_pem: ck.signing_key.serialize_pem(),
        },
        pem,
    )
}

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sni_h2_websocket_nlb_and_source_filter() {
    let a = backend("a", 200).await;
    let echo = echo_backend().await;
    let (https, tcp, tls_l, filtered) = (
        free_port("127.0.0.6"),
        free_port("127.0.0.6"),
        free_port("127.0.0.6"),
        free_port("127.0.0.6"),
    );
    let (default_cert, default_pem) = cert(&["default.example"]);
    let (other_cert, other_pem) = cert(&["*.other.example"]);
    let mut l_https = listener("https", https, vec![default_rule(forward("tg"))]);
    l_https.protocol = ListenerProtocol::Https;
    l_https.certificates = vec![default_cert.clone(), other_cert];
    let mut l_tcp = listener("tcp", tcp, vec![default_rule(forward("echo"))]);
    l_tcp.kind = LbKind::Network;
    l_tcp.protocol = ListenerProtocol::Tcp;
    let mut l_tls = l_tcp.clone();
    l_tls.id = "tls".into();
    l_tls.bind = vec![tls_l];
    l_tls.protocol = ListenerProtocol::Tls;
    l_tls.certificates = vec![default_cert];
    let mut l_filtered = listener("filtered", filtered, vec![default_rule(forward("tg"))]);
    l_filtered.source_filter = Some(vec!["10.0.0.0/8".parse().unwrap()]);
    let mut echo_tg = group(&[("i-echo", echo)]);
    echo_tg.protocol = TargetProtocol::Tcp;
    echo_tg.health_check = HealthCheckConfig {
        interval: Duration::from_millis(100),
        ..HealthCheckConfig::nlb_default()
    };
    let (dp, mut rx) = DataPlane::new();
    let cfg = DataPlaneConfig {
        listeners: vec![l_https, l_tcp, l_tls, l_filtered],
        target_groups: BTreeMap::from([
            ("tg".to_string(), group(&[("i-a", a)])),
            ("echo".to_string(), echo_tg),
        ]),
    };
    assert_eq!(dp.apply(cfg).await, vec![]);
    wait_health(&mut rx, HealthState::Healthy, 2).await;

    // HTTP/1.1 over TLS with the default certificate; X-Forwarded-Proto https.
    let s = tls_connect(https, "default.example", &default_pem, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/headers")
                .header("host", "default.example")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");
    // HTTP/2 by ALPN, with the SNI-chosen certificate.
    let s = tls_connect(https, "www.other.example", &other_pem, &[b"h2"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("https://www.other.example/")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "a");

    // WebSocket upgrade passes through (plain HTTP/1.1 over the TLS listener).
    let s = tls_connect(https, "default.example", &default_pem, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut resp = send
        .send_request(
            Request::get("/ws")
                .header("host", "default.example")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    let mut up = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    up.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    up.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // NLB TCP pass-through and TLS termination to a TCP target.
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    let mut s = tls_connect(tls_l, "default.example", &default_pem, &[]).await;
    s.write_all(b"over-tls").await.unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"over-tls");

    // A source the security groups do not allow: held without a byte.
    let mut s = TcpStream::connect(filtered).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf))
            .await
            .is_err()
    );
}

/// Answers every request with bytes that are not HTTP.
async fn garbage_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"garbage garbage\r\n\r\n").await;
            });
        }
    });
    addr
}

/// HTTP/2 with prior knowledge (h2c), answering the version it saw.
async fn h2_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        "{:?}",
                        req.version()
                    )))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_garbage_source_address_and_h2_targets() {
    let (a, garbage, h2) = (
        backend("a", 200).await,
        garbage_backend().await,
        h2_backend().await,
    );
    let bind = free_port("127.0.0.7");
    let mut l = listener(
        "l",
        bind,
        vec![
            RuleConfig {
                priority: 1,
                conditions: vec![Condition::PathPattern(vec!["/garbage".into()])],
                action: forward("garbage"),
            },
            RuleConfig {
                priority: 2,
                conditions: vec![Condition::PathPattern(vec!["/h2".into()])],
                action: forward("h2"),
            },
            default_rule(forward("tg")),
        ],
    );
    l.idle_timeout = Duration::from_millis(400);
    let mut tg = group(&[("i-a", a)]);
    tg.source_addresses = vec!["127.0.0.7".parse().unwrap()];
    let mut garbage_tg = group(&[("i-g", garbage)]);
    garbage_tg.health_check.protocol = HealthCheckProtocol::Tcp;
    let mut h2_tg = group(&[("i-h2", h2)]);
    h2_tg.protocol_version = HttpVersion::Http2;
    h2_tg.health_check.protocol = HealthCheckProtocol::Tcp;
    let (dp, mut rx) = DataPlane::new();
    let cfg = DataPlaneConfig {
        listeners: vec![l],
        target_groups: BTreeMap::from([
            ("tg".to_string(), tg),
            ("garbage".to_string(), garbage_tg),
            ("h2".to_string(), h2_tg),
        ]),
    };
    assert!(dp.apply(cfg).await.is_empty());
    wait_health(&mut rx, HealthState::Healthy, 3).await;
    let cl = client();
    // Connections to targets come from the group's source address.
    assert_eq!(
        get(&cl, &format!("http://{bind}/peer"), &[]).await.2,
        "127.0.0.7"
    );
    // Keep-alive connections to the target are reused.
    let mut peers = std::collections::HashSet::new();
    for _ in 0..20 {
        peers.insert(get(&cl, &format!("http://{bind}/peer-port"), &[]).await.2);
    }
    assert!(peers.len() <= 2, "{peers:?}");
    // A target answering garbage: 502.
    assert_eq!(
        get(&cl, &format!("http://{bind}/garbage"), &[]).await.0,
        502
    );
    // HTTP/2 to the targets of a group whose protocol version is HTTP2.
    assert_eq!(
        get(&cl, &format!("http://{bind}/h2"), &[]).await.2,
        "HTTP/2.0"
    );
    // The client connection is closed after the idle timeout.
    let mut s = TcpStream::connect(bind).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "connection still open after the idle timeout"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("a"),
        "{text}"
    );
    // A client that connects and says nothing is closed after the idle timeout
    // (before it speaks it holds no HTTP state, only the wait for its first byte) ...
    let mut s = TcpStream::connect(bind).await.unwrap();
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection was not closed: {n:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "closed early"
    );
    // ... and one that speaks within it is answered.
    let mut s = TcpStream::connect(bind).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // A slow upload that keeps sending outlasts the idle timeout (ALB counts
    // inactivity, not the request's length) ...
    let mut s = TcpStream::connect(bind).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"5\r\nhello\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("30"),
        "{text}"
    );
    // ... and a target silent for longer than it gets a 504.
    assert_eq!(
        get(&cl, &format!("http://{bind}/sleep/1200"), &[]).await.0,
        504
    );
    // A WebSocket tunnel is closed after the idle timeout too (as ALB does),
    // while traffic keeps it open.
    let s = TcpStream::connect(bind).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut resp = send
        .send_request(
            Request::get("/ws")
                .header("host", "x")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    let mut up = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        up.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        up.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }
    let mut buf = [0u8; 4];
    let closed = tokio::time::timeout(Duration::from_secs(5), up.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "tunnel still open after the idle timeout: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_draining_in_flight_and_removed_listener() {
    let health = Arc::new(AtomicU16::new(200));
    let (a, b) = (
        backend_with("a", health.clone()).await,
        backend("b", 200).await,
    );
    let bind = free_port("127.0.0.8");
    let (dp, mut rx) = DataPlane::new();
    let mut tg = group(&[("i-a", a), ("i-b", b)]);
    let cfg = |tg: &TargetGroupConfig, with_listener: bool| DataPlaneConfig {
        listeners: if with_listener {
            vec![listener("l", bind, vec![default_rule(forward("tg"))])]
        } else {
            vec![]
        },
        target_groups: BTreeMap::from([("tg".to_string(), tg.clone())]),
    };
    assert!(dp.apply(cfg(&tg, true)).await.is_empty());
    wait_health(&mut rx, HealthState::Healthy, 2).await;
    // a fails: unhealthy after 2 failures; recovers after healthy_threshold (2) successes.
    health.store(503, Ordering::Relaxed);
    let r = wait_health(&mut rx, HealthState::Unhealthy, 1).await;
    assert_eq!(
        r.last().unwrap().description.as_deref(),
        Some("Health checks failed with these codes: [503]")
    );
    let cl = client();
    for _ in 0..6 {
        assert_eq!(get(&cl, &format!("http://{bind}/"), &[]).await.2, "b");
    }
    health.store(200, Ordering::Relaxed);
    let r = wait_health(&mut rx, HealthState::Healthy, 1).await;
    assert_eq!(r.last().unwrap().target_id, "i-a");

    // In-flight requests finish when their target starts draining, and when the listener goes.
    let c2 = cl.clone();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let c = c2.clone();
            tokio::spawn(async move { get(&c, &format!("http://{bind}/sleep/400"), &[]).await })
        })
        .collect();
    // A keep-alive connection with one request answered.
    let mut kept = TcpStream::connect(bind).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    tg.targets.iter_mut().for_each(|t| t.draining = true);
    assert!(dp.apply(cfg(&tg, false)).await.is_empty());
    for s in slow {
        let (status, _, body) = s.await.unwrap();
        assert_eq!(status, 200);
        assert!(body == "a" || body == "b");
    }
    assert!(TcpStream::connect(bind).await.is_err());
    // The removed listener's open connections close rather than serve
    // more requests with its rules.
    let _ = kept.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let after = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf)).await;
    assert!(
        matches!(after, Ok(Ok(0)) | Ok(Err(_))),
        "the removed listener answered: {:?}",
        after.map(|r| r.map(|n| String::from_utf8_lossy(&buf[..n]).to_string()))
    );
}

/// A target that writes its answers byte for byte as a test needs them (chunked with trailers,
/// a body in two writes, until-close bodies, interim answers, broken framing), noting on which of
/// its connections each request arrived.
async fn scripted_backend(seen: Arc<std::sync::Mutex<Vec<(usize, String)>>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        for conn_id in 0.. {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 1024];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    if path != "/health" {
                        seen.lock().unwrap().push((conn_id, path.clone()));
                    }
                    let host = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host: "))
                        .unwrap_or("none")
                        .to_string();
                    let echoed_host = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{host}",
                        host.len()
                    );
                    let answer: &[u8] = match path.as_str() {
                        "/echo-host" => echoed_host.as_bytes(),
                        "/reason" => b"HTTP/1.1 299 Fine Indeed\r\ncontent-length: 0\r\n\r\n",
                        "/te10" => b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n0\r\n\r\n",
                        "/slow-ok" => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        }
                        // Reads the request, then closes without a byte.
                        "/crash" => return,
                        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
                        "/split" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234").await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            b"56789"
                        }
                        "/chunked-slow" => {
                            // Every piece of the framing split across writes.
                            for piece in [
                                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r"[..],
                                b"\nhel",
                                b"lo\r",
                                b"\n3;e",
                                b"xt=1\r\n!!!\r\n0\r\nx-t: 1\r",
                                b"\n",
                            ] {
                                let _ = s.write_all(piece).await;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            b"\r\n"
                        }
                        "/bad-chunk" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").await;
                            return;
                        }
                        "/close" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
                            return;
                        }
                        "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
                        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nokay",
                        "/drop-after" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nokay").await;
                            return;
                        }
                        "/conflict" => b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nokay",
                        "/cut" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort").await;
                            return;
                        }
                        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `request` on a connection of its own and reads until the load balancer closes it
/// (a read error counts as the end): what came back.
async fn raw_exchange(bind: SocketAddr, request: &[u8]) -> String {
    let mut raw = TcpStream::connect(bind).await.unwrap();
    raw.write_all(request).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, raw.read_to_end(&mut got))
        .await
        .expect("the connection closed")
        .ok();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_answers_framed_every_way_http_1_allows() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let target = scripted_backend(seen.clone()).await;
    let bind = free_port("127.0.0.9");
    let (dp, mut rx) = DataPlane::new();
    let cfg = DataPlaneConfig {
        listeners: vec![listener("l", bind, vec![default_rule(forward("s"))])],
        target_groups: BTreeMap::from([("s".to_string(), group(&[("i-s", target)]))]),
    };
    assert!(dp.apply(cfg).await.is_empty());
    wait_health(&mut rx, HealthState::Healthy, 1).await;
    let cl = client();
    let url = |path: &str| format!("http://{bind}{path}");

    // Chunked, decoded (extensions and trailers dropped); the target connection is used again
    // after it (requests on one client connection: target connections are pooled per runtime).
    let (mut one, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(
        TcpStream::connect(bind).await.unwrap(),
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        one.ready().await.unwrap();
        let resp = one
            .send_request(
                Request::get("/chunked")
                    .header("host", "x")
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello world");
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0].0, seen[1].0,
            "a second connection was opened: {seen:?}"
        );
    }
    // Chunked framing split across writes anywhere.
    assert_eq!(get(&cl, &url("/chunked-slow"), &[]).await.2, "hello!!!");
    // A body in two writes; one until the target closes; an interim 100 skipped.
    assert_eq!(get(&cl, &url("/split"), &[]).await.2, "0123456789");
    assert_eq!(get(&cl, &url("/close"), &[]).await.2, "until close");
    let (status, _, body) = get(&cl, &url("/continue"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "okay"));
    // HEAD: the length of what GET would send, no body.
    let head = cl
        .request(Request::head(url("/head")).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "9");
    assert!(head
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    // A target that closes its kept-alive connection between requests: the next request goes
    // out again on a new connection.
    for _ in 0..3 {
        let (status, _, body) = get(&cl, &url("/drop-after"), &[]).await;
        assert_eq!((status, body.as_str()), (200, "okay"));
    }
    // Broken framing is a 502.
    let (status, _, body) = get(&cl, &url("/conflict"), &[]).await;
    assert_eq!(status, 502);
    assert!(body.contains("502 Bad Gateway"));
    // A body cut short: the client's connection closes before the length (whatever of the
    // answer was still in the proxy's buffer when the body failed is not sent).
    let got = raw_exchange(bind, b"GET /cut HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 200"), "{got}");
    let body = got.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.len() < 100, "{got}");
    // A malformed chunk size: the same.
    let got = raw_exchange(bind, b"GET /bad-chunk HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(!got.contains("hello"), "{got}");
    // The target gets the client's Host even when the client's Connection header names it.
    let request =
        b"GET /echo-host HTTP/1.1\r\nhost: app.example\r\nconnection: host, close\r\n\r\n";
    let got = raw_exchange(bind, request).await;
    assert!(got.ends_with("\r\n\r\napp.example"), "{got}");
    // A reason phrase of the target's own is relayed.
    let got = raw_exchange(
        bind,
        b"GET /reason HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 299 Fine Indeed\r\n"), "{got}");
    // Transfer-Encoding in an HTTP/1.0 answer is faulty framing: 502.
    assert_eq!(get(&cl, &url("/te10"), &[]).await.0, 502);
    // A target that reads a request and closes: sent again once at most, on a new connection,
    // however many idle connections the pool holds.
    let fill: Vec<_> = (0..8)
        .map(|_| {
            let (cl, u) = (cl.clone(), url("/slow-ok"));
            tokio::spawn(async move { get(&cl, &u, &[]).await.0 })
        })
        .collect();
    for f in fill {
        assert_eq!(f.await.unwrap(), 200);
    }
    assert_eq!(get(&cl, &url("/crash"), &[]).await.0, 502);
    let crashes = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p)| p == "/crash")
        .count();
    assert!((1..=2).contains(&crashes), "sent {crashes} times");
    // Still served afterwards.
    assert_eq!(get(&cl, &url("/"), &[]).await.2, "ok");
}
