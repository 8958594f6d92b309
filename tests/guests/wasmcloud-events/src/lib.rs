//! A queue-only component written as wasmCloud 1.x components are: it exports
//! `wasmcloud:messaging/handler@0.2.0` and no HTTP handler. It counts each message body
//! under `wc:BODY` in the key-value bucket `events` and fails bodies that start with
//! `poison`.

wit_bindgen::generate!({
    inline: r#"
        package stratus-tests:wasmcloud-events;
        world wasmcloud-events {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            export wasmcloud:messaging/handler@0.2.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmcloud::messaging::handler::Guest;
use wasi::keyvalue0_2_0_draft::{atomics, store};
use wasmcloud::messaging::types::BrokerMessage;

struct Handler;

export!(Handler);

impl Guest for Handler {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let body = String::from_utf8(msg.body).map_err(|_| "body is not UTF-8".to_string())?;
        if body.starts_with("poison") {
            return Err(format!("{body} is poison"));
        }
        let bucket = store::open("events").map_err(|e| format!("{e:?}"))?;
        atomics::increment(&bucket, &format!("wc:{body}"), 1).map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}
