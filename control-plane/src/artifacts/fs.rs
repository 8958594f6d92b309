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
        clear_partial_copies(&dir);
        Ok(Self { root: dir })
    }

    fn path(&self, digest: &str) -> Result<PathBuf, ArtifactError> {
        check_digest(digest)?;
        Ok(self.root.join(digest))
    }
}

/// Copies in flight are dot-files; one left by a process killed mid-copy is never
/// finished, so start-up removes them as it clears `staging/`.
fn clear_partial_copies(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.')
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), error = %e, "removing a partial copy");
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ArtifactError {
    ArtifactError::Backend(format!("{what} {}: {e}", path.display()))
}

#[async_trait::async_trait]
impl ArtifactStore for FsArtifacts {
    async fn put_file(&self, digest: &str, path: &Path, _size: u64) -> Result<bool, ArtifactError> {
        let target = self.path(digest)?;
        // Stored already: touched, so garbage collection gives it a new grace period.
        // Collected meanwhile: stored again below.
        let touched = std::fs::File::options()
            .append(true)
            .open(&target)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        match touched {
            Ok(()) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("touching", &target, e)),
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

    async fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, ArtifactError> {
        let mut entries = tokio::fs::read_dir(&self.root)
            .await
            .map_err(|e| io_err("listing", &self.root, e))?;
        let mut out = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_err("listing", &self.root, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_digest(&name).is_err() {
                continue;
            }
            if let Ok(modified) = entry.metadata().await.and_then(|m| m.modified()) {
                out.push((name, modified));
            }
        }
        Ok(out)
    }

    async fn delete(&self, digest: &str) -> Result<(), ArtifactError> {
        let path = self.path(digest)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("deleting", &path, e)),
        }
    }
}
