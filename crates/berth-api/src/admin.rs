//! Berth's own authenticated read endpoints: `GET /_berth/<name>?<query>`,
//! answered in JSON.
//!
//! Unlike `/_berth/health`, these are SigV4-signed like every AWS call (a
//! header-signed GET with an empty body, or a presigned URL), scoped to the
//! endpoint's signing service, and held to IAM like an operation: the
//! account's root may call them, an agent's credential may not, and users
//! and role sessions need the endpoint's IAM action on `*`. Errors render as
//! the JSON 1.1 protocol's (`{"__type", "message"}`, `x-amzn-ErrorType`).

use berth_model::{AwsError, RequestContext};

/// One `GET` endpoint, registered with
/// [`GatewayBuilder::admin_endpoint`](crate::GatewayBuilder::admin_endpoint).
pub trait AdminEndpoint: Send + Sync + 'static {
    /// The route, e.g. `/_berth/usage`.
    fn path(&self) -> &'static str;

    /// The service the request's credential scope must name (e.g. `ecs`).
    fn signing_name(&self) -> &'static str;

    /// The IAM action a non-root caller needs on resource `*`
    /// (e.g. `berth:GetUsage`).
    fn action(&self) -> &'static str;

    /// Answers the request. `query` holds the decoded query parameters in
    /// order, without the `X-Amz-*` ones of a presigned URL. Runs on a
    /// blocking thread, so it may read the store synchronously.
    fn get(
        &self,
        ctx: &RequestContext,
        query: &[(String, String)],
    ) -> Result<serde_json::Value, AwsError>;
}

/// The decoded query of a request, without presigning parameters.
pub(crate) fn query_params(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .filter(|(name, _)| !name.to_ascii_lowercase().starts_with("x-amz-"))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}
