//! The ECS gateway controller (leader work): provisions what ECS gateways
//! imply, as ECS does with a gateway's infrastructure role.
//!
//! `berth-ecs` says what is needed ([`berth_ecs::GatewayControl::jobs`]);
//! this module does it through the same Elastic Load Balancing, EC2 and
//! ACM operations a user would call, with the credentials of a session of
//! the gateway's infrastructure role (minted for `ecs.amazonaws.com`, so
//! the role's trust policy and permissions decide, as on AWS):
//! - per gateway: a security group open on 443 (unless the gateway names
//!   its own `inboundSecurityGroup`), a wildcard ACM certificate for the
//!   gateway's domain, an Application Load Balancer in its subnets and an
//!   HTTPS:443 listener answering 404 to hosts it has no route for;
//! - per route: a target group (`ip`, the connector's health check and
//!   deregistration delay), a `host-header` rule forwarding the route's
//!   host to it, ingress on the service's first security group from the
//!   load balancer's group, and the host's A record in Berth's DNS.
//!
//! ECS's target controller then registers the service's tasks in the
//! route's target group like any load balancer's. Every step finds what
//! an interrupted pass left (by name, host or listener) before creating.

use std::sync::Arc;
use std::time::Duration;

use berth_ecs::gateway_control::{
    route_status, Gateway, ProvisionedAlb, Route, RouteResources, RouteToCreate,
};
use berth_ecs::{GatewayControl, GatewayJob, Scope};
use berth_elb::model::State as ElbState;
use berth_model::authz::{Access, DenialStyle};
use berth_model::dns_registry::{self, HostedZone, RecordSet, RecordType, Routing};
use berth_model::{AwsError, JsonService, Principal, PrincipalKind, QueryService, RequestContext};
use berth_store::{Op, Store, StoreExt};
use sha2::Digest;

/// The services the controller drives.
pub struct GatewayInfrastructure {
    pub store: Arc<dyn Store>,
    pub ecs: GatewayControl,
    pub elb: Arc<berth_elb::ElbService>,
    pub ec2: Arc<berth_ec2::Ec2Service>,
    pub acm: Arc<berth_acm::AcmService>,
    pub iam: Arc<berth_iam::Iam>,
    pub authorizer: Option<Arc<dyn berth_model::authz::Authorizer>>,
}

