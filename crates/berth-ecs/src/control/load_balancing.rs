//! The target controller: keeps the load balancer targets of services with
//! `loadBalancers` equal to their running tasks, through the
//! [`LoadBalancerTargets`] port (Berth's `elbv2`), and brings their health
//! back onto the tasks for the service controller.
//!
//! It follows the store (a sweep at start, then every task change, and a
//! sweep every two seconds, which also reads the targets' health) and
//! works one task at a time: what to do is decided from the task alone
//! ([`load_balancers::step`]). Targets are recorded on the task, and in
//! the ledger of what ECS registered, before the load balancer is called,
//! so a crash between the two only repeats an idempotent call; the sweep
//! deregisters what the ledger holds for tasks that are gone, and never
//! touches targets registered by hand.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::shapes::ecs::LoadBalancer;
use berth_model::AwsError;
use berth_store::{Op, Store, StoreExt};

use crate::error;
use crate::state::clock::{self, Clock};
use crate::state::instances::InstanceRecord;
use crate::state::keys::{self, Scope};
use crate::state::load_balancers::{self as lb, LedgerTarget, Step};
pub use crate::state::load_balancers::{
    LoadBalancerTargets, RuleInfo, TargetGroupInfo, TargetHealthInfo, TaskTarget,
};
use crate::state::records::{decode, encode, load};
use crate::state::services::ServiceRecord;
use crate::state::tasks::TaskRecord;
use crate::state::{blue_green, index};

/// How often every service's tasks are swept (and their health read).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Runs the controller until the process ends.
pub async fn run_target_controller(store: Arc<dyn Store>, targets: Arc<dyn LoadBalancerTargets>) {
    let controller = TargetController {
        store,
        targets,
        clock: clock::system(),
    };
    controller.run().await;
}

pub(crate) struct TargetController {
    pub store: Arc<dyn Store>,
    pub targets: Arc<dyn LoadBalancerTargets>,
    pub clock: Arc<dyn Clock>,
}

