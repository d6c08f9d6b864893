//! The data plane's input: a plain value the controller builds from the ELBv2 records, and the
//! health reports the data plane sends back. Nothing here knows the store or what an ARN means.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use ipnet::IpNet;

/// Everything the data plane serves. Applying a new value diffs it against the running one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataPlaneConfig {
    pub listeners: Vec<ListenerConfig>,
    /// Key: target group id (its ARN).
    pub target_groups: BTreeMap<String, TargetGroupConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LbKind {
    Application,
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The listener's ARN.
    pub id: String,
    pub kind: LbKind,
    pub protocol: ListenerProtocol,
    /// The load balancer's addresses × the listener's port.
    pub bind: Vec<SocketAddr>,
    /// First = default certificate; the others are chosen by SNI (names from each certificate's SANs).
    pub certificates: Vec<CertificatePem>,
    /// routing.http2.enabled (offers h2 by ALPN on HTTPS listeners).
    pub alpn_http2: bool,
    /// idle_timeout.timeout_seconds (ALB) / 350 s TCP idle (NLB).
    pub idle_timeout: Duration,
    /// Allowed client sources for this port (security groups); None = all.
    pub source_filter: Option<Vec<IpNet>>,
    /// Sorted by priority; the default rule last (no conditions). Unused on NLB listeners except for
    /// the default rule's Forward action.
    pub rules: Vec<RuleConfig>,
    /// For X-Amzn-Trace-Id / logs.
    pub lb_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePem {
    pub chain_pem: String,
    pub key_pem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    pub priority: u32,
    pub conditions: Vec<Condition>,
    pub action: Action,
}

/// AWS's matching: host and header names case-insensitive, `*` and `?` wildcards, path
/// case-sensitive, a condition matches when any of its values does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    PathPattern(Vec<String>),
    HostHeader(Vec<String>),
    HttpHeader {
        name: String,
        values: Vec<String>,
    },
    Method(Vec<String>),
    /// (key, value); a None key matches any key.
    QueryString(Vec<(Option<String>, String)>),
    SourceIp(Vec<IpNet>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Forward {
        /// (target group id, weight).
        groups: Vec<(String, u32)>,
        /// Target group stickiness (cookie AWSALBTG) duration when enabled.
        group_stickiness: Option<Duration>,
    },
    /// Fields may hold `#{protocol}`, `#{host}`, `#{port}`, `#{path}`, `#{query}`.
    Redirect {
        protocol: String,
        host: String,
        port: String,
        path: String,
        query: String,
        status_code: u16,
    },
    FixedResponse {
        status_code: u16,
        content_type: Option<String>,
        body: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpVersion {
    #[default]
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastOutstandingRequests,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupConfig {
    pub protocol: TargetProtocol,
    /// To targets (HTTP/HTTPS groups only).
    pub protocol_version: HttpVersion,
    pub targets: Vec<TargetConfig>,
    pub health_check: HealthCheckConfig,
    pub algorithm: Algorithm,
    /// lb_cookie duration when stickiness is enabled.
    pub stickiness: Option<Duration>,
    /// slow_start.duration_seconds; zero = off.
    pub slow_start: Duration,
    /// Bound as the source address when connecting to targets (the LB's addresses); empty = any.
    pub source_addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub id: String,
    pub port: u16,
    /// Where the data plane connects.
    pub address: SocketAddr,
    /// Deregistering: no new requests or connections; in-flight ones finish.
    pub draining: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthCheckProtocol {
    Http,
    Https,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    pub protocol: HealthCheckProtocol,
    /// None = the traffic port.
    pub port: Option<u16>,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// HTTP codes: "200", "200-299", "200,202".
    pub matcher: String,
}

impl HealthCheckConfig {
    /// AWS's defaults for an ALB target group (HTTP `/`, 30 s, 5 s, 5/2, 200).
    pub fn alb_default() -> Self {
        HealthCheckConfig {
            enabled: true,
            protocol: HealthCheckProtocol::Http,
            port: None,
            path: "/".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        }
    }

    /// AWS's defaults for an NLB TCP target group (TCP, 30 s, 10 s, 3/3).
    pub fn nlb_default() -> Self {
        HealthCheckConfig {
            enabled: true,
            protocol: HealthCheckProtocol::Tcp,
            port: None,
            path: "/".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            matcher: "200-399".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    Initial,
    Healthy,
    Unhealthy,
    /// Health checks disabled (reason Target.HealthCheckDisabled); routed as healthy.
    Unavailable,
}

/// Sent on the channel only when a target's state, reason or description changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub target_group: String,
    pub target_id: String,
    pub port: u16,
    pub state: HealthState,
    /// AWS's reason codes: Elb.InitialHealthChecking, Target.ResponseCodeMismatch, Target.Timeout,
    /// Target.FailedHealthChecks. None when healthy.
    pub reason: Option<String>,
    pub description: Option<String>,
}

/// A listener address the data plane could not bind (or a certificate it could not load).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("listener {listener_id}: {address:?}: {message}")]
pub struct BindError {
    pub listener_id: String,
    /// None when the error concerns the listener as a whole (e.g. its certificates).
    pub address: Option<SocketAddr>,
    pub message: String,
}
