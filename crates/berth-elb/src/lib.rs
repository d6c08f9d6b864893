//! Elastic Load Balancing v2 (`elasticloadbalancing`, Query protocol,
//! 2015-12-01) for Berth: the control plane of application and network
//! load balancers.
//!
//! * [`ElbService`] is the [`QueryService`] to register with the gateway
//!   (`aws elbv2 …` and boto3's `elbv2` sign with `elasticloadbalancing`).
//! * Records live in the store under `elb/<account>/<region>/` (see
//!   [`model`]); each load balancer's DNS name is published in Berth's DNS
//!   registry in the same store mutation as the load balancer.
//! * Networks, instances and certificates come through ports the binary
//!   implements: [`LoadBalancerNetworks`], [`InstanceDirectory`],
//!   [`CertificateDirectory`].
//! * The data plane's glue reads [`ElbService::snapshot`], reports health
//!   with [`ElbService::set_target_health`]; ECS registers targets with
//!   [`ElbService::register_targets`] / [`ElbService::deregister_targets`];
//!   [`ElbService::run_timers`] removes draining targets when their
//!   deregistration delay ends.
//!
//! Architecture invariant: a request is validated completely and authorized
//! before state changes; every state-dependent check runs in the same store
//! mutation as the write it guards, so a refused request changes nothing.

mod api;
pub mod attrs;
pub mod model;
mod targets;
mod traffic;
mod wire;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::sync::Arc;

use berth_model::{AwsError, QueryService, RequestContext};
use berth_store::{Store, StoreExt};

pub use model::{HealthState, PREFIX};
pub use targets::{
    ElbSnapshot, SnapshotListener, SnapshotLoadBalancer, SnapshotTarget, SnapshotTargetGroup,
    TargetGroupSummary, TargetStatus,
};
pub use traffic::RuleForward;

use model::{dns_ops, state_key, store_error, State};

/// The load balancers whose listeners use the certificate `cert_arn`, read
/// from `view` (ACM reads it inside DeleteCertificate's own store mutation,
/// so a certificate a listener was just given is refused at once).
pub fn certificate_users(
    view: &dyn berth_store::ReadView,
    account: &str,
    region: &str,
    cert_arn: &str,
) -> Vec<String> {
    State::load(view, account, region)
        .map(|s| s.certificate_users(cert_arn))
        .unwrap_or_default()
}

/// ELBv2's XML namespace.
pub const NAMESPACE: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// The model operations Berth answers only with an error, and why.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    ("AddTrustStoreRevocations", TRUST_STORES),
    ("CreateTrustStore", TRUST_STORES),
    ("DeleteSharedTrustStoreAssociation", TRUST_STORES),
    ("DeleteTrustStore", TRUST_STORES),
    ("DescribeTrustStoreAssociations", TRUST_STORES),
    ("DescribeTrustStoreRevocations", TRUST_STORES),
    ("DescribeTrustStores", TRUST_STORES),
    ("GetTrustStoreCaCertificatesBundle", TRUST_STORES),
    ("GetTrustStoreRevocationContent", TRUST_STORES),
    ("ModifyTrustStore", TRUST_STORES),
    ("RemoveTrustStoreRevocations", TRUST_STORES),
    (
        "DescribeCapacityReservation",
        "Berth's load balancers run inside the Berth server and have no provisioned capacity \
         units to reserve (LCU reservations are an AWS capacity-planning feature).",
    ),
    (
        "ModifyCapacityReservation",
        "Berth's load balancers run inside the Berth server and have no provisioned capacity \
         units to reserve (LCU reservations are an AWS capacity-planning feature).",
    ),
    (
        "ModifyIpPools",
        "Berth has no Amazon VPC IP Address Manager (IPAM): load balancer addresses come from \
         the subnets' own ranges.",
    ),
    (
        "SetIpAddressType",
        "Berth's VPCs are IPv4-only: a load balancer's IP address type is always ipv4.",
    ),
    (
        "GetResourcePolicy",
        "Trust stores (the only ELB resources with resource policies) are not implemented: \
         Berth has no S3 to hold their CA bundles.",
    ),
];

const TRUST_STORES: &str = "Mutual TLS trust stores are not implemented: their CA bundles and \
     revocation lists are read from Amazon S3, which Berth does not serve.";

/// Subnet facts the load balancer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub zone_id: String,
    pub cidr: String,
}

