//! The server side of the agent protocol (`BerthAgentV1`, see
//! `berth_model::agent_protocol`).

use std::sync::Arc;
use std::time::Duration;

use berth_model::agent_protocol::{
    AssignedTask, ContainerSecrets, GetNetworkPolicyRequest, GetNetworkPolicyResponse,
    GetTaskRoleCredentialsRequest, GetTaskRoleCredentialsResponse, LogPosition,
    OpenLogStreamRequest, OpenLogStreamResponse, PollTasksRequest, PollTasksResponse,
    PutTaskLogsRequest, PutTaskLogsResponse, RegisterAgentRequest, RegisterAgentResponse,
    ResolveSecretsRequest, ResolveSecretsResponse, SubmitTaskStateRequest, SubmitTaskStateResponse,
    TaskLogEvent, REGISTER_AGENT_ACTION, ROLE_EXECUTION, ROLE_TASK, SIGNING_NAME, TARGET_PREFIX,
};
use berth_model::authz::Requirement;
use berth_model::exec_protocol::{
    GetExecInputRequest, GetExecInputResponse, PollExecSessionsRequest, PollExecSessionsResponse,
    PutExecOutputRequest, PutExecOutputResponse,
};
use berth_model::json::{parse_input, to_body};
use berth_model::{AwsError, JsonService, Principal, PrincipalKind, RequestContext};
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::error;
use crate::state::clock::{self, Clock};
use crate::state::clusters;
use crate::state::exec::{ExecHub, ExecTarget};
use crate::state::instances::{self, InstanceRecord, Presence, Registration};
use crate::state::keys::{self, Scope};
use crate::state::records::{encode, load};
use crate::state::tasks::{apply_report, resolve_task_id, TaskRecord, TaskStatus};
use crate::state::{index, ledger, registry};

/// A credential minted for one agent, bound to its container instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCredential {
    /// Sealed with the master key (`berth_model::seal`) when the service has
    /// a sealer; plaintext in records of older data directories.
    pub secret_access_key: String,
    pub account: String,
    pub region: String,
    pub cluster: String,
    pub instance_id: String,
    pub instance_arn: String,
}

/// Looks up an agent credential (for the gateway's credential sources).
pub fn agent_credential(view: &dyn ReadView, access_key_id: &str) -> Option<AgentCredential> {
    if !access_key_id.starts_with(AGENT_KEY_PREFIX) {
        return None;
    }
    load::<AgentCredential>(view, &keys::agent_credential(access_key_id))
        .ok()
        .flatten()
        .map(|(c, _)| c)
}

/// The principal an agent credential authenticates as.
pub fn agent_principal(access_key_id: &str, credential: &AgentCredential) -> Principal {
    Principal {
        kind: PrincipalKind::Agent,
        arn: credential.instance_arn.clone(),
        user_id: credential.instance_id.clone(),
        account_id: credential.account.clone(),
        access_key_id: access_key_id.to_string(),
    }
}

/// Agent keys are recognisable, as AWS's key prefixes are (`AKIA`, `ASIA`).
const AGENT_KEY_PREFIX: &str = "ABIA";
const MAX_WAIT_SECONDS: u32 = 30;

/// The operator's agent registration token, kept only as its SHA-256
/// digest and compared in constant time.
#[derive(Clone)]
pub struct RegistrationToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for RegistrationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistrationToken(..)")
    }
}

impl RegistrationToken {
    pub fn new(token: &str) -> RegistrationToken {
        RegistrationToken {
            digest: token_digest(token),
        }
    }

    /// Whether `given` is the token.
    pub fn matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.digest.ct_eq(&token_digest(given)))
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Where an operator finds the token to give a host (said in refusals).
const TOKEN_HINT: &str = "give the agent the token in the server's <data-dir>/agent-token \
     (berth agent --registration-token-file PATH, or the environment variable BERTH_AGENT_TOKEN)";

/// The agent protocol service.
pub struct AgentService {
    store: Arc<dyn Store>,
    presence: Arc<Presence>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    secrets: Option<Arc<dyn SecretResolver>>,
    logs: Option<Arc<dyn LogSink>>,
    roles: Option<Arc<dyn RoleIssuer>>,
    execution_check: Option<Arc<dyn ExecutionRoleCheck>>,
    networks: Option<Arc<dyn crate::state::network::TaskNetworks>>,
    registration_token: Option<RegistrationToken>,
    /// Seals agent credential secrets before they are stored.
    sealer: Option<Arc<dyn berth_model::Sealer>>,
    /// Berth's DNS server, told to registering agents.
    dns_endpoint: DnsEndpoint,
    /// The relay of `berth exec` sessions, shared with the `ExecService`.
    exec: Option<Arc<ExecHub>>,
    clock: Arc<dyn Clock>,
}

/// Where Berth's DNS server answers, as registering agents are told
/// (`RegisterAgentResponse.dnsEndpoint`). Shared, so the binary can set it
/// once the DNS server has bound its address (unset: no DNS server).
#[derive(Debug, Clone, Default)]
pub struct DnsEndpoint(Arc<std::sync::RwLock<Option<std::net::SocketAddr>>>);

impl DnsEndpoint {
    pub fn set(&self, address: Option<std::net::SocketAddr>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = address;
    }

    pub fn get(&self) -> Option<std::net::SocketAddr> {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Temporary credentials for a role session, as STS's AssumeRole answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they expire, in seconds since the epoch.
    pub expiration: i64,
}

/// Issues temporary credentials for IAM roles (IAM roles for tasks): the
/// binary implements it with STS. Errors are answered to the agent as they
/// are (e.g. AccessDenied when the role does not trust ecs-tasks).
#[async_trait::async_trait]
pub trait RoleIssuer: Send + Sync + 'static {
    /// Assumes `role_arn` in `account` for a session named `session_name`
    /// lasting `duration_secs`.
    async fn issue(
        &self,
        account: &str,
        role_arn: &str,
        session_name: &str,
        duration_secs: u32,
    ) -> Result<IssuedCredentials, AwsError>;
}

/// How long task role sessions last (the ECS agent's credentials last an
/// hour at least; the agent refreshes them well before they expire).
pub const TASK_ROLE_SESSION_SECS: u32 = 3600;

/// The role `which` (`task` or `execution`) of a task: the task's override
/// first, then its task definition's.
pub(crate) fn task_role_arn(record: &TaskRecord, which: &str) -> Result<String, AwsError> {
    let overrides = record.task.overrides.as_ref();
    let (role, what) = match which {
        ROLE_TASK => (
            overrides
                .and_then(|o| o.task_role_arn.clone())
                .or_else(|| record.definition.task_role_arn.clone()),
            "task role (taskRoleArn)",
        ),
        ROLE_EXECUTION => (
            overrides
                .and_then(|o| o.execution_role_arn.clone())
                .or_else(|| record.definition.execution_role_arn.clone()),
            "task execution role (executionRoleArn)",
        ),
        other => {
            return Err(error::invalid_parameter(format!(
                "which must be '{ROLE_TASK}' or '{ROLE_EXECUTION}', not '{other}'."
            )))
        }
    };
    role.filter(|r| !r.is_empty())
        .ok_or_else(|| AwsError::bad_request("ClientException", format!("The task has no {what}.")))
}

/// Whether a task's execution role may perform `action` on `resource` (the
/// agent acts as the role's session `session_name` when it reads secrets).
/// The error is the AccessDeniedException that call would get.
pub trait ExecutionRoleCheck: Send + Sync + 'static {
    fn check(
        &self,
        account: &str,
        role_arn: &str,
        session_name: &str,
        action: &str,
        resource: &str,
    ) -> Result<(), AwsError>;
}

/// The IAM permission reading a `valueFrom` needs, as ECS's agent calls it:
/// `secretsmanager:GetSecretValue` on the secret (without a JSON-key
/// selector), or `ssm:GetParameters` on the parameter.
pub(crate) fn secret_permission(account: &str, region: &str, value_from: &str) -> (String, String) {
    if value_from.starts_with("arn:aws:secretsmanager:") {
        let secret: Vec<&str> = value_from.splitn(8, ':').take(7).collect();
        return (
            "secretsmanager:GetSecretValue".to_string(),
            secret.join(":"),
        );
    }
    if value_from.starts_with("arn:") {
        return ("ssm:GetParameters".to_string(), value_from.to_string());
    }
    (
        "ssm:GetParameters".to_string(),
        berth_model::arn::ssm_parameter_arn(region, account, value_from),
    )
}

/// Resolves a container definition's `valueFrom` (a Secrets Manager or SSM
/// Parameter Store reference) for an account and region. Errors carry a
/// message that names the reference, never a value.
pub trait SecretResolver: Send + Sync + 'static {
    fn resolve(&self, account: &str, region: &str, value_from: &str) -> Result<String, AwsError>;
}

/// Where agents ship their containers' `awslogs` output: CloudWatch Logs.
#[async_trait::async_trait]
pub trait LogSink: Send + Sync + 'static {
    /// Creates the stream (and the group when `create_group`) if missing and
    /// answers the stream's shipping cursor. A missing group without
    /// `create_group` is CloudWatch's ResourceNotFoundException.
    async fn open_stream(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        create_group: bool,
    ) -> Result<Option<LogPosition>, AwsError>;

    /// Stores the events after the stream's cursor, moving the cursor in the
    /// same durable write, and answers the new cursor.
    async fn ingest(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        events: Vec<TaskLogEvent>,
    ) -> Result<Option<LogPosition>, AwsError>;
}

