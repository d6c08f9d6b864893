//! Cluster records: names, references and the ACTIVE check every handler
//! makes before it touches a cluster's resources.

use berth_model::shapes::ecs::{Cluster, ClusterSetting};
use berth_model::{Arn, AwsError};
use berth_store::{Op, ReadView};

use crate::error;
use crate::state::keys::Scope;
use crate::state::records::{encode, load};

pub(crate) const DEFAULT_CLUSTER: &str = "default";

pub(crate) const ACTIVE: &str = "ACTIVE";

pub(crate) const INACTIVE: &str = "INACTIVE";

/// Checks a cluster name: up to 255 letters, digits, hyphens and underscores.
pub(crate) fn check_name(name: &str) -> Result<(), AwsError> {
    let ok = crate::state::records::is_plain_name(name);
    if ok {
        Ok(())
    } else {
        Err(error::invalid_parameter(
            "Cluster name is invalid. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        ))
    }
}

/// Turns a cluster reference (name or ARN) into a name; `None` means `default`.
pub(crate) fn resolve_name(scope: &Scope, reference: Option<&str>) -> Result<String, AwsError> {
    let reference = match reference {
        None => return Ok(DEFAULT_CLUSTER.to_string()),
        Some("") => return Ok(DEFAULT_CLUSTER.to_string()),
        Some(r) => r,
    };
    if reference.starts_with("arn:") {
        let arn = Arn::parse(reference)
            .ok_or_else(|| error::invalid_parameter(format!("Invalid cluster ARN: {reference}")))?;
        if arn.service != "ecs" || arn.resource_type() != "cluster" {
            return Err(error::invalid_parameter(format!(
                "Invalid cluster ARN: {reference}"
            )));
        }
        if arn.account != scope.account || arn.region != scope.region {
            return Err(error::cluster_not_found());
        }
        let name = arn.resource_id();
        check_name(name)?;
        return Ok(name.to_string());
    }
    check_name(reference)?;
    Ok(reference.to_string())
}

/// Loads an ACTIVE cluster or fails with ClusterNotFoundException.
pub(crate) fn require_active(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    name: &str,
) -> Result<(Cluster, u64), AwsError> {
    match load::<Cluster>(view, &scope.cluster(name))? {
        Some((cluster, rev)) if cluster.status.as_deref() == Some(ACTIVE) => Ok((cluster, rev)),
        _ => Err(error::cluster_not_found()),
    }
}

/// ECS creates the `default` cluster the first time something needs it (an
/// instance registering into it). Returns the write that creates it when it
/// does not exist or was deleted.
pub(crate) fn create_default_on_demand(
    view: &(impl ReadView + ?Sized),
    scope: &Scope,
    name: &str,
) -> Result<Option<Op>, AwsError> {
    if name != DEFAULT_CLUSTER {
        return Ok(None);
    }
    if let Some((existing, _)) = load::<Cluster>(view, &scope.cluster(name))? {
        if existing.status.as_deref() == Some(ACTIVE) {
            return Ok(None);
        }
    }
    let cluster = Cluster {
        cluster_arn: Some(scope.arn(&format!("cluster/{name}"))),
        cluster_name: Some(name.to_string()),
        status: Some(ACTIVE.into()),
        settings: Some(vec![ClusterSetting {
            name: Some("containerInsights".into()),
            value: Some("disabled".into()),
        }]),
        tags: Some(Vec::new()),
        capacity_providers: Some(Vec::new()),
        default_capacity_provider_strategy: Some(Vec::new()),
        ..Cluster::default()
    };
    Ok(Some(Op::put(scope.cluster(name), encode(&cluster)?)))
}
