//! Load balancers in the server: what `berth-elb` (the ELBv2 records) needs
//! from the other services, and the controller that makes the data plane
//! (`berth-lbproxy`) serve those records. The controller (leader work)
//! rebuilds the data plane's configuration from a snapshot of every ELB
//! record whenever the ELB, ACM or EC2 records change (store watch; a
//! sweep every few seconds catches what the watch cannot say, such as an
//! instance target's host address), makes the load balancers' addresses
//! local ([`crate::lb_addresses`]), and writes the data plane's health
//! reports back, where DescribeTargetHealth and ECS read them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_elb::{ElbSnapshot, SnapshotListener, SnapshotLoadBalancer, SnapshotTargetGroup};
use berth_lbproxy::{
    Action, Algorithm, CertificatePem, Condition, DataPlane, DataPlaneConfig, HealthCheckConfig,
    HealthCheckProtocol, HealthReport, HttpVersion, IpNet, LbKind, ListenerConfig,
    ListenerProtocol, RuleConfig, TargetConfig, TargetGroupConfig, TargetProtocol,
};
use berth_model::agent_protocol::NetworkRule;
use berth_store::{Op, Store};

use crate::lb_addresses::HostAddresses;

/// How often the configuration is rebuilt even when no record changed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// ALB's default idle timeout; NLB's TCP idle timeout.
const ALB_IDLE_TIMEOUT: u64 = 60;
const NLB_IDLE_TIMEOUT: u64 = 350;
/// Where the installation's host link id is kept.
const HOST_LINK_KEY: &str = "lb-host/link-id";

/// Where a load balancer's certificates and security groups come from.
pub trait ListenerInputs {
    /// The certificate (chain + key) an HTTPS/TLS listener names.
    fn certificate(&self, account: &str, region: &str, arn: &str) -> Option<CertificatePem>;
    /// The ingress rules of the load balancer's interface (`eni_id`), group
    /// peers resolved to addresses.
    fn ingress(&self, account: &str, region: &str, eni_id: &str) -> Option<Vec<NetworkRule>>;
}

/// The data plane's configuration for every load balancer of the snapshot.
/// Pure: the certificates and security groups come through `inputs`.
pub fn data_plane_config(snapshot: &ElbSnapshot, inputs: &dyn ListenerInputs) -> DataPlaneConfig {
    let mut config = DataPlaneConfig::default();
    let lbs: BTreeMap<&str, &SnapshotLoadBalancer> = snapshot
        .load_balancers
        .iter()
        .map(|lb| (lb.arn.as_str(), lb))
        .collect();
    for lb in &snapshot.load_balancers {
        for listener in &lb.listeners {
            if let Some(l) = listener_config(lb, listener, inputs) {
                config.listeners.push(l);
            }
        }
    }
    for tg in &snapshot.target_groups {
        // A group no load balancer uses gets no traffic and no checks.
        let sources: Vec<IpAddr> = tg
            .load_balancer_arns
            .iter()
            .filter_map(|arn| lbs.get(arn.as_str()))
            .flat_map(|lb| lb.addresses.iter().map(|(_, _, _, ip)| IpAddr::V4(*ip)))
            .collect();
        if sources.is_empty() {
            continue;
        }
        config
            .target_groups
            .insert(tg.arn.clone(), target_group_config(tg, sources));
    }
    config
}

