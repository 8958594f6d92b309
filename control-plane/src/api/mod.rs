//! The public `/v1` HTTP API (axum): routes, shared state, the authenticated caller and
//! JSON extractors whose rejections are API errors too.

mod apps;
mod drain;
mod error;
mod versions;
mod views;
mod workers;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use self::error::ApiError;
use crate::artifacts::ArtifactStore;
use crate::auth::{Auth, AuthError, Claims};
use crate::metadata::Metadata;
use crate::nudge::Nudge;

/// The OpenAPI document of this API, checked in beside the crate.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Everything a handler needs.
pub struct ApiState {
    pub metadata: Metadata,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub auth: Arc<Auth>,
    /// What tenants' bindings may reach; seals and shows their secrets.
    pub policy: Arc<crate::tenancy::Policy>,
    /// Largest component accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Where uploads are staged while they are checked.
    pub staging_dir: PathBuf,
    /// Wakes the scheduler and the workers' streams after a change.
    pub nudge: Nudge,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let upload_limit = usize::try_from(state.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(versions::MULTIPART_OVERHEAD);
    Router::new()
        .route("/v1/apps", get(apps::list).post(apps::create))
        .route("/v1/apps/{app}", get(apps::get).delete(apps::delete))
        .route(
            "/v1/apps/{app}/versions",
            get(versions::list)
                .post(versions::deploy)
                .layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v1/apps/{app}/versions/{version}", get(versions::get))
        .route("/v1/apps/{app}/live", put(apps::set_live))
        .route("/v1/apps/{app}/status", get(apps::status))
        .route("/v1/apps/{app}/placement", put(apps::set_placement))
        .route("/v1/workers", get(workers::list))
        .route("/v1/workers/{id}/drain", post(workers::drain))
        .route(
            "/v1/apps/{app}/bindings",
            get(apps::bindings)
                .put(apps::replace_bindings)
                .patch(apps::patch_bindings),
        )
        .route(
            "/v1/apps/{app}/triggers",
            get(apps::triggers).put(apps::replace_triggers),
        )
        .route("/v1/apps/{app}/runs", get(apps::runs))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API route; see /v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see /v1/openapi.json",
            )
        })
        .with_state(state)
        .layer(axum::middleware::from_fn(drain::drain_unread))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                .make_span_with(|req: &Request| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %id,
                        tenant = tracing::field::Empty,
                    )
                }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

async fn openapi() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
}

/// The authenticated caller: its verified claims.
pub struct Caller(pub Claims);

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(crate::auth::bearer_token)
            .ok_or(AuthError::Missing)?;
        let claims = state.auth.verify(token)?;
        tracing::Span::current().record("tenant", claims.tenant.as_str());
        Ok(Caller(claims))
    }
}

/// `Json<T>` whose rejection is an [`ApiError`] with a JSON body.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                "bad_request",
                rejection.body_text(),
            )),
        }
    }
}

/// `?limit=N&cursor=C` on list routes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageQuery {
    pub const DEFAULT: u32 = 50;
    pub const MAX: u32 = 500;

    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(Self::DEFAULT),
            Some(n) if (1..=Self::MAX).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request(format!(
                "limit must be between 1 and {}",
                Self::MAX
            ))),
        }
    }
}

/// Parses `?…` into `T`, rejecting with a JSON error.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}
