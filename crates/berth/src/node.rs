//! One Berth server's services, wired together: what `berth up` (the
//! embedded store, one server) and `berth server` (etcd, several servers)
//! share. The caller chooses the store and where files live, runs the
//! leader-only work (`Node::start_leader_work`) when it leads, and serves
//! `Node::app`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use berth_api::{GatewayBuilder, ResolvedCredential, StaticCredentials};
use berth_ecs::service_controller::ServiceController;
use berth_ecs::{AgentService, EcsService, Presence};
use berth_model::{Principal, PrincipalKind};
use berth_store::Store;

use crate::credentials;
use crate::logs_place::{LogsApi, LogsPlace, LogsSink};
use crate::ServeArgs;

/// Where clients reach `/v2/`: `--registry-host`, else the listen address
/// (with 127.0.0.1 for an all-addresses listener, which no client can dial).
pub fn registry_host(args: &ServeArgs) -> String {
    if let Some(host) = &args.registry_host {
        return host.clone();
    }
    let mut address = args.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    address.to_string()
}

/// The URL agents and clients reach this server's API at (the listen
/// address, with 127.0.0.1 for an all-addresses listener).
fn api_url(args: &ServeArgs) -> String {
    let mut address = args.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{address}/")
}

pub fn check_account_id(id: &str) -> anyhow::Result<()> {
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!("--account-id must be 12 digits, got '{id}'");
    }
    Ok(())
}

/// Serves `app` on `listener` with the listener limits of `args` until
/// SIGINT/SIGTERM; `stopping` turns true then, ending agents' long polls.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    args: &ServeArgs,
    stopping: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let fd_limit = berth_api::server::raise_fd_limit();
    let limits = berth_api::server::ServerLimits {
        header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
        stall_timeout: std::time::Duration::from_secs(args.stall_timeout.max(1)),
        max_connections: args
            .max_connections
            .unwrap_or_else(|| berth_api::server::default_max_connections(fd_limit)),
        ..Default::default()
    };
    tracing::info!(
        fd_limit,
        max_connections = limits.max_connections,
        "listener limits"
    );
    berth_api::server::serve(listener, app, limits, async move {
        crate::up::shutdown_signal().await;
        let _ = stopping.send(true);
    })
    .await
    .context("serving HTTP")
}

/// A built server: its HTTP app and what it runs in the background.
pub struct Node {
    pub app: axum::Router,
    pub root: credentials::RootKeys,
    pub agent_token: crate::agent::AgentToken,
    /// Telling pending agent long polls the server is stopping.
    pub stopping: tokio::sync::watch::Sender<bool>,
    pub logs: Arc<LogsPlace>,
    pub authorizer: Option<Arc<dyn berth_api::Authorizer>>,
    /// Where Berth's DNS server answers, as agents are told when they
    /// register: set it once the DNS server has bound its address.
    pub dns_endpoint: berth_ecs::agent_api::DnsEndpoint,
    leader: LeaderWork,
}

/// What only one server runs at a time: the controllers and collectors.
struct LeaderWork {
    store: Arc<dyn Store>,
    controller: Arc<ServiceController>,
    task_networks: Arc<dyn berth_ecs::networking::TaskNetworks>,
    service_registries: Arc<dyn berth_ecs::registration::ServiceRegistries>,
    load_balancer_targets: Arc<dyn berth_ecs::load_balancing::LoadBalancerTargets>,
    /// Load balancers: their records, and what their listeners need.
    elb: Arc<berth_elb::ElbService>,
    acm: Arc<berth_acm::AcmService>,
    ec2: Arc<berth_ec2::Ec2Service>,
    /// CodeDeploy's deployments, and its way into ECS and ELB.
    codedeploy: Arc<berth_codedeploy::CodeDeployService>,
    code_deploy_port: Arc<crate::code_deploy::EcsForCodeDeploy>,
    registry: Arc<berth_registry::Registry>,
    iam: Arc<berth_iam::Iam>,
    task_retention: std::time::Duration,
    log_compaction: std::time::Duration,
    /// Seconds in a minute of deployments' waits (CodeDeploy's).
    deployment_minute: f64,
    /// Decides the calls ECS makes with gateways' infrastructure roles.
    authorizer: Option<Arc<dyn berth_api::Authorizer>>,
}