impl AgentService {
    /// `shutdown` turning true ends pending long polls at once, so a server
    /// shutting down does not wait for them.
    pub fn new(
        store: Arc<dyn Store>,
        presence: Arc<Presence>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        AgentService {
            store,
            presence,
            shutdown,
            secrets: None,
            logs: None,
            roles: None,
            execution_check: None,
            networks: None,
            registration_token: None,
            sealer: None,
            dns_endpoint: DnsEndpoint::default(),
            exec: None,
            clock: clock::system(),
        }
    }

    /// Reads time from `clock` (tests drive it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Stores agent credential secrets sealed with `sealer` (the master
    /// key); whoever resolves them opens them with it.
    pub fn with_sealer(mut self, sealer: Arc<dyn berth_model::Sealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// Tells registering agents where Berth's DNS server answers (read at
    /// each registration, so it may be set later).
    pub fn with_dns_endpoint(mut self, endpoint: DnsEndpoint) -> Self {
        self.dns_endpoint = endpoint;
        self
    }

    /// The token every `RegisterAgent` must carry. Without one, the service
    /// refuses every registration.
    pub fn with_registration_token(mut self, token: RegistrationToken) -> Self {
        self.registration_token = Some(token);
        self
    }

    /// Lets agents fetch credentials for their tasks' IAM roles.
    /// Holds secret reads to the task execution role's IAM permissions, as
    /// ECS does (without one, any task of the account may read them).
    pub fn with_execution_role_check(mut self, check: Arc<dyn ExecutionRoleCheck>) -> Self {
        self.execution_check = Some(check);
        self
    }

    /// The VPC service that answers awsvpc tasks' security-group rules.
    pub fn with_networks(mut self, networks: Arc<dyn crate::state::network::TaskNetworks>) -> Self {
        self.networks = Some(networks);
        self
    }

    pub fn with_roles(mut self, issuer: Arc<dyn RoleIssuer>) -> Self {
        self.roles = Some(issuer);
        self
    }

    /// The task id and record of `task_arn` when it runs on the caller's
    /// instance.
    fn caller_task(
        &self,
        ctx: &RequestContext,
        task_arn: &str,
    ) -> Result<(AgentCredential, String, TaskRecord), AwsError> {
        let (credential, scope) = self.caller(ctx)?;
        let cluster = task_cluster(&credential, task_arn);
        let id = resolve_task_id(&scope, &cluster, task_arn)?;
        let (record, _) = load::<TaskRecord>(self.store.as_ref(), &scope.task(&cluster, &id))?
            .ok_or_else(|| error::invalid_parameter("The referenced task was not found."))?;
        if !runs_on(&record, &credential) {
            return Err(not_this_agents_task());
        }
        Ok((credential, id, record))
    }

    /// Like [`AgentService::caller_task`], and the caller's instance is still
    /// registered: a deregistered instance's agent gets no more role
    /// credentials or secrets (an operator deregisters a host to cut it off).
    fn live_caller_task(
        &self,
        ctx: &RequestContext,
        task_arn: &str,
    ) -> Result<(AgentCredential, String, TaskRecord), AwsError> {
        let (credential, id, record) = self.caller_task(ctx, task_arn)?;
        let scope = Scope {
            account: credential.account.clone(),
            region: credential.region.clone(),
        };
        let live = load::<InstanceRecord>(
            self.store.as_ref(),
            &scope.instance(&credential.cluster, &credential.instance_id),
        )?
        .is_some_and(|(r, _)| r.status() != instances::INACTIVE);
        if !live {
            return Err(AwsError::access_denied(format!(
                "The container instance {} is deregistered.",
                credential.instance_arn
            )));
        }
        Ok((credential, id, record))
    }

    /// The security-group rules of an awsvpc task's interface.
    fn network_policy(
        &self,
        ctx: &RequestContext,
        input: GetNetworkPolicyRequest,
    ) -> Result<GetNetworkPolicyResponse, AwsError> {
        let (credential, _, record) = self.caller_task(ctx, &input.task_arn)?;
        let interface = record.network.as_ref().ok_or_else(|| {
            error::invalid_parameter("The task has no attached network interface.")
        })?;
        let networks = self.networks.as_ref().ok_or_else(|| {
            error::invalid_parameter("This Berth server has no VPC service for awsvpc networking.")
        })?;
        networks.policy(&credential.account, &credential.region, &interface.eni_id)
    }

    async fn task_role_credentials(
        &self,
        ctx: &RequestContext,
        input: GetTaskRoleCredentialsRequest,
    ) -> Result<GetTaskRoleCredentialsResponse, AwsError> {
        let (credential, _, record) = self.live_caller_task(ctx, &input.task_arn)?;
        let role_arn = task_role_arn(&record, &input.which)?;
        let issuer = self.roles.clone().ok_or_else(|| {
            AwsError::bad_request(
                "ClientException",
                "This Berth server does not issue role credentials.",
            )
        })?;
        let issued = issuer
            .issue(
                &credential.account,
                &role_arn,
                &record.id,
                TASK_ROLE_SESSION_SECS,
            )
            .await?;
        Ok(GetTaskRoleCredentialsResponse {
            role_arn,
            access_key_id: issued.access_key_id,
            secret_access_key: issued.secret_access_key,
            session_token: issued.session_token,
            expiration: issued.expiration,
        })
    }

    /// Lets agents ship their containers' `awslogs` output.
    pub fn with_logs(mut self, sink: Arc<dyn LogSink>) -> Self {
        self.logs = Some(sink);
        self
    }

    /// The task record of `task_arn` when it runs on the caller's instance
    /// and one of its containers sends `awslogs` output to `group` in
    /// `region` (creating the group only when that container asks to).
    fn log_target(
        &self,
        ctx: &RequestContext,
        task_arn: &str,
        region: &str,
        group: &str,
        create_group: bool,
    ) -> Result<(AgentCredential, Arc<dyn LogSink>), AwsError> {
        let (credential, _, record) = self.caller_task(ctx, task_arn)?;
        let sink = self.logs.clone().ok_or_else(|| {
            AwsError::bad_request(
                "ClientException",
                "This Berth server does not serve CloudWatch Logs.",
            )
        })?;
        let named = record
            .definition
            .container_definitions
            .iter()
            .flatten()
            .filter_map(|c| c.log_configuration.as_ref())
            .filter(|l| l.log_driver.as_deref() == Some("awslogs"))
            .filter_map(|l| l.options.as_ref())
            .filter(|o| o.get("awslogs-group").is_some_and(|g| g == group))
            .filter(|o| {
                // The agent ships to the task's region unless told otherwise.
                let named = o.get("awslogs-region").filter(|r| !r.is_empty());
                named.map_or(credential.region.as_str(), |r| r.as_str()) == region
            })
            .any(|o| {
                !create_group
                    || o.get("awslogs-create-group").is_some_and(|v| {
                        // Go's strconv.ParseBool, as the awslogs driver reads it.
                        matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True")
                    })
            });
        if !named {
            return Err(AwsError::access_denied(format!(
                "No container of the task sends awslogs output to log group {group} in {region}{}.",
                if create_group {
                    " creating the group"
                } else {
                    ""
                }
            )));
        }
        Ok((credential, sink))
    }

    async fn open_log_stream(
        &self,
        ctx: &RequestContext,
        input: OpenLogStreamRequest,
    ) -> Result<OpenLogStreamResponse, AwsError> {
        let (credential, sink) = self.log_target(
            ctx,
            &input.task_arn,
            &input.region,
            &input.log_group_name,
            input.create_group,
        )?;
        let cursor = sink
            .open_stream(
                &credential.account,
                &input.region,
                &input.log_group_name,
                &input.log_stream_name,
                input.create_group,
            )
            .await?;
        Ok(OpenLogStreamResponse { cursor })
    }

    async fn put_task_logs(
        &self,
        ctx: &RequestContext,
        input: PutTaskLogsRequest,
    ) -> Result<PutTaskLogsResponse, AwsError> {
        let (credential, sink) = self.log_target(
            ctx,
            &input.task_arn,
            &input.region,
            &input.log_group_name,
            false,
        )?;
        let cursor = sink
            .ingest(
                &credential.account,
                &input.region,
                &input.log_group_name,
                &input.log_stream_name,
                input.events,
            )
            .await?;
        Ok(PutTaskLogsResponse { cursor })
    }

    /// Lets agents fetch the values of their tasks' `secrets`.
    pub fn with_secrets(mut self, resolver: Arc<dyn SecretResolver>) -> Self {
        self.secrets = Some(resolver);
        self
    }

    fn resolve_secrets(
        &self,
        ctx: &RequestContext,
        input: ResolveSecretsRequest,
    ) -> Result<ResolveSecretsResponse, AwsError> {
        let (credential, id, record) = self.live_caller_task(ctx, &input.task_arn)?;
        let resolver = self.secrets.as_ref();
        let execution = match &self.execution_check {
            Some(check) => Some((check, task_role_arn(&record, ROLE_EXECUTION)?)),
            None => None,
        };
        let mut containers = Vec::new();
        for c in record.definition.container_definitions.iter().flatten() {
            let mut environment = Vec::new();
            let mut log_options = Vec::new();
            let wanted = c.secrets.iter().flatten().map(|s| (s, false)).chain(
                c.log_configuration
                    .iter()
                    .flat_map(|l| l.secret_options.iter().flatten())
                    .map(|s| (s, true)),
            );
            for (secret, for_logs) in wanted {
                let name = secret.name.clone().unwrap_or_default();
                let value_from = secret.value_from.as_deref().unwrap_or("");
                let resolver = resolver.ok_or_else(|| {
                    AwsError::bad_request(
                        "ClientException",
                        "This Berth server does not serve Secrets Manager or SSM Parameter Store.",
                    )
                })?;
                if let Some((check, role)) = &execution {
                    let (action, resource) =
                        secret_permission(&credential.account, &credential.region, value_from);
                    check.check(&credential.account, role, &id, &action, &resource)?;
                }
                let value =
                    resolver.resolve(&credential.account, &credential.region, value_from)?;
                if for_logs {
                    log_options.push((name, value));
                } else {
                    environment.push((name, value));
                }
            }
            if !environment.is_empty() || !log_options.is_empty() {
                containers.push(ContainerSecrets {
                    name: c.name.clone().unwrap_or_default(),
                    environment,
                    log_options,
                });
            }
        }
        Ok(ResolveSecretsResponse { containers })
    }

    /// Relays `berth exec` sessions through `hub` (shared with the
    /// `ExecService`).
    pub fn with_exec(mut self, hub: Arc<ExecHub>) -> Self {
        self.exec = Some(hub);
        self
    }

    /// The exec relay and the caller's instance as its sessions name it.
    fn exec_caller(&self, ctx: &RequestContext) -> Result<(&ExecHub, ExecTarget), AwsError> {
        let (credential, _) = self.caller(ctx)?;
        self.presence.touch(&credential.instance_arn);
        let hub = self.exec.as_deref().ok_or_else(|| {
            AwsError::bad_request(
                "UnsupportedFeatureException",
                "This server relays no exec sessions.",
            )
        })?;
        Ok((
            hub,
            ExecTarget {
                account: credential.account,
                region: credential.region,
                cluster: credential.cluster,
                instance_id: credential.instance_id,
            },
        ))
    }

    async fn poll_exec_sessions(
        &self,
        ctx: &RequestContext,
        input: PollExecSessionsRequest,
    ) -> Result<PollExecSessionsResponse, AwsError> {
        let (hub, target) = self.exec_caller(ctx)?;
        let mut shutdown = self.shutdown.clone();
        let sessions = tokio::select! {
            sessions = hub.poll_sessions(&target, input.wait_seconds) => sessions,
            _ = shutdown.changed() => Vec::new(),
        };
        Ok(PollExecSessionsResponse { sessions })
    }

    async fn get_exec_input(
        &self,
        ctx: &RequestContext,
        input: GetExecInputRequest,
    ) -> Result<GetExecInputResponse, AwsError> {
        let (hub, target) = self.exec_caller(ctx)?;
        hub.agent_input(&target, &input.session_id, input.wait_seconds)
            .await
    }

    async fn put_exec_output(
        &self,
        ctx: &RequestContext,
        input: PutExecOutputRequest,
    ) -> Result<PutExecOutputResponse, AwsError> {
        let (hub, target) = self.exec_caller(ctx)?;
        hub.agent_output(&target, input).await
    }

    fn caller(&self, ctx: &RequestContext) -> Result<(AgentCredential, Scope), AwsError> {
        if ctx.principal.kind != PrincipalKind::Agent {
            return Err(AwsError::access_denied(
                "Only a registered agent's credential can call this operation.",
            ));
        }
        let credential = agent_credential(self.store.as_ref(), &ctx.principal.access_key_id)
            .ok_or_else(|| AwsError::access_denied("The agent credential is no longer valid."))?;
        let scope = Scope {
            account: credential.account.clone(),
            region: credential.region.clone(),
        };
        Ok((credential, scope))
    }

    /// Registers a container instance for an agent. Three checks, before
    /// anything is written: a user or role session needs
    /// `berth:RegisterAgent` on the cluster; the request carries the
    /// operator's registration token; and an instance that is registered
    /// (not deregistered) can be registered again only with its own current
    /// agent credential, so nobody takes over a host and its tasks' role
    /// credentials by naming it. An agent credential registers nothing but
    /// its own instance.
    async fn register(
        &self,
        ctx: &RequestContext,
        input: RegisterAgentRequest,
    ) -> Result<RegisterAgentResponse, AwsError> {
        let scope = Scope::of(ctx);
        let cluster = clusters::resolve_name(&scope, Some(&input.cluster))?;
        let registration = Registration {
            cluster: cluster.clone(),
            name: Some(input.name).filter(|n| !n.is_empty()),
            total_resources: input.total_resources,
            attributes: input.attributes,
            version_info: Some(input.version_info),
            tags: Vec::new(),
        };
        instances::check_registration(&registration)?;
        ctx.authorize(&[Requirement::new(
            REGISTER_AGENT_ACTION,
            scope.arn(&format!("cluster/{cluster}")),
        )])?;
        self.check_registration_token(&input.registration_token)?;
        // The agent re-registering, if an agent credential signed the call.
        let caller = match ctx.principal.kind {
            PrincipalKind::Agent => {
                let (credential, _) = self.caller(ctx)?;
                if credential.region != scope.region || credential.cluster != cluster {
                    return Err(not_own_instance(&credential, "it is not in this cluster"));
                }
                Some(credential)
            }
            _ => None,
        };
        let access_key_id = berth_util::ids::access_key_id(AGENT_KEY_PREFIX);
        let secret = berth_util::ids::secret_access_key();
        let key_id = access_key_id.clone();
        let secret_owned = berth_model::seal::seal_text(self.sealer.as_deref(), &secret)
            .map_err(|_| AwsError::internal("Sealing the agent credential failed."))?;
        let scope_owned = scope.clone();
        let now = self.clock.now();
        let caller_key = ctx.principal.access_key_id.clone();
        let (_, record) = self
            .store
            .update(move |view| {
                // Who holds the name, read in the same transaction as the write.
                let live = match &registration.name {
                    Some(name) => live_instance_named(view, &scope_owned, &cluster, name)?,
                    None => None,
                };
                match (&live, &caller) {
                    (Some(instance), Some(credential)) => {
                        let own = instance.id == credential.instance_id
                            && instance.agent_access_key_id.as_deref() == Some(caller_key.as_str());
                        if !own {
                            return Err(taken(instance, &cluster));
                        }
                    }
                    (Some(instance), None) => return Err(taken(instance, &cluster)),
                    (None, Some(credential)) => {
                        return Err(not_own_instance(
                            credential,
                            "it is deregistered or registered under another name",
                        ))
                    }
                    (None, None) => {}
                }
                let (mut ops, mut record) =
                    instances::register_in(view, &scope_owned, &registration, now)?;
                ops.retain(|op| op.key() != scope_owned.instance(&record.cluster, &record.id));
                if caller.is_some() {
                    // The agent registering its own instance again keeps its
                    // credential: an answer lost on the way costs nothing.
                    ops.push(Op::put(
                        scope_owned.instance(&record.cluster, &record.id),
                        encode(&record)?,
                    ));
                    return Ok::<_, AwsError>((ops, (record, true)));
                }
                // A new registration retires the instance's previous credential.
                if let Some(old) = record.agent_access_key_id.replace(key_id.clone()) {
                    ops.push(Op::delete(keys::agent_credential(&old)));
                }
                let credential = AgentCredential {
                    secret_access_key: secret_owned.clone(),
                    account: scope_owned.account.clone(),
                    region: scope_owned.region.clone(),
                    cluster: record.cluster.clone(),
                    instance_id: record.id.clone(),
                    instance_arn: record.arn().to_string(),
                };
                ops.push(Op::put(
                    scope_owned.instance(&record.cluster, &record.id),
                    encode(&record)?,
                ));
                ops.push(Op::put(
                    keys::agent_credential(&key_id),
                    encode(&credential)?,
                ));
                Ok::<_, AwsError>((ops, (record, false)))
            })
            .await
            .map_err(error::store)??;
        let (record, kept) = record;
        self.presence.touch(record.arn());
        tracing::info!(instance = %record.arn(), cluster = %record.cluster, again = kept, "agent registered");
        if kept {
            // The agent signs with the secret it has; it is not sent back.
            return Ok(RegisterAgentResponse {
                container_instance_arn: record.arn().to_string(),
                access_key_id: ctx.principal.access_key_id.clone(),
                secret_access_key: String::new(),
                dns_endpoint: self.dns_endpoint.get().map(|a| a.to_string()),
            });
        }
        Ok(RegisterAgentResponse {
            container_instance_arn: record.arn().to_string(),
            access_key_id,
            secret_access_key: secret,
            dns_endpoint: self.dns_endpoint.get().map(|a| a.to_string()),
        })
    }

    /// The request's registration token is the operator's.
    fn check_registration_token(&self, given: &str) -> Result<(), AwsError> {
        let Some(token) = &self.registration_token else {
            return Err(AwsError::access_denied(
                "This Berth server has no agent registration token, so it accepts no agent registrations.",
            ));
        };
        if given.is_empty() {
            return Err(AwsError::access_denied(format!(
                "RegisterAgent needs the agent registration token: {TOKEN_HINT}."
            )));
        }
        if !token.matches(given) {
            return Err(AwsError::access_denied(format!(
                "The agent registration token is wrong: {TOKEN_HINT}."
            )));
        }
        Ok(())
    }

    fn snapshot(
        &self,
        credential: &AgentCredential,
        scope: &Scope,
    ) -> Result<PollTasksResponse, AwsError> {
        let store = self.store.as_ref();
        let revision = store.revision();
        let status = load::<InstanceRecord>(
            store,
            &scope.instance(&credential.cluster, &credential.instance_id),
        )?
        .map(|(r, _)| r.status().to_string())
        .unwrap_or_else(|| instances::INACTIVE.to_string());
        let tasks =
            index::instance_tasks(store, scope, &credential.cluster, &credential.instance_id)?
                .into_iter()
                .map(assigned)
                .collect();
        Ok(PollTasksResponse {
            revision,
            instance_status: status,
            tasks,
        })
    }

    async fn poll(
        &self,
        ctx: &RequestContext,
        input: PollTasksRequest,
    ) -> Result<PollTasksResponse, AwsError> {
        let (credential, scope) = self.caller(ctx)?;
        self.presence.touch(&credential.instance_arn);
        let wait = Duration::from_secs(u64::from(input.wait_seconds.min(MAX_WAIT_SECONDS)));
        if input.since_revision == 0 || wait.is_zero() {
            return self.snapshot(&credential, &scope);
        }
        // Only this instance's record and its own index entries: every
        // write of one of its tasks (whichever cluster the task belongs to)
        // writes its `instance-tasks/` entry in the same mutation, so a
        // change anywhere else in the region wakes nothing here.
        let instance_key = scope.instance(&credential.cluster, &credential.instance_id);
        let tasks_prefix = scope.instance_tasks(&credential.cluster, &credential.instance_id);
        let watches = (
            self.store.watch(&tasks_prefix, input.since_revision).await,
            self.store.watch(&instance_key, input.since_revision).await,
        );
        let (mut tasks_watch, mut instance_watch) = match watches {
            (Ok(t), Ok(i)) => (t, i),
            // Too old to resume from: the full list is the answer.
            _ => return self.snapshot(&credential, &scope),
        };
        let deadline = tokio::time::sleep_until(tokio::time::Instant::now() + wait);
        tokio::pin!(deadline);
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return self.snapshot(&credential, &scope);
        }
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = shutdown.changed() => break,
                // Any change of an entry under the prefix concerns this
                // instance (a task placed, changed, stopped or collected).
                _ = tasks_watch.next() => break,
                event = instance_watch.next() => match event {
                    // The prefix is the instance's key; only that key counts.
                    Some(Ok(e)) if e.kv.key != instance_key => continue,
                    _ => break,
                },
            }
        }
        self.presence.touch(&credential.instance_arn);
        self.snapshot(&credential, &scope)
    }

    async fn submit(
        &self,
        ctx: &RequestContext,
        input: SubmitTaskStateRequest,
    ) -> Result<SubmitTaskStateResponse, AwsError> {
        let (credential, scope) = self.caller(ctx)?;
        self.presence.touch(&credential.instance_arn);
        let cluster = task_cluster(&credential, &input.task_arn);
        let id = resolve_task_id(&scope, &cluster, &input.task_arn)?;
        if TaskStatus::parse(&input.last_status).is_none() {
            return Err(error::invalid_parameter(format!(
                "Unknown task status '{}'.",
                input.last_status
            )));
        }
        let key = scope.task(&cluster, &id);
        let caller = credential.clone();
        let scope_owned = scope.clone();
        let now = self.clock.now();
        let (_, record) = self
            .store
            .update(move |view| {
                let (mut record, _) = load::<TaskRecord>(view, &key)?.ok_or_else(|| {
                    error::invalid_parameter("The referenced task was not found.")
                })?;
                if !runs_on(&record, &caller) {
                    return Err(not_this_agents_task());
                }
                let ops = if apply_report(&mut record, &input, now)? {
                    let mut ops = index::put_task(&scope_owned, &record)?;
                    if record.last_status() == TaskStatus::Stopped {
                        ops.extend(ledger::ledger_op(&scope_owned, &record)?);
                    }
                    ops
                } else {
                    Vec::new()
                };
                Ok::<_, AwsError>((ops, record))
            })
            .await
            .map_err(error::store)??;
        Ok(SubmitTaskStateResponse {
            desired_status: registry::agent_desired_status(&record).to_string(),
            version: record.task.version.unwrap_or(0),
        })
    }
}

