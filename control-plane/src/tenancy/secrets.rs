//! Binding secrets sealed at rest: AES-256-GCM under the control plane's key, stored
//! in place of the value as `enc:v1:BASE64URL(nonce || ciphertext)` and opened only to
//! build the assignment feed of the workers that run the app.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "enc:v1:";
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secrets key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("a stored secret cannot be opened with this control plane's key")]
    Open,
    #[error("sealing a secret failed")]
    Seal,
}

/// The key secrets are sealed with.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// Reads the key (32 bytes, base64) from `path`, creating it (owner-only) when it
    /// does not exist. Replicas of one control plane must share the file.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let err = |reason: String| SecretError::Key {
            path: path.display().to_string(),
            reason,
        };
        let bytes = match std::fs::read_to_string(path) {
            Ok(text) => base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| err(format!("not base64: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                aws_lc_rs::rand::fill(&mut key).map_err(|_| err("no randomness".into()))?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(key);
                match write_private(path, encoded.as_bytes()) {
                    Ok(()) => key.to_vec(),
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Self::load_or_create(path);
                    }
                    Err(e) => return Err(err(e.to_string())),
                }
            }
            Err(e) => return Err(err(e.to_string())),
        };
        Self::from_key(&bytes).map_err(|_| err(format!("expected {KEY_LEN} bytes")))
    }

    pub fn from_key(bytes: &[u8]) -> Result<Self, SecretError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretError::Seal)?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    /// Seals `value`; `context` (the binding's name) is authenticated with it, so a
    /// sealed value copied into another binding does not open.
    pub fn seal(&self, value: &str, context: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SecretError::Seal)?;
        let mut data = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| SecretError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .ok_or(SecretError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Open)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let sealer = Sealer::load_or_create(&path).unwrap();
        let sealed = sealer.seal("hunter2", "kv").unwrap();
        assert!(Sealer::is_sealed(&sealed) && !sealed.contains("hunter2"));
        assert_eq!(sealer.open(&sealed, "kv").unwrap(), "hunter2");
        assert!(sealer.open(&sealed, "kv.other").is_err());
        // The same file gives the same key; another key opens nothing.
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed, "kv").unwrap(), "hunter2");
        let other = Sealer::from_key(&[7u8; 32]).unwrap();
        assert!(other.open(&sealed, "kv").is_err());
        assert!(sealer.open("enc:v1:AAAA", "kv").is_err());
    }
}
