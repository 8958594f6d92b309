//! `fnctl up`: the control plane and one worker in one process, on embedded defaults
//! (SQLite metadata, components on disk, a local signing key), logged in automatically.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use stratus_control_plane::artifacts::FsArtifacts;
use stratus_control_plane::auth::{Algorithm, AuthConfig, KeyConfig, Role};
use stratus_control_plane::config::{ArtifactsConfig, Config, MetadataConfig};
use stratus_control_plane::server::ControlPlane;
use stratus_worker::runtime::Runtime;
use stratus_worker::trigger::http::Target;
use stratus_worker::trigger::routes::Routes;

use crate::config::Credentials;
use crate::local_worker::LocalWorker;

/// The one tenant of a local platform.
const LOCAL_TENANT: &str = "local";

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl up
  fnctl deploy examples/hello.wasm --app hello --route /hello
  curl http://127.0.0.1:8080/hello")]
pub struct UpArgs {
    /// Where deployed apps are served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the control-plane API is served.
    #[arg(long, default_value = "127.0.0.1:7070")]
    api: SocketAddr,
    /// Directory for metadata, components, embedded stores and the compile cache.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Largest component accepted, in MiB.
    #[arg(long, default_value_t = 50)]
    max_upload_mb: u64,
    #[command(flatten)]
    limits: crate::limits::LimitArgs,
}

/// The local HMAC key, made on first start and kept so saved tokens survive restarts.
fn signing_secret(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("signing-key");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().to_string()),
        Ok(_) => anyhow::bail!(
            "{} is too short; delete it to make a new key",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    Ok(secret)
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(crate::config::default_data_dir);
    let cp_dir = data_dir.join("control-plane");
    let config = Config {
        listen: args.api,
        max_upload_bytes: args.max_upload_mb << 20,
        data_dir: cp_dir.clone(),
        metadata: MetadataConfig::Embedded,
        artifacts: ArtifactsConfig::Fs,
        auth: AuthConfig {
            issuer: "stratus-local".into(),
            audience: "stratus".into(),
            keys: vec![KeyConfig {
                kid: "local".into(),
                algorithm: Algorithm::HS256,
                secret: Some(signing_secret(&cp_dir)?),
                secret_file: None,
                public_key_file: None,
                private_key_file: None,
            }],
            signing_kid: None,
        },
    };
    let runtime = Runtime::new(args.limits.runtime_config(data_dir.join("cache")))?;
    let routes = Arc::new(Routes::default());
    let worker = LocalWorker {
        runtime,
        routes: routes.clone(),
        artifacts: Arc::new(FsArtifacts::new(&cp_dir.join("components"))?),
        providers: Default::default(),
        data_dir: data_dir.clone(),
    };
    let cp = ControlPlane::open(&config, Arc::new(worker)).await?;
    cp.roll_out_all().await?;

    let api = tokio::net::TcpListener::bind(args.api)
        .await
        .with_context(|| format!("listening on {} for the API", args.api))?;
    let apps = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} for apps", args.listen))?;
    let api_addr = api.local_addr()?;
    let apps_addr = apps.local_addr()?;
    let token = cp.state.auth.mint(
        "fnctl-up",
        LOCAL_TENANT,
        Role::Admin,
        Duration::from_secs(30 * 86400),
    )?;
    let creds = Credentials {
        endpoint: format!("http://{api_addr}"),
        token,
    };
    // This platform's own login, always, in its data directory: scripts use it, and so
    // does a user whose saved login is a remote one.
    let own_login = std::path::absolute(data_dir.join("login"))?;
    creds.save_in(&own_login)?;
    println!("Stratus is up: API on http://{api_addr}, apps on http://{apps_addr}");
    // Never replace a login to a remote control plane with this local one.
    match Credentials::saved().ok().flatten() {
        Some(existing) if !existing.is_local() => {
            println!(
                "Your saved login ({}) is kept; to use this platform run:\n  export STRATUS_CONFIG_DIR={}",
                existing.endpoint,
                own_login.display()
            );
        }
        _ => {
            let saved = creds.save()?;
            println!(
                "Logged in as admin of tenant `{LOCAL_TENANT}` (credentials in {})",
                saved.display()
            );
        }
    }
    println!("Next: fnctl deploy app.wasm --app NAME --route /NAME");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::dev::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let timeout = args.limits.timeout();
    let (api_result, apps_result) = tokio::join!(
        cp.serve(api, until_stopped(stopped.clone())),
        stratus_worker::trigger::http::serve(
            apps,
            Target::Routes(routes),
            timeout,
            until_stopped(stopped.clone())
        ),
    );
    api_result?;
    apps_result.context("serving apps")?;
    Ok(())
}
