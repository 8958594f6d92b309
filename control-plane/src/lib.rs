//! The Stratus control plane: the component registry, app metadata and the `/v1` API.
//!
//! - [`metadata`]: tenants, apps, versions, bindings, triggers, workers and placements
//!   (Postgres or embedded SQLite).
//! - [`artifacts`]: content-addressed component bytes (S3 or the local filesystem).
//! - [`api`]: the axum routes, errors and extractors; [`auth`]: JWT verification.
//! - [`collector`]: deleting components no version references, after a grace period.
//! - [`inspect`]: reading a component's imports and exports without compiling it.
//! - [`tenancy`]: what tenants' bindings may reach (backends, endpoints, secrets).
//! - [`grpc`]: the worker API; [`scheduler`]: placing apps on workers, on one replica
//!   at a time.
//! - [`timers`]: timer triggers, fired once per scheduled time across the replicas.

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
pub mod collector;
pub mod config;
pub mod grpc;
pub mod inspect;
pub mod metadata;
pub mod names;
pub mod nudge;
pub mod scheduler;
pub mod server;
pub mod tenancy;
pub mod timers;
pub mod upload;
