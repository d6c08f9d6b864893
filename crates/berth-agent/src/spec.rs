//! Turning an ECS task (definition + overrides) into runtime container specs,
//! the way the ECS agent maps container definitions onto Docker.

use std::collections::BTreeMap;

use berth_model::agent_protocol::{AssignedTask, ContainerSecrets};
use berth_model::shapes::ecs::{ContainerDefinition, ContainerOverride};
use berth_runtime::{
    ContainerSpec, HealthCheckSpec, Mount, NetworkMode, PortSpec, Protocol, Tmpfs, Ulimit,
};

pub const LABEL_CLUSTER: &str = "com.amazonaws.ecs.cluster";
pub const LABEL_CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
pub const LABEL_TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
pub const LABEL_FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
pub const LABEL_REVISION: &str = "com.amazonaws.ecs.task-definition-version";
/// Which container instance owns a container (adoption after a restart).
pub const LABEL_INSTANCE: &str = "berth.container-instance";

/// ECS's defaults for health checks (seconds, retries).
const HEALTH_INTERVAL: u64 = 30;
const HEALTH_TIMEOUT: u64 = 5;
const HEALTH_RETRIES: u32 = 3;
/// The ECS agent never gives a container fewer than 2 CPU shares.
const MIN_CPU_SHARES: u64 = 2;
/// ECS_CONTAINER_STOP_TIMEOUT's default.
pub const DEFAULT_STOP_TIMEOUT_SECS: u64 = 30;

/// The task's id: the last segment of its ARN.
pub fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

fn cluster_name(cluster_arn: &str) -> &str {
    cluster_arn.rsplit('/').next().unwrap_or(cluster_arn)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The Docker name of a task's container: stable, so a restarted agent that
/// tries to create it again finds it instead of running it twice.
pub fn docker_name(task: &AssignedTask, container: &str) -> String {
    let family = task.task_definition.family.as_deref().unwrap_or("task");
    let revision = task.task_definition.revision.unwrap_or(0);
    format!(
        "ecs-{}-{revision}-{}-{}",
        sanitize(family),
        sanitize(container),
        task_id(&task.task_arn)
    )
}

/// The name of a task-scoped Docker volume.
pub fn task_volume_name(task: &AssignedTask, volume: &str) -> String {
    format!("berth-{}-{}", task_id(&task.task_arn), sanitize(volume))
}

/// How a task's volume is provided on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host directory bind-mounted into the container.
    HostPath(String),
    /// A Docker volume; `task_scoped` ones are created for the task and
    /// removed with it.
    Docker { name: String, task_scoped: bool },
}

/// The task's volumes by name.
pub fn volumes(task: &AssignedTask) -> BTreeMap<String, VolumeSource> {
    let mut out = BTreeMap::new();
    for v in task.task_definition.volumes.iter().flatten() {
        let Some(name) = v.name.clone() else { continue };
        let source = if let Some(path) = v.host.as_ref().and_then(|h| h.source_path.clone()) {
            VolumeSource::HostPath(path)
        } else if let Some(cfg) = &v.docker_volume_configuration {
            if cfg.scope.as_deref() == Some("shared") {
                VolumeSource::Docker {
                    name: name.clone(),
                    task_scoped: false,
                }
            } else {
                VolumeSource::Docker {
                    name: task_volume_name(task, &name),
                    task_scoped: true,
                }
            }
        } else {
            // No host path: scratch space that lives as long as the task.
            VolumeSource::Docker {
                name: task_volume_name(task, &name),
                task_scoped: true,
            }
        };
        out.insert(name, source);
    }
    out
}

fn container_override<'a>(task: &'a AssignedTask, name: &str) -> Option<&'a ContainerOverride> {
    task.overrides
        .container_overrides
        .iter()
        .flatten()
        .find(|o| o.name.as_deref() == Some(name))
}

/// Why a container cannot be run by this agent, when it cannot.
pub fn unsupported(definition: &ContainerDefinition) -> Option<String> {
    if definition
        .environment_files
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return Some("environmentFiles need S3, which Berth does not serve".into());
    }
    if definition.repository_credentials.is_some() {
        return Some(
            "repositoryCredentials need Secrets Manager, which this Berth does not serve yet"
                .into(),
        );
    }
    None
}

