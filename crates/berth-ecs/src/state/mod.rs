//! The lowest layer: records as they are stored, their keys and indexes,
//! the queries and references that find them, and their typed statuses.
//! Nothing here places tasks or answers an API call.
//!
//! Architecture invariant: `state` imports nothing from `launch`, `api` or
//! `control`.

pub(crate) mod account_settings;
pub(crate) mod blue_green;
pub(crate) mod capacity_providers;
pub(crate) mod clock;
pub(crate) mod clusters;
pub(crate) mod exec;
pub(crate) mod gateway_routes;
pub(crate) mod gateways;
pub(crate) mod index;
pub(crate) mod instances;
pub(crate) mod keys;
pub(crate) mod ledger;
pub(crate) mod load_balancers;
pub(crate) mod network;
pub(crate) mod pagination;
pub(crate) mod records;
pub(crate) mod registry;
pub(crate) mod services;
pub(crate) mod tags;
pub(crate) mod task_definitions;
pub(crate) mod task_sets;
pub(crate) mod taskdef;
pub(crate) mod tasks;
