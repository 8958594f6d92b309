//! Capabilities a component can import, each behind one provider-agnostic trait.

pub mod aws;
pub mod config;
pub mod keyvalue;
pub mod messaging;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use self::config::ConfigValues;
use self::keyvalue::{KvBindings, KvProvider, OpenError};
use crate::binding::{Binding, BindingError, ProviderSpec};
use std::sync::Weak;
use stratus_proto::providers::SECRET_REFS;

/// Providers open on this worker, shared by the apps bound to the same spec and closed
/// once no app uses them.
///
/// - Each spec opens at most once at a time, but different specs open concurrently: a
///   provider that takes its whole connect timeout to fail delays only the apps bound
///   to it, and the apps waiting on that open fail with it rather than each trying
///   again in turn.
/// - The table holds providers weakly: when the last app bound to one is dropped, so is
///   its connection pool (or embedded file).
/// - Memory stores are never shared between apps: an app has one, however many of its
///   buckets are bound to memory, as large as the largest of those bindings, so one
///   app filling its store never fails another's writes and cannot multiply its quota.
#[derive(Default)]
pub struct Providers {
    kv: std::sync::Mutex<std::collections::HashMap<String, Arc<KvSlot>>>,
    /// What the binary's config read of the environment, for `*_env` secret references.
    environment: BTreeMap<String, String>,
}

/// One spec's provider: opened once (or failed once), held weakly.
type KvSlot = tokio::sync::OnceCell<Result<Weak<dyn keyvalue::KeyValue>, Arc<OpenError>>>;

