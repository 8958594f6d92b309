//! Component bytes by digest: a local copy in the data directory when it is intact,
//! otherwise fetched from the control plane and verified against the digest before it
//! is kept or compiled.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::Digest as _;

/// Where components come from when there is no local copy.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    async fn fetch(&self, digest: &str) -> anyhow::Result<Vec<u8>>;
}

/// Cheap to clone; clones share the source.
#[derive(Clone)]
pub struct Components {
    dir: PathBuf,
    source: Arc<Mutex<Option<Arc<dyn Source>>>>,
}

impl Components {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            source: Arc::default(),
        })
    }

    pub fn set_source(&self, source: Arc<dyn Source>) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The bytes whose SHA-256 is `digest` (lowercase hex).
    pub async fn get(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "`{digest}` is not a SHA-256 digest"
        );
        let path = self.dir.join(format!("{digest}.wasm"));
        if let Ok(bytes) = tokio::fs::read(&path).await {
            if hex::encode(sha2::Sha256::digest(&bytes)) == digest {
                return Ok(bytes);
            }
            tracing::warn!(path = %path.display(), "local component copy is corrupt; fetching it again");
        }
        let source = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                anyhow::anyhow!("no local copy, and the control plane is not connected")
            })?;
        let bytes = source.fetch(digest).await?;
        let actual = hex::encode(sha2::Sha256::digest(&bytes));
        anyhow::ensure!(
            actual == digest,
            "the control plane sent bytes hashing to {actual}, not {digest}"
        );
        let tmp = self
            .dir
            .join(format!("{digest}.{}.tmp", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<u8>);

    #[async_trait::async_trait]
    impl Source for Fixed {
        async fn fetch(&self, _digest: &str) -> anyhow::Result<Vec<u8>> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn fetched_bytes_must_match_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let components = Components::new(dir.path().to_path_buf()).unwrap();
        let good = b"component".to_vec();
        let digest = hex::encode(sha2::Sha256::digest(&good));
        components.set_source(Arc::new(Fixed(b"tampered".to_vec())));
        let refused = components.get(&digest).await.unwrap_err();
        assert!(refused.to_string().contains("hashing to"), "{refused}");
        assert!(!dir.path().join(format!("{digest}.wasm")).exists());
        components.set_source(Arc::new(Fixed(good.clone())));
        assert_eq!(components.get(&digest).await.unwrap(), good);
        // Kept: a later get needs no source.
        components.set_source(Arc::new(Fixed(Vec::new())));
        assert_eq!(components.get(&digest).await.unwrap(), good);
    }
}
