//! Values larger than one DynamoDB item (400 KB), stored as chunk items beside the key.
//!
//! A key's own item holds either its value (`v`) or, for a value over [`CHUNK_BYTES`],
//! a *generation*: a fresh id per write (`g`) and a chunk count (`c`). The chunks live in
//! a partition of their own, `#chunks:NS` (no namespace starts with `#`, so `list-keys`
//! never sees them), under `GENERATION/INDEX`.
//!
//! Chunks are written before the key's item points at them and deleted only after it
//! stops pointing at them (the old item comes back from the same put or delete), so a
//! reader that finds the key's item finds its chunks, unless a writer replaced the value
//! in between; the reader then starts again. A generation id is never reused, so a
//! compare-and-swap on a large value compares the bytes it reads, then conditions on the
//! generation that held them (a rewrite of the same bytes in between makes it fail, as a
//! lost race would, and the caller retries).
//!
//! The SDK retries an attempt whose outcome it did not see, so a put may find its own
//! earlier attempt's item: a generation is never dropped by the write that made it, and a
//! compare-and-swap that fails its condition checks whether the key already holds its
//! own write (its token) before discarding its chunks.
//!
//! What goes wrong costs storage, never a wrong read: chunks of a put whose outcome is
//! unknown are kept (it may have landed), and chunks stay unreferenced after a crash
//! between a put and its cleanup, after a retried put or delete whose first attempt
//! landed, or when a concurrent large write lands between a batch write's read of the
//! generations it replaces and the batch write itself.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    BATCH_GET_MAX, BATCH_REQUEST_BYTES, DynamoStore, Item, NAME, PK, SK, VALUE, delete_request,
    put_request,
};
use crate::capabilities::keyvalue::KvError;
use crate::capabilities::keyvalue::limits::MAX_VALUE_BYTES;

/// The largest value stored inline, and the size of each chunk of a larger one: with a
/// key of up to 1 KiB and its namespace, an item stays under DynamoDB's 400 KB.
pub(super) const CHUNK_BYTES: usize = 384 * 1024;
pub(super) const GENERATION: &str = "g";
const COUNT: &str = "c";
/// More chunks than the largest value a guest may write needs: a corrupt item.
const MAX_CHUNKS: usize = MAX_VALUE_BYTES.div_ceil(CHUNK_BYTES) + 1;

/// One write of a large value: where its chunks are and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Generation {
    pub id: String,
    count: usize,
}

impl Generation {
    fn new(value_len: usize) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            count: value_len.div_ceil(CHUNK_BYTES),
        }
    }

    /// The generation a key's item points at, if it holds a chunked value.
    pub fn of(item: &Item) -> Option<Self> {
        let id = match item.get(GENERATION) {
            Some(AttributeValue::S(id)) => id.clone(),
            _ => return None,
        };
        let count = match item.get(COUNT) {
            Some(AttributeValue::N(n)) => n.parse().ok()?,
            _ => return None,
        };
        Some(Self { id, count })
    }

    /// Adds the attributes that point a key's item at this generation.
    pub fn point(&self, item: &mut Item) {
        item.insert(GENERATION.to_string(), AttributeValue::S(self.id.clone()));
        item.insert(COUNT.to_string(), AttributeValue::N(self.count.to_string()));
    }

    fn chunk_key(&self, ns: &str, index: usize) -> Item {
        HashMap::from([
            (PK.to_string(), AttributeValue::S(chunk_partition(ns))),
            (
                SK.to_string(),
                AttributeValue::S(format!("{}/{index}", self.id)),
            ),
        ])
    }

    fn chunk_keys(&self, ns: &str) -> Vec<Item> {
        // A corrupt count must not size an allocation; `read_chunks` reports it.
        (0..self.count.min(MAX_CHUNKS))
            .map(|i| self.chunk_key(ns, i))
            .collect()
    }
}

fn chunk_partition(ns: &str) -> String {
    format!("#chunks:{ns}")
}

/// The projection that reads only what says whether and where a key's value is chunked.
const GENERATION_PROJECTION: &str = "#g, #c";
fn generation_projection_names() -> HashMap<String, String> {
    HashMap::from([
        ("#g".to_string(), GENERATION.to_string()),
        ("#c".to_string(), COUNT.to_string()),
    ])
}

impl DynamoStore {
    /// Stores `value`'s chunks under a new generation, not yet referenced by any key.
    pub(super) async fn write_chunks(&self, ns: &str, value: &[u8]) -> Result<Generation, KvError> {
        let generation = Generation::new(value.len());
        let mut writes = Vec::with_capacity(generation.count);
        for (index, chunk) in value.chunks(CHUNK_BYTES).enumerate() {
            let mut item = generation.chunk_key(ns, index);
            item.insert(VALUE.to_string(), AttributeValue::B(Blob::new(chunk)));
            writes.push(put_request(item)?);
        }
        self.batch_write(writes).await?;
        Ok(generation)
    }

    /// The value a generation holds, or `None` if a writer has replaced it since the
    /// key's item was read and its chunks are (partly) gone.
    pub(super) async fn read_chunks(
        &self,
        ns: &str,
        generation: &Generation,
    ) -> Result<Option<Vec<u8>>, KvError> {
        if generation.count > MAX_CHUNKS {
            return Err(KvError::provider(
                NAME,
                format!("corrupt item: {} chunks", generation.count),
            ));
        }
        let mut chunks: HashMap<String, Vec<u8>> = HashMap::new();
        let keys = generation.chunk_keys(ns);
        let per_request = BATCH_REQUEST_BYTES / CHUNK_BYTES;
        for mut item in self.batch_get(keys, None, per_request).await? {
            if let (Some(AttributeValue::S(sk)), Some(AttributeValue::B(b))) =
                (item.remove(SK), item.remove(VALUE))
            {
                chunks.insert(sk, b.into_inner());
            }
        }
        let mut value = Vec::with_capacity(generation.count * CHUNK_BYTES);
        for index in 0..generation.count {
            match chunks.remove(&format!("{}/{index}", generation.id)) {
                Some(chunk) => value.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
        Ok(Some(value))
    }

    /// Deletes the chunks of generations no key points at any more. The write that
    /// unreferenced them has succeeded, so a failure here is logged, not returned: it
    /// leaves unreferenced chunks, not a wrong value.
    pub(super) async fn drop_generations(
        &self,
        ns: &str,
        generations: impl IntoIterator<Item = Generation>,
    ) {
        let mut writes = Vec::new();
        for generation in generations {
            for key in generation.chunk_keys(ns) {
                match delete_request(key) {
                    Ok(delete) => writes.push(delete),
                    Err(e) => tracing::warn!(error = %e, "cannot build a chunk delete"),
                }
            }
        }
        if writes.is_empty() {
            return;
        }
        if let Err(e) = self.batch_write(writes).await {
            tracing::warn!(namespace = ns, error = %e, "unreferenced value chunks were not deleted");
        }
    }

    /// The generations the given keys' items point at now (for batch writes, which
    /// cannot return the items they replace).
    pub(super) async fn generations(
        &self,
        ns: &str,
        keys: &[String],
    ) -> Result<Vec<Generation>, KvError> {
        let keys = keys.iter().map(|k| super::key_item(ns, k)).collect();
        let items = self
            .batch_get(
                keys,
                Some((GENERATION_PROJECTION, generation_projection_names())),
                BATCH_GET_MAX,
            )
            .await?;
        Ok(items.iter().filter_map(Generation::of).collect())
    }
}
