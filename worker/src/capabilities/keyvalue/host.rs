//! `wasi:keyvalue` host: one implementation over [`KeyValue`] serving both revisions in
//! the wild (`0.2.0-draft`, wasmtime/wasmCloud; `0.2.0-draft2`, Spin).
//!
//! Every operation goes through [`KvView`]'s checked core, which enforces the guest
//! [`limits`] and logs provider failures once; the revision adapters only convert types.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Resource, ResourceTable};

use super::{KeyPage, KeyValue, KvBindings, KvError, KvRevision, limits};
use crate::generated::wasi::keyvalue0_2_0_draft as draft;
use crate::generated::wasi::keyvalue0_2_0_draft2 as draft2;

/// `list-keys` pages one `0.2.0-draft` invocation may page through: the draft's numeric
/// cursors map to provider cursors kept for the whole invocation (at most 1 KiB each).
const MAX_DRAFT_CURSORS: usize = 10_000;

/// An open bucket: the provider and the namespace it maps to.
pub struct Bucket {
    store: Arc<dyn KeyValue>,
    ns: String,
}

/// A compare-and-swap handle (draft2): the value seen when the handle was made.
pub struct Cas {
    store: Arc<dyn KeyValue>,
    ns: String,
    key: String,
    seen: Option<Vec<u8>>,
}

impl Cas {
    fn held_bytes(&self) -> usize {
        self.key.len() + self.seen.as_ref().map_or(0, Vec::len)
    }
}

/// Per-invocation key-value state.
pub struct KvCtx {
    bindings: Arc<KvBindings>,
    app: Arc<str>,
    /// draft's cursors are `u64`; providers' are strings. Cursor `n` is `cursors[n - 1]`.
    cursors: Vec<String>,
    /// Bytes held by open CAS handles, bounded by `MAX_CAS_BYTES`.
    cas_bytes: usize,
}

impl KvCtx {
    pub fn new(bindings: Arc<KvBindings>, app: Arc<str>) -> Self {
        Self {
            bindings,
            app,
            cursors: Vec::new(),
            cas_bytes: 0,
        }
    }

    /// Keeps a provider cursor for the rest of the invocation and numbers it for the
    /// draft. Their number is capped like every other thing a guest can make the host
    /// hold.
    fn remember_cursor(&mut self, cursor: String) -> Result<u64, KvError> {
        if self.cursors.len() >= MAX_DRAFT_CURSORS {
            return Err(limit(format!(
                "more than {MAX_DRAFT_CURSORS} list-keys pages in one invocation"
            )));
        }
        self.cursors.push(cursor);
        Ok(self.cursors.len() as u64)
    }

    /// The provider cursor the draft numbered `n`.
    fn cursor(&self, n: u64) -> Option<&str> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.cursors.get(i).map(String::as_str)
    }
}

pub struct KvView<'a> {
    pub ctx: &'a mut KvCtx,
    pub table: &'a mut ResourceTable,
}

/// Names the view type for the generated `add_to_linker` functions.
pub struct KvData;

impl HasData for KvData {
    type Data<'a> = KvView<'a>;
}

/// Outer error: a trap (host bug or resource-table misuse); inner: the guest's error.
type HostResult<T, E> = wasmtime::Result<Result<T, E>>;

fn limit(what: String) -> KvError {
    KvError::Limit(what)
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > limits::MAX_KEY_BYTES {
        return Err(limit(format!(
            "key of {} bytes exceeds the {}-byte limit",
            key.len(),
            limits::MAX_KEY_BYTES
        )));
    }
    Ok(())
}

fn check_value(key: &str, value: &[u8]) -> Result<(), KvError> {
    check_key(key)?;
    if value.len() > limits::MAX_VALUE_BYTES {
        return Err(limit(format!(
            "value of {} bytes for key `{key}` exceeds the {}-byte limit",
            value.len(),
            limits::MAX_VALUE_BYTES
        )));
    }
    Ok(())
}

fn check_batch<T>(items: &[T], key_of: impl Fn(&T) -> &str) -> Result<(), KvError> {
    if items.len() > limits::MAX_BATCH_KEYS {
        return Err(limit(format!(
            "batch of {} keys exceeds the limit of {}",
            items.len(),
            limits::MAX_BATCH_KEYS
        )));
    }
    items.iter().try_for_each(|i| check_key(key_of(i)))
}

