//! DynamoDB key-value provider: one table, partition key = namespace, sort key = key.
//!
//! The endpoint comes from the binding (`endpoint=`) or the standard `AWS_ENDPOINT_URL`,
//! so the same code talks to AWS and to a local emulator. Values over one item's 400 KB
//! are split into chunk items (see `chunks`).

mod chunks;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    KeysAndAttributes, PutRequest, ReturnValue, ScalarAttributeType, WriteRequest,
};

use self::chunks::{CHUNK_BYTES, Generation};
use super::{KeyPage, KeyValue, KvError, LIST_PAGE_SIZE, increment_by_cas};

const NAME: &str = "dynamo";
const PK: &str = "pk";
const SK: &str = "sk";
const VALUE: &str = "v";
/// A compare-and-swap's own id, written with its value: see `compare_and_swap`.
const WRITE_TOKEN: &str = "w";
const BATCH_GET_MAX: usize = 100;
const BATCH_WRITE_MAX: usize = 25;
/// Value bytes one batch request carries at most. DynamoDB would take 16 MB, but every
/// request has to arrive within the SDK's attempt timeout: a 4 MiB value goes out as
/// several requests of 1 MiB (1.4 MB as JSON) rather than one of 5.6 MB.
const BATCH_REQUEST_BYTES: usize = 1 << 20;
/// How often a read starts again when writers keep replacing a chunked value under it.
const READ_ATTEMPTS: u32 = 8;

type Item = HashMap<String, AttributeValue>;

/// The generation a put or delete replaced, unless it is the one the put wrote: a retried
/// attempt replaces what its own earlier attempt wrote.
fn replaced(old: Option<&Item>, ours: Option<&Generation>) -> Option<Generation> {
    old.and_then(Generation::of)
        .filter(|replaced| Some(replaced) != ours)
}

/// What a key's item holds.
enum Stored {
    Inline(Vec<u8>),
    Chunked(Generation),
}

impl Stored {
    /// Takes the value out of the item read, without copying it.
    fn of(mut item: Item) -> Option<Self> {
        match item.remove(VALUE) {
            Some(AttributeValue::B(b)) => Some(Self::Inline(b.into_inner())),
            _ => Generation::of(&item).map(Self::Chunked),
        }
    }
}

pub use stratus_proto::providers::DynamoConfig;

pub struct DynamoStore {
    client: Client,
    table: String,
}

/// A concise message: the service's error code and text, or the transport failure.
/// Refusals the guest can act on get their own WIT variant; the rest are `other`.
fn err<E, R>(e: SdkError<E, R>) -> KvError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e
        .as_service_error()
        .and_then(|s| s.code())
        .map(str::to_owned);
    let message = sdk_message(e);
    match code.as_deref() {
        Some(
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "MissingAuthenticationTokenException",
        ) => KvError::AccessDenied(format!("{NAME}: {message}")),
        // The table is gone (deleted after the provider opened it).
        Some("ResourceNotFoundException") => KvError::NoSuchStore(format!("{NAME}: {message}")),
        _ => KvError::provider(NAME, message),
    }
}

fn sdk_message<E, R>(e: SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    crate::capabilities::aws::error_message(&e)
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> KvError {
    KvError::provider(NAME, e)
}

/// One put of a batch write.
fn put_request(item: Item) -> Result<WriteRequest, KvError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(build_err)?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// One delete of a batch write.
fn delete_request(key: Item) -> Result<WriteRequest, KvError> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map_err(build_err)?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

/// Splits `items` into runs in order, each of at most `max_count` items and, unless a
/// single item is larger, `max_bytes` bytes.
fn batches<T>(
    mut items: &[T],
    max_count: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut runs = Vec::new();
    while !items.is_empty() {
        let mut bytes = 0;
        let len = items
            .iter()
            .take(max_count.max(1))
            .enumerate()
            .take_while(|(i, item)| {
                bytes += size(item);
                *i == 0 || bytes <= max_bytes
            })
            .count();
        let Some((run, rest)) = items.split_at_checked(len) else {
            break;
        };
        runs.push(run);
        items = rest;
    }
    runs
}

/// How a batch write is split into requests.
fn write_batches(writes: &[WriteRequest]) -> Vec<&[WriteRequest]> {
    batches(writes, BATCH_WRITE_MAX, BATCH_REQUEST_BYTES, write_bytes)
}

/// The value bytes a write carries: what decides its share of a request's size.
fn write_bytes(write: &WriteRequest) -> usize {
    let Some(put) = write.put_request() else {
        return 0;
    };
    put.item()
        .iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::B(b) => b.as_ref().len(),
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    _ => 0,
                }
        })
        .sum()
}

