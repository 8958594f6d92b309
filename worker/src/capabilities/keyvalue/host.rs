//! `wasi:keyvalue` host: one implementation over [`KeyValue`] serving both revisions in
//! the wild (`0.2.0-draft`, wasmtime/wasmCloud; `0.2.0-draft2`, Spin).

use std::sync::Arc;

use wasmtime::component::{HasData, Resource, ResourceTable};

use super::{KeyValue, KvBindings, KvError, KvRevision};
use crate::generated::wasi::keyvalue0_2_0_draft as draft;
use crate::generated::wasi::keyvalue0_2_0_draft2 as draft2;

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

/// Per-invocation key-value state.
pub struct KvCtx {
    bindings: Arc<KvBindings>,
    app: Arc<str>,
    /// draft's cursors are `u64`; providers' are strings. Cursor `n` is `cursors[n - 1]`.
    cursors: Vec<String>,
}

impl KvCtx {
    pub fn new(bindings: Arc<KvBindings>, app: Arc<str>) -> Self {
        Self {
            bindings,
            app,
            cursors: Vec::new(),
        }
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

type HostResult<T, E> = wasmtime::Result<Result<T, E>>;

impl KvView<'_> {
    fn open(&mut self, name: &str) -> wasmtime::Result<Result<Resource<Bucket>, KvError>> {
        let Some(store) = self.ctx.bindings.resolve(name) else {
            return Ok(Err(KvError::NoSuchStore(format!(
                "bucket `{name}` has no binding; bind it with `kv.{name}=PROVIDER` or `kv=PROVIDER`"
            ))));
        };
        let ns = format!("{}/{}", self.ctx.app, name);
        Ok(Ok(self.table.push(Bucket { store, ns })?))
    }

    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(Arc<dyn KeyValue>, String)> {
        let b = self.table.get(bucket)?;
        Ok((b.store.clone(), b.ns.clone()))
    }

    fn new_cas(&mut self, bucket: &Resource<Bucket>, key: String) -> wasmtime::Result<Cas> {
        let (store, ns) = self.bucket(bucket)?;
        Ok(Cas {
            store,
            ns,
            key,
            seen: None,
        })
    }
}

/// Logs a provider error where it is handed to the guest, then passes it on.
fn report<T>(app: &str, op: &str, r: Result<T, KvError>) -> Result<T, KvError> {
    if let Err(e) = &r {
        tracing::debug!(app, op, error = %e, "key-value error returned to guest");
    }
    r
}

macro_rules! wit_error {
    ($m:ident) => {
        impl From<KvError> for $m::store::Error {
            fn from(e: KvError) -> Self {
                match e {
                    KvError::NoSuchStore(m) => {
                        tracing::debug!(reason = %m, "no such store");
                        Self::NoSuchStore
                    }
                    KvError::AccessDenied(_) => Self::AccessDenied,
                    other => Self::Other(other.to_string()),
                }
            }
        }
    };
}
wit_error!(draft);
wit_error!(draft2);

/// The operations both revisions share, written once.
macro_rules! common_bucket_ops {
    ($m:ident) => {
        async fn get(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
        ) -> HostResult<Option<Vec<u8>>, $m::store::Error> {
            let (s, ns) = self.bucket(&bucket)?;
            Ok(report(&self.ctx.app, "get", s.get(&ns, &key).await).map_err(Into::into))
        }

        async fn set(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
            value: Vec<u8>,
        ) -> HostResult<(), $m::store::Error> {
            let (s, ns) = self.bucket(&bucket)?;
            Ok(report(&self.ctx.app, "set", s.set(&ns, &key, &value).await).map_err(Into::into))
        }

        async fn delete(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
        ) -> HostResult<(), $m::store::Error> {
            let (s, ns) = self.bucket(&bucket)?;
            Ok(report(&self.ctx.app, "delete", s.delete(&ns, &key).await).map_err(Into::into))
        }

        async fn exists(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
        ) -> HostResult<bool, $m::store::Error> {
            let (s, ns) = self.bucket(&bucket)?;
            Ok(report(&self.ctx.app, "exists", s.exists(&ns, &key).await).map_err(Into::into))
        }

        async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
            self.table.delete(bucket)?;
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
                Ok(self.open(&identifier)?.map_err(Into::into))
            }
        }