impl TargetController {
    async fn run(&self) {
        loop {
            let from = self.store.revision();
            let mut clusters = self.sweep().await;
            let mut last_sweep = Instant::now();
            let mut watch = match self.store.watch("/ecs/", from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "target controller cannot watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::time::timeout(SWEEP_EVERY, watch.next()).await;
                let event = match next {
                    Ok(Some(Ok(event))) => Some(event),
                    Ok(None) | Ok(Some(Err(_))) => break,
                    Err(_) => None,
                };
                if let Some(event) = event {
                    let key = event.kv.key.as_str();
                    if let Some((scope, rest)) = keys::split_key(key) {
                        if let Some((cluster, _)) = rest
                            .strip_prefix("services/")
                            .and_then(|r| r.split_once('/'))
                        {
                            if let Ok(Some((service, _))) =
                                load::<ServiceRecord>(self.store.as_ref(), key)
                            {
                                if service.has_balancers() {
                                    clusters.insert(cluster_key(&scope, cluster));
                                }
                                self.shift(&scope, &service).await;
                            }
                        } else if keys::is_task_key(key) {
                            let cluster = rest
                                .strip_prefix("tasks/")
                                .and_then(|r| r.split_once('/'))
                                .map(|(c, _)| c)
                                .unwrap_or("");
                            if clusters.contains(&cluster_key(&scope, cluster))
                                || holds_targets(&event.kv.value)
                            {
                                self.handle(&scope, key, false).await;
                            }
                        }
                    }
                }
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    clusters = self.sweep().await;
                    last_sweep = Instant::now();
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every service with load balancers: each of its tasks handled (and
    /// its targets' health read); every task holding targets handled; the
    /// ledger's targets of tasks that are gone deregistered. Answers the
    /// clusters that have such services.
    pub(crate) async fn sweep(&self) -> HashSet<String> {
        let mut clusters = HashSet::new();
        for scope in keys::scopes(self.store.as_ref()) {
            let prefix = scope.all_services();
            let mut handled = HashSet::new();
            for kv in self.store.range(&prefix, None, usize::MAX) {
                let Ok(service) = decode::<ServiceRecord>(&kv) else {
                    continue;
                };
                if !service.has_balancers() {
                    continue;
                }
                clusters.insert(cluster_key(&scope, &service.cluster));
                self.shift(&scope, &service).await;
                let ids: Vec<String> = self
                    .store
                    .range(
                        &scope.service_tasks(&service.cluster, &service.name),
                        None,
                        usize::MAX,
                    )
                    .iter()
                    .filter_map(|kv| kv.key.rsplit('/').next().map(str::to_string))
                    .collect();
                for id in ids {
                    let key = scope.task(&service.cluster, &id);
                    let Ok(Some((record, _))) = load::<TaskRecord>(self.store.as_ref(), &key)
                    else {
                        continue;
                    };
                    handled.insert(key);
                    let balancers = blue_green::balancers_for(&service, &record);
                    let routes = route_groups(Some(&service));
                    self.act(&scope, record, &balancers, &routes, true).await;
                }
            }
            // Tasks holding targets whose service dropped its load
            // balancers (or is gone), and the ledger's orphans.
            for kv in self
                .store
                .range(&lb::ledger_prefix(&scope), None, usize::MAX)
            {
                let Some((cluster, id)) = kv
                    .key
                    .strip_prefix(&lb::ledger_prefix(&scope))
                    .and_then(|r| r.split_once('/'))
                else {
                    continue;
                };
                let key = scope.task(cluster, id);
                if handled.contains(&key) {
                    continue;
                }
                match load::<TaskRecord>(self.store.as_ref(), &key) {
                    Ok(Some(_)) => {
                        self.handle(&scope, &key, true).await;
                    }
                    Ok(None) => self.remove_orphans(&scope, &kv.key, &kv.value).await,
                    Err(_) => {}
                }
            }
        }
        clusters
    }

    /// Sets the listener rule weights a blue/green (linear, canary)
    /// deployment wants, then records on the service that they are set
    /// (and when), if it still wants them.
    pub(crate) async fn shift(&self, scope: &Scope, service: &ServiceRecord) {
        let Some(bg) = service.blue_green.clone().filter(|bg| !bg.settled()) else {
            return;
        };
        for (rule, weights) in blue_green::wanted_weights(service, bg.wanted) {
            if let Err(e) = self
                .targets
                .set_forward_weights(&scope.account, &scope.region, &rule, &weights)
                .await
            {
                tracing::warn!(service = %service.name, rule = %rule, error = %e.message, "shifting traffic");
                return;
            }
        }
        let key = scope.service(&service.cluster, &service.name);
        let at = self.clock.now();
        let _ = self
            .store
            .update(move |view| {
                let Some((mut s, _)) = load::<ServiceRecord>(view, &key)? else {
                    return Ok::<_, AwsError>((Vec::new(), ()));
                };
                let Some(now) = s.blue_green.as_mut() else {
                    return Ok((Vec::new(), ()));
                };
                if now.deployment != bg.deployment
                    || now.wanted != bg.wanted
                    || now.rolling_back != bg.rolling_back
                    || now.settled()
                {
                    return Ok((Vec::new(), ()));
                }
                now.applied = Some(now.wanted);
                now.applied_at = at;
                Ok((vec![Op::put(key.clone(), encode(&s)?)], ()))
            })
            .await;
    }

    /// Deregisters what the ledger holds for a task that is gone, then
    /// forgets it.
    async fn remove_orphans(&self, scope: &Scope, ledger_key: &str, value: &[u8]) {
        let Ok(entries) = serde_json::from_slice::<Vec<LedgerTarget>>(value) else {
            return;
        };
        for t in &entries {
            if let Err(e) = self
                .targets
                .deregister(
                    &scope.account,
                    &scope.region,
                    &t.target_group_arn,
                    &t.target_id,
                    t.port,
                )
                .await
            {
                tracing::warn!(error = %e.message, "deregistering a target no task holds");
                return;
            }
            tracing::info!(
                target_group = %t.target_group_arn,
                target = %t.target_id,
                port = t.port,
                "deregistered a load balancer target no task holds"
            );
        }
        let key = ledger_key.to_string();
        let _ = self
            .store
            .update(move |view| {
                if view.get(&key).is_none() {
                    return Ok::<_, AwsError>((Vec::new(), ()));
                }
                Ok((vec![Op::delete(key.clone())], ()))
            })
            .await;
    }

    /// Brings one task's targets to what they should be; `poll`: read
    /// their health too.
    pub(crate) async fn handle(&self, scope: &Scope, key: &str, poll: bool) {
        let Ok(Some((record, _))) = load::<TaskRecord>(self.store.as_ref(), key) else {
            return;
        };
        let service = record.service().and_then(|name| {
            load::<ServiceRecord>(self.store.as_ref(), &scope.service(&record.cluster, name))
                .ok()
                .flatten()
                .map(|(s, _)| s)
        });
        let balancers = service
            .as_ref()
            .map(|s| blue_green::balancers_for(s, &record))
            .unwrap_or_default();
        let routes = route_groups(service.as_ref());
        self.act(scope, record, &balancers, &routes, poll).await;
    }

    /// Takes a task's next steps (recording then registering happen in one
    /// go); `poll`: also reads its targets' health.
    async fn act(
        &self,
        scope: &Scope,
        record: TaskRecord,
        balancers: &[LoadBalancer],
        routes: &[String],
        poll: bool,
    ) {
        let mut record = record;
        // At most four steps: follow the gateway routes, record, register,
        // poll.
        for _ in 0..4 {
            let ec2 = ec2_instance_id(self.store.as_ref(), scope, &record);
            if let Some((add, remove)) =
                lb::route_changes(&record, balancers, routes, ec2.as_deref())
            {
                let outcome = self
                    .update_task(scope, &record, None, move |task| {
                        task.targets
                            .retain(|t| !(t.gateway && remove.contains(&t.target_group_arn)));
                        for a in &add {
                            if !task.targets.iter().any(|x| x.key() == a.key()) {
                                task.targets.push(a.clone());
                            }
                        }
                        Vec::new()
                    })
                    .await;
                match outcome {
                    Ok(next) => {
                        record = next;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(task = %record.arn(), error = %e.message, "gateway route targets");
                        return;
                    }
                }
            }
            let step = lb::step(&record, balancers, ec2.as_deref());
            let outcome = match step {
                Step::Nothing => return,
                Step::Record(list) => {
                    let list = list
                        .into_iter()
                        .map(|t| TaskTarget {
                            gateway: routes.contains(&t.target_group_arn),
                            ..t
                        })
                        .collect();
                    self.record_targets(scope, &record, list).await
                }
                Step::Register => self.register(scope, &record).await,
                Step::Deregister => self.deregister(scope, &record).await,
                Step::Poll if poll || record.targets.iter().all(|t| t.draining) => {
                    let result = self.poll(scope, &record).await;
                    if let Err(e) = result {
                        tracing::warn!(task = %record.arn(), error = %e.message, "load balancer target health");
                    }
                    return;
                }
                Step::Poll => return,
            };
            match outcome {
                Ok(next) => record = next,
                Err(e) => {
                    tracing::warn!(task = %record.arn(), error = %e.message, "load balancer targets");
                    return;
                }
            }
        }
    }

    async fn record_targets(
        &self,
        scope: &Scope,
        record: &TaskRecord,
        list: Vec<TaskTarget>,
    ) -> Result<TaskRecord, AwsError> {
        self.update_task(scope, record, None, move |task| {
            if task.targets.is_empty() {
                task.targets = list.clone();
            }
            Vec::new()
        })
        .await
    }

    async fn register(&self, scope: &Scope, record: &TaskRecord) -> Result<TaskRecord, AwsError> {
        let pending: Vec<TaskTarget> = record
            .targets
            .iter()
            .filter(|t| !t.registered)
            .cloned()
            .collect();
        for t in &pending {
            self.targets
                .register(
                    &scope.account,
                    &scope.region,
                    &t.target_group_arn,
                    &t.target_id,
                    t.port,
                )
                .await?;
        }
        let service = record.service().map(str::to_string);
        self.update_task(scope, record, service, move |task| {
            let mut events = Vec::new();
            for t in task.targets.iter_mut() {
                if !t.registered && pending.iter().any(|p| p.key() == t.key()) {
                    t.registered = true;
                    events.push(t.target_group_arn.clone());
                }
            }
            events
                .into_iter()
                .map(|arn| format!("registered 1 targets in (target-group {arn})"))
                .collect()
        })
        .await
    }

    async fn deregister(&self, scope: &Scope, record: &TaskRecord) -> Result<TaskRecord, AwsError> {
        let leaving: Vec<TaskTarget> = record
            .targets
            .iter()
            .filter(|t| !t.draining)
            .cloned()
            .collect();
        for t in &leaving {
            self.targets
                .deregister(
                    &scope.account,
                    &scope.region,
                    &t.target_group_arn,
                    &t.target_id,
                    t.port,
                )
                .await?;
        }
        let service = record.service().map(str::to_string);
        self.update_task(scope, record, service, move |task| {
            let mut events = Vec::new();
            for t in task.targets.iter_mut() {
                if !t.draining && leaving.iter().any(|l| l.key() == t.key()) {
                    t.draining = true;
                    if t.registered {
                        events.push(t.target_group_arn.clone());
                    }
                }
            }
            events
                .into_iter()
                .map(|arn| format!("deregistered 1 targets in (target-group {arn})"))
                .collect()
        })
        .await
    }

    /// Reads the targets' health: records changes, and forgets draining
    /// targets the load balancer no longer has.
    async fn poll(&self, scope: &Scope, record: &TaskRecord) -> Result<TaskRecord, AwsError> {
        let mut seen = Vec::new();
        for t in &record.targets {
            let health = self
                .targets
                .health(
                    &scope.account,
                    &scope.region,
                    &t.target_group_arn,
                    &t.target_id,
                    t.port,
                )
                .await?;
            seen.push((t.clone(), health));
        }
        // A target this task deregistered that is registered again (the
        // same instance and port, or address, by the task that replaced
        // it) is no longer this task's: it is forgotten here, never
        // deregistered again.
        let taken_over = |t: &TaskTarget, h: &TargetHealthInfo| t.draining && h.state != "draining";
        let changed = seen.iter().any(|(t, health)| match health {
            None => t.draining || t.health.is_some(),
            Some(h) => taken_over(t, h) || t.health.as_ref() != Some(h),
        });
        if !changed {
            return Ok(record.clone());
        }
        self.update_task(scope, record, None, move |task| {
            for (before, health) in &seen {
                let Some(pos) = task.targets.iter().position(|t| t.key() == before.key()) else {
                    continue;
                };
                match health {
                    None if task.targets[pos].draining => {
                        task.targets.remove(pos);
                    }
                    Some(h) if taken_over(&task.targets[pos], h) => {
                        task.targets.remove(pos);
                    }
                    other => task.targets[pos].health = other.clone(),
                }
            }
            Vec::new()
        })
        .await
    }

    /// Changes the stored task with `change` (its targets only: the rest
    /// is as stored now), keeps the ledger in step, and adds the events
    /// `change` answers to the task's service.
    async fn update_task(
        &self,
        scope: &Scope,
        record: &TaskRecord,
        service: Option<String>,
        change: impl Fn(&mut TaskRecord) -> Vec<String> + Send + 'static,
    ) -> Result<TaskRecord, AwsError> {
        let key = scope.task(&record.cluster, &record.id);
        let scope = scope.clone();
        let at = self.clock.now();
        let (_, task) = self
            .store
            .update(move |view| {
                let Some((mut task, _)) = load::<TaskRecord>(view, &key)? else {
                    return Err(error::invalid_parameter("The task is gone."));
                };
                let events = change(&mut task);
                let mut ops = index::put_task(&scope, &task)?;
                ops.push(lb::ledger_op(&scope, &task)?);
                if let Some(name) = service.as_deref().filter(|_| !events.is_empty()) {
                    let service_key = scope.service(&task.cluster, name);
                    if let Some((mut s, _)) = load::<ServiceRecord>(view, &service_key)? {
                        for event in events {
                            s.event(format!("(service {name}) {event}"), at);
                        }
                        ops.push(Op::put(service_key, encode(&s)?));
                    }
                }
                Ok::<_, AwsError>((ops, task))
            })
            .await
            .map_err(error::store)??;
        Ok(task)
    }
}

/// The target groups of a service's provisioned gateway routes.
fn route_groups(service: Option<&ServiceRecord>) -> Vec<String> {
    service
        .map(crate::state::gateways::route_balancers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|lb| lb.target_group_arn)
        .collect()
}

/// Whether a stored task holds targets, without decoding it (the field is
/// left out when empty).
fn holds_targets(value: &[u8]) -> bool {
    const FIELD: &[u8] = b"\"targets\"";
    value.windows(FIELD.len()).any(|w| w == FIELD)
}

fn cluster_key(scope: &Scope, cluster: &str) -> String {
    format!("{}/{}/{cluster}", scope.account, scope.region)
}

/// The EC2 instance id of the container instance running a task.
fn ec2_instance_id(view: &dyn Store, scope: &Scope, record: &TaskRecord) -> Option<String> {
    let instance = record.instance_id.as_deref()?;
    let (instance, _) =
        load::<InstanceRecord>(view, &scope.instance(record.host_cluster(), instance)).ok()??;
    instance.instance.ec2_instance_id.clone()
}

#[cfg(test)]
mod tests {
    //! The target controller with an in-memory load balancer, the handler
    //! harness, the service controller and the fake clock.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use berth_model::AwsError;
    use serde_json::{json, Value};

    use super::*;
    use crate::api::EcsService;
    use crate::state::tasks::TaskStatus;
    use crate::test_support::{FakeNetworks, Harness, Instance, Spec};

    const TG: &str =
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/web/0123456789abcdef";
    const TG_IP: &str =
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/ip/0123456789abcdef";
    const TG_ALONE: &str =
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/alone/0123456789abcdef";
    const LB: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/front/0123456789abcdef";
    const TG_ALT: &str =
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/green/0123456789abcdef";
    const RULE_PROD: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener-rule/app/front/0123456789abcdef/1111111111111111/2222222222222222";
    const RULE_TEST: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener-rule/app/front/0123456789abcdef/3333333333333333/4444444444444444";
    const ROLE: &str = "arn:aws:iam::000000000000:role/ecs-infrastructure";

    /// A rule's target groups and weights.
    type Weighted = Vec<(String, u32)>;

    /// Targets by (group, id, port): their health (`draining` once
    /// deregistered, until the test ends the delay).
    type Targets = BTreeMap<(String, String, u16), TargetHealthInfo>;

    /// Elastic Load Balancing in memory: three target groups, targets and
    /// the health the test sets.
    #[derive(Default)]
    pub(crate) struct FakeTargets {
        pub targets: Mutex<Targets>,
        /// Listener rules' forward weights as last set.
        pub rules: Mutex<BTreeMap<String, Vec<(String, u32)>>>,
        /// Every weight change, in order.
        pub shifts: Mutex<Vec<(String, Weighted)>>,
    }

    impl FakeTargets {
        fn health(state: &str, description: Option<&str>) -> TargetHealthInfo {
            TargetHealthInfo {
                state: state.into(),
                reason: None,
                description: description.map(str::to_string),
            }
        }

        /// Every target that is not draining turns `state`.
        fn set_all(&self, state: &str, description: Option<&str>) {
            for h in self.targets.lock().unwrap().values_mut() {
                if h.state != "draining" {
                    *h = Self::health(state, description);
                }
            }
        }

        /// The deregistration delay ends for every draining target.
        fn drain_over(&self) {
            self.targets
                .lock()
                .unwrap()
                .retain(|_, h| h.state != "draining");
        }

        fn live(&self) -> Vec<(String, String, u16)> {
            self.targets
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, h)| h.state != "draining")
                .map(|(k, _)| k.clone())
                .collect()
        }
    }

    #[async_trait::async_trait]
    impl LoadBalancerTargets for FakeTargets {
        fn describe_target_group(
            &self,
            _: &str,
            _: &str,
            arn: &str,
        ) -> Result<TargetGroupInfo, AwsError> {
            let (target_type, attached) =
                match arn {
                    TG | TG_ALT => ("instance", true),
                    TG_IP => ("ip", true),
                    TG_ALONE => ("instance", false),
                    _ => return Err(AwsError::bad_request(
                        "InvalidParameterException",
                        "Unable to assume role and validate the specified targetGroupArn. Please \
                         verify that the ECS service role being passed has the proper permissions.",
                    )),
                };
            Ok(TargetGroupInfo {
                arn: arn.into(),
                target_type: target_type.into(),
                protocol: "HTTP".into(),
                port: Some(80),
                load_balancer_arns: if attached { vec![LB.into()] } else { vec![] },
            })
        }
        async fn register(
            &self,
            _: &str,
            _: &str,
            tg: &str,
            id: &str,
            port: u16,
        ) -> Result<(), AwsError> {
            self.targets
                .lock()
                .unwrap()
                .entry((tg.into(), id.into(), port))
                .or_insert_with(|| Self::health("initial", None));
            Ok(())
        }
        async fn deregister(
            &self,
            _: &str,
            _: &str,
            tg: &str,
            id: &str,
            port: u16,
        ) -> Result<(), AwsError> {
            if let Some(h) = self
                .targets
                .lock()
                .unwrap()
                .get_mut(&(tg.into(), id.into(), port))
            {
                *h = Self::health("draining", None);
            }
            Ok(())
        }
        async fn health(
            &self,
            _: &str,
            _: &str,
            tg: &str,
            id: &str,
            port: u16,
        ) -> Result<Option<TargetHealthInfo>, AwsError> {
            Ok(self
                .targets
                .lock()
                .unwrap()
                .get(&(tg.into(), id.into(), port))
                .cloned())
        }
        fn describe_rule(&self, _: &str, _: &str, arn: &str) -> Result<RuleInfo, AwsError> {
            if arn != RULE_PROD && arn != RULE_TEST {
                return Err(error::invalid_parameter(format!(
                    "The listener rule {arn} does not exist."
                )));
            }
            let groups = self
                .rules
                .lock()
                .unwrap()
                .get(arn)
                .map(|w| w.iter().map(|(g, w)| (g.clone(), Some(*w))).collect())
                .unwrap_or_else(|| vec![(TG.to_string(), None)]);
            Ok(RuleInfo {
                arn: arn.into(),
                listener_arn: "listener".into(),
                load_balancer_arn: LB.into(),
                groups,
            })
        }
        async fn set_forward_weights(
            &self,
            _: &str,
            _: &str,
            rule: &str,
            weights: &[(String, u32)],
        ) -> Result<(), AwsError> {
            let mut rules = self.rules.lock().unwrap();
            if rules.get(rule).map(Vec::as_slice) != Some(weights) {
                rules.insert(rule.into(), weights.to_vec());
                self.shifts
                    .lock()
                    .unwrap()
                    .push((rule.into(), weights.to_vec()));
            }
            Ok(())
        }
    }

    fn harness() -> (Harness, Arc<FakeTargets>, TargetController) {
        let mut h = Harness::new();
        let fake = Arc::new(FakeTargets::default());
        h.ecs = EcsService::new(h.store.clone(), h.presence.clone())
            .with_networks(Arc::new(FakeNetworks))
            .with_load_balancers(fake.clone())
            .with_clock(h.clock.clone());
        let controller = TargetController {
            store: h.store.clone(),
            targets: fake.clone(),
            clock: h.clock.clone(),
        };
        (h, fake, controller)
    }

    async fn definition(h: &Harness, family: &str, network_mode: &str) {
        h.ok(
            "RegisterTaskDefinition",
            json!({
                "family": family,
                "networkMode": network_mode,
                "containerDefinitions": [{
                    "name": "web", "image": "busybox", "memory": 64,
                    "portMappings": [
                        {"containerPort": 8080, "hostPort": if network_mode == "bridge" { 0 } else { 8080 }},
                        {"containerPort": 8081, "hostPort": if network_mode == "bridge" { 0 } else { 8081 }},
                    ],
                }],
            }),
        )
        .await;
    }

    /// The agent reports every task it is shown to run as RUNNING with a
    /// host port, and every task it is shown to stop as STOPPED.
    async fn agent_reports(h: &Harness, instance: &Instance) {
        for task in h.poll(instance, 0, 0).await.tasks {
            let status = match (task.desired_status.as_str(), task.last_status.as_str()) {
                ("RUNNING", "RUNNING") => continue,
                ("RUNNING", _) => "RUNNING",
                ("STOPPED", last) if last != "STOPPED" => "STOPPED",
                _ => continue,
            };
            let id = task.task_arn.rsplit('/').next().unwrap_or("").to_string();
            // Distinct enough that two tasks rarely share a host port.
            let port = 32768 + u16::from_str_radix(&id[..4], 16).unwrap_or(0) % 30000;
            let report = json!({
                "taskArn": task.task_arn,
                "lastStatus": status,
                "startedAt": h.now(),
                "containers": [{
                    "name": "web", "lastStatus": status, "healthStatus": "UNKNOWN",
                    "networkBindings": [{"containerPort": 8080, "hostPort": port, "protocol": "tcp", "bindIP": "0.0.0.0"}],
                }],
            });
            h.agent(instance, "SubmitTaskState", report)
                .await
                .unwrap_or_else(|e| panic!("SubmitTaskState: {}", e.message));
        }
    }

    fn service(extra: Value) -> Value {
        let mut s = json!({
            "serviceName": "api", "taskDefinition": "api", "desiredCount": 2,
            "loadBalancers": [{"targetGroupArn": TG, "containerName": "web", "containerPort": 8080}],
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            s[k] = v;
        }
        s
    }

    async fn events(h: &Harness) -> Vec<String> {
        let out = h.ok("DescribeServices", json!({"services": ["api"]})).await;
        out["services"][0]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    }

    fn live_tasks(h: &Harness) -> Vec<TaskRecord> {
        h.service_tasks("default", "api")
            .into_iter()
            .filter(|t| t.last_status() != TaskStatus::Stopped)
            .collect()
    }

    #[tokio::test]
    async fn bad_load_balancers_are_refused_and_nothing_is_written() {
        let (h, _fake, _) = harness();
        h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        definition(&h, "vpc", "awsvpc").await;
        let lb = |tg: &str, name: &str, port: i32| json!({"targetGroupArn": tg, "containerName": name, "containerPort": port});
        let six: Vec<Value> = (0..6).map(|p| lb(TG, "web", 8080 + p)).collect();
        let cases: Vec<(Value, &str)> = vec![
            (json!({"loadBalancers": six}), "at most 5"),
            (
                json!({"loadBalancers": [{"loadBalancerName": "classic", "containerName": "web", "containerPort": 8080}]}),
                "Classic Load Balancers",
            ),
            (
                json!({"loadBalancers": [{"containerName": "web", "containerPort": 8080}]}),
                "Target Group ARN can not be blank.",
            ),
            (
                json!({"loadBalancers": [{"targetGroupArn": TG, "containerPort": 8080}]}),
                "Container Name can not be blank.",
            ),
            (
                json!({"loadBalancers": [{"targetGroupArn": TG, "containerName": "web"}]}),
                "Container Port can not be blank.",
            ),
            (
                json!({"loadBalancers": [lb("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/nope/1", "web", 8080)]}),
                "Unable to assume role and validate the specified targetGroupArn",
            ),
            (
                json!({"loadBalancers": [lb(TG_ALONE, "web", 8080)]}),
                "does not have an associated load balancer.",
            ),
            (
                json!({"loadBalancers": [lb(TG, "nope", 8080)]}),
                "The container nope does not exist in the task definition.",
            ),
            (
                json!({"loadBalancers": [lb(TG, "web", 9999)]}),
                "The container web did not have a container port 9999 defined.",
            ),
            (
                json!({"loadBalancers": [lb(TG_IP, "web", 8080)]}),
                "has target type ip, which is incompatible with the bridge network mode specified in the task definition.",
            ),
            (
                json!({"taskDefinition": "vpc", "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}}),
                "has target type instance, which is incompatible with the awsvpc network mode specified in the task definition.",
            ),
            (
                json!({"loadBalancers": [], "role": "ecsServiceRole"}),
                "only valid for services configured to use load balancers",
            ),
            (
                json!({"loadBalancers": [lb(TG, "web", 8080), lb(TG, "web", 8081)], "role": "ecsServiceRole"}),
                "You cannot specify an IAM role for services that require a service linked role.",
            ),
        ];
        for (extra, message) in cases {
            let e = h.err("CreateService", service(extra.clone())).await;
            assert_eq!(
                e.code, "InvalidParameterException",
                "{extra}: {}",
                e.message
            );
            assert!(e.message.contains(message), "{extra}: {}", e.message);
        }
        let listed = h.ok("ListServices", json!({})).await;
        assert_eq!(listed["serviceArns"], json!([]));

        // An update with a bad target group changes nothing either.
        h.ok("CreateService", service(json!({}))).await;
        let before = h.ok("DescribeServices", json!({"services": ["api"]})).await;
        let e = h
            .err(
                "UpdateService",
                json!({"service": "api", "loadBalancers": [lb(TG_IP, "web", 8080)]}),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let after = h.ok("DescribeServices", json!({"services": ["api"]})).await;
        assert_eq!(before, after);
        assert_eq!(
            after["services"][0]["loadBalancers"][0]["targetGroupArn"],
            TG
        );
        assert_eq!(after["services"][0]["healthCheckGracePeriodSeconds"], 0);
        // An awsvpc service with an ip target group is fine.
        h.ok(
            "CreateService",
            json!({"serviceName": "vpc", "taskDefinition": "vpc", "desiredCount": 0,
                "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}},
                "loadBalancers": [lb(TG_IP, "web", 8080)]}),
        )
        .await;
    }

    #[tokio::test]
    async fn bridge_tasks_register_and_count_only_once_their_targets_are_healthy() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok("CreateService", service(json!({}))).await;
        let controller = h.controller();
        controller.pass().await;
        // Not RUNNING yet: nothing registered.
        targets.sweep().await;
        assert!(fake.live().is_empty());

        agent_reports(&h, &instance).await;
        targets.sweep().await;
        let live = fake.live();
        assert_eq!(live.len(), 2);
        for (tg, id, port) in &live {
            assert_eq!(tg, TG);
            assert_eq!(id, "i-harness0000");
            assert!(*port >= 32768, "{port}");
        }
        let tasks = live_tasks(&h);
        assert!(tasks
            .iter()
            .all(|t| t.targets.len() == 1 && t.targets[0].registered));
        // The ledger holds what ECS registered.
        assert_eq!(
            h.store
                .range(&lb::ledger_prefix(&h.scope()), None, usize::MAX)
                .len(),
            2
        );
        let registered = format!("(service api) registered 1 targets in (target-group {TG})");
        assert_eq!(
            events(&h)
                .await
                .iter()
                .filter(|e| **e == registered)
                .count(),
            2
        );

        // Running but the targets are still `initial`: no steady state.
        controller.pass().await;
        targets.sweep().await;
        controller.pass().await;
        let steady = "(service api) has reached a steady state.".to_string();
        assert!(!events(&h).await.contains(&steady));

        fake.set_all("healthy", None);
        targets.sweep().await;
        assert!(live_tasks(&h)
            .iter()
            .all(|t| t.targets[0].health.as_ref().unwrap().state == "healthy"));
        controller.pass().await;
        assert!(events(&h).await.contains(&steady));
    }

    #[tokio::test]
    async fn a_deployment_stops_old_tasks_only_once_new_targets_are_healthy() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok("CreateService", service(json!({}))).await;
        let controller = h.controller();
        controller.pass().await;
        agent_reports(&h, &instance).await;
        targets.sweep().await;
        fake.set_all("healthy", None);
        targets.sweep().await;
        controller.pass().await;
        let old: Vec<String> = live_tasks(&h).iter().map(|t| t.id.clone()).collect();

        h.ok(
            "UpdateService",
            json!({"service": "api", "forceNewDeployment": true}),
        )
        .await;
        controller.pass().await;
        agent_reports(&h, &instance).await;
        targets.sweep().await;
        controller.pass().await;
        // Four running, the new ones `initial`: every old one still runs.
        let live = live_tasks(&h);
        assert_eq!(live.len(), 4);
        assert!(live
            .iter()
            .filter(|t| old.contains(&t.id))
            .all(|t| t.desired_status() == TaskStatus::Running));

        fake.set_all("healthy", None);
        targets.sweep().await;
        controller.pass().await;
        let stopping: Vec<&TaskRecord> = live.iter().filter(|t| old.contains(&t.id)).collect();
        assert_eq!(stopping.len(), 2);
        let now = live_tasks(&h);
        assert!(now
            .iter()
            .filter(|t| old.contains(&t.id))
            .all(|t| t.desired_status() == TaskStatus::Stopped));
        // Deregistered at once, still shown running to the agent.
        targets.sweep().await;
        assert_eq!(fake.live().len(), 2);
        assert!(h
            .poll(&instance, 0, 0)
            .await
            .tasks
            .iter()
            .all(|t| t.desired_status == "RUNNING"));
        let deregistered = format!("(service api) deregistered 1 targets in (target-group {TG})");
        assert_eq!(
            events(&h)
                .await
                .iter()
                .filter(|e| **e == deregistered)
                .count(),
            2
        );
        // The delay is over: the agent is told to stop them.
        fake.drain_over();
        targets.sweep().await;
        let shown = h.poll(&instance, 0, 0).await.tasks;
        let stopped: Vec<_> = shown
            .iter()
            .filter(|t| t.desired_status == "STOPPED")
            .collect();
        assert_eq!(stopped.len(), 2);
        assert!(stopped
            .iter()
            .all(|t| old.iter().any(|id| t.task_arn.ends_with(id.as_str()))));
        agent_reports(&h, &instance).await;
        controller.pass().await;
        assert!(events(&h)
            .await
            .iter()
            .any(|e| e.ends_with("deployment completed.")));
    }

    #[tokio::test]
    async fn an_unhealthy_target_gets_its_task_replaced_after_the_grace_period() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok(
            "CreateService",
            service(json!({"desiredCount": 1, "healthCheckGracePeriodSeconds": 30})),
        )
        .await;
        let controller = h.controller();
        controller.pass().await;
        agent_reports(&h, &instance).await;
        targets.sweep().await;
        let task = live_tasks(&h).remove(0);
        let port = task.targets[0].port;
        fake.set_all(
            "unhealthy",
            Some("Health checks failed with these codes: [500]"),
        );
        targets.sweep().await;
        // Within the grace period: kept.
        h.advance(10.0);
        controller.pass().await;
        assert_eq!(h.task(task.arn()).desired_status(), TaskStatus::Running);

        h.advance(25.0);
        controller.pass().await;
        let stopped = h.task(task.arn());
        assert_eq!(stopped.desired_status(), TaskStatus::Stopped);
        assert_eq!(
            stopped.task.stopped_reason.as_deref(),
            Some(format!("Task failed ELB health checks in (target-group {TG})").as_str())
        );
        assert_eq!(
            stopped.task.stop_code.as_deref(),
            Some("ServiceSchedulerInitiated")
        );
        let event = format!(
            "(service api) (instance i-harness0000) (port {port}) is unhealthy in (target-group {TG}) due to (reason Health checks failed with these codes: [500])."
        );
        assert!(events(&h).await.contains(&event), "{:?}", events(&h).await);
        // Its replacement starts; the old one leaves the target group first.
        targets.sweep().await;
        fake.drain_over();
        targets.sweep().await;
        agent_reports(&h, &instance).await;
        assert_eq!(h.task(task.arn()).last_status(), TaskStatus::Stopped);
        controller.pass().await;
        agent_reports(&h, &instance).await;
        targets.sweep().await;
        let live = live_tasks(&h);
        assert_eq!(live.len(), 1);
        assert_ne!(live[0].id, task.id);
        assert_eq!(fake.live().len(), 1);
    }

    #[tokio::test]
    async fn a_scaled_in_task_stops_only_after_its_target_drained() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok("CreateService", service(json!({}))).await;
        let controller = h.controller();
        controller.pass().await;
        agent_reports(&h, &instance).await;
        targets.sweep().await;
        fake.set_all("healthy", None);
        targets.sweep().await;
        h.ok(
            "UpdateService",
            json!({"service": "api", "desiredCount": 1}),
        )
        .await;
        controller.pass().await;
        let stopping: Vec<TaskRecord> = live_tasks(&h)
            .into_iter()
            .filter(|t| t.desired_status() == TaskStatus::Stopped)
            .collect();
        assert_eq!(stopping.len(), 1);
        targets.sweep().await;
        // Draining: the agent still runs it.
        assert!(h
            .poll(&instance, 0, 0)
            .await
            .tasks
            .iter()
            .all(|t| t.desired_status == "RUNNING"));
        targets.sweep().await;
        assert_eq!(h.task(stopping[0].arn()).targets.len(), 1);
        assert!(h.task(stopping[0].arn()).targets[0].draining);
        fake.drain_over();
        targets.sweep().await;
        assert!(h.task(stopping[0].arn()).targets.is_empty());
        let shown = h.poll(&instance, 0, 0).await.tasks;
        assert_eq!(
            shown
                .iter()
                .filter(|t| t.desired_status == "STOPPED")
                .count(),
            1
        );
        // The ledger forgot it.
        assert_eq!(
            h.store
                .range(&lb::ledger_prefix(&h.scope()), None, usize::MAX)
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn after_a_crash_recorded_targets_register_and_orphans_are_removed() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok("CreateService", service(json!({"desiredCount": 1})))
            .await;
        h.controller().pass().await;
        agent_reports(&h, &instance).await;
        // The server recorded the target, then died before ELB heard of it.
        let task = live_tasks(&h).remove(0);
        let list = lb::targets(
            &task,
            &[serde_json::from_value(
                json!({"targetGroupArn": TG, "containerName": "web", "containerPort": 8080}),
            )
            .unwrap()],
            Some("i-harness0000"),
        )
        .unwrap();
        targets
            .record_targets(&h.scope(), &task, list)
            .await
            .unwrap();
        assert!(fake.live().is_empty());
        // A task ECS registered and that vanished while it was down, and
        // a target registered by hand.
        let gone = TaskRecord {
            id: "0123456789abcdef0123456789abcdef".into(),
            cluster: "default".into(),
            targets: vec![TaskTarget {
                target_group_arn: TG.into(),
                target_id: "i-harness0000".into(),
                port: 31000,
                target_type: "instance".into(),
                registered: true,
                ..TaskTarget::default()
            }],
            ..TaskRecord::default()
        };
        let op = lb::ledger_op(&h.scope(), &gone).unwrap();
        h.store
            .update(move |_| Ok::<_, AwsError>((vec![op.clone()], ())))
            .await
            .unwrap()
            .unwrap();
        fake.register("", "", TG, "i-harness0000", 31000)
            .await
            .unwrap();
        fake.register("", "", TG, "i-by-hand", 80).await.unwrap();

        targets.sweep().await;
        let mut live = fake.live();
        live.sort();
        let mut expected = vec![
            (TG.to_string(), "i-by-hand".to_string(), 80),
            (
                TG.to_string(),
                "i-harness0000".to_string(),
                task.targets
                    .first()
                    .map(|t| t.port)
                    .unwrap_or(h.task(task.arn()).targets[0].port),
            ),
        ];
        expected.sort();
        assert_eq!(live, expected);
        assert!(h.task(task.arn()).targets[0].registered);
        assert_eq!(
            h.store
                .range(&lb::ledger_prefix(&h.scope()), None, usize::MAX)
                .len(),
            1
        );
    }

    #[test]
    fn awsvpc_tasks_are_ip_targets_on_their_address_and_container_port() {
        let mut record = TaskRecord {
            id: "t1".into(),
            cluster: "default".into(),
            ..TaskRecord::default()
        };
        record.definition.network_mode = Some("awsvpc".into());
        record.task.last_status = Some("RUNNING".into());
        let balancers: Vec<LoadBalancer> = vec![serde_json::from_value(
            json!({"targetGroupArn": TG_IP, "containerName": "web", "containerPort": 8080}),
        )
        .unwrap()];
        // No interface yet: nothing to register.
        assert_eq!(lb::step(&record, &balancers, None), Step::Nothing);
        record.network = Some(berth_model::agent_protocol::TaskNetworkInterface {
            private_ip: "10.0.1.5".into(),
            ..Default::default()
        });
        let Step::Record(list) = lb::step(&record, &balancers, None) else {
            panic!("no record step");
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].target_id, "10.0.1.5");
        assert_eq!(list[0].port, 8080);
        assert_eq!(list[0].target_type, "ip");
        record.targets = list;
        assert_eq!(lb::step(&record, &balancers, None), Step::Register);
        record.targets[0].registered = true;
        assert_eq!(lb::step(&record, &balancers, None), Step::Poll);
        record.targets[0].health =
            Some(FakeTargets::health("unhealthy", Some("Request timed out")));
        let event = lb::unhealthy_event("api", &record, &record.targets[0]);
        assert_eq!(
            event,
            format!("(service api) (task t1) (port 8080) is unhealthy in (target-group {TG_IP}) due to (reason Request timed out).")
        );
        // Asked to stop: deregistered, then polled until drained.
        record.task.desired_status = Some("STOPPED".into());
        assert_eq!(lb::step(&record, &balancers, None), Step::Deregister);
        record.targets[0].draining = true;
        assert_eq!(lb::step(&record, &balancers, None), Step::Poll);
        assert_eq!(
            crate::state::registry::agent_desired_status(&record),
            TaskStatus::Running
        );
        record.targets.clear();
        assert_eq!(
            crate::state::registry::agent_desired_status(&record),
            TaskStatus::Stopped
        );
    }

    // ---- blue/green, linear and canary deployments ----------------------

    impl FakeTargets {
        /// Every live target of group `tg` turns `state`.
        fn set_group(&self, tg: &str, state: &str) {
            for ((g, _, _), h) in self.targets.lock().unwrap().iter_mut() {
                if g == tg && h.state != "draining" {
                    *h = Self::health(state, None);
                }
            }
        }

        fn weights(&self, rule: &str) -> Vec<(String, u32)> {
            self.rules
                .lock()
                .unwrap()
                .get(rule)
                .cloned()
                .unwrap_or_default()
        }

        fn groups_of_live(&self) -> Vec<String> {
            self.live().into_iter().map(|(g, _, _)| g).collect()
        }
    }

    fn shifting_service(config: Value) -> Value {
        service(json!({
            "desiredCount": 2,
            "deploymentConfiguration": config,
            "loadBalancers": [{
                "targetGroupArn": TG, "containerName": "web", "containerPort": 8080,
                "advancedConfiguration": {
                    "alternateTargetGroupArn": TG_ALT,
                    "productionListenerRule": RULE_PROD,
                    "testListenerRule": RULE_TEST,
                    "roleArn": ROLE,
                },
            }],
        }))
    }

    /// One round: controller pass, the agent reports, the target
    /// controller sweeps (registers, reads health, shifts weights).
    async fn round(
        h: &Harness,
        controller: &crate::control::service_controller::ServiceController,
        targets: &TargetController,
        instance: &Instance,
    ) {
        controller.pass().await;
        agent_reports(h, instance).await;
        targets.sweep().await;
        controller.pass().await;
    }

    fn stored(h: &Harness) -> ServiceRecord {
        load::<ServiceRecord>(h.store.as_ref(), &h.scope().service("default", "api"))
            .unwrap()
            .unwrap()
            .0
    }

    fn stage(h: &Harness) -> Option<String> {
        stored(h).blue_green.map(|bg| bg.stage)
    }

    #[tokio::test]
    async fn blue_green_settings_are_checked_as_ecs_does() {
        let (h, _fake, _) = harness();
        h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        let bg = json!({"strategy": "BLUE_GREEN"});
        let cases = vec![
            shifting_service(json!({"strategy": "PURPLE"})),
            shifting_service(json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 1441})),
            shifting_service(
                json!({"strategy": "LINEAR", "linearConfiguration": {"stepPercent": 2.0}}),
            ),
            shifting_service(
                json!({"strategy": "CANARY", "canaryConfiguration": {"canaryPercent": 0.0}}),
            ),
            shifting_service(
                json!({"strategy": "BLUE_GREEN", "canaryConfiguration": {"canaryPercent": 10.0}}),
            ),
            shifting_service(json!({"strategy": "BLUE_GREEN", "lifecycleHooks": [{
                "hookTargetArn": "arn:aws:lambda:us-east-1:000000000000:function:hook",
                "roleArn": ROLE, "lifecycleStages": ["POST_SCALE_UP"]}]})),
            service(json!({"deploymentConfiguration": bg})),
            {
                let mut s = shifting_service(bg.clone());
                s["loadBalancers"][0]["advancedConfiguration"]["alternateTargetGroupArn"] =
                    json!(TG);
                s
            },
            {
                let mut s = shifting_service(bg.clone());
                s["loadBalancers"][0]["advancedConfiguration"]["alternateTargetGroupArn"] =
                    json!(TG_ALONE);
                s
            },
            {
                let mut s = shifting_service(bg.clone());
                s["loadBalancers"][0]["advancedConfiguration"]["productionListenerRule"] = json!("arn:aws:elasticloadbalancing:us-east-1:000000000000:listener-rule/app/front/0123456789abcdef/9/9");
                s
            },
            {
                let mut s = shifting_service(bg.clone());
                s["loadBalancers"][0]["advancedConfiguration"]["roleArn"] = json!("");
                s
            },
        ];
        for case in cases {
            let e = h.err("CreateService", case.clone()).await;
            assert_eq!(e.code, "InvalidParameterException", "{case}: {}", e.message);
        }
        assert!(h.service_tasks("default", "api").is_empty());
        let out = h.ok("ListServices", json!({})).await;
        assert_eq!(out["serviceArns"].as_array().map(Vec::len), Some(0));
        // The good one.
        h.ok("CreateService", shifting_service(bg)).await;
    }

