//! `fnctl workers`: the control plane's workers with pool, labels, state, apps and load;
//! `fnctl workers drain ID` moves a worker's apps elsewhere before it is shut down.

// Reading a `serde_json::Value` by key yields `Null` when the key is missing.
#![allow(clippy::indexing_slicing)]

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use crate::output::{self, OutputArgs};

#[derive(Args)]
#[command(after_help = "\
Examples:
  fnctl workers
  fnctl workers -o json
  fnctl workers drain w-3f2a9c1b7e4d")]
pub struct WorkersArgs {
    #[command(subcommand)]
    command: Option<WorkersCommand>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Subcommand)]
enum WorkersCommand {
    /// Move a worker's apps to other workers of its pool (each is removed from it once
    /// its replacement is ready); then stop the worker.
    Drain { id: String },
}

pub async fn run(args: WorkersArgs) -> anyhow::Result<()> {
    let client = crate::manage::client()?;
    if let Some(WorkersCommand::Drain { id }) = args.command {
        anyhow::ensure!(
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "`{id}` is not a worker id"
        );
        let _: Value = client
            .call(Method::POST, &format!("/v1/workers/{id}/drain"), None)
            .await?;
        println!("Draining {id}: its apps move to other workers of its pool");
        return Ok(());
    }
    let listing: Value = client.get("/v1/workers").await?;
    if args.output.is_json() {
        output::json(&listing["workers"]);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listing["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let labels = w["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                output::cell(&w["id"]),
                output::cell(&w["pool"]),
                labels,
                output::cell(&w["state"]),
                output::cell(&w["http_address"]),
                format!(
                    "{}/{}",
                    output::cell(&w["placements"]),
                    output::cell(&w["capacity"])
                ),
                output::cell(&w["apps"]),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "POOL",
            "LABELS",
            "STATE",
            "ADDRESS",
            "LOAD",
            "YOUR APPS",
        ],
        &rows,
    );
    Ok(())
}
