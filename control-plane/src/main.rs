//! `stratus-control-plane`: serve the API, or mint a token (the admin command).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stratus_control_plane::auth::{Auth, Role};
use stratus_control_plane::config::Config;
use stratus_control_plane::server::ControlPlane;

#[derive(Parser)]
#[command(
    name = "stratus-control-plane",
    version,
    about = "The Stratus control plane"
)]
struct Cli {
    /// The TOML config file.
    #[arg(
        long,
        short,
        env = "STRATUS_CONFIG",
        global = true,
        default_value = "control-plane.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the /v1 API.
    Serve,
    /// Print a signed token for a tenant and role.
    #[command(
        after_help = "Examples:\n  stratus-control-plane mint-token --tenant acme --role deployer --ttl 30d\n  stratus-control-plane mint-token --worker --pool default --ttl 365d"
    )]
    MintToken {
        #[arg(long, required_unless_present = "worker")]
        tenant: Option<String>,
        /// viewer, deployer or admin.
        #[arg(long, required_unless_present = "worker")]
        role: Option<Role>,
        /// A worker token (for the worker API only) instead of a user token.
        #[arg(long, requires = "pool", conflicts_with_all = ["tenant", "role"])]
        worker: bool,
        /// The pool a worker token may join.
        #[arg(long)]
        pool: Option<String>,
        /// Who the token is for (the `sub` claim).
        #[arg(long, default_value = "admin-cli")]
        subject: String,
        /// Lifetime: a number followed by s, m, h or d.
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected e.g. 30m, 24h, 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{s}`: the unit is one of s, m, h, d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // reqwest enables rustls's ring backend and the AWS SDK and tonic its aws-lc-rs one;
    // with both present rustls needs the process to choose.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::MintToken {
            tenant,
            role,
            worker,
            pool,
            subject,
            ttl,
        } => {
            let auth = Auth::new(&config.auth)?;
            let token = match (worker, pool, tenant, role) {
                (true, Some(pool), _, _) => {
                    stratus_control_plane::names::check_pool(&pool)?;
                    auth.mint_worker(&subject, &pool, ttl)?
                }
                (false, _, Some(tenant), Some(role)) => {
                    stratus_control_plane::names::check_tenant(&tenant)?;
                    auth.mint(&subject, &tenant, role, ttl)?
                }
                _ => anyhow::bail!("give --tenant and --role, or --worker and --pool"),
            };
            println!("{token}");
            Ok(())
        }
        Command::Serve => {
            let cp = ControlPlane::open(&config).await?;
            let api = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            let grpc = tokio::net::TcpListener::bind(config.grpc.listen)
                .await
                .with_context(|| format!("listening on {} for workers", config.grpc.listen))?;
            println!(
                "Control plane API on http://{}, worker API on http://{}",
                api.local_addr()?,
                grpc.local_addr()?
            );
            cp.serve(api, grpc, shutdown_signal()).await
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
