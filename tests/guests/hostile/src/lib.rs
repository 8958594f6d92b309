//! A guest that misbehaves on request, to prove a guest can never hurt the worker.
//!
//! `/ok` answers normally; `/loop`, `/oom`, `/recurse`, `/trap-mid-body`, `/flood` and
//! `/echo` and `/big` (a 64 MiB response) each do what their names say. `/count` answers
//! how many requests this instance has served: always 1 where every request gets a
//! fresh instance. `/length` reads the whole request body and answers its length, or
//! fails with the HTTP error code its read failed with. `/connect` (to Redis on
//! 127.0.0.1:6379) and `/listen` try to go around the worker's capabilities with raw
//! sockets, and answer with the error they got. `/file` tries to read a host file and
//! `/env` lists the environment variables the guest sees. `/fields?KIB` and `/bodies`
//! hoard what the host keeps for them (header maps of one KIB-KiB value, buffered body
//! writes) until refused. `/sleep` waits 600 ms on a timer, using no CPU.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use guest_http::respond;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
    http_error_code,
};
use wasip2::io::streams::StreamError;

struct Hostile;

static SERVED: AtomicU32 = AtomicU32::new(0);

wasip2::http::proxy::export!(Hostile);

fn recurse(n: u64) -> u64 {
    if black_box(n) == 0 {
        return 0;
    }
    black_box(recurse(n - 1)) + 1
}

/// Streams the request body back as it arrives.
fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let Ok(out_body) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let (Ok(in_body), Ok(writer)) = (request.consume(), out_body.write()) else {
        return;
    };
    let Ok(reader) = in_body.stream() else { return };
    loop {
        match reader.blocking_read(16 * 1024) {
            Ok(chunk) => {
                for part in chunk.chunks(4096) {
                    if writer.blocking_write_and_flush(part).is_err() {
                        return;
                    }
                }
            }
            Err(StreamError::Closed) => break,
            Err(_) => return,
        }
    }
    drop(writer);
    let _ = OutgoingBody::finish(out_body, None);
}

/// Reads the whole request body before answering, as a handler that parses it would.
fn length(request: IncomingRequest, out: ResponseOutparam) {
    let fail = |out, code| ResponseOutparam::set(out, Err(code));
    let Ok(body) = request.consume() else {
        return fail(out, ErrorCode::InternalError(None));
    };
    let Ok(reader) = body.stream() else {
        return fail(out, ErrorCode::InternalError(None));
    };
    let mut length = 0usize;
    loop {
        match reader.blocking_read(64 * 1024) {
            Ok(chunk) => length += chunk.len(),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                let code = http_error_code(&e).unwrap_or(ErrorCode::InternalError(None));
                return fail(out, code);
            }
        }
    }
    respond(out, 200, format!("{length}\n").as_bytes());
}

impl wasip2::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match path.as_str() {
            "/ok" => respond(out, 200, b"ok\n"),
            "/loop" => {
                let mut i: u64 = 0;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "/oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "/recurse" => {
                let depth = recurse(black_box(u64::MAX));
                respond(out, 200, depth.to_string().as_bytes());
            }
            "/trap-mid-body" => {
                let response = OutgoingResponse::new(Fields::new());
                let Ok(body) = response.body() else { return };
                ResponseOutparam::set(out, Ok(response));
                if let Ok(stream) = body.write() {
                    let _ = stream.blocking_write_and_flush(b"partial response, then ");
                }
                std::process::abort();
            }
            "/flood" => {
                let line = "x".repeat(1023);
                for _ in 0..20_000 {
                    println!("{line}");
                }
                respond(out, 200, b"flooded\n");
            }
            "/echo" => echo(request, out),
            "/length" => length(request, out),
            "/connect" => {
                let outcome = std::net::TcpStream::connect("127.0.0.1:6379").map(drop);
                respond(out, 200, format!("{outcome:?}").as_bytes());
            }
            "/file" => {
                let outcome = std::fs::read_to_string("/etc/hostname")
                    .or_else(|_| std::fs::read_to_string("etc/hostname"));
                respond(out, 200, format!("{outcome:?}").as_bytes());
            }
            fields if fields.starts_with("/fields?") => {
                // Header maps live in the host: hoard maps of one value of KiB each.
                let kib: usize = fields["/fields?".len()..].parse().unwrap_or(1);
                let value = vec![b'v'; kib * 1024];
                let mut hoard = Vec::new();
                while let Ok(fields) = Fields::from_list(&[("x".to_string(), value.clone())]) {
                    hoard.push(fields);
                }
                respond(out, 200, format!("{}\n", hoard.len()).as_bytes());
            }
            "/bodies" => {
                // Response bodies never sent, each holding as much written data as the
                // host lets it buffer.
                let mut hoard = Vec::new();
                loop {
                    let response = OutgoingResponse::new(Fields::new());
                    let Ok(body) = response.body() else { break };
                    let Ok(stream) = body.write() else { break };
                    let permit = stream.check_write().unwrap_or(0).min(16 << 20);
                    let _ = stream.write(&vec![b'b'; permit as usize]);
                    hoard.push((response, body, stream));
                }
                respond(out, 200, format!("{}\n", hoard.len()).as_bytes());
            }
            "/sleep" => {
                wasip2::clocks::monotonic_clock::subscribe_duration(600_000_000).block();
                respond(out, 200, b"slept\n");
            }
            "/env" => {
                let names: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
                respond(out, 200, format!("{names:?}").as_bytes());
            }
            "/listen" => {
                let outcome = std::net::TcpListener::bind("127.0.0.1:0").map(drop);
                respond(out, 200, format!("{outcome:?}").as_bytes());
            }
            "/count" => {
                let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                respond(out, 200, format!("{served}\n").as_bytes());
            }
            "/big" => {
                // 64 MiB, streamed: more than any socket buffer holds.
                let response = OutgoingResponse::new(Fields::new());
                let Ok(body) = response.body() else { return };
                ResponseOutparam::set(out, Ok(response));
                let Ok(stream) = body.write() else { return };
                let chunk = [b'x'; 4096];
                for _ in 0..(64 * 256) {
                    if stream.blocking_write_and_flush(&chunk).is_err() {
                        return;
                    }
                }
                drop(stream);
                let _ = OutgoingBody::finish(body, None);
            }
            _ => respond(out, 404, b"unknown route\n"),
        }
    }
}
