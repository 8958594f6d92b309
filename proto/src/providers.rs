//! Each capability's providers and their options, parsed and checked without
//! connecting: the binding model the control plane refuses bad deploys with and the
//! worker opens providers from. Unknown providers and options are errors.

use std::path::PathBuf;

use crate::binding::{Binding, BindingError, Kind, ProviderOptions, ProviderSpec};

/// The key-value providers, by type tag.
pub const KV_PROVIDERS: &str = "memory, embedded, redis, dynamo";

/// What an in-memory store holds at most unless its binding says otherwise.
pub const MEMORY_DEFAULT_CAPACITY: usize = 256 << 20;

/// A key-value binding's provider with its options checked, not yet connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvProvider {
    Memory {
        /// Bytes of namespaces, keys and values it holds at most.
        capacity: usize,
    },
    /// `None`: `kv.redb` in the worker's data directory.
    Embedded {
        path: Option<PathBuf>,
    },
    Redis {
        url: String,
    },
    Dynamo(DynamoConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    pub table: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Create the table (on-demand billing) when it does not exist.
    pub create_table: bool,
}

impl DynamoConfig {
    fn from_options(opts: &mut ProviderOptions) -> Result<Self, BindingError> {
        let create_table = match opts.take("create_table").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => return Err(opts.invalid("create_table", "expected true or false")),
        };
        Ok(Self {
            table: opts
                .take("table")
                .unwrap_or_else(|| "stratus-kv".to_string()),
            region: opts.take("region"),
            endpoint: opts.take("endpoint"),
            create_table,
        })
    }
}

impl KvProvider {
    pub fn parse(spec: &ProviderSpec) -> Result<Self, BindingError> {
        let mut opts = spec.clone().into_options();
        let provider = match spec.provider.as_str() {
            "memory" => Self::Memory {
                capacity: match opts.take("max_mb") {
                    None => MEMORY_DEFAULT_CAPACITY,
                    Some(mb) => mb
                        .parse::<usize>()
                        .ok()
                        .filter(|mb| (1..=1 << 20).contains(mb))
                        .map(|mb| mb << 20)
                        .ok_or_else(|| opts.invalid("max_mb", "expected MiB from 1 to 1048576"))?,
                },
            },
            "embedded" => Self::Embedded {
                path: opts.take("path").map(PathBuf::from),
            },
            "redis" => Self::Redis {
                url: opts
                    .take("url")
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string()),
            },
            "dynamo" | "dynamodb" => Self::Dynamo(DynamoConfig::from_options(&mut opts)?),
            other => {
                return Err(BindingError::UnknownProvider {
                    kind: Kind::KeyValue,
                    provider: other.to_string(),
                    known: KV_PROVIDERS,
                });
            }
        };
        opts.finish()?;
        Ok(provider)
    }
}

/// Checks every binding's provider and options, and that nothing is bound twice.
pub fn check_bindings(bindings: &[Binding]) -> Result<(), BindingError> {
    let mut seen = std::collections::HashSet::new();
    for binding in bindings {
        if let Binding::KeyValue { provider, .. } = binding {
            KvProvider::parse(provider)?;
        }
        if !seen.insert(binding.name()) {
            return Err(BindingError::Duplicate(binding.name()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(binding: &str) -> Result<KvProvider, BindingError> {
        match binding.parse::<Binding>().unwrap() {
            Binding::KeyValue { provider, .. } => KvProvider::parse(&provider),
            Binding::Config { .. } => panic!("not a key-value binding"),
        }
    }

    #[test]
    fn a_memory_store_holds_what_its_binding_says() {
        assert_eq!(
            parse("kv=memory").unwrap(),
            KvProvider::Memory {
                capacity: MEMORY_DEFAULT_CAPACITY
            }
        );
        assert_eq!(
            parse("kv=memory:max_mb=8").unwrap(),
            KvProvider::Memory { capacity: 8 << 20 }
        );
        for bad in ["0", "-1", "lots", "1048577"] {
            let refused = parse(&format!("kv=memory:max_mb={bad}")).unwrap_err();
            assert!(refused.to_string().contains("max_mb"), "{refused}");
        }
    }

    #[test]
    fn unknown_providers_options_and_duplicates_are_refused() {
        assert!(parse("kv=etcd").is_err());
        assert!(parse("kv=redis:colour=blue").is_err());
        let twice: Vec<Binding> = ["kv.a=memory", "kv.a=redis"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            check_bindings(&twice),
            Err(BindingError::Duplicate("kv.a".into()))
        );
    }
}
