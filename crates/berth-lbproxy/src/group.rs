//! Target groups at run time: targets with their health, outstanding requests and slow start, the
//! choice of a target, the pooled client, and the health checker of each target.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng;
use tokio::sync::mpsc;

use crate::config::{
    Algorithm, HealthCheckProtocol, HealthReport, HealthState, HttpVersion, TargetConfig,
    TargetGroupConfig, TargetProtocol,
};
use crate::io::{self, TargetConnector, TargetStream};
use crate::matching::CodeMatcher;
use crate::tls;

pub type HttpClient = Client<TargetConnector, Incoming>;

const INITIAL: u8 = 0;
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;
const UNAVAILABLE: u8 = 3;

pub fn stable_hash<T: Hash + ?Sized>(v: &T) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6265_7274_685f_6c62, 0x7072_6f78_795f_6b31);
    v.hash(&mut h);
    h.finish()
}

pub struct TargetRt {
    pub id: String,
    pub port: u16,
    pub address: SocketAddr,
    pub draining: AtomicBool,
    state: AtomicU8,
    pub outstanding: AtomicUsize,
    /// `io::now_ms()` when it last turned healthy (slow start).
    healthy_since: AtomicU64,
    /// Value of the AWSALB cookie naming this target.
    pub cookie: String,
    checker: Mutex<Option<tokio::task::AbortHandle>>,
    /// Idle HTTP/1.1 connections to this target.
    pub pool: crate::h1pool::Pool,
}

impl Drop for TargetRt {
    fn drop(&mut self) {
        if let Ok(mut c) = self.checker.lock() {
            if let Some(h) = c.take() {
                h.abort();
            }
        }
    }
}

impl TargetRt {
    fn routable(&self) -> bool {
        matches!(self.state.load(Ordering::Relaxed), HEALTHY | UNAVAILABLE)
    }
}

/// Counts a request in flight on a target while alive (least outstanding requests).
pub struct InFlight(pub Arc<TargetRt>);

