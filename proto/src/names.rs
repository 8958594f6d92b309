//! Rules for names that end up in keys, URLs and namespaces: app names, tenant ids and
//! HTTP routes. One definition for the control plane (which refuses) and the worker
//! (which routes).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "invalid app name `{0}`: use 1-128 characters from A-Z a-z 0-9 - _ ., starting with a letter or digit"
    )]
    App(String),
    #[error("invalid tenant id `{0}`: use 1-64 characters from a-z 0-9 - _")]
    Tenant(String),
    #[error(
        "invalid route `{0}`: a route is an ASCII path starting with `/`, up to 256 characters, without spaces, `?`, `#`, `\\`, empty, `.` or `..` segments, or encoded `.`, `/` or `\\`"
    )]
    Route(String),
    #[error("invalid pool name `{0}`: use 1-64 characters from a-z 0-9 - _")]
    Pool(String),
}

/// The longest app name.
pub const MAX_APP_NAME: usize = 128;
/// The longest tenant id (and pool name).
pub const MAX_TENANT: usize = 64;
/// The longest name a worker runs an app under: `TENANT.APP` (see [`app_namespace`]).
pub const MAX_NAMESPACE: usize = MAX_TENANT + 1 + MAX_APP_NAME;

/// App names become the first segment of every key-value namespace (`APP/BUCKET`), so
/// they must never contain `/`: otherwise app `a` opening bucket `b/c` would reach app
/// `a/b`'s bucket `c`.
pub fn check_app_name(name: &str) -> Result<(), NameError> {
    if app_like(name, MAX_APP_NAME) {
        Ok(())
    } else {
        Err(NameError::App(name.to_string()))
    }
}

/// The name a runtime loads an app under: an app name, or a deployed app's
/// `TENANT.APP`. Every name the API accepts passes, so a deployed app is always served.
pub fn check_namespace(name: &str) -> Result<(), NameError> {
    if app_like(name, MAX_NAMESPACE) {
        Ok(())
    } else {
        Err(NameError::App(name.to_string()))
    }
}

fn app_like(name: &str, max: usize) -> bool {
    // Starting with a letter or digit rules out `.` and `..`, which URLs would resolve.
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TENANT
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Tenant ids prefix every worker namespace (`TENANT.APP`), so they are kept plain: in
/// particular they never contain `.`.
pub fn check_tenant(tenant: &str) -> Result<(), NameError> {
    if plain(tenant) {
        Ok(())
    } else {
        Err(NameError::Tenant(tenant.to_string()))
    }
}

/// Worker pools are named like tenants.
pub fn check_pool(pool: &str) -> Result<(), NameError> {
    if plain(pool) {
        Ok(())
    } else {
        Err(NameError::Pool(pool.to_string()))
    }
}

/// Checks a route and normalizes it without a trailing slash (`/` stays `/`).
///
/// A route is matched against request paths byte for byte, so anything a client, proxy
/// or browser could resolve differently is refused rather than stored: dot segments,
/// empty segments, backslashes, percent-encoded `.`, `/` or `\`, and anything outside
/// printable ASCII (which also rules out bidirectional controls and look-alikes).
pub fn normalize_route(route: &str) -> Result<String, NameError> {
    let bad = || NameError::Route(route.to_string());
    let printable = route
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\'));
    if !route.starts_with('/') || route.len() > 256 || !printable {
        return Err(bad());
    }
    let lower = route.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"].iter().any(|enc| lower.contains(enc)) {
        return Err(bad());
    }
    let trimmed = route.trim_end_matches('/');
    let mut segments = trimmed.split('/').skip(1);
    if segments.any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(bad());
    }
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

/// Whether requests for `path` fall under the (normalized) route `prefix`.
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

/// The provider namespace prefix of a deployed app: tenants cannot contain `.`, so
/// `TENANT.APP` never aliases another tenant's app.
pub fn app_namespace(tenant: &str, app: &str) -> String {
    format!("{tenant}.{app}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_pools_and_routes() {
        assert!(check_tenant("acme-1").is_ok());
        for bad in ["", "Acme", "a/b", "a.b", &"x".repeat(65)] {
            assert!(check_tenant(bad).is_err(), "{bad:?}");
            assert!(check_pool(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalize_route("/api/").unwrap(), "/api");
        assert_eq!(normalize_route("/").unwrap(), "/");
        assert_eq!(normalize_route("/a-b/c_d.e~f").unwrap(), "/a-b/c_d.e~f");
        for bad in [
            "api",
            "/a b",
            "/a?x",
            "",
            "/a/../admin",
            "/..",
            "/a/./b",
            "/a//b",
            "//a",
            "/a\\b",
            "/%2e%2e/x",
            "/a%2Fb",
            "/a%5cb",
            "/shop\u{202e}",
            "/caf\u{e9}",
        ] {
            assert!(normalize_route(bad).is_err(), "{bad:?}");
        }
    }

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
    }

    #[test]
    fn app_names_cannot_alias_namespaces() {
        assert!(check_app_name("shop-api_v2.1").is_ok());
        for bad in [
            "",
            "a/b",
            "a b",
            "ключ",
            "a:b",
            ".",
            "..",
            "-x",
            &"x".repeat(129),
        ] {
            assert!(check_app_name(bad).is_err(), "{bad:?}");
        }
        // The longest tenant with the longest app is still a name a worker runs.
        let longest = app_namespace(&"t".repeat(MAX_TENANT), &"a".repeat(MAX_APP_NAME));
        assert!(check_namespace(&longest).is_ok());
        assert!(check_app_name(&longest).is_err());
    }

    #[test]
    fn namespaces_of_different_tenants_never_alias() {
        // `a.b` + `c` vs `a` + `b.c`: the tenant rule forbids the first.
        assert!(check_tenant("a.b").is_err());
        assert_eq!(app_namespace("a", "b.c"), "a.b.c");
        assert_ne!(
            app_namespace("acme", "shop"),
            app_namespace("acme", "shop2")
        );
    }
}
