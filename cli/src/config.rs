//! The only place `fnctl` reads its environment: logging, the local data directory, and
//! where the control plane is and which token to send.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// `RUST_LOG` filters logs (default `info`); guest output is logged under target `guest`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Where local state lives: `STRATUS_DATA_DIR`, else `.stratus` in the current directory
/// (embedded key-value files, the compiled-component cache, `fnctl up`'s control plane).
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("STRATUS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".stratus"))
}

/// The control plane to talk to and the bearer token to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub endpoint: String,
    pub token: String,
}

const CREDENTIALS_FILE: &str = "credentials.toml";

/// `STRATUS_CONFIG_DIR`, else the user's config directory + `stratus`.
fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STRATUS_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    dirs::config_dir()
        .map(|d| d.join("stratus"))
        .context("no config directory for this user; set STRATUS_CONFIG_DIR")
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join(CREDENTIALS_FILE))
}

impl Credentials {
    /// The saved login only, without environment overrides.
    pub fn saved() -> anyhow::Result<Option<Self>> {
        match std::fs::read_to_string(credentials_path()?) {
            Ok(text) => Ok(Some(
                toml::from_str(&text).context("reading saved credentials")?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading saved credentials"),
        }
    }

    /// Whether the endpoint is on this machine (a local platform's).
    pub fn is_local(&self) -> bool {
        let host = self
            .endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|h| host.starts_with(h))
    }

    /// The saved login, with `STRATUS_ENDPOINT` and `STRATUS_TOKEN` taking precedence.
    pub fn load() -> anyhow::Result<Self> {
        let saved = Self::saved()?;
        let endpoint = std::env::var("STRATUS_ENDPOINT")
            .ok()
            .or_else(|| saved.as_ref().map(|c| c.endpoint.clone()));
        let token = std::env::var("STRATUS_TOKEN")
            .ok()
            .or_else(|| saved.as_ref().map(|c| c.token.clone()));
        match (endpoint, token) {
            (Some(endpoint), Some(token)) => Ok(Self { endpoint, token }),
            _ => anyhow::bail!(
                "not logged in: run `fnctl login --endpoint URL --token TOKEN` (or `fnctl up` for a local platform), or set STRATUS_ENDPOINT and STRATUS_TOKEN"
            ),
        }
    }

    /// Saves the login where `fnctl` looks for it, readable by the user only.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        self.save_in(&config_dir()?)
    }

    /// Saves the login as `DIR/credentials.toml`, so `DIR` works as `STRATUS_CONFIG_DIR`.
    /// The file is readable by the user only and appears whole (written aside, then
    /// renamed), so a script may wait for it.
    pub fn save_in(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(CREDENTIALS_FILE);
        let staged = dir.join(format!(".{CREDENTIALS_FILE}.tmp"));
        let text = toml::to_string(self).context("encoding credentials")?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&staged)
            .with_context(|| format!("writing {}", staged.display()))?;
        // `mode` applies only when the file is created; tighten a leftover one too.
        #[cfg(unix)]
        std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("restricting {}", staged.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .with_context(|| format!("writing {}", staged.display()))?;
        std::fs::rename(&staged, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// This process's environment, for bindings that name a secret by environment variable
/// (`password_env=NAME`) under `fnctl dev` and `fnctl up`.
pub fn environment() -> std::collections::BTreeMap<String, String> {
    std::env::vars().collect()
}
