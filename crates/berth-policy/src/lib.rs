//! IAM policy language and evaluation for Berth.
//!
//! This crate is pure: no I/O, no clock, no global state. Callers supply the
//! policies, the authenticated principal, and every condition key — including
//! the current time (`aws:CurrentTime`) — in the request [`Context`].
//!
//! * [`Policy::parse`] (plus [`Policy::parse_identity`],
//!   [`Policy::parse_resource`], [`Policy::parse_trust`]) reads a policy
//!   document and rejects it with IAM's `MalformedPolicyDocument` wording.
//! * [`evaluate`] decides a request from identity policies and an optional
//!   resource policy (same account: either may allow; cross account: both
//!   must); [`evaluate_trust`] decides `sts:AssumeRole` against a role's
//!   trust policy.
//! * [`managed`] holds the AWS managed policies ECS users attach, and
//!   [`actions`] maps API operations to IAM action names.
//!
//! ```
//! use berth_policy::{evaluate, Context, Policy, PrincipalRef, Request};
//!
//! let policy = Policy::parse_identity(r#"{
//!     "Version": "2012-10-17",
//!     "Statement": [{"Effect": "Allow", "Action": "ecs:Describe*", "Resource": "*"}]
//! }"#).unwrap();
//! let alice = PrincipalRef::user("123456789012", "/", "alice", "AIDAEXAMPLE");
//! let ctx = Context::new();
//! let req = Request::new(&alice, "ecs:DescribeClusters",
//!     "arn:aws:ecs:us-east-1:123456789012:cluster/default", &ctx);
//! assert!(evaluate(&[&policy], None, &req).is_allowed());
//! ```

pub mod actions;
mod condition;
mod context;
mod document;
mod error;
mod evaluate;
pub mod managed;
mod matching;
mod positions;
mod time;
mod variables;

pub use condition::{BaseOperator, Cidr, Comparison, Condition, ConditionOperator, SetQualifier};
pub use context::{keys, Context, ContextValue, PrincipalKind, PrincipalRef, Request};
pub use document::{
    ActionBlock, Effect, Policy, PrincipalBlock, Principals, ResourceBlock, Statement, Version,
};
pub use error::PolicyError;
pub use evaluate::{
    evaluate, evaluate_trust, explain, Decision, Explanation, MatchedStatement, PolicySource,
    PrincipalScope, StatementRef,
};
pub use matching::{action_matches, arn_matches, wildcard_match};
pub use positions::{statement_positions, Position};
pub use time::Timestamp;