/// Berth's VPCs, as load balancers use them (the binary implements it with
/// berth-ec2).
#[async_trait::async_trait]
pub trait LoadBalancerNetworks: Send + Sync + 'static {
    /// The subnets, in the order given; `SubnetNotFound` for an unknown one.
    fn subnets(
        &self,
        account: &str,
        region: &str,
        ids: &[String],
    ) -> Result<Vec<SubnetInfo>, AwsError>;

    /// Checks the groups exist in `vpc` (`InvalidSecurityGroup`); answers
    /// their ids. An empty `ids` answers the VPC's default group.
    fn security_groups(
        &self,
        account: &str,
        region: &str,
        vpc: &str,
        ids: &[String],
    ) -> Result<Vec<String>, AwsError>;

    /// The VPC's IPv4 CIDR block, `None` when there is no such VPC.
    fn vpc_cidr(&self, account: &str, region: &str, vpc: &str) -> Result<Option<String>, AwsError>;

    /// Creates the load balancer's interface in a subnet (requester-managed,
    /// described `ELB app/NAME/ID`): its id and private address. Idempotent
    /// by description.
    async fn attach(
        &self,
        account: &str,
        region: &str,
        subnet: &str,
        groups: &[String],
        description: &str,
    ) -> Result<(String, Ipv4Addr), AwsError>;

    async fn detach(&self, account: &str, region: &str, eni_id: &str) -> Result<(), AwsError>;

    /// Puts the load balancer's interface `eni_id` in exactly `groups`
    /// (SetSecurityGroups: the groups apply to the interfaces, whose ingress
    /// the data plane enforces and other groups' rules may name).
    async fn set_groups(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
        groups: &[String],
    ) -> Result<(), AwsError>;
}

/// Instance targets: ECS container instances' `ec2InstanceId`s.
pub trait InstanceDirectory: Send + Sync + 'static {
    /// The address of a known container instance of this account/region.
    fn instance_ipv4(&self, account: &str, region: &str, instance_id: &str) -> Option<Ipv4Addr>;
}

/// ACM (or IAM server) certificates that HTTPS/TLS listeners name.
pub trait CertificateDirectory: Send + Sync + 'static {
    /// Ok when the certificate exists and is issued; `CertificateNotFound`
    /// otherwise.
    fn check(&self, account: &str, region: &str, arn: &str) -> Result<(), AwsError>;
}

/// Elastic Load Balancing v2. Register with `GatewayBuilder::query_service`.
pub struct ElbService {
    store: Arc<dyn Store>,
    networks: Arc<dyn LoadBalancerNetworks>,
    instances: Arc<dyn InstanceDirectory>,
    certificates: Arc<dyn CertificateDirectory>,
}

impl ElbService {
    pub fn new(
        store: Arc<dyn Store>,
        networks: Arc<dyn LoadBalancerNetworks>,
        instances: Arc<dyn InstanceDirectory>,
        certificates: Arc<dyn CertificateDirectory>,
    ) -> Self {
        ElbService {
            store,
            networks,
            instances,
            certificates,
        }
    }

    /// The account+region's state as last committed.
    pub(crate) fn read(&self, account: &str, region: &str) -> Result<State, AwsError> {
        State::load(self.store.as_ref(), account, region)
    }

    /// Runs `f` on the account+region's state in one store mutation,
    /// writing the state and the DNS registry entries that follow from it;
    /// nothing when `f` fails or changes nothing.
    pub(crate) async fn mutate<T, F>(
        &self,
        account: &str,
        region: &str,
        mut f: F,
    ) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: FnMut(&mut State) -> Result<T, AwsError> + Send + 'static,
    {
        let account = account.to_string();
        let region = region.to_string();
        let outcome = self
            .store
            .update(move |view| {
                let before = State::load(view, &account, &region)?;
                let mut after = before.clone();
                let value = f(&mut after)?;
                if after == before {
                    return Ok((Vec::new(), value));
                }
                let bytes = serde_json::to_vec(&after)
                    .map_err(|e| AwsError::internal(format!("encoding ELB state: {e}")))?;
                let mut ops = vec![berth_store::Op::put(state_key(&account, &region), bytes)];
                ops.extend(dns_ops(&before, &after, &account, &region));
                Ok((ops, value))
            })
            .await;
        match outcome {
            Ok(Ok((_, value))) => Ok(value),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(store_error(e)),
        }
    }
}

#[async_trait::async_trait]
impl QueryService for ElbService {
    fn signing_name(&self) -> &'static str {
        "elasticloadbalancing"
    }

    fn xml_namespace(&self) -> &'static str {
        NAMESPACE
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let inner = self
            .dispatch(ctx, action, &wire::Params::new(params))
            .await?;
        // Every ELBv2 operation has an output shape, so AWS always answers
        // a `<{Action}Result>` element (SDKs look for it); the gateway leaves
        // it out for an empty result, so an empty one is a blank.
        Ok(if inner.is_empty() { " ".into() } else { inner })
    }
}
