//! Worker routes: list the workers (every tenant sees the pool's workers and their load,
//! but only its own apps on them) and drain one.

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
    let workers: Vec<WorkerRecord> = state.metadata.workers(&caller.tenant).await?;
    Ok(Json(serde_json::json!({ "workers": workers })))
}

/// Moves a worker's apps elsewhere (make before break) before it is shut down.
pub async fn drain(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    state.metadata.drain_worker(&id).await?;
    state.nudge.changed();
    tracing::info!(worker = %id, tenant = %caller.tenant, "drain requested");
    Ok(StatusCode::ACCEPTED)
}
