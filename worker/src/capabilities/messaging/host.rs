//! `wasi:messaging/types@0.2.0-draft` host: the `message` and `client` resources a
//! handler receives and builds. A message a guest builds or changes holds at most
//! [`MAX_GUEST_MESSAGE_BYTES`] (what the worker's memory budget assumes of any host
//! resource, since a guest may hold many); `wasmcloud:messaging`'s types are plain
//! records and need no host code.

use wasmtime::component::{HasData, Resource, ResourceTable};

use stratus_proto::interfaces::MessagingTypes;

use super::producer::Producers;
use super::{Client, MAX_GUEST_MESSAGE_BYTES, MAX_METADATA_BYTES, Message};
use crate::generated::wasi::messaging::producer as wasi_producer;
use crate::generated::wasi::messaging::types as wasi;
use crate::generated::wasmcloud::messaging::consumer as wasmcloud_consumer;
use crate::generated::wasmcloud::messaging::types as wasmcloud;
use crate::queues::{Outgoing, QueueError};

/// How long one send may take before the guest gets a timeout.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct MessagingView<'a> {
    pub table: &'a mut ResourceTable,
    pub producers: &'a Producers,
}

pub struct MessagingData;

impl HasData for MessagingData {
    type Data<'a> = MessagingView<'a>;
}

fn too_large(what: &str, limit: usize) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "the guest set a message {what} over the {limit}-byte limit"
    ))
}

impl MessagingView<'_> {
    fn message(&mut self, m: &Resource<Message>) -> wasmtime::Result<&mut Message> {
        Ok(self.table.get_mut(m)?)
    }

    /// What a guest changed must fit the limits.
    fn check(message: &Message) -> wasmtime::Result<()> {
        if message.metadata_bytes() > MAX_METADATA_BYTES {
            return Err(too_large("metadata", MAX_METADATA_BYTES));
        }
        if message.bytes() > MAX_GUEST_MESSAGE_BYTES {
            return Err(too_large("body and metadata", MAX_GUEST_MESSAGE_BYTES));
        }
        Ok(())
    }
}

impl wasi::Host for MessagingView<'_> {}

impl wasmcloud::Host for MessagingView<'_> {}

/// Sends through the binding of `topic`; the error is what the guest is told.
async fn send(producers: &Producers, topic: &str, message: Outgoing) -> Result<(), SendError> {
    let producer = producers
        .for_topic(topic)
        .ok_or_else(|| SendError::Unbound(topic.to_string()))?;
    match tokio::time::timeout(SEND_TIMEOUT, producer.send(topic, message)).await {
        Err(_) => Err(SendError::Timeout),
        Ok(Err(e)) => Err(SendError::Queue(e)),
        Ok(Ok(())) => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("no messaging binding for topic `{0}` (bind `messaging=…` or `messaging.{0}=…`)")]
    Unbound(String),
    #[error("sending timed out")]
    Timeout,
    #[error(transparent)]
    Queue(QueueError),
}

impl From<SendError> for wasi::Error {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Timeout => wasi::Error::Timeout,
            SendError::Queue(QueueError::Unavailable(m)) => wasi::Error::Connection(m),
            other => wasi::Error::Other(other.to_string()),
        }
    }
}

impl wasi_producer::Host for MessagingView<'_> {
    async fn send(
        &mut self,
        _c: Resource<Client>,
        topic: String,
        message: Resource<Message>,
    ) -> wasmtime::Result<Result<(), wasi::Error>> {
        let message = self.table.delete(message)?;
        let group = message
            .metadata
            .iter()
            .find(|(k, _)| k == "group")
            .map(|(_, v)| v.clone());
        let outgoing = Outgoing {
            body: message.data,
            content_type: message.content_type,
            attributes: message.metadata,
            group,
        };
        Ok(send(self.producers, &topic, outgoing)
            .await
            .map_err(Into::into))
    }
}

