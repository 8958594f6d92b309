//! Messages as functions see them: one model behind `wasi:messaging@0.2.0-draft` and
//! `wasmcloud:messaging@0.2.0`, what a queue trigger hands a handler and what a handler
//! may build. `host.rs` serves the WIT types over it.

pub mod host;
pub mod producer;

/// Largest message body a queue trigger hands a function (NATS's default payload
/// limit; SQS takes 256 KiB); larger ones are dead-lettered. One per invocation.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Largest message a guest may build or change (body, content type and metadata
/// together): what the worker's memory budget assumes a host resource holds at most,
/// since a guest may hold many.
pub const MAX_GUEST_MESSAGE_BYTES: usize = crate::runtime::budget::RESOURCE_BYTES;

/// Largest total of a message's metadata keys and values a guest may set.
pub const MAX_METADATA_BYTES: usize = 16 << 10;

/// A message: a body, its content type and metadata, and the topic it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub topic: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
    pub metadata: Vec<(String, String)>,
}

impl Message {
    fn metadata_bytes(&self) -> usize {
        self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// What the message makes the host hold.
    pub fn bytes(&self) -> usize {
        self.data.len()
            + self.metadata_bytes()
            + self.content_type.as_ref().map_or(0, String::len)
            + self.topic.as_ref().map_or(0, String::len)
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn set_meta(&mut self, key: String, value: String) {
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value));
    }
}

/// A guest's handle on a messaging binding, by name (`client.connect(name)`).
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
}
