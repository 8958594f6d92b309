//! The only place `fnctl` reads its environment.

use std::path::PathBuf;

/// `RUST_LOG` filters logs (default `info`); guest output is logged under target `guest`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Where local state lives: `STRATUS_DATA_DIR`, else `.stratus` in the current directory
/// (embedded key-value files, the compiled-component cache).
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("STRATUS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".stratus"))
}
