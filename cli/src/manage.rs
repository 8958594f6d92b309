//! The control-plane commands: login, deploy, apps, versions, rollback, bind, delete.

// Reading a `serde_json::Value` by key yields `Null` when the key is missing; it never
// panics, which is what clippy's indexing lint guards against.
#![allow(clippy::indexing_slicing)]

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use stratus_proto::binding::Binding;

use crate::client::Client;
use crate::config::Credentials;
use crate::output::{self, OutputArgs};

pub fn client() -> anyhow::Result<Client> {
    Client::new(Credentials::load()?)
}

/// App names go into URL paths; refuse what would change the path before sending.
fn app_path(app: &str) -> anyhow::Result<String> {
    stratus_proto::names::check_app_name(app)?;
    Ok(format!("/v1/apps/{app}"))
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl login --endpoint https://stratus.example.com --token eyJhbGciOi...
  echo \"$TOKEN\" | fnctl login --endpoint http://127.0.0.1:7070 --token-stdin")]
pub struct LoginArgs {
    /// The control plane's base URL.
    #[arg(long)]
    endpoint: String,
    /// A bearer token (from `stratus-control-plane mint-token` or your admin).
    #[arg(
        long,
        conflicts_with = "token_stdin",
        required_unless_present = "token_stdin"
    )]
    token: Option<String>,
    /// Read the token from standard input instead (keeps it out of shell history).
    #[arg(long)]
    token_stdin: bool,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let token = match args.token {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_line(&mut t)
                .context("reading the token from stdin")?;
            t.trim().to_string()
        }
    };
    let creds = Credentials {
        endpoint: args.endpoint,
        token,
    };
    // Check before saving, so a typo is caught now rather than at the next deploy.
    let _: Value = Client::new(creds.clone())?
        .get("/v1/apps?limit=1")
        .await
        .context("checking the login")?;
    let path = creds.save()?;
    println!(
        "Logged in to {} (saved to {})",
        creds.endpoint,
        path.display()
    );
    Ok(())
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl deploy app.wasm --app shop --route /shop
  fnctl deploy app.wasm --app shop --bind kv=dynamo:table=shop --bind config.currency=EUR
  fnctl deploy app.wasm --app shop --no-activate        # upload now, `fnctl rollback --to` later
  fnctl deploy app.wasm --app shop --pool default --replicas 2   # or --replicas all
  fnctl deploy jobs.wasm --app jobs --queue jobs=nats:stream=JOBS,batch_size=10,dead_letter=jobs.dead
  fnctl deploy report.wasm --timer 'nightly=cron(0 3 * * *):tz=Europe/Paris,catch_up=one'
  fnctl deploy                                          # everything from ./stratus.toml
  fnctl deploy -f prod.toml --replicas 3                # flags override the file

