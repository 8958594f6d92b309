//! Which endpoints a tenant may name in a binding: only hosts and ports an operator
//! allow-lists per provider, and never link-local or cloud metadata addresses.
//!
//! Host names must be listed exactly (the operator vouches for what they resolve to);
//! IP literals must fall in a listed network.

use std::net::{IpAddr, Ipv4Addr};

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

/// Cloud metadata and host agent addresses outside link-local: Alibaba's
/// 100.100.100.200 and Azure's wire server 168.63.129.16.
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

/// Addresses no tenant may ever reach, whatever the allow-list says: link-local
/// (where most cloud metadata services live), the other metadata addresses, and
/// "any"; also when written as IPv4-mapped or NAT64 (`64:ff9b::/96`) IPv6.
fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || METADATA_V4.contains(&v4)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let [s0, s1, s2, s3, s4, s5, s6, s7] = v6.segments();
            if [s0, s1, s2, s3, s4, s5] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s6.to_be_bytes();
                let [c, d] = s7.to_be_bytes();
                return forbidden(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
            }
            // fe80::/10 and AWS's IPv6 metadata address fd00:ec2::254.
            (s0 & 0xffc0) == 0xfe80
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
        // Errors show the URL without its password.
        let shown = || stratus_proto::providers::redacted_url(url);
        let uri: http::Uri = url.parse().map_err(|_| EndpointError::NotAUrl(shown()))?;
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
            .ok_or_else(|| EndpointError::NotAUrl(shown()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        // The port as written (`http` hides one it cannot parse, which a client would
        // refuse): after the host, outside IPv6 brackets.
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let written = match host_port.rsplit_once(']') {
            Some((_, rest)) => rest.strip_prefix(':'),
            None => host_port.rsplit_once(':').map(|(_, p)| p),
        };
        let port = match written {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| EndpointError::NotAUrl(shown()))?,
            None => match scheme.as_str() {
                "https" => 443,
                "http" => 80,
                _ => default_port,
            },
        };
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
        let big_port = ok("redis://:secret@10.1.2.3:99999");
        assert!(
            matches!(&big_port, Err(EndpointError::NotAUrl(shown)) if !shown.contains("secret")),
            "{big_port:?}"
        );
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
            "redis://[64:ff9b::a9fe:a9fe]:80",
            "redis://100.100.100.200:80",
            "redis://168.63.129.16:80",
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
