//! Version routes: deploy (a streamed multipart upload, checked before anything is
//! stored), list and get.

use std::sync::Arc;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::apps::{admit_bindings, normalize_routes, parse_bindings, parse_replicas};
use super::views::{AppView, PageView, VersionView};
use super::{ApiError, ApiState, Caller, PageQuery, Query};
use crate::auth::Role;
use crate::metadata::{AppChange, MetadataError, NewVersion};
use crate::{inspect, names, upload};
use stratus_proto::interfaces::{ComponentError, Handler};

/// Room for multipart framing and the manifest on top of the component limit.
pub const MULTIPART_OVERHEAD: usize = 256 << 10;
const MAX_MANIFEST_BYTES: usize = 64 << 10;

/// The `manifest` part of a deploy: what to bind and route along with the component.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Manifest {
    /// Replaces all of the app's bindings; absent keeps the current ones.
    bindings: Option<Vec<String>>,
    /// Replaces the app's HTTP routes; absent keeps the current ones.
    routes: Option<Vec<String>>,
    /// Replaces the app's queue triggers; absent keeps the current ones.
    queues: Option<Vec<String>>,
    /// Replaces the app's timer triggers; absent keeps the current ones.
    timers: Option<Vec<String>>,
    /// Make the new version live (default true).
    activate: bool,
    /// The worker pool to run on; absent keeps the app's (new apps: `default`).
    pool: Option<String>,
    /// Workers of the pool to run on (`1`…, or `all`); absent keeps the app's (new
    /// apps: 1).
    replicas: Option<String>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            bindings: None,
            routes: None,
            queues: None,
            timers: None,
            activate: true,
            pool: None,
            replicas: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Deployed {
    app: AppView,
    version: VersionView,
    /// False when one of the tenant's versions already had these bytes (the registry
    /// stores them once across tenants, but says so only within one).
    stored: bool,
}

