//! Attributes of load balancers, target groups and listeners: AWS's
//! defaults and the values each key accepts.

use std::collections::BTreeMap;

use berth_model::AwsError;

use crate::wire::{error, validation};

/// How a key's value is checked.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Range(i64, i64),
    Choice(&'static [&'static str]),
    /// 0, or `min..=max`.
    ZeroOr(i64, i64),
    Text,
}

type Table = &'static [(&'static str, &'static str, Kind)];

const ALB: Table = &[
    ("access_logs.s3.enabled", "false", Kind::Bool),
    ("access_logs.s3.bucket", "", Kind::Text),
    ("access_logs.s3.prefix", "", Kind::Text),
    ("client_keep_alive.seconds", "3600", Kind::Range(60, 604800)),
    ("connection_logs.s3.enabled", "false", Kind::Bool),
    ("connection_logs.s3.bucket", "", Kind::Text),
    ("connection_logs.s3.prefix", "", Kind::Text),
    ("deletion_protection.enabled", "false", Kind::Bool),
    ("idle_timeout.timeout_seconds", "60", Kind::Range(1, 4000)),
    ("load_balancing.cross_zone.enabled", "true", Kind::Bool),
    (
        "routing.http.desync_mitigation_mode",
        "defensive",
        Kind::Choice(&["monitor", "defensive", "strictest"]),
    ),
    (
        "routing.http.drop_invalid_header_fields.enabled",
        "false",
        Kind::Bool,
    ),
    (
        "routing.http.preserve_host_header.enabled",
        "false",
        Kind::Bool,
    ),
    (
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
        "false",
        Kind::Bool,
    ),
    ("routing.http.xff_client_port.enabled", "false", Kind::Bool),
    (
        "routing.http.xff_header_processing.mode",
        "append",
        Kind::Choice(&["append", "preserve", "remove"]),
    ),
    ("routing.http2.enabled", "true", Kind::Bool),
    ("waf.fail_open.enabled", "false", Kind::Bool),
    ("zonal_shift.config.enabled", "false", Kind::Bool),
];

const NLB: Table = &[
    ("access_logs.s3.enabled", "false", Kind::Bool),
    ("access_logs.s3.bucket", "", Kind::Text),
    ("access_logs.s3.prefix", "", Kind::Text),
    ("deletion_protection.enabled", "false", Kind::Bool),
    (
        "dns_record.client_routing_policy",
        "any_availability_zone",
        Kind::Choice(&[
            "availability_zone_affinity",
            "partial_availability_zone_affinity",
            "any_availability_zone",
        ]),
    ),
    ("load_balancing.cross_zone.enabled", "false", Kind::Bool),
    ("zonal_shift.config.enabled", "false", Kind::Bool),
];

const TG_HEALTH: Table = &[
    (
        "target_group_health.dns_failover.minimum_healthy_targets.count",
        "1",
        Kind::Text,
    ),
    (
        "target_group_health.dns_failover.minimum_healthy_targets.percentage",
        "off",
        Kind::Text,
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
        "1",
        Kind::Text,
    ),
    (
        "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
        "off",
        Kind::Text,
    ),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
        Kind::Choice(&["true", "false", "use_load_balancer_configuration"]),
    ),
];

const TG_ALB: Table = &[
    (
        "deregistration_delay.timeout_seconds",
        "300",
        Kind::Range(0, 3600),
    ),
    (
        "load_balancing.algorithm.type",
        "round_robin",
        Kind::Choice(&[
            "round_robin",
            "least_outstanding_requests",
            "weighted_random",
        ]),
    ),
    (
        "load_balancing.algorithm.anomaly_mitigation",
        "off",
        Kind::Choice(&["on", "off"]),
    ),
    ("slow_start.duration_seconds", "0", Kind::ZeroOr(30, 900)),
    ("stickiness.enabled", "false", Kind::Bool),
    (
        "stickiness.type",
        "lb_cookie",
        Kind::Choice(&["lb_cookie", "app_cookie"]),
    ),
    (
        "stickiness.lb_cookie.duration_seconds",
        "86400",
        Kind::Range(1, 604800),
    ),
    ("stickiness.app_cookie.cookie_name", "", Kind::Text),
    (
        "stickiness.app_cookie.duration_seconds",
        "86400",
        Kind::Range(1, 604800),
    ),
];

