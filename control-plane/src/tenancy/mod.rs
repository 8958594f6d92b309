//! What a tenant's bindings may reach. A binding is the operator's network and
//! credentials acting on a tenant's behalf, so on a shared platform:
//!
//! - tenants bind to **backends** the operator defines (`[tenancy.backends.NAME]`, with
//!   their endpoints and credentials) and offers to them: `kv=redis` takes the default
//!   Redis backend, `kv=redis:backend=cache` a named one; the worker's namespace
//!   (`TENANT.APP/BUCKET`) keeps apps apart inside it;
//! - a tenant's own endpoint is allowed only where `[tenancy.endpoints.PROVIDER]` lists
//!   it (never link-local or metadata addresses), and a DynamoDB endpoint of a tenant's
//!   must come with the tenant's own credentials, never the worker's;
//! - memory stores are capped by the operator;
//! - secret values are sealed at rest ([`secrets`]), shown redacted, and opened only
//!   into the feed of the workers that run the app.
//!
//! `fnctl up` (one trusted user) sets `direct_bindings`: bindings name endpoints as
//! `fnctl dev`'s do.

pub mod endpoints;
mod queues;
pub mod secrets;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stratus_proto::binding::{Binding, BindingError, ProviderSpec};
use stratus_proto::providers::{self, KvProvider, REDACTED, REFUSED_BACKEND};

use self::endpoints::{EndpointError, EndpointRule};
use self::secrets::{Sealer, SecretError};

/// `[tenancy]` in the control plane's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyConfig {
    /// One trusted user: bindings may name any endpoint (what `fnctl up` runs with).
    pub direct_bindings: bool,
    /// The largest memory store an app may bind, and what `kv=memory` gets.
    pub memory_max_mb: usize,
    /// The key binding secrets are sealed with (default `DATA_DIR/secrets.key`,
    /// created on first start; replicas must share one).
    pub secrets_key_file: Option<PathBuf>,
    pub backends: BTreeMap<String, BackendConfig>,
    /// Per provider (`redis`, `dynamo`) or queue source (`nats`): where tenants'
    /// own endpoints may point.
    pub endpoints: BTreeMap<String, EndpointRule>,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        Self {
            direct_bindings: false,
            memory_max_mb: 64,
            secrets_key_file: None,
            backends: BTreeMap::new(),
            endpoints: BTreeMap::new(),
        }
    }
}

/// `[tenancy.backends.NAME]`: a provider the operator runs, with its options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `redis` or `dynamo`.
    pub provider: String,
    /// The provider's options (`url`, `password`, `table`, `region`, `endpoint`, …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Tenants that may bind it (default: every tenant).
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// What `kv=PROVIDER` binds.
    #[serde(default)]
    pub default: bool,
}

impl BackendConfig {
    fn offered_to(&self, tenant: &str) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|t| t.iter().any(|x| x == tenant))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Binding(#[from] BindingError),
    #[error("`{binding}`: {reason}")]
    Refused { binding: String, reason: String },
    #[error("`{binding}`: {source}")]
    Endpoint {
        binding: String,
        source: EndpointError,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("tenancy config: {0}")]
    Config(String),
}

/// The policy every binding passes on its way into the metadata and out to workers.
pub struct Policy {
    config: TenancyConfig,
    sealer: Sealer,
}

const KEY_CHECK: &str = "stratus-secrets-key-check";

/// Provider options a tenant's own endpoint may carry.
const OWN_REDIS: &[&str] = &["url", "password"];
const OWN_DYNAMO: &[&str] = &[
    "endpoint",
    "region",
    "table",
    "create_table",
    "access_key_id",
    "secret_access_key",
];

