//! The WIT packages and versions Stratus serves, the capability each belongs to, and the
//! import rule: every import is served, and every capability import is bound. The
//! control plane checks it on the names in an upload; the worker's linker links by it.

use crate::binding::{Binding, Kind};

/// The `wasi:keyvalue` revisions the host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KvRevision {
    /// `0.2.0-draft`: wasmtime's own crates and wasmCloud.
    Draft,
    /// `0.2.0-draft2`: Spin (adds compare-and-swap, string cursors, signed increment).
    Draft2,
}

impl KvRevision {
    pub fn from_version(v: &str) -> Option<Self> {
        match v {
            "0.2.0-draft" => Some(Self::Draft),
            "0.2.0-draft2" => Some(Self::Draft2),
            _ => None,
        }
    }
}

/// The `wasi:config` revisions the host serves; their text is identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigRevision {
    Rc1,
    Draft,
    Draft20240927,
}

impl ConfigRevision {
    pub fn from_version(v: &str) -> Option<Self> {
        match v {
            "0.2.0-rc.1" => Some(Self::Rc1),
            "0.2.0-draft" => Some(Self::Draft),
            "0.2.0-draft-2024-09-27" => Some(Self::Draft20240927),
            _ => None,
        }
    }
}

/// WASI 0.2 packages, always linked (sockets refused at use, outbound HTTP denied).
pub const WASI_PACKAGES: &[&str] = &[
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
    "wasi:http",
];

/// The HTTP handler export a component needs to serve requests (any 0.2.x).
pub const HTTP_HANDLER_EXPORT: &str = "wasi:http/incoming-handler@0.2.";

/// The handler exports a trigger may call.
pub const WASI_MESSAGE_HANDLER: &str = "wasi:messaging/incoming-handler@0.2.0-draft";
pub const WASMCLOUD_MESSAGE_HANDLER: &str = "wasmcloud:messaging/handler@0.2.0";
pub const TIMER_HANDLER: &str = "stratus:platform/timer-handler@0.1.0";
/// Spin's cron handler: a function exported at the top of the component.
pub const SPIN_CRON_HANDLER: &str = "handle-cron-event";

/// What a trigger calls in a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Handler {
    /// `wasi:http/incoming-handler@0.2.x`: HTTP routes, and timers that target a route.
    Http,
    /// `wasi:messaging/incoming-handler` or `wasmcloud:messaging/handler`: queue triggers.
    Message,
    /// `stratus:platform/timer-handler`: timer triggers.
    Timer,
}

impl Handler {
    pub const ALL: [Handler; 3] = [Handler::Http, Handler::Message, Handler::Timer];

    pub fn as_str(self) -> &'static str {
        match self {
            Handler::Http => "http",
            Handler::Message => "message",
            Handler::Timer => "timer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }

    /// The export (or exports, any one of which serves) it needs, as an error names it.
    pub fn export_names(self) -> &'static str {
        match self {
            Handler::Http => "`wasi:http/incoming-handler@0.2.x`",
            Handler::Message => {
                "`wasi:messaging/incoming-handler@0.2.0-draft` or `wasmcloud:messaging/handler@0.2.0`"
            }
            Handler::Timer => {
                "`stratus:platform/timer-handler@0.1.0` or Spin's `handle-cron-event`"
            }
        }
    }

    /// Whether the export named `export` is this handler.
    pub fn is_export(self, export: &str) -> bool {
        match self {
            Handler::Http => export.starts_with(HTTP_HANDLER_EXPORT),
            Handler::Message => {
                export == WASI_MESSAGE_HANDLER || export == WASMCLOUD_MESSAGE_HANDLER
            }
            Handler::Timer => export == TIMER_HANDLER || export == SPIN_CRON_HANDLER,
        }
    }
}

/// The handlers among a component's export names.
pub fn handlers<'a>(exports: impl IntoIterator<Item = &'a str> + Clone) -> Vec<Handler> {
    Handler::ALL
        .into_iter()
        .filter(|h| exports.clone().into_iter().any(|e| h.is_export(e)))
        .collect()
}

/// The `wasi:messaging` / `wasmcloud:messaging` packages a component may import: their
/// types, which handlers receive (sending is the producer capability's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessagingTypes {
    /// `wasi:messaging/types@0.2.0-draft`.
    Wasi,
    /// `wasmcloud:messaging/types@0.2.0`.
    WasmCloud,
}

/// What one import of a component is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provided {
    /// Sending: `wasi:messaging/producer@0.2.0-draft` or
    /// `wasmcloud:messaging/consumer@0.2.0`.
    Producer(MessagingTypes),
    Wasi,
    KeyValue(KvRevision),
    Config(ConfigRevision),
    MessagingTypes(MessagingTypes),
    /// `stratus:platform/timer-types`, which the timer handler's event uses.
    TimerTypes,
    /// `fermyon:spin-cron/cron-types@2.0.0`, what Spin's cron handler takes.
    SpinCronTypes,
}

