//! Control-plane settings: a TOML file (unknown keys are an error), with the embedded
//! backends as defaults so a bare config needs no servers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::artifacts::S3Config;
use crate::auth::AuthConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the API listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest component accepted (default 50 MiB).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Holds the embedded database, filesystem registry and upload staging.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub metadata: MetadataConfig,
    #[serde(default)]
    pub artifacts: ArtifactsConfig,
    pub auth: AuthConfig,
    #[serde(default)]
    pub grpc: GrpcConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub tenancy: crate::tenancy::TenancyConfig,
    #[serde(default)]
    pub collector: crate::collector::CollectorConfig,
    #[serde(default)]
    pub timers: crate::timers::TimersConfig,
}

/// The listener workers dial.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    #[serde(default = "default_grpc_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain and key: with both, the listener speaks TLS only.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: default_grpc_listen(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Liveness and scheduling. One replica schedules at a time, under a lease in the
/// metadata database; the others take over when it lapses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How often workers heartbeat.
    pub heartbeat_interval_ms: u64,
    /// A worker silent this long is lost; its apps move to other workers.
    pub lost_after_ms: u64,
    /// How long a scheduler's lease lasts without renewal (the failover time).
    pub lease_ttl_ms: u64,
    /// How often the scheduler reconciles (it also runs on every change it hears of).
    pub interval_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1000,
            lost_after_ms: 5000,
            lease_ttl_ms: 5000,
            interval_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum MetadataConfig {
    /// SQLite file (default `DATA_DIR/metadata.db`).
    #[default]
    Embedded,
    Postgres {
        url: String,
        /// Schema for the tables (created if missing); default the search path's.
        schema: Option<String>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ArtifactsConfig {
    /// Files under `DATA_DIR/components`.
    #[default]
    Fs,
    S3(S3Config),
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7071))
}

fn default_max_upload() -> u64 {
    50 << 20
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".stratus/control-plane")
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