fn key_item(ns: &str, key: &str) -> Item {
    HashMap::from([
        (PK.to_string(), AttributeValue::S(ns.to_string())),
        (SK.to_string(), AttributeValue::S(key.to_string())),
    ])
}

/// DynamoDB hands back unprocessed batch items when throttled: retry them with
/// exponential backoff, a bounded number of times.
async fn backoff(attempt: &mut u32) -> Result<(), KvError> {
    const MAX_ATTEMPTS: u32 = 8;
    if *attempt >= MAX_ATTEMPTS {
        return Err(KvError::provider(
            NAME,
            format!("batch still throttled after {MAX_ATTEMPTS} attempts"),
        ));
    }
    if *attempt > 0 {
        let delay = Duration::from_millis(25u64 << (*attempt).min(6));
        tokio::time::sleep(delay).await;
    }
    *attempt += 1;
    Ok(())
}

/// Keeps the last occurrence of each key: DynamoDB refuses duplicates within one batch.
fn dedup_last<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, T)> {
    let mut map: HashMap<String, T> = HashMap::new();
    let mut order = Vec::new();
    for (k, v) in items {
        if map.insert(k.clone(), v).is_none() {
            order.push(k);
        }
    }
    order
        .into_iter()
        .filter_map(|k| map.remove(&k).map(|v| (k, v)))
        .collect()
}

impl DynamoStore {
    pub async fn connect(config: DynamoConfig) -> Result<Self, KvError> {
        let sdk = crate::capabilities::aws::sdk_config(
            config.region.as_deref(),
            config.endpoint.as_deref(),
            config.credentials.as_ref(),
            Duration::from_secs(2),
            Duration::from_secs(5),
        )
        .await;
        let client = Client::new(&sdk);
        let store = Self {
            client,
            table: config.table.clone(),
        };
        store.ensure_table(config.create_table).await?;
        Ok(store)
    }

