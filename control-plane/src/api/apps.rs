//! App routes: create, list, get, delete, the live version, bindings and triggers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use stratus_proto::binding::Binding;

use super::views::{AppView, PageView, Trigger};
use super::{ApiError, ApiState, Body, Caller, PageQuery, Query};
use crate::auth::Role;
use crate::metadata::{AppChange, MetadataError};
use crate::names;
use crate::tenancy;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    name: String,
}

pub async fn create(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Body(body): Body<CreateApp>,
) -> Result<(StatusCode, Json<AppView>), ApiError> {
    caller.require(Role::Deployer)?;
    names::check_app_name(&body.name)?;
    let app = state
        .metadata
        .create_app(&caller.tenant, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(app.into())))
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<PageView<AppView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let apps = state
        .metadata
        .list_apps(&caller.tenant, page.cursor.as_deref(), page.limit()?)
        .await?;
    Ok(Json(apps.into()))
}

pub async fn get(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(
        state.metadata.get_app(&caller.tenant, &app).await?.into(),
    ))
}

pub async fn delete(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    state.metadata.delete_app(&caller.tenant, &app).await?;
    state.nudge.changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLive {
    version: i64,
    /// Replace the bindings in the same change (how a failed deploy is undone at once:
    /// the old version with the old bindings, never one without the other).
    #[serde(default)]
    bindings: Option<Vec<String>>,
}

/// Points the app at one of its versions; rollback is pointing at an earlier one.
pub async fn set_live(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
    Body(body): Body<SetLive>,
) -> Result<Json<AppView>, ApiError> {
    caller.require(Role::Deployer)?;
    let change = AppChange {
        live_version: Some(body.version),
        bindings: match &body.bindings {
            Some(specs) => Some(admit_bindings(&state, &caller.tenant, &app, specs).await?),
            None => None,
        },
        ..AppChange::default()
    };
    change_app(&state, &caller.tenant, &app, change).await
}

pub async fn bindings(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let app = state.metadata.get_app(&caller.tenant, &app).await?;
    let shown: Vec<String> = app.bindings.iter().map(|b| tenancy::shown(b)).collect();
    Ok(Json(serde_json::json!({ "bindings": shown })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceBindings {
    bindings: Vec<String>,
}

pub async fn replace_bindings(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
    Body(body): Body<ReplaceBindings>,
) -> Result<Json<AppView>, ApiError> {
    caller.require(Role::Deployer)?;
    let change = AppChange {
        bindings: Some(admit_bindings(&state, &caller.tenant, &app, &body.bindings).await?),
        ..AppChange::default()
    };
    change_app(&state, &caller.tenant, &app, change).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBindings {
    #[serde(default)]
    set: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Sets or removes single bindings (`kv.cache=redis`, remove `config.greeting`).
pub async fn patch_bindings(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
    Body(body): Body<PatchBindings>,
) -> Result<Json<AppView>, ApiError> {
    caller.require(Role::Deployer)?;
    let change = AppChange {
        set_bindings: admit_bindings(&state, &caller.tenant, &app, &body.set).await?,
        remove_bindings: body.remove,
        ..AppChange::default()
    };
    change_app(&state, &caller.tenant, &app, change).await
}

/// The app's triggers with their state: what the workers last reported of each queue
/// trigger, and each timer's next scheduled time.
pub async fn triggers(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let record = state.metadata.get_app(&caller.tenant, &app).await?;
    let queues = state.metadata.queue_states(&caller.tenant, &app).await?;
    let now = crate::metadata::now_ms();
    let mut out = Vec::new();
    for route in &record.routes {
        out.push(serde_json::json!({ "type": "http", "route": route, "state": "active" }));
    }
    for spec in &record.queues {
        let name = spec.split_once('=').map(|(n, _)| n).unwrap_or(spec);
        let reported = queues.iter().find(|q| q.trigger == name);
        let status = match reported {
            None => "starting",
            Some(q) if !q.failing.is_empty() => "failing",
            Some(_) => "active",
        };
        out.push(serde_json::json!({
            "type": "queue",
            "name": name,
            "spec": spec,
            "state": status,
            "reasons": reported.map(|q| q.failing.clone()).unwrap_or_default(),
            "consumers": reported.map_or(0, |q| q.workers),
            "in_flight": reported.map_or(0, |q| q.in_flight),
            "backlog": reported.map_or(0, |q| q.backlog),
            "handled": reported.map_or(0, |q| q.handled),
            "failed": reported.map_or(0, |q| q.failed),
            "dead_lettered": reported.map_or(0, |q| q.dead_lettered),
        }));
    }
    for spec in &record.timers {
        let Ok(timer) = spec.parse::<crate::timers::TimerTrigger>() else {
            continue;
        };
        let next = timer.next_after(now).map(super::views::rfc3339);
        out.push(serde_json::json!({
            "type": "timer",
            "name": timer.name,
            "spec": spec,
            "state": if next.is_some() { "active" } else { "done" },
            "next_fire": next,
        }));
    }
    Ok(Json(serde_json::json!({ "triggers": out })))
}

/// The app's timer runs, newest first (`?limit=`, default 50).
pub async fn runs(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let runs = state
        .metadata
        .runs(&caller.tenant, &app, i64::from(page.limit()?))
        .await?;
    let items: Vec<serde_json::Value> = runs
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "trigger": r.trigger,
                "scheduled": super::views::rfc3339(r.scheduled_ms),
                "scheduled_ms": r.scheduled_ms,
                "attempt": r.attempt,
                "state": r.state,
                "worker": r.worker,
                "started": r.started_ms.map(super::views::rfc3339),
                "started_ms": r.started_ms,
                "duration_ms": r.duration_ms,
                "message": r.message,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "runs": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceTriggers {
    triggers: Vec<Trigger>,
}

pub async fn replace_triggers(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
    Body(body): Body<ReplaceTriggers>,
) -> Result<Json<AppView>, ApiError> {
    caller.require(Role::Deployer)?;
    let mut routes = Vec::new();
    let mut queues = Vec::new();
    let mut timers = Vec::new();
    for t in body.triggers {
        match t {
            Trigger::Http { route } => routes.push(route),
            Trigger::Queue { spec } => queues.push(spec),
            Trigger::Timer { spec } => timers.push(spec),
        }
    }
    let change = AppChange {
        routes: Some(normalize_routes(&routes)?),
        queues: Some(canonical_queues(&state, &queues)?),
        timers: Some(canonical_timers(&timers)?),
        ..AppChange::default()
    };
    change_app(&state, &caller.tenant, &app, change).await
}

/// Bindings and routes one request may carry; bounds the work a request can cause.
const MAX_BINDINGS: usize = 1024;
const MAX_ROUTES: usize = 256;

/// Parses binding strings.
pub fn parse_bindings(specs: &[String]) -> Result<Vec<Binding>, ApiError> {
    if specs.len() > MAX_BINDINGS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_binding",
            format!("at most {MAX_BINDINGS} bindings per request"),
        ));
    }
    Ok(specs
        .iter()
        .map(|s| s.parse::<Binding>())
        .collect::<Result<Vec<_>, _>>()?)
}

/// Parses the bindings a tenant asks for and passes them through the tenancy policy:
/// what is stored (secrets sealed), or why it is refused. A secret sent back redacted
/// keeps the app's stored value.
pub async fn admit_bindings(
    state: &ApiState,
    tenant: &str,
    app: &str,
    specs: &[String],
) -> Result<Vec<Binding>, ApiError> {
    let asked = parse_bindings(specs)?;
    let redacted = specs
        .iter()
        .any(|s| s.contains(stratus_proto::providers::REDACTED));
    let current = if redacted {
        match state.metadata.get_app(tenant, app).await {
            Ok(existing) => parse_bindings(&existing.bindings)?,
            Err(MetadataError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        }
    } else {
        Vec::new()
    };
    Ok(state.policy.admit(tenant, asked, &current)?)
}

/// Normalized, deduplicated routes.
pub fn normalize_routes(routes: &[String]) -> Result<Vec<String>, ApiError> {
    if routes.len() > MAX_ROUTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            format!("at most {MAX_ROUTES} routes per app"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(routes.len());
    let mut seen = std::collections::HashSet::new();
    for r in routes {
        let r = names::normalize_route(r)?;
        if seen.insert(r.clone()) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Checks queue trigger specs (syntax, then the tenancy policy); returns their
/// canonical forms.
pub fn canonical_queues(state: &ApiState, specs: &[String]) -> Result<Vec<String>, ApiError> {
    if specs.len() > MAX_ROUTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_trigger",
            format!("at most {MAX_ROUTES} queue triggers per app"),
        ));
    }
    let triggers = stratus_proto::triggers::parse_queue_triggers(specs).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_trigger",
            e.to_string(),
        )
    })?;
    for t in &triggers {
        state.policy.admit_queue(t)?;
    }
    Ok(triggers.iter().map(ToString::to_string).collect())
}

/// Checks timer trigger specs; returns their canonical forms.
pub fn canonical_timers(specs: &[String]) -> Result<Vec<String>, ApiError> {
    if specs.len() > MAX_ROUTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_trigger",
            format!("at most {MAX_ROUTES} timer triggers per app"),
        ));
    }
    crate::timers::canonical_timers(specs).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_trigger",
            e.to_string(),
        )
    })
}

