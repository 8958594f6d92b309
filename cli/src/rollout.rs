//! Waiting for a change to serve: polls the app's status until its replicas report the
//! new revision ready, or every one failed to load it.

// Reading a `serde_json::Value` by key yields `Null` when the key is missing.
#![allow(clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Client;

/// How a wait ended.
pub enum Outcome {
    /// `ready` replicas serve the revision.
    Ready { ready: usize },
    /// Every replica failed to load it; the reasons, one per worker.
    Failed(Vec<String>),
}

/// Waits until `revision` of the app at `app_path` is ready on as many workers as it
/// wants, printing progress to stderr unless `quiet`.
pub async fn wait(
    client: &Client,
    app_path: &str,
    revision: i64,
    timeout: Duration,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let status: Value = client.get(&format!("{app_path}/status")).await?;
        let placements = status["placements"].as_array().cloned().unwrap_or_default();
        let workers_up = status["workers_up"].as_u64().unwrap_or(0);
        let want = status["wanted"].as_u64().unwrap_or(1) as usize;
        let ready = placements
            .iter()
            .filter(|p| p["ready_revision"].as_i64().is_some_and(|r| r >= revision))
            .count();
        let failed: Vec<String> = placements
            .iter()
            .filter(|p| p["state"] == "failed" && p["state_revision"].as_i64() >= Some(revision))
            .map(|p| {
                format!(
                    "{}: {}",
                    output_str(&p["worker"]),
                    output_str(&p["message"])
                )
            })
            .collect();
        if want > 0 && ready >= want {
            return Ok(Outcome::Ready { ready });
        }
        if !placements.is_empty() && failed.len() == placements.len() {
            return Ok(Outcome::Failed(failed));
        }
        let line = if workers_up == 0 {
            format!(
                "waiting for a worker in pool `{}`",
                output_str(&status["pool"])
            )
        } else {
            let states: Vec<String> = placements
                .iter()
                .map(|p| format!("{} {}", output_str(&p["worker"]), output_str(&p["state"])))
                .collect();
            format!("{ready}/{want} ready ({})", states.join(", "))
        };
        if !quiet && line != last {
            eprintln!("  {line}");
            last = line;
        }
        if started.elapsed() > timeout {
            anyhow::bail!(
                "not ready after {}s: {last}; the change is recorded and will roll out when workers can load it",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn output_str(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}