impl Node {
    /// Wires every service over `store`; keys, credentials, the registry's
    /// blobs and the log store live under `files` (the data directory, or
    /// the shared directory of several servers). `logs` says where
    /// CloudWatch Logs calls go.
    pub async fn build(
        args: &ServeArgs,
        files: &Path,
        store: Arc<dyn Store>,
        presence: Arc<Presence>,
        logs: Arc<LogsPlace>,
    ) -> anyhow::Result<Node> {
        check_account_id(&args.account_id)?;
        let root = credentials::load_or_create(files)?;
        // What agents must present to register: BERTH_AGENT_TOKEN, else
        // <dir>/agent-token (generated, 0600). Only its digest is kept.
        let agent_token = crate::agent::load_or_create_token(files)?;
        let root_credentials = Arc::new(StaticCredentials::new());
        root_credentials.insert(ResolvedCredential {
            secret_access_key: root.secret_access_key.clone(),
            session_token: None,
            expires_at: None,
            principal: Principal {
                kind: PrincipalKind::Root,
                arn: format!("arn:aws:iam::{}:root", args.account_id),
                user_id: args.account_id.clone(),
                account_id: args.account_id.clone(),
                access_key_id: root.access_key_id.clone(),
            },
        });

        let registry = berth_registry::Registry::open(files, store.clone(), registry_host(args))
            .context("opening the image registry")?;
        registry.set_pull_through_refresh(std::time::Duration::from_secs(
            args.pull_through_refresh_seconds,
        ));
        if let Some(path) = &args.pull_through_ca {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --pull-through-ca {}", path.display()))?;
            let (tls, trusted) = berth_registry::pull_through::UpstreamTls::new(&pem)
                .map_err(|e| anyhow::anyhow!("--pull-through-ca {}: {e}", path.display()))?;
            tracing::info!(authorities = trusted, "upstream registries are verified against the system's and --pull-through-ca's certificate authorities");
            registry.set_upstream_tls(tls);
        }
        // Secret values are sealed with this key before they reach the
        // store; it comes from BERTH_MASTER_KEY or <dir>/secrets/master.key.
        let master_key = Arc::new(
            berth_secrets::MasterKey::load(files).context("loading the secrets master key")?,
        );
        // Pull-through cache rules read their upstream credentials from
        // Secrets Manager.
        registry.set_upstream_secrets(Arc::new(StoreSecrets {
            store: store.clone(),
            key: master_key.clone(),
        }));

        // Secret access keys of users, sessions and agents are sealed with
        // the master key as secret values are; an older data directory's
        // plaintext ones are sealed now.
        let iam = berth_iam::Iam::with_sealer(store.clone(), master_key.clone());
        iam.seal_stored_secrets()
            .await
            .map_err(|e| anyhow::anyhow!("sealing stored access keys: {}", e.message))?;
        crate::agent_credentials::seal_stored(store.as_ref(), master_key.clone()).await?;
        // Tasks stored before ECS indexed them by container instance get
        // their index entries once.
        berth_ecs::backfill_indexes(store.as_ref())
            .await
            .map_err(|e| anyhow::anyhow!("indexing stored tasks: {}", e.message))?;
        // The default VPC with a subnet per availability zone, as AWS
        // accounts have, so awsvpc network configurations have something to
        // name.
        let ec2 = Arc::new(berth_ec2::Ec2Service::new(store.clone()));
        ec2.ensure_defaults(&args.account_id, &args.region)
            .await
            .map_err(|e| anyhow::anyhow!("creating the default VPC: {}", e.message))?;

        let task_networks: Arc<dyn berth_ecs::networking::TaskNetworks> =
            Arc::new(TaskNetworks(ec2.clone()));
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let enforce_iam = args.iam == crate::IamMode::Enforce;
        let dns_endpoint = berth_ecs::agent_api::DnsEndpoint::default();
        let mut agent_service = AgentService::new(store.clone(), presence.clone(), stopping)
            .with_secrets(Arc::new(StoreSecrets {
                store: store.clone(),
                key: master_key.clone(),
            }))
            .with_logs(Arc::new(LogsSink(logs.clone())))
            .with_roles(Arc::new(TaskRoles(iam.clone())))
            .with_networks(task_networks.clone())
            .with_sealer(master_key.clone())
            .with_registration_token(berth_ecs::agent_api::RegistrationToken::new(
                &agent_token.token,
            ))
            .with_dns_endpoint(dns_endpoint.clone());
        // `berth exec` sessions, relayed between clients and agents.
        let exec_hub = berth_ecs::ExecHub::new();
        agent_service = agent_service.with_exec(exec_hub.clone());
        if enforce_iam {
            agent_service = agent_service.with_execution_role_check(Arc::new(ExecutionRoles {
                iam: iam.clone(),
                store: store.clone(),
            }));
        }
        let controller = ServiceController::with_deployment_minute(
            store.clone(),
            presence.clone(),
            args.deployment_minute_seconds as f64,
        );
        // Cloud Map, shared with ECS, which registers services' tasks in it.
        let discovery = Arc::new(berth_discovery::DiscoveryService::new(store.clone()));
        // ACM, with private keys sealed by the master key. Berth's local CA
        // is created (or read) now, so every server of the installation
        // signs with the one in the store and GET /_berth/ca-certificate
        // only reads.
        let acm = Arc::new(
            berth_acm::AcmService::new(
                store.clone(),
                Some(master_key.clone() as Arc<dyn berth_model::Sealer>),
            )
            // DeleteCertificate reads ELB's listeners in its own mutation.
            .with_certificate_users(Arc::new(berth_elb::certificate_users)),
        );
        acm.ca().await.map_err(|e| {
            anyhow::anyhow!("creating Berth's certificate authority: {}", e.message)
        })?;
        // Elastic Load Balancing v2: load balancers' interfaces come from
        // Berth's EC2 VPCs.
        let elb = Arc::new(berth_elb::ElbService::new(
            store.clone(),
            Arc::new(LoadBalancerNetworks(ec2.clone())),
            Arc::new(crate::load_balancing::EcsInstances(store.clone())),
            Arc::new(crate::load_balancing::AcmCertificates(acm.clone())),
        ));
        let service_registries: Arc<dyn berth_ecs::registration::ServiceRegistries> =
            Arc::new(ServiceRegistries(discovery.clone()));
        // ECS services' loadBalancers register their tasks in ELB target
        // groups through this port.
        let load_balancer_targets: Arc<dyn berth_ecs::load_balancing::LoadBalancerTargets> =
            Arc::new(crate::load_balancing::ElbTargets(elb.clone()));
        // The ECS API, shared with CodeDeploy, which deploys CODE_DEPLOY
        // services through it.
        let ecs = Arc::new(
            EcsService::new(store.clone(), presence.clone())
                .with_networks(task_networks.clone())
                .with_registries(service_registries.clone())
                .with_load_balancers(load_balancer_targets.clone())
                .with_endpoint(api_url(args)),
        );
        let code_deploy_port = Arc::new(crate::code_deploy::EcsForCodeDeploy {
            ecs: ecs.clone(),
            elb: elb.clone(),
        });
        let codedeploy = Arc::new(berth_codedeploy::CodeDeployService::new(
            store.clone(),
            code_deploy_port.clone(),
        ));
        let mut gateway = GatewayBuilder::new(store.clone(), env!("CARGO_PKG_VERSION"))
            .body_limits(
                args.body_budget.max(1) * 1024 * 1024,
                std::time::Duration::from_secs(args.body_timeout.max(1)),
            )
            .credentials(root_credentials)
            .credentials(Arc::new(crate::agent_credentials::AgentCredentials::new(
                store.clone(),
                master_key.clone(),
            )))
            .credentials(iam.credentials())
            .query_service(iam.iam_service())
            .query_service(iam.sts_service())
            .query_service(ec2.clone())
            .query_service(elb.clone())
            .json_service(ecs.clone())
            .json_service(registry.ecr_service())
            .json_service(Arc::new(berth_secrets::SecretsManagerService::new(
                store.clone(),
                master_key.clone(),
            )))
            .json_service(Arc::new(berth_secrets::SsmService::new(
                store.clone(),
                master_key.clone(),
            )))
            .json_service(discovery.clone())
            .json_service(acm.clone())
            .json_service(codedeploy.clone())
            .json_service(Arc::new(LogsApi(logs.clone())))
            .json_service(Arc::new(agent_service))
            .json_service(Arc::new(berth_ecs::ExecService::new(
                store.clone(),
                exec_hub,
            )))
            .admin_endpoint(crate::usage::endpoint(
                store.clone(),
                args.fargate_prices.as_deref(),
            )?)
            .admin_endpoint(Arc::new(ControllerStats(controller.clone())));
        // The registry's /v2/ authorizes with the same authorizer as the API.
        let mut authorizer: Option<Arc<dyn berth_api::Authorizer>> = None;
        if enforce_iam {
            let iam_authorizer: Arc<dyn berth_api::Authorizer> = Arc::new(
                berth_iam::IamAuthorizer::new(iam.clone())
                    .with_resource_policies(Arc::new(RepositoryPolicies(registry.clone())))
                    // Secrets' resource policies (PutResourcePolicy) take part too.
                    .with_resource_policies(Arc::new(berth_secrets::SecretPolicies::new(
                        store.clone(),
                    ))),
            );
            authorizer = Some(iam_authorizer.clone());
            gateway = gateway.authorizer(iam_authorizer);
        } else {
            tracing::warn!("IAM policies are not enforced (--iam off)");
        }
        let gateway = gateway.build();
        let app = gateway
            .router()
            .merge(registry.router(authorizer.clone()))
            .merge(crate::ca_certificate::router(acm.clone()));
        Ok(Node {
            app,
            root,
            agent_token,
            stopping: stopping_tx,
            logs,
            authorizer: authorizer.clone(),
            dns_endpoint,
            leader: LeaderWork {
                store,
                controller,
                task_networks,
                service_registries,
                load_balancer_targets,
                elb,
                acm,
                ec2,
                codedeploy,
                code_deploy_port,
                registry,
                iam,
                task_retention: std::time::Duration::from_secs(args.task_retention),
                log_compaction: std::time::Duration::from_secs(args.log_compaction_interval.max(1)),
                deployment_minute: args.deployment_minute_seconds as f64,
                authorizer: authorizer.clone(),
            },
        })
    }