const TG_NLB: Table = &[
    (
        "deregistration_delay.timeout_seconds",
        "300",
        Kind::Range(0, 3600),
    ),
    (
        "deregistration_delay.connection_termination.enabled",
        "false",
        Kind::Bool,
    ),
    ("proxy_protocol_v2.enabled", "false", Kind::Bool),
    ("stickiness.enabled", "false", Kind::Bool),
    ("stickiness.type", "source_ip", Kind::Choice(&["source_ip"])),
    (
        "target_health_state.unhealthy.connection_termination.enabled",
        "true",
        Kind::Bool,
    ),
    (
        "target_health_state.unhealthy.draining_interval_seconds",
        "0",
        Kind::Range(0, 360000),
    ),
];

const LISTENER_HTTP: Table = &[("routing.http.response.server.enabled", "true", Kind::Bool)];
const LISTENER_TCP: Table = &[("tcp.idle_timeout.seconds", "350", Kind::Range(60, 6000))];

fn defaults(tables: &[Table]) -> BTreeMap<String, String> {
    tables
        .iter()
        .flat_map(|t| t.iter())
        .map(|(k, v, _)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn lb_defaults(alb: bool) -> BTreeMap<String, String> {
    defaults(&[if alb { ALB } else { NLB }])
}

pub fn tg_defaults(network: bool, target_type: &str) -> BTreeMap<String, String> {
    let mut out = defaults(&[if network { TG_NLB } else { TG_ALB }, TG_HEALTH]);
    if network {
        out.insert(
            "preserve_client_ip.enabled".into(),
            if target_type == "instance" {
                "true"
            } else {
                "false"
            }
            .into(),
        );
    }
    out
}

pub fn listener_defaults(protocol: &str) -> BTreeMap<String, String> {
    match protocol {
        "HTTP" | "HTTPS" => defaults(&[LISTENER_HTTP]),
        "TCP" => defaults(&[LISTENER_TCP]),
        _ => BTreeMap::new(),
    }
}

fn check(tables: &[Table], what: &str, key: &str, value: &str) -> Result<(), AwsError> {
    let kind = tables
        .iter()
        .flat_map(|t| t.iter())
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, kind)| *kind);
    let Some(kind) = kind else {
        if key == "preserve_client_ip.enabled" && what == "Target group" {
            return check_bool(key, value);
        }
        return Err(validation(format!(
            "{what} attribute key '{key}' is not recognized"
        )));
    };
    let invalid = || {
        error(
            "InvalidConfigurationRequest",
            format!("{what} attribute '{key}' has an invalid value '{value}'"),
        )
    };
    match kind {
        Kind::Bool => check_bool(key, value),
        Kind::Range(min, max) => {
            let n: i64 = value.parse().map_err(|_| invalid())?;
            if n < min || n > max {
                return Err(error(
                    "InvalidConfigurationRequest",
                    format!("{what} attribute '{key}' must be between {min} and {max}, inclusive"),
                ));
            }
            Ok(())
        }
        Kind::ZeroOr(min, max) => {
            let n: i64 = value.parse().map_err(|_| invalid())?;
            if n != 0 && (n < min || n > max) {
                return Err(error(
                    "InvalidConfigurationRequest",
                    format!(
                        "{what} attribute '{key}' must be 0 or between {min} and {max}, inclusive"
                    ),
                ));
            }
            Ok(())
        }
        Kind::Choice(values) => {
            if values.contains(&value) {
                Ok(())
            } else {
                Err(error(
                    "InvalidConfigurationRequest",
                    format!(
                        "{what} attribute '{key}' must be one of: {}",
                        values.join(", ")
                    ),
                ))
            }
        }
        Kind::Text => Ok(()),
    }
}