        impl $m::batch::Host for KvView<'_> {
            async fn set_many(
                &mut self,
                bucket: Resource<Bucket>,
                entries: Vec<(String, Vec<u8>)>,
            ) -> HostResult<(), $m::store::Error> {
                let (s, ns) = self.bucket(&bucket)?;
                Ok(
                    report(&self.ctx.app, "set-many", s.set_many(&ns, &entries).await)
                        .map_err(Into::into),
                )
            }

            async fn delete_many(
                &mut self,
                bucket: Resource<Bucket>,
                keys: Vec<String>,
            ) -> HostResult<(), $m::store::Error> {
                let (s, ns) = self.bucket(&bucket)?;
                Ok(report(
                    &self.ctx.app,
                    "delete-many",
                    s.delete_many(&ns, &keys).await,
                )
                .map_err(Into::into))
            }

            async fn get_many(
                &mut self,
                bucket: Resource<Bucket>,
                keys: Vec<String>,
            ) -> HostResult<GetManyResult<$m::store::Error>, $m::store::Error> {
                let (s, ns) = self.bucket(&bucket)?;
                let values = report(&self.ctx.app, "get-many", s.get_many(&ns, &keys).await);
                Ok(values
                    .map(|values| get_many_shape!($m, keys, values))
                    .map_err(Into::into))
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
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> HostResult<draft::store::KeyResponse, draft::store::Error> {
        let (s, ns) = self.bucket(&bucket)?;
        let cursor = match cursor {
            None => None,
            Some(n) => match usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.ctx.cursors.get(i))
            {
                Some(c) => Some(c.clone()),
                None => return Ok(Err(KvError::InvalidCursor.into())),
            },
        };
        let page = match report(
            &self.ctx.app,
            "list-keys",
            s.list_keys(&ns, cursor.as_deref()).await,
        ) {
            Ok(page) => page,
            Err(e) => return Ok(Err(e.into())),
        };
        let cursor = page.cursor.map(|c| {
            self.ctx.cursors.push(c);
            self.ctx.cursors.len() as u64
        });
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
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> HostResult<draft2::store::KeyResponse, draft2::store::Error> {
        let (s, ns) = self.bucket(&bucket)?;
        Ok(report(
            &self.ctx.app,
            "list-keys",
            s.list_keys(&ns, cursor.as_deref()).await,
        )
        .map(|p| draft2::store::KeyResponse {
            keys: p.keys,
            cursor: p.cursor,
        })
        .map_err(Into::into))
    }
}

impl draft::atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> HostResult<u64, draft::store::Error> {
        let (s, ns) = self.bucket(&bucket)?;
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(KvError::Overflow(key).into()));
        };
        let r = report(
            &self.ctx.app,
            "increment",
            s.increment(&ns, &key, delta).await,
        );
        Ok(match r {
            Ok(v) => u64::try_from(v).map_err(|_| {
                draft::store::Error::Other(format!("value of key `{key}` is negative"))
            }),
            Err(e) => Err(e.into()),
        })
    }
}

impl draft2::atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> HostResult<i64, draft2::store::Error> {
        let (s, ns) = self.bucket(&bucket)?;
        Ok(report(
            &self.ctx.app,
            "increment",
            s.increment(&ns, &key, delta).await,
        )
        .map_err(Into::into))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> HostResult<(), draft2::atomics::CasError> {
        let handle = self.table.delete(cas)?;
        let swapped = handle
            .store
            .compare_and_swap(&handle.ns, &handle.key, handle.seen.as_deref(), &value)
            .await;
        match report(&self.ctx.app, "swap", swapped) {
            Ok(true) => Ok(Ok(())),
            // Hand back a fresh handle so the guest can retry against the new value.
            Ok(false) => match handle.store.get(&handle.ns, &handle.key).await {
                Ok(seen) => {
                    let retry = self.table.push(Cas { seen, ..handle })?;
                    Ok(Err(draft2::atomics::CasError::CasFailed(retry)))
                }
                Err(e) => Ok(Err(draft2::atomics::CasError::StoreError(e.into()))),
            },
            Err(e) => Ok(Err(draft2::atomics::CasError::StoreError(e.into()))),
        }
    }
}

impl draft2::atomics::HostCas for KvView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> HostResult<Resource<Cas>, draft2::store::Error> {
        let mut cas = self.new_cas(&bucket, key)?;
        match report(&self.ctx.app, "cas", cas.store.get(&cas.ns, &cas.key).await) {
            Ok(seen) => {
                cas.seen = seen;
                Ok(Ok(self.table.push(cas)?))
            }
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> HostResult<Option<Vec<u8>>, draft2::store::Error> {
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
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
