//! Components on the local filesystem: `ROOT/sha256/DIGEST`, written via a temporary file
//! and a rename so a crash never leaves a partial component under its digest.

use std::path::{Path, PathBuf};

use super::{ArtifactError, ArtifactStore, check_digest, verify};

pub struct FsArtifacts {
    root: PathBuf,
}

impl FsArtifacts {
    pub fn new(root: &Path) -> Result<Self, ArtifactError> {
        let dir = root.join("sha256");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ArtifactError::Backend(format!("creating {}: {e}", dir.display())))?;
        Ok(Self { root: dir })
    }

    fn path(&self, digest: &str) -> Result<PathBuf, ArtifactError> {
        check_digest(digest)?;
        Ok(self.root.join(digest))
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ArtifactError {
    ArtifactError::Backend(format!("{what} {}: {e}", path.display()))
}

#[async_trait::async_trait]
impl ArtifactStore for FsArtifacts {
    async fn put_file(&self, digest: &str, path: &Path, _size: u64) -> Result<bool, ArtifactError> {
        let target = self.path(digest)?;
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Ok(false);
        }
        let staging = self
            .root
            .join(format!(".{digest}.{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::copy(path, &staging)
            .await
            .map_err(|e| io_err("copying into", &staging, e))?;
        // Durable before it appears under its digest: a torn file there would be
        // "stored" forever and fail every read as corrupt.
        let synced = async { tokio::fs::File::open(&staging).await?.sync_all().await };
        if let Err(e) = synced.await {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(io_err("syncing", &staging, e));
        }
        if let Err(e) = tokio::fs::rename(&staging, &target).await {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(io_err("storing", &target, e));
        }
        if let Ok(dir) = tokio::fs::File::open(&self.root).await {
            let _ = dir.sync_all().await;
        }
        Ok(true)
    }

    async fn get(&self, digest: &str) -> Result<Vec<u8>, ArtifactError> {
        let path = self.path(digest)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => verify(digest, bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ArtifactError::NotFound(digest.to_string()))
            }
            Err(e) => Err(io_err("reading", &path, e)),
        }
    }

    async fn exists(&self, digest: &str) -> Result<bool, ArtifactError> {
        let path = self.path(digest)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| io_err("checking", &path, e))
    }
}