fn network_mode(task: &AssignedTask) -> NetworkMode {
    match task.task_definition.network_mode.as_deref() {
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        // Until the runner puts it in its task's namespace
        // ([`join_task_network`]), an awsvpc container has no network.
        Some(AWSVPC) => NetworkMode::None,
        _ => NetworkMode::Bridge,
    }
}

/// The `networkMode` of tasks with their own network interface.
pub const AWSVPC: &str = "awsvpc";
/// The container name (label) of an awsvpc task's pause container, as the
/// ECS agent names it.
pub const PAUSE_CONTAINER_NAME: &str = "~internal~ecs~pause";
/// Labels the networks (and routers) the agent creates, so they are
/// recognisably Berth's: `uplink`, `router`, and `subnet` on the
/// per-subnet Docker networks of earlier versions.
pub const LABEL_NETWORK_OWNER: &str = "berth.network";

/// Whether the task runs in its own network namespace with its own
/// interface (`networkMode: awsvpc`).
pub fn is_awsvpc(task: &AssignedTask) -> bool {
    task.task_definition.network_mode.as_deref() == Some(AWSVPC)
}

/// The labels every container of `task` carries (ownership, adoption).
fn task_labels(
    task: &AssignedTask,
    container: &str,
    instance_id: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.into(), cluster_name(&task.cluster_arn).into()),
        (LABEL_CONTAINER_NAME.into(), container.into()),
        (LABEL_TASK_ARN.into(), task.task_arn.clone()),
        (
            LABEL_FAMILY.into(),
            task.task_definition.family.clone().unwrap_or_default(),
        ),
        (
            LABEL_REVISION.into(),
            task.task_definition.revision.unwrap_or(0).to_string(),
        ),
        (LABEL_INSTANCE.into(), instance_id.into()),
    ])
}

/// The pause container of an awsvpc task: it holds the task's network
/// namespace. It starts with no network; the agent then plumbs the
/// interface into it (`vpcnet`).
pub fn pause_spec(
    task: &AssignedTask,
    instance_id: &str,
    cgroup_parent: Option<String>,
) -> ContainerSpec {
    ContainerSpec {
        name: docker_name(task, "internalecspause"),
        image: berth_runtime::pause::PAUSE_IMAGE.to_string(),
        labels: task_labels(task, PAUSE_CONTAINER_NAME, instance_id),
        network_mode: NetworkMode::None,
        cgroup_parent,
        // The program ignores SIGTERM (it is PID 1): do not wait for it.
        stop_timeout_secs: Some(0),
        ..ContainerSpec::default()
    }
}

/// Puts a container of an awsvpc task into the task's namespace (the
/// pause container's): the task's containers share its address and reach
/// each other on localhost. Nothing is published on the host: as in ECS,
/// a port is reached on the task's own address.
pub fn join_task_network(
    spec: &mut ContainerSpec,
    definition: &ContainerDefinition,
    pause_id: &str,
) {
    spec.ports.clear();
    // disableNetworking keeps a container out of every network.
    if definition.disable_networking != Some(true) {
        spec.network_mode = NetworkMode::Container(pause_id.to_string());
    }
    // Docker refuses these with a shared namespace; they belong to the
    // namespace's owner (the pause container's `resolv.conf` is the
    // task's: [`awsvpc_dns`]).
    spec.hostname = None;
    spec.links.clear();
    spec.dns_servers.clear();
    spec.dns_search.clear();
}

/// The search domain of a region's private DNS names, as EC2's DHCP
/// options give it: `ec2.internal` in us-east-1, `<region>.compute.internal`
/// elsewhere.
pub fn private_search_domain(region: &str) -> String {
    if region == "us-east-1" {
        "ec2.internal".to_string()
    } else {
        format!("{region}.compute.internal")
    }
}

/// The region of an ARN (`arn:aws:ecs:<region>:…`).
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// What an awsvpc task's `resolv.conf` says, as a Fargate task's does: the
/// VPC's resolver (AmazonProvidedDNS, [`crate::vpcnet::vpc_resolver`]) as
/// its only nameserver and the region's private search domain. Set on the
/// pause container: every container of the task shares its file. None when
/// the interface does not name its VPC's block (servers that predate it).
pub fn awsvpc_dns(
    eni: &berth_model::agent_protocol::TaskNetworkInterface,
    region: &str,
) -> Option<(Vec<String>, Vec<String>)> {
    let resolver = crate::vpcnet::vpc_resolver(eni)?;
    Some((
        vec![resolver.to_string()],
        vec![private_search_domain(region)],
    ))
}

