//! The interface every AWS JSON 1.1 service implements so the gateway can route to it.

use crate::{AwsError, RequestContext};

/// An AWS service speaking the JSON 1.1 protocol (`X-Amz-Target: Prefix.Operation`).
#[async_trait::async_trait]
pub trait JsonService: Send + Sync + 'static {
    /// The `X-Amz-Target` prefix before the dot, e.g. `AmazonEC2ContainerServiceV20141113`.
    fn target_prefix(&self) -> &'static str;

    /// The SigV4 signing name the credential scope must carry, e.g. `ecs`.
    fn signing_name(&self) -> &'static str;

    /// Handles one operation; `body` is the raw JSON request body. Returns the
    /// JSON response body.
    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError>;
}