/// The cluster a task ARN names (`task/<cluster>/<id>`), else the agent's.
fn task_cluster(credential: &AgentCredential, task_arn: &str) -> String {
    berth_model::Arn::parse(task_arn)
        .and_then(|a| {
            a.resource_id()
                .rsplit_once('/')
                .map(|(cluster, _)| cluster.to_string())
        })
        .filter(|c| !c.is_empty() && !c.contains('/'))
        .unwrap_or_else(|| credential.cluster.clone())
}

/// Whether the task runs on the credential's container instance: the same
/// instance id in the same cluster (a Fargate task's host may be in another
/// cluster than the task: `host_cluster`).
fn runs_on(record: &TaskRecord, credential: &AgentCredential) -> bool {
    let host_cluster = record.host_cluster.as_deref().unwrap_or(&record.cluster);
    record.instance_id.as_deref() == Some(credential.instance_id.as_str())
        && host_cluster == credential.cluster
}

/// The refusal for registering a name a live instance holds, without its
/// agent credential.
fn taken(instance: &InstanceRecord, cluster: &str) -> AwsError {
    AwsError::access_denied(format!(
        "The container instance {} is registered as '{}' and only its own agent (signing with \
         the credential it was given) can register it again. To register another agent under \
         this name, deregister the instance first: aws ecs deregister-container-instance \
         --cluster {cluster} --container-instance {} --force",
        instance.arn(),
        instance.instance.ec2_instance_id.as_deref().unwrap_or(""),
        instance.arn(),
    ))
}

