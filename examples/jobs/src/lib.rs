//! `jobs`: a queue function. Each message of its queue trigger is one job: it counts it
//! in the `default` bucket and remembers the last one; a message whose body starts with
//! `fail` fails, so the trigger retries it with backoff and dead-letters it after its
//! receives. `GET /jobs` shows the tally. It exports the standard
//! `wasi:messaging/incoming-handler`, so any queue source the operator binds drives it.
//!
//! ```sh
//! fnctl deploy jobs.wasm --app jobs --route /jobs --bind kv=embedded --queue jobs=embedded
//! fnctl queue send jobs 'resize photo-17'
//! curl http://127.0.0.1:8080/jobs
//! ```

wit_bindgen::generate!({
    inline: r#"
        package examples:jobs;
        world jobs {
            include stratus:platform/capabilities@0.1.0;
            export wasi:messaging/incoming-handler@0.2.0-draft;
        }
    "#,
    path: "../../wit",
    generate_all,
});

use exports::wasi::messaging::incoming_handler::Guest;
use wasi::keyvalue0_2_0_draft2::{atomics, store};
use wasi::messaging::types::{Error, Message};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Jobs;

export!(Jobs);
wasip2::http::proxy::export!(Jobs);

fn store_error(e: store::Error) -> Error {
    Error::Other(format!("{e:?}"))
}

impl Guest for Jobs {
    fn handle(message: Message) -> Result<(), Error> {
        let job = String::from_utf8_lossy(&message.data()).into_owned();
        if job.starts_with("fail") {
            return Err(Error::Other(format!("job `{job}` failed")));
        }
        let receives = message
            .metadata()
            .unwrap_or_default()
            .into_iter()
            .find(|(k, _)| k == "receive-count")
            .map(|(_, v)| v)
            .unwrap_or_else(|| "1".into());
        println!("job `{job}` (receive {receives})");
        let bucket = store::open("default").map_err(store_error)?;
        atomics::increment(&bucket, "jobs:done", 1).map_err(store_error)?;
        bucket.set("jobs:last", job.as_bytes()).map_err(store_error)
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Jobs {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let text = match store::open("default") {
            Ok(bucket) => {
                let get = |k: &str| {
                    bucket
                        .get(k)
                        .ok()
                        .flatten()
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_else(|| "-".into())
                };
                format!(
                    "jobs done: {}\nlast job: {}\n",
                    get("jobs:done"),
                    get("jobs:last")
                )
            }
            Err(e) => format!("no bucket: {e:?}\n"),
        };
        let response = OutgoingResponse::new(Fields::new());
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(text.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
