//! Invoking an app for a trigger other than HTTP: a queue message or a timer's
//! scheduled run, each in a fresh instance under the limits a request runs under (the
//! app's fair share, the worker's slots, the deadline, CPU time and memory budget).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Instance, InstancePre, TypedFunc};

use super::app::{App, InvocationError, InvocationId};
use super::cpu_time::CpuLimitExceeded;
use super::host_memory::MAX_RESOURCES;
use super::state::InvocationState;
use crate::capabilities::messaging::Message;
use crate::generated::exports::stratus::platform::timer_handler;
use crate::generated::exports::wasi::messaging::incoming_handler;
use crate::generated::exports::wasmcloud::messaging::handler as wasmcloud_handler;
use crate::generated::fermyon::spin_cron::cron_types;
use crate::generated::wasmcloud::messaging::types::BrokerMessage;

pub use crate::generated::stratus::platform::timer_types::TimerEvent;

/// What a trigger hands the app.
#[derive(Debug, Clone)]
pub enum Event {
    Message(Message),
    Timer(TimerEvent),
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Event::Message(_) => "message",
            Event::Timer(_) => "timer",
        }
    }
}

/// Why an event was not handled. Every case means the same to a trigger (try again
/// later); the distinction is for its logs and the trigger's state.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the function returned an error: {0}")]
    Rejected(String),
    #[error(transparent)]
    Invocation(#[from] InvocationError),
    #[error("the function exports no {0} handler")]
    NoHandler(&'static str),
}

impl EventError {
    /// Whether the worker, not the event, is why it failed: a trigger should not count
    /// such an attempt against the event's receives.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            EventError::Invocation(InvocationError::Overloaded | InvocationError::Throttled)
        )
    }
}

/// The event handlers a component exports, looked up once at load.
pub(super) struct EventHandlers {
    wasi_message: Option<incoming_handler::GuestIndices>,
    wasmcloud_message: Option<wasmcloud_handler::GuestIndices>,
    timer: Option<timer_handler::GuestIndices>,
    /// Spin's `handle-cron-event`, a function at the top of the component.
    spin_cron: Option<ComponentExportIndex>,
}

/// What Spin's cron handler takes and returns.
type SpinCron = TypedFunc<(cron_types::Metadata,), (Result<(), cron_types::Error>,)>;

impl EventHandlers {
    pub(super) fn new(pre: &InstancePre<InvocationState>) -> Self {
        Self {
            wasi_message: incoming_handler::GuestIndices::new(pre).ok(),
            wasmcloud_message: wasmcloud_handler::GuestIndices::new(pre).ok(),
            timer: timer_handler::GuestIndices::new(pre).ok(),
            spin_cron: pre
                .component()
                .get_export_index(None, stratus_proto::interfaces::SPIN_CRON_HANDLER),
        }
    }

    pub(super) fn handles_messages(&self) -> bool {
        self.wasi_message.is_some() || self.wasmcloud_message.is_some()
    }

    pub(super) fn handles_timers(&self) -> bool {
        self.timer.is_some() || self.spin_cron.is_some()
    }

    /// Calls the export for `event` in a new instance; the outer error is a trap.
    async fn call(
        &self,
        store: &mut Store<InvocationState>,
        instance: &Instance,
        event: Event,
    ) -> wasmtime::Result<Result<(), String>> {
        match event {
            Event::Message(message) => {
                // The standard interface first: a component exporting both is asked
                // through the one its authors most likely tested.
                if let Some(indices) = &self.wasi_message {
                    let guest = indices.load(&mut *store, instance)?;
                    let message = store.data_mut().table.push(message)?;
                    let outcome = guest.call_handle(&mut *store, message).await?;
                    return Ok(outcome.map_err(|e| format!("{e:?}")));
                }
                let Some(indices) = &self.wasmcloud_message else {
                    return Ok(Err("no message handler".into()));
                };
                let guest = indices.load(&mut *store, instance)?;
                let msg = BrokerMessage {
                    subject: message.topic.unwrap_or_default(),
                    body: message.data,
                    reply_to: None,
                };
                guest.call_handle_message(&mut *store, &msg).await
            }
            Event::Timer(event) => {
                if let Some(indices) = &self.timer {
                    let guest = indices.load(&mut *store, instance)?;
                    return guest.call_handle_timer(&mut *store, &event).await;
                }
                let Some(index) = &self.spin_cron else {
                    return Ok(Err("no timer handler".into()));
                };
                // Spin passes the time in seconds.
                let metadata = cron_types::Metadata {
                    timestamp: event.scheduled_ms / 1000,
                };
                let func: SpinCron = instance.get_typed_func(&mut *store, index)?;
                let (outcome,) = func.call_async(&mut *store, (metadata,)).await?;
                Ok(outcome.map_err(|cron_types::Error::Other(e)| e))
            }
        }
    }
}

impl App {
    /// Runs one event in a fresh instance and returns the handler's verdict.
    pub async fn handle_event(self: &Arc<Self>, event: Event) -> Result<(), EventError> {
        let handled = match &event {
            Event::Message(_) => self.events.handles_messages(),
            Event::Timer(_) => self.events.handles_timers(),
        };
        if !handled {
            return Err(EventError::NoHandler(event.kind()));
        }
        let timeout = self.runtime.config().timeout;
        let app_slot = self.share.enter(timeout).await?;
        let permit = self.runtime.acquire_slot(timeout).await?;
        let mut store = self.new_store();
        {
            let state = store.data_mut();
            state.app_slot = Some(app_slot);
            let capacity = state.limiter.charge.grant_resources(MAX_RESOURCES);
            state.table.set_max_capacity(capacity);
        }
        let id = InvocationId::next();
        let kind = event.kind();
        let started = Instant::now();
        let mut instantiated = false;
        let outcome = tokio::time::timeout(timeout, async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            instantiated = true;
            self.events.call(&mut store, &instance, event).await
        })
        .await;
        self.ship_logs(&store, id);
        let starved = !instantiated && store.data().limiter.charge.refused();
        super::teardown::release(store, permit, self.clone());
        let outcome = match outcome {
            Err(_) => Err(InvocationError::Timeout(timeout).into()),
            Ok(Err(_)) if starved => Err(InvocationError::Overloaded.into()),
            Ok(Err(trap)) => Err(match trap.downcast_ref::<CpuLimitExceeded>() {
                Some(&exceeded) => InvocationError::CpuLimit(exceeded),
                None => InvocationError::Trap(format!("{trap:#}")),
            }
            .into()),
            Ok(Ok(Err(rejected))) => Err(EventError::Rejected(rejected)),
            Ok(Ok(Ok(()))) => Ok(()),
        };
        tracing::debug!(
            app = %self.name,
            invocation = %id,
            kind,
            elapsed_us = started.elapsed().as_micros() as u64,
            ok = outcome.is_ok(),
            "event handled"
        );
        if let Err(e) = &outcome {
            tracing::info!(app = %self.name, invocation = %id, kind, error = %e, "event not handled");
        }
        outcome
    }
}
