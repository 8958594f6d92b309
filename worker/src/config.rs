//! `stratus-worker`'s settings: flags, each also readable from a `STRATUS_WORKER_*`
//! environment variable (the only place the worker reads its environment), so an
//! autoscaling group's launch template can set them either way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stratus_worker::agent::AgentConfig;
use stratus_worker::limits::LimitArgs;

#[derive(Parser, Debug)]
#[command(
    name = "stratus-worker",
    version,
    about = "A Stratus worker: runs the apps the control plane assigns it and answers HTTP for every app of its pool",
    after_help = "\
Example:
  stratus-worker --control-plane http://cp.internal:7071 --token-file worker.jwt \\
    --pool default --label zone=a --listen 0.0.0.0:8080 --advertise 10.0.1.5:8080"
)]
pub struct Config {
    /// The control plane's worker API: http://HOST:PORT, or https:// with TLS.
    #[arg(long, env = "STRATUS_WORKER_CONTROL_PLANE")]
    pub control_plane: String,
    /// A worker token (`stratus-control-plane mint-token --worker --pool NAME`).
    #[arg(long, env = "STRATUS_WORKER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the worker token.
    #[arg(long, env = "STRATUS_WORKER_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate of the control plane's TLS certificate.
    #[arg(long, env = "STRATUS_WORKER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// This worker's id (default: made on first start and kept in the data directory).
    #[arg(long, env = "STRATUS_WORKER_ID")]
    pub id: Option<String>,
    #[arg(long, env = "STRATUS_WORKER_POOL", default_value = "default")]
    pub pool: String,
    /// KEY=VALUE, repeatable (e.g. zone=a); replicas of an app prefer different labels.
    #[arg(long = "label", env = "STRATUS_WORKER_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Apps this worker holds at most.
    #[arg(long, env = "STRATUS_WORKER_CAPACITY", default_value_t = 1000)]
    pub capacity: u32,
    /// Where apps are served (every app of the pool, forwarded when held elsewhere).
    #[arg(long, env = "STRATUS_WORKER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The address the pool's other workers reach `--listen` at (default: the address
    /// `--listen` bound, which must then be a specific one).
    #[arg(long, env = "STRATUS_WORKER_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// Assignments, components, the compile cache and embedded stores.
    #[arg(
        long,
        env = "STRATUS_WORKER_DATA_DIR",
        default_value = ".stratus/worker"
    )]
    pub data_dir: PathBuf,
    /// How long SIGTERM waits for this worker's apps to move to other workers.
    #[arg(
        long,
        env = "STRATUS_WORKER_DRAIN_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub drain_timeout_ms: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl Config {
    pub fn load() -> Self {
        Self::parse()
    }

    /// What the agent needs, with the token read and the worker id settled; `bound` is
    /// where `--listen` ended up (its port, when `--listen` asked for any).
    pub fn agent(&self, bound: SocketAddr) -> anyhow::Result<AgentConfig> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), None) => t.trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_string(),
            _ => anyhow::bail!("give the worker token with --token or --token-file"),
        };
        let ca_cert = self
            .ca_file
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
            .transpose()?;
        let advertise = match self.advertise {
            Some(a) => a,
            None if bound.ip().is_unspecified() => {
                anyhow::bail!(
                    "--listen {} is not an address peers can reach; set --advertise",
                    self.listen
                )
            }
            None => bound,
        };
        let mut labels = BTreeMap::new();
        for label in self.labels.iter().filter(|l| !l.is_empty()) {
            let (k, v) = label
                .split_once('=')
                .with_context(|| format!("label `{label}` is not KEY=VALUE"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let worker_id = match &self.id {
            Some(id) => id.clone(),
            None => kept_id(&self.data_dir)?,
        };
        Ok(AgentConfig {
            control_plane: self.control_plane.clone(),
            token,
            ca_cert,
            worker_id,
            pool: self.pool.clone(),
            labels,
            capacity: self.capacity,
            http_address: advertise.to_string(),
            state_dir: self.data_dir.join("state"),
            providers_dir: self.data_dir.clone(),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
        })
    }
}

/// The id made on this data directory's first start, so a restarted worker is the same
/// worker to the control plane.
fn kept_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("worker-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let id: String = format!("w-{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(14)
        .collect();
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// The worker's environment, for bindings that name a secret by environment variable
/// (`password_env=NAME`); read here, the one place the worker reads its environment.
pub fn environment() -> std::collections::BTreeMap<String, String> {
    std::env::vars().collect()
}
