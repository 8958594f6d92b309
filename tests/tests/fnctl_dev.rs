//! `fnctl dev` refuses bad input with errors that say what to do.

// Test code: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;

use stratus_tests::{Dev, Http, fnctl, wasm};

#[tokio::test]
async fn hello_serves_http() {
    let dev = Dev::start(&wasm("hello"), &[]);
    let r = Http::default().get(&format!("{}/", dev.url)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello from Stratus!\n");
}

#[test]
fn bad_binding_is_refused() {
    let hello = wasm("hello");
    let hello = hello.to_str().unwrap();
    let (ok, _, err) = fnctl(&["dev", hello, "--bind", "kv"]);
    assert!(!ok);
    assert!(err.contains("KIND[.NAME]=PROVIDER"), "{err}");

    let (ok, _, err) = fnctl(&["dev", hello, "--bind", "blob=s3"]);
    assert!(!ok);
    assert!(err.contains("unknown capability `blob`"), "{err}");
}

#[test]
fn app_names_that_could_alias_another_apps_keys_are_refused() {
    let hello = wasm("hello");
    let (ok, _, err) = fnctl(&[
        "dev",
        hello.to_str().unwrap(),
        "--app",
        "shop/admin",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(err.contains("invalid app name `shop/admin`"), "{err}");
}

#[test]
fn unknown_provider_and_option_are_refused() {
    let counter = wasm("counter");
    let (ok, _, err) = fnctl(&[
        "dev",
        counter.to_str().unwrap(),
        "--bind",
        "kv=etcd",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        err.contains("unknown kv provider `etcd`")
            && err.contains("memory, embedded, redis, dynamo"),
        "{err}"
    );

    let (ok, _, err) = fnctl(&[
        "dev",
        counter.to_str().unwrap(),
        "--bind",
        "kv=memory:colour=blue",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        err.contains("unknown option `colour` for provider `memory`"),
        "{err}"
    );
}

#[test]
fn files_that_are_not_components_are_refused() {
    let dir = tempfile_dir();
    let garbage = dir.join("garbage.wasm");
    std::fs::File::create(&garbage)
        .unwrap()
        .write_all(b"definitely not wasm")
        .unwrap();
    let (ok, _, err) = fnctl(&["dev", garbage.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("not a WebAssembly component"), "{err}");

    // The smallest core module: magic + version 1.
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, err) = fnctl(&["dev", core.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[test]
fn imports_without_bindings_are_refused_naming_the_import() {
    let counter = wasm("counter");
    let (ok, _, err) = fnctl(&["dev", counter.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("wasi:keyvalue/"), "{err}");
    assert!(err.contains("--bind kv=embedded"), "{err}");

    let (ok, _, err) = fnctl(&[
        "dev",
        counter.to_str().unwrap(),
        "--bind",
        "kv=memory",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        err.contains("wasi:config/store@0.2.0-rc.1") && err.contains("config.KEY=VALUE"),
        "{err}"
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stratus-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
