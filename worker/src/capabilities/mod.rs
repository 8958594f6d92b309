//! Capabilities a component can import, each behind one provider-agnostic trait.

pub mod config;
pub mod keyvalue;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use self::config::ConfigValues;
use self::keyvalue::{KvBindings, OpenError};
use crate::binding::{Binding, BindingError};

/// Everything an app is bound to, with providers connected and ready to share across
/// invocations.
#[derive(Clone, Default)]
pub struct Capabilities {
    pub kv: Arc<KvBindings>,
    pub config: Option<ConfigValues>,
}

impl Capabilities {
    /// Checks every binding's provider and options, and that no bucket is bound twice,
    /// without connecting to anything.
    pub fn check(bindings: &[Binding]) -> Result<(), BindingError> {
        let mut seen = std::collections::HashSet::new();
        for binding in bindings {
            if let Binding::KeyValue { bucket, provider } = binding {
                keyvalue::KvProvider::parse(provider)?;
                if !seen.insert(bucket.as_deref()) {
                    return Err(BindingError::Duplicate(binding.name()));
                }
            }
        }
        Ok(())
    }

    /// Connects every provider the bindings name. `data_dir` holds embedded stores.
    pub async fn open(bindings: &[Binding], data_dir: &Path) -> Result<Self, OpenError> {
        Self::check(bindings)?;
        let mut kv = KvBindings::default();
        let mut config: Option<BTreeMap<String, String>> = None;
        for binding in bindings {
            match binding {
                Binding::KeyValue { bucket, provider } => {
                    let store = keyvalue::open_provider(provider, data_dir).await?;
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
