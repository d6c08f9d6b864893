//! AWS Secrets Manager (`secretsmanager`) and SSM Parameter Store (`AmazonSSM`)
//! for Berth, with every secret value encrypted at rest (see [`crypto`]).
//!
//! Both services keep their records in the Berth store; the values of secrets
//! and SecureString parameters are sealed with the server's master key before
//! they reach it, so the store file never holds them in plaintext. Messages of
//! errors and logs name secrets, never their values.
//!
//! Every call asks IAM for its action on the resource's canonical ARN (see
//! [`authz`]); [`SecretPolicies`] lets secrets' resource policies take part.
//!
//! [`resolve_secret_value`] is the agent-facing entry point: it turns an ECS
//! `secrets[].valueFrom` into the plaintext to inject.

pub mod authz;
mod common;
pub mod crypto;
mod resolve;
pub mod secretsmanager;
pub mod ssm;

pub use authz::SecretPolicies;
pub use crypto::{CryptoError, MasterKey, Sealed};
pub use resolve::resolve_secret_value;
pub use secretsmanager::SecretsManagerService;
pub use ssm::SsmService;

#[cfg(test)]
mod tests;