impl wasmcloud_consumer::Host for MessagingView<'_> {
    async fn request(
        &mut self,
        _subject: String,
        _body: Vec<u8>,
        _timeout_ms: u32,
    ) -> wasmtime::Result<Result<wasmcloud::BrokerMessage, String>> {
        Ok(Err(
            "request-reply is not supported by Stratus; use publish".into(),
        ))
    }

    async fn publish(
        &mut self,
        msg: wasmcloud::BrokerMessage,
    ) -> wasmtime::Result<Result<(), String>> {
        if msg.body.len() > super::MAX_MESSAGE_BYTES {
            return Ok(Err(format!(
                "a message body is at most {} bytes",
                super::MAX_MESSAGE_BYTES
            )));
        }
        let outgoing = Outgoing {
            body: msg.body,
            ..Outgoing::default()
        };
        Ok(send(self.producers, &msg.subject, outgoing)
            .await
            .map_err(|e| e.to_string()))
    }
}

/// Adds a package's sending interface to the linker.
pub fn add_producer_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    types: MessagingTypes,
    get: fn(&mut T) -> MessagingView<'_>,
) -> wasmtime::Result<()> {
    match types {
        MessagingTypes::Wasi => wasi_producer::add_to_linker::<T, MessagingData>(linker, get),
        MessagingTypes::WasmCloud => {
            wasmcloud_consumer::add_to_linker::<T, MessagingData>(linker, get)
        }
    }
}

impl wasi::HostClient for MessagingView<'_> {
    async fn connect(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Client>, wasi::Error>> {
        // The name is the guest's; where a topic goes is the bindings' to say.
        if name.len() > MAX_METADATA_BYTES {
            return Err(too_large("client name", MAX_METADATA_BYTES));
        }
        Ok(Ok(self.table.push(Client { name })?))
    }

    async fn disconnect(
        &mut self,
        _c: Resource<Client>,
    ) -> wasmtime::Result<Result<(), wasi::Error>> {
        Ok(Ok(()))
    }

    async fn drop(&mut self, c: Resource<Client>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

impl wasi::HostMessage for MessagingView<'_> {
    async fn new(&mut self, data: Vec<u8>) -> wasmtime::Result<Resource<Message>> {
        let message = Message {
            data,
            ..Message::default()
        };
        Self::check(&message)?;
        Ok(self.table.push(message)?)
    }

    async fn topic(&mut self, m: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.message(&m)?.topic.clone())
    }

    async fn content_type(&mut self, m: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.message(&m)?.content_type.clone())
    }

    async fn set_content_type(
        &mut self,
        m: Resource<Message>,
        content_type: String,
    ) -> wasmtime::Result<()> {
        let message = self.message(&m)?;
        message.content_type = Some(content_type);
        Self::check(message)
    }

    async fn data(&mut self, m: Resource<Message>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message(&m)?.data.clone())
    }

    async fn set_data(&mut self, m: Resource<Message>, data: Vec<u8>) -> wasmtime::Result<()> {
        let message = self.message(&m)?;
        message.data = data;
        Self::check(message)
    }

    async fn metadata(
        &mut self,
        m: Resource<Message>,
    ) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        let message = self.message(&m)?;
        Ok((!message.metadata.is_empty()).then(|| message.metadata.clone()))
    }

    async fn add_metadata(
        &mut self,
        m: Resource<Message>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        let message = self.message(&m)?;
        message.set_meta(key, value);
        Self::check(message)
    }

    async fn set_metadata(
        &mut self,
        m: Resource<Message>,
        meta: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let message = self.message(&m)?;
        message.metadata = meta;
        Self::check(message)
    }

    async fn remove_metadata(&mut self, m: Resource<Message>, key: String) -> wasmtime::Result<()> {
        self.message(&m)?.metadata.retain(|(k, _)| *k != key);
        Ok(())
    }

    async fn drop(&mut self, m: Resource<Message>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

/// Adds one package's message types to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    types: MessagingTypes,
    get: fn(&mut T) -> MessagingView<'_>,
) -> wasmtime::Result<()> {
    match types {
        MessagingTypes::Wasi => wasi::add_to_linker::<T, MessagingData>(linker, get),
        MessagingTypes::WasmCloud => wasmcloud::add_to_linker::<T, MessagingData>(linker, get),
    }
}
