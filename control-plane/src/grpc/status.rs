//! The one mapping of control-plane errors to `tonic::Status`. Backend details go to the
//! log; the worker gets the category.

use tonic::Status;

use crate::artifacts::ArtifactError;
use crate::auth::AuthError;
use crate::metadata::MetadataError;

impl From<MetadataError> for Status {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::NotFound(_) => Status::not_found(e.to_string()),
            MetadataError::Conflict(_) => Status::already_exists(e.to_string()),
            MetadataError::Refused { .. } => Status::invalid_argument(e.to_string()),
            MetadataError::Backend(_) => {
                tracing::error!(error = %e, "metadata backend failed a worker call");
                Status::unavailable("the metadata database is unavailable; retry later")
            }
        }
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing | AuthError::Invalid(_) => Status::unauthenticated(e.to_string()),
            AuthError::Forbidden { .. } => Status::permission_denied(e.to_string()),
        }
    }
}

impl From<ArtifactError> for Status {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::NotFound(_) => Status::not_found(e.to_string()),
            ArtifactError::Corrupt { .. } | ArtifactError::Backend(_) => {
                tracing::error!(error = %e, "component registry failed a worker fetch");
                Status::unavailable("the component registry is unavailable; retry later")
            }
        }
    }
}
