//! Triggers: what starts an invocation.

pub mod http;
pub mod routes;
mod stall;
