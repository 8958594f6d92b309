//! `stratus.toml`: what `fnctl deploy` deploys, as Spin's and Wrangler's users expect a
//! file beside their code to say it. Every deploy flag has a key; a flag overrides its
//! key; an unknown key is an error naming it and its line.
//!
//! ```toml
//! app = "orders"
//! component = "target/wasm32-wasip2/release/orders.wasm"   # relative to this file
//! routes = ["/orders"]
//! bindings = ["kv=redis", "config.currency=EUR"]
//! queues = ["orders=nats:stream=ORDERS,batch_size=10,dead_letter=orders.dead"]
//! timers = ["nightly=cron(0 3 * * *):tz=Europe/Paris"]
//! pool = "default"
//! replicas = 2            # or "all"
//! ```
//!
//! Secrets do not belong here: a binding names where the worker reads one
//! (`password_env=VAR`, `password_file=PATH`; platforms run for one trusted user), or
//! binds a backend the operator defines (`kv=redis:backend=NAME`), or passes it with
//! `--bind` when deploying, where the control plane seals it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The default manifest name, looked up in the current directory.
pub const FILE: &str = "stratus.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub app: Option<String>,
    pub component: Option<PathBuf>,
    pub routes: Option<Vec<String>>,
    pub bindings: Option<Vec<String>>,
    pub queues: Option<Vec<String>>,
    pub timers: Option<Vec<String>>,
    pub pool: Option<String>,
    pub replicas: Option<Replicas>,
}

/// `replicas = 2` or `replicas = "all"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Replicas {
    Count(u32),
    Named(String),
}

impl Replicas {
    pub fn as_arg(&self) -> String {
        match self {
            Replicas::Count(n) => n.to_string(),
            Replicas::Named(s) => s.clone(),
        }
    }
}

impl Manifest {
    /// Reads `path`, or `./stratus.toml` when it exists; `None` when neither applies.
    /// The component path is made relative to the manifest's directory.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Option<Self>> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from(FILE);
                if !default.exists() {
                    return Ok(None);
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut manifest =
            Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if let Some(component) = &manifest.component
            && component.is_relative()
        {
            let dir = path.parent().unwrap_or(Path::new("."));
            manifest.component = Some(dir.join(component));
        }
        Ok(Some(manifest))
    }

    /// Parses manifest text; the error names an unknown key and its line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key() {
        let m = Manifest::parse(
            r#"
app = "orders"
component = "orders.wasm"
routes = ["/orders"]
bindings = ["kv=memory"]
queues = ["jobs=embedded"]
timers = ["tick=rate(1 minute)"]
pool = "default"
replicas = "all"
"#,
        )
        .unwrap();
        assert_eq!(m.app.as_deref(), Some("orders"));
        assert_eq!(m.replicas.unwrap().as_arg(), "all");
        assert_eq!(m.queues.unwrap(), ["jobs=embedded"]);
        let two = Manifest::parse("replicas = 2").unwrap();
        assert_eq!(two.replicas.unwrap().as_arg(), "2");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = Manifest::parse("app = \"x\"\n\nroute = [\"/x\"]\n").unwrap_err();
        assert!(err.contains("route"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }
}
