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
