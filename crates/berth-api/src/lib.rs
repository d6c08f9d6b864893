//! Berth's HTTP gateway: one listener for every AWS API Berth serves.
//!
//! A request is authenticated (SigV4, header or presigned), routed by its
//! `X-Amz-Target` to a [`JsonService`], and the handler's result or
//! [`AwsError`] is rendered in the AWS JSON 1.1 protocol. Form-encoded
//! requests without `X-Amz-Target` speak the Query protocol (IAM, STS): they
//! are routed by the credential scope's service to a [`QueryService`] and
//! answered in XML. Each service authorizes its own calls through the
//! request context (`berth_model::authz`); the gateway refuses an answer
//! given to a non-root caller without that check.
//!
//! Architecture invariant: no handler runs for a request whose signature has
//! not been verified against a known credential.

mod admin;
pub mod body;
mod gateway;
mod json_protocol;
mod query_protocol;
pub mod server;

pub use admin::AdminEndpoint;
pub use berth_model::authz::{Authorizer, Denial, Requirement, ResourcePolicySource};
pub use berth_model::credentials::{CredentialSource, ResolvedCredential, StaticCredentials};
pub use gateway::{Gateway, GatewayBuilder};

pub use berth_model::{AwsError, JsonService, QueryService, RequestContext};
pub use query_protocol::xml_escape;

#[cfg(test)]
mod gateway_fuzz;
#[cfg(test)]
mod gateway_tests;
