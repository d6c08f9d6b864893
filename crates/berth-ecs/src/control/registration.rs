//! The registration controller: keeps the Cloud Map instances of services
//! with `serviceRegistries` equal to their live tasks, through the
//! [`ServiceRegistries`] port (Berth's `servicediscovery`).
//!
//! It follows the store (a full sweep at start, then every task change,
//! and a sweep every few seconds) and works one task at a time: what to do
//! is decided from the task alone ([`registry::step`]), the Cloud Map call
//! is made, then the task records what it holds. A crash between the two
//! repeats the call, which is idempotent. The sweep also removes instances
//! ECS registered for tasks that no longer hold them (a task deleted while
//! the server was down), so after a restart Cloud Map matches the running
//! tasks.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::shapes::ecs::ServiceRegistry;
use berth_model::AwsError;
use berth_store::{Store, StoreExt};

use crate::error;
use crate::state::index;
use crate::state::instances::InstanceRecord;
use crate::state::keys::{self, Scope};
use crate::state::records::load;
use crate::state::registry::{self, Step, TaskRegistration, HOST_IPV4_ATTRIBUTE};
pub use crate::state::registry::{RegisteredInstance, RegistryInfo, ServiceRegistries};
use crate::state::services::ServiceRecord;
use crate::state::tasks::TaskRecord;

