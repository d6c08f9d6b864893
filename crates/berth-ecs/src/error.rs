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
