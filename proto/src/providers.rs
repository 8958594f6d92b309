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
        /// `password=`, used instead of any password in the URL.
        password: Option<Secret>,
    },
    Dynamo(DynamoConfig),
}

/// Option names whose values are secrets: stored encrypted, redacted in every read.
pub const SECRET_OPTIONS: &[&str] = &["password", "secret_access_key"];

/// Options naming where the worker reads a secret instead of carrying it: one of its
/// environment variables (`*_env`) or a file on it (`*_file`), with the option each
/// stands for. Secrets stay out of manifests and the metadata database; only platforms
/// with `direct_bindings` (one trusted user) accept them.
pub const SECRET_REFS: &[(&str, &str)] = &[
    ("password_env", "password"),
    ("password_file", "password"),
    ("secret_access_key_env", "secret_access_key"),
    ("secret_access_key_file", "secret_access_key"),
];

/// `spec` with each secret reference replaced by a stand-in secret, so it is checked
/// like the binding it becomes on the worker without reading anything.
fn with_stand_ins(spec: &ProviderSpec) -> Result<ProviderSpec, BindingError> {
    let mut out = spec.clone();
    for (reference, secret) in SECRET_REFS {
        if out.options.remove(*reference).is_some() {
            if out.options.contains_key(*secret) {
                return Err(BindingError::InvalidOption {
                    provider: spec.provider.clone(),
                    key: (*reference).to_string(),
                    reason: format!("give `{secret}` or one reference to it, not both"),
                });
            }
            out.options
                .insert((*secret).to_string(), REDACTED.to_string());
        }
    }
    Ok(out)
}

/// What a redacted secret reads as.
pub const REDACTED: &str = "***";

/// The backend a binding names in a worker's feed when the control plane's policy
/// refuses it: no backend has this name, and the worker reports the refusal.
pub const REFUSED_BACKEND: &str = "!refused";

/// A secret option's value: shown as [`REDACTED`] by `Debug`, so it never reaches a log
/// through a derived `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The password in `scheme://user:password@host…`, if any: everything from the first
/// `:` after `://` to the last `@`, so a password holding `@`, `/`, `?` or `#` is still
/// found whole (and redacted whole).
pub fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p)
}

/// The spec as it may be shown (API, CLI, logs): secret values replaced by
/// [`REDACTED`].
pub fn redacted(spec: &ProviderSpec) -> ProviderSpec {
    let mut shown = spec.clone();
    for (key, value) in shown.options.iter_mut() {
        if SECRET_OPTIONS.contains(&key.as_str()) {
            *value = REDACTED.to_string();
        } else if key == "url" {
            *value = redacted_url(value);
        }
    }
    shown
}

/// `url` with any password in it replaced by [`REDACTED`].
pub fn redacted_url(url: &str) -> String {
    match url_password(url) {
        Some(password) => url.replacen(&format!(":{password}@"), &format!(":{REDACTED}@"), 1),
        None => url.to_string(),
    }
}

