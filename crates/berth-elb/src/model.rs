//! The records of ELBv2 and where they live in the store.
//!
//! Layout: one document per account and region, `elb/<account>/<region>/state`
//! ([`State`]): load balancers, target groups (with their registered targets
//! and the targets' health), listeners and rules. Every call reads and
//! writes the whole document in one store mutation, so a check that spans
//! resources (a target group in use, a duplicate priority, the quotas) runs
//! against exactly the state it guards. Each load balancer's DNS name is
//! published in Berth's DNS registry in the same mutation (see [`dns_ops`]).

use std::collections::BTreeMap;

use berth_model::dns_registry::{self, HostedZone, RecordSet, RecordType, Routing};
use berth_model::AwsError;
use berth_store::{Op, ReadView, StoreError};
use serde::{Deserialize, Serialize};

/// Prefix of every ELB key; the lead's controller watches it.
pub const PREFIX: &str = "elb/";

pub fn state_key(account: &str, region: &str) -> String {
    format!("{PREFIX}{account}/{region}/state")
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    #[serde(default)]
    pub target_groups: BTreeMap<String, TargetGroup>,
    #[serde(default)]
    pub listeners: BTreeMap<String, Listener>,
    #[serde(default)]
    pub rules: BTreeMap<String, Rule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LbZone {
    pub subnet_id: String,
    pub zone_name: String,
    pub zone_id: String,
    pub eni_id: String,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    /// `application` | `network`.
    pub lb_type: String,
    pub scheme: String,
    pub vpc_id: String,
    pub created: f64,
    pub dns_name: String,
    pub hosted_zone_id: String,
    pub zones: Vec<LbZone>,
    pub security_groups: Vec<String>,
    pub ip_address_type: String,
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl LoadBalancer {
    pub fn is_alb(&self) -> bool {
        self.lb_type == "application"
    }

    /// The `app/NAME/ID` part of the ARN.
    pub fn path(&self) -> &str {
        self.arn.split_once(":loadbalancer/").map_or("", |(_, p)| p)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: Option<String>,
    /// `traffic-port` or a number.
    pub port: Option<String>,
    pub path: Option<String>,
    pub interval: u32,
    pub timeout: u32,
    pub healthy: u32,
    pub unhealthy: u32,
    pub http_code: Option<String>,
    pub grpc_code: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Initial,
    Healthy,
    Unhealthy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub id: String,
    pub port: u16,
    #[serde(default)]
    pub availability_zone: Option<String>,
    pub registered: f64,
    /// Set while draining: the epoch second the target goes away.
    #[serde(default)]
    pub drain_until: Option<f64>,
    /// The data plane's last report; `None` before the first.
    #[serde(default)]
    pub health: Option<HealthState>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub protocol: Option<String>,
    pub protocol_version: Option<String>,
    pub port: Option<u16>,
    pub vpc_id: Option<String>,
    pub target_type: String,
    pub ip_address_type: Option<String>,
    pub health: HealthCheck,
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub targets: Vec<Target>,
}

impl TargetGroup {
    /// Whether the group serves a network load balancer (its protocol is a
    /// layer-4 one).
    pub fn is_network(&self) -> bool {
        matches!(
            self.protocol.as_deref(),
            Some("TCP" | "TLS" | "UDP" | "TCP_UDP")
        )
    }

    pub fn deregistration_delay(&self) -> u32 {
        self.attributes
            .get("deregistration_delay.timeout_seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(300)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    /// (target group ARN, weight).
    pub groups: Vec<(String, Option<u32>)>,
    pub stickiness: bool,
    pub stickiness_duration: Option<u32>,
    /// Given as `TargetGroupArn` (AWS answers it back then).
    #[serde(default)]
    pub plain: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Redirect {
    pub protocol: String,
    pub port: String,
    pub host: String,
    pub path: String,
    pub query: String,
    pub status_code: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FixedResponse {
    pub body: Option<String>,
    pub status_code: String,
    pub content_type: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub kind: String,
    pub order: Option<u32>,
    pub forward: Option<Forward>,
    pub redirect: Option<Redirect>,
    pub fixed_response: Option<FixedResponse>,
}

impl Action {
    pub fn target_groups(&self) -> impl Iterator<Item = &str> {
        self.forward
            .iter()
            .flat_map(|f| f.groups.iter().map(|(arn, _)| arn.as_str()))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub field: String,
    /// host-header, path-pattern, http-header, http-request-method,
    /// source-ip values.
    pub values: Vec<String>,
    pub header_name: Option<String>,
    /// query-string pairs (key optional).
    pub query: Vec<(Option<String>, String)>,
    /// Given in the legacy `Values` form.
    pub legacy: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub arn: String,
    pub lb_arn: String,
    pub port: u16,
    pub protocol: String,
    pub ssl_policy: Option<String>,
    /// The default certificate.
    pub certificate: Option<String>,
    /// Certificates added with AddListenerCertificates.
    #[serde(default)]
    pub extra_certificates: Vec<String>,
    pub alpn_policy: Option<String>,
    pub default_actions: Vec<Action>,
    pub default_rule_arn: String,
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub arn: String,
    pub listener_arn: String,
    pub priority: u32,
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl State {
    pub fn load(view: &dyn ReadView, account: &str, region: &str) -> Result<State, AwsError> {
        match view.get(&state_key(account, region)) {
            None => Ok(State::default()),
            Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| {
                AwsError::internal(format!("the stored load balancer state is unreadable: {e}"))
            }),
        }
    }

    /// The load balancers whose listeners name the certificate `cert_arn`
    /// (default or added with AddListenerCertificates), each once.
    pub fn certificate_users(&self, cert_arn: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in self.listeners.values() {
            let uses = l.certificate.as_deref() == Some(cert_arn)
                || l.extra_certificates.iter().any(|c| c == cert_arn);
            if uses && !out.contains(&l.lb_arn) {
                out.push(l.lb_arn.clone());
            }
        }
        out
    }

    /// The load balancers whose listeners or rules forward to `tg_arn`.
    pub fn lbs_of_group(&self, tg_arn: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in self.listeners.values() {
            let uses = l
                .default_actions
                .iter()
                .any(|a| a.target_groups().any(|t| t == tg_arn))
                || self.rules.values().any(|r| {
                    r.listener_arn == l.arn
                        && r.actions
                            .iter()
                            .any(|a| a.target_groups().any(|t| t == tg_arn))
                });
            if uses && !out.contains(&l.lb_arn) {
                out.push(l.lb_arn.clone());
            }
        }
        out
    }

    pub fn listeners_of(&self, lb_arn: &str) -> impl Iterator<Item = &Listener> {
        let lb_arn = lb_arn.to_string();
        self.listeners.values().filter(move |l| l.lb_arn == lb_arn)
    }

    pub fn rules_of(&self, listener_arn: &str) -> impl Iterator<Item = &Rule> {
        let listener_arn = listener_arn.to_string();
        self.rules
            .values()
            .filter(move |r| r.listener_arn == listener_arn)
    }

    /// Rules of a load balancer, counting each listener's default rule.
    pub fn rule_count(&self, lb_arn: &str) -> usize {
        self.listeners_of(lb_arn)
            .map(|l| 1 + self.rules_of(&l.arn).count())
            .sum()
    }
}

pub fn store_error(e: StoreError) -> AwsError {
    AwsError::internal(format!("the store failed: {e}"))
}

// ---- DNS ------------------------------------------------------------------

/// The registry zone of a region's load balancers of one type.
pub fn dns_zone(region: &str, lb_type: &str) -> (String, String) {
    if lb_type == "network" {
        (
            format!("elb-net-{region}"),
            format!("elb.{region}.amazonaws.com"),
        )
    } else {
        (
            format!("elb-app-{region}"),
            format!("{region}.elb.amazonaws.com"),
        )
    }
}

fn lb_id(lb: &LoadBalancer) -> &str {
    lb.arn.rsplit('/').next().unwrap_or("")
}

/// The registry writes that make the DNS registry follow `after` from
/// `before`: one A set per load balancer (its addresses), the zone written
/// with the first load balancer of its kind.
pub fn dns_ops(before: &State, after: &State, account: &str, region: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    for (arn, lb) in &before.load_balancers {
        let gone = after
            .load_balancers
            .get(arn)
            .is_none_or(|a| a.dns_name != lb.dns_name);
        if gone {
            let (zone, _) = dns_zone(region, &lb.lb_type);
            ops.push(Op::delete(dns_registry::record_key(
                &zone,
                &lb.dns_name,
                RecordType::A,
                lb_id(lb),
            )));
        }
    }
    for (arn, lb) in &after.load_balancers {
        if before.load_balancers.get(arn) == Some(lb) {
            continue;
        }
        let (zone, apex) = dns_zone(region, &lb.lb_type);
        if !before
            .load_balancers
            .values()
            .any(|b| b.lb_type == lb.lb_type)
        {
            let hosted = HostedZone {
                id: zone.clone(),
                name: apex,
                vpc_ids: Vec::new(),
                account: account.to_string(),
                region: region.to_string(),
                publisher: "elasticloadbalancing".into(),
                negative_ttl: 60,
            };
            if let Ok(bytes) = serde_json::to_vec(&hosted) {
                ops.push(Op::put(dns_registry::zone_key(&zone), bytes));
            }
        }
        let set = RecordSet {
            name: dns_registry::normalize_name(&lb.dns_name),
            record_type: RecordType::A,
            ttl: 60,
            values: lb.zones.iter().map(|z| z.address.clone()).collect(),
            routing: Routing::Multivalue,
            weight: None,
            healthy: true,
            source: format!("elasticloadbalancing:{}", lb.arn),
        };
        if let Ok(bytes) = serde_json::to_vec(&set) {
            ops.push(Op::put(
                dns_registry::record_key(&zone, &lb.dns_name, RecordType::A, lb_id(lb)),
                bytes,
            ));
        }
    }
    ops
}

/// Route 53's hosted zone of a region's load balancers (AWS's table), for
/// `CanonicalHostedZoneId`.
pub fn canonical_zone(region: &str, lb_type: &str) -> &'static str {
    const APP: &[(&str, &str)] = &[
        ("us-east-1", "Z35SXDOTRQ7X7K"),
        ("us-east-2", "Z3AADJGX6KTTL2"),
        ("us-west-1", "Z368ELLRRE2KJ0"),
        ("us-west-2", "Z1H1FL5HABSF5"),
        ("ca-central-1", "ZQSVJUPU6J1EY"),
        ("eu-west-1", "Z32O12XQLNTSW2"),
        ("eu-west-2", "ZHURV8PSTC4K8"),
        ("eu-west-3", "Z3Q77PNBQS71R4"),
        ("eu-central-1", "Z215JYRZR1TBD5"),
        ("eu-north-1", "Z23TAZ7KRGBOK4"),
        ("ap-south-1", "ZP97RAFLXTNZK"),
        ("ap-northeast-1", "Z14GRHDCWA56QT"),
        ("ap-northeast-2", "ZWKZPGTI48KDX"),
        ("ap-southeast-1", "Z1LMS91P8CMLE5"),
        ("ap-southeast-2", "Z1GM3OXH4ZPM65"),
        ("sa-east-1", "Z2P70J7HTTTPLU"),
    ];
    const NET: &[(&str, &str)] = &[
        ("us-east-1", "Z26RNL4JYFTOTI"),
        ("us-east-2", "ZLMOA37VPKANP"),
        ("us-west-1", "Z24FKFUX50B4VW"),
        ("us-west-2", "Z18D5FSROUN65G"),
        ("ca-central-1", "Z2EPGBW3API2WT"),
        ("eu-west-1", "Z2IFOLAFXWLO4F"),
        ("eu-west-2", "ZD4D7Y8KGAS4G"),
        ("eu-west-3", "Z1CMS0P5QUZ6D5"),
        ("eu-central-1", "Z3F0SRJ5LGBH90"),
        ("eu-north-1", "Z1UDT6IFJ4EJM"),
        ("ap-south-1", "ZVDDRBQ08TROA"),
        ("ap-northeast-1", "Z31USIVHYNEOWT"),
        ("ap-northeast-2", "ZIBE1TIR4HY56"),
        ("ap-southeast-1", "ZKVM4W9LS7TM"),
        ("ap-southeast-2", "ZCT6FZBF4DROD"),
        ("sa-east-1", "ZTK26PT1VY4CU"),
    ];
    let table = if lb_type == "network" { NET } else { APP };
    table
        .iter()
        .find(|(r, _)| *r == region)
        .map_or(table[0].1, |(_, z)| z)
}

/// AWS's DNS name of a new load balancer.
pub fn dns_name(name: &str, lb_type: &str, scheme: &str, region: &str) -> String {
    let internal = if scheme == "internal" {
        "internal-"
    } else {
        ""
    };
    if lb_type == "network" {
        format!(
            "{internal}{name}-{}.elb.{region}.amazonaws.com",
            berth_util::ids::random_hex(8)
        )
    } else {
        let digits: u64 = rand::random::<u64>() % 9_000_000_000 + 1_000_000_000;
        format!("{internal}{name}-{digits}.{region}.elb.amazonaws.com")
    }
}
