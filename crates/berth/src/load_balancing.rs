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

/// A lookup that could not be answered now (a read failed): the running
/// configuration is kept rather than serving without what it would say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Where a load balancer's certificates and security groups come from.
pub trait ListenerInputs {
    /// The certificate (chain + key) an HTTPS/TLS listener names; `None`
    /// when there is no such certificate.
    fn certificate(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<Option<CertificatePem>, Unavailable>;
    /// The ingress rules of the load balancer's interface (`eni_id`), group
    /// peers resolved to addresses; `None` when the interface is gone.
    fn ingress(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
    ) -> Result<Option<Vec<NetworkRule>>, Unavailable>;
}

/// The data plane's configuration for every load balancer of the snapshot.
/// Pure: the certificates and security groups come through `inputs`; a
/// lookup that fails makes the whole configuration unavailable, so a
/// passing read error never takes a listener's certificate or security
/// groups away.
pub fn data_plane_config(
    snapshot: &ElbSnapshot,
    inputs: &dyn ListenerInputs,
) -> Result<DataPlaneConfig, Unavailable> {
    let mut config = DataPlaneConfig::default();
    let lbs: BTreeMap<&str, &SnapshotLoadBalancer> = snapshot
        .load_balancers
        .iter()
        .map(|lb| (lb.arn.as_str(), lb))
        .collect();
    for lb in &snapshot.load_balancers {
        // Its security groups, read once for all its listeners.
        let ingress = if lb.security_groups.is_empty() {
            None
        } else {
            Some(interface_ingress(lb, inputs)?)
        };
        for listener in &lb.listeners {
            if let Some(l) = listener_config(lb, listener, ingress.as_deref(), inputs)? {
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
    Ok(config)
}

fn listener_config(
    lb: &SnapshotLoadBalancer,
    listener: &SnapshotListener,
    ingress: Option<&[NetworkRule]>,
    inputs: &dyn ListenerInputs,
) -> Result<Option<ListenerConfig>, Unavailable> {
    let protocol = match listener.protocol.as_str() {
        "HTTP" => ListenerProtocol::Http,
        "HTTPS" => ListenerProtocol::Https,
        "TCP" => ListenerProtocol::Tcp,
        "TLS" => ListenerProtocol::Tls,
        // UDP and TCP_UDP listeners are refused by the API.
        _ => return Ok(None),
    };
    let kind = if lb.lb_type == "network" {
        LbKind::Network
    } else {
        LbKind::Application
    };
    let mut certificates = Vec::new();
    for arn in &listener.certificates {
        certificates.extend(inputs.certificate(&lb.account, &lb.region, arn)?);
    }
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
    let source_filter = ingress.map(|rules| allowed_sources(rules, listener.port));
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
    Ok(Some(ListenerConfig {
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
    }))
}

/// The ingress rules of every interface of the load balancer (group peers
/// resolved to addresses).
fn interface_ingress(
    lb: &SnapshotLoadBalancer,
    inputs: &dyn ListenerInputs,
) -> Result<Vec<NetworkRule>, Unavailable> {
    let mut rules = Vec::new();
    for (_, _, eni, _) in &lb.addresses {
        rules.extend(
            inputs
                .ingress(&lb.account, &lb.region, eni)?
                .unwrap_or_default(),
        );
    }
    Ok(rules)
}

/// The client sources `rules` (the load balancer's security groups) let
/// reach `port` (TCP).
fn allowed_sources(rules: &[NetworkRule], port: u16) -> Vec<IpNet> {
    let mut out: BTreeSet<IpNet> = BTreeSet::new();
    for rule in rules {
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
    fn certificate(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<Option<CertificatePem>, Unavailable> {
        match self.acm.certificate_pem(account, region, arn) {
            Ok(found) => Ok(found.map(|m| CertificatePem {
                chain_pem: m.chain_pem,
                key_pem: m.key_pem,
            })),
            Err(e) => {
                tracing::warn!(certificate = %arn, code = %e.code, "reading a listener's certificate failed");
                Err(Unavailable)
            }
        }
    }

    fn ingress(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
    ) -> Result<Option<Vec<NetworkRule>>, Unavailable> {
        match self.ec2.interface_policy(account, region, eni_id) {
            Ok(policy) => Ok(Some(policy.ingress)),
            // Deleted with its load balancer since the snapshot was read.
            Err(e) if e.code == "InvalidNetworkInterfaceID.NotFound" => Ok(None),
            Err(e) => {
                tracing::warn!(interface = %eni_id, code = %e.code, "reading a load balancer's security groups failed");
                Err(Unavailable)
            }
        }
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
    let reporter = tokio::spawn({
        let elb = elb.clone();
        write_health(reports, move |report| {
            let elb = elb.clone();
            async move { write_one_health(&elb, &report).await }
        })
    });
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
                // Kept as it runs when a lookup failed: the next pass tries again.
                if let Ok(config) = data_plane_config(&snapshot, inputs.as_ref()) {
                    if applied.as_ref() != Some(&config) {
                        let errors = plane.apply(config.clone()).await;
                        for e in &errors {
                            tracing::warn!(error = %e, "a listener cannot serve");
                        }
                        // A listener that could not bind is tried again on
                        // the next pass (apply is idempotent).
                        applied = errors.is_empty().then_some(config);
                    }
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
/// The data plane reports a target only when its state changes, so a report
/// whose write fails (the store is busy or unreachable) is kept and written
/// again until it lands, the newest per target winning; otherwise ELB, and
/// ECS after it, would keep the old state for good.
async fn write_health<W, F>(mut reports: tokio::sync::mpsc::Receiver<HealthReport>, write: W)
where
    W: Fn(HealthReport) -> F,
    F: std::future::Future<Output = Result<(), berth_model::AwsError>>,
{
    const RETRY: Duration = Duration::from_millis(500);
    let mut unwritten: BTreeMap<(String, String, u16), HealthReport> = BTreeMap::new();
    loop {
        let next = if unwritten.is_empty() {
            reports.recv().await.map(Some)
        } else {
            match tokio::time::timeout(RETRY, reports.recv()).await {
                Ok(report) => report.map(Some),
                // Time to try the unwritten ones again.
                Err(_) => Some(None),
            }
        };
        let Some(next) = next else {
            return;
        };
        if let Some(report) = next {
            let key = (
                report.target_group.clone(),
                report.target_id.clone(),
                report.port,
            );
            unwritten.insert(key, report);
        }
        for (key, report) in std::mem::take(&mut unwritten) {
            if let Err(e) = write(report.clone()).await {
                if e.status >= 500 {
                    tracing::warn!(code = %e.code, message = %e.message, "recording a target's health failed; trying again");
                    unwritten.insert(key, report);
                } else {
                    tracing::warn!(code = %e.code, message = %e.message, "a target's health report was refused");
                }
            }
        }
    }
}

async fn write_one_health(
    elb: &berth_elb::ElbService,
    report: &HealthReport,
) -> Result<(), berth_model::AwsError> {
    use berth_elb::model::HealthState as Stored;
    use berth_lbproxy::HealthState;
    let state = match report.state {
        HealthState::Initial => Stored::Initial,
        HealthState::Healthy => Stored::Healthy,
        HealthState::Unhealthy => Stored::Unhealthy,
        // Checks are off: DescribeTargetHealth says so from the group.
        HealthState::Unavailable => return Ok(()),
    };
    elb.set_target_health(
        &report.target_group,
        &report.target_id,
        report.port,
        state,
        report.reason.as_deref(),
        report.description.as_deref(),
    )
    .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_elb::model::{self, HealthCheck};

    #[tokio::test]
    async fn a_health_report_that_fails_to_write_is_written_again() {
        use berth_lbproxy::HealthState;
        use std::sync::Mutex;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let written: Arc<Mutex<Vec<(String, HealthState)>>> = Arc::default();
        let failures = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let task = tokio::spawn({
            let (written, failures) = (written.clone(), failures.clone());
            write_health(rx, move |r: HealthReport| {
                let (written, failures) = (written.clone(), failures.clone());
                async move {
                    if r.target_id == "refused" {
                        return Err(berth_model::AwsError::bad_request("ValidationError", "no"));
                    }
                    let left = failures.load(std::sync::atomic::Ordering::SeqCst);
                    if left > 0 {
                        failures.store(left - 1, std::sync::atomic::Ordering::SeqCst);
                        return Err(berth_model::AwsError::internal("the store is busy"));
                    }
                    written.lock().unwrap().push((r.target_id.clone(), r.state));
                    Ok(())
                }
            })
        });
        let report = |id: &str, state| HealthReport {
            target_group: TG.into(),
            target_id: id.into(),
            port: 80,
            state,
            reason: None,
            description: None,
        };
        tx.send(report("i-1", HealthState::Healthy)).await.unwrap();
        tx.send(report("refused", HealthState::Healthy))
            .await
            .unwrap();
        // Written once the store answers again.
        for _ in 0..100 {
            if !written.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            *written.lock().unwrap(),
            vec![("i-1".to_string(), HealthState::Healthy)]
        );
        // A newer report replaces one not written yet.
        failures.store(1, std::sync::atomic::Ordering::SeqCst);
        tx.send(report("i-1", HealthState::Unhealthy))
            .await
            .unwrap();
        tx.send(report("i-1", HealthState::Healthy)).await.unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("ends when the data plane is gone")
            .unwrap();
        let last = written.lock().unwrap().last().cloned();
        assert_eq!(last, Some(("i-1".to_string(), HealthState::Healthy)));
    }
    use berth_elb::SnapshotTarget;

    const LB: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/1";
    const TG: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/web/2";
    const CERT: &str = "arn:aws:acm:us-east-1:000000000000:certificate/3";

    /// Inputs from fixed answers; `None` makes every lookup fail.
    struct Fixed(Option<Vec<NetworkRule>>);

    impl ListenerInputs for Fixed {
        fn certificate(
            &self,
            _: &str,
            _: &str,
            arn: &str,
        ) -> Result<Option<CertificatePem>, Unavailable> {
            self.0.as_ref().ok_or(Unavailable)?;
            Ok((arn == CERT).then(|| CertificatePem {
                chain_pem: "chain".into(),
                key_pem: "key".into(),
            }))
        }

        fn ingress(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<Option<Vec<NetworkRule>>, Unavailable> {
            self.0.clone().map(Some).ok_or(Unavailable)
        }
    }

    fn forward(groups: &[(&str, Option<u32>)]) -> model::Action {
        model::Action {
            kind: "forward".into(),
            forward: Some(model::Forward {
                groups: groups.iter().map(|(a, w)| (a.to_string(), *w)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn snapshot() -> ElbSnapshot {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let listener = |port: u16, protocol: &str, certificates: Vec<String>| SnapshotListener {
            arn: format!("{LB}/listener/{port}"),
            port,
            protocol: protocol.into(),
            ssl_policy: None,
            certificates,
            alpn_policy: None,
            attributes: BTreeMap::new(),
            default_actions: vec![model::Action {
                kind: "fixed-response".into(),
                fixed_response: Some(model::FixedResponse {
                    body: Some("nothing".into()),
                    status_code: "404".into(),
                    content_type: Some("text/plain".into()),
                }),
                ..Default::default()
            }],
            rules: vec![(
                10,
                vec![model::Condition {
                    field: "path-pattern".into(),
                    values: vec!["/api/*".into()],
                    ..Default::default()
                }],
                vec![forward(&[(TG, Some(80)), ("other", None)])],
            )],
        };
        ElbSnapshot {
            load_balancers: vec![SnapshotLoadBalancer {
                account: "000000000000".into(),
                region: "us-east-1".into(),
                arn: LB.into(),
                name: "web".into(),
                lb_type: "application".into(),
                scheme: "internet-facing".into(),
                vpc_id: "vpc-1".into(),
                dns_name: "web-1.us-east-1.elb.amazonaws.com".into(),
                addresses: vec![
                    (
                        "subnet-a".into(),
                        "us-east-1a".into(),
                        "eni-a".into(),
                        ip("172.31.0.4"),
                    ),
                    (
                        "subnet-b".into(),
                        "us-east-1b".into(),
                        "eni-b".into(),
                        ip("172.31.16.4"),
                    ),
                ],
                security_groups: vec!["sg-1".into()],
                attributes: BTreeMap::from([(
                    "idle_timeout.timeout_seconds".to_string(),
                    "20".to_string(),
                )]),
                listeners: vec![
                    listener(80, "HTTP", vec![]),
                    listener(443, "HTTPS", vec![CERT.into(), "gone".into()]),
                ],
            }],
            target_groups: vec![
                SnapshotTargetGroup {
                    account: "000000000000".into(),
                    region: "us-east-1".into(),
                    arn: TG.into(),
                    name: "web".into(),
                    protocol: "HTTP".into(),
                    protocol_version: None,
                    port: 8080,
                    target_type: "instance".into(),
                    health_check: HealthCheck {
                        enabled: true,
                        protocol: Some("HTTP".into()),
                        port: Some("traffic-port".into()),
                        path: Some("/health".into()),
                        interval: 5,
                        timeout: 2,
                        healthy: 2,
                        unhealthy: 3,
                        http_code: Some("200-299".into()),
                        grpc_code: None,
                    },
                    attributes: BTreeMap::from([
                        ("stickiness.enabled".to_string(), "true".to_string()),
                        (
                            "stickiness.lb_cookie.duration_seconds".to_string(),
                            "60".to_string(),
                        ),
                    ]),
                    load_balancer_arns: vec![LB.into()],
                    targets: vec![
                        SnapshotTarget {
                            id: "i-1".into(),
                            port: 32768,
                            address: Some(ip("10.0.0.9")),
                            availability_zone: None,
                            drain_until: None,
                            health: None,
                        },
                        SnapshotTarget {
                            id: "i-2".into(),
                            port: 32769,
                            address: None,
                            availability_zone: None,
                            drain_until: None,
                            health: None,
                        },
                        SnapshotTarget {
                            id: "i-1".into(),
                            port: 32770,
                            address: Some(ip("10.0.0.9")),
                            availability_zone: None,
                            drain_until: Some(1.0),
                            health: None,
                        },
                    ],
                },
                SnapshotTargetGroup {
                    arn: "unused".into(),
                    load_balancer_arns: vec![],
                    targets: vec![],
                    ..snapshot_group_defaults()
                },
            ],
        }
    }

    fn snapshot_group_defaults() -> SnapshotTargetGroup {
        SnapshotTargetGroup {
            account: "000000000000".into(),
            region: "us-east-1".into(),
            arn: String::new(),
            name: "x".into(),
            protocol: "HTTP".into(),
            protocol_version: None,
            port: 80,
            target_type: "instance".into(),
            health_check: HealthCheck::default(),
            attributes: BTreeMap::new(),
            load_balancer_arns: vec![],
            targets: vec![],
        }
    }

    fn open_80() -> Vec<NetworkRule> {
        vec![
            NetworkRule {
                protocol: "tcp".into(),
                from_port: Some(80),
                to_port: Some(80),
                cidrs: vec!["0.0.0.0/0".into()],
            },
            NetworkRule {
                protocol: "tcp".into(),
                from_port: Some(443),
                to_port: Some(443),
                cidrs: vec!["10.0.0.0/8".into(), "172.31.5.6/32".into()],
            },
        ]
    }

    #[test]
    fn listeners_bind_every_address_with_rules_then_the_default() {
        let config = data_plane_config(&snapshot(), &Fixed(Some(open_80()))).unwrap();
        assert_eq!(config.listeners.len(), 2);
        let http = &config.listeners[0];
        assert_eq!(
            http.bind,
            vec![
                "172.31.0.4:80".parse::<SocketAddr>().unwrap(),
                "172.31.16.4:80".parse().unwrap()
            ]
        );
        assert_eq!(http.idle_timeout, Duration::from_secs(20));
        assert!(!http.alpn_http2, "h2 is offered on HTTPS only");
        assert_eq!(http.rules.len(), 2);
        assert_eq!(
            http.rules[0].conditions,
            vec![Condition::PathPattern(vec!["/api/*".into()])]
        );
        assert_eq!(
            http.rules[0].action,
            Action::Forward {
                groups: vec![(TG.into(), 80), ("other".into(), 1)],
                group_stickiness: None
            }
        );
        assert_eq!(http.rules[1].priority, u32::MAX);
        assert!(http.rules[1].conditions.is_empty());
        assert_eq!(
            http.rules[1].action,
            Action::FixedResponse {
                status_code: 404,
                content_type: Some("text/plain".into()),
                body: "nothing".into()
            }
        );
        // Security groups: each listener's port only.
        assert_eq!(http.source_filter, Some(vec!["0.0.0.0/0".parse().unwrap()]));
        let https = &config.listeners[1];
        assert_eq!(
            https.source_filter,
            Some(vec![
                "10.0.0.0/8".parse().unwrap(),
                "172.31.5.6/32".parse().unwrap()
            ])
        );
        assert!(https.alpn_http2);
        assert_eq!(
            https.certificates.len(),
            1,
            "a missing certificate is left out"
        );
    }

    #[test]
    fn groups_in_use_get_their_targets_checks_and_the_load_balancers_addresses() {
        let config = data_plane_config(&snapshot(), &Fixed(Some(open_80()))).unwrap();
        assert_eq!(
            config.target_groups.keys().collect::<Vec<_>>(),
            vec![TG],
            "a group no load balancer uses gets no checks"
        );
        let tg = &config.target_groups[TG];
        assert_eq!(
            tg.targets
                .iter()
                .map(|t| (t.id.as_str(), t.address.to_string(), t.draining))
                .collect::<Vec<_>>(),
            vec![
                ("i-1", "10.0.0.9:32768".to_string(), false),
                ("i-1", "10.0.0.9:32770".to_string(), true),
            ],
            "an instance whose address is unknown is left out"
        );
        assert_eq!(tg.health_check.path, "/health");
        assert_eq!(tg.health_check.port, None);
        assert_eq!(tg.health_check.interval, Duration::from_secs(5));
        assert_eq!(tg.health_check.unhealthy_threshold, 3);
        assert_eq!(tg.health_check.matcher, "200-299");
        assert_eq!(tg.stickiness, Some(Duration::from_secs(60)));
        assert_eq!(
            tg.source_addresses,
            vec![
                "172.31.0.4".parse::<IpAddr>().unwrap(),
                "172.31.16.4".parse().unwrap()
            ]
        );
        assert_eq!(
            load_balancer_addresses(&snapshot()),
            BTreeSet::from([
                "172.31.0.4".parse().unwrap(),
                "172.31.16.4".parse().unwrap()
            ])
        );
    }

    #[test]
    fn a_failed_lookup_keeps_the_running_configuration() {
        assert_eq!(
            data_plane_config(&snapshot(), &Fixed(None)),
            Err(Unavailable)
        );
    }
}
