//! Targets and their health, as Rust calls for the data plane's glue and
//! ECS: the snapshot of every record, health reports, registration and the
//! draining timers.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use berth_model::AwsError;
use berth_store::Store;
use berth_util::time::now_epoch;

use crate::model::{
    Action, Condition, HealthCheck, HealthState, Listener, State, Target, TargetGroup, PREFIX,
};
use crate::wire::error;
use crate::ElbService;

/// Every load balancer record of every account and region, for the data
/// plane.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ElbSnapshot {
    pub load_balancers: Vec<SnapshotLoadBalancer>,
    pub target_groups: Vec<SnapshotTargetGroup>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotLoadBalancer {
    pub account: String,
    pub region: String,
    pub arn: String,
    pub name: String,
    /// `application` | `network`.
    pub lb_type: String,
    pub scheme: String,
    pub vpc_id: String,
    pub dns_name: String,
    /// (subnet, zone, eni, address).
    pub addresses: Vec<(String, String, String, Ipv4Addr)>,
    pub security_groups: Vec<String>,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub listeners: Vec<SnapshotListener>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotListener {
    pub arn: String,
    pub port: u16,
    pub protocol: String,
    pub ssl_policy: Option<String>,
    /// The default certificate first.
    pub certificates: Vec<String>,
    pub alpn_policy: Option<String>,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub default_actions: Vec<Action>,
    /// (priority, conditions, actions), by priority.
    pub rules: Vec<(u32, Vec<Condition>, Vec<Action>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotTargetGroup {
    pub account: String,
    pub region: String,
    pub arn: String,
    pub name: String,
    pub protocol: String,
    pub protocol_version: Option<String>,
    pub port: u16,
    pub target_type: String,
    pub health_check: HealthCheck,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub load_balancer_arns: Vec<String>,
    pub targets: Vec<SnapshotTarget>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotTarget {
    pub id: String,
    pub port: u16,
    /// Resolved through the InstanceDirectory (instance) or the id (ip);
    /// `None` when the instance is unknown now.
    pub address: Option<Ipv4Addr>,
    pub availability_zone: Option<String>,
    /// Set while draining: no new requests; gone at this epoch second.
    pub drain_until: Option<f64>,
    pub health: Option<HealthState>,
}

/// What ECS needs of a target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupSummary {
    pub arn: String,
    pub target_type: String,
    pub protocol: String,
    pub port: u16,
    pub vpc_id: String,
    pub load_balancer_arns: Vec<String>,
    pub deregistration_delay_seconds: u32,
}

/// A target's state as DescribeTargetHealth words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    pub state: &'static str,
    pub reason: Option<&'static str>,
    pub description: Option<String>,
}

/// AWS's (state, reason, description) of a target, `t` `None` when it is
/// not registered.
pub(crate) fn status(
    tg: &TargetGroup,
    t: Option<&Target>,
    used: bool,
) -> (&'static str, Option<&'static str>, Option<String>) {
    let Some(t) = t else {
        return (
            "unused",
            Some("Target.NotRegistered"),
            Some("Target is not registered to the target group".into()),
        );
    };
    if t.drain_until.is_some() {
        return (
            "draining",
            Some("Target.DeregistrationInProgress"),
            Some("Target deregistration is in progress".into()),
        );
    }
    if !used {
        return (
            "unused",
            Some("Target.NotInUse"),
            Some("Target group is not configured to receive traffic from the load balancer".into()),
        );
    }
    if !tg.health.enabled {
        return (
            "unavailable",
            Some("Target.HealthCheckDisabled"),
            Some("Health checks are disabled".into()),
        );
    }
    match t.health {
        None => (
            "initial",
            Some("Elb.RegistrationInProgress"),
            Some("Target registration is in progress".into()),
        ),
        Some(HealthState::Initial) => (
            "initial",
            Some("Elb.InitialHealthChecking"),
            Some("Initial health checks in progress".into()),
        ),
        Some(HealthState::Healthy) => ("healthy", None, None),
        Some(HealthState::Unhealthy) => {
            let reason = match t.reason.as_deref() {
                Some("Target.ResponseCodeMismatch") => "Target.ResponseCodeMismatch",
                Some("Target.Timeout") => "Target.Timeout",
                _ => "Target.FailedHealthChecks",
            };
            let description = t.description.clone().unwrap_or_else(|| {
                match reason {
                    "Target.Timeout" => "Request timed out",
                    _ => "Health checks failed",
                }
                .to_string()
            });
            ("unhealthy", Some(reason), Some(description))
        }
    }
}

fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (account, rest) = rest.split_once('/')?;
    let (region, tail) = rest.split_once('/')?;
    (tail == "state").then_some((account, region))
}

fn region_of(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.split(':');
    let _ = (parts.next(), parts.next(), parts.next());
    let region = parts.next()?;
    let account = parts.next()?;
    Some((account, region))
}

fn not_found(tg_arn: &str) -> AwsError {
    error(
        "TargetGroupNotFound",
        format!("Target group '{tg_arn}' not found"),
    )
}

impl ElbService {
    /// The store key prefix under which every ELB record lives: a change
    /// under it may change the snapshot.
    pub fn watch_prefix() -> &'static str {
        PREFIX
    }

    /// Every load balancer, listener, rule, target group and target.
    pub fn snapshot(&self) -> Result<ElbSnapshot, AwsError> {
        let mut out = ElbSnapshot::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.range(PREFIX, after.as_deref(), 256);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|kv| kv.key.clone());
            for kv in page {
                let Some((account, region)) = split_key(&kv.key) else {
                    continue;
                };
                let state: State = serde_json::from_slice(&kv.value).map_err(|e| {
                    AwsError::internal(format!("the stored load balancer state is unreadable: {e}"))
                })?;
                self.add_to_snapshot(&mut out, account, region, &state);
            }
        }
        Ok(out)
    }

    fn add_to_snapshot(&self, out: &mut ElbSnapshot, account: &str, region: &str, s: &State) {
        for lb in s.load_balancers.values() {
            let mut listeners: Vec<SnapshotListener> = s
                .listeners_of(&lb.arn)
                .map(|l: &Listener| {
                    let mut rules: Vec<(u32, Vec<Condition>, Vec<Action>)> = s
                        .rules_of(&l.arn)
                        .map(|r| (r.priority, r.conditions.clone(), r.actions.clone()))
                        .collect();
                    rules.sort_by_key(|r| r.0);
                    SnapshotListener {
                        arn: l.arn.clone(),
                        port: l.port,
                        protocol: l.protocol.clone(),
                        ssl_policy: l.ssl_policy.clone(),
                        certificates: l
                            .certificate
                            .iter()
                            .chain(l.extra_certificates.iter())
                            .cloned()
                            .collect(),
                        alpn_policy: l.alpn_policy.clone(),
                        attributes: l.attributes.clone(),
                        default_actions: l.default_actions.clone(),
                        rules,
                    }
                })
                .collect();
            listeners.sort_by_key(|l| l.port);
            out.load_balancers.push(SnapshotLoadBalancer {
                account: account.into(),
                region: region.into(),
                arn: lb.arn.clone(),
                name: lb.name.clone(),
                lb_type: lb.lb_type.clone(),
                scheme: lb.scheme.clone(),
                vpc_id: lb.vpc_id.clone(),
                dns_name: lb.dns_name.clone(),
                addresses: lb
                    .zones
                    .iter()
                    .filter_map(|z| {
                        z.address.parse().ok().map(|ip| {
                            (
                                z.subnet_id.clone(),
                                z.zone_name.clone(),
                                z.eni_id.clone(),
                                ip,
                            )
                        })
                    })
                    .collect(),
                security_groups: lb.security_groups.clone(),
                attributes: lb.attributes.clone(),
                listeners,
            });
        }
        for tg in s.target_groups.values() {
            let targets = tg
                .targets
                .iter()
                .map(|t| SnapshotTarget {
                    id: t.id.clone(),
                    port: t.port,
                    address: if tg.target_type == "ip" {
                        t.id.parse().ok()
                    } else {
                        self.instances.instance_ipv4(account, region, &t.id)
                    },
                    availability_zone: t.availability_zone.clone(),
                    drain_until: t.drain_until,
                    health: t.health,
                })
                .collect();
            out.target_groups.push(SnapshotTargetGroup {
                account: account.into(),
                region: region.into(),
                arn: tg.arn.clone(),
                name: tg.name.clone(),
                protocol: tg.protocol.clone().unwrap_or_default(),
                protocol_version: tg.protocol_version.clone(),
                port: tg.port.unwrap_or(0),
                target_type: tg.target_type.clone(),
                health_check: tg.health.clone(),
                attributes: tg.attributes.clone(),
                load_balancer_arns: s.lbs_of_group(&tg.arn),
                targets,
            });
        }
    }

    /// Records the data plane's health report for a target; writes only
    /// when it changes. A target that is not registered (any more) is
    /// ignored.
    pub async fn set_target_health(
        &self,
        tg_arn: &str,
        target_id: &str,
        port: u16,
        state: HealthState,
        reason: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), AwsError> {
        let (account, region) = region_of(tg_arn).ok_or_else(|| not_found(tg_arn))?;
        let (tg_arn, id) = (tg_arn.to_string(), target_id.to_string());
        let reason = reason.map(str::to_string);
        let description = description.map(str::to_string);
        self.mutate(account, region, move |s| {
            let Some(tg) = s.target_groups.get_mut(&tg_arn) else {
                return Ok(());
            };
            if let Some(t) = tg.targets.iter_mut().find(|t| t.id == id && t.port == port) {
                t.health = Some(state);
                t.reason = reason.clone();
                t.description = description.clone();
            }
            Ok(())
        })
        .await
    }

    /// Validates and registers targets (RegisterTargets and ECS).
    pub(crate) async fn register(
        &self,
        account: &str,
        region: &str,
        tg_arn: &str,
        list: Vec<(String, u16, Option<String>)>,
    ) -> Result<(), AwsError> {
        let s = self.read(account, region)?;
        let tg = s
            .target_groups
            .get(tg_arn)
            .ok_or_else(|| not_found(tg_arn))?;
        let cidr = match &tg.vpc_id {
            Some(v) => self.networks.vpc_cidr(account, region, v)?,
            None => None,
        };
        for (id, _, az) in &list {
            match tg.target_type.as_str() {
                "ip" => {
                    let ip: Ipv4Addr = id.parse().map_err(|_| {
                        error(
                            "InvalidTarget",
                            format!("The IP address '{id}' is not a valid IPv4 address"),
                        )
                    })?;
                    let inside = cidr.as_deref().is_some_and(|c| cidr_contains(c, ip));
                    let all = az.as_deref() == Some("all");
                    if !(inside || (all && ip.is_private())) {
                        return Err(error(
                            "InvalidTarget",
                            format!(
                                "The IP address '{id}' is not within the CIDR block of the target group's VPC '{}'",
                                tg.vpc_id.as_deref().unwrap_or("")
                            ),
                        ));
                    }
                }
                _ => {
                    if self.instances.instance_ipv4(account, region, id).is_none() {
                        return Err(error(
                            "InvalidTarget",
                            format!(
                                "The following targets are not in a running state and can't be registered: '{id}'"
                            ),
                        ));
                    }
                }
            }
        }
        let tg_arn = tg_arn.to_string();
        self.mutate(account, region, move |s| {
            let tg = s.target_groups.get_mut(&tg_arn).ok_or_else(|| not_found(&tg_arn))?;
            for (id, port, az) in &list {
                match tg.targets.iter_mut().find(|t| t.id == *id && t.port == *port) {
                    Some(t) => {
                        if t.drain_until.take().is_some() {
                            t.health = None;
                            t.reason = None;
                            t.description = None;
                        }
                    }
                    None => tg.targets.push(Target {
                        id: id.clone(),
                        port: *port,
                        availability_zone: az.clone(),
                        registered: now_epoch(),
                        drain_until: None,
                        health: None,
                        reason: None,
                        description: None,
                    }),
                }
            }
            let max = crate::attrs::limit("targets-per-target-group");
            if tg.targets.len() > max {
                return Err(error(
                    "TooManyTargets",
                    format!("You've reached the limit on the number of targets per target group ({max})"),
                ));
            }
            // Per application load balancer: the targets of every group it
            // forwards to.
            let max = crate::attrs::limit("targets-per-application-load-balancer");
            for lb_arn in s.lbs_of_group(&tg_arn) {
                if !s.load_balancers.get(&lb_arn).is_some_and(|l| l.is_alb()) {
                    continue;
                }
                let total: usize = s
                    .target_groups
                    .values()
                    .filter(|g| s.lbs_of_group(&g.arn).contains(&lb_arn))
                    .map(|g| g.targets.len())
                    .sum();
                if total > max {
                    return Err(error(
                        "TooManyTargets",
                        format!("You've reached the limit on the number of targets per load balancer ({max})"),
                    ));
                }
            }
            Ok(())
        })
        .await
    }

    /// Deregisters targets: draining until the deregistration delay ends
    /// (gone at once when it is 0 or the group serves no load balancer).
    pub(crate) async fn deregister(
        &self,
        account: &str,
        region: &str,
        tg_arn: &str,
        list: Vec<(String, u16, Option<String>)>,
    ) -> Result<(), AwsError> {
        let tg_arn = tg_arn.to_string();
        self.mutate(account, region, move |s| {
            let used = !s.lbs_of_group(&tg_arn).is_empty();
            let tg = s.target_groups.get_mut(&tg_arn).ok_or_else(|| not_found(&tg_arn))?;
            let delay = tg.deregistration_delay();
            for (id, port, _) in &list {
                let Some(i) = tg.targets.iter().position(|t| t.id == *id && t.port == *port) else {
                    return Err(error(
                        "InvalidTarget",
                        format!(
                            "The following targets are not registered in target group '{tg_arn}': 'Id={id},Port={port}'"
                        ),
                    ));
                };
                if delay == 0 || !used {
                    tg.targets.remove(i);
                } else if tg.targets[i].drain_until.is_none() {
                    tg.targets[i].drain_until = Some(now_epoch() + f64::from(delay));
                }
            }
            Ok(())
        })
        .await
    }

    /// ECS: registers `(id, port)` targets.
    pub async fn register_targets(
        &self,
        account: &str,
        region: &str,
        tg_arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError> {
        let list = targets.iter().map(|(i, p)| (i.clone(), *p, None)).collect();
        self.register(account, region, tg_arn, list).await
    }

    /// ECS: deregisters `(id, port)` targets (they drain). Targets that are
    /// not registered are skipped.
    pub async fn deregister_targets(
        &self,
        account: &str,
        region: &str,
        tg_arn: &str,
        targets: &[(String, u16)],
    ) -> Result<(), AwsError> {
        let s = self.read(account, region)?;
        let tg = s
            .target_groups
            .get(tg_arn)
            .ok_or_else(|| not_found(tg_arn))?;
        let list: Vec<(String, u16, Option<String>)> = targets
            .iter()
            .filter(|(i, p)| tg.targets.iter().any(|t| t.id == *i && t.port == *p))
            .map(|(i, p)| (i.clone(), *p, None))
            .collect();
        if list.is_empty() {
            return Ok(());
        }
        self.deregister(account, region, tg_arn, list).await
    }

    /// ECS: what a service needs to know of a target group.
    pub fn target_group_summary(
        &self,
        account: &str,
        region: &str,
        tg_arn: &str,
    ) -> Result<TargetGroupSummary, AwsError> {
        let s = self.read(account, region)?;
        let tg = s
            .target_groups
            .get(tg_arn)
            .ok_or_else(|| not_found(tg_arn))?;
        Ok(TargetGroupSummary {
            arn: tg.arn.clone(),
            target_type: tg.target_type.clone(),
            protocol: tg.protocol.clone().unwrap_or_default(),
            port: tg.port.unwrap_or(0),
            vpc_id: tg.vpc_id.clone().unwrap_or_default(),
            load_balancer_arns: s.lbs_of_group(tg_arn),
            deregistration_delay_seconds: tg.deregistration_delay(),
        })
    }

    /// ECS: a target's state as DescribeTargetHealth answers it; `None`
    /// once it is not registered (a draining target that is gone).
    pub fn target_state(
        &self,
        account: &str,
        region: &str,
        tg_arn: &str,
        id: &str,
        port: u16,
    ) -> Result<Option<TargetStatus>, AwsError> {
        let s = self.read(account, region)?;
        let tg = s
            .target_groups
            .get(tg_arn)
            .ok_or_else(|| not_found(tg_arn))?;
        let Some(t) = tg.targets.iter().find(|t| t.id == id && t.port == port) else {
            return Ok(None);
        };
        let used = !s.lbs_of_group(tg_arn).is_empty();
        let (state, reason, description) = status(tg, Some(t), used);
        Ok(Some(TargetStatus {
            state,
            reason,
            description,
        }))
    }

    /// Removes draining targets whose delay is over, in every account and
    /// region; answers the earliest deadline still ahead.
    pub async fn expire_draining(&self) -> Result<Option<f64>, AwsError> {
        let now = now_epoch();
        let mut next: Option<f64> = None;
        let keys: Vec<(String, String)> = self
            .store
            .range(PREFIX, None, usize::MAX)
            .iter()
            .filter_map(|kv| split_key(&kv.key).map(|(a, r)| (a.to_string(), r.to_string())))
            .collect();
        for (account, region) in keys {
            let s = self.read(&account, &region)?;
            let mut expired = false;
            for tg in s.target_groups.values() {
                for t in &tg.targets {
                    if let Some(until) = t.drain_until {
                        if until <= now {
                            expired = true;
                        } else {
                            next = Some(next.map_or(until, |n: f64| n.min(until)));
                        }
                    }
                }
            }
            if expired {
                self.mutate(&account, &region, move |s| {
                    for tg in s.target_groups.values_mut() {
                        tg.targets.retain(|t| t.drain_until.is_none_or(|u| u > now));
                    }
                    Ok(())
                })
                .await?;
            }
        }
        Ok(next)
    }

    /// Removes draining targets when their deregistration delay ends:
    /// sleeps until the earliest deadline, woken by any ELB change. Run it
    /// on the leader only.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let revision = self.store.revision();
            let next = match self.expire_draining().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(code = %e.code, message = %e.message, "expiring draining targets failed");
                    Some(now_epoch() + 5.0)
                }
            };
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_secs_f64((t - now_epoch()).clamp(0.05, 3600.0))
            });
            let store: Arc<dyn Store> = self.store.clone();
            let mut watch = match store.watch(PREFIX, revision).await {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "watching ELB records failed");
                    None
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
                _ = async {
                    match watch.as_mut() {
                        Some(w) => { w.next().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
    }
}

pub(crate) fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(net) & mask) == (u32::from(ip) & mask)
}
