//! Compiling components, with an on-disk cache of compiled artefacts keyed by the
//! component's SHA-256 and the engine's compatibility hash.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use stratus_proto::interfaces::ComponentError;

use super::LoadError;

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Rejects bytes that are not a component with an error that says what they are.
fn check_is_component(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.get(..4) != Some(WASM_MAGIC.as_slice()) {
        return Err(ComponentError::NotWasm.into());
    }
    // Bytes 4..8 are the version/layer word: layer 0 is a core module, 1 a component.
    match bytes.get(6..8) {
        Some([0, 0]) => Err(ComponentError::CoreModule.into()),
        Some([1, 0]) => Ok(()),
        _ => Err(ComponentError::NotWasm.into()),
    }
}

pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn cache_path(engine: &Engine, dir: &Path, digest: &str) -> PathBuf {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
}

pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Component, LoadError> {
    check_is_component(bytes)?;
    let Some(dir) = cache_dir else {
        return Component::new(engine, bytes)
            .map_err(|e| LoadError::from(ComponentError::Invalid(format!("{e:#}"))));
    };
    let path = cache_path(engine, dir, &digest(bytes));
    if path.exists() {
        match load_cached(engine, &path) {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component")
            }
        }
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| LoadError::from(ComponentError::Invalid(format!("{e:#}"))))?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(path = %path.display(), error = %e, "could not cache compiled component");
    }
    Ok(component)
}

#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: only `store` below writes this directory, atomically (write then rename),
    // from `Component::serialize` of the same engine configuration; the file name carries
    // the engine's compatibility hash and wasmtime re-checks the header on load.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("serializing: {e:#}"))?;
    let tmp = tempfile_in(dir)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    Ok(dir.join(format!(".tmp-{}", uuid::Uuid::new_v4())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn cached_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    }

    #[test]
    fn caches_by_digest_and_survives_a_corrupt_entry() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        compile(&engine, EMPTY_COMPONENT, Some(dir.path())).unwrap();
        let files = cached_files(dir.path());
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&digest(EMPTY_COMPONENT)), "{name}");

        // A hit loads the artefact (and leaves it alone); a corrupt one is ignored and
        // rewritten.
        let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        compile(&engine, EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert_eq!(
            std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
            written,
            "a cache hit compiled and wrote the artefact again"
        );
        std::fs::write(&files[0], b"not a compiled component").unwrap();
        compile(&engine, EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert_ne!(
            std::fs::read(&files[0]).unwrap(),
            b"not a compiled component"
        );
        assert_eq!(cached_files(dir.path()).len(), 1);
    }

    #[test]
    fn classifies_bytes() {
        assert!(matches!(
            check_is_component(b"hello"),
            Err(LoadError::Component(ComponentError::NotWasm))
        ));
        assert!(matches!(
            check_is_component(b"\0asm\x01\0\0\0"),
            Err(LoadError::Component(ComponentError::CoreModule))
        ));
        assert!(check_is_component(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_is_component(b"\0asm"),
            Err(LoadError::Component(ComponentError::NotWasm))
        ));
    }
}
