//! Triggers: what starts an invocation.

pub mod coalesce;
pub mod http;
pub mod routes;
mod stall;