fn listener_config(
    lb: &SnapshotLoadBalancer,
    listener: &SnapshotListener,
    inputs: &dyn ListenerInputs,
) -> Option<ListenerConfig> {
    let protocol = match listener.protocol.as_str() {
        "HTTP" => ListenerProtocol::Http,
        "HTTPS" => ListenerProtocol::Https,
        "TCP" => ListenerProtocol::Tcp,
        "TLS" => ListenerProtocol::Tls,
        // UDP and TCP_UDP listeners are refused by the API.
        _ => return None,
    };
    let kind = if lb.lb_type == "network" {
        LbKind::Network
    } else {
        LbKind::Application
    };
    let certificates = listener
        .certificates
        .iter()
        .filter_map(|arn| inputs.certificate(&lb.account, &lb.region, arn))
        .collect();
    let idle_timeout = match kind {
        LbKind::Application => {
            seconds(&lb.attributes, "idle_timeout.timeout_seconds").unwrap_or(ALB_IDLE_TIMEOUT)
        }
        LbKind::Network => {
            seconds(&listener.attributes, "tcp.idle_timeout.seconds").unwrap_or(NLB_IDLE_TIMEOUT)
        }
    };
    let alpn_http2 = protocol == ListenerProtocol::Https
        && lb
            .attributes
            .get("routing.http2.enabled")
            .map(String::as_str)
            != Some("false");
    let source_filter = if lb.security_groups.is_empty() {
        None
    } else {
        Some(allowed_sources(lb, listener.port, inputs))
    };
    let mut rules: Vec<RuleConfig> = listener
        .rules
        .iter()
        .filter_map(|(priority, conditions, actions)| {
            Some(RuleConfig {
                priority: *priority,
                conditions: conditions.iter().filter_map(condition).collect(),
                action: action(actions)?,
            })
        })
        .collect();
    if let Some(default) = action(&listener.default_actions) {
        rules.push(RuleConfig {
            priority: u32::MAX,
            conditions: Vec::new(),
            action: default,
        });
    }
    Some(ListenerConfig {
        id: listener.arn.clone(),
        kind,
        protocol,
        bind: lb
            .addresses
            .iter()
            .map(|(_, _, _, ip)| SocketAddr::new(IpAddr::V4(*ip), listener.port))
            .collect(),
        certificates,
        alpn_http2,
        idle_timeout: Duration::from_secs(idle_timeout),
        source_filter,
        rules,
        lb_id: lb.arn.clone(),
    })
}

/// The client sources a load balancer's security groups let reach `port`
/// (TCP): the union over its interfaces' ingress rules.
fn allowed_sources(
    lb: &SnapshotLoadBalancer,
    port: u16,
    inputs: &dyn ListenerInputs,
) -> Vec<IpNet> {
    let mut out: BTreeSet<IpNet> = BTreeSet::new();
    for (_, _, eni, _) in &lb.addresses {
        for rule in inputs
            .ingress(&lb.account, &lb.region, eni)
            .unwrap_or_default()
        {
            let protocol_matches = matches!(rule.protocol.as_str(), "tcp" | "6" | "-1");
            let port_matches = match (rule.from_port, rule.to_port) {
                (Some(from), Some(to)) if rule.protocol != "-1" => {
                    (from..=to).contains(&i32::from(port))
                }
                _ => true,
            };
            if protocol_matches && port_matches {
                out.extend(rule.cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()));
            }
        }
    }
    out.into_iter().collect()
}

fn seconds(attributes: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    attributes.get(key).and_then(|v| v.parse().ok())
}

fn condition(c: &berth_elb::model::Condition) -> Option<Condition> {
    Some(match c.field.as_str() {
        "path-pattern" => Condition::PathPattern(c.values.clone()),
        "host-header" => Condition::HostHeader(c.values.clone()),
        "http-header" => Condition::HttpHeader {
            name: c.header_name.clone()?,
            values: c.values.clone(),
        },
        "http-request-method" => Condition::Method(c.values.clone()),
        "query-string" => Condition::QueryString(c.query.clone()),
        "source-ip" => {
            Condition::SourceIp(c.values.iter().filter_map(|v| v.parse().ok()).collect())
        }
        _ => return None,
    })
}

