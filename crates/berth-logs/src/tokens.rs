//! Pagination tokens and event ids.
//!
//! GetLogEvents tokens have AWS's visible shape, `f/` or `b/` followed by 56
//! digits, because some clients check it. The digits are an event's key
//! (timestamp, stream id, sequence number), so a token names a position in
//! the stream and stays valid while events are appended. Other tokens are
//! opaque (base64) and name the last item a page showed, so pages stay stable
//! under concurrent inserts.

use base64::Engine;

use crate::limits::invalid;
use berth_model::AwsError;

const URL: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Where an event sits: ordered by timestamp, then by the store's global
/// sequence number (unique per event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub timestamp: i64,
    pub seq: i64,
}

impl EventKey {
    pub const MIN: EventKey = EventKey {
        timestamp: 0,
        seq: 0,
    };
}

/// The 56-digit number AWS shows as `eventId` and inside GetLogEvents
/// tokens: 19 digits of timestamp, 18 of stream id, 19 of sequence.
pub fn event_digits(key: EventKey, stream_id: i64) -> String {
    format!(
        "{:019}{:018}{:019}",
        key.timestamp.max(0),
        stream_id.clamp(0, 999_999_999_999_999_999),
        key.seq.max(0)
    )
}

/// The event id FilterLogEvents reports: stable for the event's lifetime.
pub fn event_id(key: EventKey, stream_id: i64) -> String {
    event_digits(key, stream_id)
}

/// Which way a GetLogEvents token pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

pub fn forward_token(key: EventKey, stream_id: i64) -> String {
    format!("f/{}", event_digits(key, stream_id))
}

pub fn backward_token(key: EventKey, stream_id: i64) -> String {
    format!("b/{}", event_digits(key, stream_id))
}

fn bad_token() -> AwsError {
    invalid("The specified nextToken is invalid.")
}

/// Reads a GetLogEvents token back into its direction and position.
pub fn parse_stream_token(token: &str) -> Result<(Direction, EventKey), AwsError> {
    let (direction, digits) = if let Some(d) = token.strip_prefix("f/") {
        (Direction::Forward, d)
    } else if let Some(d) = token.strip_prefix("b/") {
        (Direction::Backward, d)
    } else {
        return Err(bad_token());
    };
    if digits.len() != 56 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_token());
    }
    let timestamp = digits[..19].parse::<i64>().map_err(|_| bad_token())?;
    let seq = digits[37..].parse::<i64>().map_err(|_| bad_token())?;
    Ok((direction, EventKey { timestamp, seq }))
}

/// An opaque token carrying a string (the last name a Describe page showed).
pub fn encode_opaque(text: &str) -> String {
    URL.encode(text)
}

pub fn decode_opaque(token: &str) -> Result<String, AwsError> {
    URL.decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad_token)
}

/// FilterLogEvents' token: the key of the last event scanned.
pub fn encode_filter_token(key: EventKey) -> String {
    encode_opaque(&format!("{}:{}", key.timestamp, key.seq))
}

pub fn decode_filter_token(token: &str) -> Result<EventKey, AwsError> {
    let text = decode_opaque(token)?;
    let (ts, seq) = text.split_once(':').ok_or_else(bad_token)?;
    Ok(EventKey {
        timestamp: ts.parse().map_err(|_| bad_token())?,
        seq: seq.parse().map_err(|_| bad_token())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tokens_have_aws_shape_and_round_trip() {
        let key = EventKey {
            timestamp: 1_700_000_000_123,
            seq: 42,
        };
        let f = forward_token(key, 7);
        assert!(f.starts_with("f/"));
        assert_eq!(f.len(), 58);
        assert!(f[2..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(parse_stream_token(&f).unwrap(), (Direction::Forward, key));
        let b = backward_token(key, 7);
        assert_eq!(parse_stream_token(&b).unwrap(), (Direction::Backward, key));
        assert!(parse_stream_token("f/123").is_err());
        assert!(parse_stream_token("x/0").is_err());
        assert_eq!(event_id(key, 7).len(), 56);
    }

    #[test]
    fn opaque_tokens_round_trip() {
        assert_eq!(decode_opaque(&encode_opaque("/ecs/a")).unwrap(), "/ecs/a");
        assert!(decode_opaque("!!!").is_err());
        let key = EventKey {
            timestamp: 5,
            seq: 9,
        };
        assert_eq!(decode_filter_token(&encode_filter_token(key)).unwrap(), key);
        assert!(decode_filter_token(&encode_opaque("nope")).is_err());
    }
}