/// Reads in small chunks of distinct keys so the bytes a guest can make the host hold
/// stay bounded by `MAX_BATCH_READ_BYTES`, whatever it asks for.
async fn bounded_get_many(
    store: &dyn KeyValue,
    ns: &str,
    keys: &[String],
) -> Result<Vec<Option<Vec<u8>>>, KvError> {
    const CHUNK: usize = 16;
    let mut distinct: Vec<String> = keys.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let too_much = || {
        limit(format!(
            "get-many would return more than {} bytes; fetch fewer keys per call",
            limits::MAX_BATCH_READ_BYTES
        ))
    };
    let mut found: HashMap<String, Vec<u8>> = HashMap::new();
    let mut fetched = 0usize;
    for chunk in distinct.chunks(CHUNK) {
        for (key, value) in chunk.iter().zip(store.get_many(ns, chunk).await?) {
            if let Some(value) = value {
                fetched += value.len();
                if fetched > limits::MAX_BATCH_READ_BYTES {
                    return Err(too_much());
                }
                found.insert(key.clone(), value);
            }
        }
    }
    // A key asked for twice is returned twice: bound the copies before making them.
    let returned: usize = keys.iter().filter_map(|k| found.get(k)).map(Vec::len).sum();
    if returned > limits::MAX_BATCH_READ_BYTES {
        return Err(too_much());
    }
    Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
}

