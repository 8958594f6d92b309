//! What the API returns: metadata records with RFC 3339 timestamps, and the trigger model.

use serde::{Deserialize, Serialize};

use crate::metadata::{App, Page, Replicas, Version};

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A trigger that starts the app. Tagged by `type` so queue and timer triggers can join
/// without changing the shape of what exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Trigger {
    /// Requests whose path is `route` or below it.
    Http { route: String },
    /// Messages of a queue: `NAME=SOURCE[:OPTION=VALUE,…]`.
    Queue { spec: String },
    /// A schedule: `NAME=cron(…)|rate(…)|at(…)[:OPTION=VALUE,…]`.
    Timer { spec: String },
}

#[derive(Debug, Serialize)]
pub struct AppView {
    pub name: String,
    pub live_version: Option<i64>,
    pub bindings: Vec<String>,
    pub triggers: Vec<Trigger>,
    /// The worker pool that runs it, and on how many of its workers.
    pub pool: String,
    pub replicas: Replicas,
    /// Grows with every change to what serves the app; `GET …/status` tells which
    /// revision each replica serves.
    pub revision: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<App> for AppView {
    fn from(a: App) -> Self {
        Self {
            name: a.name,
            live_version: a.live_version,
            bindings: a
                .bindings
                .iter()
                .map(|b| crate::tenancy::shown(b))
                .collect(),
            triggers: a
                .routes
                .into_iter()
                .map(|route| Trigger::Http { route })
                .chain(a.queues.into_iter().map(|spec| Trigger::Queue { spec }))
                .chain(a.timers.into_iter().map(|spec| Trigger::Timer { spec }))
                .collect(),
            pool: a.pool,
            replicas: a.replicas,
            revision: a.revision,
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VersionView {
    pub version: i64,
    pub digest: String,
    pub size_bytes: i64,
    pub imports: Vec<String>,
    /// The handlers it exports: `http`, `message`, `timer`.
    pub handlers: Vec<&'static str>,
    pub created_at: String,
}

impl From<Version> for VersionView {
    fn from(v: Version) -> Self {
        Self {
            version: v.version,
            digest: format!("sha256:{}", v.digest),
            size_bytes: v.size_bytes,
            imports: v.imports,
            handlers: v.handlers.iter().map(|h| h.as_str()).collect(),
            created_at: rfc3339(v.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T, U: From<T>> From<Page<T>> for PageView<U> {
    fn from(p: Page<T>) -> Self {
        Self {
            items: p.items.into_iter().map(U::from).collect(),
            next_cursor: p.next_cursor,
        }
    }
}
