//! Capacity provider records (`capacity-providers/<name>`): the providers an
//! account creates (Auto Scaling group providers), beside the built-in
//! FARGATE and FARGATE_SPOT every account has without creating them.
//!
//! Berth has no Auto Scaling groups yet: an Auto Scaling group provider's
//! settings are validated and stored as ECS stores them, and a strategy
//! naming one launches on the cluster's registered container instances;
//! nothing scales the group.

use berth_model::shapes::ecs::{CapacityProvider, Cluster};
use berth_model::{Arn, AwsError};
use berth_store::ReadView;

use crate::error;
use crate::state::keys::Scope;
use crate::state::records::{decode, load};

pub(crate) const FARGATE: &str = "FARGATE";
pub(crate) const FARGATE_SPOT: &str = "FARGATE_SPOT";

/// Capacity providers every account has without creating them.
pub(crate) const BUILTIN: &[&str] = &[FARGATE, FARGATE_SPOT];

pub(crate) const ACTIVE: &str = "ACTIVE";
pub(crate) const INACTIVE: &str = "INACTIVE";

impl Scope {
    pub fn capacity_providers(&self) -> String {
        format!("/ecs/{}/{}/capacity-providers/", self.account, self.region)
    }

    pub fn capacity_provider(&self, name: &str) -> String {
        format!("{}{name}", self.capacity_providers())
    }
}

/// The ARN of capacity provider `name`.
pub(crate) fn arn(scope: &Scope, name: &str) -> String {
    scope.arn(&format!("capacity-provider/{name}"))
}

/// A built-in provider as DescribeCapacityProviders shows it.
pub(crate) fn builtin(scope: &Scope, name: &str) -> CapacityProvider {
    CapacityProvider {
        capacity_provider_arn: Some(arn(scope, name)),
        name: Some(name.to_string()),
        status: Some(ACTIVE.into()),
        tags: Some(Vec::new()),
        r#type: Some(name.to_string()),
        ..CapacityProvider::default()
    }
}

/// Checks a new provider's name: up to 255 letters, digits, hyphens and
/// underscores, not starting with `aws`, `ecs` or `fargate`.
pub(crate) fn check_name(name: &str) -> Result<(), AwsError> {
    let ok = crate::state::records::is_plain_name(name);
    if !ok {
        return Err(error::invalid_parameter(
            "The capacity provider name is invalid. Up to 255 characters are allowed, including letters (upper and lowercase), numbers, underscores, and hyphens.",
        ));
    }
    let lower = name.to_ascii_lowercase();
    if ["aws", "ecs", "fargate"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(error::client(
            "The capacity provider name cannot begin with 'aws', 'ecs', or 'fargate'. Specify a different name and try again.",
        ));
    }
    Ok(())
}

/// Turns a capacity provider reference (name or ARN) into its name.
pub(crate) fn resolve_name(scope: &Scope, reference: &str) -> Result<String, AwsError> {
    if reference.is_empty() {
        return Err(error::missing("capacityProvider"));
    }
    if !reference.starts_with("arn:") {
        return Ok(reference.to_string());
    }
    let arn = Arn::parse(reference)
        .filter(|a| a.service == "ecs" && a.resource_type() == "capacity-provider")
        .ok_or_else(|| {
            error::invalid_parameter(format!("Invalid capacity provider ARN: {reference}"))
        })?;
    if arn.account != scope.account || arn.region != scope.region {
        return Err(not_found());
    }
    Ok(arn.resource_id().to_string())
}

pub(crate) fn not_found() -> AwsError {
    error::client("The specified capacity provider does not exist. Specify a valid name or ARN and try again.")
}

/// A stored provider (ACTIVE or INACTIVE) and its revision.
pub(crate) fn find(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    name: &str,
) -> Result<Option<(CapacityProvider, u64)>, AwsError> {
    load::<CapacityProvider>(view, &scope.capacity_provider(name))
}

/// Whether `name` is a provider a cluster can use now: built in, or
/// created and ACTIVE.
pub(crate) fn is_active(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    name: &str,
) -> Result<bool, AwsError> {
    if BUILTIN.contains(&name) {
        return Ok(true);
    }
    Ok(find(view, scope, name)?.is_some_and(|(p, _)| p.status.as_deref() == Some(ACTIVE)))
}

/// The cluster (name) an Auto Scaling group provider is associated with:
/// one at most, as in ECS.
pub(crate) fn associated_cluster(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    name: &str,
) -> Result<Option<String>, AwsError> {
    for kv in view.range(&scope.clusters(), None, usize::MAX) {
        let cluster: Cluster = decode(&kv)?;
        if cluster.status.as_deref() != Some(crate::state::clusters::ACTIVE) {
            continue;
        }
        if cluster
            .capacity_providers
            .iter()
            .flatten()
            .any(|p| p == name)
        {
            return Ok(cluster.cluster_name);
        }
    }
    Ok(None)
}

/// The first service of `cluster` (not INACTIVE) whose capacity provider
/// strategy names `provider`.
pub(crate) fn service_using(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    cluster: &str,
    provider: &str,
) -> Result<Option<String>, AwsError> {
    for kv in view.range(&scope.services(cluster), None, usize::MAX) {
        let record: crate::state::services::ServiceRecord = decode(&kv)?;
        if record.status() == crate::state::services::INACTIVE {
            continue;
        }
        let uses = record
            .service
            .capacity_provider_strategy
            .iter()
            .flatten()
            .any(|i| i.capacity_provider.as_deref() == Some(provider));
        if uses {
            return Ok(Some(record.name));
        }
    }
    Ok(None)
}
