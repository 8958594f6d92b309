//! Component bytes by digest: a local copy in the data directory when it is intact,
//! otherwise fetched from the control plane and verified against the digest before it
//! is kept or compiled.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::Digest as _;

/// Where components come from when there is no local copy.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    async fn fetch(&self, digest: &str) -> anyhow::Result<Vec<u8>>;
}

pub struct Components {
    dir: PathBuf,
    source: Arc<dyn Source>,
}

impl Components {
    pub fn new(dir: PathBuf, source: Arc<dyn Source>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, source })
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
        let bytes = self.source.fetch(digest).await?;
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
        let from = |bytes: &[u8]| {
            Components::new(dir.path().to_path_buf(), Arc::new(Fixed(bytes.to_vec()))).unwrap()
        };
        let good = b"component".to_vec();
        let digest = hex::encode(sha2::Sha256::digest(&good));
        let refused = from(b"tampered").get(&digest).await.unwrap_err();
        assert!(refused.to_string().contains("hashing to"), "{refused}");
        assert!(!dir.path().join(format!("{digest}.wasm")).exists());
        assert_eq!(from(&good).get(&digest).await.unwrap(), good);
        // Kept: a later get no longer asks the source.
        assert_eq!(from(b"").get(&digest).await.unwrap(), good);
    }
}
