//! `stratus-worker`: registers with the control plane, runs the apps assigned to it, and
//! serves HTTP for every app of its pool; SIGTERM drains it first.

mod config;

use std::sync::Arc;

use anyhow::Context;
use stratus_worker::agent::Agent;
use stratus_worker::capabilities::Providers;
use stratus_worker::runtime::Runtime;
use stratus_worker::trigger::forward::Forwarder;
use stratus_worker::trigger::http::Target;
use stratus_worker::trigger::routes::Routes;

// Every invocation allocates a fresh store, contexts and tables; mimalloc keeps that
// off glibc malloc's slow paths.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let config = config::Config::load();
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
        .and_then(|rt| rt.block_on(run(config)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let agent_config = config.agent(listener.local_addr()?)?;
    let runtime = Runtime::new(config.limits.runtime_config(config.data_dir.join("cache")))?;
    let routes = Arc::new(Routes::default());
    let banner = format!(
        "Worker {} (pool {}) serving on http://{}",
        agent_config.worker_id,
        agent_config.pool,
        listener.local_addr()?
    );
    let agent = Agent::new(
        agent_config,
        runtime,
        routes.clone(),
        Arc::new(Providers::with_environment(config::environment())),
        stratus_worker::queues::serve_embedded(&config.data_dir)?,
    )?;
    // The listener serves at once (apps still loading answer 503); the banner waits
    // until what ran here last is loaded again, each app on its own.
    let restored = agent.restore();
    tokio::spawn(async move {
        restored.await;
        println!("{banner}");
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (stop_serving, serving_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stratus_worker::signal::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let http = tokio::spawn(stratus_worker::trigger::http::serve(
        listener,
        Target::Routes(
            routes,
            Forwarder::new(config.limits.timeout() + std::time::Duration::from_secs(5)),
        ),
        config.limits.timeout(),
        until(serving_stopped),
    ));
    // The listener keeps answering while the apps drain to other workers.
    agent.run(until(stopped)).await?;
    let _ = stop_serving.send(true);
    http.await
        .context("the HTTP listener")?
        .context("serving apps")?;
    Ok(())
}
