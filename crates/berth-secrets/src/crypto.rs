//! Encryption at rest: envelope encryption with AES-256-GCM.
//!
//! Every value gets its own random 256-bit data key. The value is sealed with
//! the data key, and the data key is sealed with the master key; the store only
//! ever sees the two ciphertexts. A per-value key means a nonce can never repeat
//! under one key however many values are written, and rotating the master key
//! later only needs to rewrap the small data keys.
//!
//! The master key is 32 bytes, from `BERTH_MASTER_KEY` (64 hex characters) or
//! from `<data-dir>/secrets/master.key` (mode 0600, generated on first start).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// The environment variable that overrides the key file.
pub const MASTER_KEY_ENV: &str = "BERTH_MASTER_KEY";

/// Why a key could not be loaded or a value could not be opened. Messages never
/// contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("{MASTER_KEY_ENV} must be 64 hexadecimal characters (32 bytes)")]
    BadEnvKey,
    #[error("{0} is not a 32-byte master key")]
    BadKeyFile(String),
    #[error("cannot read or create the master key: {0}")]
    Io(#[from] std::io::Error),
    #[error("encryption failed")]
    Seal,
    #[error("the stored value cannot be decrypted (wrong master key or tampered data)")]
    Open,
}

/// The server's master key.
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A sealed value as stored: the wrapped data key and the value's ciphertext,
/// each with its nonce (AES-GCM appends the 16-byte tag to the ciphertext).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Nonce of the data-key wrap, base64.
    pub kn: String,
    /// The data key sealed under the master key, base64.
    pub k: String,
    /// Nonce of the value, base64.
    pub n: String,
    /// The value sealed under the data key, base64.
    pub c: String,
}

impl MasterKey {
    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        MasterKey {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Result<MasterKey, CryptoError> {
        let bytes = hex::decode(text.trim()).map_err(|_| CryptoError::BadEnvKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadEnvKey)?;
        Ok(MasterKey::from_bytes(key))
    }

    /// The key from `BERTH_MASTER_KEY` when set, else from
    /// `<data_dir>/secrets/master.key`, created on first start.
    pub fn load(data_dir: &Path) -> Result<MasterKey, CryptoError> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(value) if !value.is_empty() => return MasterKey::from_hex(&value),
            _ => {}
        }
        let dir = data_dir.join("secrets");
        std::fs::create_dir_all(&dir)?;
        MasterKey::load_or_create(&dir.join("master.key"))
    }

    /// Loads the key file, creating it (mode 0600, written atomically so a
    /// crash never leaves a truncated key that would make every stored secret
    /// unreadable) when absent.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, CryptoError> {
        let (bytes, _) = berth_util::private_file::read_or_create_private(path, || {
            berth_util::ids::random_bytes::<32>().to_vec()
        })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::BadKeyFile(path.display().to_string()))?;
        Ok(MasterKey::from_bytes(key))
    }

    /// Seals `plaintext` under a fresh data key.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let data_key: [u8; 32] = rand::random();
        let data_cipher = Aes256Gcm::new(&data_key.into());
        let n: [u8; 12] = rand::random();
        let c = data_cipher
            .encrypt(Nonce::from_slice(&n), plaintext)
            .map_err(|_| CryptoError::Seal)?;
        let kn: [u8; 12] = rand::random();
        // The value's nonce is bound to the wrapped key as associated data, so
        // swapping parts between two sealed values fails authentication.
        let k = self
            .cipher
            .encrypt(
                Nonce::from_slice(&kn),
                Payload {
                    msg: &data_key,
                    aad: &n,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok(Sealed {
            kn: B64.encode(kn),
            k: B64.encode(k),
            n: B64.encode(n),
            c: B64.encode(c),
        })
    }

    /// Opens a sealed value; fails on a wrong key or any changed byte.
    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let decode = |s: &str| B64.decode(s).map_err(|_| CryptoError::Open);
        let (kn, k, n, c) = (
            decode(&sealed.kn)?,
            decode(&sealed.k)?,
            decode(&sealed.n)?,
            decode(&sealed.c)?,
        );
        if kn.len() != 12 || n.len() != 12 {
            return Err(CryptoError::Open);
        }
        let data_key = self
            .cipher
            .decrypt(Nonce::from_slice(&kn), Payload { msg: &k, aad: &n })
            .map_err(|_| CryptoError::Open)?;
        let data_key: [u8; 32] = data_key.try_into().map_err(|_| CryptoError::Open)?;
        Aes256Gcm::new(&data_key.into())
            .decrypt(Nonce::from_slice(&n), c.as_slice())
            .map_err(|_| CryptoError::Open)
    }
}

