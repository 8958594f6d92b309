//! Worker routes: list the workers (every tenant sees the workers and their load, but
//! only its own apps on them, and only an operator their addresses) and drain one
//! (operators only: workers are shared by every tenant).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiError, ApiState, Caller};
use crate::auth::Role;
use crate::metadata::WorkerRecord;

pub async fn list(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let mut workers: Vec<WorkerRecord> = state.metadata.workers(&caller.tenant).await?;
    if caller.require(Role::Operator).is_err() {
        for w in &mut workers {
            w.http_address.clear();
        }
    }
    Ok(Json(serde_json::json!({ "workers": workers })))
}

/// Moves a worker's apps elsewhere (make before break) before it is shut down.
pub async fn drain(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    state.metadata.drain_worker(&id).await?;
    state.nudge.changed();
    tracing::info!(worker = %id, tenant = %caller.tenant, "drain requested");
    Ok(StatusCode::ACCEPTED)
}
