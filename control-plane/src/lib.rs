//! The Stratus control plane: the component registry, app metadata and the `/v1` API.
//!
//! - [`store`]: tenants, apps, versions, bindings, triggers (Postgres or embedded SQLite).
//! - [`artifacts`]: content-addressed component bytes (S3 or the local filesystem).
//! - [`api`]: the axum routes, errors and extractors; [`auth`]: JWT verification.
//! - [`inspect`]: reading a component's imports and exports without compiling it.
//! - [`rollout`]: how a change reaches workers.

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

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod config;
pub mod inspect;
pub mod names;
pub mod rollout;
pub mod server;
pub mod store;
pub mod upload;