/// The checked core shared by both revisions.
impl KvView<'_> {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(Arc<dyn KeyValue>, String)> {
        let b = self.table.get(bucket)?;
        Ok((b.store.clone(), b.ns.clone()))
    }

    /// Logs a failure where it is handed to the guest, then passes it on.
    fn report<T>(&self, op: &str, r: Result<T, KvError>) -> Result<T, KvError> {
        if let Err(e) = &r {
            match e {
                KvError::Provider { .. } => {
                    tracing::warn!(app = %self.ctx.app, op, error = %e, "key-value provider error")
                }
                _ => tracing::debug!(app = %self.ctx.app, op, error = %e, "key-value error"),
            }
        }
        r
    }

    fn open(&mut self, name: &str) -> HostResult<Resource<Bucket>, KvError> {
        if name.len() > limits::MAX_BUCKET_NAME_BYTES {
            return Ok(Err(limit(format!(
                "bucket name of {} bytes exceeds the {}-byte limit",
                name.len(),
                limits::MAX_BUCKET_NAME_BYTES
            ))));
        }
        let Some(store) = self.ctx.bindings.resolve(name) else {
            return Ok(Err(KvError::NoSuchStore(format!(
                "bucket `{name}` has no binding; bind it with `kv.{name}=PROVIDER` or `kv=PROVIDER`"
            ))));
        };
        let ns = format!("{}/{}", self.ctx.app, name);
        Ok(Ok(self.table.push(Bucket { store, ns })?))
    }

    async fn get(
        &mut self,
        b: &Resource<Bucket>,
        key: &str,
    ) -> HostResult<Option<Vec<u8>>, KvError> {
        let (s, ns) = self.bucket(b)?;
        let r = async {
            check_key(key)?;
            s.get(&ns, key).await
        }
        .await;
        Ok(self.report("get", r))
    }

    async fn set(
        &mut self,
        b: &Resource<Bucket>,
        key: &str,
        value: &[u8],
    ) -> HostResult<(), KvError> {
        let (s, ns) = self.bucket(b)?;
        let r = async {
            check_value(key, value)?;
            s.set(&ns, key, value).await
        }
        .await;
        Ok(self.report("set", r))
    }

    async fn delete(&mut self, b: &Resource<Bucket>, key: &str) -> HostResult<(), KvError> {
        let (s, ns) = self.bucket(b)?;
        let r = async {
            check_key(key)?;
            s.delete(&ns, key).await
        }
        .await;
        Ok(self.report("delete", r))
    }

    async fn exists(&mut self, b: &Resource<Bucket>, key: &str) -> HostResult<bool, KvError> {
        let (s, ns) = self.bucket(b)?;
        let r = async {
            check_key(key)?;
            s.exists(&ns, key).await
        }
        .await;
        Ok(self.report("exists", r))
    }

    async fn list_keys(
        &mut self,
        b: &Resource<Bucket>,
        cursor: Option<&str>,
    ) -> HostResult<KeyPage, KvError> {
        let (s, ns) = self.bucket(b)?;
        let r = s.list_keys(&ns, cursor).await;
        Ok(self.report("list-keys", r))
    }

    async fn increment(
        &mut self,
        b: &Resource<Bucket>,
        key: &str,
        delta: i64,
    ) -> HostResult<i64, KvError> {
        let (s, ns) = self.bucket(b)?;
        let r = async {
            check_key(key)?;
            s.increment(&ns, key, delta).await
        }
        .await;
        Ok(self.report("increment", r))
    }

    async fn get_many(
        &mut self,
        b: &Resource<Bucket>,
        keys: &[String],
    ) -> HostResult<Vec<Option<Vec<u8>>>, KvError> {
        let (s, ns) = self.bucket(b)?;
        let r = async {
            check_batch(keys, |k| k)?;
            bounded_get_many(s.as_ref(), &ns, keys).await
        }
        .await;
        Ok(self.report("get-many", r))
    }

    async fn set_many(
        &mut self,
        b: &Resource<Bucket>,
        entries: &[(String, Vec<u8>)],
    ) -> HostResult<(), KvError> {
        let (s, ns) = self.bucket(b)?;
        let checked = check_batch(entries, |(k, _)| k)
            .and_then(|()| entries.iter().try_for_each(|(k, v)| check_value(k, v)));
        let r = match checked {
            Ok(()) => s.set_many(&ns, entries).await,
            Err(e) => Err(e),
        };
        Ok(self.report("set-many", r))
    }

    async fn delete_many(
        &mut self,
        b: &Resource<Bucket>,
        keys: &[String],
    ) -> HostResult<(), KvError> {
        let (s, ns) = self.bucket(b)?;
        let r = async {
            check_batch(keys, |k| k)?;
            s.delete_many(&ns, keys).await
        }
        .await;
        Ok(self.report("delete-many", r))
    }

    /// Registers a CAS handle, charging its snapshot to the invocation's budget.
    fn push_cas(&mut self, cas: Cas) -> HostResult<Resource<Cas>, KvError> {
        let bytes = cas.held_bytes();
        if self.ctx.cas_bytes + bytes > limits::MAX_CAS_BYTES {
            return Ok(Err(limit(format!(
                "open compare-and-swap handles would hold more than {} bytes; drop some first",
                limits::MAX_CAS_BYTES
            ))));
        }
        let handle = self.table.push(cas)?;
        self.ctx.cas_bytes += bytes;
        Ok(Ok(handle))
    }

    fn take_cas(&mut self, cas: Resource<Cas>) -> wasmtime::Result<Cas> {
        let cas = self.table.delete(cas)?;
        self.ctx.cas_bytes = self.ctx.cas_bytes.saturating_sub(cas.held_bytes());
        Ok(cas)
    }

    async fn cas_new(
        &mut self,
        b: &Resource<Bucket>,
        key: String,
    ) -> HostResult<Resource<Cas>, KvError> {
        let (store, ns) = self.bucket(b)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let read = store.get(&ns, &key).await;
        let seen = match self.report("cas", read) {
            Ok(seen) => seen,
            Err(e) => return Ok(Err(e)),
        };
        self.push_cas(Cas {
            store,
            ns,
            key,
            seen,
        })
    }
}

macro_rules! wit_error {
    ($m:ident) => {
        impl From<KvError> for $m::store::Error {
            fn from(e: KvError) -> Self {
                match e {
                    KvError::NoSuchStore(_) => Self::NoSuchStore,
                    KvError::AccessDenied(_) => Self::AccessDenied,
                    other => Self::Other(other.to_string()),
                }
            }
        }
    };
}
wit_error!(draft);
wit_error!(draft2);

/// Converts the core's result into a revision's result.
fn wit<T, E: From<KvError>>(r: HostResult<T, KvError>) -> HostResult<T, E> {
    Ok(r?.map_err(E::from))
}

