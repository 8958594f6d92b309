//! The contract between Stratus processes, and the vocabulary both sides of it share.
//!
//! - [`pb`]: the worker gRPC API (`stratus.worker.v1`), generated from `worker.proto`.
//! - [`binding`]: the binding syntax `KIND[.NAME]=PROVIDER[:OPT=VAL,…]`.
//! - [`providers`]: which providers each capability has and their options, checked
//!   without connecting.
//! - [`interfaces`]: the WIT packages and versions the platform serves, which
//!   capability each belongs to, and the import rule.
//! - [`names`]: app names, tenant ids and HTTP routes.
//! - [`triggers`]: queue triggers, their sources and delivery options.
//!
//! It depends on no runtime: the control plane links it without wasmtime or any
//! provider SDK.

// Unit tests may unwrap: a panic there is a failed test, not a crashed process.
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
pub mod interfaces;
pub mod names;
pub mod providers;
pub mod triggers;

/// The generated gRPC messages and services.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("stratus.worker.v1");
}
