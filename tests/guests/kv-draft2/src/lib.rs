//! A guest built against the revisions Spin uses: `wasi:keyvalue@0.2.0-draft2` and
//! `wasi:config@0.2.0-draft-2024-09-27`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "stratus:platform/compat-spin",
    generate_all,
});

use guest_http::KvApi;
use wasi::config0_2_0_draft_2024_09_27::store as config;
use wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Guest;

wasip2::http::proxy::export!(Guest);

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        guest_http::serve_kv::<Draft2>(request, out);
    }
}

struct Draft2;

fn e(err: store::Error) -> String {
    format!("{err:?}")
}

impl KvApi for Draft2 {
    type Bucket = store::Bucket;

    fn open(name: &str) -> Result<store::Bucket, String> {
        store::open(name).map_err(e)
    }
    fn get(b: &store::Bucket, key: &str) -> Result<Option<Vec<u8>>, String> {
        b.get(key).map_err(e)
    }
    fn set(b: &store::Bucket, key: &str, value: &[u8]) -> Result<(), String> {
        b.set(key, value).map_err(e)
    }
    fn delete(b: &store::Bucket, key: &str) -> Result<(), String> {
        b.delete(key).map_err(e)
    }
    fn exists(b: &store::Bucket, key: &str) -> Result<bool, String> {
        b.exists(key).map_err(e)
    }
    fn all_keys(b: &store::Bucket) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = b.list_keys(cursor.as_deref()).map_err(e)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(keys),
            }
        }
    }
    fn increment(b: &store::Bucket, key: &str, delta: i64) -> Result<i64, String> {
        atomics::increment(b, key, delta).map_err(e)
    }
    fn get_many(b: &store::Bucket, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let got = batch::get_many(b, keys).map_err(e)?;
        Ok(got.into_iter().map(|(_, v)| v).collect())
    }
    fn set_many(b: &store::Bucket, entries: &[(String, Vec<u8>)]) -> Result<(), String> {
        batch::set_many(b, entries).map_err(e)
    }
    fn delete_many(b: &store::Bucket, keys: &[String]) -> Result<(), String> {
        batch::delete_many(b, keys).map_err(e)
    }
    fn cas_increment(b: &store::Bucket, key: &str) -> Option<Result<i64, String>> {
        Some(cas_increment(b, key))
    }
    fn config(key: &str) -> Result<Option<String>, String> {
        config::get(key).map_err(|err| format!("{err:?}"))
    }
    fn config_all() -> Result<Vec<(String, String)>, String> {
        config::get_all().map_err(|err| format!("{err:?}"))
    }
}

fn cas_increment(b: &store::Bucket, key: &str) -> Result<i64, String> {
    let mut cas = atomics::Cas::new(b, key).map_err(e)?;
    loop {
        let current = match cas.current().map_err(e)? {
            Some(v) => String::from_utf8_lossy(&v)
                .parse::<i64>()
                .map_err(|err| err.to_string())?,
            None => 0,
        };
        let next = current + 1;
        match atomics::swap(cas, next.to_string().as_bytes()) {
            Ok(()) => return Ok(next),
            Err(atomics::CasError::CasFailed(retry)) => cas = retry,
            Err(atomics::CasError::StoreError(err)) => return Err(e(err)),
        }
    }
}