/// The operations both revisions share, written once.
macro_rules! common_bucket_ops {
    ($m:ident) => {
        async fn get(
            &mut self,
            b: Resource<Bucket>,
            key: String,
        ) -> HostResult<Option<Vec<u8>>, $m::store::Error> {
            wit(KvView::get(self, &b, &key).await)
        }

        async fn set(
            &mut self,
            b: Resource<Bucket>,
            key: String,
            value: Vec<u8>,
        ) -> HostResult<(), $m::store::Error> {
            wit(KvView::set(self, &b, &key, &value).await)
        }

        async fn delete(
            &mut self,
            b: Resource<Bucket>,
            key: String,
        ) -> HostResult<(), $m::store::Error> {
            wit(KvView::delete(self, &b, &key).await)
        }

        async fn exists(
            &mut self,
            b: Resource<Bucket>,
            key: String,
        ) -> HostResult<bool, $m::store::Error> {
            wit(KvView::exists(self, &b, &key).await)
        }

        async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
            self.table.delete(b)?;
            Ok(())
        }
    };
}

macro_rules! common_host {
    ($m:ident) => {
        impl $m::store::Host for KvView<'_> {
            async fn open(
                &mut self,
                identifier: String,
            ) -> HostResult<Resource<Bucket>, $m::store::Error> {
                wit(KvView::open(self, &identifier))
            }
        }

        impl $m::batch::Host for KvView<'_> {
            async fn set_many(
                &mut self,
                b: Resource<Bucket>,
                entries: Vec<(String, Vec<u8>)>,
            ) -> HostResult<(), $m::store::Error> {
                wit(KvView::set_many(self, &b, &entries).await)
            }

            async fn delete_many(
                &mut self,
                b: Resource<Bucket>,
                keys: Vec<String>,
            ) -> HostResult<(), $m::store::Error> {
                wit(KvView::delete_many(self, &b, &keys).await)
            }

            async fn get_many(
                &mut self,
                b: Resource<Bucket>,
                keys: Vec<String>,
            ) -> HostResult<GetManyResult<$m::store::Error>, $m::store::Error> {
                let values = wit(KvView::get_many(self, &b, &keys).await)?;
                Ok(values.map(|values| get_many_shape!($m, keys, values)))
            }
        }
    };
}

// draft returns `list<option<tuple<key, value>>>`; draft2 `list<tuple<key, option<value>>>`.
pub(crate) type GetManyResult<E> = <E as GetManyShape>::Out;

pub(crate) trait GetManyShape {
    type Out;
}
impl GetManyShape for draft::store::Error {
    type Out = Vec<Option<(String, Vec<u8>)>>;
}
impl GetManyShape for draft2::store::Error {
    type Out = Vec<(String, Option<Vec<u8>>)>;
}

macro_rules! get_many_shape {
    (draft, $keys:ident, $values:ident) => {
        $keys
            .into_iter()
            .zip($values)
            .map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    };
    (draft2, $keys:ident, $values:ident) => {
        $keys.into_iter().zip($values).collect()
    };
}

common_host!(draft);
common_host!(draft2);

impl draft::store::HostBucket for KvView<'_> {
    common_bucket_ops!(draft);

    async fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> HostResult<draft::store::KeyResponse, draft::store::Error> {
        let cursor = match cursor {
            None => None,
            Some(n) => match self.ctx.cursor(n) {
                Some(c) => Some(c.to_string()),
                None => return Ok(Err(KvError::InvalidCursor.into())),
            },
        };
        let page = match KvView::list_keys(self, &b, cursor.as_deref()).await? {
            Ok(page) => page,
            Err(e) => return Ok(Err(e.into())),
        };
        let cursor = match page.cursor.map(|c| self.ctx.remember_cursor(c)).transpose() {
            Ok(cursor) => cursor,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(Ok(draft::store::KeyResponse {
            keys: page.keys,
            cursor,
        }))
    }
}

impl draft2::store::HostBucket for KvView<'_> {
    common_bucket_ops!(draft2);

    async fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        cursor: Option<String>,
    ) -> HostResult<draft2::store::KeyResponse, draft2::store::Error> {
        let page = wit(KvView::list_keys(self, &b, cursor.as_deref()).await)?;
        Ok(page.map(|p| draft2::store::KeyResponse {
            keys: p.keys,
            cursor: p.cursor,
        }))
    }
}