impl Policy {
    pub fn new(config: TenancyConfig, data_dir: &Path) -> Result<Self, PolicyError> {
        let bad = |m: String| PolicyError::Config(m);
        let mut defaults = HashSet::new();
        for (name, backend) in &config.backends {
            stratus_proto::names::check_pool(name)
                .map_err(|_| bad(format!("backend name `{name}`: use a-z 0-9 - _")))?;
            if !matches!(backend.provider.as_str(), "redis" | "dynamo") {
                return Err(bad(format!(
                    "backend `{name}`: provider `{}` is not one an operator runs; use redis or dynamo",
                    backend.provider
                )));
            }
            KvProvider::parse(&backend.spec())
                .map_err(|e| bad(format!("backend `{name}`: {e}")))?;
            // Workers get the options in the binding syntax: each must survive it.
            if backend.spec().to_string().parse::<ProviderSpec>().ok() != Some(backend.spec()) {
                return Err(bad(format!(
                    "backend `{name}`: option names and values cannot hold `,`, and names cannot hold `=` or `:`; percent-encode them in URLs"
                )));
            }
            if backend.default && !defaults.insert(backend.provider.clone()) {
                return Err(bad(format!(
                    "more than one default `{}` backend",
                    backend.provider
                )));
            }
        }
        if let Some(p) = config
            .endpoints
            .keys()
            .find(|p| !matches!(p.as_str(), "redis" | "dynamo" | "nats"))
        {
            return Err(bad(format!("endpoints for unknown provider `{p}`")));
        }
        if config.memory_max_mb == 0 {
            return Err(bad("memory_max_mb must be at least 1".into()));
        }
        let key_file = config
            .secrets_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("secrets.key"));
        let sealer = Sealer::load_or_create(&key_file)?;
        Ok(Self { config, sealer })
    }

    /// A value sealed with this control plane's key, kept in the metadata database by
    /// the first replica that starts, so [`Policy::verify_key_check`] can tell every
    /// later one whether it holds the same key.
    pub fn key_check(&self) -> Result<String, PolicyError> {
        Ok(self.sealer.seal(KEY_CHECK, KEY_CHECK)?)
    }

    /// Fails unless `stored` (the database's key check) opens with this key: a replica
    /// with another key would hand workers secrets it cannot open.
    pub fn verify_key_check(&self, stored: &str) -> Result<(), PolicyError> {
        match self.sealer.open(stored, KEY_CHECK) {
            Ok(v) if v == KEY_CHECK => Ok(()),
            _ => Err(PolicyError::Config(
                "this control plane's secrets key is not the one that sealed the secrets in its metadata database; give every replica the same [tenancy] secrets_key_file".into(),
            )),
        }
    }

    /// What to store for the bindings a tenant asks for: each checked against the
    /// policy, with its secrets sealed. A secret sent back as `***` keeps the value
    /// stored under the same binding in `current`.
    pub fn admit(
        &self,
        tenant: &str,
        asked: Vec<Binding>,
        current: &[Binding],
    ) -> Result<Vec<Binding>, PolicyError> {
        let admitted = asked
            .into_iter()
            .map(|b| self.admit_one(tenant, b, current))
            .collect::<Result<Vec<_>, _>>()?;
        providers::check_unique(&admitted)?;
        Ok(admitted)
    }

    fn admit_one(
        &self,
        tenant: &str,
        binding: Binding,
        current: &[Binding],
    ) -> Result<Binding, PolicyError> {
        if let Binding::Messaging { provider, .. } = &binding {
            self.admit_messaging(&binding.name(), provider)?;
            return Ok(binding);
        }
        let Binding::KeyValue {
            bucket,
            mut provider,
        } = binding
        else {
            return Ok(binding);
        };
        let name = Binding::KeyValue {
            bucket: bucket.clone(),
            provider: provider.clone(),
        }
        .name();
        if provider.options.values().any(|v| Sealer::is_sealed(v)) {
            return Err(refused(&name, "values starting `enc:` are reserved"));
        }
        move_url_password(&mut provider).map_err(|why| refused(&name, why))?;
        keep_redacted_secrets(&mut provider, &name, current).map_err(|why| refused(&name, why))?;
        self.check(tenant, &name, &provider)?;
        for (key, value) in provider.options.iter_mut() {
            if providers::SECRET_OPTIONS.contains(&key.as_str()) && !Sealer::is_sealed(value) {
                *value = self.sealer.seal(value, &context(tenant, &name, key))?;
            }
        }
        Ok(Binding::KeyValue { bucket, provider })
    }

    /// Whether `tenant` may bind `spec` (secrets still in the clear).
    fn check(&self, tenant: &str, name: &str, spec: &ProviderSpec) -> Result<(), PolicyError> {
        let refused = |reason: String| refused(name, reason);
        let options: Vec<&str> = spec.options.keys().map(String::as_str).collect();
        if !self.config.direct_bindings
            && let Some(reference) = options
                .iter()
                .find(|o| providers::SECRET_REFS.iter().any(|(r, _)| r == *o))
        {
            return Err(refused(format!(
                "`{reference}` would read the worker's own environment or files; this platform takes secrets as sealed options (`password=…`) or from a backend"
            )));
        }
        match kind(&spec.provider) {
            "memory" => {
                // Without `max_mb` the store gets the cap (see `resolve`).
                if let KvProvider::Memory { capacity } = KvProvider::parse(spec)?
                    && spec.options.contains_key("max_mb")
                    && capacity > self.config.memory_max_mb << 20
                {
                    return Err(refused(format!(
                        "memory stores hold at most {} MiB here",
                        self.config.memory_max_mb
                    )));
                }
                Ok(())
            }
            "embedded" => {
                if options.is_empty() {
                    Ok(())
                } else {
                    Err(refused(
                        "an embedded store takes no options (`path` is only for `fnctl dev`); deployed apps keep embedded data where the worker puts it".into(),
                    ))
                }
            }
            provider @ ("redis" | "dynamo") => {
                // Malformed first (422), then what the policy allows (403); a backend
                // stands for options the operator fills in.
                let mut plain = spec.clone();
                plain.options.remove("backend");
                let parsed = KvProvider::parse(&plain)?;
                if options.contains(&"backend") || options.is_empty() {
                    if options.len() > 1 {
                        return Err(refused(
                            "a backend binding takes no other options: the backend decides".into(),
                        ));
                    }
                    return match self.backend(tenant, provider, spec.options.get("backend")) {
                        Some(_) => Ok(()),
                        None if options.is_empty() && self.config.direct_bindings => Ok(()),
                        None => Err(refused(self.no_backend(tenant, provider, spec))),
                    };
                }
                if self.config.direct_bindings {
                    return Ok(());
                }
                self.check_own_endpoint(name, provider, spec, &parsed)
            }
            _ => {
                KvProvider::parse(spec)?;
                Ok(())
            }
        }
    }

    fn check_own_endpoint(
        &self,
        name: &str,
        provider: &str,
        spec: &ProviderSpec,
        parsed: &KvProvider,
    ) -> Result<(), PolicyError> {
        let refused = |reason: String| refused(name, reason);
        let (provider, allowed, endpoint_key, schemes, port): (
            _,
            _,
            _,
            &'static [&'static str],
            _,
        ) = if provider == "redis" {
            ("redis", OWN_REDIS, "url", &["redis", "rediss"], 6379)
        } else {
            ("dynamo", OWN_DYNAMO, "endpoint", &["https", "http"], 443)
        };
        if let Some(k) = spec.options.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(refused(format!(
                "option `{k}` is the backend's to decide; bind a backend (`kv={provider}` or `kv={provider}:backend=NAME`)"
            )));
        }
        let endpoint = spec.options.get(endpoint_key).ok_or_else(|| {
            refused(format!(
                "name a backend (`kv={provider}:backend=NAME`) or your own `{endpoint_key}`"
            ))
        })?;
        let rule = self.config.endpoints.get(provider).ok_or_else(|| {
            refused(format!(
                "this platform does not allow tenants' own {provider} endpoints; bind a backend (`kv={provider}` or `kv={provider}:backend=NAME`)"
            ))
        })?;
        rule.check(provider, endpoint, schemes, port)
            .map_err(|source| PolicyError::Endpoint {
                binding: name.to_string(),
                source,
            })?;
        if let KvProvider::Dynamo(d) = parsed
            && d.credentials.is_none()
        {
            return Err(refused(
                "a DynamoDB endpoint of your own needs access_key_id and secret_access_key: the worker's credentials sign only the operator's backends".into(),
            ));
        }
        Ok(())
    }

    fn backend(
        &self,
        tenant: &str,
        provider: &str,
        named: Option<&String>,
    ) -> Option<&BackendConfig> {
        let found = match named {
            Some(n) => self.config.backends.get(n),
            None => self
                .config
                .backends
                .values()
                .find(|b| b.default && b.provider == provider),
        };
        found.filter(|b| b.provider == provider && b.offered_to(tenant))
    }

    fn no_backend(&self, tenant: &str, provider: &str, spec: &ProviderSpec) -> String {
        let offered: Vec<&str> = self
            .config
            .backends
            .iter()
            .filter(|(_, b)| b.provider == provider && b.offered_to(tenant))
            .map(|(n, _)| n.as_str())
            .collect();
        let what = match spec.options.get("backend") {
            Some(n) => format!("no {provider} backend `{n}` is offered to tenant `{tenant}`"),
            None => format!("no default {provider} backend is offered to tenant `{tenant}`"),
        };
        if offered.is_empty() {
            format!("{what}; the operator defines them under [tenancy.backends]")
        } else {
            format!("{what}; offered: {}", offered.join(", "))
        }
    }

    /// What a worker running the app gets for a stored binding: [`Policy::resolve`]'s
    /// result, or, when the policy (as configured now) refuses it, a binding naming no
    /// backend that the worker refuses to open, so it reports the app as failed.
    pub fn resolve_for_worker(&self, tenant: &str, app: &str, stored: &str) -> String {
        match self.resolve(tenant, stored) {
            Ok(resolved) => resolved,
            Err(e) => {
                tracing::warn!(%tenant, %app, error = %e, "refusing a stored binding");
                match stored.parse::<Binding>() {
                    Ok(Binding::KeyValue { bucket, provider }) => Binding::KeyValue {
                        bucket,
                        provider: ProviderSpec {
                            provider: provider.provider,
                            options: [("backend".to_string(), REFUSED_BACKEND.to_string())].into(),
                        },
                    }
                    .to_string(),
                    Ok(b @ Binding::Messaging { .. }) => {
                        format!("{}=embedded:backend={REFUSED_BACKEND}", b.name())
                    }
                    _ => format!("kv=memory:backend={REFUSED_BACKEND}"),
                }
            }
        }
    }

    /// The binding a worker opens, from the stored one, checked again against the
    /// policy as configured now (an allow-list narrowed, a backend withdrawn): a backend
    /// replaced by its options, a memory store given its cap, secrets opened.
    pub fn resolve(&self, tenant: &str, stored: &str) -> Result<String, PolicyError> {
        let binding: Binding = stored.parse()?;
        let name = binding.name();
        if let Binding::Messaging { provider, .. } = &binding {
            self.admit_messaging(&name, provider)?;
            return Ok(stored.to_string());
        }
        let Binding::KeyValue {
            bucket,
            mut provider,
        } = binding
        else {
            return Ok(stored.to_string());
        };
        self.check(tenant, &name, &provider)?;
        let kind = kind(&provider.provider);
        match kind {
            "memory" if !provider.options.contains_key("max_mb") => {
                provider
                    .options
                    .insert("max_mb".into(), self.config.memory_max_mb.to_string());
            }
            "redis" | "dynamo"
                if provider.options.is_empty() || provider.options.contains_key("backend") =>
            {
                if let Some(backend) = self.backend(tenant, kind, provider.options.get("backend")) {
                    provider = backend.spec();
                }
            }
            _ => {}
        }
        for (key, value) in provider.options.iter_mut() {
            if Sealer::is_sealed(value) {
                *value = self.sealer.open(value, &context(tenant, &name, key))?;
            }
        }
        Ok(Binding::KeyValue { bucket, provider }.to_string())
    }
}

