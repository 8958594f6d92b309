//! Helpers shared by the test guests: responses, request bodies, query strings, and the
//! key-value route table that each `wasi:keyvalue` revision's guest serves.

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

pub fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    let _ = response.set_status_code(status);
    let Ok(out_body) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = out_body.write() {
        // blocking_write_and_flush takes at most 4096 bytes per call.
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(out_body, None);
}

pub fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut data = Vec::new();
    let Ok(body) = request.consume() else {
        return data;
    };
    if let Ok(stream) = body.stream() {
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(_) => break,
            }
        }
    }
    data
}

/// Splits `/path?a=b&c=d` into the path and percent-decoded parameters.
pub fn parse_path(path_with_query: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    (path.to_string(), params)
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut bytes = s.bytes();
    let mut out = Vec::with_capacity(s.len());
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let (hi, lo) = (bytes.next(), bytes.next());
                match (hi.and_then(hex), lo.and_then(hex)) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => out.extend([Some(b'%'), hi, lo].into_iter().flatten()),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One `wasi:keyvalue` revision (+ `wasi:config`) as seen by the route table.
pub trait KvApi {
    type Bucket;
    fn open(name: &str) -> Result<Self::Bucket, String>;
    fn get(b: &Self::Bucket, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(b: &Self::Bucket, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(b: &Self::Bucket, key: &str) -> Result<(), String>;
    fn exists(b: &Self::Bucket, key: &str) -> Result<bool, String>;
    /// Every key, following cursors to the end.
    fn all_keys(b: &Self::Bucket) -> Result<Vec<String>, String>;
    fn increment(b: &Self::Bucket, key: &str, delta: i64) -> Result<i64, String>;
    fn get_many(b: &Self::Bucket, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String>;
    fn set_many(b: &Self::Bucket, entries: &[(String, Vec<u8>)]) -> Result<(), String>;
    fn delete_many(b: &Self::Bucket, keys: &[String]) -> Result<(), String>;
    /// Increment through compare-and-swap, retrying on conflicts; `None` if the
    /// revision has no CAS.
    fn cas_increment(b: &Self::Bucket, key: &str) -> Option<Result<i64, String>>;
    fn config(key: &str) -> Result<Option<String>, String>;
    fn config_all() -> Result<Vec<(String, String)>, String>;
}

/// Serves `/get /set /delete /exists /keys /incr /cas-incr /get-many /set-many
/// /delete-many /config /config-all` (`KEY=VALUE` lines, sorted), each taking `key`/`keys` (comma-separated) and `bucket`.
pub fn serve_kv<K: KvApi>(request: IncomingRequest, out: ResponseOutparam) {
    let path = request.path_with_query().unwrap_or_default();
    let (route, params) = parse_path(&path);
    let is_write = matches!(request.method(), Method::Put | Method::Post);
    let body = if is_write {
        read_body(&request)
    } else {
        Vec::new()
    };
    match route_kv::<K>(&route, &params, body) {
        Ok(Some(bytes)) => respond(out, 200, &bytes),
        Ok(None) => respond(out, 404, b"not found\n"),
        Err(e) => respond(out, 500, e.as_bytes()),
    }
}

fn route_kv<K: KvApi>(
    route: &str,
    params: &[(String, String)],
    body: Vec<u8>,
) -> Result<Option<Vec<u8>>, String> {
    let key = param(params, "key").unwrap_or("");
    let keys: Vec<String> = param(params, "keys")
        .map(|k| k.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    if route == "/config" {
        return Ok(K::config(key)?.map(String::into_bytes));
    }
    if route == "/config-all" {
        let mut all = K::config_all()?;
        all.sort();
        let lines: String = all.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        return Ok(Some(lines.into_bytes()));
    }
    let bucket = K::open(param(params, "bucket").unwrap_or("default"))?;
    let ok = || Ok(Some(b"ok".to_vec()));
    match route {
        "/get" => K::get(&bucket, key),
        "/set" => K::set(&bucket, key, &body).and_then(|()| ok()),
        "/delete" => K::delete(&bucket, key).and_then(|()| ok()),
        "/exists" => Ok(Some(K::exists(&bucket, key)?.to_string().into_bytes())),
        "/keys" => {
            let mut all = K::all_keys(&bucket)?;
            all.sort();
            Ok(Some(all.join("\n").into_bytes()))
        }
        "/incr" => {
            let delta = param(params, "delta")
                .unwrap_or("1")
                .parse()
                .map_err(|_| "bad delta")?;
            Ok(Some(
                K::increment(&bucket, key, delta)?.to_string().into_bytes(),
            ))
        }
        "/cas-incr" => match K::cas_increment(&bucket, key) {
            Some(r) => Ok(Some(r?.to_string().into_bytes())),
            None => Err("compare-and-swap is not in this revision".into()),
        },
        "/get-many" => {
            let values = K::get_many(&bucket, &keys)?;
            let lines: Vec<String> = keys
                .iter()
                .zip(values)
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={}", String::from_utf8_lossy(&v)),
                    None => format!("{k}=<none>"),
                })
                .collect();
            Ok(Some(lines.join("\n").into_bytes()))
        }
        "/set-many" => {
            let entries: Vec<(String, Vec<u8>)> =
                keys.iter().map(|k| (k.clone(), body.clone())).collect();
            K::set_many(&bucket, &entries).and_then(|()| ok())
        }
        "/delete-many" => K::delete_many(&bucket, &keys).and_then(|()| ok()),
        other => Err(format!("no route {other}")),
    }
}