/// The action that answers: the last by order (authentication actions,
/// which Berth refuses, would come before it).
fn action(actions: &[berth_elb::model::Action]) -> Option<Action> {
    let last = actions.iter().max_by_key(|a| a.order.unwrap_or(0))?;
    match last.kind.as_str() {
        "forward" => {
            let forward = last.forward.as_ref()?;
            Some(Action::Forward {
                groups: forward
                    .groups
                    .iter()
                    .map(|(arn, weight)| (arn.clone(), weight.unwrap_or(1)))
                    .collect(),
                group_stickiness: forward.stickiness.then(|| {
                    Duration::from_secs(u64::from(forward.stickiness_duration.unwrap_or(3600)))
                }),
            })
        }
        "redirect" => {
            let r = last.redirect.as_ref()?;
            Some(Action::Redirect {
                protocol: r.protocol.clone(),
                host: r.host.clone(),
                port: r.port.clone(),
                path: r.path.clone(),
                query: r.query.clone(),
                status_code: if r.status_code == "HTTP_302" {
                    302
                } else {
                    301
                },
            })
        }
        "fixed-response" => {
            let f = last.fixed_response.as_ref()?;
            Some(Action::FixedResponse {
                status_code: f.status_code.parse().ok()?,
                content_type: f.content_type.clone(),
                body: f.body.clone().unwrap_or_default(),
            })
        }
        _ => None,
    }
}