/// The refusal for an agent credential registering any instance but its own
/// live one.
fn not_own_instance(credential: &AgentCredential, why: &str) -> AwsError {
    AwsError::access_denied(format!(
        "An agent credential can register only its own container instance {} again, and {why}; \
         register with account credentials allowed {REGISTER_AGENT_ACTION} instead.",
        credential.instance_arn
    ))
}

fn not_this_agents_task() -> AwsError {
    AwsError::access_denied("The task does not run on this agent's container instance.")
}

/// The live (not deregistered) container instance registered as `name` in
/// `cluster`.
fn live_instance_named(
    view: &dyn ReadView,
    scope: &Scope,
    cluster: &str,
    name: &str,
) -> Result<Option<InstanceRecord>, AwsError> {
    let Some(kv) = view.get(&scope.instance_name(cluster, name)) else {
        return Ok(None);
    };
    let id = String::from_utf8_lossy(&kv.value).to_string();
    Ok(load::<InstanceRecord>(view, &scope.instance(cluster, &id))?
        .map(|(record, _)| record)
        .filter(|record| record.status() != instances::INACTIVE))
}

fn assigned(record: TaskRecord) -> AssignedTask {
    AssignedTask {
        task_arn: record.arn().to_string(),
        cluster_arn: record.task.cluster_arn.clone().unwrap_or_default(),
        desired_status: registry::agent_desired_status(&record).to_string(),
        last_status: record.last_status().to_string(),
        task_definition: record.definition.clone(),
        overrides: record.task.overrides.clone().unwrap_or_default(),
        containers: record.task.containers.clone().unwrap_or_default(),
        version: record.task.version.unwrap_or(0),
        network_interface: record.network.clone(),
        stop_code: record.task.stop_code.clone(),
    }
}

