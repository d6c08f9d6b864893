//! The slice of Amazon EC2 Berth's `awsvpc` networking needs: VPCs, subnets,
//! security groups and the network interfaces of tasks, over the EC2 Query
//! protocol (`ec2` signing name, version 2016-11-15).
//!
//! * [`Ec2Service`] is the [`berth_model::QueryService`] to register with the
//!   gateway; it also gives other components [`Ec2Service::create_task_eni`],
//!   [`Ec2Service::delete_eni`] and [`Ec2Service::security_group_rules`].
//! * Every account+region gets a default VPC (`172.31.0.0/16`), one default
//!   subnet per zone (`<region>a`, `b`, `c`) and the VPC's `default` group,
//!   created on its first EC2 call or by [`Ec2Service::ensure_defaults`].
//! * EC2 actions Berth does not implement answer `UnsupportedOperation`.
//!
//! Architecture invariant: a request is validated completely before state
//! changes, and every state-dependent check runs in the same store mutation
//! as the write it guards, so a refused request changes nothing.

mod access;
mod api;
mod meta;
mod model;
mod net;
mod not_implemented;
mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use berth_model::agent_protocol::{GetNetworkPolicyResponse, NetworkRule};
use berth_model::{AwsError, QueryService, RequestContext};
use berth_store::{Store, StoreExt};

pub use api::IMPLEMENTED;
pub use model::{Peer, SgRule, DEFAULT_VPC_CIDR};
pub use not_implemented::NOT_IMPLEMENTED;

use model::{
    ipv4, new_id, new_mac, store_error, Cidr, Ec2Error, EniRecord, Scope, State, MAX_GROUPS_PER_ENI,
};

/// EC2's XML namespace.
pub const EC2_NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Every action of the EC2 model (botocore's `ec2` 2016-11-15), one a line.
const MODEL_OPERATIONS: &str = include_str!("operations.txt");

/// A network interface created for a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eni {
    /// `eni-…`.
    pub id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    /// The VPC's CIDR block.
    pub vpc_cidr: String,
    pub availability_zone: String,
    /// The primary private IPv4 address.
    pub private_ip: String,
    /// The subnet's CIDR block (the interface's prefix length).
    pub subnet_cidr: String,
    /// The subnet's router, its network address + 1, as in AWS.
    pub gateway: String,
    pub mac: String,
    pub security_group_ids: Vec<String>,
    pub description: String,
}

/// A subnet an ECS task may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSubnet {
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
}

/// An account+region's VPCs, subnets and groups (see
/// [`Ec2Service::network_facts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkFacts {
    /// (id, primary CIDR block).
    pub vpcs: Vec<(String, String)>,
    pub default_vpc: Option<String>,
    pub subnets: Vec<SubnetFacts>,
    /// (id, VPC id, name, is the VPC's default group).
    pub groups: Vec<(String, String, String, bool)>,
}

/// One subnet of [`NetworkFacts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetFacts {
    pub id: String,
    pub vpc_id: String,
    pub cidr: String,
    pub availability_zone: String,
    /// `use1-az1` …
    pub zone_id: String,
}

/// A security group's rules, as an enforcer needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRules {
    pub group_id: String,
    pub vpc_id: String,
    pub ingress: Vec<SgRule>,
    pub egress: Vec<SgRule>,
}

/// A stored interface as its users see it, with its subnet's block and
/// router (the block's address + 1, as in AWS) and its VPC's block.
fn eni_of(record: &EniRecord, subnet_cidr: &str, cidr: Cidr, vpc_cidr: &str) -> Eni {
    Eni {
        id: record.id.clone(),
        subnet_id: record.subnet_id.clone(),
        vpc_id: record.vpc_id.clone(),
        vpc_cidr: vpc_cidr.to_string(),
        availability_zone: record.availability_zone.clone(),
        private_ip: record.private_ip.clone(),
        subnet_cidr: subnet_cidr.to_string(),
        gateway: ipv4(cidr.addr.saturating_add(1)),
        mac: record.mac.clone(),
        security_group_ids: record.group_ids.clone(),
        description: record.description.clone(),
    }
}

