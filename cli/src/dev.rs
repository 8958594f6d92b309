//! `fnctl dev`: run one component locally on the same worker runtime the cloud uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use stratus_proto::triggers::QueueTrigger;
use stratus_worker::binding::Binding;
use stratus_worker::capabilities::Capabilities;
use stratus_worker::runtime::Runtime;
use stratus_worker::trigger::http::Target;
use stratus_worker::trigger::queue::QueueConsumer;

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl dev app.wasm --bind kv=embedded
  fnctl dev app.wasm --bind kv=redis:url=redis://127.0.0.1:6379 --bind config.greeting=hi
  fnctl dev app.wasm --bind kv=memory --bind kv.cache=redis --listen 127.0.0.1:3000
  fnctl dev app.wasm --bind kv=dynamo:table=my-table,region=eu-west-1

Providers for kv: memory[:max_mb=N], embedded[:path=FILE], redis[:url=URL],
dynamo[:table=NAME,region=REGION,endpoint=URL,create_table=true|false]

Queue triggers: fnctl dev jobs.wasm --bind kv=embedded --queue jobs=embedded
  then: fnctl queue send jobs 'resize photo-17'")]
pub struct DevArgs {
    /// The component to run (a `wasm32-wasip2` component exporting wasi:http).
    component: PathBuf,
    /// Bind a capability: KIND[.NAME]=PROVIDER[:OPT=VAL,...] or config.KEY=VALUE.
    #[arg(long = "bind", short = 'b', value_name = "BINDING")]
    bindings: Vec<Binding>,
    /// Address to serve HTTP on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// App name; buckets are namespaced by it (default: the file name).
    #[arg(long)]
    app: Option<String>,
    #[command(flatten)]
    limits: stratus_worker::limits::LimitArgs,
    /// Directory for embedded stores and the compiled-component cache.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also start the component on a queue's messages: NAME=SOURCE[:OPT=VAL,...]
    /// (repeatable); feed an `embedded` one with `fnctl queue send NAME BODY`.
    #[arg(long = "queue", short = 'q', value_name = "TRIGGER")]
    queues: Vec<QueueTrigger>,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(&args.component)
        .await
        .with_context(|| format!("reading {}", args.component.display()))?;
    let name = match &args.app {
        Some(n) => n.clone(),
        None => default_app_name(&args.component),
    };
    let data_dir = args
        .data_dir
        .unwrap_or_else(crate::config::default_data_dir);
    let runtime = Runtime::new(args.limits.runtime_config(data_dir.join("cache")))?;
    let providers =
        stratus_worker::capabilities::Providers::with_environment(crate::config::environment());
    let capabilities = Capabilities::open_shared(&args.bindings, "app", &data_dir, &providers)
        .await
        .context("binding capabilities")?;
    let app = runtime
        .load(&name, &bytes, capabilities)
        .with_context(|| format!("loading {}", args.component.display()))?;
    let app = Arc::new(app);
    let mut consumers = Vec::new();
    if !args.queues.is_empty() {
        let queues = stratus_worker::queues::serve_embedded(&data_dir)?;
        for trigger in args.queues {
            println!("Consuming queue trigger {}", trigger.name);
            let consumer = format!("dev.{name}.{}", trigger.name);
            let concurrency = trigger.max_concurrency;
            consumers.push(QueueConsumer::start(
                app.clone(),
                trigger,
                concurrency,
                consumer,
                queues.clone(),
            ));
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("Serving {name} on http://{addr}");
    let timeout = app.timeout();
    stratus_worker::trigger::http::serve(
        listener,
        Target::App(app),
        timeout,
        stratus_worker::signal::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// The file name, with characters app names may not hold replaced by `-`.
pub fn default_app_name(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if name.is_empty() { "app".into() } else { name }
}