    /// Writes what is kept in memory between store writes (the access
    /// keys' last-used dates), so a graceful stop loses none of it.
    pub async fn flush(&self) {
        if let Err(e) = self.leader.iam.flush_key_usage().await {
            tracing::warn!(code = %e.code, "writing access-key usage at shutdown failed");
        }
    }

    /// Starts what only the leader runs (the service and network
    /// controllers, the task, session and registry collectors, log
    /// retention). Every piece is level-triggered and restarts from the
    /// store, so aborting the handles at any point and starting them on
    /// another server repeats no side effect.
    pub fn start_leader_work(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let work = &self.leader;
        let mut handles = vec![
            tokio::spawn(collect_expired_sessions(work.iam.clone())),
            tokio::spawn(berth_ecs::run_task_gc(
                work.store.clone(),
                work.task_retention,
            )),
            tokio::spawn(work.controller.clone().run()),
            tokio::spawn(berth_ecs::networking::run_network_controller(
                work.store.clone(),
                work.task_networks.clone(),
            )),
            tokio::spawn(berth_ecs::run_registration_controller(
                work.store.clone(),
                work.service_registries.clone(),
            )),
            tokio::spawn(berth_ecs::run_target_controller(
                work.store.clone(),
                work.load_balancer_targets.clone(),
            )),
            // Load balancers: draining timers, and the data plane serving
            // the listeners on the load balancers' addresses.
            tokio::spawn(work.elb.clone().run_timers(self.stopping.subscribe())),
            tokio::spawn(crate::load_balancing::run_data_plane(
                work.store.clone(),
                work.elb.clone(),
                Arc::new(crate::load_balancing::ServiceInputs {
                    acm: work.acm.clone(),
                    ec2: work.ec2.clone(),
                }),
                work.acm.clone(),
            )),
            tokio::spawn(crate::code_deploy::run_deployments(
                work.store.clone(),
                work.codedeploy.clone(),
                work.code_deploy_port.clone(),
                work.deployment_minute,
            )),
            // ECS gateways: their load balancers, listeners, certificates
            // and routes.
            tokio::spawn(crate::gateways::run_gateway_controller(Arc::new(
                crate::gateways::GatewayInfrastructure {
                    store: work.store.clone(),
                    ecs: berth_ecs::GatewayControl::new(work.store.clone()),
                    elb: work.elb.clone(),
                    ec2: work.ec2.clone(),
                    acm: work.acm.clone(),
                    iam: work.iam.clone(),
                    authorizer: work.authorizer.clone(),
                },
            ))),
            work.registry.spawn_gc(),
            // SSM parameter policies: an Expiration deletes its parameter.
            berth_secrets::ssm::spawn_parameter_expiry(work.store.clone()),
        ];
        if let Some(logs) = self.logs.local() {
            handles.push(logs.spawn_compaction(work.log_compaction));
        }
        handles
    }
}

