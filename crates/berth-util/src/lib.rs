//! Utilities every Berth crate shares, one copy of each:
//!
//! - [`time`]: the clock (`now_*`, the only place Berth reads the wall clock
//!   for a timestamp) and the date formats AWS uses (ISO 8601 / RFC 3339,
//!   SigV4's `20150830T123600Z`, HTTP dates), on the `time` crate.
//! - [`private_file`]: key and credential files written 0600, atomically and
//!   durably (temporary file, fsync, rename, directory fsync).
//! - [`ids`]: random ids and secrets (hex ids, AWS-style access key ids,
//!   secret access keys, session tokens).
//!
//! The crate depends on no other Berth crate, so the pure crates
//! (`berth-sigv4`, `berth-policy`, `berth-scheduler`) can use its formats
//! while the caller still passes them `now`.

pub mod ids;
pub mod private_file;
pub mod time;