impl InFlight {
    pub fn new(t: Arc<TargetRt>) -> Self {
        t.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(t)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct GroupSnap {
    pub cfg: TargetGroupConfig,
    pub targets: Vec<Arc<TargetRt>>,
    pub matcher: CodeMatcher,
    pub client: HttpClient,
    /// How the HTTP/1.1 pools connect (TLS for HTTPS groups, source addresses).
    pub connector: TargetConnector,
    /// For TLS target groups behind NLB listeners, and HTTPS health checks.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub struct GroupRt {
    pub id: String,
    pub snap: ArcSwap<GroupSnap>,
    rr: AtomicUsize,
    pub source_next: Arc<AtomicUsize>,
    health_tx: mpsc::Sender<HealthReport>,
}

fn build_client(
    cfg: &TargetGroupConfig,
    source_next: &Arc<AtomicUsize>,
) -> (HttpClient, TargetConnector) {
    let h2 = cfg.protocol_version == HttpVersion::Http2;
    let tls = match cfg.protocol {
        TargetProtocol::Https | TargetProtocol::Tls => {
            tls::client_config(if h2 { &[b"h2"] } else { &[b"http/1.1"] })
        }
        _ => None,
    };
    let connector = TargetConnector {
        tls,
        sources: Arc::new(cfg.source_addresses.clone()),
        next: source_next.clone(),
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .set_host(false)
        .retry_canceled_requests(true)
        .http2_only(h2);
    (b.build(connector.clone()), connector)
}

fn same_client(a: &TargetGroupConfig, b: &TargetGroupConfig) -> bool {
    a.protocol == b.protocol
        && a.protocol_version == b.protocol_version
        && a.source_addresses == b.source_addresses
}

impl GroupRt {
    pub fn new(
        id: String,
        cfg: &TargetGroupConfig,
        health_tx: mpsc::Sender<HealthReport>,
    ) -> Arc<GroupRt> {
        let source_next = Arc::new(AtomicUsize::new(0));
        let (client, connector) = build_client(cfg, &source_next);
        let g = Arc::new(GroupRt {
            id,
            snap: ArcSwap::from_pointee(GroupSnap {
                cfg: cfg.clone(),
                targets: Vec::new(),
                matcher: CodeMatcher::parse(&cfg.health_check.matcher),
                client,
                connector,
                tls: tls::client_config(&[]),
            }),
            rr: AtomicUsize::new(0),
            source_next,
            health_tx,
        });
        g.update(cfg);
        g
    }

    /// Applies a new configuration: targets that stay keep their health; new ones start Initial.
    pub fn update(self: &Arc<Self>, cfg: &TargetGroupConfig) {
        let old = self.snap.load_full();
        let same = same_client(&old.cfg, cfg);
        let (client, connector) = if same {
            (old.client.clone(), old.connector.clone())
        } else {
            build_client(cfg, &self.source_next)
        };
        let mut targets = Vec::with_capacity(cfg.targets.len());
        let mut started = Vec::new();
        for t in &cfg.targets {
            // A draining target registered again starts over (health
            // checks from initial, as ELB reports it), like a new one.
            let kept = old
                .targets
                .iter()
                .find(|o| {
                    o.id == t.id
                        && o.port == t.port
                        && o.address == t.address
                        && (!o.draining.load(Ordering::Relaxed) || t.draining)
                })
                .cloned();
            let rt = match kept {
                Some(rt) => rt,
                None => {
                    let rt = self.new_target(t);
                    started.push(rt.clone());
                    rt
                }
            };
            rt.draining.store(t.draining, Ordering::Relaxed);
            if !same {
                rt.pool.clear();
            }
            if !targets
                .iter()
                .any(|x: &Arc<TargetRt>| x.id == rt.id && x.port == rt.port)
            {
                targets.push(rt);
            }
        }
        self.snap.store(Arc::new(GroupSnap {
            cfg: cfg.clone(),
            targets,
            matcher: CodeMatcher::parse(&cfg.health_check.matcher),
            client,
            connector,
            tls: old.tls.clone(),
        }));
        for t in started {
            let handle = tokio::spawn(check_loop(
                Arc::downgrade(self),
                Arc::downgrade(&t),
                self.health_tx.clone(),
            ));
            if let Ok(mut c) = t.checker.lock() {
                *c = Some(handle.abort_handle());
            }
        }
    }

    fn new_target(&self, t: &TargetConfig) -> Arc<TargetRt> {
        Arc::new(TargetRt {
            id: t.id.clone(),
            port: t.port,
            address: t.address,
            draining: AtomicBool::new(t.draining),
            state: AtomicU8::new(INITIAL),
            outstanding: AtomicUsize::new(0),
            healthy_since: AtomicU64::new(0),
            cookie: format!(
                "{:016x}",
                stable_hash(&(&self.id, &t.id, t.port, t.address))
            ),
            checker: Mutex::new(None),
            pool: Default::default(),
        })
    }

    /// Chooses a target: healthy ones that are not draining; when none is healthy, all that are
    /// not draining (fail-open). `sticky` names a target by its cookie; `flow` is an NLB flow hash.
    pub fn pick(
        &self,
        snap: &GroupSnap,
        sticky: Option<&str>,
        flow: Option<u64>,
    ) -> Option<Arc<TargetRt>> {
        let ts = &snap.targets;
        let healthy = ts
            .iter()
            .filter(|t| !t.draining.load(Ordering::Relaxed) && t.routable())
            .count();
        let fail_open = healthy == 0;
        let eligible =
            |t: &TargetRt| !t.draining.load(Ordering::Relaxed) && (fail_open || t.routable());
        let n = if fail_open {
            ts.iter().filter(|t| eligible(t)).count()
        } else {
            healthy
        };
        if n == 0 {
            return None;
        }
        if let Some(c) = sticky {
            if let Some(t) = ts.iter().find(|t| t.cookie == c && eligible(t)) {
                return Some(t.clone());
            }
        }
        let nth = |k: usize| ts.iter().filter(|t| eligible(t)).nth(k).cloned();
        if let Some(h) = flow {
            return nth((h % n as u64) as usize);
        }
        if n == 1 {
            return nth(0);
        }
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        // Slow start: a target that turned healthy recently gets a share growing linearly.
        let slow = snap.cfg.slow_start;
        if !slow.is_zero() && !fail_open {
            let now = io::now_ms();
            let slow_ms = slow.as_millis() as u64;
            let weight = |t: &TargetRt| {
                let since = t.healthy_since.load(Ordering::Relaxed);
                let age = now.saturating_sub(since);
                if since == 0 || age >= slow_ms {
                    1.0
                } else {
                    (age as f64 / slow_ms as f64).max(0.01)
                }
            };
            let ramping = ts.iter().any(|t| eligible(t) && weight(t) < 1.0);
            if ramping {
                let total: f64 = ts.iter().filter(|t| eligible(t)).map(|t| weight(t)).sum();
                let mut x = rand::thread_rng().gen::<f64>() * total;
                for t in ts.iter().filter(|t| eligible(t)) {
                    x -= weight(t);
                    if x <= 0.0 {
                        return Some(t.clone());
                    }
                }
                return nth(n - 1);
            }
        }
        match snap.cfg.algorithm {
            Algorithm::RoundRobin => nth(start % n),
            Algorithm::LeastOutstandingRequests => {
                let mut best: Option<&Arc<TargetRt>> = None;
                let skip = start % n;
                // Rotate the scan's start so ties spread.
                let order = ts
                    .iter()
                    .filter(|t| eligible(t))
                    .skip(skip)
                    .chain(ts.iter().filter(|t| eligible(t)).take(skip));
                for t in order {
                    if best.is_none_or(|b| {
                        t.outstanding.load(Ordering::Relaxed)
                            < b.outstanding.load(Ordering::Relaxed)
                    }) {
                        best = Some(t);
                    }
                }
                best.cloned()
            }
        }
    }
}

enum Check {
    Ok,
    Mismatch(u16),
    Timeout,
    Failed,
}

async fn run_check(group: &GroupRt, snap: &GroupSnap, target: &TargetRt) -> Check {
    let hc = &snap.cfg.health_check;
    let addr = SocketAddr::new(
        target.address.ip(),
        hc.port.unwrap_or(target.address.port()),
    );
    let sources = snap.cfg.source_addresses.clone();
    let fut = async {
        let tcp = match io::connect_tcp(addr, &sources, &group.source_next).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Check::Timeout,
            Err(_) => return Check::Failed,
        };
        let stream = match hc.protocol {
            HealthCheckProtocol::Tcp => return Check::Ok,
            HealthCheckProtocol::Http => TargetStream::Plain(tcp),
            HealthCheckProtocol::Https => {
                let Some(cfg) = snap.tls.clone() else {
                    return Check::Failed;
                };
                match io::connect_tls(tcp, cfg, addr).await {
                    Ok(s) => TargetStream::Tls(Box::new(s)),
                    Err(_) => return Check::Failed,
                }
            }
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            return Check::Failed;
        };
        tokio::spawn(conn);
        let path = if hc.path.starts_with('/') {
            hc.path.clone()
        } else {
            format!("/{}", hc.path)
        };
        let req = match http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::USER_AGENT, "ELB-HealthChecker/2.0")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
        {
            Ok(r) => r,
            Err(_) => return Check::Failed,
        };
        match sender.send_request(req).await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                if snap.matcher.matches(code) {
                    Check::Ok
                } else {
                    Check::Mismatch(code)
                }
            }
            Err(_) => Check::Failed,
        }
    };
    match tokio::time::timeout(hc.timeout.max(Duration::from_millis(1)), fut).await {
        Ok(c) => c,
        Err(_) => Check::Timeout,
    }
}