/// `GET /_berth/controllers`: what the controllers did lately (passes, time of
/// the last pass), for operators and the benchmarks. Signed and authorized
/// like `/_berth/usage` (`berth:DescribeControllers`): it reveals activity.
struct ControllerStats(Arc<ServiceController>);

impl berth_api::AdminEndpoint for ControllerStats {
    fn path(&self) -> &'static str {
        "/_berth/controllers"
    }

    fn signing_name(&self) -> &'static str {
        "ecs"
    }

    fn action(&self) -> &'static str {
        "berth:DescribeControllers"
    }

    fn get(
        &self,
        _ctx: &berth_model::RequestContext,
        _query: &[(String, String)],
    ) -> Result<serde_json::Value, berth_model::AwsError> {
        Ok(serde_json::json!({ "services": self.0.stats() }))
    }
}

/// Resolves task `secrets` for agents from Secrets Manager and Parameter Store.
struct StoreSecrets {
    store: Arc<dyn Store>,
    key: Arc<berth_secrets::MasterKey>,
}

impl berth_ecs::agent_api::SecretResolver for StoreSecrets {
    fn resolve(
        &self,
        account: &str,
        region: &str,
        value_from: &str,
    ) -> Result<String, berth_model::AwsError> {
        berth_secrets::resolve_secret_value(
            self.store.as_ref(),
            &self.key,
            account,
            region,
            value_from,
        )
    }
}

