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

#[derive(Clone)]
struct Route {
    prefix: String,
    owner: String,
    backend: Backend,
}

/// One app's entry: its owner key (`tenant/app`), routes and backend.
pub struct Entry {
    pub owner: String,
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
    /// Points `prefixes` at `app`, replacing whatever `owner` (e.g. `tenant/app`) served.
    pub fn set(&self, owner: &str, prefixes: &[String], app: Arc<App>) {
        self.update(|routes| {
            routes.retain(|r| r.owner != owner);
            routes.extend(routes_of(owner, prefixes, &Backend::Local(app)));
        });
    }

    /// Replaces the whole table at once, so no request sees half of a new pool state.
    pub fn replace(&self, entries: Vec<Entry>) {
        let next = entries
            .iter()
            .flat_map(|e| routes_of(&e.owner, &e.prefixes, &e.backend))
            .collect();
        let mut guard = self.write();
        *guard = Arc::new(next);
    }

    /// Stops routing to whatever `owner` served.
    pub fn remove(&self, owner: &str) {
        self.update(|routes| routes.retain(|r| r.owner != owner));
    }

    /// What serves the longest route prefix of `path` at a segment boundary.
    pub fn resolve(&self, path: &str) -> Option<Backend> {
        self.snapshot()
            .iter()
            .filter(|r| route_covers(&r.prefix, path))
            .max_by_key(|r| r.prefix.len())
            .map(|r| r.backend.clone())
    }

    /// `(owner, prefix)` pairs, for status pages and tests.
    pub fn list(&self) -> Vec<(String, String)> {
        self.snapshot()
            .iter()
            .map(|r| (r.owner.clone(), r.prefix.clone()))
            .collect()
    }

    fn snapshot(&self) -> Arc<Vec<Route>> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Arc<Vec<Route>>> {
        match self.table.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Route>)) {
        let mut guard = self.write();
        let mut next: Vec<Route> = guard.as_ref().clone();
        f(&mut next);
        *guard = Arc::new(next);
    }
}

fn routes_of<'a>(
    owner: &'a str,
    prefixes: &'a [String],
    backend: &'a Backend,
) -> impl Iterator<Item = Route> + 'a {
    prefixes.iter().map(move |p| Route {
        prefix: normalize_route(p),
        owner: owner.to_string(),
        backend: backend.clone(),
    })
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
                owner: "t/a".into(),
                prefixes: vec!["/a/".into()],
                backend: peers("w1"),
            },
            Entry {
                owner: "t/b".into(),
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