impl draft::atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> HostResult<u64, draft::store::Error> {
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(KvError::Overflow(key).into()));
        };
        // draft counts in u64 and draft2 in i64 over the same stored decimal text; a
        // negative value written through draft2 reads back in two's complement here
        // rather than failing after the increment has been applied.
        Ok(wit(KvView::increment(self, &b, &key, delta).await)?.map(|v| v as u64))
    }
}

impl draft2::atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> HostResult<i64, draft2::store::Error> {
        wit(KvView::increment(self, &b, &key, delta).await)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> HostResult<(), draft2::atomics::CasError> {
        use draft2::atomics::CasError;
        let handle = self.take_cas(cas)?;
        if let Err(e) = check_value(&handle.key, &value) {
            return Ok(Err(CasError::StoreError(e.into())));
        }
        let swapped = handle
            .store
            .compare_and_swap(&handle.ns, &handle.key, handle.seen.as_deref(), &value)
            .await;
        let swapped = match self.report("swap", swapped) {
            Ok(swapped) => swapped,
            Err(e) => return Ok(Err(CasError::StoreError(e.into()))),
        };
        if swapped {
            return Ok(Ok(()));
        }
        // Hand back a fresh handle so the guest can retry against the new value.
        let read = handle.store.get(&handle.ns, &handle.key).await;
        let seen = match self.report("swap", read) {
            Ok(seen) => seen,
            Err(e) => return Ok(Err(CasError::StoreError(e.into()))),
        };
        Ok(match self.push_cas(Cas { seen, ..handle })? {
            Ok(retry) => Err(CasError::CasFailed(retry)),
            Err(e) => Err(CasError::StoreError(e.into())),
        })
    }
}

impl draft2::atomics::HostCas for KvView<'_> {
    async fn new(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> HostResult<Resource<Cas>, draft2::store::Error> {
        wit(self.cas_new(&b, key).await)
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> HostResult<Option<Vec<u8>>, draft2::store::Error> {
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.take_cas(cas)?;
        Ok(())
    }
}

/// Adds the interfaces of one revision to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    revision: KvRevision,
    get: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    match revision {
        KvRevision::Draft => {
            draft::store::add_to_linker::<T, KvData>(linker, get)?;
            draft::atomics::add_to_linker::<T, KvData>(linker, get)?;
            draft::batch::add_to_linker::<T, KvData>(linker, get)?;
        }
        KvRevision::Draft2 => {
            draft2::store::add_to_linker::<T, KvData>(linker, get)?;
            draft2::atomics::add_to_linker::<T, KvData>(linker, get)?;
            draft2::batch::add_to_linker::<T, KvData>(linker, get)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> KvCtx {
        KvCtx::new(Arc::new(KvBindings::default()), "app".into())
    }

    #[test]
    fn draft_cursors_number_from_one_and_resolve_back() {
        let mut ctx = ctx();
        assert_eq!(ctx.remember_cursor("a".into()).unwrap(), 1);
        assert_eq!(ctx.remember_cursor("b".into()).unwrap(), 2);
        assert_eq!(ctx.cursor(1), Some("a"));
        assert_eq!(ctx.cursor(2), Some("b"));
        assert_eq!(ctx.cursor(0), None);
        assert_eq!(ctx.cursor(3), None);
        assert_eq!(ctx.cursor(u64::MAX), None);
    }

    #[test]
    fn draft_cursors_stop_at_the_cap_and_keep_the_ones_given_out() {
        let mut ctx = ctx();
        for i in 1..=MAX_DRAFT_CURSORS {
            assert_eq!(ctx.remember_cursor(format!("k{i}")).unwrap(), i as u64);
        }
        let refused = ctx.remember_cursor("one too many".into()).unwrap_err();
        assert!(matches!(refused, KvError::Limit(ref m) if m.contains("list-keys pages")));
        assert_eq!(ctx.cursors.len(), MAX_DRAFT_CURSORS);
        assert_eq!(
            ctx.cursor(MAX_DRAFT_CURSORS as u64),
            Some(format!("k{MAX_DRAFT_CURSORS}").as_str())
        );
    }
}
