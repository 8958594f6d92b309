//! Capabilities a component can import, each behind one provider-agnostic trait.

pub mod aws;
pub mod config;
pub mod keyvalue;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use self::config::ConfigValues;
use self::keyvalue::{KvBindings, OpenError};
use crate::binding::{Binding, BindingError};

/// Providers opened so far, keyed by their spec (`redis:url=…`).
#[derive(Default)]
pub struct Providers {
    kv: tokio::sync::Mutex<std::collections::HashMap<String, Arc<dyn keyvalue::KeyValue>>>,
}

impl Providers {
    async fn kv(
        &self,
        spec: &crate::binding::ProviderSpec,
        data_dir: &Path,
    ) -> Result<Arc<dyn keyvalue::KeyValue>, OpenError> {
        // Held across the connect so two apps binding the same spec share one provider.
        let mut open = self.kv.lock().await;
        let key = spec.to_string();
        if let Some(store) = open.get(&key) {
            return Ok(store.clone());
        }
        let store = keyvalue::open_provider(spec, data_dir).await?;
        open.insert(key, store.clone());
        Ok(store)
    }
}

/// Everything an app is bound to, with providers connected and ready to share across
/// invocations.
#[derive(Clone, Default)]
pub struct Capabilities {
    pub kv: Arc<KvBindings>,
    pub config: Option<ConfigValues>,
}

impl Capabilities {
    /// Checks every binding's provider and options, and that nothing is bound twice,
    /// without connecting to anything.
    pub fn check(bindings: &[Binding]) -> Result<(), BindingError> {
        stratus_proto::providers::check_bindings(bindings)
    }

    /// Connects every provider the bindings name. `data_dir` holds embedded stores.
    pub async fn open(bindings: &[Binding], data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_shared(bindings, data_dir, &Providers::default()).await
    }

    /// Like [`Capabilities::open`], reusing providers already open in `providers`: a
    /// worker running many apps keeps one connection pool (or embedded file) per provider
    /// spec, and an embedded file can only be opened once per process anyway.
    pub async fn open_shared(
        bindings: &[Binding],
        data_dir: &Path,
        providers: &Providers,
    ) -> Result<Self, OpenError> {
        Self::check(bindings)?;
        let mut kv = KvBindings::default();
        let mut config: Option<BTreeMap<String, String>> = None;
        for binding in bindings {
            match binding {
                Binding::KeyValue { bucket, provider } => {
                    let store = providers.kv(provider, data_dir).await?;
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
            }
        }
        Ok(Self {
            kv: Arc::new(kv),
            config: config.map(Arc::new),
        })
    }
}