/// A binding as it may be shown: key-value secrets redacted (config values are
/// settings, shown as written).
pub fn redacted_binding(binding: &Binding) -> Binding {
    match binding {
        Binding::KeyValue { bucket, provider } => Binding::KeyValue {
            bucket: bucket.clone(),
            provider: redacted(provider),
        },
        other => other.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    pub table: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Create the table (on-demand billing) when it does not exist.
    pub create_table: bool,
    /// Credentials of the binding's own (`access_key_id=`, `secret_access_key=`);
    /// `None`: the worker's credential chain, which only operator backends may use.
    pub credentials: Option<StaticCredentials>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl DynamoConfig {
    fn from_options(opts: &mut ProviderOptions) -> Result<Self, BindingError> {
        let create_table = match opts.take("create_table").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => return Err(opts.invalid("create_table", "expected true or false")),
        };
        let credentials = match (opts.take("access_key_id"), opts.take("secret_access_key")) {
            (None, None) => None,
            (Some(access_key_id), Some(secret_access_key)) => Some(StaticCredentials {
                access_key_id,
                secret_access_key: Secret(secret_access_key),
            }),
            _ => {
                return Err(opts.invalid(
                    "access_key_id",
                    "give both access_key_id and secret_access_key, or neither",
                ));
            }
        };
        Ok(Self {
            table: opts
                .take("table")
                .unwrap_or_else(|| "stratus-kv".to_string()),
            region: opts.take("region"),
            endpoint: opts.take("endpoint"),
            create_table,
            credentials,
        })
    }
}

impl KvProvider {
    pub fn parse(spec: &ProviderSpec) -> Result<Self, BindingError> {
        let spec = &with_stand_ins(spec)?;
        let mut opts = spec.clone().into_options();
        // The control plane replaces a backend by its options before a worker sees it.
        if let Some(backend) = opts.take("backend") {
            let why = if backend == REFUSED_BACKEND {
                "the control plane's tenancy policy refuses this binding (its log says why)"
                    .to_string()
            } else {
                format!("backend `{backend}` is not offered here (any more)")
            };
            return Err(opts.invalid("backend", why));
        }
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
                password: opts.take("password").map(Secret),
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

/// Where a `messaging` binding sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagingProvider {
    /// The embedded queue named `queue`, or the topic's name.
    Embedded { queue: Option<String> },
    /// JetStream: published on the topic as the subject (a stream must capture it).
    Nats { url: String },
    /// The SQS queue at `queue_url` (whatever the topic).
    Sqs { queue_url: String },
}

pub const MESSAGING_PROVIDERS: &str = "embedded, nats, sqs";

impl MessagingProvider {
    pub fn parse(spec: &ProviderSpec) -> Result<Self, BindingError> {
        let mut opts = spec.clone().into_options();
        if opts.take("backend").is_some() {
            return Err(opts.invalid(
                "backend",
                "the control plane's tenancy policy refuses this binding (its log says why)",
            ));
        }
        let provider = match spec.provider.as_str() {
            "embedded" => Self::Embedded {
                queue: opts.take("queue"),
            },
            "nats" => Self::Nats {
                url: opts
                    .take("url")
                    .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string()),
            },
            "sqs" => Self::Sqs {
                queue_url: opts
                    .take("queue_url")
                    .ok_or_else(|| opts.invalid("queue_url", "an SQS binding needs `queue_url`"))?,
            },
            other => {
                return Err(BindingError::UnknownProvider {
                    kind: Kind::Messaging,
                    provider: other.to_string(),
                    known: MESSAGING_PROVIDERS,
                });
            }
        };
        opts.finish()?;
        Ok(provider)
    }
}

/// Checks every binding's provider and options, and that nothing is bound twice.
pub fn check_bindings(bindings: &[Binding]) -> Result<(), BindingError> {
    for binding in bindings {
        match binding {
            Binding::KeyValue { provider, .. } => {
                KvProvider::parse(provider)?;
            }
            Binding::Messaging { provider, .. } => {
                MessagingProvider::parse(provider)?;
            }
            Binding::Config { .. } => {}
        }
    }
    check_unique(bindings)
}

/// Checks bindings as the control plane stores them: like [`check_bindings`], but a
/// `backend` option stands for the options the control plane fills in from its config.
pub fn check_stored(bindings: &[Binding]) -> Result<(), BindingError> {
    for binding in bindings {
        match binding {
            Binding::KeyValue { provider, .. } => {
                let mut plain = provider.clone();
                plain.options.remove("backend");
                KvProvider::parse(&plain)?;
            }
            Binding::Messaging { provider, .. } => {
                MessagingProvider::parse(provider)?;
            }
            Binding::Config { .. } => {}
        }
    }
    check_unique(bindings)
}

/// Checks that nothing is bound twice.
pub fn check_unique(bindings: &[Binding]) -> Result<(), BindingError> {
    let mut seen = std::collections::HashSet::new();
    for binding in bindings {
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
            _ => panic!("not a key-value binding"),
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
    fn secrets_never_show() {
        let spec: ProviderSpec = "redis:url=redis://u:hunter2@h:6379/0,password=pw"
            .parse()
            .unwrap();
        let shown = redacted(&spec).to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("pw"),
            "{shown}"
        );
        assert_eq!(shown, "redis:password=***,url=redis://u:***@h:6379/0");
        assert!(url_password("rediss://:p@h").is_some());
        // A password holding `@`, `/`, `?` or `#` is redacted whole.
        assert_eq!(
            redacted_url("redis://u:p/a?s#s@w@h:1/0"),
            "redis://u:***@h:1/0"
        );
        assert!(url_password("redis://h:6379").is_none());
        assert!(SECRET_OPTIONS.contains(&"secret_access_key"));
        let dynamo: ProviderSpec = "dynamo:access_key_id=AK,secret_access_key=SK"
            .parse()
            .unwrap();
        assert!(!format!("{:?}", KvProvider::parse(&dynamo).unwrap()).contains("SK"));
        let redis: ProviderSpec = "redis:password=hunter2".parse().unwrap();
        assert!(!format!("{:?}", KvProvider::parse(&redis).unwrap()).contains("hunter2"));
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
