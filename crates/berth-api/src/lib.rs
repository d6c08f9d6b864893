//! Berth's HTTP gateway: one listener for every AWS API Berth serves.
//!
//! A request is authenticated (SigV4, header or presigned), routed by its
//! `X-Amz-Target` to a [`JsonService`], and the handler's result or
//! [`AwsError`] is rendered in the AWS JSON 1.1 protocol.
//!
//! Architecture invariant: no handler runs for a request whose signature has
//! not been verified against a known credential.

mod credentials;
mod gateway;
mod json_protocol;

pub use credentials::{CredentialSource, ResolvedCredential, StaticCredentials};
pub use gateway::{Gateway, GatewayBuilder};

pub use berth_model::{AwsError, JsonService, RequestContext};
