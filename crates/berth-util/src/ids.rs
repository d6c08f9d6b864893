//! Random ids and secrets, from the thread's cryptographically secure
//! generator (`rand`'s `ThreadRng`, seeded from the operating system).

use rand::Rng;

/// The base32 alphabet AWS access key ids use after their prefix.
pub const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Upper-case letters and digits: IAM unique ids (`AIDA…`, `AROA…`).
pub const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Letters and digits.
pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// The base64 alphabet secret access keys and session tokens are drawn from.
pub const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Lower-case hexadecimal digits.
pub const LOWER_HEX: &[u8] = b"0123456789abcdef";

/// `N` random bytes (keys, nonces).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::thread_rng().fill(&mut out[..]);
    out
}

/// `len` characters drawn uniformly from `alphabet` (which must not be
/// empty).
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

/// `2 * bytes` lower-case hex digits (`random_hex(16)`: a 32-digit id such
/// as an ECS task id).
pub fn random_hex(bytes: usize) -> String {
    random_string(LOWER_HEX, 2 * bytes)
}

/// An IAM unique id such as `AIDA…`: 21 characters, as AWS's.
pub fn unique_id(prefix: &str) -> String {
    let rest = 21usize.saturating_sub(prefix.len());
    format!("{prefix}{}", random_string(UPPER_ALNUM, rest))
}

/// An access key id: `AKIA…` (long-term) or `ASIA…` (temporary), 20
/// characters, base32 after the prefix.
pub fn access_key_id(prefix: &str) -> String {
    let rest = 20usize.saturating_sub(prefix.len());
    format!("{prefix}{}", random_string(BASE32, rest))
}

/// A 40-character secret access key.
pub fn secret_access_key() -> String {
    random_string(SECRET, 40)
}

/// A session token for temporary credentials.
pub fn session_token() -> String {
    random_string(SECRET, 224)
}

/// An opaque bearer token of `len` letters and digits (agent registration).
pub fn token(len: usize) -> String {
    random_string(ALNUM, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(s: &str, alphabet: &[u8]) -> bool {
        s.bytes().all(|b| alphabet.contains(&b))
    }

    #[test]
    fn shapes() {
        let key = access_key_id("AKIA");
        assert_eq!(key.len(), 20);
        assert!(key.starts_with("AKIA") && only(&key[4..], BASE32), "{key}");
        assert!(access_key_id("ASIA").starts_with("ASIA"));
        let id = unique_id("AROA");
        assert_eq!(id.len(), 21);
        assert!(only(&id, UPPER_ALNUM));
        let secret = secret_access_key();
        assert_eq!(secret.len(), 40);
        assert!(only(&secret, SECRET));
        assert_eq!(session_token().len(), 224);
        let hex = random_hex(16);
        assert_eq!(hex.len(), 32);
        assert!(only(&hex, LOWER_HEX));
        let t = token(48);
        assert_eq!(t.len(), 48);
        assert!(only(&t, ALNUM));
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
        assert_ne!(secret_access_key(), secret_access_key());
    }
}
