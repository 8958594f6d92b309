//! The HTTP route table of a worker: path prefixes to what serves them (an app loaded
//! here, or the pool's other workers that hold it), replaced as assignments change while
//! requests keep flowing.

use std::sync::{Arc, RwLock};

use crate::runtime::App;

pub use stratus_proto::names::{route_covers, routes_overlap};

/// What answers requests under a route.
#[derive(Clone)]
pub enum Backend {
    /// An instance set loaded on this worker.
    Local(Arc<App>),
    /// Not loaded here: forward to one of these workers (HTTP addresses), each ready.
    Peers(Arc<[String]>),
    /// A live app of the pool with no ready replica yet (503 with `Retry-After`).
    Unavailable,
}

struct Route {
    prefix: String,
    backend: Backend,
}

/// One app's entry: its routes and what serves them.
pub struct Entry {
    pub prefixes: Vec<String>,
    pub backend: Backend,
}

/// Routes to apps. Lookups take a snapshot, so a rollout never blocks a request and a
/// request in flight finishes on the app it started on.
#[derive(Default)]
pub struct Routes {
    table: RwLock<Arc<Vec<Route>>>,
}

impl Routes {
    /// Replaces the whole table at once, so no request sees half of a new pool state.
    pub fn replace(&self, entries: Vec<Entry>) {
        let next: Vec<Route> = entries
            .iter()
            .flat_map(|e| {
                e.prefixes.iter().map(|p| Route {
                    prefix: normalize_route(p),
                    backend: e.backend.clone(),
                })
            })
            .collect();
        let mut table = match self.table.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *table = Arc::new(next);
    }

    /// What serves the longest route prefix of `path` at a segment boundary.
    pub fn resolve(&self, path: &str) -> Option<Backend> {
        self.snapshot()
            .iter()
            .filter(|r| route_covers(&r.prefix, path))
            .max_by_key(|r| r.prefix.len())
            .map(|r| r.backend.clone())
    }

    fn snapshot(&self) -> Arc<Vec<Route>> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// `/api/` and `/api` are the same route; a route the control plane already checked
/// is only trimmed here.
pub fn normalize_route(prefix: &str) -> String {
    stratus_proto::names::normalize_route(prefix).unwrap_or_else(|_| prefix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_and_replace_swaps_everything() {
        let routes = Routes::default();
        let peers = |p: &str| Backend::Peers(Arc::from(vec![p.to_string()]));
        routes.replace(vec![
            Entry {
                prefixes: vec!["/a/".into()],
                backend: peers("w1"),
            },
            Entry {
                prefixes: vec!["/a/b".into()],
                backend: Backend::Unavailable,
            },
        ]);
        assert!(matches!(routes.resolve("/a/x"), Some(Backend::Peers(p)) if p[0] == "w1"));
        assert!(matches!(
            routes.resolve("/a/b/c"),
            Some(Backend::Unavailable)
        ));
        assert!(routes.resolve("/ab").is_none());
        routes.replace(Vec::new());
        assert!(routes.resolve("/a/x").is_none());
    }
}
