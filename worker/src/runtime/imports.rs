//! Checking a component's imports against what the host provides and what the app has
//! bound, and building the linker with exactly those interfaces.

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::state::InvocationState;
use crate::binding::{Binding, Kind};
use crate::capabilities::Capabilities;
use crate::capabilities::config::{self, ConfigRevision};
use crate::capabilities::keyvalue::{self, KvRevision};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly component (no `\\0asm` header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build for `wasm32-wasip2` or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("import `{import}` is not provided by Stratus; {hint}")]
    Unsupported { import: String, hint: String },
    #[error(
        "import `{import}` needs a `{kind}` binding, and none was given; add e.g. `--bind {example}`"
    )]
    MissingBinding {
        import: String,
        kind: &'static str,
        example: &'static str,
    },
    #[error(
        "component does not export `wasi:http/incoming-handler@0.2.x`, so it cannot serve HTTP: {0}"
    )]
    NoHttpHandler(String),
    #[error("linking failed: {0}")]
    Link(String),
    #[error(
        "invalid app name `{0}`: use 1-128 characters from A-Z a-z 0-9 - _ ., starting with a letter or digit"
    )]
    InvalidAppName(String),
}

/// What one import of a component is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provided {
    /// WASI 0.2 (io, clocks, random, cli, filesystem, sockets, http): always linked.
    Wasi,
    KeyValue(KvRevision),
    Config(ConfigRevision),
}

const WASI_PACKAGES: &[&str] = &[
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
    "wasi:http",
];

fn classify(import: &str) -> Result<Provided, LoadError> {
    let (interface, version) = import.split_once('@').unwrap_or((import, ""));
    let package = interface.split('/').next().unwrap_or(interface);
    let unsupported = |hint: String| LoadError::Unsupported {
        import: import.to_string(),
        hint,
    };
    if WASI_PACKAGES.contains(&package) {
        return if version.starts_with("0.2.") {
            Ok(Provided::Wasi)
        } else {
            Err(unsupported("Stratus serves WASI 0.2.x".into()))
        };
    }
    match package {
        "wasi:keyvalue" => KvRevision::from_version(version)
            .map(Provided::KeyValue)
            .ok_or_else(|| unsupported("supported revisions: 0.2.0-draft, 0.2.0-draft2".into())),
        "wasi:config" => ConfigRevision::from_version(version)
            .map(Provided::Config)
            .ok_or_else(|| {
                unsupported(
                    "supported revisions: 0.2.0-rc.1, 0.2.0-draft, 0.2.0-draft-2024-09-27".into(),
                )
            }),
        _ => Err(unsupported(
            "Stratus provides wasi:keyvalue, wasi:config, wasi:http and WASI 0.2".into(),
        )),
    }
}

/// Classifies one import and checks that the capability it needs is bound.
fn check_import(import: &str, bound: &dyn Fn(Kind) -> bool) -> Result<Provided, LoadError> {
    let provided = classify(import)?;
    let (kind, example) = match provided {
        Provided::Wasi => return Ok(provided),
        Provided::KeyValue(_) => (Kind::KeyValue, "kv=embedded"),
        Provided::Config(_) => (Kind::Config, "config.KEY=VALUE"),
    };
    if bound(kind) {
        Ok(provided)
    } else {
        Err(LoadError::MissingBinding {
            import: import.to_string(),
            kind: kind.as_str(),
            example,
        })
    }
}

/// Checks a component's import names against what Stratus serves and what `bindings`
/// bind, without compiling it: the check a control plane runs before storing a deploy.
pub fn check_imports<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    bindings: &[Binding],
) -> Result<(), LoadError> {
    let bound = |kind: Kind| bindings.iter().any(|b| b.kind() == kind);
    for import in imports {
        check_import(import, &bound)?;
    }
    Ok(())
}

/// Builds a linker holding WASI plus exactly the capabilities the component imports,
/// refusing imports that are unknown or have no binding.
pub fn link(
    engine: &Engine,
    component: &Component,
    caps: &Capabilities,
) -> Result<Linker<InvocationState>, LoadError> {
    let link_err = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_err)?;

    let bound = |kind: Kind| match kind {
        Kind::KeyValue => !caps.kv.is_empty(),
        Kind::Config => caps.config.is_some(),
    };
    let mut kv_linked = Vec::new();
    let mut config_linked = Vec::new();
    for (import, _) in component.component_type().imports(engine) {
        match check_import(import, &bound)? {
            Provided::Wasi => {}
            Provided::KeyValue(rev) => {
                if !kv_linked.contains(&rev) {
                    keyvalue::host::add_to_linker(&mut linker, rev, InvocationState::kv)
                        .map_err(link_err)?;
                    kv_linked.push(rev);
                }
            }
            Provided::Config(rev) => {
                if !config_linked.contains(&rev) {
                    config::add_to_linker(&mut linker, rev, InvocationState::config)
                        .map_err(link_err)?;
                    config_linked.push(rev);
                }
            }
        }
    }
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_cannot_alias_namespaces() {
        use super::super::check_app_name;
        assert!(check_app_name("shop-api_v2.1").is_ok());
        for bad in [
            "",
            "a/b",
            "a b",
            "ключ",
            "a:b",
            ".",
            "..",
            "-x",
            &"x".repeat(129),
        ] {
            assert!(
                matches!(check_app_name(bad), Err(LoadError::InvalidAppName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn classifies_known_and_unknown_imports() {
        assert_eq!(classify("wasi:io/streams@0.2.6").unwrap(), Provided::Wasi);
        assert_eq!(
            classify("wasi:keyvalue/store@0.2.0-draft2").unwrap(),
            Provided::KeyValue(KvRevision::Draft2)
        );
        assert_eq!(
            classify("wasi:keyvalue/atomics@0.2.0-draft").unwrap(),
            Provided::KeyValue(KvRevision::Draft)
        );
        assert_eq!(
            classify("wasi:config/store@0.2.0-draft-2024-09-27").unwrap(),
            Provided::Config(ConfigRevision::Draft20240927)
        );
        assert!(matches!(
            classify("wasi:keyvalue/store@0.1.0"),
            Err(LoadError::Unsupported { .. })
        ));
        assert!(matches!(
            classify("acme:db/query"),
            Err(LoadError::Unsupported { .. })
        ));
        assert!(matches!(
            classify("wasi:io/streams@0.3.0"),
            Err(LoadError::Unsupported { .. })
        ));
    }
}
