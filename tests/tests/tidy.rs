//! House-style checks over the source tree: every Rust file opens with a `//!` line
//! saying what it is for.

// Test code: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` line: {missing:?}"
    );
}

/// The control plane never runs guest code and never talks to a tenant's providers:
/// neither wasmtime nor a provider SDK may be in its dependency tree.
#[test]
fn the_control_plane_links_no_runtime_and_no_provider_sdk() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree =
        stratus_tests::output_of(std::process::Command::new(cargo).current_dir(root).args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "stratus-control-plane",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ]));
    assert!(tree.contains("stratus-proto"), "{tree}");
    let forbidden: Vec<&str> = tree
        .lines()
        .filter(|l| {
            let name = l.split_whitespace().next().unwrap_or("");
            name.starts_with("wasmtime")
                || [
                    "redis",
                    "redb",
                    "aws-sdk-dynamodb",
                    "aws-sdk-sqs",
                    "async-nats",
                    "stratus-worker",
                ]
                .contains(&name)
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "stratus-control-plane depends on {forbidden:?}"
    );
}
