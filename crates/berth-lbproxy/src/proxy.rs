//! The ALB: routing one HTTP request by the listener's rules and answering it (forward, redirect,
//! fixed response), with ELB's headers, cookies and error pages.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use rand::Rng;

use crate::config::{Condition, HttpVersion, ListenerConfig};
use crate::group::{GroupRt, GroupSnap, InFlight, TargetRt};
use crate::h1pool;
use crate::matching::{condition_matches, RequestView};

pub type RespBody = UnsyncBoxBody<Bytes, h1pool::BoxError>;

pub struct FwdGroup {
    /// None when the rule names a group the configuration does not have (answers 503).
    pub group: Option<Arc<GroupRt>>,
    pub weight: u32,
    /// Value of the AWSALBTG cookie naming this group.
    pub cookie: String,
}

pub enum ActionRt {
    Forward {
        groups: Vec<FwdGroup>,
        total: u64,
        stickiness: Option<Duration>,
    },
    Redirect {
        protocol: String,
        host: String,
        port: String,
        path: String,
        query: String,
        status: StatusCode,
    },
    Fixed {
        status: StatusCode,
        content_type: HeaderValue,
        body: Bytes,
    },
}

pub struct RuleRt {
    pub conditions: Vec<Condition>,
    pub action: ActionRt,
}

/// One listener's configuration as the data path reads it (swapped whole on apply).
pub struct ListenerSnap {
    pub cfg: ListenerConfig,
    pub rules: Vec<RuleRt>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

pub struct ConnCtx {
    pub listener: Arc<ArcSwap<ListenerSnap>>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub secure: bool,
    /// When the client connection last read or wrote a byte (ms).
    pub activity: Arc<std::sync::atomic::AtomicU64>,
    /// Raised once the connection has been idle for its idle timeout (also after its listener
    /// was removed): a request waiting on its target then answers 504.
    pub alarm: crate::io::Alarm,
    /// Whether the listener has been removed.
    pub removed: tokio::sync::watch::Receiver<bool>,
    /// The client's address as X-Forwarded-For gives it, and the listener's port as
    /// X-Forwarded-Port does: the same for every request of the connection.
    pub client_ip: HeaderValue,
    pub local_port: HeaderValue,
}

impl ConnCtx {
    pub fn new(
        listener: Arc<ArcSwap<ListenerSnap>>,
        peer: SocketAddr,
        local: SocketAddr,
        secure: bool,
        removed: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let client_ip = canonical(peer.ip()).to_string();
        ConnCtx {
            listener,
            peer,
            local,
            secure,
            activity: crate::io::activity(),
            alarm: crate::io::Alarm::default(),
            removed,
            // An IP address's text is always a valid header value.
            client_ip: HeaderValue::try_from(client_ip)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            local_port: HeaderValue::from(local.port()),
        }
    }
}

/// What a request to a target came to within the idle timeout.
enum Waited<T> {
    Done(T),
    /// Neither the client nor the target moved a byte for the idle timeout.
    Idle,
}

/// Runs `fut` (sending a request to a target and reading its answer's
/// head) until the client connection has been idle for its idle timeout
/// (its [`crate::io::Alarm`]): as on ALB, a slow upload that keeps sending
/// never times out, and a target that does not answer within the idle
/// timeout after the last byte gets a 504.
async fn until_idle<T>(ctx: &ConnCtx, fut: impl std::future::Future<Output = T>) -> Waited<T> {
    tokio::select! {
        out = fut => Waited::Done(out),
        _ = ctx.alarm.raised() => Waited::Idle,
    }
}

static SERVER: HeaderValue = HeaderValue::from_static("awselb/2.0");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn status_title(code: u16) -> &'static str {
    match code {
        301 => "301 Moved Permanently",
        302 => "302 Found",
        400 => "400 Bad Request",
        460 => "460",
        502 => "502 Bad Gateway",
        503 => "503 Service Temporarily Unavailable",
        504 => "504 Gateway Time-out",
        _ => "500 Internal Server Error",
    }
}

/// ELB's own HTML pages (502, 503, 504, redirects).
pub fn elb_page(code: u16) -> Response<RespBody> {
    let title = status_title(code);
    let body = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = r.headers_mut();
    h.insert(header::SERVER, SERVER.clone());
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// RFC 7231 IMF-fixdate.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}

fn set_cookies(h: &mut HeaderMap, name: &str, value: &str, duration: Duration) {
    let expires = http_date(SystemTime::now() + duration);
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={value}; Expires={expires}; Path=/")) {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{name}CORS={value}; Expires={expires}; Path=/; SameSite=None; Secure"
    )) {
        h.append(header::SET_COOKIE, v);
    }
}

