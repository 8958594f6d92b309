//! What the metadata database holds, as the API and rollouts see it.

use stratus_proto::binding::Binding;
use stratus_proto::interfaces::Handler;

/// An app as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct App {
    pub name: String,
    pub live_version: Option<i64>,
    pub bindings: Vec<String>,
    pub routes: Vec<String>,
    /// Queue triggers, in their canonical syntax.
    pub queues: Vec<String>,
    /// Timer triggers, in their canonical syntax.
    pub timers: Vec<String>,
    /// The worker pool that runs it.
    pub pool: String,
    /// Workers of the pool that run it.
    pub replicas: Replicas,
    /// Grows with every change to what serves the app; workers report readiness per
    /// revision.
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How many workers of its pool run an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    Count(u32),
    /// Every worker of the pool.
    All,
}

impl Replicas {
    /// Stored as an integer, 0 meaning every worker.
    pub fn to_db(self) -> i64 {
        match self {
            Replicas::Count(n) => i64::from(n),
            Replicas::All => 0,
        }
    }

    /// How many replicas the app gets when `up` workers of its pool take placements.
    pub fn wanted(self, up: usize) -> usize {
        match self {
            Replicas::All => up,
            Replicas::Count(n) => up.min(n as usize),
        }
    }

    pub fn from_db(n: i64) -> Self {
        match u32::try_from(n) {
            Ok(0) | Err(_) => Replicas::All,
            Ok(n) => Replicas::Count(n),
        }
    }
}

impl std::fmt::Display for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replicas::Count(n) => write!(f, "{n}"),
            Replicas::All => f.write_str("all"),
        }
    }
}

impl std::str::FromStr for Replicas {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Replicas::All),
            n => match n.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(Replicas::Count(n)),
                _ => Err(format!(
                    "replicas is a number from 1 to 1000, or `all`; got `{s}`"
                )),
            },
        }
    }
}

impl serde::Serialize for Replicas {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An immutable uploaded version of an app.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Version {
    pub version: i64,
    pub digest: String,
    pub size_bytes: i64,
    pub imports: Vec<String>,
    /// The handlers it exports, which its app's triggers need.
    #[serde(skip)]
    pub handlers: Vec<Handler>,
    pub created_at: i64,
}

/// A version being added by a deploy.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub digest: String,
    pub size_bytes: i64,
    pub imports: Vec<String>,
    pub handlers: Vec<Handler>,
}

/// Changes to an app's mutable state, applied together or not at all.
#[derive(Debug, Clone, Default)]
pub struct AppChange {
    pub live_version: Option<i64>,
    /// Replace all bindings.
    pub bindings: Option<Vec<Binding>>,
    /// Set or replace single bindings by name, after `bindings`.
    pub set_bindings: Vec<Binding>,
    /// Remove bindings by name (`kv`, `kv.cache`, `config.KEY`).
    pub remove_bindings: Vec<String>,
    /// Replace all HTTP routes.
    pub routes: Option<Vec<String>>,
    /// Replace all queue triggers (canonical specs).
    pub queues: Option<Vec<String>>,
    /// Replace all timer triggers (canonical specs).
    pub timers: Option<Vec<String>>,
    /// Move the app to another worker pool.
    pub pool: Option<String>,
    pub replicas: Option<Replicas>,
}

impl AppChange {
    /// Whether the change can alter what serves the app (and so needs a new revision).
    pub fn changes_serving(&self) -> bool {
        self.live_version.is_some()
            || self.bindings.is_some()
            || !self.set_bindings.is_empty()
            || !self.remove_bindings.is_empty()
            || self.routes.is_some()
            || self.queues.is_some()
            || self.timers.is_some()
            || self.pool.is_some()
            || self.replicas.is_some()
    }
}

/// What a worker must run for one live app.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub tenant: String,
    pub app: App,
    pub version: Version,
}

impl Deployment {
    /// Identifies the app across tenants, e.g. for a worker's route table.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.app.name)
    }
}

/// A page of a listing and where the next one starts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