impl Providers {
    /// Providers whose bindings may name secrets by environment variable.
    pub fn with_environment(environment: BTreeMap<String, String>) -> Self {
        Self {
            environment,
            ..Self::default()
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<KvSlot>>> {
        self.kv.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn kv(
        &self,
        spec: &crate::binding::ProviderSpec,
        key: String,
        data_dir: &Path,
    ) -> Result<Arc<dyn keyvalue::KeyValue>, OpenError> {
        loop {
            let slot = {
                let mut table = self.table();
                // Forget providers every app has let go of, and failed opens nobody
                // waits on any more (the next load tries again).
                table.retain(|_, slot| match slot.get() {
                    None => true,
                    Some(Ok(weak)) => weak.strong_count() > 0,
                    Some(Err(_)) => Arc::strong_count(slot) > 1,
                });
                table.entry(key.clone()).or_default().clone()
            };
            let mut opened = None;
            let outcome = slot
                .get_or_init(|| async {
                    match keyvalue::open_provider(spec, data_dir).await {
                        Ok(store) => {
                            let weak = Arc::downgrade(&store);
                            opened = Some(store);
                            Ok(weak)
                        }
                        Err(e) => Err(Arc::new(e)),
                    }
                })
                .await;
            let weak = match outcome {
                Ok(weak) => weak,
                Err(e) => return Err(OpenError::Shared(e.clone())),
            };
            if let Some(store) = opened.or_else(|| weak.upgrade()) {
                return Ok(store);
            }
            // Its last user dropped it between lookup and use: open it afresh.
            let mut table = self.table();
            if table.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                table.remove(&key);
            }
        }
    }

    /// How many providers are open (for tests and metrics).
    pub fn open_count(&self) -> usize {
        self.table()
            .values()
            .filter(|slot| matches!(slot.get(), Some(Ok(weak)) if weak.strong_count() > 0))
            .count()
    }
}

/// Replaces each secret reference (`password_env=…`, `password_file=…`, …) by the
/// secret it names, read from `environment` (what the binary's config read of the
/// worker's environment) or the file. Runs on the worker, when a binding is opened.
pub fn resolve_secret_refs(
    spec: &ProviderSpec,
    environment: &std::collections::BTreeMap<String, String>,
) -> Result<ProviderSpec, BindingError> {
    let mut out = spec.clone();
    for (reference, secret) in SECRET_REFS {
        let Some(source) = out.options.remove(*reference) else {
            continue;
        };
        let invalid = |reason: String| BindingError::InvalidOption {
            provider: spec.provider.clone(),
            key: (*reference).to_string(),
            reason,
        };
        let value = if reference.ends_with("_env") {
            environment.get(&source).cloned().ok_or_else(|| {
                invalid(format!("the worker has no environment variable `{source}`"))
            })?
        } else {
            std::fs::read_to_string(&source)
                .map_err(|e| invalid(format!("reading {source}: {e}")))?
                .trim_end_matches(['\n', '\r'])
                .to_string()
        };
        out.options.insert((*secret).to_string(), value);
    }
    Ok(out)
}

/// Everything an app is bound to, with providers connected and ready to share across
/// invocations.
#[derive(Clone, Default)]
pub struct Capabilities {
    pub kv: Arc<KvBindings>,
    pub config: Option<ConfigValues>,
    /// Where sent messages go (`messaging` bindings).
    pub messaging: Arc<messaging::producer::Producers>,
}

impl Capabilities {
    /// Checks every binding's provider and options, and that nothing is bound twice,
    /// without connecting to anything.
    pub fn check(bindings: &[Binding]) -> Result<(), BindingError> {
        stratus_proto::providers::check_bindings(bindings)
    }

    /// Connects every provider the bindings name. `data_dir` holds embedded stores.
    pub async fn open(bindings: &[Binding], data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_shared(bindings, "app", data_dir, &Providers::default()).await
    }

    /// Like [`Capabilities::open`] for the app named `app`, reusing providers already
    /// open in `providers`: a worker running many apps keeps one connection pool (or
    /// embedded file) per provider spec, and an embedded file can only be opened once per
    /// process anyway.
    pub async fn open_shared(
        bindings: &[Binding],
        app: &str,
        data_dir: &Path,
        providers: &Providers,
    ) -> Result<Self, OpenError> {
        let resolved = bindings
            .iter()
            .map(|b| match b {
                Binding::KeyValue { bucket, provider } => Ok(Binding::KeyValue {
                    bucket: bucket.clone(),
                    provider: resolve_secret_refs(provider, &providers.environment)?,
                }),
                other => Ok(other.clone()),
            })
            .collect::<Result<Vec<_>, BindingError>>()?;
        let bindings = resolved.as_slice();
        Self::check(bindings)?;
        // One memory store per app, opened with its largest memory binding.
        let memory = bindings
            .iter()
            .filter_map(|b| match b {
                Binding::KeyValue { provider, .. } => match KvProvider::parse(provider) {
                    Ok(KvProvider::Memory { capacity }) => Some((capacity, provider)),
                    _ => None,
                },
                Binding::Config { .. } | Binding::Messaging { .. } => None,
            })
            .max_by_key(|(capacity, _)| *capacity)
            .map(|(_, spec)| spec);
        let mut kv = KvBindings::default();
        let mut config: Option<BTreeMap<String, String>> = None;
        let mut producers = messaging::producer::Producers::default();
        for binding in bindings {
            match binding {
                Binding::KeyValue { bucket, provider } => {
                    let store = match &memory {
                        Some(spec) if provider.provider == "memory" => {
                            providers
                                .kv(spec, format!("memory@{app}"), data_dir)
                                .await?
                        }
                        _ => {
                            providers
                                .kv(provider, provider.to_string(), data_dir)
                                .await?
                        }
                    };
                    match bucket {
                        None => kv.default = Some(store),
                        Some(b) => {
                            kv.buckets.insert(b.clone(), store);
                        }
                    }
                }
                Binding::Config { key, value } => {
                    config
                        .get_or_insert_default()
                        .insert(key.clone(), value.clone());
                }
                Binding::Messaging { topic, provider } => {
                    let producer = messaging::producer::open(provider, app, data_dir)
                        .await
                        .map_err(|e| OpenError::Messaging(binding.name(), e.to_string()))?;
                    match topic {
                        None => producers.default = Some(producer),
                        Some(t) => {
                            producers.topics.insert(t.clone(), producer);
                        }
                    }
                }
            }
        }
        Ok(Self {
            kv: Arc::new(kv),
            config: config.map(Arc::new),
            messaging: Arc::new(producers),
        })
    }
}
