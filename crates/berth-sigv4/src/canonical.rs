//! The canonical request, string to sign and signing key of SigV4.

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use crate::ALGORITHM;

type HmacSha256 = Hmac<Sha256>;

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Every byte but RFC 3986's unreserved ones (`A-Z a-z 0-9 - _ . ~`).
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// [`RESERVED`] but `/`, for paths.
const RESERVED_BUT_SLASH: &AsciiSet = &RESERVED.remove(b'/');

/// AWS's URI encoding: every byte but the unreserved ones as `%XX` (upper hex);
/// `/` is kept when `keep_slash`.
pub fn uri_encode(input: &str, keep_slash: bool) -> String {
    let set = if keep_slash {
        RESERVED_BUT_SLASH
    } else {
        RESERVED
    };
    utf8_percent_encode(input, set).to_string()
}

/// Removes `.` and `..` segments the way RFC 3986 §5.2.4 does, keeping a
/// trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// The canonical URI of a non-S3 service: the path as sent (already encoded
/// once), dot segments removed, encoded again.
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_string();
    }
    uri_encode(&remove_dot_segments(raw_path), true)
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The query's parameters, decoded, in the order they were sent.
pub fn query_pairs(raw_query: &str) -> Vec<(String, String)> {
    raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Encoded `key=value` pairs sorted by key then value; `X-Amz-Signature` is
/// left out when `skip_signature` (presigned requests).
pub fn canonical_query(raw_query: &str, skip_signature: bool) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(raw_query)
        .into_iter()
        .filter(|(k, _)| !(skip_signature && k == "X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    pairs.sort();
    let parts: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join("&")
}

/// Trims and collapses runs of spaces, as SigV4 asks for header values.
fn normalize_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `name:value\n` for each signed header (lowercase names, in the order of
/// `signed_headers`, which is sorted by the signer).
pub fn canonical_headers(headers: &[(&str, &str)], signed_headers: &[&str]) -> String {
    let mut out = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| normalize_value(v))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

/// The canonical request of SigV4 §Task 1.
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    canonical_query: &str,
    headers: &[(&str, &str)],
    signed_headers: &[&str],
    payload_hash: &str,
) -> String {
    format!(
        "{method}\n{}\n{canonical_query}\n{}\n{}\n{payload_hash}",
        canonical_uri(raw_path),
        canonical_headers(headers, signed_headers),
        signed_headers.join(";"),
    )
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_aws() {
        assert_eq!(uri_encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(uri_encode("a b/c", false), "a%20b%2Fc");
        assert_eq!(uri_encode("é", false), "%C3%A9");
        assert_eq!(
            uri_encode("!*'();:@&=+$,?#[]%", false),
            "%21%2A%27%28%29%3B%3A%40%26%3D%2B%24%2C%3F%23%5B%5D%25"
        );
    }

    proptest::proptest! {
        /// Byte for byte AWS's rule: unreserved bytes as they are, `/` kept
        /// in paths, every other byte `%XX` in upper-case hex.
        #[test]
        fn encoding_is_aws_rule(input in "\\PC{0,40}", keep_slash: bool) {
            let mut want = String::new();
            for b in input.bytes() {
                if b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'_' | b'.' | b'~')
                    || (keep_slash && b == b'/')
                {
                    want.push(char::from(b));
                } else {
                    want.push_str(&format!("%{b:02X}"));
                }
            }
            proptest::prop_assert_eq!(uri_encode(&input, keep_slash), want);
        }
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
    }

    #[test]
    fn sorts_query() {
        assert_eq!(canonical_query("b=2&a=1&a=0", false), "a=0&a=1&b=2");
        assert_eq!(
            canonical_query("X-Amz-Signature=abc&X-Amz-Credential=AK%2F2015", true),
            "X-Amz-Credential=AK%2F2015"
        );
        assert_eq!(canonical_query("flag", false), "flag=");
    }

    #[test]
    fn collapses_header_values() {
        let headers = [
            ("Host", "example.com"),
            ("X-Foo", "  a   b  "),
            ("x-foo", "c"),
        ];
        assert_eq!(
            canonical_headers(&headers, &["host", "x-foo"]),
            "host:example.com\nx-foo:a b,c\n"
        );
    }
}
