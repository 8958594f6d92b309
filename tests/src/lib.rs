//! Shared harness for the end-to-end tests: finds the built `fnctl` binary and guest
//! components, starts `fnctl dev` as a child process and talks HTTP to it.

// Test-only code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod platform;
mod relay;

pub use relay::Relay;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// `target/<profile>/NAME`, next to the directory holding this test binary.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace`, done by .ci/test)",
        bin.display()
    );
    bin
}

pub fn fnctl_bin() -> PathBuf {
    binary("fnctl")
}

/// A built guest component, from `STRATUS_WASM_DIR` (set by .ci/test after building
/// `examples/` and `tests/guests/`).
pub fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("STRATUS_WASM_DIR")
        .map(PathBuf::from)
        .expect(
            "STRATUS_WASM_DIR is not set: run the suite through .ci/test, which builds the guests",
        );
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: rebuild the guests (.ci/build-guests)",
        path.display()
    );
    path
}

/// Runs `cmd` to completion and returns its stdout; a failure fails the test with the
/// command's stderr.
pub fn output_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `stratus-control-plane --config CONFIG mint-token ARGS`: the token it prints.
pub fn mint_token(config: &Path, args: &[&str]) -> String {
    output_of(
        Command::new(binary("stratus-control-plane"))
            .arg("--config")
            .arg(config)
            .arg("mint-token")
            .args(args),
    )
    .trim()
    .to_string()
}

/// A port free on loopback right now (another process could take it before use; the
/// tests bind soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

pub fn redis_url() -> String {
    std::env::var("STRATUS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The AWS emulator (or the AWS endpoint) the tests talk to.
pub fn aws_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

pub fn dynamo_binding() -> String {
    let endpoint = aws_endpoint();
    format!("kv=dynamo:table=stratus-e2e,region=us-east-1,endpoint={endpoint}")
}

/// A running server process (`fnctl dev`, `fnctl up`, the control plane); killed on drop.
pub struct Dev {
    child: Child,
    /// The first `http://` address on its first line of output.
    pub url: String,
    /// That first line, for servers that print several addresses.
    pub first_line: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Dev {
    /// Starts `fnctl dev COMPONENT --listen 127.0.0.1:0 ARGS...` and waits until it serves.
    pub fn start(component: &Path, args: &[&str]) -> Dev {
        Self::try_start(component, args).unwrap_or_else(|e| panic!("fnctl dev did not start: {e}"))
    }

    /// Like `start`, but returns the process's stderr if it exits instead of serving.
    pub fn try_start(component: &Path, args: &[&str]) -> Result<Dev, String> {
        let mut all: Vec<&str> = vec!["dev"];
        let component = component.to_string_lossy().into_owned();
        all.push(&component);
        all.extend(["--listen", "127.0.0.1:0"]);
        all.extend(args);
        Self::spawn(&fnctl_bin(), &all, &[])
    }

    /// Starts `bin ARGS...` and waits for its first line of output, which must carry an
    /// `http://` address; returns its stderr if it exits first.
    pub fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<Dev, String> {
        let mut child = Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let err_pipe = child.stderr.take().ok_or("no stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(out).lines();
        match lines.next() {
            Some(Ok(line)) if line.contains("http://") => {
                let url = http_urls(&line).into_iter().next().unwrap_or_default();
                // Keep draining stdout so the server never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                Ok(Dev {
                    child,
                    url,
                    first_line: line,
                    stderr,
                })
            }
            _ => {
                let _ = child.wait();
                // Let the stderr thread drain.
                std::thread::sleep(Duration::from_millis(100));
                let text = stderr.lock().unwrap().clone();
                Err(text)
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the worker's log contains `needle`: guest output is
    /// logged when the invocation ends, just after the response.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        for _ in 0..200 {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The most memory the process has had resident so far (Linux `VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading the process's status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("no VmHWM in the process's status");
        kib * 1024
    }

    /// Sends SIGTERM (a graceful stop; dropping the `Dev` kills it with SIGKILL).
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the process to exit; whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if !self.still_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `http://…` address in `line`, without trailing punctuation.
pub fn http_urls(line: &str) -> Vec<String> {
    line.split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches([',', '.', ';']).to_string())
        .collect()
}

/// Runs `fnctl ARGS...` to completion: (success, stdout, stderr).
pub fn fnctl(args: &[&str]) -> (bool, String, String) {
    fnctl_env(args, &[])
}

/// Runs `fnctl ARGS...` with extra environment variables.
pub fn fnctl_env(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(fnctl_bin())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("running fnctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    pub async fn get(&self, url: &str) -> Reply {
        self.send("GET", url, Vec::new()).await.expect("GET failed")
    }

    pub async fn put(&self, url: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.send("PUT", url, body.into())
            .await
            .expect("PUT failed")
    }

    /// Sends a request; `Err` if the connection or body failed mid-way.
    pub async fn send(&self, method: &str, url: &str, body: Vec<u8>) -> Result<Reply, String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("status {status}, body failed: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Reply { status, body })
    }
}