fn report(
    group: &GroupRt,
    t: &TargetRt,
    state: HealthState,
    reason: Option<(&str, String)>,
) -> HealthReport {
    HealthReport {
        target_group: group.id.clone(),
        target_id: t.id.clone(),
        port: t.port,
        state,
        reason: reason.as_ref().map(|r| r.0.to_string()),
        description: reason.map(|r| r.1),
    }
}

/// One target's health checks: a jittered first check, then every interval, AWS's thresholds:
/// a new target is healthy after one passed check and unhealthy after `unhealthy_threshold`
/// failures; later, `healthy_threshold` / `unhealthy_threshold` consecutive results flip it.
async fn check_loop(group: Weak<GroupRt>, target: Weak<TargetRt>, tx: mpsc::Sender<HealthReport>) {
    let mut last: Option<HealthReport> = None;
    let (mut oks, mut fails) = (0u32, 0u32);
    let mut first = true;
    loop {
        let (Some(g), Some(t)) = (group.upgrade(), target.upgrade()) else {
            return;
        };
        let snap = g.snap.load_full();
        let hc = snap.cfg.health_check.clone();
        if first {
            first = false;
            let r = report(
                &g,
                &t,
                HealthState::Initial,
                Some((
                    "Elb.InitialHealthChecking",
                    "Initial health checks in progress".into(),
                )),
            );
            let _ = tx.send(r.clone()).await;
            last = Some(r);
            let max = hc.interval.min(Duration::from_secs(2)).as_millis().max(1) as u64;
            let jitter = rand::thread_rng().gen_range(0..max);
            drop((g, t, snap));
            tokio::time::sleep(Duration::from_millis(jitter)).await;
            continue;
        }
        let next = if !hc.enabled {
            t.state.store(UNAVAILABLE, Ordering::Relaxed);
            report(
                &g,
                &t,
                HealthState::Unavailable,
                Some((
                    "Target.HealthCheckDisabled",
                    "Health checks are disabled".into(),
                )),
            )
        } else {
            let result = run_check(&g, &snap, &t).await;
            let current = t.state.load(Ordering::Relaxed);
            let failure = match result {
                Check::Ok => {
                    oks += 1;
                    fails = 0;
                    None
                }
                Check::Mismatch(code) => Some((
                    "Target.ResponseCodeMismatch",
                    format!("Health checks failed with these codes: [{code}]"),
                )),
                Check::Timeout => Some(("Target.Timeout", "Request timed out".to_string())),
                Check::Failed => Some((
                    "Target.FailedHealthChecks",
                    "Health checks failed".to_string(),
                )),
            };
            if failure.is_some() {
                fails += 1;
                oks = 0;
            }
            let new_state = match current {
                HEALTHY if fails >= hc.unhealthy_threshold.max(1) => UNHEALTHY,
                HEALTHY => HEALTHY,
                UNHEALTHY if oks >= hc.healthy_threshold.max(1) => HEALTHY,
                UNHEALTHY => UNHEALTHY,
                _ if oks >= 1 => HEALTHY,
                _ if fails >= hc.unhealthy_threshold.max(1) => UNHEALTHY,
                _ => INITIAL,
            };
            if new_state == HEALTHY && current != HEALTHY {
                // Slow start does not apply when no other target is healthy (AWS).
                let others = snap
                    .targets
                    .iter()
                    .any(|o| !Arc::ptr_eq(o, &t) && o.routable());
                t.healthy_since.store(
                    if others { io::now_ms().max(1) } else { 0 },
                    Ordering::Relaxed,
                );
            }
            t.state.store(new_state, Ordering::Relaxed);
            match new_state {
                HEALTHY => report(&g, &t, HealthState::Healthy, None),
                UNHEALTHY => {
                    // Keep the latest failure's reason while unhealthy (and while recovering).
                    let reason = failure.or_else(|| {
                        last.as_ref()
                            .and_then(|l| Some((l.reason.as_deref()?, l.description.clone()?)))
                            .map(|(r, d)| (static_reason(r), d))
                    });
                    report(&g, &t, HealthState::Unhealthy, reason)
                }
                _ => report(
                    &g,
                    &t,
                    HealthState::Initial,
                    Some((
                        "Elb.InitialHealthChecking",
                        "Initial health checks in progress".into(),
                    )),
                ),
            }
        };
        let still_registered = g.snap.load().targets.iter().any(|x| Arc::ptr_eq(x, &t));
        if still_registered && last.as_ref() != Some(&next) {
            let _ = tx.send(next.clone()).await;
            last = Some(next);
        }
        drop((g, t, snap));
        tokio::time::sleep(hc.interval.max(Duration::from_millis(10))).await;
    }
}

