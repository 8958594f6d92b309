//! Bounds on the memory an invocation makes the host hold for it outside its own linear
//! memory: resources live in the host, and some carry data the guest handed over.
//!
//! The largest such data are header maps (`fields`, up to [`MAX_FIELDS_BYTES`] each) and
//! response body writes buffered until hyper sends them (one write of at most
//! [`BODY_CHUNK_BYTES`] per body). With at most [`MAX_RESOURCES`] live resources, one
//! invocation can make the host hold about `MAX_RESOURCES × 64 KiB` = 64 MiB, half the
//! default linear memory limit. wasmtime-wasi-http's defaults (no resource cap, 128 KiB
//! maps, 1 MiB writes) let one guest hoard gigabytes, whatever its memory limit.

/// Live resources (streams, fields, bodies, buckets, pollables, …) one invocation may
/// hold at once; a plain HTTP handler needs a few dozen. Creating one more traps.
pub(super) const MAX_RESOURCES: usize = 1_000;

/// Size of one header map a guest builds, as wasi-http counts it (names and values plus
/// a per-entry allowance). Proxies cap request heads at 8–16 KiB; a map over this traps.
pub(super) const MAX_FIELDS_BYTES: usize = 64 << 10;

/// The most one write to a response body may carry (what `check-write` permits); the
/// host buffers one such write per body until it is sent.
pub(super) const BODY_CHUNK_BYTES: usize = 64 << 10;
