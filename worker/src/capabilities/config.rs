//! `wasi:config/store` host: values bound with `config.KEY=VALUE`, served under all three
//! version strings in the wild (`0.2.0-rc.1`, `0.2.0-draft`, `0.2.0-draft-2024-09-27`).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::HasData;

use crate::generated::wasi::config0_2_0_draft as draft;
use crate::generated::wasi::config0_2_0_draft_2024_09_27 as spin;
use crate::generated::wasi::config0_2_0_rc_1 as rc1;

pub use stratus_proto::interfaces::ConfigRevision;

/// An app's config values.
pub type ConfigValues = Arc<BTreeMap<String, String>>;

pub struct ConfigView<'a> {
    pub values: &'a ConfigValues,
}

pub struct ConfigData;

impl HasData for ConfigData {
    type Data<'a> = ConfigView<'a>;
}

macro_rules! config_host {
    ($m:ident) => {
        impl $m::store::Host for ConfigView<'_> {
            async fn get(
                &mut self,
                key: String,
            ) -> wasmtime::Result<Result<Option<String>, $m::store::Error>> {
                Ok(Ok(self.values.get(&key).cloned()))
            }

            async fn get_all(
                &mut self,
            ) -> wasmtime::Result<Result<Vec<(String, String)>, $m::store::Error>> {
                Ok(Ok(self
                    .values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()))
            }
        }
    };
}
config_host!(rc1);
config_host!(draft);
config_host!(spin);

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    revision: ConfigRevision,
    get: fn(&mut T) -> ConfigView<'_>,
) -> wasmtime::Result<()> {
    match revision {
        ConfigRevision::Rc1 => rc1::store::add_to_linker::<T, ConfigData>(linker, get),
        ConfigRevision::Draft => draft::store::add_to_linker::<T, ConfigData>(linker, get),
        ConfigRevision::Draft20240927 => spin::store::add_to_linker::<T, ConfigData>(linker, get),
    }
}
