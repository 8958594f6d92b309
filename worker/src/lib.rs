//! The Stratus worker: runs WebAssembly components on wasmtime and provides their
//! capabilities through providers bound at deploy time.
//!
//! - [`runtime`]: engine, component loading, per-invocation instances.
//! - [`capabilities`]: one trait per capability, one module per provider, WIT hosts.
//! - [`trigger`]: what starts invocations (HTTP now; queues and timers later).
//! - [`binding`]: the `KIND[.NAME]=PROVIDER[:OPTS]` binding syntax.

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

pub mod binding;
pub mod capabilities;
mod generated;
pub mod runtime;
pub mod trigger;