/// The provider tag as the policy knows it: `dynamodb` is an alias of `dynamo`.
fn kind(provider: &str) -> &str {
    if provider == "dynamodb" {
        "dynamo"
    } else {
        provider
    }
}

fn refused(name: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Refused {
        binding: name.to_string(),
        reason: reason.into(),
    }
}

/// How a stored binding may be shown (API, CLI, logs): secrets redacted.
pub fn shown(stored: &str) -> String {
    match stored.parse::<Binding>() {
        Ok(b) => providers::redacted_binding(&b).to_string(),
        Err(_) => REDACTED.to_string(),
    }
}

impl BackendConfig {
    fn spec(&self) -> ProviderSpec {
        ProviderSpec {
            provider: self.provider.clone(),
            options: self.options.clone(),
        }
    }
}

/// A secret sent back as `***` (as every read shows it) keeps the stored value, but
/// only for the same provider with the same other options: a kept secret never goes to
/// another endpoint or account.
fn keep_redacted_secrets(
    spec: &mut ProviderSpec,
    name: &str,
    current: &[Binding],
) -> Result<(), String> {
    if !spec.options.values().any(|v| v == REDACTED) {
        return Ok(());
    }
    let stored = current.iter().find_map(|b| match b {
        Binding::KeyValue { provider, .. } if b.name() == name => Some(provider),
        _ => None,
    });
    let public = |s: &ProviderSpec| -> Vec<(String, String)> {
        s.options
            .iter()
            .filter(|(k, _)| !providers::SECRET_OPTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let Some(stored) = stored.filter(|s| s.provider == spec.provider && public(s) == public(spec))
    else {
        return Err(
            "a secret is redacted (`***`) but the binding's provider or other options changed, or nothing is stored to keep; send the value".into(),
        );
    };
    for (key, value) in spec.options.iter_mut() {
        if value != REDACTED {
            continue;
        }
        match stored.options.get(key) {
            Some(kept) if Sealer::is_sealed(kept) => kept.clone_into(value),
            _ => {
                return Err(format!(
                    "`{key}` is redacted and no value of it is stored; send the value"
                ));
            }
        }
    }
    Ok(())
}

/// What a sealed value is bound to: it opens only for this tenant, binding and option.
fn context(tenant: &str, name: &str, option: &str) -> String {
    format!("{tenant}/{name}/{option}")
}

/// `redis://user:pw@host` becomes `url=redis://user@host,password=pw` (decoded, as
/// the Redis client would decode it), so the password is sealed and the URL can be
/// shown. `***` in the URL stands for the stored password, like `password=***`.
fn move_url_password(spec: &mut ProviderSpec) -> Result<(), String> {
    let Some(url) = spec.options.get("url") else {
        return Ok(());
    };
    let Some(encoded) = providers::url_password(url).map(str::to_string) else {
        return Ok(());
    };
    if encoded.contains(['/', '?', '#', '@']) {
        return Err(
            "the URL's password holds `/`, `?`, `#` or `@`, which clients read differently; percent-encode them or use `password=`".into(),
        );
    }
    if spec.options.contains_key("password") {
        return Err("give the password either in the URL or as `password=`, not both".into());
    }
    let without = url.replacen(&format!(":{encoded}@"), "@", 1);
    spec.options.insert("url".into(), without);
    if encoded.is_empty() {
        return Ok(());
    }
    let password = if encoded == REDACTED {
        encoded
    } else {
        percent_encoding::percent_decode_str(&encoded)
            .decode_utf8()
            .map_err(|_| "the URL's password is not UTF-8 once decoded".to_string())?
            .into_owned()
    };
    spec.options.insert("password".into(), password);
    Ok(())
}

#[cfg(test)]
mod tests;