/// The length of a trace id, `1-<8 hex digits>-<24 hex digits>`.
const TRACE_ID_LEN: usize = 35;

/// Writes a new trace id into `out`: `1-`, the time in seconds and 96 random bits, in hex.
fn write_trace_id(out: &mut [u8; TRACE_ID_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as u32;
    let r: [u8; 12] = rand::thread_rng().gen();
    out[0] = b'1';
    out[1] = b'-';
    for (i, shift) in (0..8).rev().enumerate() {
        out[2 + i] = HEX[((now >> (shift * 4)) & 0xf) as usize];
    }
    out[10] = b'-';
    for (i, b) in r.iter().enumerate() {
        out[11 + 2 * i] = HEX[usize::from(b >> 4)];
        out[12 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
}

/// `Root=1-…` for a new request; an incoming header with a Root keeps it and gets our Self field.
pub fn trace_header(existing: Option<&str>) -> String {
    let mut id = [0u8; TRACE_ID_LEN];
    write_trace_id(&mut id);
    // Hex digits and dashes only.
    let id = std::str::from_utf8(&id).unwrap_or_default();
    match existing {
        Some(e) if e.contains("Root=") => {
            let rest: Vec<&str> = e
                .split(';')
                .map(str::trim)
                .filter(|p| !p.starts_with("Self=") && !p.is_empty())
                .collect();
            format!("Self={id};{}", rest.join(";"))
        }
        _ => {
            let mut value = String::with_capacity(5 + TRACE_ID_LEN);
            value.push_str("Root=");
            value.push_str(id);
            value
        }
    }
}

static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names present instead of a lookup for
    // each hop-by-hop name.
    if !h.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP.iter() {
        h.remove(n);
    }
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && h1pool::has_token(req.headers(), &header::CONNECTION, "upgrade")
}

/// What routing made of a request: an answer of the load balancer's own, or a request to send to
/// a target.
// Built once per request and taken apart at once by `handle`: boxing the plan would cost an
// allocation per request to save one copy.
#[allow(clippy::large_enum_variant)]
enum Routed {
    Answer(Response<RespBody>),
    Forward(Forward),
}

/// A request routed to a target, its headers rewritten as ELB rewrites them.
struct Forward {
    req: Request<Incoming>,
    target: Arc<TargetRt>,
    group: Arc<GroupSnap>,
    inflight: InFlight,
    cookies: StickyCookies,
    /// The listener's idle timeout.
    idle: Duration,
    /// The client side of an upgrade (WebSocket) the request asks for.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// The stickiness cookies a forwarded answer gets: the duration of AWSALB (naming the target),
/// and the value and duration of AWSALBTG (the target group, when the rule weighs several).
struct StickyCookies {
    target: Option<Duration>,
    group: Option<(String, Duration)>,
}

impl StickyCookies {
    /// The answer headers of `target` as the client gets them.
    fn finish(&self, h: &mut HeaderMap, target: &TargetRt) {
        strip_hop_by_hop(h);
        if let Some(d) = self.target {
            set_cookies(h, "AWSALB", &target.cookie, d);
        }
        if let Some((value, d)) = &self.group {
            set_cookies(h, "AWSALBTG", value, *d);
        }
    }
}

/// Answers one request. The routing and header work is synchronous ([`route`], and
/// [`h1pool::prepare`] for a request without a body to an HTTP/1.1 target), so the future a
/// request carries holds only what crosses the wait for the target: call it as the request
/// arrives, not from within another future (see [`h1pool::prepare`]).
pub fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> impl std::future::Future<Output = Response<RespBody>> {
    let next = match route(&ctx, req) {
        Routed::Answer(r) => Next::Answer(r),
        Routed::Forward(plan)
            if plan.client_upgrade.is_none()
                && plan.group.cfg.protocol_version == HttpVersion::Http1
                && plan.req.body().is_end_stream()
                // A tunnel once answered 2xx: never a connection to pool.
                && plan.req.method() != http::Method::CONNECT =>
        {
            let Forward {
                req,
                target,
                group,
                inflight,
                cookies,
                ..
            } = plan;
            let (parts, _empty) = req.into_parts();
            Next::H1(H1Forward {
                request: h1pool::prepare(&target.pool, parts),
                target,
                group,
                inflight,
                cookies,
            })
        }
        Routed::Forward(plan) => Next::Client(plan),
    };
    async move {
        match next {
            Next::Answer(r) => r,
            Next::H1(plan) => forward_h1(&ctx, plan).await,
            // Requests with a body, targets over HTTP/2 (or gRPC) and upgrades take the hyper-util
            // client; that future is large, so it is boxed rather than carried (and copied) in
            // every request's future.
            Next::Client(plan) => Box::pin(forward_client(&ctx, plan)).await,
        }
    }
}

/// What [`handle`] waits on.
#[allow(clippy::large_enum_variant)]
enum Next {
    Answer(Response<RespBody>),
    H1(H1Forward),
    Client(Forward),
}

/// A request without a body on its way to an HTTP/1.1 target, its head already written.
struct H1Forward {
    request: h1pool::Prepared,
    target: Arc<TargetRt>,
    group: Arc<GroupSnap>,
    inflight: InFlight,
    cookies: StickyCookies,
}

fn route(ctx: &ConnCtx, req: Request<Incoming>) -> Routed {
    let snap = ctx.listener.load_full();
    let host_full = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let rule = {
        let view = RequestView {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query(),
            host: host_full.map(strip_port),
            headers: req.headers(),
            source: canonical(ctx.peer.ip()),
        };
        snap.rules
            .iter()
            .find(|r| r.conditions.iter().all(|c| condition_matches(c, &view)))
    };
    let Some(rule) = rule else {
        return Routed::Answer(elb_page(503));
    };
    Routed::Answer(match &rule.action {
        ActionRt::Fixed {
            status,
            content_type,
            body,
        } => {
            let mut r = Response::new(full(body.clone()));
            *r.status_mut() = *status;
            r.headers_mut().insert(header::SERVER, SERVER.clone());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
            r
        }
        ActionRt::Redirect {
            protocol,
            host,
            port,
            path,
            query,
            status,
        } => {
            let in_proto = if ctx.secure { "https" } else { "http" };
            let in_host = host_full.map(strip_port).unwrap_or("");
            let in_port = ctx.local.port().to_string();
            let in_path = req.uri().path().trim_start_matches('/');
            let in_query = req.uri().query().unwrap_or("");
            let subst = |s: &str| {
                s.replace("#{protocol}", in_proto)
                    .replace("#{host}", in_host)
                    .replace("#{port}", &in_port)
                    .replace("#{path}", in_path)
                    .replace("#{query}", in_query)
            };
            let proto = subst(protocol).to_ascii_lowercase();
            let port = subst(port);
            let default_port =
                (proto == "http" && port == "80") || (proto == "https" && port == "443");
            let port_part = if default_port || port.is_empty() {
                String::new()
            } else {
                format!(":{port}")
            };
            let path = subst(path);
            let query = subst(query);
            let q = if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            };
            let location = format!("{proto}://{}{port_part}{path}{q}", subst(host));
            let mut r = elb_page(status.as_u16());
            *r.status_mut() = *status;
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                    r
                }
                Err(_) => elb_page(400),
            }
        }
        ActionRt::Forward {
            groups,
            total,
            stickiness,
        } => {
            // The target always gets a Host header: the request's (even when its Connection
            // header names it), else its authority (HTTP/2, an absolute-form target).
            let host = match req.headers().get(header::HOST) {
                Some(v) => Some(v.clone()),
                None => host_full.and_then(|v| HeaderValue::from_str(v).ok()),
            };
            return prepare_forward(ctx, &snap, groups, *total, *stickiness, host, req);
        }
    })
}