/// How often the whole state is swept even without changes.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs the controller until the process ends.
pub async fn run_registration_controller(
    store: Arc<dyn Store>,
    registries: Arc<dyn ServiceRegistries>,
) {
    loop {
        let from = store.revision();
        let mut clusters = sweep(&store, registries.as_ref()).await;
        let mut last_sweep = Instant::now();
        let mut watch = match store.watch("/ecs/", from).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "registration controller cannot watch the store");
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
                        // A service changed: whether its cluster has
                        // registries may have too.
                        if let Ok(Some((service, _))) = load::<ServiceRecord>(store.as_ref(), key) {
                            if !registries_of(&service).is_empty() {
                                clusters.insert(cluster_key(&scope, cluster));
                            }
                        }
                    } else if keys::is_task_key(key) {
                        let cluster = rest
                            .strip_prefix("tasks/")
                            .and_then(|r| r.split_once('/'))
                            .map(|(c, _)| c)
                            .unwrap_or("");
                        // Tasks of clusters with registries, and any task
                        // still holding a registration (its service may have
                        // dropped its registries since).
                        if clusters.contains(&cluster_key(&scope, cluster))
                            || holds_registrations(&event.kv.value)
                        {
                            handle(&store, registries.as_ref(), &scope, key).await;
                        }
                    }
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                clusters = sweep(&store, registries.as_ref()).await;
                last_sweep = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a stored task holds registrations, without decoding it (the
/// field is left out when empty).
fn holds_registrations(value: &[u8]) -> bool {
    const FIELD: &[u8] = b"\"registrations\"";
    value.windows(FIELD.len()).any(|w| w == FIELD)
}

fn cluster_key(scope: &Scope, cluster: &str) -> String {
    format!("{}/{}/{cluster}", scope.account, scope.region)
}

fn registries_of(service: &ServiceRecord) -> &[ServiceRegistry] {
    service.service.service_registries.as_deref().unwrap_or(&[])
}

/// Every service with registries: each of its tasks handled, and the
/// instances ECS registered for tasks that no longer hold them removed.
/// Answers the clusters that have such services.
async fn sweep(store: &Arc<dyn Store>, registries: &dyn ServiceRegistries) -> HashSet<String> {
    let mut clusters = HashSet::new();
    for scope in keys::scopes(store.as_ref()) {
        let prefix = scope.all_services();
        for kv in store.range(&prefix, None, usize::MAX) {
            let Ok(Some((service, _))) = load::<ServiceRecord>(store.as_ref(), &kv.key) else {
                continue;
            };
            // Tasks of a service whose registries were removed may still
            // hold registrations: the watch handles them when they change.
            if registries_of(&service).is_empty() {
                continue;
            }
            clusters.insert(cluster_key(&scope, &service.cluster));
            let task_ids: Vec<String> = store
                .range(
                    &scope.service_tasks(&service.cluster, &service.name),
                    None,
                    usize::MAX,
                )
                .iter()
                .filter_map(|kv| kv.key.rsplit('/').next().map(str::to_string))
                .collect();
            let mut held: HashSet<(String, String)> = HashSet::new();
            for id in &task_ids {
                let key = scope.task(&service.cluster, id);
                // The service is at hand: only the task is read.
                let Ok(Some((record, _))) = load::<TaskRecord>(store.as_ref(), &key) else {
                    continue;
                };
                let record = act(store, registries, &scope, record, registries_of(&service)).await;
                held.extend(
                    record
                        .registrations
                        .iter()
                        .map(|r| (r.registry_arn.clone(), r.instance_id.clone())),
                );
            }
            for registry in registries_of(&service) {
                let Some(arn) = registry.registry_arn.as_deref() else {
                    continue;
                };
                remove_orphans(registries, &scope, &service, arn, &held).await;
            }
        }
    }
    clusters
}

/// Deregisters the instances ECS registered for this service's tasks that
/// no task holds any more.
async fn remove_orphans(
    registries: &dyn ServiceRegistries,
    scope: &Scope,
    service: &ServiceRecord,
    registry_arn: &str,
    held: &HashSet<(String, String)>,
) {
    let Ok(instances) = registries.instances(&scope.account, &scope.region, registry_arn) else {
        return;
    };
    for instance in instances {
        let ours = instance.attributes.get("ECS_SERVICE_NAME") == Some(&service.name)
            && instance.attributes.get("ECS_CLUSTER_NAME") == Some(&service.cluster);
        if !ours || held.contains(&(registry_arn.to_string(), instance.id.clone())) {
            continue;
        }
        match registries
            .deregister(&scope.account, &scope.region, registry_arn, &instance.id)
            .await
        {
            Ok(()) => tracing::info!(
                service = %service.name,
                instance = %instance.id,
                "deregistered a service-discovery instance no task holds"
            ),
            Err(e) => tracing::warn!(error = %e.message, "deregistering an orphaned instance"),
        }
    }
}

/// Brings one task's registrations to what it should hold. Answers the
/// task as it is afterwards (`None` when it is gone or not a service's).
async fn handle(
    store: &Arc<dyn Store>,
    registries: &dyn ServiceRegistries,
    scope: &Scope,
    key: &str,
) -> Option<TaskRecord> {
    let (record, _) = load::<TaskRecord>(store.as_ref(), key).ok()??;
    let service_name = record.service()?.to_string();
    let service = load::<ServiceRecord>(
        store.as_ref(),
        &scope.service(&record.cluster, &service_name),
    )
    .ok()
    .flatten()
    .map(|(s, _)| s);
    let service_registries = service.as_ref().map(registries_of).unwrap_or(&[]);
    Some(act(store, registries, scope, record, service_registries).await)
}

/// Takes a task's next registration step, its service's registries
/// given; answers the task as it is afterwards.
async fn act(
    store: &Arc<dyn Store>,
    registries: &dyn ServiceRegistries,
    scope: &Scope,
    record: TaskRecord,
    service_registries: &[ServiceRegistry],
) -> TaskRecord {
    let host_ipv4 = host_ipv4(store.as_ref(), scope, &record);
    let outcome = match registry::step(
        &record,
        service_registries,
        host_ipv4.as_deref(),
        &scope.region,
    ) {
        Step::Nothing => return record,
        Step::Register(list) => register(store, registries, scope, &record, list).await,
        Step::SetHealth(changes) => set_health(store, registries, scope, &record, changes).await,
        Step::Deregister => deregister(store, registries, scope, &record).await,
    };
    match outcome {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(task = %record.arn(), error = %e.message, "service discovery registration");
            record
        }
    }
}

/// The address of the host running a bridge or host mode task.
fn host_ipv4(view: &dyn Store, scope: &Scope, record: &TaskRecord) -> Option<String> {
    let instance = record.instance_id.as_deref()?;
    let (instance, _) =
        load::<InstanceRecord>(view, &scope.instance(record.host_cluster(), instance)).ok()??;
    instance
        .attributes()
        .iter()
        .find(|a| a.name.as_deref() == Some(HOST_IPV4_ATTRIBUTE))
        .and_then(|a| a.value.clone())
}

async fn register(
    store: &Arc<dyn Store>,
    registries: &dyn ServiceRegistries,
    scope: &Scope,
    record: &TaskRecord,
    list: Vec<(String, BTreeMap<String, String>)>,
) -> Result<TaskRecord, AwsError> {
    let mut made = Vec::new();
    for (arn, attributes) in list {
        let info = registries.describe(&scope.account, &scope.region, &arn)?;
        registries
            .register(&scope.account, &scope.region, &arn, &record.id, &attributes)
            .await?;
        made.push(TaskRegistration {
            registry_arn: arn,
            instance_id: record.id.clone(),
            healthy: info.custom_health.then_some(true),
        });
    }
    update_task(store, scope, record, move |task| {
        for registration in &made {
            if !task.registrations.contains(registration) {
                task.registrations.push(registration.clone());
            }
        }
    })
    .await
}

