//! Which endpoints a tenant may name in a binding: only hosts and ports an operator
//! allow-lists per provider, and never link-local or cloud metadata addresses.
//!
//! Host names must be listed exactly (the operator vouches for what they resolve to);
//! IP literals must fall in a listed network.

use std::net::IpAddr;

use serde::Deserialize;

/// `[tenancy.endpoints.PROVIDER]`: where tenants' own endpoints may point.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRule {
    /// Networks (`10.1.0.0/16`), addresses, or exact host names.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Ports allowed (default: the provider's standard port).
    #[serde(default)]
    pub ports: Vec<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("`{0}` is not a URL with a host")]
    NotAUrl(String),
    #[error("scheme `{scheme}` is not allowed here; use {allowed}")]
    Scheme {
        scheme: String,
        allowed: &'static str,
    },
    #[error("{0} is a link-local, metadata or unspecified address and is never reachable")]
    Forbidden(String),
    #[error("{host}:{port} is not on the operator's allow-list for {provider} endpoints")]
    NotAllowed {
        provider: &'static str,
        host: String,
        port: u16,
    },
}

/// Addresses no tenant may ever reach, whatever the allow-list says: link-local
/// (where cloud metadata services live), the metadata addresses themselves and
/// "any".
fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            // fe80::/10 and AWS's IPv6 metadata address fd00:ec2::254.
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

impl EndpointRule {
    /// Checks `url` (with one of `schemes`) against this rule.
    pub fn check(
        &self,
        provider: &'static str,
        url: &str,
        schemes: &'static [&'static str],
        default_port: u16,
    ) -> Result<(), EndpointError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| EndpointError::NotAUrl(url.to_string()))?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        if !schemes.contains(&scheme.as_str()) {
            return Err(EndpointError::Scheme {
                scheme,
                allowed: schemes.first().copied().unwrap_or_default(),
            });
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| EndpointError::NotAUrl(url.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => default_port,
        });
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_some_and(forbidden) {
            return Err(EndpointError::Forbidden(host));
        }
        let host_listed = self.hosts.iter().any(|allowed| match ip {
            Some(ip) => allowed
                .parse::<ipnet::IpNet>()
                .map(|net| net.contains(&ip))
                .or_else(|_| allowed.parse::<IpAddr>().map(|a| a == ip))
                .unwrap_or(false),
            None => allowed.eq_ignore_ascii_case(&host),
        });
        let port_listed = if self.ports.is_empty() {
            port == default_port
        } else {
            self.ports.contains(&port)
        };
        if host_listed && port_listed {
            Ok(())
        } else {
            Err(EndpointError::NotAllowed {
                provider,
                host,
                port,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS: &[&str] = &["redis", "rediss"];

    fn rule(hosts: &[&str], ports: &[u16]) -> EndpointRule {
        EndpointRule {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn only_listed_networks_names_and_ports_pass() {
        let r = rule(&["10.1.0.0/16", "cache.acme.internal", "127.0.0.1"], &[]);
        let ok = |u: &str| r.check("redis", u, REDIS, 6379);
        assert_eq!(ok("redis://10.1.2.3:6379/0"), Ok(()));
        assert_eq!(ok("rediss://CACHE.acme.internal"), Ok(()));
        assert_eq!(ok("redis://:pw@127.0.0.1:6379"), Ok(()));
        for bad in [
            "redis://10.2.0.1:6379",
            "redis://10.1.2.3:6380",
            "redis://cache.acme.internal.evil.example:6379",
            "redis://localhost:6379",
        ] {
            assert!(
                matches!(ok(bad), Err(EndpointError::NotAllowed { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            ok("unix:///var/run/docker.sock"),
            Err(EndpointError::Scheme { .. } | EndpointError::NotAUrl(_))
        ));
        assert!(matches!(
            ok("http://10.1.2.3:6379"),
            Err(EndpointError::Scheme { .. })
        ));
    }

    #[test]
    fn metadata_and_link_local_are_never_allowed() {
        let everything = rule(&["0.0.0.0/0", "::/0"], &[80, 6379]);
        for bad in [
            "redis://169.254.169.254:80",
            "redis://169.254.1.1:6379",
            "redis://[fe80::1]:6379",
            "redis://[fd00:ec2::254]:80",
            "redis://[::ffff:169.254.169.254]:80",
            "redis://0.0.0.0:6379",
        ] {
            assert!(
                matches!(
                    everything.check("redis", bad, REDIS, 6379),
                    Err(EndpointError::Forbidden(_))
                ),
                "{bad}"
            );
        }
    }
}
