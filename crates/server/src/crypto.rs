//! Secret values at rest: sealed with XChaCha20-Poly1305 (an AEAD from RustCrypto) under a 256-bit key that
//! lives in `<state-dir>/secret.key` (mode `0600`, created at first start) or in `PIPEWRIGHT_SECRET_KEY`.
//! A sealed value names the key it was sealed with (`pwenc1:<key id>:<nonce>:<ciphertext>`, hex), so a key
//! can be rotated: [`Keyring::rotate`] seals every stored secret again under a new key (`pipewright secret
//! rotate-key`). The record that carries a secret is bound into the seal (associated data), so a sealed value
//! copied onto another secret does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The environment variable that may hold the key(s), hex, comma-separated, current first.
pub const KEY_ENV: &str = "PIPEWRIGHT_SECRET_KEY";
/// The key file in the state directory.
pub const KEY_FILE: &str = "secret.key";
const PREFIX: &str = "pwenc1";

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key material is missing or malformed.
    #[error("secret key: {0}")]
    Key(String),
    /// A sealed value is damaged, was sealed with a key we do not have, or belongs to another record.
    #[error("cannot decrypt a stored secret: {0}")]
    Open(String),
}

#[derive(Clone)]
struct Key {
    id: String,
    bytes: [u8; 32],
}

impl Key {
    fn new(bytes: [u8; 32]) -> Key {
        Key { id: hex(&Sha256::digest(bytes)[..4]), bytes }
    }

    fn random() -> Key {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        Key::new(b)
    }

    fn parse(text: &str) -> Result<Key, CryptoError> {
        let raw = unhex(text.trim()).ok_or_else(|| CryptoError::Key("expected 64 hexadecimal characters".into()))?;
        let bytes: [u8; 32] =
            raw.try_into().map_err(|_| CryptoError::Key("expected 64 hexadecimal characters (32 bytes)".into()))?;
        Ok(Key::new(bytes))
    }
}

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `PIPEWRIGHT_SECRET_KEY`.
    Env,
    /// A key file (one key per line, current first).
    File(PathBuf),
}

impl KeySource {
    /// Where the key came from, for messages.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Env => format!("from {KEY_ENV}"),
            KeySource::File(p) => format!("from {}", p.display()),
        }
    }
}