/// Why uploaded bytes are not a component Stratus can run; the control plane refuses
/// them with these before storing, the worker before compiling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComponentError {
    #[error("not a WebAssembly component (no `\\0asm` header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build for `wasm32-wasip2` or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "component exports no handler a trigger can call (`wasi:http/incoming-handler@0.2.x`, `wasi:messaging/incoming-handler@0.2.0-draft`, `wasmcloud:messaging/handler@0.2.0` or `stratus:platform/timer-handler@0.1.0`): {0}"
    )]
    NoHandler(String),
    #[error("a {trigger} trigger needs the component to export {needs}; it exports {exports}")]
    MissingHandler {
        trigger: &'static str,
        needs: &'static str,
        exports: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
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
}

/// Which served interface an import name is.
pub fn classify(import: &str) -> Result<Provided, ImportError> {
    let (interface, version) = import.split_once('@').unwrap_or((import, ""));
    let package = interface.split('/').next().unwrap_or(interface);
    let unsupported = |hint: String| ImportError::Unsupported {
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
        "stratus:platform" if interface == "stratus:platform/timer-types" && version == "0.1.0" => {
            Ok(Provided::TimerTypes)
        }
        "fermyon:spin-cron" if interface == "fermyon:spin-cron/cron-types" && version == "2.0.0" => {
            Ok(Provided::SpinCronTypes)
        }
        "wasi:messaging" | "wasmcloud:messaging" => {
            match (interface, version) {
                ("wasi:messaging/types", "0.2.0-draft") => {
                    Ok(Provided::MessagingTypes(MessagingTypes::Wasi))
                }
                ("wasmcloud:messaging/types", "0.2.0") => {
                    Ok(Provided::MessagingTypes(MessagingTypes::WasmCloud))
                }
                ("wasi:messaging/producer", "0.2.0-draft") => {
                    Ok(Provided::Producer(MessagingTypes::Wasi))
                }
                ("wasmcloud:messaging/consumer", "0.2.0") => {
                    Ok(Provided::Producer(MessagingTypes::WasmCloud))
                }
                _ => Err(unsupported(
                    "Stratus serves `wasi:messaging@0.2.0-draft` (types, producer, incoming-handler) and `wasmcloud:messaging@0.2.0` (types, consumer, handler); not request-reply".into(),
                )),
            }
        }
        _ => Err(unsupported(
            "Stratus provides wasi:keyvalue, wasi:config, wasi:messaging, wasi:http and WASI 0.2"
                .into(),
        )),
    }
}

/// Classifies one import and checks that the capability it needs is bound.
pub fn check_import(import: &str, bound: &dyn Fn(Kind) -> bool) -> Result<Provided, ImportError> {
    let provided = classify(import)?;
    let (kind, example) = match provided {
        Provided::Wasi
        | Provided::MessagingTypes(_)
        | Provided::TimerTypes
        | Provided::SpinCronTypes => return Ok(provided),
        Provided::KeyValue(_) => (Kind::KeyValue, "kv=embedded"),
        Provided::Config(_) => (Kind::Config, "config.KEY=VALUE"),
        Provided::Producer(_) => (Kind::Messaging, "messaging=embedded"),
    };
    if bound(kind) {
        Ok(provided)
    } else {
        Err(ImportError::MissingBinding {
            import: import.to_string(),
            kind: kind.as_str(),
            example,
        })
    }
}

/// Checks a component's import names against what Stratus serves and what `bindings`
/// bind, without compiling it.
pub fn check_imports<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    bindings: &[Binding],
) -> Result<(), ImportError> {
    let bound = |kind: Kind| bindings.iter().any(|b| b.kind() == kind);
    for import in imports {
        check_import(import, &bound)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for refused in [
            "wasi:keyvalue/store@0.1.0",
            "acme:db/query",
            "wasi:io/streams@0.3.0",
        ] {
            assert!(
                matches!(classify(refused), Err(ImportError::Unsupported { .. })),
                "{refused}"
            );
        }
    }

    #[test]
    fn capability_imports_need_a_binding() {
        let kv: Vec<Binding> = vec!["kv=memory".parse().unwrap()];
        assert!(check_imports(["wasi:keyvalue/store@0.2.0-draft"], &kv).is_ok());
        assert!(matches!(
            check_imports(["wasi:config/store@0.2.0-rc.1"], &kv),
            Err(ImportError::MissingBinding { kind: "config", .. })
        ));
    }
}
