//! The interfaces AWS services implement so the gateway can route to them
//! (JSON 1.1 and Query).

use crate::{AwsError, RequestContext};

/// The request body an operation accepts unless its service says otherwise:
/// more than any AWS JSON or Query operation Berth serves needs (policies,
/// task definitions and secrets are tens of kilobytes at most).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// An AWS service speaking the JSON 1.1 protocol (`X-Amz-Target: Prefix.Operation`).
#[async_trait::async_trait]
pub trait JsonService: Send + Sync + 'static {
    /// The `X-Amz-Target` prefix before the dot, e.g. `AmazonEC2ContainerServiceV20141113`.
    fn target_prefix(&self) -> &'static str;

    /// The SigV4 signing name the credential scope must carry, e.g. `ecs`.
    fn signing_name(&self) -> &'static str;

    /// The largest request body `operation` accepts; larger ones are refused
    /// before they are read. Services override it for the few operations
    /// that carry bulk data (log events, layer parts, manifests).
    fn max_body(&self, operation: &str) -> usize {
        let _ = operation;
        DEFAULT_MAX_BODY
    }

    /// Handles one operation; `body` is the raw JSON request body. Returns the
    /// JSON response body.
    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError>;

    /// Whether `operation` answers with an event stream (CloudWatch Logs'
    /// StartLiveTail): the gateway then calls
    /// [`handle_streaming`](Self::handle_streaming) instead of `handle`.
    fn streams(&self, operation: &str) -> bool {
        let _ = operation;
        false
    }

    /// Handles a streaming operation: validates and authorizes as `handle`
    /// does, then returns the body to send as it is produced.
    async fn handle_streaming(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<StreamingBody, AwsError> {
        let _ = (ctx, body);
        Err(AwsError::internal(format!(
            "{operation} is not a streaming operation."
        )))
    }
}

/// A response body sent piece by piece as the service produces it (an AWS
/// event stream); dropping it (the client went away) ends the stream.
pub struct StreamingBody {
    /// e.g. `application/vnd.amazon.eventstream`.
    pub content_type: &'static str,
    pub chunks: Box<dyn ChunkSource>,
}

/// Where a [`StreamingBody`]'s pieces come from.
#[async_trait::async_trait]
pub trait ChunkSource: Send + 'static {
    /// The next piece of the body; `None` ends it.
    async fn next_chunk(&mut self) -> Option<Vec<u8>>;
}

/// An AWS service speaking the Query protocol (`POST /` with a form-encoded
/// body carrying `Action` and `Version`, XML responses), such as IAM and STS.
#[async_trait::async_trait]
pub trait QueryService: Send + Sync + 'static {
    /// SigV4 signing name, also how the gateway routes: `iam`, `sts`.
    fn signing_name(&self) -> &'static str;

    /// XML namespace of responses, e.g. `https://iam.amazonaws.com/doc/2010-05-08/`.
    fn xml_namespace(&self) -> &'static str;

    /// The largest request body this service accepts (the action is inside
    /// the body, so the limit is per service).
    fn max_body(&self) -> usize {
        DEFAULT_MAX_BODY
    }

    /// Whether the service speaks EC2's dialect of Query (botocore's `ec2`
    /// protocol): the inner XML goes straight into `<{Action}Response>` next
    /// to a `<requestId>` (no `Result` element, no `ResponseMetadata`), and
    /// errors are `<Response><Errors><Error>…</Errors><RequestID>`.
    fn ec2_protocol(&self) -> bool {
        false
    }

    /// Actions AWS accepts without a signature (STS's
    /// AssumeRoleWithWebIdentity and AssumeRoleWithSAML, whose caller proves
    /// who it is with the token in the request). The gateway routes a Query
    /// request that carries no signature at all and names one of these to
    /// [`handle_unsigned`](Self::handle_unsigned); any other unsigned request
    /// is refused as before.
    fn unsigned_actions(&self) -> &'static [&'static str] {
        &[]
    }

    /// Handles one of [`unsigned_actions`](Self::unsigned_actions): there is
    /// no caller, so no [`RequestContext`] and no authorization; the service
    /// authenticates the request from its parameters.
    async fn handle_unsigned(
        &self,
        request_id: &str,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let _ = (request_id, action, params);
        Err(AwsError::bad_request("InvalidAction", ""))
    }

    /// `params`: the decoded form fields except `Action`/`Version`, in order.
    /// Returns the inner XML of `<{Action}Result>` (may be empty for actions
    /// without result members). For an action the service does not know,
    /// return `InvalidAction` with an empty message: the gateway words it as
    /// AWS does, with the `Version` the request named.
    async fn handle(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError>;
}