impl berth_registry::pull_through::UpstreamSecrets for StoreSecrets {
    fn secret_string(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<String, berth_registry::pull_through::CredentialError> {
        use berth_registry::pull_through::CredentialError;
        berth_secrets::resolve_secret_value(self.store.as_ref(), &self.key, account, region, arn)
            .map_err(|e| {
                if e.code == "ResourceNotFoundException" {
                    CredentialError::NotFound
                } else {
                    CredentialError::Unreadable(e.message)
                }
            })
    }
}

/// Expired STS sessions stop working at once; this only removes their rows.
async fn collect_expired_sessions(iam: Arc<berth_iam::Iam>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        ticker.tick().await;
        if let Err(e) = iam.gc_expired_sessions().await {
            tracing::warn!(code = %e.code, "removing expired STS sessions failed");
        }
    }
}

/// awsvpc tasks take their subnets, interfaces and security groups from
/// Berth's EC2 VPC service.
struct TaskNetworks(Arc<berth_ec2::Ec2Service>);

#[async_trait::async_trait]
impl berth_ecs::networking::TaskNetworks for TaskNetworks {
    fn default_subnets(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Vec<berth_ecs::networking::SubnetInfo>, berth_model::AwsError> {
        let facts = self.0.network_facts(account, region)?;
        let Some(vpc) = facts.default_vpc else {
            return Ok(Vec::new());
        };
        Ok(facts
            .subnets
            .into_iter()
            .filter(|s| s.vpc_id == vpc)
            .map(|s| berth_ecs::networking::SubnetInfo {
                subnet_id: s.id,
                vpc_id: s.vpc_id,
                availability_zone: s.availability_zone,
            })
            .collect())
    }

    fn check(
        &self,
        account: &str,
        region: &str,
        subnets: &[String],
        security_groups: &[String],
    ) -> Result<Vec<berth_ecs::networking::SubnetInfo>, berth_model::AwsError> {
        Ok(self
            .0
            .task_subnets(account, region, subnets, security_groups)?
            .into_iter()
            .map(|s| berth_ecs::networking::SubnetInfo {
                subnet_id: s.subnet_id,
                vpc_id: s.vpc_id,
                availability_zone: s.availability_zone,
            })
            .collect())
    }

    async fn attach(
        &self,
        account: &str,
        region: &str,
        subnet_id: &str,
        security_groups: &[String],
        description: &str,
    ) -> Result<berth_ecs::networking::AttachedInterface, berth_model::AwsError> {
        // The description is the attachment's ARN: after a crash between
        // creating the interface and recording it, the retry finds it.
        let eni = match self.0.eni_described(account, region, description)? {
            Some(eni) => eni,
            None => {
                self.0
                    .create_task_eni(account, region, subnet_id, security_groups, description)
                    .await?
            }
        };
        Ok(berth_ecs::networking::AttachedInterface {
            interface: berth_model::agent_protocol::TaskNetworkInterface {
                eni_id: eni.id,
                subnet_id: eni.subnet_id,
                subnet_cidr: eni.subnet_cidr,
                gateway: eni.gateway,
                private_ip: eni.private_ip,
                mac: eni.mac,
                vpc_id: eni.vpc_id.clone(),
                vpc_cidr: eni.vpc_cidr,
            },
            availability_zone: eni.availability_zone,
            vpc_id: eni.vpc_id,
        })
    }

    async fn release(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
    ) -> Result<(), berth_model::AwsError> {
        self.0.delete_eni(account, region, eni_id).await.map(|_| ())
    }

    fn policy(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
    ) -> Result<berth_model::agent_protocol::GetNetworkPolicyResponse, berth_model::AwsError> {
        self.0.interface_policy(account, region, eni_id)
    }
}

/// Load balancers' subnets, security groups and interfaces, from Berth's
/// EC2 VPCs.
struct LoadBalancerNetworks(Arc<berth_ec2::Ec2Service>);

#[async_trait::async_trait]
impl berth_elb::LoadBalancerNetworks for LoadBalancerNetworks {
    fn subnets(
        &self,
        account: &str,
        region: &str,
        ids: &[String],
    ) -> Result<Vec<berth_elb::SubnetInfo>, berth_model::AwsError> {
        let facts = self.0.network_facts(account, region)?;
        ids.iter()
            .map(|id| {
                let s = facts.subnets.iter().find(|s| &s.id == id).ok_or_else(|| {
                    berth_model::AwsError::bad_request(
                        "SubnetNotFound",
                        format!("The subnet ID '{id}' is not found"),
                    )
                })?;
                Ok(berth_elb::SubnetInfo {
                    subnet_id: s.id.clone(),
                    vpc_id: s.vpc_id.clone(),
                    availability_zone: s.availability_zone.clone(),
                    zone_id: s.zone_id.clone(),
                    cidr: s.cidr.clone(),
                })
            })
            .collect()
    }

