//! ECS's exception types, as its botocore model names them.

use berth_model::AwsError;

pub fn client(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("ClientException", message)
}

pub fn invalid_parameter(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidParameterException", message)
}

pub fn cluster_not_found() -> AwsError {
    AwsError::bad_request("ClusterNotFoundException", "Cluster not found.")
}

pub fn server(message: impl Into<String>) -> AwsError {
    AwsError::new(500, "ServerException", message)
}

/// An ECS operation Berth does not implement yet: a clear refusal, never a
/// fake success.
pub fn unsupported(operation: &str) -> AwsError {
    AwsError::bad_request(
        "UnsupportedFeatureException",
        format!("Berth does not implement the ECS operation {operation} yet."),
    )
}

/// A required member is missing from the request.
pub fn missing(member: &str) -> AwsError {
    invalid_parameter(format!("{member} is required and cannot be empty."))
}

pub fn store(e: berth_store::StoreError) -> AwsError {
    tracing::error!(error = %e, "store failure");
    server("The request could not be stored; retry it.")
}

/// Reads an `include` list that may only name `TAGS` (DescribeTasks,
/// DescribeServices, DescribeTaskDefinition); returns whether it does.
pub fn include_tags(include: Option<Vec<String>>) -> Result<bool, AwsError> {
    let mut tags = false;
    for field in include.unwrap_or_default() {
        match field.as_str() {
            "TAGS" => tags = true,
            other => {
                return Err(invalid_parameter(format!(
                    "Invalid include value '{other}'. Valid values: TAGS."
                )))
            }
        }
    }
    Ok(tags)
}

/// The `failures[]` entry of a describe call for a resource that does not
/// exist: the ARN as the caller gave it, or the one its name would have
/// (`resource` is the ARN's resource part, e.g. `task/<cluster>/<id>`).
pub fn missing_failure(
    scope: &crate::state::keys::Scope,
    reference: String,
    resource: impl FnOnce(&str) -> String,
) -> berth_model::shapes::ecs::Failure {
    let arn = if reference.starts_with("arn:") {
        reference
    } else {
        scope.arn(&resource(&reference))
    };
    berth_model::shapes::ecs::Failure {
        arn: Some(arn),
        reason: Some("MISSING".into()),
        detail: None,
    }
}