/// The keys that seal and open secret values: the first seals, all open.
pub struct Keyring {
    source: KeySource,
    keys: RwLock<Vec<Key>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn parse_keys(text: &str) -> Result<Vec<Key>, CryptoError> {
    let keys: Vec<Key> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(Key::parse)
        .collect::<Result<_, _>>()?;
    if keys.is_empty() {
        return Err(CryptoError::Key("no key found".into()));
    }
    Ok(keys)
}

fn write_keys(path: &Path, keys: &[Key]) -> Result<(), CryptoError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    let mut text = String::from("# pipewright secret keys: the first seals, all open. Keep this file private.\n");
    for k in keys {
        text.push_str(&hex(&k.bytes));
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| CryptoError::Key(format!("{}: {e}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CryptoError::Key(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| CryptoError::Key(format!("{}: {e}", path.display())))
}

impl Keyring {
    /// The keys from `PIPEWRIGHT_SECRET_KEY`, or from `<state_dir>/secret.key` (created with a new random key
    /// when missing).
    pub fn load(state_dir: &Path) -> Result<Keyring, CryptoError> {
        if let Ok(v) = std::env::var(KEY_ENV) {
            return Ok(Keyring { source: KeySource::Env, keys: RwLock::new(parse_keys(&v)?) });
        }
        let path = state_dir.join(KEY_FILE);
        let keys = match std::fs::read_to_string(&path) {
            Ok(text) => parse_keys(&text).map_err(|e| CryptoError::Key(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = vec![Key::random()];
                write_keys(&path, &k)?;
                k
            }
            Err(e) => return Err(CryptoError::Key(format!("{}: {e}", path.display()))),
        };
        Ok(Keyring { source: KeySource::File(path), keys: RwLock::new(keys) })
    }

    /// Where the keys come from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    fn keys(&self) -> Vec<Key> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Seal `plain` for the record named `context` (e.g. `secret/org/project/id`).
    pub fn seal(&self, context: &str, plain: &str) -> Result<String, CryptoError> {
        let key = self.keys().into_iter().next().ok_or_else(|| CryptoError::Key("no key".into()))?;
        seal_with(&key, context, plain)
    }

    /// Open a sealed value of the record `context`. A key id we do not know makes the key file be read again
    /// (another process may have rotated it).
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, CryptoError> {
        let kid = sealed.split(':').nth(1).unwrap_or_default();
        if !self.keys().iter().any(|k| k.id == kid)
            && let KeySource::File(path) = &self.source
            && let Ok(text) = std::fs::read_to_string(path)
            && let Ok(keys) = parse_keys(&text)
        {
            *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        }
        let keys = self.keys();
        let key = keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or_else(|| CryptoError::Open(format!("it was sealed with key {kid}, which is not in the keyring")))?;
        open_with(key, context, sealed)
    }

    /// Start a rotation: a new current key, the old ones kept for opening. With a key file, the file is
    /// rewritten (current first); with `PIPEWRIGHT_SECRET_KEY`, the new key is returned for the operator to set.
    pub fn begin_rotation(&self) -> Result<String, CryptoError> {
        let new = Key::random();
        let mut keys = vec![new.clone()];
        keys.extend(self.keys());
        if let KeySource::File(path) = &self.source {
            write_keys(path, &keys)?;
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(hex(&new.bytes))
    }

    /// End a rotation: only the current key is kept.
    pub fn finish_rotation(&self) -> Result<(), CryptoError> {
        let keys: Vec<Key> = self.keys().into_iter().take(1).collect();
        if let KeySource::File(path) = &self.source {
            write_keys(path, &keys)?;
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }
}

fn seal_with(key: &Key, context: &str, plain: &str) -> Result<String, CryptoError> {
    let cipher = XChaCha20Poly1305::new((&key.bytes).into());
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: context.as_bytes() })
        .map_err(|_| CryptoError::Key("encryption failed".into()))?;
    Ok(format!("{PREFIX}:{}:{}:{}", key.id, hex(&nonce), hex(&ct)))
}

fn open_with(key: &Key, context: &str, sealed: &str) -> Result<String, CryptoError> {
    let parts: Vec<&str> = sealed.split(':').collect();
    let [prefix, _, nonce, ct] = parts.as_slice() else {
        return Err(CryptoError::Open("not a sealed value".into()));
    };
    if *prefix != PREFIX {
        return Err(CryptoError::Open("not a sealed value".into()));
    }
    let nonce = unhex(nonce).filter(|n| n.len() == 24).ok_or_else(|| CryptoError::Open("bad nonce".into()))?;
    let ct = unhex(ct).ok_or_else(|| CryptoError::Open("bad ciphertext".into()))?;
    let cipher = XChaCha20Poly1305::new((&key.bytes).into());
    let plain = cipher
        .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad: context.as_bytes() })
        .map_err(|_| CryptoError::Open("the value is damaged or belongs to another record".into()))?;
    String::from_utf8(plain).map_err(|_| CryptoError::Open("not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &Path) -> Keyring {
        Keyring { source: KeySource::File(dir.join(KEY_FILE)), keys: RwLock::new(vec![Key::random()]) }
    }

    #[test]
    fn seal_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let r = ring(dir.path());
        let s = r.seal("secret/o/p/db", "hunter2-value").unwrap();
        assert!(s.starts_with("pwenc1:") && s.split(':').count() == 4);
        assert!(!s.contains("hunter2"));
        assert_eq!(r.open("secret/o/p/db", &s).unwrap(), "hunter2-value");
        // Bound to its record.
        assert!(r.open("secret/o/p/other", &s).is_err());
        // Tampering is detected.
        let mut t = s.clone();
        t.pop();
        t.push(if s.ends_with('0') { '1' } else { '0' });
        assert!(r.open("secret/o/p/db", &t).is_err());
    }

    #[test]
    fn key_file_is_private_and_rotation_keeps_old_values_readable_until_finished() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let r = Keyring::load(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let old = r.seal("c", "v1-secret").unwrap();
        r.begin_rotation().unwrap();
        assert_eq!(r.open("c", &old).unwrap(), "v1-secret");
        let new = r.seal("c", "v1-secret").unwrap();
        assert_ne!(old.split(':').nth(1), new.split(':').nth(1));
        r.finish_rotation().unwrap();
        assert!(r.open("c", &old).is_err());
        assert_eq!(Keyring::load(dir.path()).unwrap().open("c", &new).unwrap(), "v1-secret");
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(parse_keys("zz").is_err());
        assert!(parse_keys("").is_err());
        assert!(parse_keys(&"ab".repeat(31)).is_err());
        assert_eq!(parse_keys(&format!("{},{}", "ab".repeat(32), "cd".repeat(32))).unwrap().len(), 2);
    }
}