fn choose_group<'a>(
    groups: &'a [FwdGroup],
    total: u64,
    sticky: Option<&str>,
) -> Option<&'a FwdGroup> {
    if let Some(c) = sticky {
        if let Some(g) = groups.iter().find(|g| g.weight > 0 && g.cookie == c) {
            return Some(g);
        }
    }
    if groups.len() == 1 {
        return groups.first().filter(|g| g.weight > 0 || total == 0);
    }
    if total == 0 {
        return None;
    }
    let mut x = rand::thread_rng().gen_range(0..total);
    for g in groups {
        if x < u64::from(g.weight) {
            return Some(g);
        }
        x -= u64::from(g.weight);
    }
    None
}

/// Picks the target group and target and rewrites the request for it.
fn prepare_forward(
    ctx: &ConnCtx,
    snap: &ListenerSnap,
    groups: &[FwdGroup],
    total: u64,
    group_stickiness: Option<Duration>,
    host: Option<HeaderValue>,
    mut req: Request<Incoming>,
) -> Routed {
    let tg_sticky = if group_stickiness.is_some() {
        cookie(req.headers(), "AWSALBTG")
    } else {
        None
    };
    let Some(fg) = choose_group(groups, total, tg_sticky) else {
        return Routed::Answer(elb_page(503));
    };
    let Some(group) = fg.group.as_ref() else {
        return Routed::Answer(elb_page(503));
    };
    let gsnap = group.snap.load_full();
    let stickiness = gsnap.cfg.stickiness;
    let sticky = if stickiness.is_some() {
        cookie(req.headers(), "AWSALB")
    } else {
        None
    };
    let Some(target) = group.pick(&gsnap, sticky, None) else {
        return Routed::Answer(elb_page(503));
    };
    let inflight = InFlight::new(target.clone());

    let upgrade = is_upgrade(&req);
    let client_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();
    let upgrade_headers = if upgrade {
        (
            parts.headers.get(header::UPGRADE).cloned(),
            Some(HeaderValue::from_static("upgrade")),
        )
    } else {
        (None, None)
    };
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    if let (Some(u), Some(c)) = upgrade_headers {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, c);
    }
    if let Some(host) = host.filter(|_| !h.contains_key(header::HOST)) {
        h.insert(header::HOST, host);
    }
    let xff = {
        let prior: Vec<&str> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            Some(ctx.client_ip.clone())
        } else {
            let client_ip = ctx.client_ip.to_str().unwrap_or_default();
            HeaderValue::try_from(format!("{}, {client_ip}", prior.join(", "))).ok()
        }
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if ctx.secure { "https" } else { "http" }),
    );
    h.insert(X_FORWARDED_PORT.clone(), ctx.local_port.clone());
    let trace = trace_header(h.get(&X_AMZN_TRACE_ID).and_then(|v| v.to_str().ok()));
    // From the String itself: no second copy of the value.
    if let Ok(v) = HeaderValue::try_from(trace) {
        h.insert(X_AMZN_TRACE_ID.clone(), v);
    }
    let idle = snap.cfg.idle_timeout.max(Duration::from_millis(1));
    let cookies = StickyCookies {
        target: stickiness,
        group: group_stickiness
            .filter(|_| groups.len() > 1)
            .map(|d| (fg.cookie.clone(), d)),
    };
    if !upgrade && gsnap.cfg.protocol_version == HttpVersion::Http1 {
        // HTTP/1.1 to the target on a connection of the target's pool: origin-form URI.
        if let Some(pq) = parts.uri.path_and_query().cloned() {
            parts.uri = http::Uri::from(pq);
        }
        parts.version = Version::HTTP_11;
    }
    Routed::Forward(Forward {
        req: Request::from_parts(parts, body),
        target,
        group: gsnap,
        inflight,
        cookies,
        idle,
        client_upgrade,
    })
}