    async fn ensure_table(&self, create: bool) -> Result<(), KvError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        match described {
            Ok(_) => return Ok(()),
            Err(e) => {
                let missing = e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception());
                if !missing || !create {
                    return Err(KvError::provider(
                        NAME,
                        format!("table `{}`: {}", self.table, sdk_message(e)),
                    ));
                }
            }
        }
        tracing::info!(table = %self.table, "creating DynamoDB table");
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_err)
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_err)
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK)?)
            .attribute_definitions(attr(SK)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .send()
            .await;
        if let Err(e) = created {
            // Another worker may have created it at the same time.
            if !e
                .as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception())
            {
                return Err(err(e));
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl KeyValue for DynamoStore {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.load(ns, key).await?.map(|(value, _)| value))
    }

    async fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let (item, ours) = self.value_item(ns, key, value).await?;
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(err)?;
        self.drop_generations(ns, replaced(out.attributes(), ours.as_ref()))
            .await;
        Ok(())
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_item(ns, key)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(err)?;
        self.drop_generations(ns, out.attributes().and_then(Generation::of))
            .await;
        Ok(())
    }

    async fn exists(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_item(ns, key)))
            .projection_expression(PK)
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        Ok(out.item().is_some())
    }

    async fn list_keys(&self, ns: &str, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let page_size = i32::try_from(LIST_PAGE_SIZE).unwrap_or(i32::MAX);
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :ns")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":ns", AttributeValue::S(ns.to_string()))
            .projection_expression("#sk")
            .set_exclusive_start_key(cursor.map(|c| key_item(ns, c)))
            .limit(page_size)
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        let keys = out
            .items()
            .iter()
            .filter_map(|item| match item.get(SK) {
                Some(AttributeValue::S(s)) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let cursor = out.last_evaluated_key().and_then(|k| match k.get(SK) {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        });
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        increment_by_cas(self, ns, key, delta).await
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        // A large expected value is compared here; the put then conditions on the
        // generation that held it, which no other write can reuse.
        let expected_generation = match expected {
            Some(old) if old.len() > CHUNK_BYTES => match self.load(ns, key).await? {
                Some((current, Some(generation))) if current == old => Some(generation),
                _ => return Ok(false),
            },
            _ => None,
        };
        let (mut item, generation) = self.value_item(ns, key, value).await?;
        let token = uuid::Uuid::new_v4().to_string();
        item.insert(WRITE_TOKEN.to_string(), AttributeValue::S(token.clone()));
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_values(ReturnValue::AllOld);
        // DynamoDB refuses attribute names an expression does not use.
        put = match (expected, expected_generation) {
            // Absent means what `get` reports as absent: no value, inline or chunked.
            (None, _) => put
                .condition_expression("attribute_not_exists(#v) AND attribute_not_exists(#g)")
                .expression_attribute_names("#v", VALUE)
                .expression_attribute_names("#g", chunks::GENERATION),
            (Some(_), Some(generation)) => put
                .condition_expression("#g = :g")
                .expression_attribute_names("#g", chunks::GENERATION)
                .expression_attribute_values(":g", AttributeValue::S(generation.id)),
            (Some(old), None) => put
                .condition_expression("#v = :old")
                .expression_attribute_names("#v", VALUE)
                .expression_attribute_values(":old", AttributeValue::B(Blob::new(old))),
        };
        match put.send().await {
            Ok(out) => {
                self.drop_generations(ns, replaced(out.attributes(), generation.as_ref()))
                    .await;
                Ok(true)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                // The SDK retries an attempt whose answer it did not get; if that attempt
                // landed, the retry fails its condition against this very write. The
                // write's token, unique to it, tells the two apart.
                if self.write_token(ns, key).await?.as_deref() == Some(token.as_str()) {
                    return Ok(true);
                }
                // The put did not land: its chunks are nobody's.
                self.drop_generations(ns, generation).await;
                Ok(false)
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn get_many(&self, ns: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let unique = dedup_last(keys.iter().map(|k| (k.clone(), ())));
        let items = self
            .batch_get(
                unique.iter().map(|(k, ())| key_item(ns, k)).collect(),
                None,
                BATCH_GET_MAX,
            )
            .await?;
        let mut found: HashMap<String, Vec<u8>> = HashMap::new();
        for mut item in items {
            let Some(AttributeValue::S(key)) = item.remove(SK) else {
                continue;
            };
            match Stored::of(item) {
                Some(Stored::Inline(value)) => {
                    found.insert(key, value);
                }
                Some(Stored::Chunked(_)) => {
                    if let Some(value) = self.get(ns, &key).await? {
                        found.insert(key, value);
                    }
                }
                None => {}
            }
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn set_many(&self, ns: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let (large, small): (Vec<_>, Vec<_>) = dedup_last(entries.iter().cloned())
            .into_iter()
            .partition(|(_, value)| value.len() > CHUNK_BYTES);
        for (key, value) in &large {
            self.set(ns, key, value).await?;
        }
        let keys: Vec<String> = small.iter().map(|(k, _)| k.clone()).collect();
        let replaced = self.generations(ns, &keys).await?;
        let mut writes = Vec::new();
        for (key, value) in small {
            let mut item = key_item(ns, &key);
            item.insert(VALUE.to_string(), AttributeValue::B(Blob::new(value)));
            writes.push(put_request(item)?);
        }
        self.batch_write(writes).await?;
        self.drop_generations(ns, replaced).await;
        Ok(())
    }

    async fn delete_many(&self, ns: &str, keys: &[String]) -> Result<(), KvError> {
        let keys: Vec<String> = dedup_last(keys.iter().map(|k| (k.clone(), ())))
            .into_iter()
            .map(|(k, ())| k)
            .collect();
        let replaced = self.generations(ns, &keys).await?;
        let mut writes = Vec::new();
        for key in &keys {
            writes.push(delete_request(key_item(ns, key))?);
        }
        self.batch_write(writes).await?;
        self.drop_generations(ns, replaced).await;
        Ok(())
    }
}

impl DynamoStore {
    /// A key's value and, if chunked, the generation it was read from.
    async fn load(
        &self,
        ns: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Option<Generation>)>, KvError> {
        for _ in 0..READ_ATTEMPTS {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key_item(ns, key)))
                .consistent_read(true)
                .send()
                .await
                .map_err(err)?;
            match out.item.and_then(Stored::of) {
                None => return Ok(None),
                Some(Stored::Inline(value)) => return Ok(Some((value, None))),
                Some(Stored::Chunked(generation)) => {
                    if let Some(value) = self.read_chunks(ns, &generation).await? {
                        return Ok(Some((value, Some(generation))));
                    }
                }
            }
        }
        Err(KvError::provider(
            NAME,
            format!("value of key `{key}` was replaced {READ_ATTEMPTS} times while being read"),
        ))
    }

    /// The item that stores `value` under `key`, with the chunks it points at already
    /// written when the value is too large for the item itself.
    async fn value_item(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(Item, Option<Generation>), KvError> {
        let mut item = key_item(ns, key);
        if value.len() <= CHUNK_BYTES {
            item.insert(VALUE.to_string(), AttributeValue::B(Blob::new(value)));
            return Ok((item, None));
        }
        let generation = self.write_chunks(ns, value).await?;
        generation.point(&mut item);
        Ok((item, Some(generation)))
    }

    /// The token of the compare-and-swap that last wrote a key, if one did.
    async fn write_token(&self, ns: &str, key: &str) -> Result<Option<String>, KvError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_item(ns, key)))
            .projection_expression("#w")
            .expression_attribute_names("#w", WRITE_TOKEN)
            .consistent_read(true)
            .send()
            .await
            .map_err(err)?;
        Ok(match out.item().and_then(|item| item.get(WRITE_TOKEN)) {
            Some(AttributeValue::S(token)) => Some(token.clone()),
            _ => None,
        })
    }

    /// Reads items by key, `per_request` keys at a time (at most what DynamoDB allows),
    /// retrying the keys it leaves unprocessed (throttling, or over 16 MB in one
    /// response).
    async fn batch_get(
        &self,
        keys: Vec<Item>,
        projection: Option<(&str, HashMap<String, String>)>,
        per_request: usize,
    ) -> Result<Vec<Item>, KvError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(per_request.clamp(1, BATCH_GET_MAX)) {
            let mut request = KeysAndAttributes::builder()
                .consistent_read(true)
                .set_keys(Some(chunk.to_vec()));
            if let Some((expression, names)) = &projection {
                request = request
                    .projection_expression(*expression)
                    .set_expression_attribute_names(Some(names.clone()));
            }
            let mut pending = Some(HashMap::from([(
                self.table.clone(),
                request.build().map_err(build_err)?,
            )]));
            let mut attempt = 0;
            while let Some(items) = pending.take().filter(|m| !m.is_empty()) {
                backoff(&mut attempt).await?;
                let mut out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .map_err(err)?;
                if let Some(items) = out.responses.as_mut().and_then(|r| r.remove(&self.table)) {
                    found.extend(items);
                }
                pending = out.unprocessed_keys;
            }
        }
        Ok(found)
    }

    /// Writes in batches of at most what DynamoDB allows and [`BATCH_REQUEST_BYTES`],
    /// retrying the writes it leaves unprocessed.
    async fn batch_write(&self, writes: Vec<WriteRequest>) -> Result<(), KvError> {
        for chunk in write_batches(&writes) {
            let mut pending = Some(HashMap::from([(self.table.clone(), chunk.to_vec())]));
            let mut attempt = 0;
            while let Some(items) = pending.take().filter(|m| !m.is_empty()) {
                backoff(&mut attempt).await?;
                let out = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .map_err(err)?;
                pending = out.unprocessed_items;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_order_and_respect_count_and_bytes() {
        let sizes = [1, 2, 3, 4, 5, 6, 7];
        // By count only.
        let runs = batches(&sizes, 3, usize::MAX, |n| *n);
        assert_eq!(runs, [&[1, 2, 3][..], &[4, 5, 6], &[7]]);
        // By bytes: 1+2+3 = 6 fits in 6, 4 would overflow it.
        let runs = batches(&sizes, 25, 6, |n| *n);
        assert_eq!(runs, [&[1, 2, 3][..], &[4], &[5], &[6], &[7]]);
        assert!(batches(&[] as &[usize], 25, 6, |n| *n).is_empty());
    }

    #[test]
    fn an_item_larger_than_the_budget_goes_alone() {
        let runs = batches(&[1, 10, 1, 1], 25, 4, |n| *n);
        assert_eq!(runs, [&[1][..], &[10], &[1, 1]]);
    }

    #[test]
    fn a_4_mib_value_goes_out_in_requests_of_at_most_1_mib() {
        let value = vec![7u8; 4 << 20];
        let writes: Vec<WriteRequest> = value
            .chunks(CHUNK_BYTES)
            .enumerate()
            .map(|(i, chunk)| {
                let mut item = key_item("#chunks:app/b", &format!("g/{i}"));
                item.insert(VALUE.to_string(), AttributeValue::B(Blob::new(chunk)));
                put_request(item).unwrap()
            })
            .collect();
        let runs = write_batches(&writes);
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), writes.len());
        assert!(runs.len() > 1);
        for run in &runs {
            let bytes: usize = run.iter().map(write_bytes).sum();
            assert!(bytes <= BATCH_REQUEST_BYTES, "{bytes} bytes in one request");
        }
    }
}
