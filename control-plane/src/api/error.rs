//! The one mapping from every error the API can meet to an HTTP status and a JSON body
//! `{"error": {"code", "message"}}` with a stable `code`.

use crate::tenancy::PolicyError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stratus_proto::binding::BindingError;
use stratus_proto::interfaces::ImportError;

use crate::artifacts::ArtifactError;
use crate::auth::AuthError;
use crate::inspect::{ComponentError, InspectError};
use crate::metadata::MetadataError;
use crate::names::NameError;
use crate::upload::StageError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal(what: impl std::fmt::Display) -> Self {
        // The detail goes to the log (with the request id); the client gets the category.
        tracing::error!(error = %what, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the control plane failed to handle the request; see its log for this request id",
        )
    }

    fn unavailable(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "backend unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a storage backend is unavailable; retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            MetadataError::Conflict(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            MetadataError::Refused { code, message } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            MetadataError::Backend(_) => Self::unavailable(e),
        }
    }
}

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::NotFound(_) | ArtifactError::Corrupt { .. } => Self::internal(e),
            ArtifactError::Backend(_) => Self::unavailable(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing | AuthError::Invalid(_) => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            AuthError::Forbidden { .. } => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
        }
    }
}

impl From<ComponentError> for ApiError {
    fn from(e: ComponentError) -> Self {
        let code = match &e {
            ComponentError::NotWasm => "not_a_component",
            ComponentError::CoreModule => "core_module",
            ComponentError::Invalid(_) => "invalid_component",
            ComponentError::NoHandler(_) => "no_handler",
            ComponentError::MissingHandler { .. } => "missing_handler",
        };
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        let code = match &e {
            ImportError::Unsupported { .. } => "unsupported_import",
            ImportError::MissingBinding { .. } => "missing_binding",
        };
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    }
}

impl From<InspectError> for ApiError {
    fn from(e: InspectError) -> Self {
        match e {
            InspectError::Refused(e) => e.into(),
            InspectError::Io(e) => Self::internal(e),
        }
    }
}

impl From<BindingError> for ApiError {
    fn from(e: BindingError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_binding",
            e.to_string(),
        )
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Binding(e) => e.into(),
            PolicyError::Refused { .. } | PolicyError::Endpoint { .. } => {
                Self::new(StatusCode::FORBIDDEN, "binding_not_allowed", e.to_string())
            }
            PolicyError::Secret(_) | PolicyError::Config(_) => Self::internal(e),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            e.to_string(),
        )
    }
}

impl From<StageError> for ApiError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            StageError::Body(_) => Self::bad_request(e.to_string()),
            StageError::Io(_) => Self::internal(e),
        }
    }
}