    fn security_groups(
        &self,
        account: &str,
        region: &str,
        vpc: &str,
        ids: &[String],
    ) -> Result<Vec<String>, berth_model::AwsError> {
        let facts = self.0.network_facts(account, region)?;
        if ids.is_empty() {
            return Ok(facts
                .groups
                .iter()
                .filter(|(_, v, _, default)| v == vpc && *default)
                .map(|(id, ..)| id.clone())
                .collect());
        }
        let mut out = Vec::new();
        for id in ids {
            // AWS accepts a group's id or, in the load balancer's VPC, its name.
            let group = facts
                .groups
                .iter()
                .find(|(gid, v, name, _)| v == vpc && (gid == id || name == id))
                .ok_or_else(|| {
                    berth_model::AwsError::bad_request(
                        "InvalidSecurityGroup",
                        format!("The security group '{id}' does not exist in VPC '{vpc}'"),
                    )
                })?;
            if !out.contains(&group.0) {
                out.push(group.0.clone());
            }
        }
        Ok(out)
    }

    fn vpc_cidr(
        &self,
        account: &str,
        region: &str,
        vpc: &str,
    ) -> Result<Option<String>, berth_model::AwsError> {
        let facts = self.0.network_facts(account, region)?;
        Ok(facts
            .vpcs
            .into_iter()
            .find(|(id, _)| id == vpc)
            .map(|(_, cidr)| cidr))
    }