#[async_trait::async_trait]
impl JsonService for AgentService {
    fn target_prefix(&self) -> &'static str {
        TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        SIGNING_NAME
    }

    /// Log batches carry up to 1 MiB of events (CloudWatch's limit),
    /// which JSON escaping can grow several times.
    fn max_body(&self, operation: &str) -> usize {
        match operation {
            "PutTaskLogs" => 8 * 1024 * 1024,
            _ => berth_model::service::DEFAULT_MAX_BODY,
        }
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        if operation != "RegisterAgent" {
            // No IAM permission: each operation takes the agent's own
            // container instance from its credential (`caller`) and acts only
            // on that instance and the tasks running on it (`caller_task`,
            // `runs_on`); any other principal is refused there.
            // RegisterAgent asks IAM itself (`berth:RegisterAgent`).
            ctx.no_authorization_needed();
        }
        match operation {
            "RegisterAgent" => to_body(&self.register(ctx, parse_input(body)?).await?),
            "PollTasks" => to_body(&self.poll(ctx, parse_input(body)?).await?),
            "SubmitTaskState" => to_body(&self.submit(ctx, parse_input(body)?).await?),
            "ResolveSecrets" => to_body(&self.resolve_secrets(ctx, parse_input(body)?)?),
            "OpenLogStream" => to_body(&self.open_log_stream(ctx, parse_input(body)?).await?),
            "PutTaskLogs" => to_body(&self.put_task_logs(ctx, parse_input(body)?).await?),
            "GetTaskRoleCredentials" => {
                to_body(&self.task_role_credentials(ctx, parse_input(body)?).await?)
            }
            "GetNetworkPolicy" => to_body(&self.network_policy(ctx, parse_input(body)?)?),
            "PollExecSessions" => to_body(&self.poll_exec_sessions(ctx, parse_input(body)?).await?),
            "GetExecInput" => to_body(&self.get_exec_input(ctx, parse_input(body)?).await?),
            "PutExecOutput" => to_body(&self.put_exec_output(ctx, parse_input(body)?).await?),
            other => Err(AwsError::unknown_operation(format!(
                "The agent protocol has no operation named '{other}'."
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_permissions_name_the_secret_or_parameter() {
        let sm = "arn:aws:secretsmanager:us-east-1:1:secret:db-AbCdEf";
        assert_eq!(
            super::secret_permission("1", "us-east-1", &format!("{sm}:password:AWSCURRENT:")),
            ("secretsmanager:GetSecretValue".to_string(), sm.to_string())
        );
        assert_eq!(
            super::secret_permission("1", "us-east-1", sm).1,
            sm.to_string()
        );
        assert_eq!(
            super::secret_permission("1", "eu-west-1", "/app/db"),
            (
                "ssm:GetParameters".to_string(),
                "arn:aws:ssm:eu-west-1:1:parameter/app/db".to_string()
            )
        );
    }

    use super::*;
    use berth_model::authz::{Access, Authorizer, Denial, DenialStyle};

    struct FakeIssuer;

    #[async_trait::async_trait]
    impl RoleIssuer for FakeIssuer {
        async fn issue(
            &self,
            account: &str,
            role_arn: &str,
            session_name: &str,
            duration_secs: u32,
        ) -> Result<IssuedCredentials, AwsError> {
            Ok(IssuedCredentials {
                access_key_id: "ASIAFAKE".into(),
                secret_access_key: format!("{account}|{role_arn}"),
                session_token: session_name.into(),
                expiration: i64::from(duration_secs),
            })
        }
    }

    fn agent_ctx(key: &str) -> RequestContext {
        RequestContext {
            request_id: "r".into(),
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            principal: Principal {
                kind: PrincipalKind::Agent,
                arn: "arn:aws:ecs:us-east-1:000000000000:container-instance/default/i1".into(),
                user_id: "i1".into(),
                account_id: "000000000000".into(),
                access_key_id: key.into(),
            },
            source_ip: None,
            secure_transport: false,
            // The gateway lets agent credentials call the agent protocol.
            access: Access::new(None, DenialStyle::Json, true),
        }
    }

    fn record(id: &str, instance: &str, task_role: Option<&str>) -> TaskRecord {
        let mut r = TaskRecord {
            id: id.into(),
            cluster: "default".into(),
            instance_id: Some(instance.into()),
            ..TaskRecord::default()
        };
        r.task.task_arn = Some(format!(
            "arn:aws:ecs:us-east-1:000000000000:task/default/{id}"
        ));
        r.definition.task_role_arn = task_role.map(str::to_string);
        r.definition.execution_role_arn = Some("arn:aws:iam::000000000000:role/exec".into());
        r
    }

    #[test]
    fn role_arn_prefers_overrides() {
        let mut r = record("t1", "i1", Some("arn:aws:iam::000000000000:role/def"));
        assert_eq!(
            task_role_arn(&r, ROLE_TASK).ok().as_deref(),
            Some("arn:aws:iam::000000000000:role/def")
        );
        r.task.overrides = Some(berth_model::shapes::ecs::TaskOverride {
            task_role_arn: Some("arn:aws:iam::000000000000:role/over".into()),
            ..Default::default()
        });
        assert_eq!(
            task_role_arn(&r, ROLE_TASK).ok().as_deref(),
            Some("arn:aws:iam::000000000000:role/over")
        );
        assert_eq!(
            task_role_arn(&r, ROLE_EXECUTION).ok().as_deref(),
            Some("arn:aws:iam::000000000000:role/exec")
        );
        let none = record("t2", "i1", None);
        let e = task_role_arn(&none, ROLE_TASK)
            .err()
            .map(|e| e.code.to_string());
        assert_eq!(e.as_deref(), Some("ClientException"));
        assert!(task_role_arn(&none, "other").is_err());
    }

    #[tokio::test]
    async fn task_role_credentials_op() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            berth_store::SqliteStore::open(berth_store::SqliteOptions::new(dir.path().join("db")))
                .unwrap(),
        );
        let scope = Scope {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        };
        let credential = AgentCredential {
            secret_access_key: "s".into(),
            account: scope.account.clone(),
            region: scope.region.clone(),
            cluster: "default".into(),
            instance_id: "i1".into(),
            instance_arn: "arn:aws:ecs:us-east-1:000000000000:container-instance/default/i1".into(),
        };
        let ops = vec![
            Op::put(
                keys::agent_credential("ABIAKEY"),
                encode(&credential).unwrap(),
            ),
            Op::put(
                scope.task("default", "t1"),
                encode(&record(
                    "t1",
                    "i1",
                    Some("arn:aws:iam::000000000000:role/app"),
                ))
                .unwrap(),
            ),
            Op::put(
                scope.task("default", "t2"),
                encode(&record(
                    "t2",
                    "other",
                    Some("arn:aws:iam::000000000000:role/app"),
                ))
                .unwrap(),
            ),
            Op::put(
                scope.task("default", "t3"),
                encode(&record("t3", "i1", None)).unwrap(),
            ),
            // A Fargate task whose host i1 is in another cluster: not ours.
            Op::put(
                scope.task("default", "t4"),
                encode(&TaskRecord {
                    host_cluster: Some("elsewhere".into()),
                    ..record("t4", "i1", Some("arn:aws:iam::000000000000:role/app"))
                })
                .unwrap(),
            ),
            // A Fargate task of cluster `web` hosted on i1 (cluster default).
            Op::put(
                scope.task("web", "t5"),
                encode(&TaskRecord {
                    cluster: "web".into(),
                    host_cluster: Some("default".into()),
                    ..record("t5", "i1", Some("arn:aws:iam::000000000000:role/app"))
                })
                .unwrap(),
            ),
            Op::put(
                scope.instance("default", "i1"),
                encode(&instance_record(&scope, "i1", "ABIAKEY")).unwrap(),
            ),
        ];
        store
            .update(move |_| Ok::<_, AwsError>((ops.clone(), ())))
            .await
            .unwrap()
            .unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let presence = Arc::new(Presence::with_timeout(Duration::from_secs(60)));
        let ctx = agent_ctx("ABIAKEY");
        let ask = |task: &str, which: &str| {
            let cluster = if task == "t5" { "web" } else { "default" };
            serde_json::to_vec(&GetTaskRoleCredentialsRequest {
                task_arn: format!("arn:aws:ecs:us-east-1:000000000000:task/{cluster}/{task}"),
                which: which.into(),
            })
            .unwrap()
        };

        // No issuer plugged in.
        let bare = AgentService::new(store.clone(), presence.clone(), rx.clone());
        let e = bare
            .handle(&ctx, "GetTaskRoleCredentials", &ask("t1", ROLE_TASK))
            .await
            .unwrap_err();
        assert_eq!(e.code, "ClientException");
        assert_eq!(
            e.message,
            "This Berth server does not issue role credentials."
        );

        let service = AgentService::new(store, presence, rx).with_roles(Arc::new(FakeIssuer));
        let body = service
            .handle(&ctx, "GetTaskRoleCredentials", &ask("t1", ROLE_TASK))
            .await
            .unwrap();
        let answer: GetTaskRoleCredentialsResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer.role_arn, "arn:aws:iam::000000000000:role/app");
        assert_eq!(
            answer.secret_access_key,
            "000000000000|arn:aws:iam::000000000000:role/app"
        );
        assert_eq!(answer.session_token, "t1");
        assert_eq!(answer.expiration, i64::from(TASK_ROLE_SESSION_SECS));
        let body = service
            .handle(&ctx, "GetTaskRoleCredentials", &ask("t1", ROLE_EXECUTION))
            .await
            .unwrap();
        let answer: GetTaskRoleCredentialsResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer.role_arn, "arn:aws:iam::000000000000:role/exec");

        // Another instance's task.
        let e = service
            .handle(&ctx, "GetTaskRoleCredentials", &ask("t2", ROLE_TASK))
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        assert_eq!(
            e.message,
            "The task does not run on this agent's container instance."
        );
        // A Fargate task on a host of the same id in another cluster.
        let e = service
            .handle(&ctx, "GetTaskRoleCredentials", &ask("t4", ROLE_TASK))
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        // A Fargate task of another cluster hosted here.
        let body = service
            .handle(&ctx, "GetTaskRoleCredentials", &ask("t5", ROLE_TASK))
            .await
            .unwrap();
        let answer: GetTaskRoleCredentialsResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer.session_token, "t5");
        // No task role.
        let e = service
            .handle(&ctx, "GetTaskRoleCredentials", &ask("t3", ROLE_TASK))
            .await
            .unwrap_err();
        assert_eq!(e.code, "ClientException");
        // Not an agent.
        let mut root = agent_ctx("AKIAROOT");
        root.principal.kind = PrincipalKind::Root;
        assert!(service
            .handle(&root, "GetTaskRoleCredentials", &ask("t1", ROLE_TASK))
            .await
            .is_err());
        let user = user_ctx(&["ecs:*"]);
        let e = service
            .handle(&user, "GetTaskRoleCredentials", &ask("t1", ROLE_TASK))
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        // A deregistered instance's agent gets no more role credentials.
        let mut gone = instance_record(&scope, "i1", "ABIAKEY");
        gone.instance.status = Some(instances::INACTIVE.into());
        let op = Op::put(scope.instance("default", "i1"), encode(&gone).unwrap());
        service
            .store
            .update(move |_| Ok::<_, AwsError>((vec![op.clone()], ())))
            .await
            .unwrap()
            .unwrap();
        let e = service
            .handle(&ctx, "GetTaskRoleCredentials", &ask("t1", ROLE_TASK))
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        assert!(e.message.contains("is deregistered"), "{}", e.message);
    }

    fn instance_record(scope: &Scope, id: &str, key: &str) -> InstanceRecord {
        InstanceRecord {
            id: id.into(),
            cluster: "default".into(),
            instance: berth_model::shapes::ecs::ContainerInstance {
                container_instance_arn: Some(
                    scope.arn(&format!("container-instance/default/{id}")),
                ),
                status: Some(instances::ACTIVE.into()),
                ..Default::default()
            },
            agent_access_key_id: Some(key.into()),
            placement_attributes: Default::default(),
        }
    }

    /// An IAM policy engine that allows the actions listed (`svc:*` allows
    /// a whole service), on any resource.
    struct Allow(Vec<String>);

    impl Authorizer for Allow {
        fn authorize(&self, _: &RequestContext, reqs: &[Requirement]) -> Result<(), Denial> {
            for r in reqs {
                let allowed = self.0.iter().any(|a| match a.strip_suffix('*') {
                    Some(prefix) => r.action.starts_with(prefix),
                    None => *a == r.action,
                });
                if !allowed {
                    return Err(Denial::implicit(r));
                }
            }
            Ok(())
        }
    }

    fn user_ctx(allowed: &[&str]) -> RequestContext {
        let authorizer: Arc<dyn Authorizer> =
            Arc::new(Allow(allowed.iter().map(|a| a.to_string()).collect()));
        RequestContext::for_principal(
            Principal {
                kind: PrincipalKind::User,
                arn: "arn:aws:iam::000000000000:user/mallory".into(),
                user_id: "AIDAMALLORY".into(),
                account_id: "000000000000".into(),
                access_key_id: "AKIAMALLORY".into(),
            },
            "us-east-1",
        )
        .with_access(Access::new(Some(authorizer), DenialStyle::Json, false))
    }

    fn root_ctx() -> RequestContext {
        RequestContext::for_principal(
            Principal {
                kind: PrincipalKind::Root,
                arn: "arn:aws:iam::000000000000:root".into(),
                user_id: "000000000000".into(),
                account_id: "000000000000".into(),
                access_key_id: "AKIAROOT".into(),
            },
            "us-east-1",
        )
    }

    /// The context of the agent holding `answer`'s credential, as the
    /// gateway resolves it.
    fn agent_of(store: &dyn Store, answer: &RegisterAgentResponse) -> RequestContext {
        let credential = agent_credential(store, &answer.access_key_id).unwrap();
        RequestContext::for_principal(
            agent_principal(&answer.access_key_id, &credential),
            "us-east-1",
        )
        .with_access(Access::new(None, DenialStyle::Json, true))
    }

    const TOKEN: &str = "0123456789abcdef-operator-token";

    fn registration(cluster: &str, name: &str, token: &str) -> Vec<u8> {
        serde_json::to_vec(&RegisterAgentRequest {
            cluster: cluster.into(),
            name: name.into(),
            registration_token: token.into(),
            ..RegisterAgentRequest::default()
        })
        .unwrap()
    }

    fn agent_service(dir: &tempfile::TempDir, token: Option<&str>) -> AgentService {
        let store: Arc<dyn Store> = Arc::new(
            berth_store::SqliteStore::open(berth_store::SqliteOptions::new(dir.path().join("db")))
                .unwrap(),
        );
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let presence = Arc::new(Presence::with_timeout(Duration::from_secs(60)));
        let service = AgentService::new(store, presence, rx);
        match token {
            Some(t) => service.with_registration_token(RegistrationToken::new(t)),
            None => service,
        }
    }

    async fn register_ok(
        service: &AgentService,
        ctx: &RequestContext,
        name: &str,
    ) -> RegisterAgentResponse {
        let body = service
            .handle(ctx, "RegisterAgent", &registration("default", name, TOKEN))
            .await
            .unwrap_or_else(|e| panic!("{}: {}", e.code, e.message));
        serde_json::from_slice(&body).unwrap()
    }

    async fn register_err(
        service: &AgentService,
        ctx: &RequestContext,
        cluster: &str,
        name: &str,
        token: &str,
    ) -> AwsError {
        service
            .handle(ctx, "RegisterAgent", &registration(cluster, name, token))
            .await
            .map(|_| ())
            .unwrap_err()
    }

    struct NullSink;

    #[async_trait::async_trait]
    impl LogSink for NullSink {
        async fn open_stream(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
            _: bool,
        ) -> Result<Option<LogPosition>, AwsError> {
            Ok(None)
        }

        async fn ingest(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
            _: Vec<TaskLogEvent>,
        ) -> Result<Option<LogPosition>, AwsError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn logs_go_only_where_the_task_sends_them() {
        let dir = tempfile::tempdir().unwrap();
        let service = agent_service(&dir, Some(TOKEN)).with_logs(Arc::new(NullSink));
        let answer = register_ok(&service, &root_ctx(), "h1").await;
        let agent = agent_of(service.store.as_ref(), &answer);
        let instance_id = answer.container_instance_arn.rsplit('/').next().unwrap();
        let mut task = record("t1", instance_id, None);
        task.definition.container_definitions =
            Some(vec![berth_model::shapes::ecs::ContainerDefinition {
                name: Some("c".into()),
                log_configuration: Some(berth_model::shapes::ecs::LogConfiguration {
                    log_driver: Some("awslogs".into()),
                    options: Some(
                        [("awslogs-group".to_string(), "app".to_string())]
                            .into_iter()
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        let op = Op::put(
            Scope::of(&agent).task("default", "t1"),
            encode(&task).unwrap(),
        );
        service
            .store
            .update(move |_| Ok::<_, AwsError>((vec![op.clone()], ())))
            .await
            .unwrap()
            .unwrap();
        let open = |region: &str, group: &str, create_group: bool| {
            serde_json::to_vec(&OpenLogStreamRequest {
                task_arn: "arn:aws:ecs:us-east-1:000000000000:task/default/t1".into(),
                region: region.into(),
                log_group_name: group.into(),
                log_stream_name: "s".into(),
                create_group,
            })
            .unwrap()
        };
        service
            .handle(&agent, "OpenLogStream", &open("us-east-1", "app", false))
            .await
            .unwrap();
        for (region, group, create) in [
            ("us-east-1", "other", false),
            ("eu-west-1", "app", false),
            ("us-east-1", "app", true),
        ] {
            let e = service
                .handle(&agent, "OpenLogStream", &open(region, group, create))
                .await
                .unwrap_err();
            assert_eq!(e.code, "AccessDeniedException", "{region} {group} {create}");
        }
    }

    #[test]
    fn registration_tokens_compare_by_digest() {
        let token = RegistrationToken::new(TOKEN);
        assert!(token.matches(TOKEN));
        assert!(!token.matches(""));
        assert!(!token.matches(&TOKEN[1..]));
        assert_eq!(format!("{token:?}"), "RegistrationToken(..)");
    }

    #[tokio::test]
    async fn registration_tells_agents_where_berths_dns_answers() {
        let dir = tempfile::tempdir().unwrap();
        let dns = DnsEndpoint::default();
        let service = agent_service(&dir, Some(TOKEN)).with_dns_endpoint(dns.clone());
        // No DNS server: nothing said (and nothing serialized).
        let answer = register_ok(&service, &root_ctx(), "h1").await;
        assert_eq!(answer.dns_endpoint, None);
        let text = serde_json::to_string(&answer).unwrap();
        assert!(!text.contains("dnsEndpoint"), "{text}");
        // Set once the DNS server has bound: the next registration (the
        // agent's own, again) carries it.
        dns.set(Some("127.0.0.1:8053".parse().unwrap()));
        let again = register_ok(&service, &agent_of(service.store.as_ref(), &answer), "h1").await;
        assert_eq!(again.dns_endpoint.as_deref(), Some("127.0.0.1:8053"));
        let fresh = register_ok(&service, &root_ctx(), "h2").await;
        assert_eq!(fresh.dns_endpoint.as_deref(), Some("127.0.0.1:8053"));
    }

    #[tokio::test]
    async fn registering_needs_the_token_and_berth_register_agent() {
        let dir = tempfile::tempdir().unwrap();
        let service = agent_service(&dir, Some(TOKEN));
        let root = root_ctx();
        // Missing and wrong tokens.
        let e = register_err(&service, &root, "default", "h1", "").await;
        assert_eq!(e.code, "AccessDeniedException");
        assert!(
            e.message
                .starts_with("RegisterAgent needs the agent registration token"),
            "{}",
            e.message
        );
        assert!(e.message.contains("--registration-token-file"));
        let e = register_err(&service, &root, "default", "h1", "guess").await;
        assert_eq!(e.code, "AccessDeniedException");
        assert!(
            e.message
                .starts_with("The agent registration token is wrong"),
            "{}",
            e.message
        );
        // A server without a token accepts nobody.
        let bare = agent_service(&tempfile::tempdir().unwrap(), None);
        let e = register_err(&bare, &root, "default", "h1", TOKEN).await;
        assert!(e.message.contains("accepts no agent registrations"));

        // `ecs:*` does not grant berth:RegisterAgent, token or not.
        let ecs_user = user_ctx(&["ecs:*"]);
        let e = register_err(&service, &ecs_user, "default", "h1", TOKEN).await;
        assert_eq!(e.code, "AccessDeniedException");
        assert_eq!(
            e.message,
            "User: arn:aws:iam::000000000000:user/mallory is not authorized to perform: \
             berth:RegisterAgent on resource: arn:aws:ecs:us-east-1:000000000000:cluster/default \
             because no identity-based policy allows the berth:RegisterAgent action"
        );
        assert!(ecs_user.access.checked());
        // With it (and the token), a user registers a new host.
        let operator = user_ctx(&["berth:RegisterAgent"]);
        let e = register_err(&service, &operator, "default", "h1", "guess").await;
        assert!(e.message.contains("token is wrong"));
        let answer = register_ok(&service, &operator, "h1").await;
        assert!(answer.access_key_id.starts_with(AGENT_KEY_PREFIX));
        assert!(answer
            .container_instance_arn
            .starts_with("arn:aws:ecs:us-east-1:000000000000:container-instance/default/"));
        // Nothing was written by the refused calls: h1 is the only instance.
        let instances = service
            .store
            .range(&Scope::of(&root).instances("default"), None, 100);
        assert_eq!(instances.len(), 1);
    }

    #[tokio::test]
    async fn live_instances_cannot_be_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let service = agent_service(&dir, Some(TOKEN));
        let store = service.store.clone();
        let root = root_ctx();
        let first = register_ok(&service, &root, "h1").await;
        let agent = agent_of(store.as_ref(), &first);

        // Anyone else naming h1 is refused, even root, even with the token.
        for ctx in [user_ctx(&["ecs:*", "berth:RegisterAgent"]), root_ctx()] {
            let e = register_err(&service, &ctx, "default", "h1", TOKEN).await;
            assert_eq!(e.code, "AccessDeniedException");
            assert!(
                e.message.contains(&format!(
                    "aws ecs deregister-container-instance --cluster default --container-instance {} --force",
                    first.container_instance_arn
                )),
                "{}",
                e.message
            );
        }
        // The refusals changed nothing: the agent's credential still works.
        let poll = serde_json::to_vec(&PollTasksRequest::default()).unwrap();
        let agent_poll = agent_of(store.as_ref(), &first);
        service
            .handle(&agent_poll, "PollTasks", &poll)
            .await
            .unwrap();
        assert!(agent_poll.access.checked());

        // The agent itself re-registers: the same instance, and it keeps its
        // credential (the secret is not sent again), so doing it twice (an
        // answer lost on the way) is harmless.
        for _ in 0..2 {
            let again = register_ok(&service, &agent, "h1").await;
            assert_eq!(again.container_instance_arn, first.container_instance_arn);
            assert_eq!(again.access_key_id, first.access_key_id);
            assert_eq!(again.secret_access_key, "");
        }
        assert!(agent_credential(store.as_ref(), &first.access_key_id).is_some());
        let again = first.clone();
        // Its own credential still needs the token.
        let e = register_err(&service, &agent, "default", "h1", "").await;
        assert!(e.message.contains("needs the agent registration token"));

        // An agent credential of h1 cannot register as h2 (live) nor as a
        // new name, nor in another cluster.
        let other = register_ok(&service, &root, "h2").await;
        let e = register_err(&service, &agent, "default", "h2", TOKEN).await;
        assert!(
            e.message.contains(&other.container_instance_arn),
            "{}",
            e.message
        );
        assert!(e.message.contains("--force"));
        let e = register_err(&service, &agent, "default", "h3", TOKEN).await;
        assert_eq!(e.code, "AccessDeniedException");
        assert!(
            e.message.starts_with(&format!(
                "An agent credential can register only its own container instance {} again",
                again.container_instance_arn
            )),
            "{}",
            e.message
        );
        let e = register_err(&service, &agent, "other", "h1", TOKEN).await;
        assert!(e.message.contains("not in this cluster"), "{}", e.message);
        assert!(agent_credential(store.as_ref(), &other.access_key_id).is_some());

        // Once the operator deregisters h1, its name is free again (a new
        // instance), and the old agent credential registers nothing.
        let scope = Scope::of(&root);
        crate::api::instances::deregister(
            store.as_ref(),
            &scope,
            &service.presence,
            berth_model::shapes::ecs::DeregisterContainerInstanceRequest {
                cluster: Some("default".into()),
                container_instance: Some(again.container_instance_arn.clone()),
                force: Some(true),
            },
        )
        .await
        .unwrap();
        let e = register_err(&service, &agent, "default", "h1", TOKEN).await;
        assert!(e.message.contains("deregistered"), "{}", e.message);
        let fresh = register_ok(&service, &root, "h1").await;
        assert_ne!(fresh.container_instance_arn, first.container_instance_arn);
    }
}

#[cfg(test)]
mod poll_tests {
    //! PollTasks reads and watches only the caller's own instance: its
    //! `instance-tasks/` entries and its instance record.

    use std::time::{Duration, Instant};

    use serde_json::json;

    use crate::state::records::decoded;
    use crate::state::tasks::TaskRecord;
    use crate::test_support::{Harness, Instance, Spec};

    /// Starts `n` tasks on `instance` and answers their ARNs.
    async fn start(h: &Harness, instance: &Instance, n: usize) -> Vec<String> {
        let out = h
            .ok(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": vec![instance.arn.clone(); n]}),
            )
            .await;
        out["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
            .collect()
    }

    async fn fleet(h: &Harness) -> (Vec<Instance>, Vec<Vec<String>>) {
        h.task_definition("web", json!({"cpu": 10, "memory": 16}))
            .await;
        let mut instances = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let i = h.instance("default", Spec::default()).await;
            tasks.push(start(h, &i, 5).await);
            instances.push(i);
        }
        (instances, tasks)
    }

    #[tokio::test]
    async fn a_poll_decodes_only_its_own_tasks() {
        let h = Harness::new();
        let (instances, tasks) = fleet(&h).await;
        let before = decoded::of::<TaskRecord>();
        let answer = h.poll(&instances[1], 0, 0).await;
        assert_eq!(decoded::of::<TaskRecord>() - before, 5);
        let mut listed: Vec<String> = answer.tasks.iter().map(|t| t.task_arn.clone()).collect();
        listed.sort();
        let mut own = tasks[1].clone();
        own.sort();
        assert_eq!(listed, own);
        assert_eq!(answer.instance_status, "ACTIVE");
    }

    #[tokio::test]
    async fn a_long_poll_skips_other_instances_changes() {
        let h = Harness::new();
        let (instances, tasks) = fleet(&h).await;
        let (a, b) = (&instances[0], &instances[1]);
        let since = h.poll(a, 0, 0).await.revision;
        // Changes of b's tasks, then one of a's, all after `since`.
        for arn in &tasks[1] {
            h.ok("StopTask", json!({"task": arn})).await;
        }
        h.ok("StopTask", json!({"task": tasks[0][0]})).await;
        let before = decoded::of::<TaskRecord>();
        let answer = h.poll(a, since, 5).await;
        assert_eq!(
            decoded::of::<TaskRecord>() - before,
            5,
            "b's five changes are never decoded"
        );
        let stopping: Vec<&str> = answer
            .tasks
            .iter()
            .filter(|t| t.desired_status == "STOPPED")
            .map(|t| t.task_arn.as_str())
            .collect();
        assert_eq!(stopping, [tasks[0][0].as_str()]);

        // Waiting: b's changes do not wake a; a's own does.
        let since = answer.revision;
        let started = Instant::now();
        let poll = async {
            let answer = h.poll(a, since, 3).await;
            (answer, started.elapsed())
        };
        let writes = async {
            h.ok(
                "StartTask",
                json!({"taskDefinition": "web", "containerInstances": [b.arn]}),
            )
            .await;
            h.report(b, &tasks[1][0], "STOPPED").await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            h.ok("StopTask", json!({"task": tasks[0][1]})).await;
        };
        let ((answer, took), ()) = tokio::join!(poll, writes);
        assert!(took >= Duration::from_millis(400), "woke early: {took:?}");
        assert!(
            took < Duration::from_millis(2500),
            "missed its change: {took:?}"
        );
        assert!(answer
            .tasks
            .iter()
            .any(|t| t.task_arn == tasks[0][1] && t.desired_status == "STOPPED"));
    }

    #[tokio::test]
    async fn a_long_poll_wakes_when_its_instance_changes() {
        let h = Harness::new();
        let (instances, _) = fleet(&h).await;
        let a = &instances[0];
        let since = h.poll(a, 0, 0).await.revision;
        let started = Instant::now();
        let poll = async {
            let answer = h.poll(a, since, 3).await;
            (answer, started.elapsed())
        };
        let writes = async {
            // Another instance draining does not concern a.
            h.ok(
                "UpdateContainerInstancesState",
                json!({"containerInstances": [instances[1].arn], "status": "DRAINING"}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            h.ok(
                "UpdateContainerInstancesState",
                json!({"containerInstances": [a.arn], "status": "DRAINING"}),
            )
            .await;
        };
        let ((answer, took), ()) = tokio::join!(poll, writes);
        assert!(took >= Duration::from_millis(300), "woke early: {took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
        assert_eq!(answer.instance_status, "DRAINING");
    }

    #[tokio::test]
    async fn fargate_tasks_of_other_clusters_reach_their_host() {
        let h = Harness::new();
        let host = h
            .instance(
                "default",
                Spec::default().attribute("berth.capacity.fargate", "shared"),
            )
            .await;
        h.ok("CreateCluster", json!({"clusterName": "web"})).await;
        h.ok(
            "RegisterTaskDefinition",
            json!({"family": "fg", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
        let (arns, failures) = h
            .run(
                json!({"cluster": "web", "taskDefinition": "fg", "launchType": "FARGATE",
                "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-2"]}}}),
            )
            .await;
        assert!(failures.is_empty(), "{failures:?}");
        let answer = h.poll(&host, 0, 0).await;
        assert_eq!(answer.tasks.len(), 1);
        assert_eq!(answer.tasks[0].task_arn, arns[0]);
        // The host's agent reports it; the task in cluster `web` moves on.
        h.report(&host, &arns[0], "RUNNING").await;
        assert_eq!(
            h.task(&arns[0]).task.last_status.as_deref(),
            Some("RUNNING")
        );
        // The host shows the task's resources as used.
        let out = h
            .ok(
                "DescribeContainerInstances",
                json!({"containerInstances": [host.arn]}),
            )
            .await;
        assert_eq!(out["containerInstances"][0]["runningTasksCount"], 1);
    }

    #[tokio::test]
    async fn reports_only_move_forward_and_stamp_the_clock() {
        let h = Harness::new();
        let a = h.instance("default", Spec::default()).await;
        let b = h.instance("default", Spec::default()).await;
        h.task_definition("web", json!({})).await;
        let arns = start(&h, &a, 1).await;
        h.advance(3.0);
        h.report(&a, &arns[0], "RUNNING").await;
        let started = h.now();
        assert_eq!(h.task(&arns[0]).task.started_at, Some(started));
        // A late PENDING report moves nothing back; startedAt is set once.
        h.advance(5.0);
        h.report(&a, &arns[0], "PENDING").await;
        h.report(&a, &arns[0], "RUNNING").await;
        let t = h.task(&arns[0]);
        assert_eq!(t.task.last_status.as_deref(), Some("RUNNING"));
        assert_eq!(t.task.started_at, Some(started));
        // The answer tells the agent what is wanted.
        h.ok("StopTask", json!({"task": arns[0]})).await;
        let answer = h
            .report_with(&a, &arns[0], "RUNNING", json!({}))
            .await
            .unwrap();
        assert_eq!(answer["desiredStatus"], "STOPPED");
        // Another instance's agent cannot report it; nor an unknown status.
        let e = h
            .report_with(&b, &arns[0], "STOPPED", json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "AccessDeniedException");
        let e = h
            .report_with(&a, &arns[0], "FINISHED", json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        h.advance(2.0);
        h.report(&a, &arns[0], "STOPPED").await;
        let t = h.task(&arns[0]);
        assert_eq!(t.task.stopped_at, Some(h.now()));
        assert_eq!(t.task.execution_stopped_at, Some(h.now()));
        // STOPPED is final.
        h.report(&a, &arns[0], "RUNNING").await;
        assert_eq!(
            h.task(&arns[0]).task.last_status.as_deref(),
            Some("STOPPED")
        );
    }
}

#[cfg(test)]
mod scale {
    //! A unit-level measurement (`cargo test -p berth-ecs --release --
    //! --ignored scale --nocapture`): 100 instances, 10,000 tasks.

    use std::time::Instant;

    use serde_json::json;

    use crate::state::index::{self, Held};
    use crate::state::records::decoded;
    use crate::state::tasks::{TaskRecord, TaskStatus};
    use crate::test_support::{Harness, Spec};
    use berth_store::StoreExt;

    /// Fills the cluster to `total` RUNNING tasks, spread over `instances`.
    async fn fill(h: &Harness, instances: &[crate::test_support::Instance], total: usize) {
        let (arns, _) = h.run(json!({"taskDefinition": "web"})).await;
        let template = h.task(&arns[0]);
        let scope = h.scope();
        let mut n = 1;
        while n < total {
            let mut ops = Vec::new();
            for _ in 0..1000.min(total - n) {
                let mut t: TaskRecord = template.clone();
                t.id = berth_util::ids::random_hex(16);
                t.task.task_arn = Some(scope.arn(&format!("task/default/{}", t.id)));
                t.instance_id = Some(instances[n % instances.len()].id.clone());
                t.task.last_status = Some(TaskStatus::Running.into());
                ops.extend(index::put_task(&scope, &t).unwrap());
                n += 1;
            }
            h.store
                .update(move |_| Ok::<_, berth_model::AwsError>((ops.clone(), ())))
                .await
                .unwrap()
                .unwrap();
        }
    }

    async fn run_task_micros(h: &Harness, calls: u32) -> (f64, u64, u64) {
        // The first call after the fill reads every instance's entries once.
        h.run(json!({"taskDefinition": "web"})).await;
        let (t0, h0) = (decoded::of::<TaskRecord>(), decoded::of::<Held>());
        let started = Instant::now();
        for _ in 0..calls {
            h.run(json!({"taskDefinition": "web"})).await;
        }
        let micros = started.elapsed().as_micros() as f64 / f64::from(calls);
        (
            micros,
            (decoded::of::<TaskRecord>() - t0) / u64::from(calls),
            (decoded::of::<Held>() - h0) / u64::from(calls),
        )
    }

    #[tokio::test]
    #[ignore]
    async fn scale() {
        let h = Harness::new();
        let mut instances = Vec::new();
        for _ in 0..100 {
            instances.push(
                h.instance("default", Spec::default().size(1_000_000, 1_000_000))
                    .await,
            );
        }
        h.task_definition("web", json!({"cpu": 1, "memory": 8}))
            .await;
        fill(&h, &instances, 100).await;
        let small = run_task_micros(&h, 50).await;
        fill(&h, &instances, 10_000).await;
        let large = run_task_micros(&h, 50).await;

        let t0 = decoded::of::<TaskRecord>();
        let started = Instant::now();
        let answer = h.poll(&instances[7], 0, 0).await;
        let poll_micros = started.elapsed().as_micros();
        let poll = decoded::of::<TaskRecord>() - t0;

        // A long poll that resumes over 200 changes of other instances'
        // tasks and one of its own.
        let since = answer.revision;
        let others =
            index::instance_tasks(h.store.as_ref(), &h.scope(), "default", &instances[8].id)
                .unwrap();
        for t in others.iter().take(100) {
            h.ok("StopTask", json!({"task": t.arn()})).await;
            h.report(&instances[8], t.arn(), "STOPPED").await;
        }
        h.ok("StopTask", json!({"task": answer.tasks[0].task_arn}))
            .await;
        let t0 = decoded::of::<TaskRecord>();
        let started = Instant::now();
        h.poll(&instances[7], since, 5).await;
        let long_micros = started.elapsed().as_micros();
        let long = decoded::of::<TaskRecord>() - t0;

        let (t0, h0) = (decoded::of::<TaskRecord>(), decoded::of::<Held>());
        h.ok(
            "DescribeContainerInstances",
            json!({"containerInstances": [instances[3].arn]}),
        )
        .await;
        let describe = (decoded::of::<TaskRecord>() - t0, decoded::of::<Held>() - h0);

        println!(
            "RunTask with ~100 tasks: {:.0} us, {} task records and {} index entries decoded",
            small.0, small.1, small.2
        );
        println!(
            "RunTask with ~10,000 tasks: {:.0} us, {} task records and {} index entries decoded",
            large.0, large.1, large.2
        );
        println!("RunTask ratio 10,000/100: {:.2}", large.0 / small.0);
        println!(
            "PollTasks (full list, {} tasks): {} us, {} task records decoded",
            answer.tasks.len(),
            poll_micros,
            poll
        );
        println!(
            "PollTasks resumed over 201 changes (1 own): {} us, {} task records decoded",
            long_micros, long
        );
        println!(
            "DescribeContainerInstances (1 instance): {} task records, {} index entries decoded",
            describe.0, describe.1
        );
    }
}
