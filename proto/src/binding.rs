//! Binding specs: which provider serves which capability of an app.
//!
//! The syntax is shared by `fnctl dev`, `fnctl deploy`, the control plane and workers:
//! `KIND[.NAME]=PROVIDER[:OPT=VAL,OPT=VAL]`, e.g. `kv=redis:url=redis://127.0.0.1:6379`
//! or `kv.cache=memory`. Config values are bound as `config.KEY=VALUE`, where the whole
//! right-hand side is the value. What a function sends goes where `messaging=…` (every
//! topic) or `messaging.TOPIC=…` (one topic) says.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A capability kind that can be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `wasi:keyvalue` (all revisions).
    KeyValue,
    /// `wasi:config/store` (all revisions).
    Config,
    /// Sending messages: `wasi:messaging/producer` and `wasmcloud:messaging/consumer`.
    Messaging,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KeyValue => "kv",
            Kind::Config => "config",
            Kind::Messaging => "messaging",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed `--bind` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// A key-value provider for all buckets (`name == None`) or one named bucket.
    KeyValue {
        bucket: Option<String>,
        provider: ProviderSpec,
    },
    /// One config value.
    Config { key: String, value: String },
    /// Where sent messages go: for all topics (`topic == None`) or one topic.
    Messaging {
        topic: Option<String>,
        provider: ProviderSpec,
    },
}

/// A provider type tag and its options, e.g. `redis` with `url=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub provider: String,
    pub options: BTreeMap<String, String>,
}

impl ProviderSpec {
    /// Takes the options out one by one so that whatever is left is an unknown option.
    pub fn into_options(self) -> ProviderOptions {
        ProviderOptions {
            provider: self.provider,
            options: self.options,
        }
    }
}

impl fmt::Display for ProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.provider)?;
        for (i, (k, v)) in self.options.iter().enumerate() {
            f.write_str(if i == 0 { ":" } else { "," })?;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// Provider options being consumed by a provider's config parser.
#[derive(Debug)]
pub struct ProviderOptions {
    provider: String,
    options: BTreeMap<String, String>,
}

impl ProviderOptions {
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.options.remove(key)
    }

    /// Fails naming the first option no provider field consumed.
    pub fn finish(self) -> Result<(), BindingError> {
        match self.options.into_keys().next() {
            None => Ok(()),
            Some(key) => Err(BindingError::UnknownOption {
                provider: self.provider,
                key,
            }),
        }
    }

    pub fn invalid(&self, key: &str, reason: impl Into<String>) -> BindingError {
        BindingError::InvalidOption {
            provider: self.provider.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindingError {
    #[error("binding `{0}` has no `=`; expected KIND[.NAME]=PROVIDER[:OPT=VAL,...], e.g. kv=redis")]
    MissingEquals(String),
    #[error("unknown capability `{0}` in binding; known capabilities: kv, config, messaging")]
    UnknownKind(String),
    #[error("config binding `{0}` needs a key: config.KEY=VALUE")]
    ConfigWithoutKey(String),
    #[error("binding `{0}` names no provider after `=`")]
    EmptyProvider(String),
    #[error("binding `{0}` has an empty name after `.`; write KIND=… or KIND.NAME=…")]
    EmptyName(String),
    #[error("provider option `{0}` is given twice")]
    RepeatedOption(String),
    #[error("provider option `{0}` is not OPT=VAL")]
    MalformedOption(String),
    #[error("unknown {kind} provider `{provider}`; known providers: {known}")]
    UnknownProvider {
        kind: Kind,
        provider: String,
        known: &'static str,
    },
    #[error("unknown option `{key}` for provider `{provider}`")]
    UnknownOption { provider: String, key: String },
    #[error("invalid option `{key}` for provider `{provider}`: {reason}")]
    InvalidOption {
        provider: String,
        key: String,
        reason: String,
    },
    #[error("`{0}` is bound twice")]
    Duplicate(String),
}

impl FromStr for Binding {
    type Err = BindingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (lhs, rhs) = s
            .split_once('=')
            .ok_or_else(|| BindingError::MissingEquals(s.to_string()))?;
        let (kind, name) = match lhs.split_once('.') {
            Some((_, "")) => return Err(BindingError::EmptyName(s.to_string())),
            Some((kind, name)) => (kind, Some(name)),
            None => (lhs, None),
        };
        match kind {
            "config" => {
                let key = name
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| BindingError::ConfigWithoutKey(s.to_string()))?;
                Ok(Binding::Config {
                    key: key.to_string(),
                    value: rhs.to_string(),
                })
            }
            "kv" | "keyvalue" => {
                if rhs.is_empty() {
                    return Err(BindingError::EmptyProvider(s.to_string()));
                }
                Ok(Binding::KeyValue {
                    bucket: name.map(str::to_string),
                    provider: rhs.parse()?,
                })
            }
            "messaging" => {
                if rhs.is_empty() {
                    return Err(BindingError::EmptyProvider(s.to_string()));
                }
                Ok(Binding::Messaging {
                    topic: name.map(str::to_string),
                    provider: rhs.parse()?,
                })
            }
            other => Err(BindingError::UnknownKind(other.to_string())),
        }
    }
}

impl FromStr for ProviderSpec {
    type Err = BindingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (provider, opts) = match s.split_once(':') {
            Some((p, o)) => (p, Some(o)),
            None => (s, None),
        };
        let mut options = BTreeMap::new();
        for opt in opts.into_iter().flat_map(|o| o.split(',')) {
            let (k, v) = opt
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| BindingError::MalformedOption(opt.to_string()))?;
            if options.insert(k.to_string(), v.to_string()).is_some() {
                return Err(BindingError::RepeatedOption(k.to_string()));
            }
        }
        Ok(ProviderSpec {
            provider: provider.to_string(),
            options,
        })
    }
}

