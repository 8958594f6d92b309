//! Components in S3 (or any S3-compatible store): `PREFIX/sha256/DIGEST`, uploaded in
//! parts above the part size so large components never sit whole in memory.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

use super::{ArtifactError, ArtifactStore, check_digest, verify};

/// S3 refuses parts below 5 MiB (except the last).
const MIN_PART_SIZE: usize = 5 << 20;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub region: Option<String>,
    /// Defaults to the SDK's resolution (`AWS_ENDPOINT_URL`, then AWS).
    pub endpoint: Option<String>,
    /// Path-style addressing, which most S3-compatible servers need.
    #[serde(default)]
    pub force_path_style: bool,
    /// Files above this size go up in parts of this size.
    #[serde(default = "default_part_size")]
    pub part_size: usize,
    /// Create the bucket when it does not exist.
    #[serde(default)]
    pub create_bucket: bool,
}

fn default_part_size() -> usize {
    8 << 20
}

pub struct S3Artifacts {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
}

/// Whether a copy failed because its source is not there.
fn is_missing<R>(e: &SdkError<aws_sdk_s3::operation::copy_object::CopyObjectError, R>) -> bool {
    e.as_service_error()
        .and_then(|s| s.meta().code())
        .is_some_and(|code| matches!(code, "NoSuchKey" | "NotFound" | "404"))
}

fn err<E, R>(what: &str, e: SdkError<E, R>) -> ArtifactError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match &e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("ServiceError"),
            s.err().message().unwrap_or("no message")
        ),
        other => aws_sdk_s3::error::DisplayErrorContext(other).to_string(),
    };
    ArtifactError::Backend(format!("S3 {what}: {detail}"))
}

impl S3Artifacts {
    pub async fn connect(config: S3Config) -> Result<Self, ArtifactError> {
        // The standard AWS environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials
        // chain), with timeouts so a registry that is down fails instead of hanging.
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let sdk = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(config.force_path_style)
            .build();
        let store = Self {
            client: Client::from_conf(s3_config),
            bucket: config.bucket,
            prefix: config.prefix.trim_end_matches('/').to_string(),
            part_size: config.part_size.max(MIN_PART_SIZE),
        };
        store.ensure_bucket(config.create_bucket).await?;
        Ok(store)
    }

    async fn ensure_bucket(&self, create: bool) -> Result<(), ArtifactError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if create && e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                tracing::info!(bucket = %self.bucket, "creating S3 bucket");
                match self
                    .client
                    .create_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    // Another replica won the race.
                    Err(e)
                        if e.as_service_error().is_some_and(|s| {
                            s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                        }) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(err("creating bucket", e)),
                }
            }
            Err(e) => Err(err(&format!("bucket `{}`", self.bucket), e)),
        }
    }

    fn key(&self, digest: &str) -> Result<String, ArtifactError> {
        check_digest(digest)?;
        Ok(if self.prefix.is_empty() {
            format!("sha256/{digest}")
        } else {
            format!("{}/sha256/{digest}", self.prefix)
        })
    }

    async fn put_multipart(&self, key: &str, path: &Path) -> Result<(), ArtifactError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/wasm")
            .send()
            .await
            .map_err(|e| err("starting multipart upload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| ArtifactError::Backend("S3 returned no upload id".into()))?
            .to_string();
        let result = self.upload_parts(key, &upload_id, path).await;
        if result.is_err() {
            // Best effort: S3 otherwise keeps (and bills) the parts.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
    ) -> Result<(), ArtifactError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ArtifactError::Backend(format!("opening {}: {e}", path.display())))?;
        let mut parts = Vec::new();
        for number in 1.. {
            let mut buf = Vec::with_capacity(self.part_size);
            (&mut file)
                .take(self.part_size as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| ArtifactError::Backend(format!("reading {}: {e}", path.display())))?;
            if buf.is_empty() {
                break;
            }
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| err(&format!("uploading part {number}"), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err("completing multipart upload", e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put_file(&self, digest: &str, path: &Path, size: u64) -> Result<bool, ArtifactError> {
        let key = self.key(digest)?;
        // Stored already: copied onto itself, so its last-modified time is now and
        // garbage collection gives it a new grace period. Collected meanwhile: stored
        // again below.
        let touched = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(&key)
            .copy_source(format!("{}/{key}", self.bucket))
            .content_type("application/wasm")
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .send()
            .await;
        match touched {
            Ok(_) => return Ok(false),
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(err("touching", e)),
        }
        if size > self.part_size as u64 {
            self.put_multipart(&key, path).await?;
        } else {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| ArtifactError::Backend(format!("reading {}: {e}", path.display())))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/wasm")
                .body(body)
                .send()
                .await
                .map_err(|e| err("uploading", e))?;
        }
        Ok(true)
    }

    async fn get(&self, digest: &str) -> Result<Vec<u8>, ArtifactError> {
        let key = self.key(digest)?;
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(ArtifactError::NotFound(digest.to_string()));
            }
            Err(e) => return Err(err("downloading", e)),
        };
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| ArtifactError::Backend(format!("S3 download of {digest}: {e}")))?
            .into_bytes();
        verify(digest, bytes.to_vec())
    }

    async fn exists(&self, digest: &str) -> Result<bool, ArtifactError> {
        let key = self.key(digest)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(err("checking", e)),
        }
    }

    async fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, ArtifactError> {
        let prefix = self.key(&"0".repeat(64))?.trim_end_matches('0').to_string();
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| err("listing", e))?;
            for object in page.contents() {
                let digest = object
                    .key()
                    .and_then(|k| k.strip_prefix(prefix.as_str()))
                    .filter(|d| check_digest(d).is_ok());
                let modified = object
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok());
                if let (Some(digest), Some(modified)) = (digest, modified) {
                    out.push((digest.to_string(), modified));
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, digest: &str) -> Result<(), ArtifactError> {
        let key = self.key(digest)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| err("deleting", e))?;
        Ok(())
    }
}
