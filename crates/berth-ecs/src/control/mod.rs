//! The fourth layer: what runs beside the API. The service controller
//! ([`service_controller`]), the network controller ([`networking`]), task
//! garbage collection ([`gc`]), the agent protocol's server side
//! ([`agent_api`]) and the usage reports ([`metering`]).
//!
//! Architecture invariant: a `control` module imports only `state` and
//! `launch` (and the shared `error`), never `api` or another `control`
//! module.

pub mod agent_api;
pub mod gateways;
pub(crate) mod gc;
pub mod load_balancing;
pub mod metering;
pub mod networking;
pub mod registration;
pub mod service_controller;
