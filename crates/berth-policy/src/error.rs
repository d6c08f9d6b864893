//! Errors raised while parsing or validating a policy document.
//!
//! The `Display` text of every variant follows the wording IAM uses in its
//! `MalformedPolicyDocument` errors, because the IAM service in Berth passes
//! these messages straight back to the `aws` CLI and SDKs.

use thiserror::Error;

/// Why a policy document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// The text is not JSON, or its shape is not a policy (wrong types,
    /// unknown elements, empty statement list).
    #[error("Syntax errors in policy.")]
    Syntax,
    /// `Version` is neither `2012-10-17` nor `2008-10-17`.
    #[error("The policy failed legacy parsing")]
    InvalidVersion,
    /// A statement lacks a required element, e.g. `Effect`.
    #[error("Missing required field {0}")]
    MissingField(&'static str),
    /// `Effect` is something other than `Allow` or `Deny`.
    #[error("Invalid effect: {0}")]
    InvalidEffect(String),
    /// A statement has neither `Action` nor `NotAction`.
    #[error("Policy statement must contain actions.")]
    MissingActions,
    /// An identity policy statement has neither `Resource` nor `NotResource`.
    #[error("Policy statement must contain resources.")]
    MissingResources,
    /// An identity policy names a principal.
    #[error("Policy document should not specify a principal.")]
    PrincipalNotAllowed,
    /// A statement carries an element this kind of policy forbids
    /// (e.g. `Resource` in a role trust policy).
    #[error("Has prohibited field {0}")]
    ProhibitedField(&'static str),
    /// A principal value is malformed; the payload is rendered like IAM does,
    /// e.g. `"AWS":"arn:aws:iam::1:user/x"`.
    #[error("Invalid principal in policy: {0}")]
    InvalidPrincipal(String),
    /// An action has no vendor prefix.
    #[error("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")]
    ActionWithoutVendor,
    /// An action or condition key has more than one colon.
    #[error("Actions/Condition can contain only one colon.")]
    ActionTooManyColons,
    /// A resource is neither `*` nor ARN-shaped.
    #[error("Resource {0} must be in ARN format or \"*\".")]
    InvalidResource(String),
    /// A condition operator is unknown, or combines qualifiers IAM rejects
    /// (e.g. `NullIfExists`).
    #[error("Invalid Condition type : {0}.")]
    InvalidConditionOperator(String),
    /// A condition value cannot be read by its operator (e.g. a non-number
    /// under `NumericLessThan`).
    #[error("Invalid value for condition {operator}: {value}")]
    InvalidConditionValue {
        /// The operator as written.
        operator: String,
        /// The offending value.
        value: String,
    },
    /// A `Sid` contains characters other than `[0-9A-Za-z]` (identity policies only).
    #[error("Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*")]
    InvalidSid,
    /// Two statements share a `Sid`.
    #[error("Statement IDs (SID) in a single policy must be unique.")]
    DuplicateSid,
    /// A trust policy allows something other than an `sts:` action.
    #[error("AssumeRole policy may only specify STS AssumeRole actions.")]
    TrustPolicyAction,
}
