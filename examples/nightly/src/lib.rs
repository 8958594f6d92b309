//! `nightly`: a timer function. Each run of its timer trigger records the scheduled time
//! (which identifies the run: a retry carries the same one, so work keyed by it is done
//! once) in the `default` bucket. `GET /nightly` shows the count and the last run.
//!
//! ```sh
//! fnctl deploy nightly.wasm --app nightly --route /nightly --bind kv=embedded \
//!   --timer 'report=cron(0 3 * * *):tz=Europe/Paris'
//! fnctl runs nightly
//! ```

wit_bindgen::generate!({
    inline: r#"
        package examples:nightly;
        world nightly {
            include stratus:platform/capabilities@0.1.0;
            export stratus:platform/timer-handler@0.1.0;
        }
    "#,
    path: "../../wit",
    generate_all,
});

use exports::stratus::platform::timer_handler::{Guest, TimerEvent};
use wasi::keyvalue0_2_0_draft2::{atomics, store};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Nightly;

export!(Nightly);
wasip2::http::proxy::export!(Nightly);

impl Guest for Nightly {
    fn handle_timer(event: TimerEvent) -> Result<(), String> {
        let bucket = store::open("default").map_err(|e| format!("{e:?}"))?;
        // Done once per scheduled time, even if this attempt is a retry.
        let key = format!("run:{}:{}", event.trigger, event.scheduled_ms);
        if bucket.exists(&key).map_err(|e| format!("{e:?}"))? {
            return Ok(());
        }
        println!(
            "{} run for {} (attempt {})",
            event.trigger, event.scheduled_ms, event.attempt
        );
        bucket.set(&key, b"done").map_err(|e| format!("{e:?}"))?;
        atomics::increment(&bucket, "runs", 1).map_err(|e| format!("{e:?}"))?;
        bucket
            .set("last-run", event.scheduled_ms.to_string().as_bytes())
            .map_err(|e| format!("{e:?}"))
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Nightly {
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
                    "runs: {}\nlast scheduled (ms since epoch): {}\n",
                    get("runs"),
                    get("last-run")
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
