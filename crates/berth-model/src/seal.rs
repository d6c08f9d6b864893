//! Secrets at rest as a port: credentials Berth must be able to read back
//! (IAM users' secret access keys, STS session secrets, agent credential
//! secrets: SigV4 needs the plaintext to check a signature) are sealed with
//! the server's master key before they reach the store.
//!
//! The binary fills the port with `berth-secrets`' master key; records keep
//! the sealed form as text ([`seal_text`]), and readers open it once and keep
//! the plaintext in memory ([`open_text`]). A record written before sealing
//! existed holds the plaintext itself and still opens, so an older data
//! directory keeps working until it is migrated.

/// Seals and opens byte strings (envelope encryption with a master key).
pub trait Sealer: Send + Sync + 'static {
    /// `plaintext`, sealed under a fresh data key.
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError>;
    /// The plaintext of what [`seal`](Self::seal) returned; fails on a wrong
    /// key or any changed byte.
    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError>;
}

/// Why a value could not be sealed or opened. Never carries key material or
/// plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealing a secret failed")]
    Seal,
    #[error("a sealed secret cannot be opened (wrong master key or tampered data)")]
    Open,
    #[error("a sealed secret is stored but no master key was given to open it")]
    NoKey,
}

/// How a sealed secret starts in a record (plaintext secrets never contain
/// `:`: AWS secrets are base64 characters).
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Whether `stored` is a sealed secret (rather than a plaintext one from an
/// older data directory).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// `plaintext` as a record stores it: sealed (`sealed:v1:<hex>`) when there
/// is a sealer, as it is when there is none (tests, in-memory stores).
pub fn seal_text(sealer: Option<&dyn Sealer>, plaintext: &str) -> Result<String, SealError> {
    let Some(sealer) = sealer else {
        return Ok(plaintext.to_string());
    };
    let sealed = sealer.seal(plaintext.as_bytes())?;
    let mut out = String::with_capacity(SEALED_PREFIX.len() + sealed.len() * 2);
    out.push_str(SEALED_PREFIX);
    for byte in sealed {
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    Ok(out)
}

/// The plaintext of a stored secret: opened when sealed, as it is when it
/// was stored before sealing existed.
pub fn open_text(sealer: Option<&dyn Sealer>, stored: &str) -> Result<String, SealError> {
    let Some(hex) = stored.strip_prefix(SEALED_PREFIX) else {
        return Ok(stored.to_string());
    };
    let sealer = sealer.ok_or(SealError::NoKey)?;
    let bytes = hex.as_bytes();
    if bytes.len() % 2 != 0 {
        return Err(SealError::Open);
    }
    let mut sealed = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks(2) {
        let high = nibble(pair[0]).ok_or(SealError::Open)?;
        let low = nibble(pair[1]).ok_or(SealError::Open)?;
        sealed.push(high << 4 | low);
    }
    let plaintext = sealer.open(&sealed)?;
    String::from_utf8(plaintext).map_err(|_| SealError::Open)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not encryption: enough to see the text round-trip and tampering fail.
    struct Xor;
    impl Sealer for Xor {
        fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
            let mut out: Vec<u8> = plaintext.iter().map(|b| b ^ 0x5a).collect();
            out.push(plaintext.iter().fold(0u8, |a, b| a.wrapping_add(*b)));
            Ok(out)
        }
        fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
            let (sum, body) = sealed.split_last().ok_or(SealError::Open)?;
            let plain: Vec<u8> = body.iter().map(|b| b ^ 0x5a).collect();
            if plain.iter().fold(0u8, |a, b| a.wrapping_add(*b)) != *sum {
                return Err(SealError::Open);
            }
            Ok(plain)
        }
    }

    #[test]
    fn sealed_text_round_trips_and_plaintext_still_opens() {
        let sealed = seal_text(Some(&Xor), "wJalrXUtnFEMI/K7MDENG").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("wJalr"));
        assert_eq!(
            open_text(Some(&Xor), &sealed).unwrap(),
            "wJalrXUtnFEMI/K7MDENG"
        );
        // Records from before sealing hold the plaintext.
        assert_eq!(
            open_text(Some(&Xor), "plain/secret").unwrap(),
            "plain/secret"
        );
        assert_eq!(open_text(None, "plain/secret").unwrap(), "plain/secret");
        // No sealer: stored as is; a sealed value without a key fails.
        assert_eq!(seal_text(None, "x").unwrap(), "x");
        assert_eq!(open_text(None, &sealed), Err(SealError::NoKey));
        // Tampered or malformed text fails to open.
        let last = sealed.chars().last().unwrap();
        let mut changed = sealed[..sealed.len() - 1].to_string();
        changed.push(if last == '0' { '1' } else { '0' });
        assert_eq!(open_text(Some(&Xor), &changed), Err(SealError::Open));
        assert_eq!(open_text(Some(&Xor), "sealed:v1:abc"), Err(SealError::Open));
        assert_eq!(open_text(Some(&Xor), "sealed:v1:zz"), Err(SealError::Open));
    }
}
