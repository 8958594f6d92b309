//! Staging an upload: streamed to a temporary file while it is hashed and counted, so a
//! component is never held in memory whole and an oversized one is cut off early.

use std::path::Path;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::Digest as _;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

/// A fully received upload; the file is deleted when this is dropped.
pub struct Staged {
    pub path: TempPath,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("the component is larger than the {limit}-byte upload limit")]
    TooLarge { limit: u64 },
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("staging the upload: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn stage<S, E>(mut body: S, limit: u64, dir: &Path) -> Result<Staged, StageError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    tokio::fs::create_dir_all(dir).await?;
    let (file, path) = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(dir)?
        .into_parts();
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
    let mut hasher = sha2::Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StageError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(StageError::TooLarge { limit });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;
    Ok(Staged {
        path,
        digest: hex::encode(hasher.finalize()),
        size,
    })
}