/// Records `change`; the scheduler and the workers' streams hear of it at once.
async fn change_app(
    state: &ApiState,
    tenant: &str,
    app: &str,
    change: AppChange,
) -> Result<Json<AppView>, ApiError> {
    let updated = state.metadata.update_app(tenant, app, change).await?;
    state.nudge.changed();
    Ok(Json(AppView::from(updated)))
}

/// Where an app's rollout stands: its revision and, per placement, what its worker
/// reported.
pub async fn status(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
) -> Result<Json<crate::metadata::AppStatus>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.metadata.app_status(&caller.tenant, &app).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    replicas: Option<String>,
}

/// Moves the app to another pool or changes its replica count.
pub async fn set_placement(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
    Body(body): Body<Placement>,
) -> Result<Json<AppView>, ApiError> {
    caller.require(Role::Deployer)?;
    let change = AppChange {
        pool: body
            .pool
            .map(|p| names::check_pool(&p).map(|()| p))
            .transpose()?,
        replicas: body.replicas.as_deref().map(parse_replicas).transpose()?,
        ..AppChange::default()
    };
    change_app(&state, &caller.tenant, &app, change).await
}

pub fn parse_replicas(s: &str) -> Result<crate::metadata::Replicas, ApiError> {
    s.parse()
        .map_err(|e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_replicas", e))
}