/// Points a bridge-mode container at the host's DNS relay (`relay`, the
/// task endpoint's address) unless its definition names `dnsServers`,
/// which ECS passes to Docker as they are.
pub fn use_dns_relay(spec: &mut ContainerSpec, relay: std::net::Ipv4Addr) {
    if spec.network_mode == NetworkMode::Bridge && spec.dns_servers.is_empty() {
        spec.dns_servers = vec![relay.to_string()];
    }
}

/// What a container learns about the task endpoint (`169.254.170.2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointEnv<'a> {
    /// The task's credentials id, when it has a task role.
    pub credentials_id: Option<&'a str>,
    /// The container's metadata token, when the endpoint serves.
    pub metadata_token: Option<&'a str>,
}

impl EndpointEnv<'_> {
    /// The environment variables the ECS agent sets for these.
    pub fn variables(&self) -> Vec<(String, String)> {
        use crate::task_endpoint::{
            CREDENTIALS_ENV, ENDPOINT_IP, METADATA_V3_ENV, METADATA_V4_ENV,
        };
        let mut out = Vec::new();
        if let Some(id) = self.credentials_id {
            out.push((CREDENTIALS_ENV.to_string(), format!("/v2/credentials/{id}")));
        }
        if let Some(token) = self.metadata_token {
            out.push((
                METADATA_V3_ENV.to_string(),
                format!("http://{ENDPOINT_IP}/v3/{token}"),
            ));
            out.push((
                METADATA_V4_ENV.to_string(),
                format!("http://{ENDPOINT_IP}/v4/{token}"),
            ));
        }
        out
    }
}

