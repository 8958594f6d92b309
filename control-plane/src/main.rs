//! `stratus-control-plane`: serve the API, or mint a token (the admin command).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stratus_control_plane::auth::{Auth, Role};
use stratus_control_plane::config::Config;
use stratus_control_plane::rollout::RecordOnly;
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
        after_help = "Example:\n  stratus-control-plane mint-token --tenant acme --role deployer --ttl 30d"
    )]
    MintToken {
        #[arg(long)]
        tenant: String,
        /// viewer, deployer or admin.
        #[arg(long)]
        role: Role,
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
            subject,
            ttl,
        } => {
            stratus_control_plane::names::check_tenant(&tenant)?;
            let auth = Auth::new(&config.auth)?;
            println!("{}", auth.mint(&subject, &tenant, role, ttl)?);
            Ok(())
        }
        Command::Serve => {
            let cp = ControlPlane::open(&config, Arc::new(RecordOnly)).await?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            println!("Control plane API on http://{}", listener.local_addr()?);
            cp.serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
        }
    }
}
