//! Triggers: what starts an invocation.

pub mod coalesce;
pub mod forward;
pub mod http;
mod linger;
pub mod queue;
pub mod routes;
mod stall;
