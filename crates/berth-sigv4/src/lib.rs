//! AWS Signature Version 4.
//!
//! The verifier rebuilds the canonical request from what arrived on the wire
//! and compares signatures in constant time. The signer produces the headers
//! a client (the agent, the benchmarks) needs. Both share [`canonical`], so a
//! request signed here verifies here, and the tests check both against
//! vectors produced by botocore.

pub mod canonical;
mod error;
mod sign;
mod verify;

pub use error::AuthError;
pub use sign::{sign_headers, SigningParams};
pub use verify::{SecretLookup, Verified, Verifier};

/// The parts of an HTTP request a signature covers, as they arrived.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded).
    pub path: &'a str,
    /// The raw query string without the leading `?`.
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl RequestParts<'_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
