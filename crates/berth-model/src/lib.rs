//! Berth's shared vocabulary: the AWS error type, request context, ARNs, tag rules
//! and the request/response shapes generated from the botocore models.
//!
//! Architecture invariant: this crate does no I/O and reads no clock; every
//! other crate may depend on it.

pub mod agent_protocol;
pub mod arn;
pub mod authz;
pub mod context;
pub mod credentials;
pub mod dns_registry;
pub mod error;
pub mod exec_protocol;
pub mod json;
pub mod seal;
pub mod service;
pub mod shapes;
pub mod tags;
pub mod xml;

pub use arn::Arn;
pub use authz::{Access, Authorizer, Denial, DenialStyle, Requirement, ResourcePolicySource};
pub use context::{Principal, PrincipalKind, RequestContext};
pub use credentials::{CredentialSource, ResolvedCredential, StaticCredentials};
pub use error::AwsError;
pub use seal::{SealError, Sealer};
pub use service::{ChunkSource, JsonService, QueryService, StreamingBody};
