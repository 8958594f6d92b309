//! The component registry suite, run against the filesystem backend and S3 on the local
//! AWS emulator (`AWS_ENDPOINT_URL`, path-style).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use stratus_control_plane::artifacts::{
    ArtifactError, ArtifactStore, FsArtifacts, S3Artifacts, S3Config, digest_of,
};

async fn open(backend: &str) -> (Arc<dyn ArtifactStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ArtifactStore> = match backend {
        "fs" => Arc::new(FsArtifacts::new(&dir.path().join("registry")).unwrap()),
        "s3" => Arc::new(
            S3Artifacts::connect(S3Config {
                bucket: format!("stratus-test-{}", uuid::Uuid::new_v4().simple()),
                prefix: "components".into(),
                region: Some("us-east-1".into()),
                endpoint: None,
                force_path_style: true,
                part_size: 5 << 20,
                create_bucket: true,
            })
            .await
            .unwrap(),
        ),
        other => panic!("unknown backend {other}"),
    };
    (store, dir)
}

fn file_with(dir: &tempfile::TempDir, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir
        .path()
        .join(format!("{}.wasm", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn stores_once_per_digest(backend: &str) {
    let (store, dir) = open(backend).await;
    let bytes = b"\0asm component bytes".to_vec();
    let digest = digest_of(&bytes);
    assert!(!store.exists(&digest).await.unwrap());
    let path = file_with(&dir, &bytes);
    assert!(
        store
            .put_file(&digest, &path, bytes.len() as u64)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_file(&digest, &path, bytes.len() as u64)
            .await
            .unwrap(),
        "deduplicated"
    );
    assert!(store.exists(&digest).await.unwrap());
    assert_eq!(store.get(&digest).await.unwrap(), bytes);
}

async fn missing_and_malformed_digests_are_not_found(backend: &str) {
    let (store, _dir) = open(backend).await;
    let missing = digest_of(b"never stored");
    assert!(matches!(
        store.get(&missing).await,
        Err(ArtifactError::NotFound(_))
    ));
    for bad in ["../../etc/passwd", "ABC", ""] {
        assert!(
            matches!(store.get(bad).await, Err(ArtifactError::NotFound(_))),
            "{bad}"
        );
    }
}

/// Above the part size the upload goes in parts (12 MiB in 5 MiB parts).
async fn large_components_round_trip(backend: &str) {
    let (store, dir) = open(backend).await;
    let bytes: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let digest = digest_of(&bytes);
    let path = file_with(&dir, &bytes);
    assert!(
        store
            .put_file(&digest, &path, bytes.len() as u64)
            .await
            .unwrap()
    );
    let back = store.get(&digest).await.unwrap();
    assert_eq!(back.len(), bytes.len());
    assert!(back == bytes);
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test]
                async fn $case() { super::$case("fs").await }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $case() { super::$case("s3").await }
            )*
        }
    };
}

suite!(
    stores_once_per_digest,
    missing_and_malformed_digests_are_not_found,
    large_components_round_trip,
);

/// A registry never hands out bytes that do not match their digest.
#[tokio::test]
async fn fs_detects_corruption() {
    let (store, dir) = open("fs").await;
    let bytes = b"original".to_vec();
    let digest = digest_of(&bytes);
    store
        .put_file(&digest, &file_with(&dir, &bytes), 8)
        .await
        .unwrap();
    std::fs::write(
        dir.path().join("registry/sha256").join(&digest),
        b"tampered",
    )
    .unwrap();
    assert!(matches!(
        store.get(&digest).await,
        Err(ArtifactError::Corrupt { .. })
    ));
}
