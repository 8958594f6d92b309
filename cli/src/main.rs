//! `fnctl`: the Stratus command line.

mod client;
mod config;
mod dev;
mod manage;
mod manifest;
mod output;
mod rollout;
mod triggers;
mod up;
mod workers;

use clap::{Parser, Subcommand};

// Every invocation allocates a fresh store, contexts and tables; mimalloc keeps that
// off glibc malloc's slow paths.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fnctl",
    version,
    about = "Run and manage Stratus functions",
    after_help = "\
Get started locally:
  fnctl up                                             # control plane + worker, embedded
  fnctl deploy app.wasm --app hello --route /hello     # in another terminal
  curl http://127.0.0.1:8080/hello

Against a remote control plane:
  fnctl login --endpoint https://stratus.example.com --token-stdin < token.txt"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one component locally, without a control plane.
    Dev(dev::DevArgs),
    /// Run a control plane and its workers in this process, on embedded defaults.
    Up(up::UpArgs),
    /// Save the control plane's address and your token.
    Login(manage::LoginArgs),
    /// Upload a component as a new version of an app and make it live.
    Deploy(manage::DeployArgs),
    /// List your apps.
    Apps(manage::AppsArgs),
    /// List an app's versions.
    Versions(manage::VersionsArgs),
    /// Make an earlier version live again.
    Rollback(manage::RollbackArgs),
    /// Set or remove an app's bindings without redeploying.
    Bind(manage::BindArgs),
    /// Delete an app with its versions, bindings and routes.
    Delete(manage::DeleteArgs),
    /// List the workers (pool, labels, state, load), or drain one.
    Workers(workers::WorkersArgs),
    /// List an app's triggers with their state.
    Triggers(triggers::TriggersArgs),
    /// List an app's timer runs: scheduled time, start, duration, outcome.
    Runs(triggers::RunsArgs),
    /// Feed an embedded queue of `fnctl up` or `fnctl dev`.
    Queue(triggers::QueueArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // reqwest enables rustls's ring backend and the AWS SDK and tonic its aws-lc-rs one;
    // with both present rustls needs the process to choose.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    config::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Up(args) => up::run(args).await,
            Command::Login(args) => manage::login(args).await,
            Command::Deploy(args) => manage::deploy(args).await,
            Command::Apps(args) => manage::apps(args).await,
            Command::Versions(args) => manage::versions(args).await,
            Command::Rollback(args) => manage::rollback(args).await,
            Command::Bind(args) => manage::bind(args).await,
            Command::Delete(args) => manage::delete(args).await,
            Command::Workers(args) => workers::run(args).await,
            Command::Triggers(args) => triggers::triggers(args).await,
            Command::Runs(args) => triggers::runs(args).await,
            Command::Queue(args) => triggers::queue(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
