//! A guest built against the revisions wasmtime and wasmCloud use:
//! `wasi:keyvalue@0.2.0-draft` and `wasi:config@0.2.0-draft`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "stratus:platform/compat-wasmcloud",
    generate_all,
});

use guest_http::KvApi;
use wasi::config0_2_0_draft::store as config;
use wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Guest;

wasip2::http::proxy::export!(Guest);

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        guest_http::serve_kv::<Draft>(request, out);
    }
}

struct Draft;

fn e(err: store::Error) -> String {
    format!("{err:?}")
}

impl KvApi for Draft {
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
        let mut cursor = None;
        loop {
            let page = b.list_keys(cursor).map_err(e)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(keys),
            }
        }
    }
    fn increment(b: &store::Bucket, key: &str, delta: i64) -> Result<i64, String> {
        let delta = u64::try_from(delta).map_err(|_| "draft increments by u64".to_string())?;
        atomics::increment(b, key, delta)
            .map_err(e)
            .map(|v| v as i64)
    }
    fn get_many(b: &store::Bucket, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let got = batch::get_many(b, keys).map_err(e)?;
        Ok(got.into_iter().map(|kv| kv.map(|(_, v)| v)).collect())
    }
    fn set_many(b: &store::Bucket, entries: &[(String, Vec<u8>)]) -> Result<(), String> {
        batch::set_many(b, entries).map_err(e)
    }
    fn delete_many(b: &store::Bucket, keys: &[String]) -> Result<(), String> {
        batch::delete_many(b, keys).map_err(e)
    }
    fn cas_increment(_: &store::Bucket, _: &str) -> Option<Result<i64, String>> {
        None
    }
    fn config(key: &str) -> Result<Option<String>, String> {
        config::get(key).map_err(|err| format!("{err:?}"))
    }
    fn config_all() -> Result<Vec<(String, String)>, String> {
        config::get_all().map_err(|err| format!("{err:?}"))
    }
}