fn static_reason(r: &str) -> &'static str {
    match r {
        "Target.ResponseCodeMismatch" => "Target.ResponseCodeMismatch",
        "Target.Timeout" => "Target.Timeout",
        _ => "Target.FailedHealthChecks",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthCheckConfig;

    fn cfg(n: u16) -> TargetGroupConfig {
        TargetGroupConfig {
            protocol: TargetProtocol::Http,
            protocol_version: HttpVersion::Http1,
            targets: (0..n)
                .map(|i| TargetConfig {
                    id: format!("t{i}"),
                    port: 8000 + i,
                    address: SocketAddr::from(([127, 0, 0, 1], 8000 + i)),
                    draining: false,
                })
                .collect(),
            health_check: HealthCheckConfig::alb_default(),
            algorithm: Algorithm::RoundRobin,
            stickiness: None,
            slow_start: Duration::ZERO,
            source_addresses: vec![],
        }
    }

    /// A group whose health checkers are stopped, so the test sets the states.
    fn quiet(cfg: &TargetGroupConfig) -> Arc<GroupRt> {
        let (tx, _rx) = mpsc::channel(16);
        let g = GroupRt::new("tg".into(), cfg, tx);
        for t in g.snap.load().targets.iter() {
            if let Some(h) = t.checker.lock().unwrap().take() {
                h.abort();
            }
        }
        g
    }

    fn set(g: &GroupRt, states: &[u8]) {
        for (t, s) in g.snap.load().targets.iter().zip(states) {
            t.state.store(*s, Ordering::Relaxed);
        }
    }

    fn picks(g: &GroupRt, n: usize) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        let snap = g.snap.load_full();
        for _ in 0..n {
            if let Some(t) = g.pick(&snap, None, None) {
                *m.entry(t.id.clone()).or_default() += 1;
            }
        }
        m
    }

    #[tokio::test]
    async fn healthy_only_then_fail_open_and_draining() {
        let g = quiet(&cfg(3));
        // Initial targets get nothing while another is healthy.
        set(&g, &[HEALTHY, INITIAL, UNHEALTHY]);
        assert_eq!(
            picks(&g, 10).into_iter().collect::<Vec<_>>(),
            vec![("t0".to_string(), 10)]
        );
        // None healthy: fail-open over all.
        set(&g, &[UNHEALTHY, UNHEALTHY, INITIAL]);
        assert_eq!(picks(&g, 30).len(), 3);
        // Draining targets get nothing, even when failing open.
        let mut c = cfg(3);
        c.targets[0].draining = true;
        g.update(&c);
        assert!(!picks(&g, 30).contains_key("t0"));
        // Targets that stay keep their health across apply.
        assert_eq!(
            g.snap.load().targets[2].state.load(Ordering::Relaxed),
            INITIAL
        );
        assert_eq!(
            g.snap.load().targets[0].state.load(Ordering::Relaxed),
            UNHEALTHY
        );
        // All draining: nothing.
        c.targets.iter_mut().for_each(|t| t.draining = true);
        g.update(&c);
        assert!(picks(&g, 5).is_empty());
    }

    #[tokio::test]
    async fn round_robin_lor_flow_and_sticky() {
        let g = quiet(&cfg(3));
        set(&g, &[HEALTHY, HEALTHY, HEALTHY]);
        assert!(picks(&g, 300).values().all(|&n| n == 100));
        let snap = g.snap.load_full();
        // Flow hash: the same flow, the same target.
        let a = g.pick(&snap, None, Some(12345)).unwrap();
        for _ in 0..10 {
            assert!(Arc::ptr_eq(&a, &g.pick(&snap, None, Some(12345)).unwrap()));
        }
        // Sticky cookie names a target.
        let t2 = snap.targets[2].clone();
        for _ in 0..10 {
            assert_eq!(g.pick(&snap, Some(&t2.cookie), None).unwrap().id, "t2");
        }
        // Least outstanding requests.
        let mut c = cfg(3);
        c.algorithm = Algorithm::LeastOutstandingRequests;
        g.update(&c);
        let snap = g.snap.load_full();
        let _busy: Vec<InFlight> = (0..5)
            .map(|_| InFlight::new(snap.targets[0].clone()))
            .collect();
        let _busy1: Vec<InFlight> = (0..2)
            .map(|_| InFlight::new(snap.targets[1].clone()))
            .collect();
        for _ in 0..10 {
            assert_eq!(g.pick(&snap, None, None).unwrap().id, "t2");
        }
    }

    #[tokio::test]
    async fn slow_start_ramps_a_new_target() {
        let mut c = cfg(2);
        c.slow_start = Duration::from_secs(100);
        let g = quiet(&c);
        set(&g, &[HEALTHY, HEALTHY]);
        let snap = g.snap.load_full();
        // t0 healthy long ago (not ramping); t1 turned healthy 10 s ago: ~10 % weight.
        // t0 has served for long (no ramp); t1 just turned healthy: about 1 % of the requests.
        snap.targets[0].healthy_since.store(0, Ordering::Relaxed);
        snap.targets[1]
            .healthy_since
            .store(io::now_ms().max(1), Ordering::Relaxed);
        let m = picks(&g, 5000);
        let t1 = m.get("t1").copied().unwrap_or(0);
        assert!(t1 < 200, "{m:?}");
        // Past the slow start duration it gets its full share.
        snap.targets[1].healthy_since.store(0, Ordering::Relaxed);
        let m = picks(&g, 1000);
        assert_eq!(m.get("t1").copied(), Some(500), "{m:?}");
    }
}