impl Binding {
    /// What the binding binds, as written left of `=`: `kv`, `kv.cache`, `config.KEY`.
    /// Two bindings with the same name replace each other.
    pub fn name(&self) -> String {
        match self {
            Binding::KeyValue { bucket: None, .. } => "kv".to_string(),
            Binding::KeyValue {
                bucket: Some(b), ..
            } => format!("kv.{b}"),
            Binding::Config { key, .. } => format!("config.{key}"),
            Binding::Messaging { topic: None, .. } => "messaging".to_string(),
            Binding::Messaging { topic: Some(t), .. } => format!("messaging.{t}"),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Binding::KeyValue { .. } => Kind::KeyValue,
            Binding::Config { .. } => Kind::Config,
            Binding::Messaging { .. } => Kind::Messaging,
        }
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::KeyValue {
                bucket: None,
                provider,
            } => write!(f, "kv={provider}"),
            Binding::KeyValue {
                bucket: Some(b),
                provider,
            } => write!(f, "kv.{b}={provider}"),
            Binding::Config { key, value } => write!(f, "config.{key}={value}"),
            Binding::Messaging {
                topic: None,
                provider,
            } => write!(f, "messaging={provider}"),
            Binding::Messaging {
                topic: Some(t),
                provider,
            } => write!(f, "messaging.{t}={provider}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_provider_with_options() {
        let b: Binding = "kv=redis:url=redis://127.0.0.1:6379,prefix=x"
            .parse()
            .unwrap();
        let Binding::KeyValue { bucket, provider } = b else {
            panic!("not kv")
        };
        assert_eq!(bucket, None);
        assert_eq!(provider.provider, "redis");
        assert_eq!(provider.options["url"], "redis://127.0.0.1:6379");
        assert_eq!(provider.options["prefix"], "x");
    }

    #[test]
    fn parses_named_bucket_and_config() {
        assert_eq!(
            "kv.cache=memory".parse::<Binding>().unwrap(),
            Binding::KeyValue {
                bucket: Some("cache".into()),
                provider: ProviderSpec {
                    provider: "memory".into(),
                    options: BTreeMap::new()
                }
            }
        );
        assert_eq!(
            "config.greeting=a=b:c".parse::<Binding>().unwrap(),
            Binding::Config {
                key: "greeting".into(),
                value: "a=b:c".into()
            }
        );
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "kv".parse::<Binding>(),
            Err(BindingError::MissingEquals(_))
        ));
        assert!(matches!(
            "blob=s3".parse::<Binding>(),
            Err(BindingError::UnknownKind(_))
        ));
        assert!(matches!(
            "config=x".parse::<Binding>(),
            Err(BindingError::ConfigWithoutKey(_))
        ));
        assert!(matches!(
            "kv=redis:url".parse::<Binding>(),
            Err(BindingError::MalformedOption(_))
        ));
        assert!(matches!(
            "kv=".parse::<Binding>(),
            Err(BindingError::EmptyProvider(_))
        ));
        assert!(matches!(
            "kv.=memory".parse::<Binding>(),
            Err(BindingError::EmptyName(_))
        ));
        assert!(matches!(
            "config.=x".parse::<Binding>(),
            Err(BindingError::EmptyName(_))
        ));
        assert_eq!(
            "kv=memory:max_mb=1,max_mb=2".parse::<Binding>(),
            Err(BindingError::RepeatedOption("max_mb".into()))
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["kv=redis:url=redis://h:1", "kv.a=memory", "config.k=v"] {
            assert_eq!(s.parse::<Binding>().unwrap().to_string(), s);
        }
    }
}
