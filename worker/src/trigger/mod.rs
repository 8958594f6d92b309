//! Triggers: what starts an invocation.

pub mod http;
mod stall;