/// The runtime spec of one container of `task`.
pub fn container_spec(
    task: &AssignedTask,
    definition: &ContainerDefinition,
    instance_id: &str,
    secrets: Option<&ContainerSecrets>,
    endpoint: EndpointEnv<'_>,
) -> ContainerSpec {
    let name = definition.name.clone().unwrap_or_default();
    let o = container_override(task, &name);
    let mut labels: BTreeMap<String, String> = definition.docker_labels.clone().unwrap_or_default();
    labels.extend(task_labels(task, &name, instance_id));

    let mut env: Vec<(String, String)> = Vec::new();
    let mut set_env = |k: &str, v: &str| match env.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in definition.environment.iter().flatten() {
        if let Some(k) = &kv.name {
            set_env(k, kv.value.as_deref().unwrap_or(""));
        }
    }
    for kv in o.and_then(|o| o.environment.as_ref()).into_iter().flatten() {
        if let Some(k) = &kv.name {
            set_env(k, kv.value.as_deref().unwrap_or(""));
        }
    }
    for (k, v) in secrets.map(|s| s.environment.as_slice()).unwrap_or(&[]) {
        set_env(k, v);
    }
    // The agent's own variables win, as with ECS.
    for (k, v) in endpoint.variables() {
        set_env(&k, &v);
    }

    let mode = network_mode(task);
    let ports = match mode {
        NetworkMode::Bridge => definition
            .port_mappings
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortSpec {
                    container_port: u16::try_from(p.container_port?).ok()?,
                    host_port: p
                        .host_port
                        .and_then(|h| u16::try_from(h).ok())
                        .filter(|h| *h > 0),
                    protocol: if p.protocol.as_deref() == Some("udp") {
                        Protocol::Udp
                    } else {
                        Protocol::Tcp
                    },
                })
            })
            .collect(),
        _ => Vec::new(),
    };

    let volumes = volumes(task);
    let mounts = definition
        .mount_points
        .iter()
        .flatten()
        .filter_map(|m| {
            let source = match volumes.get(m.source_volume.as_deref()?)? {
                VolumeSource::HostPath(p) => p.clone(),
                VolumeSource::Docker { name, .. } => name.clone(),
            };
            Some(Mount {
                source,
                target: m.container_path.clone()?,
                read_only: m.read_only.unwrap_or(false),
            })
        })
        .collect();
    let volumes_from = definition
        .volumes_from
        .iter()
        .flatten()
        .filter_map(|v| {
            Some((
                docker_name(task, v.source_container.as_deref()?),
                v.read_only.unwrap_or(false),
            ))
        })
        .collect();
    let links = definition
        .links
        .iter()
        .flatten()
        .map(|l| {
            let (target, alias) = l.split_once(':').unwrap_or((l.as_str(), l.as_str()));
            format!("{}:{alias}", docker_name(task, target))
        })
        .collect();

    let linux = definition.linux_parameters.as_ref();
    let caps = linux.and_then(|l| l.capabilities.as_ref());
    let health_check = definition.health_check.as_ref().map(|h| HealthCheckSpec {
        command: h.command.clone().unwrap_or_default(),
        interval_secs: h.interval.map(|v| v as u64).unwrap_or(HEALTH_INTERVAL),
        timeout_secs: h.timeout.map(|v| v as u64).unwrap_or(HEALTH_TIMEOUT),
        retries: h.retries.map(|v| v as u32).unwrap_or(HEALTH_RETRIES),
        start_period_secs: h.start_period.map(|v| v as u64).unwrap_or(0),
    });
    let cpu = o.and_then(|o| o.cpu).or(definition.cpu).unwrap_or(0).max(0) as u64;
    let log_driver = definition.log_configuration.as_ref().and_then(|l| {
        let driver = l.log_driver.as_deref()?;
        // The agent ships awslogs output itself, reading Docker's json-file
        // log, which keeps every line on disk until it is shipped.
        if driver == "awslogs" {
            return Some(("json-file".to_string(), BTreeMap::new()));
        }
        // Drivers that ship to AWS services need those services; the rest go to Docker as given.
        matches!(
            driver,
            "json-file" | "syslog" | "journald" | "gelf" | "fluentd" | "splunk"
        )
        .then(|| (driver.to_string(), l.options.clone().unwrap_or_default()))
    });

    ContainerSpec {
        name: docker_name(task, &name),
        image: definition.image.clone().unwrap_or_default(),
        labels,
        entry_point: definition.entry_point.clone(),
        command: o
            .and_then(|o| o.command.clone())
            .or_else(|| definition.command.clone()),
        env,
        working_dir: definition.working_directory.clone(),
        user: definition.user.clone(),
        hostname: match mode {
            NetworkMode::Bridge => definition.hostname.clone(),
            _ => None,
        },
        cpu_shares: Some(cpu.max(MIN_CPU_SHARES)),
        memory_mib: o
            .and_then(|o| o.memory)
            .or(definition.memory)
            .map(|m| m as u64),
        memory_reservation_mib: o
            .and_then(|o| o.memory_reservation)
            .or(definition.memory_reservation)
            .map(|m| m as u64),
        network_mode: if definition.disable_networking == Some(true) {
            NetworkMode::None
        } else {
            mode
        },
        ports,
        mounts,
        volumes_from,
        links,
        ulimits: definition
            .ulimits
            .iter()
            .flatten()
            .filter_map(|u| {
                Some(Ulimit {
                    name: u.name.clone()?,
                    soft: i64::from(u.soft_limit?),
                    hard: i64::from(u.hard_limit?),
                })
            })
            .collect(),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        init: linux.and_then(|l| l.init_process_enabled).unwrap_or(false),
        shm_size_mib: linux.and_then(|l| l.shared_memory_size).map(|s| s as u64),
        tmpfs: linux
            .and_then(|l| l.tmpfs.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some(Tmpfs {
                    path: t.container_path.clone()?,
                    size_mib: t.size? as u64,
                    options: t.mount_options.clone().unwrap_or_default(),
                })
            })
            .collect(),
        readonly_rootfs: definition.readonly_root_filesystem.unwrap_or(false),
        privileged: definition.privileged.unwrap_or(false),
        dns_servers: definition.dns_servers.clone().unwrap_or_default(),
        dns_search: definition.dns_search_domains.clone().unwrap_or_default(),
        extra_hosts: definition
            .extra_hosts
            .iter()
            .flatten()
            .filter_map(|h| Some((h.hostname.clone()?, h.ip_address.clone()?)))
            .collect(),
        docker_security_options: definition
            .docker_security_options
            .clone()
            .unwrap_or_default(),
        sysctls: definition
            .system_controls
            .iter()
            .flatten()
            .filter_map(|s| Some((s.namespace.clone()?, s.value.clone()?)))
            .collect(),
        stop_timeout_secs: Some(
            definition
                .stop_timeout
                .map(|s| s.max(0) as u64)
                .unwrap_or(DEFAULT_STOP_TIMEOUT_SECS),
        ),
        health_check,
        log_driver,
        // Set by the runner: the task's cgroup, and (awsvpc) its namespace.
        ipv4_address: None,
        cgroup_parent: None,
    }
}