async fn set_health(
    store: &Arc<dyn Store>,
    registries: &dyn ServiceRegistries,
    scope: &Scope,
    record: &TaskRecord,
    changes: Vec<(String, bool)>,
) -> Result<TaskRecord, AwsError> {
    for (arn, healthy) in &changes {
        registries
            .set_health(&scope.account, &scope.region, arn, &record.id, *healthy)
            .await?;
    }
    update_task(store, scope, record, move |task| {
        for (arn, healthy) in &changes {
            for r in task
                .registrations
                .iter_mut()
                .filter(|r| &r.registry_arn == arn)
            {
                r.healthy = Some(*healthy);
            }
        }
    })
    .await
}

async fn deregister(
    store: &Arc<dyn Store>,
    registries: &dyn ServiceRegistries,
    scope: &Scope,
    record: &TaskRecord,
) -> Result<TaskRecord, AwsError> {
    let gone: Vec<TaskRegistration> = record.registrations.clone();
    for r in &gone {
        registries
            .deregister(
                &scope.account,
                &scope.region,
                &r.registry_arn,
                &r.instance_id,
            )
            .await?;
    }
    update_task(store, scope, record, move |task| {
        task.registrations.retain(|r| !gone.contains(r));
    })
    .await
}

/// Changes the stored task with `change` (the registrations only: the rest
/// of the record is as stored now, not as `record` was read).
async fn update_task(
    store: &Arc<dyn Store>,
    scope: &Scope,
    record: &TaskRecord,
    change: impl Fn(&mut TaskRecord) + Send + 'static,
) -> Result<TaskRecord, AwsError> {
    let key = scope.task(&record.cluster, &record.id);
    let scope = scope.clone();
    let (_, task) = store
        .update(move |view| {
            let Some((mut task, _)) = load::<TaskRecord>(view, &key)? else {
                return Err(error::invalid_parameter("The task is gone."));
            };
            change(&mut task);
            Ok::<_, AwsError>((index::put_task(&scope, &task)?, task))
        })
        .await
        .map_err(error::store)??;
    Ok(task)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use berth_model::AwsError;
    use serde_json::{json, Value};

    use super::*;
    use crate::api::EcsService;
    use crate::state::tasks::TaskStatus;
    use crate::test_support::{FakeNetworks, Harness, Instance, Spec};

    const ARN: &str = "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-1";

    /// Cloud Map in memory: instances by id with their attributes and
    /// custom health.
    /// Instances by id: their attributes and whether they are healthy.
    type Instances = BTreeMap<String, (BTreeMap<String, String>, bool)>;

    #[derive(Default)]
    struct FakeRegistries {
        record_types: Mutex<Vec<String>>,
        instances: Mutex<Instances>,
    }

    #[async_trait::async_trait]
    impl ServiceRegistries for FakeRegistries {
        fn describe(&self, _: &str, _: &str, arn: &str) -> Result<RegistryInfo, AwsError> {
            if arn != ARN && arn != "srv-1" {
                return Err(AwsError::bad_request(
                    "InvalidParameterException",
                    format!("The service registry {arn} was not found."),
                ));
            }
            Ok(RegistryInfo {
                arn: ARN.into(),
                record_types: self.record_types.lock().unwrap().clone(),
                custom_health: true,
            })
        }
        async fn register(
            &self,
            _: &str,
            _: &str,
            _: &str,
            id: &str,
            attributes: &BTreeMap<String, String>,
        ) -> Result<(), AwsError> {
            self.instances
                .lock()
                .unwrap()
                .insert(id.into(), (attributes.clone(), true));
            Ok(())
        }
        async fn deregister(&self, _: &str, _: &str, _: &str, id: &str) -> Result<(), AwsError> {
            self.instances.lock().unwrap().remove(id);
            Ok(())
        }
        async fn set_health(
            &self,
            _: &str,
            _: &str,
            _: &str,
            id: &str,
            healthy: bool,
        ) -> Result<(), AwsError> {
            if let Some(i) = self.instances.lock().unwrap().get_mut(id) {
                i.1 = healthy;
            }
            Ok(())
        }
        fn instances(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<Vec<RegisteredInstance>, AwsError> {
            Ok(self
                .instances
                .lock()
                .unwrap()
                .iter()
                .map(|(id, (attributes, _))| RegisteredInstance {
                    id: id.clone(),
                    attributes: attributes.clone(),
                })
                .collect())
        }
    }

    fn harness(types: &[&str]) -> (Harness, Arc<FakeRegistries>) {
        let mut h = Harness::new();
        let fake = Arc::new(FakeRegistries::default());
        *fake.record_types.lock().unwrap() = types.iter().map(|t| t.to_string()).collect();
        h.ecs = EcsService::new(h.store.clone(), h.presence.clone())
            .with_networks(Arc::new(FakeNetworks))
            .with_registries(fake.clone())
            .with_clock(h.clock.clone());
        (h, fake)
    }

    async fn definition(h: &Harness, network_mode: &str) {
        h.ok(
            "RegisterTaskDefinition",
            json!({
                "family": "api",
                "networkMode": network_mode,
                "containerDefinitions": [{
                    "name": "web", "image": "busybox", "memory": 64,
                    "portMappings": [{"containerPort": 8080, "hostPort": 0}],
                    "healthCheck": {"command": ["CMD", "true"]},
                }],
            }),
        )
        .await;
    }

    /// The agent reports every task it is shown to run as RUNNING with a
    /// host port (`health` for its container), and every task it is shown
    /// to stop as STOPPED.
    async fn agent_reports(h: &Harness, instance: &Instance, health: &str) {
        for (n, task) in h.poll(instance, 0, 0).await.tasks.into_iter().enumerate() {
            let status = match (task.desired_status.as_str(), task.last_status.as_str()) {
                ("RUNNING", _) => "RUNNING",
                ("STOPPED", last) if last != "STOPPED" => "STOPPED",
                _ => continue,
            };
            let report = json!({
                "taskArn": task.task_arn,
                "lastStatus": status,
                "startedAt": h.now(),
                "containers": [{
                    "name": "web", "lastStatus": status, "healthStatus": health,
                    "networkBindings": [{"containerPort": 8080, "hostPort": 32768 + n, "protocol": "tcp", "bindIP": "0.0.0.0"}],
                }],
            });
            h.agent(instance, "SubmitTaskState", report)
                .await
                .unwrap_or_else(|e| panic!("SubmitTaskState: {}", e.message));
        }
    }

    async fn handle_all(h: &Harness, fake: &FakeRegistries) {
        for task in h.service_tasks("default", "api") {
            let key = h.scope().task("default", &task.id);
            handle(&h.store, fake, &h.scope(), &key).await;
        }
    }

    fn create(registry: Value) -> Value {
        json!({
            "serviceName": "api", "taskDefinition": "api", "desiredCount": 2,
            "serviceRegistries": [registry],
        })
    }

    #[tokio::test]
    async fn bad_registries_are_refused_and_create_nothing() {
        let (h, _fake) = harness(&["A"]);
        h.instance("default", Spec::default()).await;
        definition(&h, "bridge").await;
        let cases = [
            // An A record needs the task's own address (awsvpc).
            json!({"registryArn": ARN, "containerName": "web", "containerPort": 8080}),
            json!({"registryArn": "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-9"}),
            json!({"registryArn": ARN, "containerName": "web"}),
            json!({"registryArn": ARN, "containerName": "nope", "containerPort": 8080}),
            json!({"registryArn": ARN, "containerName": "web", "containerPort": 9999}),
            json!({"registryArn": ARN, "port": 70000}),
        ];
        for registry in cases {
            let e = h.err("CreateService", create(registry.clone())).await;
            assert_eq!(
                e.code, "InvalidParameterException",
                "{registry}: {}",
                e.message
            );
        }
        let two = json!({"serviceName": "api", "taskDefinition": "api", "desiredCount": 1,
            "serviceRegistries": [{"registryArn": ARN}, {"registryArn": ARN}]});
        assert_eq!(
            h.err("CreateService", two).await.code,
            "InvalidParameterException"
        );
        let listed = h.ok("ListServices", json!({})).await;
        assert_eq!(listed["serviceArns"], json!([]));
    }

    #[tokio::test]
    async fn tasks_register_when_healthy_follow_health_and_leave_before_their_agent_stops_them() {
        let (h, fake) = harness(&["SRV"]);
        let instance = h
            .instance(
                "default",
                Spec::default().attribute(HOST_IPV4_ATTRIBUTE, "10.0.0.9"),
            )
            .await;
        definition(&h, "bridge").await;
        // SRV in bridge mode needs the container and port.
        let e = h
            .err("CreateService", create(json!({"registryArn": ARN})))
            .await;
        assert_eq!(e.code, "InvalidParameterException");
        let out = h
            .ok(
                "CreateService",
                create(
                    json!({"registryArn": "srv-1", "containerName": "web", "containerPort": 8080}),
                ),
            )
            .await;
        assert_eq!(out["service"]["serviceRegistries"][0]["registryArn"], ARN);
        let controller = h.controller();
        controller.pass().await;

        // Running but not yet healthy: not registered.
        agent_reports(&h, &instance, "UNKNOWN").await;
        handle_all(&h, &fake).await;
        assert!(fake.instances.lock().unwrap().is_empty());

        agent_reports(&h, &instance, "HEALTHY").await;
        handle_all(&h, &fake).await;
        let registered = fake.instances.lock().unwrap().clone();
        assert_eq!(registered.len(), 2);
        for (id, (attributes, healthy)) in &registered {
            assert!(healthy);
            assert_eq!(attributes["AWS_INSTANCE_IPV4"], "10.0.0.9", "{id}");
            assert!(attributes["AWS_INSTANCE_PORT"].parse::<u16>().unwrap() >= 32768);
            assert_eq!(attributes["ECS_SERVICE_NAME"], "api");
            assert_eq!(attributes["ECS_CLUSTER_NAME"], "default");
            assert_eq!(attributes["ECS_TASK_DEFINITION_FAMILY"], "api");
            assert_eq!(attributes["REGION"], "us-east-1");
        }
        // The tasks hold their registrations.
        assert!(h
            .service_tasks("default", "api")
            .iter()
            .all(|t| t.registrations.len() == 1));

        // A failing health check: the custom health turns UNHEALTHY.
        agent_reports(&h, &instance, "UNHEALTHY").await;
        handle_all(&h, &fake).await;
        assert!(fake.instances.lock().unwrap().values().all(|(_, h)| !h));
        agent_reports(&h, &instance, "HEALTHY").await;
        handle_all(&h, &fake).await;
        assert!(fake.instances.lock().unwrap().values().all(|(_, h)| *h));

        // Scale in: the task asked to stop still runs for its agent until
        // it is deregistered.
        h.ok(
            "UpdateService",
            json!({"service": "api", "desiredCount": 1}),
        )
        .await;
        controller.pass().await;
        let stopping: Vec<_> = h
            .service_tasks("default", "api")
            .into_iter()
            .filter(|t| t.desired_status() == TaskStatus::Stopped)
            .collect();
        assert_eq!(stopping.len(), 1);
        let shown = h.poll(&instance, 0, 0).await.tasks;
        assert!(shown.iter().all(|t| t.desired_status == "RUNNING"));
        handle_all(&h, &fake).await;
        assert_eq!(fake.instances.lock().unwrap().len(), 1);
        assert!(!fake.instances.lock().unwrap().contains_key(&stopping[0].id));
        let shown = h.poll(&instance, 0, 0).await.tasks;
        let stopped: Vec<_> = shown
            .iter()
            .filter(|t| t.desired_status == "STOPPED")
            .collect();
        assert_eq!(stopped.len(), 1);
        assert!(stopped[0].task_arn.ends_with(&stopping[0].id));
    }

    #[tokio::test]
    async fn a_sweep_removes_what_no_task_holds_and_keeps_other_instances() {
        let (h, fake) = harness(&["SRV"]);
        let instance = h
            .instance(
                "default",
                Spec::default().attribute(HOST_IPV4_ATTRIBUTE, "10.0.0.9"),
            )
            .await;
        definition(&h, "bridge").await;
        h.ok(
            "CreateService",
            create(json!({"registryArn": ARN, "containerName": "web", "containerPort": 8080})),
        )
        .await;
        h.controller().pass().await;
        agent_reports(&h, &instance, "HEALTHY").await;
        let ecs_attributes: BTreeMap<String, String> =
            [("ECS_SERVICE_NAME", "api"), ("ECS_CLUSTER_NAME", "default")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        // A task that vanished while the server was down, and an instance
        // a user registered by hand.
        fake.instances.lock().unwrap().insert(
            "0123456789abcdef0123456789abcdef".into(),
            (ecs_attributes, true),
        );
        fake.instances
            .lock()
            .unwrap()
            .insert("by-hand".into(), (BTreeMap::new(), true));
        let clusters = sweep(&h.store, fake.as_ref()).await;
        assert!(clusters.contains("000000000000/us-east-1/default"));
        let ids: Vec<String> = fake.instances.lock().unwrap().keys().cloned().collect();
        let mut tasks: Vec<String> = h
            .service_tasks("default", "api")
            .iter()
            .map(|t| t.id.clone())
            .collect();
        tasks.push("by-hand".into());
        tasks.sort();
        assert_eq!(ids, tasks);
    }
}