fn check_bool(key: &str, value: &str) -> Result<(), AwsError> {
    if value == "true" || value == "false" {
        Ok(())
    } else {
        Err(error(
            "InvalidConfigurationRequest",
            format!("Attribute '{key}' must be 'true' or 'false'"),
        ))
    }
}

pub fn check_lb(alb: bool, key: &str, value: &str) -> Result<(), AwsError> {
    check(&[if alb { ALB } else { NLB }], "Load balancer", key, value)
}

pub fn check_tg(network: bool, key: &str, value: &str) -> Result<(), AwsError> {
    check(
        &[if network { TG_NLB } else { TG_ALB }, TG_HEALTH],
        "Target group",
        key,
        value,
    )
}

pub fn check_listener(protocol: &str, key: &str, value: &str) -> Result<(), AwsError> {
    let table: Table = match protocol {
        "HTTP" | "HTTPS" => LISTENER_HTTP,
        "TCP" => LISTENER_TCP,
        _ => &[],
    };
    check(&[table], "Listener", key, value)
}

/// DescribeSSLPolicies' table: (name, protocols, ciphers, load balancer types).
pub struct SslPolicy {
    pub name: &'static str,
    pub protocols: &'static [&'static str],
    pub ciphers: &'static [&'static str],
}

const TLS12_CIPHERS: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES128-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
    "AES256-SHA",
];

const TLS13_CIPHERS: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
];

const TLS13_ONLY: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

const FS_12: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
];

pub const DEFAULT_SSL_POLICY: &str = "ELBSecurityPolicy-2016-08";

pub const SSL_POLICIES: &[SslPolicy] = &[
    SslPolicy {
        name: "ELBSecurityPolicy-2016-08",
        protocols: &["TLSv1", "TLSv1.1", "TLSv1.2"],
        ciphers: TLS12_CIPHERS,
    },
    SslPolicy {
        name: "ELBSecurityPolicy-TLS-1-2-2017-01",
        protocols: &["TLSv1.2"],
        ciphers: TLS12_CIPHERS,
    },
    SslPolicy {
        name: "ELBSecurityPolicy-FS-1-2-Res-2020-10",
        protocols: &["TLSv1.2"],
        ciphers: FS_12,
    },
    SslPolicy {
        name: "ELBSecurityPolicy-TLS13-1-2-2021-06",
        protocols: &["TLSv1.2", "TLSv1.3"],
        ciphers: TLS13_CIPHERS,
    },
    SslPolicy {
        name: "ELBSecurityPolicy-TLS13-1-3-2021-06",
        protocols: &["TLSv1.3"],
        ciphers: TLS13_ONLY,
    },
];

/// DescribeAccountLimits: AWS's default quotas, enforced.
pub const LIMITS: &[(&str, usize)] = &[
    ("application-load-balancers", 50),
    ("target-groups", 3000),
    ("targets-per-application-load-balancer", 1000),
    ("listeners-per-application-load-balancer", 50),
    ("rules-per-application-load-balancer", 100),
    ("network-load-balancers", 50),
    ("targets-per-network-load-balancer", 3000),
    (
        "targets-per-availability-zone-per-network-load-balancer",
        500,
    ),
    ("listeners-per-network-load-balancer", 50),
    ("condition-values-per-alb-rule", 5),
    ("condition-wildcards-per-alb-rule", 5),
    ("target-groups-per-application-load-balancer", 100),
    ("target-groups-per-action-on-application-load-balancer", 5),
    ("target-groups-per-action-on-network-load-balancer", 1),
    ("certificates-per-application-load-balancer", 25),
    ("certificates-per-network-load-balancer", 25),
    ("targets-per-target-group", 1000),
    (
        "target-id-registrations-per-application-load-balancer",
        1000,
    ),
];

pub fn limit(name: &str) -> usize {
    LIMITS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(usize::MAX, |(_, v)| *v)
}