/// Sends a request without a body to its target over HTTP/1.1 on a connection this task drives.
async fn forward_h1(ctx: &ConnCtx, plan: H1Forward) -> Response<RespBody> {
    let target = &plan.target;
    // Not `until_idle`: an async fn would store the send future twice (argument and select).
    let waited = tokio::select! {
        out = h1pool::send(plan.request, target.address, &plan.group.connector) => {
            Waited::Done(out)
        }
        _ = ctx.alarm.raised() => Waited::Idle,
    };
    let (answer, conn) = match waited {
        Waited::Idle => return elb_page(504),
        Waited::Done(Err(h1pool::SendError::Connect(e))) => {
            tracing::debug!(target = %target.address, error = %e, "target connection failed");
            return elb_page(if e.kind() == std::io::ErrorKind::TimedOut {
                504
            } else {
                502
            });
        }
        Waited::Done(Err(e)) => {
            tracing::debug!(target = %target.address, error = %e, "target request failed");
            return elb_page(502);
        }
        Waited::Done(Ok(r)) => r,
    };
    let body = h1pool::TargetBody::new(&answer, conn, plan.inflight);
    let mut resp = Response::new(body.boxed_unsync());
    *resp.status_mut() = answer.status;
    *resp.version_mut() = answer.version;
    *resp.headers_mut() = answer.headers;
    if let Some(reason) = answer.reason {
        resp.extensions_mut().insert(reason);
    }
    plan.cookies.finish(resp.headers_mut(), &plan.target);
    resp
}

