//! An HTTP function that enqueues work: `POST /send/TOPIC` sends the request body as a
//! message on TOPIC through `wasi:messaging/producer` (`?group=G` sets its FIFO group),
//! `POST /publish/SUBJECT` through wasmCloud's `consumer.publish`. It answers 202, or
//! 502 with the error the host gave.

wit_bindgen::generate!({
    inline: r#"
        package stratus-tests:sender;
        world sender {
            import wasi:messaging/producer@0.2.0-draft;
            import wasmcloud:messaging/consumer@0.2.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use wasi::messaging::producer;
use wasi::messaging::types::{Client, Message};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};
use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

struct Sender;

wasip2::http::proxy::export!(Sender);

fn send(topic: &str, group: Option<&str>, body: Vec<u8>) -> Result<(), String> {
    let client = Client::connect("default").map_err(|e| format!("{e:?}"))?;
    let message = Message::new(&body);
    message.set_content_type("text/plain");
    if let Some(group) = group {
        message.add_metadata("group", group);
    }
    producer::send(&client, topic, message).map_err(|e| format!("{e:?}"))
}

impl wasip2::exports::http::incoming_handler::Guest for Sender {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (path, query) = path.split_once('?').unwrap_or((&path, ""));
        let group = query.strip_prefix("group=");
        let body = guest_http::read_body(&request);
        let outcome = if let Some(topic) = path.rsplit_once("/send/").map(|(_, t)| t) {
            send(topic, group, body)
        } else if let Some(subject) = path.rsplit_once("/publish/").map(|(_, s)| s) {
            consumer::publish(&BrokerMessage {
                subject: subject.to_string(),
                body,
                reply_to: None,
            })
        } else {
            return guest_http::respond(out, 404, b"POST /send/TOPIC or /publish/SUBJECT\n");
        };
        match outcome {
            Ok(()) => guest_http::respond(out, 202, b"sent\n"),
            Err(e) => guest_http::respond(out, 502, e.as_bytes()),
        }
    }
}
