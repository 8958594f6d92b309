//! Timer runs the control plane dispatches to this worker: each calls the app's timer
//! handler (or GETs the route the trigger targets) and reports the outcome, which the
//! control plane keeps in the trigger's run history and retries with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::BodyExt;
use stratus_proto::pb;

use super::Client;
use super::assignments::Assignments;
use crate::runtime::{Event, TimerEvent};

/// Follows the run stream until it ends or fails.
pub(super) async fn follow(
    client: &Client,
    worker_id: &str,
    assignments: &Arc<Assignments>,
) -> anyhow::Result<()> {
    let mut stream = client
        .clone()
        .watch_runs(pb::WatchRunsRequest {
            worker_id: worker_id.to_string(),
        })
        .await
        .context("watching timer runs")?
        .into_inner();
    while let Some(run) = stream.message().await.context("reading timer runs")? {
        let (client, worker_id, assignments) =
            (client.clone(), worker_id.to_string(), assignments.clone());
        tokio::spawn(async move {
            let run_id = run.run_id.clone();
            let started = Instant::now();
            let outcome = execute(&assignments, &run).await;
            let report = pb::RunReport {
                worker_id,
                run_id: run_id.clone(),
                attempt: run.attempt,
                ok: outcome.is_ok(),
                message: outcome.err().unwrap_or_default(),
                duration_ms: started.elapsed().as_millis() as u64,
            };
            // Unreported, the control plane retries the run once its deadline passes.
            let mut client = client;
            if let Err(e) = client.report_run(report).await {
                tracing::warn!(run = %run_id, error = %e, "timer run outcome not delivered");
            }
        });
    }
    Ok(())
}

/// Runs one attempt; the error is what the run history shows.
async fn execute(assignments: &Assignments, run: &pb::Run) -> Result<(), String> {
    let app = assignments
        .app(&run.tenant, &run.app)
        .ok_or_else(|| "the app is not loaded on this worker".to_string())?;
    if run.route.is_empty() {
        let event = Event::Timer(TimerEvent {
            trigger: run.trigger.clone(),
            scheduled_ms: run.scheduled_ms,
            attempt: run.attempt,
        });
        return app.handle_event(event).await.map_err(|e| e.to_string());
    }
    let scheduled = run.scheduled_ms.to_string();
    let attempt = run.attempt.to_string();
    let request = http::Request::get(run.route.as_str())
        .header(http::header::HOST, "stratus-timer")
        .header("x-stratus-trigger", run.trigger.as_str())
        .header("x-stratus-scheduled-ms", scheduled.as_str())
        .header("x-stratus-attempt", attempt.as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let response = app.handle(request).await;
    let status = response.status();
    // Drain the body so the guest runs to completion (bounded by its deadline).
    let _ = tokio::time::timeout(
        app.timeout() + Duration::from_secs(1),
        response.into_body().collect(),
    )
    .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the route answered {status}"))
    }
}
