//! The component registry: component bytes stored once per SHA-256 digest, on S3 or the
//! local filesystem, behind one trait.

mod fs;
mod s3;

use std::path::Path;

use sha2::Digest as _;

pub use self::fs::FsArtifacts;
pub use self::s3::{S3Artifacts, S3Config};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("component {0} is not in the registry")]
    NotFound(String),
    #[error("component {digest} is corrupt in the registry (content hashes to {actual})")]
    Corrupt { digest: String, actual: String },
    #[error("component registry: {0}")]
    Backend(String),
}

/// Content-addressed blob storage for components. `digest` is lowercase hex SHA-256.
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Stores the file at `path`, whose content hashes to `digest`, unless that digest
    /// is already stored, in which case it is marked as just stored (so garbage
    /// collection gives it a full grace period again). Returns whether anything was
    /// written.
    async fn put_file(&self, digest: &str, path: &Path, size: u64) -> Result<bool, ArtifactError>;
    /// The bytes stored under `digest`, checked against it.
    async fn get(&self, digest: &str) -> Result<Vec<u8>, ArtifactError>;
    async fn exists(&self, digest: &str) -> Result<bool, ArtifactError>;
    /// Every stored digest with when it was last stored.
    async fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, ArtifactError>;
    async fn delete(&self, digest: &str) -> Result<(), ArtifactError>;
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Fails unless `bytes` hash to `digest`: a registry must never hand out other bytes.
fn verify(digest: &str, bytes: Vec<u8>) -> Result<Vec<u8>, ArtifactError> {
    let actual = digest_of(&bytes);
    if actual == digest {
        Ok(bytes)
    } else {
        Err(ArtifactError::Corrupt {
            digest: digest.to_string(),
            actual,
        })
    }
}

/// Digests name files and object keys, so only well-formed ones get that far.
fn check_digest(digest: &str) -> Result<(), ArtifactError> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ArtifactError::NotFound(digest.to_string()))
    }
}