    async fn attach(
        &self,
        account: &str,
        region: &str,
        subnet: &str,
        groups: &[String],
        description: &str,
    ) -> Result<(String, std::net::Ipv4Addr), berth_model::AwsError> {
        // The description names the load balancer (`ELB app/NAME/ID`): a
        // retry after a crash finds the interface created before.
        let eni = match self.0.eni_described(account, region, description)? {
            Some(eni) if eni.subnet_id == subnet => eni,
            _ => {
                let network = description.starts_with("ELB net/");
                self.0
                    .create_load_balancer_eni(account, region, subnet, groups, description, network)
                    .await?
            }
        };
        let ip = eni.private_ip.parse().map_err(|_| {
            berth_model::AwsError::internal("a load balancer interface has an invalid address")
        })?;
        Ok((eni.id, ip))
    }

    async fn detach(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
    ) -> Result<(), berth_model::AwsError> {
        self.0.delete_eni(account, region, eni_id).await.map(|_| ())
    }

    async fn set_groups(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
        groups: &[String],
    ) -> Result<(), berth_model::AwsError> {
        // An interface deleted meanwhile has no groups to change.
        self.0
            .set_eni_groups(account, region, eni_id, groups)
            .await
            .map(|_| ())
    }
}

/// ECS services' `serviceRegistries` name services of Berth's Cloud Map.
struct ServiceRegistries(Arc<berth_discovery::DiscoveryService>);

/// Cloud Map's "no such service" (the service or its registry is gone).
fn registry_gone(e: &berth_model::AwsError) -> bool {
    e.code == "ServiceNotFound"
}

#[async_trait::async_trait]
impl berth_ecs::registration::ServiceRegistries for ServiceRegistries {
    fn describe(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
    ) -> Result<berth_ecs::registration::RegistryInfo, berth_model::AwsError> {
        match self.0.service_info(account, region, registry_arn) {
            Ok(info) => Ok(berth_ecs::registration::RegistryInfo {
                arn: info.arn,
                record_types: info.record_types,
                custom_health: info.custom_health,
            }),
            // ECS answers for the registry it was given.
            Err(e) => Err(berth_model::AwsError::bad_request(
                "InvalidParameterException",
                if registry_gone(&e) {
                    format!("The service registry {registry_arn} does not exist.")
                } else {
                    format!(
                        "The service registry {registry_arn} is not valid: {}",
                        e.message
                    )
                },
            )),
        }
    }

