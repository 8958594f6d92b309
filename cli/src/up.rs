//! `fnctl up`: the control plane and its workers in one process, on embedded defaults
//! (SQLite metadata, components on disk, a local signing key), logged in automatically.
//! The workers follow the control plane over loopback gRPC, on the same code path as
//! `stratus-worker` processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use stratus_control_plane::auth::{Algorithm, AuthConfig, KeyConfig, Role};
use stratus_control_plane::config::{
    ArtifactsConfig, Config, GrpcConfig, MetadataConfig, SchedulerConfig,
};
use stratus_control_plane::server::ControlPlane;
use stratus_control_plane::tenancy::TenancyConfig;
use stratus_worker::agent::{Agent, AgentConfig};
use stratus_worker::capabilities::Providers;
use stratus_worker::runtime::Runtime;
use stratus_worker::trigger::forward::Forwarder;
use stratus_worker::trigger::http::Target;
use stratus_worker::trigger::routes::Routes;

use crate::config::Credentials;

/// The one tenant of a local platform.
pub const LOCAL_TENANT: &str = "local";

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl up
  fnctl deploy examples/hello.wasm --app hello --route /hello
  curl http://127.0.0.1:8080/hello")]
pub struct UpArgs {
    /// Where deployed apps are served (worker N on this port + N - 1).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Workers to run; each answers for every app.
    #[arg(long, default_value_t = 1)]
    workers: u8,
    /// Where the worker API listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc: SocketAddr,
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
    limits: stratus_worker::limits::LimitArgs,
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
            worker_audience: None,
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
        grpc: GrpcConfig {
            listen: args.grpc,
            ..GrpcConfig::default()
        },
        scheduler: SchedulerConfig::default(),
        collector: Default::default(),
        timers: Default::default(),
        // One trusted user: bindings name endpoints directly, as `fnctl dev`'s do.
        tenancy: TenancyConfig {
            direct_bindings: true,
            memory_max_mb: stratus_proto::providers::MEMORY_DEFAULT_CAPACITY >> 20,
            ..TenancyConfig::default()
        },
    };
    anyhow::ensure!(
        (1..=16).contains(&args.workers),
        "--workers is from 1 to 16"
    );
    let cp = ControlPlane::open(&config).await?;
    let api = tokio::net::TcpListener::bind(args.api)
        .await
        .with_context(|| format!("listening on {} for the API", args.api))?;
    let grpc = tokio::net::TcpListener::bind(args.grpc)
        .await
        .with_context(|| format!("listening on {} for workers", args.grpc))?;
    let grpc_addr = grpc.local_addr()?;
    // Worker N listens on the apps port + N - 1; every one answers for every app.
    let mut app_listeners = Vec::new();
    for i in 0..args.workers {
        let addr = SocketAddr::new(
            args.listen.ip(),
            if args.listen.port() == 0 {
                0
            } else {
                args.listen.port().saturating_add(u16::from(i))
            },
        );
        app_listeners.push(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for apps"))?,
        );
    }
    let api_addr = api.local_addr()?;
    let apps_addrs = app_listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()?;
    let token = cp.state.auth.mint(
        "fnctl-up",
        LOCAL_TENANT,
        Role::Operator,
        Duration::from_secs(30 * 86400),
    )?;
    let worker_token =
        cp.state
            .auth
            .mint_worker("fnctl-up", "default", Duration::from_secs(365 * 86400))?;
    // The workers talk to the control plane over loopback gRPC, exactly as remote ones
    // do; they share one runtime and one set of providers (an embedded store can be
    // opened once per process). Everything listens at once; the first line announces
    // the platform once each worker has loaded what it ran last, each app on its own.
    let runtime = Runtime::new(args.limits.runtime_config(data_dir.join("cache")))?;
    let providers = Arc::new(Providers::with_environment(crate::config::environment()));
    // One set of embedded queues for the process: `fnctl queue send` feeds them.
    let queues = stratus_worker::queues::serve_embedded(&data_dir)?;
    let mut agents = Vec::new();
    let mut restores = Vec::new();
    for (i, (listener, addr)) in app_listeners.into_iter().zip(&apps_addrs).enumerate() {
        let routes = Arc::new(Routes::default());
        let agent = Agent::new(
            AgentConfig {
                control_plane: format!("http://{grpc_addr}"),
                token: worker_token.clone(),
                ca_cert: None,
                worker_id: format!("local-{}", i + 1),
                pool: "default".into(),
                labels: Default::default(),
                capacity: 1000,
                http_address: addr.to_string(),
                state_dir: data_dir.join("workers").join(format!("local-{}", i + 1)),
                providers_dir: data_dir.clone(),
                // One trusted user stops the whole platform at once: nothing to move to.
                drain_timeout: Duration::ZERO,
            },
            runtime.clone(),
            routes.clone(),
            providers.clone(),
            queues.clone(),
        )?;
        restores.push(agent.restore());
        agents.push((agent, routes, listener));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            stratus_worker::signal::shutdown_signal().await;
            let _ = stop.send(true);
        });
    }
    let announced = async move {
        futures::future::join_all(restores).await;
        let urls: Vec<String> = apps_addrs.iter().map(|a| format!("http://{a}")).collect();
        let login = Credentials {
            endpoint: format!("http://{api_addr}"),
            token,
        };
        let result = announce(&login, &data_dir, &urls, grpc_addr);
        if result.is_err() {
            let _ = stop.send(true);
        }
        result
    };
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let timeout = args.limits.timeout();
    let mut workers = Vec::new();
    for (agent, routes, listener) in agents {
        let serve = stratus_worker::trigger::http::serve(
            listener,
            Target::Routes(routes, Forwarder::new(timeout + Duration::from_secs(5))),
            timeout,
            until_stopped(stopped.clone()),
        );
        let run = agent.run(until_stopped(stopped.clone()));
        workers.push(async move {
            let (served, ran) = tokio::join!(serve, run);
            served.context("serving apps")?;
            ran
        });
    }
    let (cp_result, worker_results, announced) = tokio::join!(
        cp.serve(api, grpc, until_stopped(stopped.clone())),
        futures::future::join_all(workers),
        announced,
    );
    announced?;
    cp_result?;
    for r in worker_results {
        r?;
    }
    Ok(())
}

/// Saves this platform's login and says where everything is.
fn announce(
    creds: &Credentials,
    data_dir: &std::path::Path,
    urls: &[String],
    grpc_addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    // This platform's own login, always, in its data directory: scripts use it, and so
    // does a user whose saved login is a remote one.
    let own_login = std::path::absolute(data_dir.join("login"))?;
    creds.save_in(&own_login)?;
    println!(
        "Stratus is up: API on {}, apps on {} (worker API on {grpc_addr})",
        creds.endpoint,
        urls.join(", ")
    );
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
                "Logged in as operator of tenant `{LOCAL_TENANT}` (credentials in {})",
                saved.display()
            );
        }
    }
    println!("Next: fnctl deploy app.wasm --app NAME --route /NAME");
    Ok(())
}