pub async fn deploy(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    caller.require(Role::Deployer)?;
    names::check_app_name(&app)?;
    let limit = state.max_upload_bytes;
    // Refuse an announced oversize body before reading any of it.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit + MULTIPART_OVERHEAD as u64) {
        return Err(upload::StageError::TooLarge { limit }.into());
    }
    let mut multipart = multipart.map_err(|r| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            format!(
                "send multipart/form-data with a `component` part (and optionally a JSON `manifest` part): {}",
                r.body_text()
            ),
        )
    })?;

    let mut manifest = None;
    let mut staged = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_err)? {
        // A repeated part is refused rather than one silently winning.
        let repeated = match field.name() {
            Some("manifest") => manifest.is_some(),
            Some("component") => staged.is_some(),
            _ => false,
        };
        if repeated {
            return Err(ApiError::bad_request(format!(
                "the upload has more than one `{}` part; send each once",
                field.name().unwrap_or("")
            )));
        }
        match field.name() {
            Some("manifest") => {
                let bytes = read_small(field, MAX_MANIFEST_BYTES).await?;
                manifest =
                    Some(serde_json::from_slice::<Manifest>(&bytes).map_err(|e| {
                        ApiError::bad_request(format!("manifest is not valid: {e}"))
                    })?);
            }
            Some("component") => {
                let dir = state.staging_dir.clone();
                staged = Some(upload::stage(field, limit, &dir).await?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected part `{}`; send `manifest` and `component`",
                    other.unwrap_or("")
                )));
            }
        }
    }
    let staged =
        staged.ok_or_else(|| ApiError::bad_request("the upload has no `component` part"))?;
    let manifest = manifest.unwrap_or_default();

    // Everything is checked before anything is stored.
    let path = staged.path.to_path_buf();
    // Validation is CPU work over up to the upload limit: keep it off the async threads.
    let inspection = tokio::task::spawn_blocking(move || inspect::inspect(&path))
        .await
        .map_err(|e| ApiError::from(inspect::InspectError::Io(std::io::Error::other(e))))??;
    let bindings = match &manifest.bindings {
        Some(specs) => admit_bindings(&state, &caller.tenant, &app, specs).await?,
        None => match state.metadata.get_app(&caller.tenant, &app).await {
            Ok(existing) => parse_bindings(&existing.bindings)?,
            Err(MetadataError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
    };
    stratus_proto::interfaces::check_imports(
        inspection.imports.iter().map(String::as_str),
        &bindings,
    )?;
    let routes = manifest
        .routes
        .as_deref()
        .map(normalize_routes)
        .transpose()?;
    let queues = manifest
        .queues
        .as_deref()
        .map(|q| super::apps::canonical_queues(&state, q))
        .transpose()?;
    let timers = manifest
        .timers
        .as_deref()
        .map(super::apps::canonical_timers)
        .transpose()?;
    if let Some(pool) = &manifest.pool {
        names::check_pool(pool)?;
    }
    let replicas = manifest
        .replicas
        .as_deref()
        .map(parse_replicas)
        .transpose()?;

    // Refused before the bytes are stored; the change's transaction checks again.
    let handlers =
        stratus_proto::interfaces::handlers(inspection.exports.iter().map(String::as_str));
    let existing = match state.metadata.get_app(&caller.tenant, &app).await {
        Ok(a) => Some(a),
        Err(MetadataError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let kept = |f: fn(&crate::metadata::App) -> &Vec<String>| {
        existing.as_ref().map(f).cloned().unwrap_or_default()
    };
    check_handlers(
        &handlers,
        &inspection.exports,
        routes
            .clone()
            .unwrap_or_else(|| kept(|a| &a.routes))
            .is_empty(),
        queues
            .clone()
            .unwrap_or_else(|| kept(|a| &a.queues))
            .is_empty(),
        &timers.clone().unwrap_or_else(|| kept(|a| &a.timers)),
    )?;
    if let Some(routes) = &routes {
        state
            .metadata
            .check_routes(&caller.tenant, &app, routes)
            .await?;
    }
    let known = state
        .metadata
        .tenant_has_digest(&caller.tenant, &staged.digest)
        .await?;
    state
        .artifacts
        .put_file(&staged.digest, &staged.path, staged.size)
        .await?;
    let stored = !known;
    let new = NewVersion {
        digest: staged.digest.clone(),
        size_bytes: i64::try_from(staged.size).unwrap_or(i64::MAX),
        imports: inspection.imports,
        handlers,
    };
    let change = AppChange {
        bindings: manifest.bindings.is_some().then_some(bindings),
        routes,
        queues,
        timers,
        pool: manifest.pool,
        replicas,
        ..AppChange::default()
    };
    let (app_record, version) = state
        .metadata
        .add_version(&caller.tenant, &app, new, change, manifest.activate)
        .await?;
    tracing::info!(
        tenant = %caller.tenant,
        app = %app,
        version = version.version,
        digest = %version.digest,
        stored,
        "deployed"
    );
    state.nudge.changed();
    let view = AppView::from(app_record);
    Ok((
        StatusCode::CREATED,
        Json(Deployed {
            app: view,
            version: version.into(),
            stored,
        }),
    ))
}

/// Refuses a component that lacks the handler one of the app's triggers calls, naming
/// the export it needs.
fn check_handlers(
    handlers: &[Handler],
    exports: &[String],
    no_routes: bool,
    no_queues: bool,
    timers: &[String],
) -> Result<(), ApiError> {
    let mut needs = Vec::new();
    if !no_routes {
        needs.push(("HTTP route", Handler::Http));
    }
    if !no_queues {
        needs.push(("queue", Handler::Message));
    }
    for spec in timers {
        let via_route = spec
            .parse::<crate::timers::TimerTrigger>()
            .is_ok_and(|t| t.route.is_some());
        needs.push((
            if via_route {
                "timer (with a route)"
            } else {
                "timer"
            },
            if via_route {
                Handler::Http
            } else {
                Handler::Timer
            },
        ));
    }
    for (trigger, handler) in needs {
        if !handlers.contains(&handler) {
            return Err(ComponentError::MissingHandler {
                trigger,
                needs: handler.export_names(),
                exports: if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                },
            }
            .into());
        }
    }
    Ok(())
}

fn multipart_err(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "payload_too_large", e.body_text())
    } else {
        ApiError::new(status, "bad_request", e.body_text())
    }
}

async fn read_small(
    mut field: axum::extract::multipart::Field<'_>,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(multipart_err)?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the manifest exceeds {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path(app): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<PageView<VersionView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let after = match page.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::bad_request("invalid cursor"))?,
        ),
    };
    let versions = state
        .metadata
        .list_versions(&caller.tenant, &app, after, page.limit()?)
        .await?;
    Ok(Json(versions.into()))
}

pub async fn get(
    State(state): State<Arc<ApiState>>,
    Caller(caller): Caller,
    Path((app, version)): Path<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    caller.require(Role::Viewer)?;
    let number = version
        .parse::<i64>()
        .map_err(|_| ApiError::bad_request("a version is a positive integer"))?;
    Ok(Json(
        state
            .metadata
            .get_version(&caller.tenant, &app, number)
            .await?
            .into(),
    ))
}
