//! The agent's client of the agent protocol: Berth's shared signed HTTP
//! client (`berth-client`), re-exported where the agent has always found it.

pub use berth_client::{ClientError, Credentials, ServerClient};