const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs until the task is aborted: a pass whenever ECS's records change
/// (store watch, at most one pass per half second), and a sweep every few
/// seconds that also retries failed routes.
pub async fn run_gateway_controller(infra: Arc<GatewayInfrastructure>) {
    let mut last_sweep = tokio::time::Instant::now();
    infra.pass(true).await;
    loop {
        let revision = infra.store.revision();
        let store = infra.store.clone();
        let changed = async move {
            match store.watch(GatewayControl::watch_prefix(), revision).await {
                Ok(mut w) => {
                    w.next().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let _ = tokio::time::timeout(SWEEP_EVERY, changed).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sweep = last_sweep.elapsed() >= SWEEP_EVERY;
        if sweep {
            last_sweep = tokio::time::Instant::now();
        }
        infra.pass(sweep).await;
    }
}

/// A request id for the calls ECS makes (ELB and EC2 answer with it).
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let d = digest(&format!("{now}-{n}"));
    format!(
        "{}-{}-{}-{}-{}",
        hex(&d, 4),
        hex(&d[4..], 2),
        hex(&d[6..], 2),
        hex(&d[8..], 2),
        hex(&d[10..], 6)
    )
}

fn hex(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

fn digest(text: &str) -> Vec<u8> {
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

/// A DNS label from a name: lower-case letters, digits and hyphens.
fn label(name: &str, max: usize) -> String {
    let mut out: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// The zone that holds every gateway host of a region.
fn zone(region: &str) -> (String, String) {
    (
        format!("ecs-gateway-{region}"),
        format!("gateway.ecs.{region}.on.aws"),
    )
}

/// The gateway's DNS domain: its name and a digest of its ARN.
fn gateway_domain(gateway: &Gateway, region: &str) -> String {
    domain_of(gateway.name(), gateway.arn(), region)
}

fn domain_of(name: &str, arn: &str, region: &str) -> String {
    format!(
        "{}-{}.{}",
        label(name, 40),
        hex(&digest(arn), 4),
        zone(region).1
    )
}

/// A route's host name: the service's name and the route's id under the
/// gateway's domain (made from the gateway's name and ARN, which the route
/// keeps, so a route can be cleaned up after its gateway is gone).
fn route_host(
    region: &str,
    gateway_name: &str,
    gateway_arn: &str,
    service: &str,
    id: &str,
) -> String {
    format!(
        "{}-{}.{}",
        label(service, 40),
        &id[..8.min(id.len())],
        domain_of(gateway_name, gateway_arn, region)
    )
}

/// Resource names (ELB names are at most 32 characters).
fn lb_name(gateway: &Gateway) -> String {
    format!("ecs-gw-{}", hex(&digest(gateway.arn()), 12))
}

fn group_name(gateway: &Gateway) -> String {
    format!("ecs-gateway-{}", hex(&digest(gateway.arn()), 12))
}

fn tg_name(route_arn: &str) -> String {
    format!("ecs-gw-{}", hex(&digest(route_arn), 12))
}

/// The text of the first `<tag>` in an XML answer.
fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_string())
}

fn params(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl GatewayInfrastructure {
    async fn pass(&self, sweep: bool) {
        let jobs = match self.ecs.jobs(sweep) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(code = %e.code, message = %e.message, "reading gateway work failed");
                return;
            }
        };
        for job in jobs {
            // A route that failed is retried by the sweep, not on every
            // write to ECS's records.
            if let GatewayJob::CreateRoute(route) = &job {
                let failed = route
                    .existing
                    .as_ref()
                    .is_some_and(|r| r.status == route_status::FAILED);
                if failed && !sweep {
                    continue;
                }
            }
            let outcome = match job {
                GatewayJob::CreateRoute(route) => self.create_route(*route).await,
                GatewayJob::RemoveRoute {
                    scope,
                    cluster,
                    service,
                    route,
                } => self.remove_route(&scope, &cluster, &service, &route).await,
                GatewayJob::DeleteGateway { scope, gateway } => {
                    self.delete_gateway(&scope, &gateway).await
                }
                GatewayJob::ApplyUpdate { scope, gateway } => {
                    self.apply_update(&scope, &gateway).await
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(code = %e.code, message = %e.message, "gateway work failed");
            }
        }
    }

    /// The context of ECS acting with the gateway's infrastructure role.
    async fn role_context(
        &self,
        scope: &Scope,
        gateway: &Gateway,
    ) -> Result<RequestContext, AwsError> {
        // IAM is not enforced: ECS acts as the account.
        let Some(authorizer) = &self.authorizer else {
            return Ok(self.account_context(scope));
        };
        let role = gateway
            .gateway
            .infrastructure_role_arn
            .clone()
            .unwrap_or_default();
        let session = self
            .iam
            .issue_service_role_session(
                &scope.account,
                &role,
                "ecs.amazonaws.com",
                "ECSGatewayInfrastructure",
                900,
            )
            .await?;
        let principal = Principal {
            kind: PrincipalKind::AssumedRole,
            arn: session.arn,
            user_id: session.assumed_role_id,
            account_id: scope.account.clone(),
            access_key_id: session.access_key_id,
        };
        Ok(ecs_context(scope, principal, Some(authorizer.clone())))
    }

    async fn elb_call(
        &self,
        ctx: &RequestContext,
        action: &str,
        p: &[(&str, String)],
    ) -> Result<String, AwsError> {
        self.elb.handle(ctx, action, &params(p)).await
    }

    async fn ec2_call(
        &self,
        ctx: &RequestContext,
        action: &str,
        p: &[(&str, String)],
    ) -> Result<String, AwsError> {
        self.ec2.handle(ctx, action, &params(p)).await
    }

    /// An ACM call (JSON in and out), as the elb and ec2 calls above.
    async fn acm_call(
        &self,
        ctx: &RequestContext,
        action: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, AwsError> {
        let out = self
            .acm
            .handle(ctx, action, body.to_string().as_bytes())
            .await?;
        serde_json::from_slice(&out)
            .map_err(|e| AwsError::internal(format!("ACM's answer is unreadable: {e}")))
    }

    fn elb_state(&self, scope: &Scope) -> Result<ElbState, AwsError> {
        ElbState::load(self.store.as_ref(), &scope.account, &scope.region)
    }

    /// The gateway's load balancer, listener, certificate and security
    /// group: the recorded ones, or new ones.
    async fn ensure_alb(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        gateway: &Gateway,
    ) -> Result<ProvisionedAlb, AwsError> {
        if let Some(alb) = gateway.albs.first() {
            return Ok(alb.clone());
        }
        let domain = gateway_domain(gateway, &scope.region);
        let facts = self.ec2.network_facts(&scope.account, &scope.region)?;
        let vpc = gateway.vpc_id.clone();
        let subnets: Vec<String> = match gateway.subnets() {
            s if !s.is_empty() => s,
            _ => facts
                .subnets
                .iter()
                .filter(|s| s.vpc_id == vpc)
                .map(|s| s.id.clone())
                .collect(),
        };
        // The security group.
        let security_group = match gateway.inbound_security_group() {
            Some(g) => g.to_string(),
            None => {
                let name = group_name(gateway);
                let security_group = match facts
                    .groups
                    .iter()
                    .find(|(_, v, n, _)| *v == vpc && *n == name)
                {
                    Some((id, ..)) => id.clone(),
                    None => {
                        let out = self
                            .ec2_call(
                                ctx,
                                "CreateSecurityGroup",
                                &[
                                    ("GroupName", name.clone()),
                                    (
                                        "GroupDescription",
                                        format!(
                                            "Inbound HTTPS to the load balancers of ECS gateway {}",
                                            gateway.name()
                                        ),
                                    ),
                                    ("VpcId", vpc.clone()),
                                ],
                            )
                            .await?;
                        xml_text(&out, "groupId").ok_or_else(|| {
                            AwsError::internal("CreateSecurityGroup answered no groupId")
                        })?
                    }
                };
                let source = if gateway.scheme() == "internal" {
                    facts
                        .vpcs
                        .iter()
                        .find(|(id, _)| *id == vpc)
                        .map(|(_, cidr)| cidr.clone())
                        .unwrap_or_else(|| "10.0.0.0/8".into())
                } else {
                    "0.0.0.0/0".into()
                };
                self.authorize_ingress(ctx, &security_group, 443, Ingress::Cidr(source))
                    .await?;
                security_group
            }
        };
        let name = lb_name(gateway);
        let state = self.elb_state(scope)?;
        let lb_arn = match state.load_balancers.values().find(|lb| lb.name == name) {
            Some(lb) => lb.arn.clone(),
            None => {
                let mut p = vec![
                    ("Name", name.clone()),
                    ("Type", "application".to_string()),
                    ("Scheme", gateway.scheme().to_string()),
                    ("IpAddressType", "ipv4".to_string()),
                    ("SecurityGroups.member.1", security_group.clone()),
                ];
                let keys: Vec<String> = (1..=subnets.len())
                    .map(|i| format!("Subnets.member.{i}"))
                    .collect();
                for (k, s) in keys.iter().zip(&subnets) {
                    p.push((k.as_str(), s.clone()));
                }
                let tag_keys = tag_params(gateway);
                for (k, v) in &tag_keys {
                    p.push((k.as_str(), v.clone()));
                }
                let out = self.elb_call(ctx, "CreateLoadBalancer", &p).await?;
                xml_text(&out, "LoadBalancerArn")
                    .ok_or_else(|| AwsError::internal("CreateLoadBalancer answered no ARN"))?
            }
        };
        self.apply_gateway_attributes(ctx, gateway, lb_arn.as_str())
            .await?;
        let state = self.elb_state(scope)?;
        let (listener_arn, certificate_arn) = match state
            .listeners
            .values()
            .find(|l| l.lb_arn == lb_arn && l.port == 443)
        {
            Some(l) => (l.arn.clone(), l.certificate.clone().unwrap_or_default()),
            None => {
                let certificate = self.request_certificate(ctx, gateway, &domain).await?;
                let out = self
                    .elb_call(
                        ctx,
                        "CreateListener",
                        &[
                            ("LoadBalancerArn", lb_arn.clone()),
                            ("Protocol", "HTTPS".into()),
                            ("Port", "443".into()),
                            ("Certificates.member.1.CertificateArn", certificate.clone()),
                            ("DefaultActions.member.1.Type", "fixed-response".into()),
                            (
                                "DefaultActions.member.1.FixedResponseConfig.StatusCode",
                                "404".into(),
                            ),
                            (
                                "DefaultActions.member.1.FixedResponseConfig.ContentType",
                                "text/plain".into(),
                            ),
                            (
                                "DefaultActions.member.1.FixedResponseConfig.MessageBody",
                                "No service of this gateway answers this host name.".into(),
                            ),
                        ],
                    )
                    .await?;
                let arn = xml_text(&out, "ListenerArn")
                    .ok_or_else(|| AwsError::internal("CreateListener answered no ARN"))?;
                (arn, certificate)
            }
        };
        let alb = ProvisionedAlb {
            load_balancer_arn: lb_arn,
            listener_arn,
            certificate_arn,
            security_group,
            domain,
        };
        self.ecs
            .record_alb(
                scope,
                gateway.name(),
                alb.clone(),
                gateway.gateway.updated_at,
            )
            .await?;
        Ok(alb)
    }

    /// What a gateway propagates to its load balancers: the desync
    /// mitigation mode and deletion protection.
    async fn apply_gateway_attributes(
        &self,
        ctx: &RequestContext,
        gateway: &Gateway,
        lb_arn: &str,
    ) -> Result<String, AwsError> {
        self.elb_call(
            ctx,
            "ModifyLoadBalancerAttributes",
            &[
                ("LoadBalancerArn", lb_arn.to_string()),
                (
                    "Attributes.member.1.Key",
                    "routing.http.desync_mitigation_mode".into(),
                ),
                (
                    "Attributes.member.1.Value",
                    gateway.http_desync().to_string(),
                ),
                (
                    "Attributes.member.2.Key",
                    "deletion_protection.enabled".into(),
                ),
                (
                    "Attributes.member.2.Value",
                    gateway.deletion_protection().to_string(),
                ),
            ],
        )
        .await
    }

    /// The issued certificate for `*.<domain>` that an earlier pass
    /// requested, if any.
    async fn find_certificate(
        &self,
        ctx: &RequestContext,
        domain: &str,
    ) -> Result<Option<String>, AwsError> {
        let wildcard = format!("*.{domain}");
        let mut token: Option<String> = None;
        loop {
            let mut body = serde_json::json!({"MaxItems": 1000});
            if let Some(t) = &token {
                body["NextToken"] = serde_json::Value::String(t.clone());
            }
            let page = self.acm_call(ctx, "ListCertificates", body).await?;
            let found = page["CertificateSummaryList"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["DomainName"].as_str() == Some(wildcard.as_str()))
                .and_then(|c| c["CertificateArn"].as_str().map(str::to_string));
            if found.is_some() {
                return Ok(found);
            }
            match page["NextToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(None),
            }
        }
    }

    async fn request_certificate(
        &self,
        ctx: &RequestContext,
        gateway: &Gateway,
        domain: &str,
    ) -> Result<String, AwsError> {
        // A pass that stopped after requesting one left it: reuse it
        // rather than request one per retry.
        if let Some(arn) = self.find_certificate(ctx, domain).await? {
            return Ok(arn);
        }
        let mut body = serde_json::json!({
            "DomainName": format!("*.{domain}"),
            "SubjectAlternativeNames": [domain],
            "ValidationMethod": "DNS",
        });
        if gateway.propagates_tags() && !gateway.tags().is_empty() {
            body["Tags"] = serde_json::Value::Array(
                gateway
                    .tags()
                    .iter()
                    .map(|t| serde_json::json!({"Key": t.key, "Value": t.value.clone().unwrap_or_default()}))
                    .collect(),
            );
        }
        let value = self.acm_call(ctx, "RequestCertificate", body).await?;
        value["CertificateArn"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AwsError::internal("RequestCertificate answered no ARN"))
    }

    async fn authorize_ingress(
        &self,
        ctx: &RequestContext,
        group: &str,
        port: i32,
        from: Ingress,
    ) -> Result<(), AwsError> {
        let mut p = vec![
            ("GroupId", group.to_string()),
            ("IpPermissions.1.IpProtocol", "tcp".to_string()),
            ("IpPermissions.1.FromPort", port.to_string()),
            ("IpPermissions.1.ToPort", port.to_string()),
        ];
        match from {
            Ingress::Cidr(cidr) => p.push(("IpPermissions.1.IpRanges.1.CidrIp", cidr)),
            Ingress::Group(g) => p.push(("IpPermissions.1.Groups.1.GroupId", g)),
        }
        match self
            .ec2_call(ctx, "AuthorizeSecurityGroupIngress", &p)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == "InvalidPermission.Duplicate" => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_route(&self, job: RouteToCreate) -> Result<(), AwsError> {
        let RouteToCreate {
            scope,
            cluster,
            service,
            gateway,
            wanted,
            connector,
            existing,
            id,
            arn,
            target,
            vpc_id,
            service_security_groups,
            connector_fingerprint,
        } = job;
        let host = route_host(&scope.region, gateway.name(), gateway.arn(), &service, &id);
        let mut route = existing.unwrap_or_else(|| Route {
            id: id.clone(),
            arn: arn.clone(),
            gateway: wanted.gateway.clone(),
            gateway_arn: gateway.arn().to_string(),
            port_name: wanted.port_name.clone(),
            access_type: wanted.access_type.clone(),
            status: route_status::CREATING.into(),
            ..Route::default()
        });
        let Some((container_name, container_port)) = target else {
            route.status = route_status::FAILED.into();
            route.status_reason = Some(format!(
                "The service's task definition defines no container port named {}.",
                wanted.port_name
            ));
            return self
                .ecs
                .record_route(&scope, &cluster, &service, route)
                .await;
        };
        route.container_name = container_name;
        route.container_port = container_port;
        let result = self
            .provision_route(
                &scope,
                &gateway,
                &route,
                &host,
                &connector,
                &vpc_id,
                &service_security_groups,
            )
            .await;
        match result {
            Ok(resources) => {
                route.connector = connector_fingerprint;
                route.status = route_status::ACTIVE.into();
                route.status_reason = None;
                route.host = host;
                route.resources = Some(resources);
            }
            Err(e) => {
                if route.status == route_status::FAILED
                    && route.status_reason.as_deref() == Some(&format!("{}: {}", e.code, e.message))
                {
                    return Ok(());
                }
                route.status = route_status::FAILED.into();
                route.status_reason = Some(format!("{}: {}", e.code, e.message));
            }
        }
        self.ecs
            .record_route(&scope, &cluster, &service, route)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn provision_route(
        &self,
        scope: &Scope,
        gateway: &Gateway,
        route: &Route,
        host: &str,
        connector: &berth_model::shapes::ecs::GatewayConnector,
        vpc_id: &str,
        service_groups: &[String],
    ) -> Result<RouteResources, AwsError> {
        let ctx = self.role_context(scope, gateway).await?;
        let alb = self.ensure_alb(&ctx, scope, gateway).await?;
        let group = self
            .ensure_target_group(&ctx, scope, route, connector, vpc_id)
            .await?;
        let state = self.elb_state(scope)?;
        let rule_arn = match find_rule(&state, &alb.listener_arn, host) {
            Some(arn) => arn,
            None => {
                let priority = state
                    .rules_of(&alb.listener_arn)
                    .map(|r| r.priority)
                    .filter(|p| *p < 50_000)
                    .max()
                    .unwrap_or(0)
                    + 1;
                let out = self
                    .elb_call(
                        &ctx,
                        "CreateRule",
                        &[
                            ("ListenerArn", alb.listener_arn.clone()),
                            ("Priority", priority.to_string()),
                            ("Conditions.member.1.Field", "host-header".into()),
                            (
                                "Conditions.member.1.HostHeaderConfig.Values.member.1",
                                host.to_string(),
                            ),
                            ("Actions.member.1.Type", "forward".into()),
                            ("Actions.member.1.TargetGroupArn", group.clone()),
                        ],
                    )
                    .await?;
                xml_text(&out, "RuleArn")
                    .ok_or_else(|| AwsError::internal("CreateRule answered no ARN"))?
            }
        };
        self.publish_host(scope, &alb.load_balancer_arn, host, &route.arn)
            .await?;
        // The service's tasks must admit the load balancer: through their
        // first group, or the VPC's default group they are in without one.
        // Last, so a route that failed holds no ingress it cannot name.
        let service_group = match service_groups.first() {
            Some(g) => Some(g.clone()),
            None => self
                .ec2
                .network_facts(&scope.account, &scope.region)?
                .groups
                .into_iter()
                .find(|(_, vpc, _, default)| *default && vpc == vpc_id)
                .map(|(id, ..)| id),
        };
        if let Some(g) = &service_group {
            self.authorize_ingress(
                &ctx,
                g,
                route.container_port,
                Ingress::Group(alb.security_group.clone()),
            )
            .await?;
        }
        Ok(RouteResources {
            load_balancer_arn: alb.load_balancer_arn,
            listener_arn: alb.listener_arn,
            listener_rule_arn: rule_arn,
            target_group_arn: group,
            certificate_arn: alb.certificate_arn,
            load_balancer_security_group: alb.security_group,
            service_security_group: service_group,
        })
    }

    /// The route's target group, made or found by name, with the
    /// connector's health check and deregistration delay applied (ELB's
    /// defaults for what the connector leaves out), so a changed
    /// connector reaches an existing group.
    async fn ensure_target_group(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        route: &Route,
        connector: &berth_model::shapes::ecs::GatewayConnector,
        vpc_id: &str,
    ) -> Result<String, AwsError> {
        let name = tg_name(&route.arn);
        let health = health_params(connector);
        let existing = self
            .elb_state(scope)?
            .target_groups
            .values()
            .find(|t| t.name == name)
            .map(|t| t.arn.clone());
        let arn = match existing {
            Some(arn) => {
                let mut p = vec![("TargetGroupArn", arn.clone())];
                p.extend(health.iter().map(|(k, v)| (*k, v.clone())));
                self.elb_call(ctx, "ModifyTargetGroup", &p).await?;
                arn
            }
            None => {
                let mut p = vec![
                    ("Name", name),
                    ("Protocol", "HTTP".to_string()),
                    ("Port", route.container_port.to_string()),
                    ("VpcId", vpc_id.to_string()),
                    ("TargetType", "ip".to_string()),
                ];
                p.extend(health.iter().map(|(k, v)| (*k, v.clone())));
                let out = self.elb_call(ctx, "CreateTargetGroup", &p).await?;
                xml_text(&out, "TargetGroupArn")
                    .ok_or_else(|| AwsError::internal("CreateTargetGroup answered no ARN"))?
            }
        };
        let delay = connector
            .deregistration_delay
            .as_ref()
            .and_then(|d| d.timeout_seconds)
            .unwrap_or(300);
        self.elb_call(
            ctx,
            "ModifyTargetGroupAttributes",
            &[
                ("TargetGroupArn", arn.clone()),
                (
                    "Attributes.member.1.Key",
                    "deregistration_delay.timeout_seconds".into(),
                ),
                ("Attributes.member.1.Value", delay.to_string()),
            ],
        )
        .await?;
        Ok(arn)
    }

    /// The route's host name answers the load balancer's addresses.
    async fn publish_host(
        &self,
        scope: &Scope,
        lb_arn: &str,
        host: &str,
        route_arn: &str,
    ) -> Result<(), AwsError> {
        let state = self.elb_state(scope)?;
        let addresses: Vec<String> = state
            .load_balancers
            .get(lb_arn)
            .map(|lb| lb.zones.iter().map(|z| z.address.clone()).collect())
            .unwrap_or_default();
        let (zone_id, apex) = zone(&scope.region);
        let hosted = HostedZone {
            id: zone_id.clone(),
            name: apex,
            vpc_ids: Vec::new(),
            account: scope.account.clone(),
            region: scope.region.clone(),
            publisher: "ecs".into(),
            negative_ttl: 60,
        };
        let set = RecordSet {
            name: dns_registry::normalize_name(host),
            record_type: RecordType::A,
            ttl: 60,
            values: addresses,
            routing: Routing::Multivalue,
            weight: None,
            healthy: true,
            source: format!("ecs:{route_arn}"),
        };
        let zone_bytes =
            serde_json::to_vec(&hosted).map_err(|e| AwsError::internal(e.to_string()))?;
        let set_bytes = serde_json::to_vec(&set).map_err(|e| AwsError::internal(e.to_string()))?;
        let record_key = dns_registry::record_key(&zone_id, host, RecordType::A, "gateway");
        self.store
            .update(move |view| {
                let mut ops = Vec::new();
                if view.get(&dns_registry::zone_key(&zone_id)).is_none() {
                    ops.push(Op::put(
                        dns_registry::zone_key(&zone_id),
                        zone_bytes.clone(),
                    ));
                }
                if view.get(&record_key).map(|kv| kv.value) != Some(set_bytes.clone().into()) {
                    ops.push(Op::put(record_key.clone(), set_bytes.clone()));
                }
                Ok::<_, AwsError>((ops, ()))
            })
            .await
            .map_err(|e| AwsError::internal(format!("publishing the gateway host: {e}")))??;
        Ok(())
    }

    /// Removes what a route was given (recorded, or found by the names an
    /// interrupted or failed pass used), as the account: ECS cleans up what
    /// it made even when the gateway's role can no longer do it.
    async fn remove_route(
        &self,
        scope: &Scope,
        cluster: &str,
        service: &str,
        route: &Route,
    ) -> Result<(), AwsError> {
        let ctx = self.account_context(scope);
        let state = self.elb_state(scope)?;
        let host = route_host(
            &scope.region,
            &route.gateway,
            &route.gateway_arn,
            service,
            &route.id,
        );
        let rules: Vec<String> = state
            .rules
            .values()
            .filter(|r| {
                r.conditions.iter().any(|c| {
                    c.field == "host-header"
                        && c.values.iter().any(|v| v.eq_ignore_ascii_case(&host))
                })
            })
            .map(|r| r.arn.clone())
            .collect();
        for rule in rules {
            ignore_missing(
                self.elb_call(&ctx, "DeleteRule", &[("RuleArn", rule)])
                    .await,
            )?;
        }
        let name = tg_name(&route.arn);
        if let Some(tg) = state.target_groups.values().find(|t| t.name == name) {
            ignore_missing(
                self.elb_call(
                    &ctx,
                    "DeleteTargetGroup",
                    &[("TargetGroupArn", tg.arn.clone())],
                )
                .await,
            )?;
        }
        // The ingress the route added goes unless another route needs it.
        if let Some(resources) = &route.resources {
            if let Some(group) = &resources.service_security_group {
                let lb_group = &resources.load_balancer_security_group;
                if !self
                    .ecs
                    .ingress_in_use(scope, group, lb_group, route.container_port, &route.id)
                {
                    let revoked = self
                        .ec2_call(
                            &ctx,
                            "RevokeSecurityGroupIngress",
                            &[
                                ("GroupId", group.clone()),
                                ("IpPermissions.1.IpProtocol", "tcp".into()),
                                ("IpPermissions.1.FromPort", route.container_port.to_string()),
                                ("IpPermissions.1.ToPort", route.container_port.to_string()),
                                ("IpPermissions.1.Groups.1.GroupId", lb_group.clone()),
                            ],
                        )
                        .await;
                    match revoked {
                        Ok(_) => {}
                        Err(e)
                            if e.code.starts_with("InvalidPermission.NotFound")
                                || e.code.starts_with("InvalidGroup.NotFound") => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let (zone_id, _) = zone(&scope.region);
        let key = dns_registry::record_key(&zone_id, &host, RecordType::A, "gateway");
        self.store
            .update(move |view| {
                let ops = if view.get(&key).is_some() {
                    vec![Op::delete(key.clone())]
                } else {
                    Vec::new()
                };
                Ok::<_, AwsError>((ops, ()))
            })
            .await
            .map_err(|e| AwsError::internal(format!("removing the gateway host: {e}")))??;
        self.ecs
            .forget_route(scope, cluster, service, &route.id)
            .await
    }

    /// ECS acting with the account's own authority (no IAM decision).
    fn account_context(&self, scope: &Scope) -> RequestContext {
        let root = Principal {
            kind: PrincipalKind::Root,
            arn: format!("arn:aws:iam::{}:root", scope.account),
            user_id: scope.account.clone(),
            account_id: scope.account.clone(),
            access_key_id: String::new(),
        };
        ecs_context(scope, root, None)
    }

    async fn delete_gateway(&self, scope: &Scope, gateway: &Gateway) -> Result<(), AwsError> {
        // The routes went with the associations; what the gateway made
        // for itself goes now, found by the names it was made under as
        // well as recorded (a pass may have stopped before recording).
        // ECS deletes with the account's authority: the gateway, and with
        // it its role's purpose, is gone.
        let ctx = self.account_context(scope);
        let state = self.elb_state(scope)?;
        let mut balancers: Vec<String> = gateway
            .albs
            .iter()
            .map(|a| a.load_balancer_arn.clone())
            .collect();
        let name = lb_name(gateway);
        balancers.extend(
            state
                .load_balancers
                .values()
                .filter(|lb| lb.name == name)
                .map(|lb| lb.arn.clone()),
        );
        balancers.sort();
        balancers.dedup();
        for arn in balancers
            .iter()
            .filter(|a| state.load_balancers.contains_key(*a))
        {
            self.elb_call(
                &ctx,
                "ModifyLoadBalancerAttributes",
                &[
                    ("LoadBalancerArn", arn.clone()),
                    (
                        "Attributes.member.1.Key",
                        "deletion_protection.enabled".into(),
                    ),
                    ("Attributes.member.1.Value", "false".into()),
                ],
            )
            .await?;
            ignore_missing(
                self.elb_call(
                    &ctx,
                    "DeleteLoadBalancer",
                    &[("LoadBalancerArn", arn.clone())],
                )
                .await,
            )?;
        }
        let mut certificates: Vec<String> = gateway
            .albs
            .iter()
            .map(|a| a.certificate_arn.clone())
            .collect();
        if let Some(arn) = self
            .find_certificate(&ctx, &gateway_domain(gateway, &scope.region))
            .await?
        {
            certificates.push(arn);
        }
        certificates.sort();
        certificates.dedup();
        for arn in certificates.into_iter().filter(|a| !a.is_empty()) {
            let body = serde_json::json!({"CertificateArn": arn});
            match self.acm_call(&ctx, "DeleteCertificate", body).await {
                Ok(_) => {}
                Err(e) if e.code == "ResourceNotFoundException" => {}
                Err(e) => return Err(e),
            }
        }
        let own_group = group_name(gateway);
        let groups: Vec<String> = self
            .ec2
            .network_facts(&scope.account, &scope.region)?
            .groups
            .into_iter()
            .filter(|(_, vpc, n, _)| *n == own_group && *vpc == gateway.vpc_id)
            .map(|(id, ..)| id)
            .collect();
        for group in groups {
            match self
                .ec2_call(&ctx, "DeleteSecurityGroup", &[("GroupId", group)])
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == "InvalidGroup.NotFound" => {}
                Err(e) => return Err(e),
            }
        }
        self.ecs.finish_delete(scope, gateway.name()).await
    }

    async fn apply_update(&self, scope: &Scope, gateway: &Gateway) -> Result<(), AwsError> {
        let mut failures = Vec::new();
        match self.role_context(scope, gateway).await {
            Ok(ctx) => {
                for alb in &gateway.albs {
                    let mut errors = Vec::new();
                    let attributes = self
                        .apply_gateway_attributes(&ctx, gateway, alb.load_balancer_arn.as_str())
                        .await;
                    if let Err(e) = attributes {
                        errors.push(operation_error(
                            "elasticloadbalancing:ModifyLoadBalancerAttributes",
                            &e,
                        ));
                    }
                    if let Some(group) = gateway.inbound_security_group() {
                        if group != alb.security_group {
                            let set = self
                                .elb_call(
                                    &ctx,
                                    "SetSecurityGroups",
                                    &[
                                        ("LoadBalancerArn", alb.load_balancer_arn.clone()),
                                        ("SecurityGroups.member.1", group.to_string()),
                                    ],
                                )
                                .await;
                            if let Err(e) = set {
                                errors.push(operation_error(
                                    "elasticloadbalancing:SetSecurityGroups",
                                    &e,
                                ));
                            }
                        }
                    }
                    if !errors.is_empty() {
                        failures.push(berth_model::shapes::ecs::GatewayResourceFailure {
                            arn: Some(alb.load_balancer_arn.clone()),
                            errors: Some(errors),
                        });
                    }
                }
            }
            Err(e) => failures.push(berth_model::shapes::ecs::GatewayResourceFailure {
                arn: gateway.gateway.infrastructure_role_arn.clone(),
                errors: Some(vec![operation_error("sts:AssumeRole", &e)]),
            }),
        }
        self.ecs
            .finish_update(scope, gateway.name(), gateway.gateway.updated_at, failures)
            .await
    }
}

/// The context of a call ECS makes as `principal`, decided by
/// `authorizer` (none: allowed).
fn ecs_context(
    scope: &Scope,
    principal: Principal,
    authorizer: Option<Arc<dyn berth_model::authz::Authorizer>>,
) -> RequestContext {
    RequestContext {
        request_id: request_id(),
        account_id: scope.account.clone(),
        region: scope.region.clone(),
        principal,
        source_ip: None,
        secure_transport: true,
        access: Access::new(authorizer, DenialStyle::Query, false),
    }
}

enum Ingress {
    Cidr(String),
    Group(String),
}

fn operation_error(
    operation: &str,
    e: &AwsError,
) -> berth_model::shapes::ecs::GatewayOperationError {
    berth_model::shapes::ecs::GatewayOperationError {
        operation: Some(operation.to_string()),
        code: Some(e.code.to_string()),
        message: Some(e.message.clone()),
    }
}

fn ignore_missing(result: Result<String, AwsError>) -> Result<(), AwsError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code.ends_with("NotFound") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The gateway's tags as ELB's `Tags.member.N` parameters (when it
/// propagates them).
fn tag_params(gateway: &Gateway) -> Vec<(String, String)> {
    if !gateway.propagates_tags() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, tag) in gateway.tags().iter().enumerate() {
        out.push((
            format!("Tags.member.{}.Key", i + 1),
            tag.key.clone().unwrap_or_default(),
        ));
        out.push((
            format!("Tags.member.{}.Value", i + 1),
            tag.value.clone().unwrap_or_default(),
        ));
    }
    out
}

/// A connector's health check as ELB's target-group parameters, with
/// ELB's defaults for an HTTP target group where it says nothing.
fn health_params(
    connector: &berth_model::shapes::ecs::GatewayConnector,
) -> Vec<(&'static str, String)> {
    let h = connector.health_check.clone().unwrap_or_default();
    vec![
        (
            "HealthCheckProtocol",
            h.health_check_protocol.unwrap_or_else(|| "HTTP".into()),
        ),
        (
            "HealthCheckPath",
            h.health_check_path.unwrap_or_else(|| "/".into()),
        ),
        (
            "HealthCheckPort",
            h.health_check_port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "traffic-port".into()),
        ),
        (
            "HealthCheckIntervalSeconds",
            h.health_check_interval_seconds.unwrap_or(30).to_string(),
        ),
        (
            "HealthCheckTimeoutSeconds",
            h.health_check_timeout_seconds.unwrap_or(5).to_string(),
        ),
        (
            "HealthyThresholdCount",
            h.healthy_threshold_count.unwrap_or(5).to_string(),
        ),
        (
            "UnhealthyThresholdCount",
            h.unhealthy_threshold_count.unwrap_or(2).to_string(),
        ),
        (
            "Matcher.HttpCode",
            h.matcher
                .and_then(|m| m.http_code)
                .unwrap_or_else(|| "200".into()),
        ),
    ]
}

/// The rule of `listener` that matches exactly `host`.
fn find_rule(state: &ElbState, listener: &str, host: &str) -> Option<String> {
    state
        .rules_of(listener)
        .find(|r| {
            r.conditions.iter().any(|c| {
                c.field == "host-header" && c.values.iter().any(|v| v.eq_ignore_ascii_case(host))
            })
        })
        .map(|r| r.arn.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_aws_limits() {
        let gateway = Gateway {
            gateway: berth_model::shapes::ecs::Gateway {
                name: Some("A_Very_Long_Gateway_Name_That_Goes_On_And_On_For_Ever_And_Ever".into()),
                gateway_arn: Some("arn:aws:ecs:us-east-1:000000000000:gateway/x".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(lb_name(&gateway).len() <= 32);
        assert!(tg_name("arn:aws:ecs:us-east-1:0:gateway-route/c/s/0123").len() <= 32);
        let domain = gateway_domain(&gateway, "us-east-1");
        let first = domain.split('.').next().unwrap_or_default();
        assert!(first.len() <= 63 && !first.contains('_'), "{domain}");
        assert!(domain.ends_with(".gateway.ecs.us-east-1.on.aws"));
        assert_eq!(label("Web__App-", 40), "web--app");
    }

    #[test]
    fn xml_text_reads_the_first_element() {
        assert_eq!(
            xml_text(
                "<a><LoadBalancerArn>arn:1</LoadBalancerArn></a>",
                "LoadBalancerArn"
            )
            .as_deref(),
            Some("arn:1")
        );
        assert_eq!(xml_text("<a/>", "X"), None);
    }
}