    #[tokio::test]
    async fn a_canary_deployment_shifts_by_its_steps_and_survives_a_restart() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok(
            "CreateService",
            shifting_service(json!({
                "strategy": "CANARY", "bakeTimeInMinutes": 1,
                "canaryConfiguration": {"canaryPercent": 10.0, "canaryBakeTimeInMinutes": 2},
            })),
        )
        .await;
        let controller = h.controller();
        round(&h, &controller, &targets, &instance).await;
        fake.set_all("healthy", None);
        round(&h, &controller, &targets, &instance).await;
        // The first deployment has nothing to shift from: blue serves.
        assert_eq!(stored(&h).blue_green, None);
        assert_eq!(fake.groups_of_live(), vec![TG.to_string(), TG.to_string()]);

        h.ok(
            "UpdateService",
            json!({"service": "api", "forceNewDeployment": true}),
        )
        .await;
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(stage(&h).as_deref(), Some("SCALE_UP"));
        // The new tasks register in the alternate group; production and
        // test stay on blue.
        let mut groups = fake.groups_of_live();
        groups.sort();
        let mut both = vec![TG, TG, TG_ALT, TG_ALT];
        both.sort();
        assert_eq!(groups, both);
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 100), (TG_ALT.into(), 0)]
        );
        assert_eq!(
            fake.weights(RULE_TEST),
            vec![(TG.into(), 100), (TG_ALT.into(), 0)]
        );

        fake.set_group(TG_ALT, "healthy");
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(stage(&h).as_deref(), Some("TEST_TRAFFIC_SHIFT"));
        round(&h, &controller, &targets, &instance).await;
        // Test traffic on green, production still blue.
        assert_eq!(
            fake.weights(RULE_TEST),
            vec![(TG.into(), 0), (TG_ALT.into(), 100)]
        );
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 100), (TG_ALT.into(), 0)]
        );
        assert_eq!(stage(&h).as_deref(), Some("PRODUCTION_TRAFFIC_SHIFT"));
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 90), (TG_ALT.into(), 10)]
        );

        // The server restarts during the canary's bake: new controllers
        // resume from the stored deployment.
        let controller = h.controller();
        let targets = TargetController {
            store: h.store.clone(),
            targets: fake.clone(),
            clock: h.clock.clone(),
        };
        h.advance(119.0);
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 90), (TG_ALT.into(), 10)]
        );
        h.advance(2.0);
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 0), (TG_ALT.into(), 100)]
        );
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(stage(&h).as_deref(), Some("BAKE_TIME"));
        // The old tasks run through the bake time.
        assert_eq!(live_tasks(&h).len(), 4);
        h.advance(59.0);
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(stage(&h).as_deref(), Some("BAKE_TIME"));
        h.advance(2.0);
        controller.pass().await;
        assert_eq!(stage(&h).as_deref(), Some("CLEAN_UP"));
        // The old tasks are asked to stop (deregistered first).
        assert_eq!(
            live_tasks(&h)
                .iter()
                .filter(|t| t.desired_status() == TaskStatus::Running)
                .count(),
            2
        );
        fake.drain_over();
        round(&h, &controller, &targets, &instance).await;
        round(&h, &controller, &targets, &instance).await;
        let record = stored(&h);
        assert_eq!(record.blue_green, None);
        assert!(record.alternate_serving);
        assert_eq!(
            fake.groups_of_live(),
            vec![TG_ALT.to_string(), TG_ALT.to_string()]
        );
        assert!(events(&h)
            .await
            .iter()
            .any(|e| e.ends_with("deployment completed.")));
        let shifts: Vec<Vec<(String, u32)>> = fake
            .shifts
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r == RULE_PROD)
            .map(|(_, w)| w.clone())
            .collect();
        assert_eq!(
            shifts,
            vec![
                vec![(TG.into(), 100), (TG_ALT.into(), 0)],
                vec![(TG.into(), 90), (TG_ALT.into(), 10)],
                vec![(TG.into(), 0), (TG_ALT.into(), 100)],
            ]
        );
        let listed = h
            .ok("ListServiceDeployments", json!({"service": "api"}))
            .await;
        let arns: Vec<Value> = listed["serviceDeployments"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| d["serviceDeploymentArn"].clone())
            .collect();
        let described = h
            .ok(
                "DescribeServiceDeployments",
                json!({"serviceDeploymentArns": arns}),
            )
            .await;
        assert!(
            described["serviceDeployments"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["lifecycleStage"] == "CLEAN_UP" && d["status"] == "SUCCESSFUL"),
            "{described}"
        );

        // The next deployment goes the other way: green is now the
        // original group.
        h.ok(
            "UpdateService",
            json!({"service": "api", "forceNewDeployment": true}),
        )
        .await;
        round(&h, &controller, &targets, &instance).await;
        let mut groups = fake.groups_of_live();
        groups.sort();
        let mut both = vec![TG, TG, TG_ALT, TG_ALT];
        both.sort();
        assert_eq!(groups, both);
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG_ALT.into(), 100), (TG.into(), 0)]
        );
    }

    #[tokio::test]
    async fn a_linear_deployment_steps_every_bake() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok(
            "CreateService",
            shifting_service(json!({
                "strategy": "LINEAR",
                "linearConfiguration": {"stepPercent": 50.0, "stepBakeTimeInMinutes": 1},
            })),
        )
        .await;
        let controller = h.controller();
        round(&h, &controller, &targets, &instance).await;
        fake.set_all("healthy", None);
        round(&h, &controller, &targets, &instance).await;
        h.ok(
            "UpdateService",
            json!({"service": "api", "forceNewDeployment": true}),
        )
        .await;
        round(&h, &controller, &targets, &instance).await;
        fake.set_group(TG_ALT, "healthy");
        for _ in 0..3 {
            round(&h, &controller, &targets, &instance).await;
        }
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 50), (TG_ALT.into(), 50)]
        );
        h.advance(61.0);
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 0), (TG_ALT.into(), 100)]
        );
    }

    #[tokio::test]
    async fn a_failing_new_revision_is_rolled_back_without_serving_production() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok(
            "CreateService",
            shifting_service(json!({
                "strategy": "BLUE_GREEN",
                "deploymentCircuitBreaker": {"enable": true, "rollback": true},
            })),
        )
        .await;
        let controller = h.controller();
        round(&h, &controller, &targets, &instance).await;
        fake.set_all("healthy", None);
        round(&h, &controller, &targets, &instance).await;
        definition(&h, "api", "bridge").await;
        h.ok(
            "UpdateService",
            json!({"service": "api", "taskDefinition": "api"}),
        )
        .await;
        // The new tasks keep failing their health checks.
        for _ in 0..12 {
            round(&h, &controller, &targets, &instance).await;
            fake.set_group(TG_ALT, "unhealthy");
            targets.sweep().await;
            fake.drain_over();
            round(&h, &controller, &targets, &instance).await;
            if stored(&h).blue_green.is_none() && !stored(&h).rollbacks.is_empty() {
                break;
            }
        }
        for _ in 0..3 {
            fake.drain_over();
            round(&h, &controller, &targets, &instance).await;
        }
        let record = stored(&h);
        assert!(!record.rollbacks.is_empty(), "{:?}", events(&h).await);
        assert_eq!(record.blue_green, None);
        assert!(!record.alternate_serving);
        // Production never had weight on the new revision.
        assert!(fake
            .shifts
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r == RULE_PROD)
            .all(|(_, w)| w.iter().all(|(g, n)| g != TG_ALT || *n == 0)));
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 100), (TG_ALT.into(), 0)]
        );
        // Only the original revision runs, in the original group.
        assert_eq!(fake.groups_of_live(), vec![TG.to_string(), TG.to_string()]);
        let listed = h
            .ok("ListServiceDeployments", json!({"service": "api", "status": ["ROLLBACK_SUCCESSFUL", "ROLLBACK_IN_PROGRESS"]}))
            .await;
        assert_eq!(
            listed["serviceDeployments"].as_array().map(Vec::len),
            Some(1),
            "{listed}"
        );
    }

    fn code_deploy_start(id: &str, traffic: crate::TrafficShift) -> crate::CodeDeployStart {
        crate::CodeDeployStart {
            deployment_id: id.into(),
            cluster: "default".into(),
            service: "api".into(),
            task_definition: "api".into(),
            container_name: "web".into(),
            container_port: 8080,
            platform_version: None,
            network_configuration: None,
            capacity_provider_strategy: None,
            target_group_arns: vec![TG.into(), TG_ALT.into()],
            production_listener: RULE_PROD.into(),
            test_listener: Some(RULE_TEST.into()),
            traffic,
            termination_wait_minutes: 1,
            wait_to_continue: false,
        }
    }

    #[tokio::test]
    async fn codedeploy_deploys_a_code_deploy_service_through_its_listeners() {
        use crate::{ServiceDeploymentState, TrafficShift};
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        // CODE_DEPLOY needs exactly one target group.
        let e = h
            .err(
                "CreateService",
                service(
                    json!({"deploymentController": {"type": "CODE_DEPLOY"}, "loadBalancers": []}),
                ),
            )
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        h.ok(
            "CreateService",
            service(json!({"deploymentController": {"type": "CODE_DEPLOY"}})),
        )
        .await;
        let controller = h.controller();
        round(&h, &controller, &targets, &instance).await;
        fake.set_all("healthy", None);
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(fake.groups_of_live(), vec![TG.to_string(), TG.to_string()]);
        // Only CodeDeploy deploys it.
        definition(&h, "api", "bridge").await;
        let e = h
            .err(
                "UpdateService",
                json!({"service": "api", "taskDefinition": "api"}),
            )
            .await;
        assert!(e.message.contains("Use AWS CodeDeploy"), "{}", e.message);
        h.ok(
            "UpdateService",
            json!({"service": "api", "desiredCount": 2}),
        )
        .await;

        let canary = TrafficShift::Canary {
            percent: 10.0,
            minutes: 2,
        };
        // Bad starts change nothing.
        let mut wrong = code_deploy_start("d-BAD", canary);
        wrong.target_group_arns = vec![TG_ALT.into(), TG_ALONE.into()];
        let before = stored(&h);
        assert!(h
            .ecs
            .start_code_deploy("000000000000", "us-east-1", wrong)
            .await
            .is_err());
        let mut wrong = code_deploy_start("d-BAD", canary);
        wrong.container_name = "nope".into();
        assert!(h
            .ecs
            .start_code_deploy("000000000000", "us-east-1", wrong)
            .await
            .is_err());
        assert_eq!(stored(&h).service.deployments, before.service.deployments);
        assert_eq!(stored(&h).code_deploy, None);

        let arn = h
            .ecs
            .start_code_deploy(
                "000000000000",
                "us-east-1",
                code_deploy_start("d-1", canary),
            )
            .await
            .unwrap();
        // Started again after a crash: the same deployment.
        let again = h
            .ecs
            .start_code_deploy(
                "000000000000",
                "us-east-1",
                code_deploy_start("d-1", canary),
            )
            .await
            .unwrap();
        assert_eq!(arn, again);
        assert_eq!(stored(&h).deployments().len(), 2);
        // A second deployment while one runs is refused.
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(stage(&h).as_deref(), Some("SCALE_UP"));
        assert!(h
            .ecs
            .start_code_deploy(
                "000000000000",
                "us-east-1",
                code_deploy_start("d-2", canary)
            )
            .await
            .is_err());
        let state = |h: &Harness| {
            h.ecs
                .service_deployment_state("000000000000", "us-east-1", &arn)
                .unwrap()
        };
        assert!(matches!(
            state(&h),
            ServiceDeploymentState::InProgress { .. }
        ));
        fake.set_group(TG_ALT, "healthy");
        for _ in 0..3 {
            round(&h, &controller, &targets, &instance).await;
        }
        assert_eq!(
            fake.weights(RULE_TEST),
            vec![(TG.into(), 0), (TG_ALT.into(), 100)]
        );
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 90), (TG_ALT.into(), 10)]
        );
        assert_eq!(
            state(&h),
            ServiceDeploymentState::InProgress {
                stage: "PRODUCTION_TRAFFIC_SHIFT".into(),
                waiting_to_continue: false,
            }
        );
        h.advance(121.0);
        round(&h, &controller, &targets, &instance).await;
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 0), (TG_ALT.into(), 100)]
        );
        h.advance(61.0);
        round(&h, &controller, &targets, &instance).await;
        fake.drain_over();
        round(&h, &controller, &targets, &instance).await;
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(state(&h), ServiceDeploymentState::Succeeded);
        let record = stored(&h);
        assert!(record.alternate_serving);
        assert_eq!(
            fake.groups_of_live(),
            vec![TG_ALT.to_string(), TG_ALT.to_string()]
        );
        // The service's own configuration is untouched.
        assert_eq!(
            record
                .service
                .deployment_configuration
                .and_then(|c| c.strategy),
            None
        );

        // The next one goes back to the first group, and is stopped:
        // production stays where it was.
        let arn = h
            .ecs
            .start_code_deploy(
                "000000000000",
                "us-east-1",
                code_deploy_start("d-2", TrafficShift::AllAtOnce),
            )
            .await
            .unwrap();
        round(&h, &controller, &targets, &instance).await;
        h.ecs
            .roll_back_service_deployment("000000000000", "us-east-1", &arn)
            .await
            .unwrap();
        for _ in 0..4 {
            fake.drain_over();
            round(&h, &controller, &targets, &instance).await;
        }
        assert!(matches!(
            state(&h),
            ServiceDeploymentState::InProgress { .. } | ServiceDeploymentState::Succeeded
        ));
        assert!(matches!(
            h.ecs
                .service_deployment_state("000000000000", "us-east-1", &arn)
                .unwrap(),
            ServiceDeploymentState::RolledBack { .. }
        ));
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG_ALT.into(), 100), (TG.into(), 0)]
        );
    }

    #[tokio::test]
    async fn a_code_deploy_deployment_waits_for_continue_before_production_moves() {
        use crate::{ContinueWait, ServiceDeploymentState, TrafficShift};
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok(
            "CreateService",
            service(json!({"deploymentController": {"type": "CODE_DEPLOY"}})),
        )
        .await;
        let controller = h.controller();
        round(&h, &controller, &targets, &instance).await;
        fake.set_all("healthy", None);
        round(&h, &controller, &targets, &instance).await;
        let mut start = code_deploy_start("d-1", TrafficShift::AllAtOnce);
        start.wait_to_continue = true;
        start.termination_wait_minutes = 60;
        let arn = h
            .ecs
            .start_code_deploy("000000000000", "us-east-1", start)
            .await
            .unwrap();
        let state = |h: &Harness| {
            h.ecs
                .service_deployment_state("000000000000", "us-east-1", &arn)
                .unwrap()
        };
        let waiting = ServiceDeploymentState::InProgress {
            stage: "TEST_TRAFFIC_SHIFT".into(),
            waiting_to_continue: true,
        };
        round(&h, &controller, &targets, &instance).await;
        fake.set_group(TG_ALT, "healthy");
        for _ in 0..4 {
            round(&h, &controller, &targets, &instance).await;
        }
        // Test traffic reaches the new revision; production waits, however
        // long it takes.
        assert_eq!(
            fake.weights(RULE_TEST),
            vec![(TG.into(), 0), (TG_ALT.into(), 100)]
        );
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 100), (TG_ALT.into(), 0)]
        );
        assert_eq!(state(&h), waiting);
        h.advance(3600.0);
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(state(&h), waiting);
        // ContinueDeployment (READY_WAIT): production moves.
        let continue_ = |wait| {
            h.ecs
                .continue_code_deploy("000000000000", "us-east-1", &arn, wait)
        };
        continue_(ContinueWait::Ready).await.unwrap();
        // Twice is harmless.
        continue_(ContinueWait::Ready).await.unwrap();
        for _ in 0..3 {
            round(&h, &controller, &targets, &instance).await;
        }
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 0), (TG_ALT.into(), 100)]
        );
        // The 60-minute termination wait, ended early.
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(stage(&h).as_deref(), Some("BAKE_TIME"));
        continue_(ContinueWait::Termination).await.unwrap();
        round(&h, &controller, &targets, &instance).await;
        fake.drain_over();
        for _ in 0..3 {
            round(&h, &controller, &targets, &instance).await;
        }
        assert_eq!(state(&h), ServiceDeploymentState::Succeeded);
        // A deployment that is not the service's CodeDeploy one is not found.
        let e = continue_(ContinueWait::Ready).await;
        assert!(e.is_ok(), "the routing stays with the last deployment");
        let other = arn.replace(&arn.rsplit('/').next().unwrap_or_default().to_string(), "1");
        let e = h
            .ecs
            .continue_code_deploy("000000000000", "us-east-1", &other, ContinueWait::Ready)
            .await
            .unwrap_err();
        assert_eq!(e.code, "ServiceDeploymentNotFoundException");
    }

    #[tokio::test]
    async fn a_newer_deployment_first_brings_traffic_back_to_blue() {
        let (h, fake, targets) = harness();
        let instance = h.instance("default", Spec::default()).await;
        definition(&h, "api", "bridge").await;
        h.ok(
            "CreateService",
            shifting_service(json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 10})),
        )
        .await;
        let controller = h.controller();
        round(&h, &controller, &targets, &instance).await;
        fake.set_all("healthy", None);
        round(&h, &controller, &targets, &instance).await;
        h.ok(
            "UpdateService",
            json!({"service": "api", "forceNewDeployment": true}),
        )
        .await;
        round(&h, &controller, &targets, &instance).await;
        let second = stored(&h).blue_green.unwrap().deployment;
        fake.set_group(TG_ALT, "healthy");
        round(&h, &controller, &targets, &instance).await;
        round(&h, &controller, &targets, &instance).await;
        assert_eq!(
            fake.weights(RULE_TEST),
            vec![(TG.into(), 0), (TG_ALT.into(), 100)]
        );

        // A third deployment while the second one is tested.
        h.ok(
            "UpdateService",
            json!({"service": "api", "forceNewDeployment": true}),
        )
        .await;
        controller.pass().await;
        let bg = stored(&h).blue_green.unwrap();
        assert!(bg.rolling_back && bg.deployment == second);
        // Nothing of the third starts before traffic is back on blue.
        assert_eq!(live_tasks(&h).len(), 4);
        targets.sweep().await;
        assert_eq!(
            fake.weights(RULE_TEST),
            vec![(TG.into(), 100), (TG_ALT.into(), 0)]
        );
        for _ in 0..4 {
            fake.drain_over();
            round(&h, &controller, &targets, &instance).await;
        }
        // The third deployment runs in green, the second's tasks are gone,
        // the first's still serve production.
        let bg = stored(&h).blue_green.unwrap();
        assert_ne!(bg.deployment, second);
        assert!(!bg.rolling_back);
        let mut groups = fake.groups_of_live();
        groups.sort();
        let mut both = vec![TG, TG, TG_ALT, TG_ALT];
        both.sort();
        assert_eq!(groups, both);
        assert!(live_tasks(&h)
            .iter()
            .all(|t| t.task.started_by.as_deref() != Some(second.as_str())
                || t.desired_status() == TaskStatus::Stopped));
        assert_eq!(
            fake.weights(RULE_PROD),
            vec![(TG.into(), 100), (TG_ALT.into(), 0)]
        );
    }
}
