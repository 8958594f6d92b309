//! Rules for names that end up in keys, URLs and namespaces: app names, tenant ids and
//! HTTP routes.

pub use stratus_worker::runtime::check_app_name;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid tenant id `{0}`: use 1-64 characters from a-z 0-9 - _")]
    Tenant(String),
    #[error(
        "invalid route `{0}`: a route is a path starting with `/`, up to 256 characters, without spaces, `?` or `#`"
    )]
    Route(String),
}

/// Tenant ids prefix every worker namespace, so they are kept plain.
pub fn check_tenant(tenant: &str) -> Result<(), NameError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NameError::Tenant(tenant.to_string()))
    }
}

/// A route is normalized without a trailing slash (`/` stays `/`).
pub fn normalize_route(route: &str) -> Result<String, NameError> {
    let ok = route.starts_with('/')
        && route.len() <= 256
        && !route
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'));
    if !ok {
        return Err(NameError::Route(route.to_string()));
    }
    let trimmed = route.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_and_routes() {
        assert!(check_tenant("acme-1").is_ok());
        for bad in ["", "Acme", "a/b", "a.b", &"x".repeat(65)] {
            assert!(check_tenant(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalize_route("/api/").unwrap(), "/api");
        assert_eq!(normalize_route("/").unwrap(), "/");
        for bad in ["api", "/a b", "/a?x", ""] {
            assert!(normalize_route(bad).is_err(), "{bad:?}");
        }
    }
}