fn target_group_config(tg: &SnapshotTargetGroup, sources: Vec<IpAddr>) -> TargetGroupConfig {
    let protocol = match tg.protocol.as_str() {
        "HTTPS" => TargetProtocol::Https,
        "TCP" | "TCP_UDP" | "UDP" => TargetProtocol::Tcp,
        "TLS" => TargetProtocol::Tls,
        _ => TargetProtocol::Http,
    };
    let hc = &tg.health_check;
    let network = matches!(protocol, TargetProtocol::Tcp | TargetProtocol::Tls);
    let defaults = if network {
        HealthCheckConfig::nlb_default()
    } else {
        HealthCheckConfig::alb_default()
    };
    let health_check = HealthCheckConfig {
        enabled: hc.enabled,
        protocol: match hc.protocol.as_deref() {
            Some("HTTP") => HealthCheckProtocol::Http,
            Some("HTTPS") => HealthCheckProtocol::Https,
            Some("TCP") => HealthCheckProtocol::Tcp,
            _ => defaults.protocol,
        },
        port: hc.port.as_deref().and_then(|p| p.parse().ok()),
        path: hc.path.clone().unwrap_or(defaults.path),
        interval: Duration::from_secs(u64::from(hc.interval.max(1))),
        timeout: Duration::from_secs(u64::from(hc.timeout.max(1))),
        healthy_threshold: hc.healthy.max(1),
        unhealthy_threshold: hc.unhealthy.max(1),
        matcher: hc.http_code.clone().unwrap_or(defaults.matcher),
    };
    let attribute = |key: &str| tg.attributes.get(key).map(String::as_str);
    let stickiness = (attribute("stickiness.enabled") == Some("true")
        && attribute("stickiness.type").is_none_or(|t| t == "lb_cookie"))
    .then(|| {
        Duration::from_secs(
            attribute("stickiness.lb_cookie.duration_seconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(86_400),
        )
    });
    TargetGroupConfig {
        protocol,
        protocol_version: match tg.protocol_version.as_deref() {
            Some("HTTP2") => HttpVersion::Http2,
            _ => HttpVersion::Http1,
        },
        targets: tg
            .targets
            .iter()
            .filter_map(|t| {
                Some(TargetConfig {
                    id: t.id.clone(),
                    port: t.port,
                    address: SocketAddr::new(IpAddr::V4(t.address?), t.port),
                    draining: t.drain_until.is_some(),
                })
            })
            .collect(),
        health_check,
        algorithm: match attribute("load_balancing.algorithm.type") {
            Some("least_outstanding_requests") => Algorithm::LeastOutstandingRequests,
            _ => Algorithm::RoundRobin,
        },
        stickiness,
        slow_start: Duration::from_secs(
            attribute("slow_start.duration_seconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
        source_addresses: sources,
    }
}

/// Every load balancer address of the snapshot.
pub fn load_balancer_addresses(snapshot: &ElbSnapshot) -> BTreeSet<Ipv4Addr> {
    snapshot
        .load_balancers
        .iter()
        .flat_map(|lb| lb.addresses.iter().map(|(_, _, _, ip)| *ip))
        .collect()
}

/// Instance targets are ECS container instances, reached at the host
/// address their agent reports.
pub struct EcsInstances(pub Arc<dyn Store>);

impl berth_elb::InstanceDirectory for EcsInstances {
    fn instance_ipv4(&self, account: &str, region: &str, instance_id: &str) -> Option<Ipv4Addr> {
        berth_ecs::instance_host_ipv4(self.0.as_ref(), account, region, instance_id)
    }
}

/// ECS services' `loadBalancers` register their tasks in ELB target groups.
pub struct ElbTargets(pub Arc<berth_elb::ElbService>);

impl ElbTargets {
    /// ECS's answer when a service names a target group ELB does not have.
    fn unknown(arn: &str) -> berth_model::AwsError {
        berth_model::AwsError::bad_request(
            "InvalidParameterException",
            format!(
                "Unable to assume role and validate the specified targetGroupArn. Please verify \
                 that the ECS service role being passed has the proper permissions. (Berth: the \
                 target group {arn} is not known to Elastic Load Balancing.)"
            ),
        )
    }
}

#[async_trait::async_trait]
impl berth_ecs::load_balancing::LoadBalancerTargets for ElbTargets {
    fn describe_target_group(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<berth_ecs::load_balancing::TargetGroupInfo, berth_model::AwsError> {
        let summary = self
            .0
            .target_group_summary(account, region, arn)
            .map_err(|e| {
                if e.code == "TargetGroupNotFound" {
                    Self::unknown(arn)
                } else {
                    e
                }
            })?;
        Ok(berth_ecs::load_balancing::TargetGroupInfo {
            arn: summary.arn,
            target_type: summary.target_type,
            protocol: summary.protocol,
            port: (summary.port != 0).then_some(summary.port),
            load_balancer_arns: summary.load_balancer_arns,
        })
    }

    async fn register(
        &self,
        account: &str,
        region: &str,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
    ) -> Result<(), berth_model::AwsError> {
        self.0
            .register_targets(
                account,
                region,
                target_group_arn,
                &[(target_id.to_string(), port)],
            )
            .await
    }

    async fn deregister(
        &self,
        account: &str,
        region: &str,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
    ) -> Result<(), berth_model::AwsError> {
        match self
            .0
            .deregister_targets(
                account,
                region,
                target_group_arn,
                &[(target_id.to_string(), port)],
            )
            .await
        {
            // A deleted group holds nothing any more.
            Err(e) if e.code == "TargetGroupNotFound" => Ok(()),
            other => other,
        }
    }

    async fn health(
        &self,
        account: &str,
        region: &str,
        target_group_arn: &str,
        target_id: &str,
        port: u16,
    ) -> Result<Option<berth_ecs::load_balancing::TargetHealthInfo>, berth_model::AwsError> {
        match self
            .0
            .target_state(account, region, target_group_arn, target_id, port)
        {
            Ok(status) => Ok(status.map(|s| berth_ecs::load_balancing::TargetHealthInfo {
                state: s.state.to_string(),
                reason: s.reason.map(str::to_string),
                description: s.description,
            })),
            Err(e) if e.code == "TargetGroupNotFound" => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn describe_rule(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<berth_ecs::load_balancing::RuleInfo, berth_model::AwsError> {
        let rule = self.0.rule_forward(account, region, arn).map_err(|e| {
            if e.code == "RuleNotFound" {
                berth_model::AwsError::bad_request(
                    "InvalidParameterException",
                    format!("The listener rule {arn} does not exist."),
                )
            } else {
                e
            }
        })?;
        Ok(berth_ecs::load_balancing::RuleInfo {
            arn: rule.rule_arn,
            listener_arn: rule.listener_arn,
            load_balancer_arn: rule.load_balancer_arn,
            groups: rule.groups,
        })
    }

    async fn set_forward_weights(
        &self,
        account: &str,
        region: &str,
        rule_arn: &str,
        weights: &[(String, u32)],
    ) -> Result<(), berth_model::AwsError> {
        self.0
            .set_forward_weights(account, region, rule_arn, weights)
            .await
    }
}

/// HTTPS and TLS listeners name ACM certificates.
pub struct AcmCertificates(pub Arc<berth_acm::AcmService>);

impl berth_elb::CertificateDirectory for AcmCertificates {
    fn check(&self, account: &str, region: &str, arn: &str) -> Result<(), berth_model::AwsError> {
        self.0.check_issued(account, region, arn)
    }
}

/// Certificates from ACM, security groups from EC2.
pub struct ServiceInputs {
    pub acm: Arc<berth_acm::AcmService>,
    pub ec2: Arc<berth_ec2::Ec2Service>,
}

impl ListenerInputs for ServiceInputs {
    fn certificate(&self, account: &str, region: &str, arn: &str) -> Option<CertificatePem> {
        match self.acm.certificate_pem(account, region, arn) {
            Ok(Some(m)) => Some(CertificatePem {
                chain_pem: m.chain_pem,
                key_pem: m.key_pem,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(certificate = %arn, code = %e.code, "reading a listener's certificate failed");
                None
            }
        }
    }

    fn ingress(&self, account: &str, region: &str, eni_id: &str) -> Option<Vec<NetworkRule>> {
        self.ec2
            .interface_policy(account, region, eni_id)
            .ok()
            .map(|p| p.ingress)
    }
}

/// The installation's host addresses: their label is kept in the store so a
/// restarted server (or the next leader) finds the same addresses.
pub async fn host_addresses(store: &Arc<dyn Store>) -> anyhow::Result<HostAddresses> {
    if let Some(kv) = store.get(HOST_LINK_KEY) {
        return Ok(HostAddresses::new(&String::from_utf8_lossy(&kv.value)));
    }
    let fresh = berth_util::ids::random_hex(6);
    let candidate = fresh.clone();
    store
        .mutate(Box::new(move |view| {
            if view.get(HOST_LINK_KEY).is_some() {
                return Ok(Vec::new());
            }
            Ok(vec![Op::put(HOST_LINK_KEY, candidate.clone().into_bytes())])
        }))
        .await?;
    let id = store
        .get(HOST_LINK_KEY)
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or(fresh);
    Ok(HostAddresses::new(&id))
}

/// Serves the load balancers until aborted (leader work): dropping the data
/// plane closes its listeners.
pub async fn run_data_plane(
    store: Arc<dyn Store>,
    elb: Arc<berth_elb::ElbService>,
    inputs: Arc<dyn ListenerInputs + Send + Sync>,
    acm: Arc<berth_acm::AcmService>,
) {
    let addresses = match host_addresses(&store).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "load balancers cannot run: no host link id");
            return;
        }
    };
    tracing::info!(label = %addresses.label(), "serving load balancers");
    let _link = RemoveOnDrop(addresses.clone());
    let (plane, reports) = DataPlane::new();
    let reporter = tokio::spawn(write_health(elb.clone(), reports));
    let _reporter = AbortOnDrop(reporter);
    let mut applied: Option<DataPlaneConfig> = None;
    let mut applied_addresses: Option<BTreeSet<Ipv4Addr>> = None;
    let mut in_use: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    loop {
        let revision = store.revision();
        match elb.snapshot() {
            Ok(snapshot) => {
                let wanted = load_balancer_addresses(&snapshot);
                if applied_addresses.as_ref() != Some(&wanted) {
                    match addresses.ensure(&wanted).await {
                        Ok(()) => applied_addresses = Some(wanted),
                        Err(e) => {
                            tracing::warn!(error = %e, "making the load balancers' addresses local failed")
                        }
                    }
                }
                let config = data_plane_config(&snapshot, inputs.as_ref());
                if applied.as_ref() != Some(&config) {
                    for e in plane.apply(config.clone()).await {
                        tracing::warn!(error = %e, "a listener cannot serve");
                    }
                    applied = Some(config);
                }
                in_use = record_certificate_use(&acm, &snapshot, in_use).await;
            }
            Err(e) => {
                tracing::warn!(code = %e.code, message = %e.message, "reading the load balancers failed")
            }
        }
        // Woken by any change of the records the configuration is made of.
        let watches = futures::future::select_all(
            [berth_elb::ElbService::watch_prefix(), "acm/", "ec2/"]
                .into_iter()
                .map(|prefix| {
                    let store = store.clone();
                    Box::pin(async move {
                        match store.watch(prefix, revision).await {
                            Ok(mut w) => {
                                w.next().await;
                            }
                            Err(_) => std::future::pending::<()>().await,
                        }
                    })
                }),
        );
        let _ = tokio::time::timeout(SWEEP_EVERY, watches).await;
    }
}

/// Tells ACM which load balancers use each certificate (DescribeCertificate's
/// `InUseBy`; DeleteCertificate is refused while it is not empty), writing
/// only what changed since `before`.
async fn record_certificate_use(
    acm: &berth_acm::AcmService,
    snapshot: &ElbSnapshot,
    before: BTreeMap<(String, String, String), Vec<String>>,
) -> BTreeMap<(String, String, String), Vec<String>> {
    let mut now: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for lb in &snapshot.load_balancers {
        for listener in &lb.listeners {
            for cert in &listener.certificates {
                if !cert.contains(":acm:") {
                    continue;
                }
                let users = now
                    .entry((lb.account.clone(), lb.region.clone(), cert.clone()))
                    .or_default();
                if !users.contains(&lb.arn) {
                    users.push(lb.arn.clone());
                }
            }
        }
    }
    let keys: BTreeSet<_> = before.keys().chain(now.keys()).cloned().collect();
    let mut written = before.clone();
    for key in keys {
        let users = now.get(&key).cloned().unwrap_or_default();
        if before.get(&key).cloned().unwrap_or_default() == users {
            continue;
        }
        let (account, region, arn) = &key;
        match acm.set_in_use_by(account, region, arn, users.clone()).await {
            Ok(()) if users.is_empty() => {
                written.remove(&key);
            }
            Ok(()) => {
                written.insert(key.clone(), users);
            }
            Err(e) => {
                tracing::warn!(certificate = %arn, code = %e.code, "recording a certificate's use failed")
            }
        }
    }
    written
}

/// Writes the data plane's health reports where DescribeTargetHealth reads.
async fn write_health(
    elb: Arc<berth_elb::ElbService>,
    mut reports: tokio::sync::mpsc::Receiver<HealthReport>,
) {
    use berth_elb::model::HealthState as Stored;
    use berth_lbproxy::HealthState;
    while let Some(report) = reports.recv().await {
        let state = match report.state {
            HealthState::Initial => Stored::Initial,
            HealthState::Healthy => Stored::Healthy,
            HealthState::Unhealthy => Stored::Unhealthy,
            // Checks are off: DescribeTargetHealth says so from the group.
            HealthState::Unavailable => continue,
        };
        if let Err(e) = elb
            .set_target_health(
                &report.target_group,
                &report.target_id,
                report.port,
                state,
                report.reason.as_deref(),
                report.description.as_deref(),
            )
            .await
        {
            tracing::warn!(code = %e.code, message = %e.message, "recording a target's health failed");
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Takes the load balancers' addresses off the host when the data plane
/// stops here (the next leader puts them back where it runs).
struct RemoveOnDrop(HostAddresses);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove();
    }
}
