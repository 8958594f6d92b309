//! The HTTP route table of a worker serving several apps: path prefixes to loaded apps,
//! replaced per app as deployments change while requests keep flowing.

use std::sync::{Arc, RwLock};

use crate::runtime::App;

#[derive(Clone)]
struct Route {
    prefix: String,
    owner: String,
    app: Arc<App>,
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
            routes.extend(prefixes.iter().map(|p| Route {
                prefix: normalize_route(p),
                owner: owner.to_string(),
                app: app.clone(),
            }));
        });
    }

    /// Stops routing to whatever `owner` served.
    pub fn remove(&self, owner: &str) {
        self.update(|routes| routes.retain(|r| r.owner != owner));
    }

    /// The app whose route is the longest prefix of `path` at a segment boundary.
    pub fn resolve(&self, path: &str) -> Option<Arc<App>> {
        let table = match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        table
            .iter()
            .filter(|r| route_covers(&r.prefix, path))
            .max_by_key(|r| r.prefix.len())
            .map(|r| r.app.clone())
    }

    /// `(owner, prefix)` pairs, for status pages and tests.
    pub fn list(&self) -> Vec<(String, String)> {
        let table = match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        table
            .iter()
            .map(|r| (r.owner.clone(), r.prefix.clone()))
            .collect()
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Route>)) {
        let mut guard = match self.table.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next: Vec<Route> = guard.as_ref().clone();
        f(&mut next);
        *guard = Arc::new(next);
    }
}

/// `/api/` and `/api` are the same route.
pub fn normalize_route(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Whether requests for `path` fall under route `prefix`.
pub fn route_covers(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether two routes could claim the same request: one covers the other. Apps must not
/// hold overlapping routes, or the longer one would take part of the shorter one's paths.
pub fn routes_overlap(a: &str, b: &str) -> bool {
    route_covers(a, b) || route_covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(route_covers("/", "/anything"));
        assert!(route_covers("/api", "/api"));
        assert!(route_covers("/api", "/api/users"));
        assert!(!route_covers("/api", "/apis"));
        assert!(!route_covers("/api/v2", "/api"));
        assert!(routes_overlap("/api/v2", "/api"));
        assert!(routes_overlap("/", "/x"));
        assert!(!routes_overlap("/api", "/apis"));
        assert_eq!(normalize_route("/api/"), "/api");
        assert_eq!(normalize_route("/"), "/");
    }
}