`--bind` replaces all of the app's bindings; without it the current ones are kept.
`--route`, `--queue` and `--timer` replace the app's triggers of their kind; without
them the current ones are kept.
Queue options: batch_size, window_ms, concurrency, max_receives, dead_letter, backoff
(fixed|exponential), backoff_ms, backoff_max_ms, fifo, visibility_ms.
Timer options: tz, catch_up (skip|one|all), route, retries, backoff_ms.")]
pub struct DeployArgs {
    /// The component (`wasm32-wasip2`); default: the manifest's `component`.
    component: Option<PathBuf>,
    /// The manifest to read (default: `stratus.toml` here, if there is one). Flags
    /// override its keys.
    #[arg(long = "file", short = 'f', value_name = "MANIFEST")]
    manifest: Option<PathBuf>,
    /// App name (default: the file name).
    #[arg(long)]
    app: Option<String>,
    /// Bind a capability: KIND[.NAME]=PROVIDER[:OPT=VAL,...] or config.KEY=VALUE.
    #[arg(long = "bind", short = 'b', value_name = "BINDING")]
    bindings: Vec<Binding>,
    /// Serve the app on this HTTP path prefix (repeatable).
    #[arg(long = "route", short = 'r', value_name = "PATH")]
    routes: Vec<String>,
    /// Start the app on a queue's messages: NAME=SOURCE[:OPT=VAL,...] (repeatable).
    #[arg(long = "queue", short = 'q', value_name = "TRIGGER")]
    queues: Vec<String>,
    /// Start the app on a schedule: NAME=cron(EXPR)|rate(N UNIT)|at(TIME)[:OPT=VAL,...]
    /// (repeatable).
    #[arg(long = "timer", value_name = "TRIGGER")]
    timers: Vec<String>,
    /// Upload without making the new version live.
    #[arg(long)]
    no_activate: bool,
    /// The worker pool to run on (new apps: `default`).
    #[arg(long)]
    pool: Option<String>,
    /// Workers of the pool to run on: a number, or `all` (new apps: 1).
    #[arg(long)]
    replicas: Option<String>,
    /// Return once the version is recorded, without waiting for workers to serve it.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for workers to serve it, in seconds.
    #[arg(long, default_value_t = 120)]
    wait_timeout: u64,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn deploy(mut args: DeployArgs) -> anyhow::Result<()> {
    let file = crate::manifest::Manifest::load(args.manifest.as_deref())?.unwrap_or_default();
    let component = args
        .component
        .clone()
        .or(file.component)
        .context("name the component to deploy, or set `component` in stratus.toml")?;
    args.component = Some(component.clone());
    let app = match args.app.clone().or(file.app) {
        Some(a) => a,
        None => crate::dev::default_app_name(&component),
    };
    let path = format!("{}/versions", app_path(&app)?);
    let mut manifest = serde_json::Map::new();
    manifest.insert("activate".into(), json!(!args.no_activate));
    // Flags override the file, binding by binding.
    let mut bindings: Vec<String> = Vec::new();
    for spec in file.bindings.iter().flatten() {
        let parsed: Binding = spec
            .parse()
            .with_context(|| format!("stratus.toml: binding `{spec}`"))?;
        if !args.bindings.iter().any(|b| b.name() == parsed.name()) {
            bindings.push(parsed.to_string());
        }
    }
    bindings.extend(args.bindings.iter().map(ToString::to_string));
    let rebinding = !bindings.is_empty();
    if rebinding {
        manifest.insert("bindings".into(), json!(bindings));
    }
    let pick = |flags: &Vec<String>, file: Option<Vec<String>>| {
        if flags.is_empty() {
            file
        } else {
            Some(flags.clone())
        }
    };
    if let Some(routes) = pick(&args.routes, file.routes) {
        manifest.insert("routes".into(), json!(routes));
    }
    if let Some(queues) = pick(&args.queues, file.queues) {
        manifest.insert("queues".into(), json!(queues));
    }
    if let Some(timers) = pick(&args.timers, file.timers) {
        manifest.insert("timers".into(), json!(timers));
    }
    if let Some(pool) = args.pool.clone().or(file.pool) {
        manifest.insert("pool".into(), json!(pool));
    }
    if let Some(replicas) = args.replicas.clone().or(file.replicas.map(|r| r.as_arg())) {
        manifest.insert("replicas".into(), json!(replicas));
    }
    let client = client()?;
    // What to restore if no worker can load the new version.
    let previous = client.get::<Value>(&app_path(&app)?).await.ok();
    let progress = if args.output.is_json() || !std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let deployed = client
        .upload(&path, Value::Object(manifest), &component, progress)
        .await?;
    let wait = !args.no_wait && !args.no_activate;
    if args.output.is_json() {
        output::json(&deployed);
        if wait {
            settle(
                &client,
                &app,
                &deployed["app"],
                previous.as_ref(),
                rebinding,
                args.wait_timeout,
                true,
            )
            .await?;
        }
        return Ok(());
    }
    let version = &deployed["version"];
    let digest = version["digest"].as_str().unwrap_or("");
    println!(
        "Deployed {app} version {} ({}, {}, {})",
        version["version"],
        digest.get(..19).unwrap_or(digest),
        output::size(version["size_bytes"].as_u64().unwrap_or(0)),
        if deployed["stored"] == true {
            "uploaded"
        } else {
            "already in the registry"
        },
    );
    let app_view = &deployed["app"];
    if args.no_activate {
        println!(
            "Live version stays {}",
            output::cell(&app_view["live_version"])
        );
    }
    let routes: Vec<String> = app_view["triggers"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t["route"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if routes.is_empty() {
        println!("No HTTP route yet: add one with `--route /{app}`");
    } else {
        println!("Routes: {}", routes.join(", "));
    }
    println!("Bindings: {}", output::cell(&app_view["bindings"]));
    if wait {
        settle(
            &client,
            &app,
            app_view,
            previous.as_ref(),
            rebinding,
            args.wait_timeout,
            false,
        )
        .await?;
    }
    Ok(())
}

/// Waits for the app's new revision to serve. If every worker failed to load it, the
/// previous live version (and bindings, if the deploy replaced them) is made live again
/// (workers kept serving it meanwhile) and the reasons are reported.
async fn settle(
    client: &Client,
    app: &str,
    app_view: &Value,
    previous: Option<&Value>,
    rebound: bool,
    timeout_s: u64,
    quiet: bool,
) -> anyhow::Result<()> {
    let revision = app_view["revision"].as_i64().unwrap_or(0);
    let app_path = app_path(app)?;
    let outcome = crate::rollout::wait(
        client,
        &app_path,
        revision,
        std::time::Duration::from_secs(timeout_s),
        quiet,
    )
    .await?;
    match outcome {
        crate::rollout::Outcome::Ready { ready } => {
            if !quiet {
                println!(
                    "Serving on {ready} worker{} (pool {}, replicas {})",
                    if ready == 1 { "" } else { "s" },
                    output::cell(&app_view["pool"]),
                    output::cell(&app_view["replicas"])
                );
            }
            Ok(())
        }
        crate::rollout::Outcome::Failed(reasons) => {
            let previous_live = previous.and_then(|p| p["live_version"].as_i64());
            let kept = match previous_live {
                Some(v) if app_view["live_version"].as_i64() != Some(v) || rebound => {
                    // One change: the previous version with the previous bindings.
                    let mut body = json!({ "version": v });
                    if rebound && let Some(p) = previous {
                        body["bindings"] = p["bindings"].clone();
                    }
                    let _: Value = client
                        .call(Method::PUT, &format!("{app_path}/live"), Some(body))
                        .await
                        .context("making the previous version live again")?;
                    format!("version {v} stays live with its bindings")
                }
                _ => "nothing was serving before".to_string(),
            };
            anyhow::bail!(
                "no worker could load the new version; {kept}:\n  {}",
                reasons.join("\n  ")
            )
        }
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  fnctl apps\n  fnctl apps --output json")]
pub struct AppsArgs {
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn apps(args: AppsArgs) -> anyhow::Result<()> {
    let apps = client()?.get_all("/v1/apps").await?;
    if args.output.is_json() {
        output::json(&Value::Array(apps));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let routes: Vec<Value> = a["triggers"]
                .as_array()
                .map(|ts| ts.iter().map(|t| t["route"].clone()).collect())
                .unwrap_or_default();
            vec![
                output::cell(&a["name"]),
                output::cell(&a["live_version"]),
                output::cell(&Value::Array(routes)),
                output::cell(&a["updated_at"]),
            ]
        })
        .collect();
    output::table(&["NAME", "LIVE", "ROUTES", "UPDATED"], &rows);
    Ok(())
}

#[derive(Args)]
#[command(after_help = "Examples:\n  fnctl versions shop\n  fnctl versions shop -o json")]
pub struct VersionsArgs {
    app: String,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn versions(args: VersionsArgs) -> anyhow::Result<()> {
    let client = client()?;
    let app_path = app_path(&args.app)?;
    let app: Value = client.get(&app_path).await?;
    let versions = client.get_all(&format!("{app_path}/versions")).await?;
    if args.output.is_json() {
        output::json(&Value::Array(versions));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let live = v["version"] == app["live_version"];
            vec![
                format!("{}{}", v["version"], if live { " (live)" } else { "" }),
                output::cell(&v["digest"]).chars().take(19).collect(),
                output::size(v["size_bytes"].as_u64().unwrap_or(0)),
                output::cell(&v["created_at"]),
            ]
        })
        .collect();
    output::table(&["VERSION", "DIGEST", "SIZE", "CREATED"], &rows);
    Ok(())
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl rollback shop            # to the version before the live one
  fnctl rollback shop --to 3")]
pub struct RollbackArgs {
    app: String,
    /// The version to make live (default: the one before the live version).
    #[arg(long)]
    to: Option<i64>,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let client = client()?;
    let app_path = app_path(&args.app)?;
    let target = match args.to {
        Some(v) => v,
        None => {
            let app: Value = client.get(&app_path).await?;
            let live = app["live_version"]
                .as_i64()
                .with_context(|| format!("{} has no live version to roll back from", args.app))?;
            client
                .get_all(&format!("{app_path}/versions"))
                .await?
                .iter()
                .filter_map(|v| v["version"].as_i64())
                .filter(|v| *v < live)
                .max()
                .with_context(|| {
                    format!(
                        "{} has no version before {live}; pick one with --to",
                        args.app
                    )
                })?
        }
    };
    let app: Value = client
        .call(
            Method::PUT,
            &format!("{app_path}/live"),
            Some(json!({ "version": target })),
        )
        .await?;
    if args.output.is_json() {
        output::json(&app);
    } else {
        println!("{} is now live at version {target}", args.app);
        await_ready(&client, &args.app, &app).await?;
    }
    Ok(())
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl bind shop kv=redis:url=redis://cache:6379
  fnctl bind shop kv.sessions=memory config.currency=EUR
  fnctl bind shop --remove config.currency

Takes effect on the running app without a redeploy.")]
pub struct BindArgs {
    app: String,
    /// Bindings to set or replace: KIND[.NAME]=PROVIDER[:OPT=VAL,...] or config.KEY=VALUE.
    bindings: Vec<Binding>,
    /// Binding names to remove (`kv`, `kv.NAME`, `config.KEY`).
    #[arg(long)]
    remove: Vec<String>,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn bind(args: BindArgs) -> anyhow::Result<()> {
    if args.bindings.is_empty() && args.remove.is_empty() {
        anyhow::bail!("give bindings to set (e.g. `kv=redis`) or `--remove NAME`");
    }
    let body = json!({
        "set": args.bindings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "remove": args.remove,
    });
    let client = client()?;
    let app: Value = client
        .call(
            Method::PATCH,
            &format!("{}/bindings", app_path(&args.app)?),
            Some(body),
        )
        .await?;
    if args.output.is_json() {
        output::json(&app);
    } else {
        println!("{} bindings: {}", args.app, output::cell(&app["bindings"]));
        await_ready(&client, &args.app, &app).await?;
    }
    Ok(())
}

#[derive(Args)]
#[command(after_help = "Example:\n  fnctl delete shop")]
pub struct DeleteArgs {
    app: String,
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let _: Value = client()?
        .call(Method::DELETE, &app_path(&args.app)?, None)
        .await?;
    println!("Deleted {}", args.app);
    Ok(())
}

/// Waits until the app's current revision serves (rollback and re-bind take the same
/// path as a deploy: the new instance set is ready before the old stops).
async fn await_ready(client: &Client, app: &str, view: &Value) -> anyhow::Result<()> {
    let revision = view["revision"].as_i64().unwrap_or(0);
    if view["live_version"].is_null() {
        return Ok(());
    }
    let outcome = crate::rollout::wait(
        client,
        &app_path(app)?,
        revision,
        std::time::Duration::from_secs(120),
        false,
    )
    .await?;
    match outcome {
        crate::rollout::Outcome::Ready { ready } => {
            println!(
                "Serving on {ready} worker{}",
                if ready == 1 { "" } else { "s" }
            );
            Ok(())
        }
        crate::rollout::Outcome::Failed(reasons) => anyhow::bail!(
            "no worker could load the change; the previous one keeps serving:\n  {}",
            reasons.join("\n  ")
        ),
    }
}
