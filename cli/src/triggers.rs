//! `fnctl triggers APP` (each trigger with its state), `fnctl runs APP` (the timer run
//! history) and `fnctl queue send NAME BODY` (feeding an embedded queue of `fnctl up`
//! or `fnctl dev`).

// Reading a `serde_json::Value` by key yields `Null` when the key is missing.
#![allow(clippy::indexing_slicing)]

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::output::{self, OutputArgs};

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl triggers orders
  fnctl triggers orders -o json")]
pub struct TriggersArgs {
    app: String,
    #[command(flatten)]
    output: OutputArgs,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn triggers(args: TriggersArgs) -> anyhow::Result<()> {
    stratus_proto::names::check_app_name(&args.app)?;
    let client = crate::manage::client()?;
    let listing: Value = client
        .get(&format!("/v1/apps/{}/triggers", args.app))
        .await?;
    if args.output.is_json() {
        output::json(&listing["triggers"]);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listing["triggers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let kind = text(&t["type"]);
            let (name, detail) = match kind.as_str() {
                "http" => (text(&t["route"]), String::new()),
                "queue" => (
                    text(&t["name"]),
                    format!(
                        "in flight {}, backlog {}, handled {}, failed {}, dead-lettered {}",
                        t["in_flight"], t["backlog"], t["handled"], t["failed"], t["dead_lettered"]
                    ),
                ),
                "timer" => (text(&t["name"]), format!("next {}", text(&t["next_fire"]))),
                _ => (text(&t["name"]), String::new()),
            };
            let mut state = text(&t["state"]);
            if let Some(reasons) = t["reasons"].as_array().filter(|r| !r.is_empty()) {
                state = format!("{state}: {}", text(&reasons[0]));
            }
            vec![kind, name, state, detail]
        })
        .collect();
    output::table(&["TYPE", "NAME", "STATE", "DETAIL"], &rows);
    Ok(())
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl runs nightly-report
  fnctl runs nightly-report --limit 200 -o json")]
pub struct RunsArgs {
    app: String,
    /// How many of the most recent runs.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn runs(args: RunsArgs) -> anyhow::Result<()> {
    stratus_proto::names::check_app_name(&args.app)?;
    let client = crate::manage::client()?;
    let listing: Value = client
        .get(&format!("/v1/apps/{}/runs?limit={}", args.app, args.limit))
        .await?;
    if args.output.is_json() {
        output::json(&listing["runs"]);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listing["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["trigger"]),
                text(&r["scheduled"]),
                text(&r["started"]),
                r["duration_ms"]
                    .as_i64()
                    .map_or("-".into(), |ms| format!("{ms} ms")),
                text(&r["attempt"]),
                match text(&r["message"]).as_str() {
                    "" | "-" => text(&r["state"]),
                    m => format!("{}: {m}", text(&r["state"])),
                },
            ]
        })
        .collect();
    output::table(
        &[
            "TRIGGER",
            "SCHEDULED",
            "STARTED",
            "DURATION",
            "ATTEMPT",
            "OUTCOME",
        ],
        &rows,
    );
    Ok(())
}

#[derive(Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Enqueue a message on an embedded queue of `fnctl up` or `fnctl dev` (running or
    /// not: the message waits in the data directory until they take it).
    #[command(after_help = "\
Examples:
  fnctl queue send jobs 'resize photo-17'
  fnctl queue send orders '{\"id\":7}' --content-type application/json --group customer-3")]
    Send {
        /// The queue (an `embedded` trigger's `queue`, by default its name).
        name: String,
        body: String,
        #[arg(long)]
        content_type: Option<String>,
        /// The FIFO message group.
        #[arg(long)]
        group: Option<String>,
        /// The data directory of the `fnctl up` or `fnctl dev` that holds the queue.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// The tenant whose queue it is (deployed apps' embedded queues are per tenant);
        /// default: `fnctl up`'s own tenant when the data directory is `fnctl up`'s,
        /// none for `fnctl dev`.
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub async fn queue(args: QueueArgs) -> anyhow::Result<()> {
    match args.command {
        QueueCommand::Send {
            name,
            body,
            content_type,
            group,
            data_dir,
            tenant,
        } => {
            let dir = data_dir.unwrap_or_else(crate::config::default_data_dir);
            let tenant = tenant.or_else(|| {
                dir.join("control-plane")
                    .exists()
                    .then(|| crate::up::LOCAL_TENANT.to_string())
            });
            let name = match tenant {
                Some(t) => format!("{t}.{name}"),
                None => name,
            };
            let message = stratus_worker::queues::Outgoing {
                body: body.into_bytes(),
                content_type,
                attributes: Vec::new(),
                group,
            };
            stratus_worker::queues::embedded::spool(&dir, &name, &message)?;
            println!("Queued on `{name}` ({})", dir.display());
            Ok(())
        }
    }
}
