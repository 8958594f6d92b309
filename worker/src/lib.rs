//! The Stratus worker: runs WebAssembly components on wasmtime and provides their
//! capabilities through providers bound at deploy time.
//!
//! - [`runtime`]: engine, component loading, per-invocation instances.
//! - [`capabilities`]: one trait per capability, one module per provider, WIT hosts.
//! - [`trigger`]: what starts invocations (HTTP, queue consumers, timer runs), and
//!   forwarding to the pool's other workers.
//! - [`queues`]: one trait for queue sources, one module per source.
//! - [`agent`]: following the control plane's assignments over gRPC.
//! - [`binding`]: the `KIND[.NAME]=PROVIDER[:OPTS]` binding syntax (from `stratus-proto`).
//! - [`limits`], [`signal`]: the runtime flags and the shutdown signal the binaries share.

// Unit tests may unwrap: a panic there is a failed test, not a crashed worker.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod agent;
pub use stratus_proto::binding;
pub mod capabilities;
mod generated;
pub mod limits;
pub mod queues;
pub mod runtime;
pub mod signal;
pub mod trigger;
