//! The control-plane API client: bearer auth, JSON in and out, and API errors turned into
//! messages that say what to do next.

// Reading a `serde_json::Value` by key yields `Null` when the key is missing; it never
// panics, which is what clippy's indexing lint guards against.
#![allow(clippy::indexing_slicing)]

use std::path::Path;

use anyhow::Context;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::config::Credentials;

pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: String,
}

/// An error the API answered with.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}, HTTP {status}){hint}")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    hint: String,
}

impl Client {
    pub fn new(creds: Credentials) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("fnctl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            endpoint: creds.endpoint.trim_end_matches('/').to_string(),
            token: creds.token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {}", self.endpoint))?;
        decode(resp).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Follows `next_cursor` until every item of a list route is read.
    pub async fn get_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={c}"),
                None => format!("{path}{sep}limit=500"),
            };
            let page: Value = self.get(&page_path).await?;
            if let Some(batch) = page["items"].as_array() {
                items.extend(batch.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(items),
            }
        }
    }

    /// Uploads a component as a streamed multipart body, reporting bytes sent.
    pub async fn upload(
        &self,
        path: &str,
        manifest: Value,
        file: &Path,
        progress: indicatif::ProgressBar,
    ) -> anyhow::Result<Value> {
        let handle = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        let len = handle.metadata().await?.len();
        progress.set_length(len);
        let stream = futures::stream::unfold((handle, progress), |(mut f, bar)| async move {
            let mut buf = vec![0u8; 64 << 10];
            match f.read(&mut buf).await {
                Ok(0) => {
                    bar.finish_and_clear();
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    bar.inc(n as u64);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), (f, bar)))
                }
                Err(e) => Some((Err(e), (f, bar))),
            }
        })
        .boxed();
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
                .file_name("component.wasm")
                .mime_str("application/wasm")?;
        let form = reqwest::multipart::Form::new()
            .text("manifest", manifest.to_string())
            .part("component", part);
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .with_context(|| {
                format!(
                    "uploading to the control plane at {} failed; a server refusing an upload (e.g. over its size limit) may close the connection before answering",
                    self.endpoint
                )
            })?;
        decode(resp).await
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    let text = resp.text().await.context("reading the response")?;
    if status.is_success() {
        let text = if text.is_empty() { "null" } else { &text };
        return serde_json::from_str(text).context("the control plane sent unexpected JSON");
    }
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().to_string());
    let hint = match (status.as_u16(), code.as_str()) {
        (401, _) => {
            "\nhint: your token is missing, expired or not accepted here; run `fnctl login` again"
        }
        (403, "binding_not_allowed") => {
            "\nhint: bind a backend your operator offers (`kv=redis`, `kv=redis:backend=NAME`), or ask them to allow your endpoint"
        }
        (403, _) => "\nhint: ask an admin of your tenant for a token with a higher role",
        (413, _) => "\nhint: the control plane's `max_upload_bytes` sets the limit",
        _ => "",
    };
    Err(ApiError {
        status: status.as_u16(),
        code,
        message,
        hint: hint.to_string(),
    }
    .into())
}