/// The master key as `berth-model`'s sealing port, for secrets other crates
/// keep (IAM access keys, STS sessions, agent credentials): a sealed value
/// is the JSON of [`Sealed`].
impl berth_model::Sealer for MasterKey {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, berth_model::SealError> {
        let sealed = MasterKey::seal(self, plaintext).map_err(|_| berth_model::SealError::Seal)?;
        serde_json::to_vec(&sealed).map_err(|_| berth_model::SealError::Seal)
    }

    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, berth_model::SealError> {
        let sealed: Sealed =
            serde_json::from_slice(sealed).map_err(|_| berth_model::SealError::Open)?;
        MasterKey::open(self, &sealed).map_err(|_| berth_model::SealError::Open)
    }
}

impl Sealed {
    /// An opaque rendering of the ciphertext, what SSM shows for a SecureString
    /// read without decryption.
    pub fn opaque(&self) -> String {
        B64.encode(format!("{}.{}.{}.{}", self.kn, self.k, self.n, self.c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key = MasterKey::from_bytes([1; 32]);
        let sealed = key.seal(b"hunter2").unwrap();
        assert!(!sealed.c.contains("hunter2"));
        assert_eq!(key.open(&sealed).unwrap(), b"hunter2");
        // A fresh data key and nonce every time.
        assert_ne!(key.seal(b"hunter2").unwrap(), sealed);
        assert_eq!(key.open(&key.seal(b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn tampering_is_detected() {
        let key = MasterKey::from_bytes([1; 32]);
        let sealed = key.seal(b"hunter2").unwrap();
        let mut c = B64.decode(&sealed.c).unwrap();
        c[0] ^= 1;
        let bad = Sealed {
            c: B64.encode(&c),
            ..sealed.clone()
        };
        assert!(matches!(key.open(&bad), Err(CryptoError::Open)));
        let other = key.seal(b"other").unwrap();
        let swapped = Sealed {
            n: other.n.clone(),
            ..sealed.clone()
        };
        assert!(matches!(key.open(&swapped), Err(CryptoError::Open)));
        let mut k = B64.decode(&sealed.k).unwrap();
        k[3] ^= 0x80;
        let bad_key = Sealed {
            k: B64.encode(&k),
            ..sealed
        };
        assert!(matches!(key.open(&bad_key), Err(CryptoError::Open)));
    }

    #[test]
    fn the_master_key_is_a_sealer() {
        use berth_model::seal::{open_text, seal_text};
        let key = MasterKey::from_bytes([7; 32]);
        let text = seal_text(Some(&key), "wJalrXUtnFEMI/K7MDENGbPxRfiCY").unwrap();
        assert!(!text.contains("wJalrXUtnFEMI"));
        assert_eq!(
            open_text(Some(&key), &text).unwrap(),
            "wJalrXUtnFEMI/K7MDENGbPxRfiCY"
        );
        let other = MasterKey::from_bytes([8; 32]);
        assert!(open_text(Some(&other), &text).is_err());
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = MasterKey::from_bytes([1; 32]).seal(b"hunter2").unwrap();
        let err = MasterKey::from_bytes([2; 32]).open(&sealed).unwrap_err();
        assert!(matches!(err, CryptoError::Open));
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn hex_keys_and_key_file() {
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = MasterKey::load_or_create(&path).unwrap();
        let sealed = a.seal(b"x").unwrap();
        let b = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
