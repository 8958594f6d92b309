//! Sending messages: `wasi:messaging/producer` and `wasmcloud:messaging/consumer` over
//! `messaging` bindings. A topic goes where `messaging.TOPIC=…` says, else where
//! `messaging=…` says; the senders themselves live with the queue sources
//! (`queues/{embedded,nats,sqs}.rs`), which speak the same services.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use stratus_proto::binding::ProviderSpec;
use stratus_proto::providers::MessagingProvider;

use crate::queues::{Outgoing, QueueError};

/// Where one binding's messages go.
#[async_trait]
pub trait Producer: Send + Sync {
    async fn send(&self, topic: &str, message: Outgoing) -> Result<(), QueueError>;
}

/// An app's `messaging` bindings.
#[derive(Default)]
pub struct Producers {
    pub default: Option<Arc<dyn Producer>>,
    pub topics: HashMap<String, Arc<dyn Producer>>,
}

impl Producers {
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.topics.is_empty()
    }

    /// The producer a topic is bound to.
    pub fn for_topic(&self, topic: &str) -> Option<&Arc<dyn Producer>> {
        self.topics.get(topic).or(self.default.as_ref())
    }
}

/// Opens one binding's producer for the app whose namespace is `app` (`TENANT.APP` on
/// a worker, where embedded queue names are the tenant's own).
pub async fn open(
    spec: &ProviderSpec,
    app: &str,
    data_dir: &Path,
) -> Result<Arc<dyn Producer>, QueueError> {
    let provider = MessagingProvider::parse(spec).map_err(|e| QueueError::Config(e.to_string()))?;
    Ok(match provider {
        MessagingProvider::Embedded { queue } => Arc::new(crate::queues::embedded::SpoolProducer {
            data_dir: data_dir.to_path_buf(),
            tenant: app.split_once('.').map(|(tenant, _)| tenant.to_string()),
            queue,
        }),
        MessagingProvider::Nats { url } => {
            Arc::new(crate::queues::nats::NatsProducer::connect(&url).await?)
        }
        MessagingProvider::Sqs { queue_url } => {
            Arc::new(crate::queues::sqs::SqsProducer::connect(&queue_url).await)
        }
    })
}