/// The requester of load balancers' interfaces, as EC2 shows it.
pub const LOAD_BALANCER_REQUESTER: &str = "amazon-elb";

/// Who manages an interface that is not a task's.
struct ManagedInterface {
    requester_id: String,
    interface_type: Option<String>,
}

/// The EC2 service. Register with `GatewayBuilder::query_service`.
pub struct Ec2Service {
    store: Arc<dyn Store>,
}

impl Ec2Service {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ec2Service { store }
    }

    /// Runs `f` on the account+region's state (defaults seeded) in one store
    /// mutation, writing what it changed; nothing when it fails.
    pub(crate) async fn mutate<T, F>(&self, scope: &Scope, mut f: F) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: FnMut(&mut State) -> Result<T, AwsError> + Send + 'static,
    {
        let scope = scope.clone();
        let outcome = self
            .store
            .update(move |view| {
                let before = State::load(view, &scope)?;
                let mut after = before.clone();
                after.seed_defaults(&scope.region);
                after.ensure_main_tables();
                let value = f(&mut after)?;
                after.prune_tags();
                Ok((after.diff(&before, &scope)?, value))
            })
            .await;
        match outcome {
            Ok(Ok((_, value))) => Ok(value),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The account+region's state as last committed.
    pub(crate) fn read(&self, scope: &Scope) -> Result<State, AwsError> {
        State::load(self.store.as_ref(), scope)
    }

    /// Creates the default VPC, subnets and security group of an
    /// account+region unless they were created before (even if since
    /// deleted). Idempotent; one store mutation.
    pub async fn ensure_defaults(&self, account: &str, region: &str) -> Result<(), AwsError> {
        let scope = Scope::new(account, region);
        if self.store.get(&scope.defaults_key()).is_some() {
            // VPCs stored before route tables were kept get their main one.
            let mut state = self.read(&scope)?;
            if !state.ensure_main_tables() {
                return Ok(());
            }
        }
        self.mutate(&scope, |_| Ok(())).await
    }

    /// Creates a network interface for a task in `subnet_id` with the next
    /// free private address (the first four and the broadcast address are
    /// AWS's), in `security_group_ids` (the VPC's `default` group when empty).
    pub async fn create_task_eni(
        &self,
        account: &str,
        region: &str,
        subnet_id: &str,
        security_group_ids: &[String],
        description: &str,
    ) -> Result<Eni, AwsError> {
        self.create_eni(
            account,
            region,
            subnet_id,
            security_group_ids,
            description,
            None,
        )
        .await
    }

    /// Creates a load balancer's interface in `subnet_id` (as
    /// [`Self::create_task_eni`], requester `amazon-elb`; a network load
    /// balancer's has the interface type `network_load_balancer`). Its
    /// address is served from the server's host: awsvpc tasks of the VPC
    /// learn it through their network policy's `hosted_addresses`.
    pub async fn create_load_balancer_eni(
        &self,
        account: &str,
        region: &str,
        subnet_id: &str,
        security_group_ids: &[String],
        description: &str,
        network: bool,
    ) -> Result<Eni, AwsError> {
        let managed = ManagedInterface {
            requester_id: LOAD_BALANCER_REQUESTER.into(),
            interface_type: network.then(|| "network_load_balancer".to_string()),
        };
        self.create_eni(
            account,
            region,
            subnet_id,
            security_group_ids,
            description,
            Some(managed),
        )
        .await
    }

    async fn create_eni(
        &self,
        account: &str,
        region: &str,
        subnet_id: &str,
        security_group_ids: &[String],
        description: &str,
        managed: Option<ManagedInterface>,
    ) -> Result<Eni, AwsError> {
        let scope = Scope::new(account, region);
        let id = new_id("eni");
        let mac = new_mac();
        let subnet_id = subnet_id.to_string();
        let mut groups: Vec<String> = Vec::new();
        for g in security_group_ids {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        if groups.len() > MAX_GROUPS_PER_ENI {
            return Err(Ec2Error::Other(
                "SecurityGroupsPerInterfaceLimitExceeded",
                format!(
                    "The maximum number of security groups per interface has been reached ({MAX_GROUPS_PER_ENI})."
                ),
            )
            .into());
        }
        let description = description.to_string();
        self.mutate(&scope, move |state| {
            let subnet = state.subnet(&subnet_id)?.clone();
            let cidr = Cidr::parse(&subnet.cidr)
                .ok_or_else(|| AwsError::internal("a stored subnet has an invalid CIDR block"))?;
            let group_ids = if groups.is_empty() {
                let default = state.default_group_of(&subnet.vpc_id).ok_or_else(|| {
                    Ec2Error::Other(
                        "InvalidGroup.NotFound",
                        format!("The VPC '{}' has no default security group", subnet.vpc_id),
                    )
                })?;
                vec![default.id.clone()]
            } else {
                for g in &groups {
                    let group = state.group(g)?;
                    if group.vpc_id != subnet.vpc_id {
                        return Err(Ec2Error::Other(
                            "InvalidParameter",
                            format!(
                                "Security group {g} and subnet {} belong to different networks.",
                                subnet.id
                            ),
                        )
                        .into());
                    }
                }
                groups.clone()
            };
            let ip = state
                .next_free_address(&subnet.id, cidr)
                .ok_or_else(|| {
                    Ec2Error::Other(
                        "InsufficientFreeAddressesInSubnet",
                        "The specified subnet does not have enough free addresses to satisfy the request.".into(),
                    )
                })?;
            let record = EniRecord {
                id: id.clone(),
                subnet_id: subnet.id.clone(),
                vpc_id: subnet.vpc_id.clone(),
                availability_zone: subnet.availability_zone.clone(),
                private_ip: ip,
                mac: mac.clone(),
                group_ids,
                description: description.clone(),
                requester_id: managed.as_ref().map(|m| m.requester_id.clone()),
                interface_type: managed.as_ref().and_then(|m| m.interface_type.clone()),
            };
            state.enis.insert(record.id.clone(), record.clone());
            let vpc_cidr = state.vpc(&subnet.vpc_id)?.cidr.clone();
            Ok(eni_of(&record, &subnet.cidr, cidr, &vpc_cidr))
        })
        .await
    }

    /// The interface created with `description` (task interfaces are
    /// described by their attachment's ARN), if there is one.
    pub fn eni_described(
        &self,
        account: &str,
        region: &str,
        description: &str,
    ) -> Result<Option<Eni>, AwsError> {
        let state = self.read(&Scope::new(account, region))?;
        let Some(e) = state.enis.values().find(|e| e.description == description) else {
            return Ok(None);
        };
        let subnet = state.subnet(&e.subnet_id)?;
        let cidr = Cidr::parse(&subnet.cidr)
            .ok_or_else(|| AwsError::internal("a stored subnet has an invalid CIDR block"))?;
        let vpc = state.vpc(&subnet.vpc_id)?;
        Ok(Some(eni_of(e, &subnet.cidr, cidr, &vpc.cidr)))
    }

    /// Deletes a network interface, freeing its address. `Ok(false)` when
    /// there was none with that id.
    pub async fn delete_eni(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
    ) -> Result<bool, AwsError> {
        let scope = Scope::new(account, region);
        let eni_id = eni_id.to_string();
        self.mutate(&scope, move |state| {
            // An elastic IP associated with the interface is disassociated.
            for eip in state.eips.values_mut() {
                if eip.association.as_ref().is_some_and(|a| a.eni_id == eni_id) {
                    eip.association = None;
                }
            }
            Ok(state.enis.remove(&eni_id).is_some())
        })
        .await
    }

    /// Replaces the security groups of a network interface (a load
    /// balancer's SetSecurityGroups applies to its interfaces): every group
    /// must exist in the interface's VPC; `Ok(false)` when there is no such
    /// interface.
    pub async fn set_eni_groups(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
        security_group_ids: &[String],
    ) -> Result<bool, AwsError> {
        let scope = Scope::new(account, region);
        let eni_id = eni_id.to_string();
        let mut groups: Vec<String> = Vec::new();
        for g in security_group_ids {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        if groups.is_empty() || groups.len() > MAX_GROUPS_PER_ENI {
            return Err(Ec2Error::Other(
                "InvalidParameterValue",
                format!("An interface takes from 1 to {MAX_GROUPS_PER_ENI} security groups."),
            )
            .into());
        }
        self.mutate(&scope, move |state| {
            let Some(vpc) = state.enis.get(&eni_id).map(|e| e.vpc_id.clone()) else {
                return Ok(false);
            };
            for g in &groups {
                if state.group(g)?.vpc_id != vpc {
                    return Err(Ec2Error::Other(
                        "InvalidParameter",
                        format!("Security group {g} and interface {eni_id} belong to different networks."),
                    )
                    .into());
                }
            }
            if let Some(eni) = state.enis.get_mut(&eni_id) {
                eni.group_ids = groups.clone();
            }
            Ok(true)
        })
        .await
    }

    /// Checks an ECS `awsvpcConfiguration`: the subnets and groups exist
    /// and share one VPC. Errors read as ECS's (InvalidParameterException).
    /// Answers the subnets in the order given.
    pub fn task_subnets(
        &self,
        account: &str,
        region: &str,
        subnet_ids: &[String],
        group_ids: &[String],
    ) -> Result<Vec<TaskSubnet>, AwsError> {
        let invalid = |m: String| AwsError::bad_request("InvalidParameterException", m);
        let state = self.read(&Scope::new(account, region))?;
        let mut out: Vec<TaskSubnet> = Vec::new();
        for id in subnet_ids {
            let subnet = state.subnets.get(id).ok_or_else(|| {
                invalid(format!(
                    "Error retrieving subnet information for [{id}]: The subnet ID '{id}' does not exist (ECS)"
                ))
            })?;
            if out
                .first()
                .is_some_and(|first| first.vpc_id != subnet.vpc_id)
            {
                return Err(invalid(
                    "The subnets of an awsvpcConfiguration must all belong to the same VPC.".into(),
                ));
            }
            out.push(TaskSubnet {
                subnet_id: subnet.id.clone(),
                vpc_id: subnet.vpc_id.clone(),
                availability_zone: subnet.availability_zone.clone(),
            });
        }
        for id in group_ids {
            let group = state.groups.get(id).ok_or_else(|| {
                invalid(format!(
                    "Error retrieving security group information for [{id}]: The security group '{id}' does not exist (ECS)"
                ))
            })?;
            if out.first().is_some_and(|s| s.vpc_id != group.vpc_id) {
                return Err(invalid(format!(
                    "Security group {id} and the subnets belong to different networks."
                )));
            }
        }
        Ok(out)
    }

    /// The rules that apply to a network interface now: the union of its
    /// groups' ingress and egress rules, group peers resolved to the
    /// addresses of the interfaces in those groups (`/32`s).
    pub fn interface_policy(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
    ) -> Result<GetNetworkPolicyResponse, AwsError> {
        let state = self.read(&Scope::new(account, region))?;
        let eni = state.enis.get(eni_id).ok_or_else(|| {
            AwsError::bad_request(
                "InvalidNetworkInterfaceID.NotFound",
                format!("The networkInterface ID '{eni_id}' does not exist"),
            )
        })?;
        let members = |group: &str| -> Vec<String> {
            state
                .enis
                .values()
                .filter(|e| e.group_ids.iter().any(|g| g == group))
                .map(|e| format!("{}/32", e.private_ip))
                .collect()
        };
        let resolve = |rules: &[SgRule]| -> Vec<NetworkRule> {
            let mut out: Vec<NetworkRule> = rules
                .iter()
                .map(|r| NetworkRule {
                    protocol: r.protocol.clone(),
                    from_port: r.from_port,
                    to_port: r.to_port,
                    cidrs: match &r.peer {
                        Peer::Cidr(c) => vec![c.clone()],
                        Peer::Group(g) => members(g),
                    },
                })
                .filter(|r| !r.cidrs.is_empty())
                .collect();
            out.sort();
            out.dedup();
            out
        };
        let mut ingress = Vec::new();
        let mut egress = Vec::new();
        for g in &eni.group_ids {
            if let Some(group) = state.groups.get(g) {
                ingress.extend(resolve(&group.ingress));
                egress.extend(resolve(&group.egress));
            }
        }
        ingress.sort();
        ingress.dedup();
        egress.sort();
        egress.dedup();
        // Load balancers' addresses in the VPC live on the server's host:
        // the VPC's router sends them there.
        let mut hosted_addresses: Vec<String> = state
            .enis
            .values()
            .filter(|e| {
                e.vpc_id == eni.vpc_id && e.requester_id.as_deref() == Some(LOAD_BALANCER_REQUESTER)
            })
            .map(|e| e.private_ip.clone())
            .collect();
        hosted_addresses.sort();
        Ok(GetNetworkPolicyResponse {
            ingress,
            egress,
            hosted_addresses,
        })
    }

    /// What load balancers need of an account+region's network: the VPCs
    /// (id, primary CIDR), subnets and security groups as last committed.
    pub fn network_facts(&self, account: &str, region: &str) -> Result<NetworkFacts, AwsError> {
        let state = self.read(&Scope::new(account, region))?;
        Ok(NetworkFacts {
            vpcs: state
                .vpcs
                .values()
                .map(|v| (v.id.clone(), v.cidr.clone()))
                .collect(),
            default_vpc: state.default_vpc().map(|v| v.id.clone()),
            subnets: state
                .subnets
                .values()
                .map(|s| SubnetFacts {
                    id: s.id.clone(),
                    vpc_id: s.vpc_id.clone(),
                    cidr: s.cidr.clone(),
                    availability_zone: s.availability_zone.clone(),
                    zone_id: meta::zone_id(region, &s.availability_zone),
                })
                .collect(),
            groups: state
                .groups
                .values()
                .map(|g| (g.id.clone(), g.vpc_id.clone(), g.name.clone(), g.is_default))
                .collect(),
        })
    }

    /// The rules of the named groups that exist, in the order asked.
    pub fn security_group_rules(
        &self,
        account: &str,
        region: &str,
        group_ids: &[String],
    ) -> Result<Vec<GroupRules>, AwsError> {
        let state = self.read(&Scope::new(account, region))?;
        Ok(group_ids
            .iter()
            .filter_map(|id| state.groups.get(id))
            .map(|g| GroupRules {
                group_id: g.id.clone(),
                vpc_id: g.vpc_id.clone(),
                ingress: g.ingress.clone(),
                egress: g.egress.clone(),
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl QueryService for Ec2Service {
    fn signing_name(&self) -> &'static str {
        "ec2"
    }

    fn xml_namespace(&self) -> &'static str {
        EC2_NAMESPACE
    }

    fn ec2_protocol(&self) -> bool {
        true
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        if !api::IMPLEMENTED.contains(&action) {
            if MODEL_OPERATIONS.lines().any(|op| op == action) {
                let reason = NOT_IMPLEMENTED
                    .iter()
                    .find(|(op, _)| *op == action)
                    .map_or("Berth does not implement it", |(_, reason)| *reason);
                return Err(Ec2Error::Other(
                    "UnsupportedOperation",
                    format!("The operation {action} is not supported by Berth: {reason}."),
                )
                .into());
            }
            return Err(Ec2Error::Other(
                "InvalidAction",
                format!("The action {action} is not valid for this web service."),
            )
            .into());
        }
        let mut p = wire::Params(params.to_vec());
        let dry_run = p.bool("DryRun")? == Some(true);
        let scope = Scope::new(&ctx.account_id, &ctx.region);
        // Authorized before anything is written (the default VPC of a new
        // region included), on the canonical ARNs read from the state.
        let state = self.read(&scope)?;
        ctx.authorize(&access::requirements(action, &p, &state, &scope)?)?;
        // The handler acts on the group that was authorized, not on
        // whatever its name means by the time it runs.
        if access::targets_a_group(action) && p.get("GroupId").is_none() {
            if let Some(id) = access::named_group_id(&p, &state) {
                p.0.push(("GroupId".to_string(), id));
            }
        }
        // As EC2: a dry run answers whether the caller may make the call.
        if dry_run {
            return Err(AwsError::new(
                412,
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            ));
        }
        self.ensure_defaults(&scope.account, &scope.region).await?;
        api::handle(self, &scope, action, p).await
    }
}
