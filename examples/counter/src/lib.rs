//! `counter`: counts visits per path in the `default` key-value bucket and greets with
//! the `greeting` config value. Uses the standard `wasi:keyvalue` and `wasi:config`
//! interfaces, so it runs unchanged on any provider the operator binds.

// Several revisions of wasi:keyvalue live in `wit/`, so module names carry the version.
wit_bindgen::generate!({
    path: "../../wit",
    world: "stratus:platform/capabilities",
    generate_all,
});

use wasi::config0_2_0_rc_1::store as config;
use wasi::keyvalue0_2_0_draft2::{atomics, store};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Counter;

wasip2::http::proxy::export!(Counter);

fn count(path: &str) -> Result<i64, store::Error> {
    let bucket = store::open("default")?;
    atomics::increment(&bucket, &format!("visits:{path}"), 1)
}

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(body) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = body.write() {
        let _ = stream.blocking_write_and_flush(text.as_bytes());
    }
    let _ = OutgoingBody::finish(body, None);
}

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let greeting = config::get("greeting")
            .ok()
            .flatten()
            .unwrap_or_else(|| "Hello".into());
        match count(&path) {
            Ok(n) => {
                println!("visit {n} to {path}");
                respond(
                    out,
                    200,
                    &format!("{greeting}! {path} has been visited {n} times.\n"),
                );
            }
            Err(e) => {
                eprintln!("key-value error: {e:?}");
                respond(out, 500, &format!("key-value error: {e:?}\n"));
            }
        }
    }
}