    async fn register(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
        instance_id: &str,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), berth_model::AwsError> {
        self.0
            .register_instance(
                account,
                region,
                registry_arn,
                instance_id,
                attributes.clone(),
            )
            .await
            .map(|_| ())
    }

    async fn deregister(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
        instance_id: &str,
    ) -> Result<(), berth_model::AwsError> {
        match self
            .0
            .deregister_instance(account, region, registry_arn, instance_id)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if registry_gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn set_health(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
        instance_id: &str,
        healthy: bool,
    ) -> Result<(), berth_model::AwsError> {
        match self
            .0
            .set_custom_health(account, region, registry_arn, instance_id, healthy)
            .await
        {
            Err(e) if registry_gone(&e) => Ok(()),
            other => other,
        }
    }

    fn instances(
        &self,
        account: &str,
        region: &str,
        registry_arn: &str,
    ) -> Result<Vec<berth_ecs::registration::RegisteredInstance>, berth_model::AwsError> {
        match self.0.list_instances(account, region, registry_arn) {
            Ok(list) => Ok(list
                .into_iter()
                .map(|i| berth_ecs::registration::RegisteredInstance {
                    id: i.id,
                    attributes: i.attributes,
                })
                .collect()),
            Err(e) if registry_gone(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// Task and execution role credentials, assumed as ECS tasks assume them.
struct TaskRoles(Arc<berth_iam::Iam>);

#[async_trait::async_trait]
impl berth_ecs::agent_api::RoleIssuer for TaskRoles {
    async fn issue(
        &self,
        account: &str,
        role_arn: &str,
        session_name: &str,
        duration_secs: u32,
    ) -> Result<berth_ecs::agent_api::IssuedCredentials, berth_model::AwsError> {
        let session = self
            .0
            .issue_service_role_session(
                account,
                role_arn,
                "ecs-tasks.amazonaws.com",
                session_name,
                duration_secs,
            )
            .await?;
        Ok(berth_ecs::agent_api::IssuedCredentials {
            access_key_id: session.access_key_id,
            secret_access_key: session.secret_access_key,
            session_token: session.session_token,
            expiration: session.expiration,
        })
    }
}

/// Secret reads at task start are held to the execution role's policies.
struct ExecutionRoles {
    iam: Arc<berth_iam::Iam>,
    store: Arc<dyn Store>,
}

impl berth_ecs::agent_api::ExecutionRoleCheck for ExecutionRoles {
    fn check(
        &self,
        account: &str,
        role_arn: &str,
        session_name: &str,
        action: &str,
        resource: &str,
    ) -> Result<(), berth_model::AwsError> {
        // A partial secret ARN in `valueFrom` is checked as the secret's
        // full ARN, so a Deny on `secret:<name>-??????` holds.
        let resource = if action == "secretsmanager:GetSecretValue" {
            let region = resource.split(':').nth(3).unwrap_or_default();
            berth_secrets::authz::canonical_secret_arn(
                self.store.as_ref(),
                account,
                region,
                resource,
            )
        } else {
            resource.to_string()
        };
        self.iam
            .check_role_permission(account, role_arn, session_name, action, &resource)
    }
}

/// ECR repository policies take part in authorization, as on AWS.
struct RepositoryPolicies(Arc<berth_registry::Registry>);

impl berth_api::ResourcePolicySource for RepositoryPolicies {
    fn resource_policy(&self, resource_arn: &str) -> Option<String> {
        self.0.repository_policy(resource_arn)
    }
}
