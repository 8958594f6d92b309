//! Building the linker with exactly the interfaces a component imports, by the import
//! rule of `stratus_proto::interfaces` (served, and bound where it is a capability).

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::state::InvocationState;
use stratus_proto::interfaces::{ComponentError, ImportError, Provided, check_import};
use stratus_proto::names::NameError;

use crate::binding::Kind;
use crate::capabilities::Capabilities;
use crate::capabilities::{config, keyvalue, messaging};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("linking failed: {0}")]
    Link(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Builds a linker holding WASI plus exactly the capabilities the component imports,
/// refusing imports that are unknown or have no binding.
pub fn link(
    engine: &Engine,
    component: &Component,
    caps: &Capabilities,
) -> Result<Linker<InvocationState>, LoadError> {
    let link_err = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_err)?;

    let bound = |kind: Kind| match kind {
        Kind::KeyValue => !caps.kv.is_empty(),
        Kind::Config => caps.config.is_some(),
        Kind::Messaging => !caps.messaging.is_empty(),
    };
    let mut kv_linked = Vec::new();
    let mut config_linked = Vec::new();
    let mut messaging_linked = Vec::new();
    for (import, _) in component.component_type().imports(engine) {
        match check_import(import, &bound)? {
            Provided::Wasi => {}
            Provided::KeyValue(rev) => {
                if !kv_linked.contains(&rev) {
                    keyvalue::host::add_to_linker(&mut linker, rev, InvocationState::kv)
                        .map_err(link_err)?;
                    kv_linked.push(rev);
                }
            }
            Provided::MessagingTypes(types) => {
                if !messaging_linked.contains(&types) {
                    messaging::host::add_to_linker(&mut linker, types, InvocationState::messaging)
                        .map_err(link_err)?;
                    messaging_linked.push(types);
                }
            }
            Provided::Producer(types) => {
                if !messaging_linked.contains(&types) {
                    messaging::host::add_to_linker(&mut linker, types, InvocationState::messaging)
                        .map_err(link_err)?;
                    messaging_linked.push(types);
                }
                messaging::host::add_producer_to_linker(
                    &mut linker,
                    types,
                    InvocationState::messaging,
                )
                .map_err(link_err)?;
            }
            Provided::TimerTypes => {
                crate::generated::stratus::platform::timer_types::add_to_linker::<_, TimerTypes>(
                    &mut linker,
                    |s| s,
                )
                .map_err(link_err)?;
            }
            Provided::SpinCronTypes => {
                crate::generated::fermyon::spin_cron::cron_types::add_to_linker::<_, TimerTypes>(
                    &mut linker,
                    |s| s,
                )
                .map_err(link_err)?;
            }
            Provided::Config(rev) => {
                if !config_linked.contains(&rev) {
                    config::add_to_linker(&mut linker, rev, InvocationState::config)
                        .map_err(link_err)?;
                    config_linked.push(rev);
                }
            }
        }
    }
    Ok(linker)
}

/// Names the store state for the type-only `stratus:platform/timer-types` interface.
struct TimerTypes;

impl wasmtime::component::HasData for TimerTypes {
    type Data<'a> = &'a mut InvocationState;
}

impl crate::generated::stratus::platform::timer_types::Host for &mut InvocationState {}

impl crate::generated::fermyon::spin_cron::cron_types::Host for &mut InvocationState {}