/// The host port of Docker's "listen tcp4 0.0.0.0:PORT: bind: address
/// already in use" (a container start whose host port another process
/// holds).
pub fn port_in_use(message: &str) -> Option<u16> {
    let before = message.split(": bind: address already in use").next()?;
    if before.len() == message.len() {
        return None;
    }
    before.rsplit(':').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::shapes::ecs::{KeyValuePair, PortMapping, TaskDefinition, TaskOverride};

    fn task() -> AssignedTask {
        AssignedTask {
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/default/abc123".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/default".into(),
            desired_status: "RUNNING".into(),
            last_status: "PROVISIONING".into(),
            task_definition: TaskDefinition {
                family: Some("web".into()),
                revision: Some(3),
                ..TaskDefinition::default()
            },
            overrides: TaskOverride::default(),
            containers: Vec::new(),
            version: 1,
            ..AssignedTask::default()
        }
    }

    #[test]
    fn the_port_of_a_bind_conflict_is_read_from_dockers_message() {
        let m = "driver failed programming external connectivity on endpoint ecs-a-1-web-1 (416c): \
                 Error starting userland proxy: listen tcp4 0.0.0.0:32942: bind: address already in use";
        assert_eq!(port_in_use(m), Some(32942));
        assert_eq!(
            port_in_use("listen tcp6 [::]:8080: bind: address already in use"),
            Some(8080)
        );
        assert_eq!(port_in_use("no such image"), None);
        assert_eq!(
            port_in_use("listen tcp4 0.0.0.0:x: bind: address already in use"),
            None
        );
    }

    #[test]
    fn maps_definition_and_overrides() {
        let mut t = task();
        t.overrides.container_overrides = Some(vec![ContainerOverride {
            name: Some("app".into()),
            command: Some(vec!["sleep".into(), "5".into()]),
            environment: Some(vec![KeyValuePair {
                name: Some("MODE".into()),
                value: Some("override".into()),
            }]),
            ..ContainerOverride::default()
        }]);
        let def = ContainerDefinition {
            name: Some("app".into()),
            image: Some("busybox".into()),
            memory: Some(128),
            cpu: Some(256),
            command: Some(vec!["sleep".into(), "1000".into()]),
            environment: Some(vec![
                KeyValuePair {
                    name: Some("MODE".into()),
                    value: Some("def".into()),
                },
                KeyValuePair {
                    name: Some("KEEP".into()),
                    value: Some("1".into()),
                },
            ]),
            port_mappings: Some(vec![PortMapping {
                container_port: Some(8080),
                host_port: Some(0),
                ..PortMapping::default()
            }]),
            ..ContainerDefinition::default()
        };
        let secrets = ContainerSecrets {
            name: "app".into(),
            environment: vec![("TOKEN".into(), "s3cr3t".into())],
            log_options: Vec::new(),
        };
        let spec = container_spec(&t, &def, "inst1", Some(&secrets), EndpointEnv::default());
        assert_eq!(spec.name, "ecs-web-3-app-abc123");
        assert_eq!(spec.command, Some(vec!["sleep".into(), "5".into()]));
        assert_eq!(
            spec.env,
            vec![
                ("MODE".into(), "override".into()),
                ("KEEP".into(), "1".into()),
                ("TOKEN".into(), "s3cr3t".into())
            ]
        );
        assert_eq!(spec.memory_mib, Some(128));
        assert_eq!(spec.cpu_shares, Some(256));
        assert_eq!(spec.ports[0].host_port, None);
        assert_eq!(spec.labels[LABEL_TASK_ARN], t.task_arn);
        assert_eq!(spec.labels[LABEL_INSTANCE], "inst1");
        assert_eq!(spec.stop_timeout_secs, Some(30));
    }

    #[test]
    fn minimum_cpu_shares() {
        let def = ContainerDefinition {
            name: Some("a".into()),
            image: Some("busybox".into()),
            ..ContainerDefinition::default()
        };
        assert_eq!(
            container_spec(&task(), &def, "i", None, EndpointEnv::default()).cpu_shares,
            Some(2)
        );
    }

    #[test]
    fn injects_endpoint_variables() {
        let def = ContainerDefinition {
            name: Some("a".into()),
            image: Some("busybox".into()),
            environment: Some(vec![KeyValuePair {
                name: Some("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".into()),
                value: Some("/mine".into()),
            }]),
            ..ContainerDefinition::default()
        };
        let endpoint = EndpointEnv {
            credentials_id: Some("11111111-2222-3333-4444-555555555555"),
            metadata_token: Some("tok"),
        };
        let spec = container_spec(&task(), &def, "i", None, endpoint);
        assert_eq!(
            spec.env,
            vec![
                (
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".into(),
                    "/v2/credentials/11111111-2222-3333-4444-555555555555".into()
                ),
                (
                    "ECS_CONTAINER_METADATA_URI".into(),
                    "http://169.254.170.2/v3/tok".into()
                ),
                (
                    "ECS_CONTAINER_METADATA_URI_V4".into(),
                    "http://169.254.170.2/v4/tok".into()
                ),
            ]
        );
        // Without a role or endpoint nothing is added.
        let plain = ContainerDefinition {
            environment: None,
            ..def
        };
        assert!(
            container_spec(&task(), &plain, "i", None, EndpointEnv::default())
                .env
                .is_empty()
        );
    }

    #[test]
    fn dns_settings() {
        assert_eq!(private_search_domain("us-east-1"), "ec2.internal");
        assert_eq!(
            private_search_domain("eu-west-3"),
            "eu-west-3.compute.internal"
        );
        assert_eq!(
            arn_region("arn:aws:ecs:eu-west-3:000000000000:task/c/1"),
            Some("eu-west-3")
        );
        assert_eq!(arn_region("nonsense"), None);
        // awsvpc: the VPC's resolver and the region's search domain.
        let eni = berth_model::agent_protocol::TaskNetworkInterface {
            subnet_cidr: "172.31.16.0/20".into(),
            gateway: "172.31.16.1".into(),
            private_ip: "172.31.16.9".into(),
            vpc_id: "vpc-1".into(),
            vpc_cidr: "172.31.0.0/16".into(),
            ..Default::default()
        };
        assert_eq!(
            awsvpc_dns(&eni, "us-east-1"),
            Some((vec!["172.31.0.2".into()], vec!["ec2.internal".into()]))
        );
        let old = berth_model::agent_protocol::TaskNetworkInterface {
            vpc_cidr: String::new(),
            ..eni
        };
        assert_eq!(awsvpc_dns(&old, "us-east-1"), None);

        // Bridge: the relay, unless the definition names DNS servers.
        let def = ContainerDefinition {
            name: Some("a".into()),
            image: Some("busybox".into()),
            dns_search_domains: Some(vec!["corp.local".into()]),
            ..ContainerDefinition::default()
        };
        let relay = std::net::Ipv4Addr::new(169, 254, 170, 2);
        let mut spec = container_spec(&task(), &def, "i", None, EndpointEnv::default());
        assert_eq!(spec.dns_search, vec!["corp.local".to_string()]);
        use_dns_relay(&mut spec, relay);
        assert_eq!(spec.dns_servers, vec!["169.254.170.2".to_string()]);
        let own = ContainerDefinition {
            dns_servers: Some(vec!["10.0.0.53".into()]),
            ..def.clone()
        };
        let mut spec = container_spec(&task(), &own, "i", None, EndpointEnv::default());
        use_dns_relay(&mut spec, relay);
        assert_eq!(spec.dns_servers, vec!["10.0.0.53".to_string()]);
        // Host and none network modes keep the host's (or no) DNS.
        let mut host = container_spec(&task(), &def, "i", None, EndpointEnv::default());
        host.network_mode = NetworkMode::Host;
        use_dns_relay(&mut host, relay);
        assert!(host.dns_servers.is_empty());
        // awsvpc containers share the pause container's resolv.conf
        // (Docker refuses DNS options with a shared namespace).
        let mut joined = container_spec(&task(), &own, "i", None, EndpointEnv::default());
        join_task_network(&mut joined, &own, "pause-id");
        assert!(joined.dns_servers.is_empty() && joined.dns_search.is_empty());
    }
}