/// Sends the request through the group's hyper-util client: HTTP/2 targets, and upgrades.
async fn forward_client(ctx: &ConnCtx, plan: Forward) -> Response<RespBody> {
    let (target, gsnap, idle) = (&plan.target, &plan.group, plan.idle);
    let (mut parts, body) = plan.req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = match format!("http://{}{}", target.address, pq).parse() {
        Ok(u) => u,
        Err(_) => return elb_page(400),
    };
    parts.version = if gsnap.cfg.protocol_version == HttpVersion::Http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let treq = Request::from_parts(parts, body);
    let mut resp = match until_idle(ctx, gsnap.client.request(treq)).await {
        Waited::Idle => return elb_page(504),
        Waited::Done(Err(e)) => {
            let timed_out = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            tracing::debug!(target = %target.address, error = %e, "target request failed");
            return elb_page(if timed_out { 504 } else { 502 });
        }
        Waited::Done(Ok(r)) => r,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = plan.client_upgrade {
            let target_up = hyper::upgrade::on(&mut resp);
            // The upgraded client side is still the connection's tracked
            // stream: its activity clock keeps counting.
            let activity = ctx.activity.clone();
            tokio::spawn(async move {
                let _inflight = plan.inflight;
                if let (Ok(c), Ok(t)) = tokio::join!(client_up, target_up) {
                    // The load balancer's idle timeout closes an idle
                    // WebSocket as it closes any idle connection.
                    let (mut client, mut target) = (TokioIo::new(c), TokioIo::new(t));
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut target) => {}
                        _ = crate::io::idle_elapsed(&activity, idle) => {}
                    }
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, full(Bytes::new()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    plan.cookies.finish(&mut parts.headers, &plan.target);
    let body = body
        .map_frame(move |f| {
            let _ = &plan.inflight;
            f
        })
        .map_err(h1pool::BoxError::from)
        .boxed_unsync();
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_ids() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(http_date(t), "Tue, 14 Nov 2023 22:13:20 GMT");
        let root = trace_header(None);
        assert!(
            root.starts_with("Root=1-") && root.len() == "Root=1-".len() + 8 + 1 + 24,
            "{root}"
        );
        let (time, random) = root["Root=1-".len()..].split_at(8);
        let secs = u64::from_str_radix(time, 16).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(secs) <= 5, "{root}");
        assert!(
            random.starts_with('-')
                && random[1..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{root}"
        );
        assert_ne!(trace_header(None), root, "ids are random");
        let kept = trace_header(Some("Root=1-67891233-abcdef012345678912345678"));
        assert!(
            kept.starts_with("Self=1-")
                && kept.ends_with(";Root=1-67891233-abcdef012345678912345678"),
            "{kept}"
        );
        assert_eq!(strip_port("a.example.com:8080"), "a.example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        // None present: nothing changes.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn a_requests_future_stays_small() {
        // Each request's future is built and moved (copied) several times on its way into the
        // connection's task: it was 6 KB while it carried a new target connection's and the
        // HTTP/2 client's futures inline; those are boxed now (rare paths).
        fn future_size<A, B, F, Fut>(_: F) -> usize
        where
            F: Fn(A, B) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = future_size(handle);
        assert!(size <= 3072, "a request's future takes {size} bytes");
    }

    #[test]
    fn weighted_choice() {
        let groups = vec![
            FwdGroup {
                group: None,
                weight: 80,
                cookie: "a".into(),
            },
            FwdGroup {
                group: None,
                weight: 20,
                cookie: "b".into(),
            },
        ];
        let mut a = 0;
        for _ in 0..10_000 {
            if choose_group(&groups, 100, None).map(|g| g.cookie.as_str()) == Some("a") {
                a += 1;
            }
        }
        assert!((7_600..8_400).contains(&a), "{a}");
        assert_eq!(
            choose_group(&groups, 100, Some("b")).map(|g| g.cookie.as_str()),
            Some("b")
        );
    }
}
