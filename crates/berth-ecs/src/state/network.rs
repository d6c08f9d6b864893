//! awsvpc data: the subnets a task may use, its ENI attachment as ECS shows
//! it in `attachments`, and the [`TaskNetworks`] port through which Berth's
//! EC2 service checks `awsvpcConfiguration`s, creates and deletes task
//! network interfaces and answers their security-group policy.

use berth_model::agent_protocol::{GetNetworkPolicyResponse, TaskNetworkInterface};
use berth_model::shapes::ecs::Task;
use berth_model::AwsError;

/// `attachments[].type` of a task's network interface.
pub(crate) const ENI_ATTACHMENT: &str = "ElasticNetworkInterface";

/// Attachment states, as ECS reports them: placed, then the interface
/// exists and is plumbed, then it is deleted after the task stops.
pub(crate) const PRECREATED: &str = "PRECREATED";

pub(crate) const ATTACHED: &str = "ATTACHED";

pub(crate) const DELETED: &str = "DELETED";

/// A subnet an awsvpc task may be placed in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubnetInfo {
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
}

/// A network interface created for a task.
#[derive(Clone, Debug, PartialEq)]
pub struct AttachedInterface {
    pub interface: TaskNetworkInterface,
    pub availability_zone: String,
    pub vpc_id: String,
}

/// What ECS needs from the VPC service (implemented by `berth-ec2` in the
/// binary, so this crate does not depend on it).
#[async_trait::async_trait]
pub trait TaskNetworks: Send + Sync + 'static {
    /// Checks that the subnets and groups exist and belong to one VPC;
    /// answers the subnets in the order given.
    fn check(
        &self,
        account: &str,
        region: &str,
        subnets: &[String],
        security_groups: &[String],
    ) -> Result<Vec<SubnetInfo>, AwsError>;

    /// The subnets of the account+region's default VPC (for what ECS
    /// places "in the default VPC" when no subnets are given).
    fn default_subnets(&self, _account: &str, _region: &str) -> Result<Vec<SubnetInfo>, AwsError> {
        Ok(Vec::new())
    }

    /// Creates the interface of a task in `subnet_id` (the VPC's default
    /// group when `security_groups` is empty).
    async fn attach(
        &self,
        account: &str,
        region: &str,
        subnet_id: &str,
        security_groups: &[String],
        description: &str,
    ) -> Result<AttachedInterface, AwsError>;

    /// Deletes a task's interface (nothing when it is already gone).
    async fn release(&self, account: &str, region: &str, eni_id: &str) -> Result<(), AwsError>;

    /// The rules of the interface's groups, peers resolved to addresses.
    fn policy(
        &self,
        account: &str,
        region: &str,
        eni_id: &str,
    ) -> Result<GetNetworkPolicyResponse, AwsError>;
}

/// The `attachments[].details` ECS shows for an attached interface.
pub(crate) fn attachment_details(attached: &AttachedInterface) -> Vec<(&'static str, String)> {
    let i = &attached.interface;
    vec![
        ("subnetId", i.subnet_id.clone()),
        ("networkInterfaceId", i.eni_id.clone()),
        ("macAddress", i.mac.clone()),
        (
            "privateDnsName",
            format!("ip-{}.ec2.internal", i.private_ip.replace('.', "-")),
        ),
        ("privateIPv4Address", i.private_ip.clone()),
    ]
}

/// The ENI attachment of a task, when it has one.
pub(crate) fn eni_attachment_mut(
    task: &mut Task,
) -> Option<&mut berth_model::shapes::ecs::Attachment> {
    task.attachments
        .iter_mut()
        .flatten()
        .find(|a| a.r#type.as_deref() == Some(ENI_ATTACHMENT))
}

pub(crate) fn attachment_status(task: &Task) -> Option<&str> {
    task.attachments
        .iter()
        .flatten()
        .find(|a| a.r#type.as_deref() == Some(ENI_ATTACHMENT))
        .and_then(|a| a.status.as_deref())
}

/// A task's `awsvpcConfiguration`, its subnets looked up.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AwsVpc {
    pub subnets: Vec<SubnetInfo>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: String,
}
