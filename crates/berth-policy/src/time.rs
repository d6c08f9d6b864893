//! UTC timestamps for the `Date*` condition operators.
//!
//! The crate has no clock: callers pass the current time in through
//! [`crate::Context::set_current_time`]. This module only converts between
//! epoch milliseconds and ISO 8601 text (with `berth-util`'s formats).

use std::fmt;

/// An instant in UTC with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    millis: i64,
}

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub fn from_epoch_millis(millis: i64) -> Self {
        Self { millis }
    }

    /// From whole seconds since the Unix epoch.
    pub fn from_epoch_seconds(seconds: i64) -> Self {
        Self {
            millis: seconds.saturating_mul(1000),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn epoch_millis(self) -> i64 {
        self.millis
    }

    /// Whole seconds since the Unix epoch (floored).
    pub fn epoch_seconds(self) -> i64 {
        self.millis.div_euclid(1000)
    }

    /// Parses the forms IAM accepts for date condition values: ISO 8601
    /// (`2024-01-02`, `2024-01-02T03:04:05Z`, with optional fraction and
    /// `±hh:mm` offset) or a number of seconds since the epoch.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let body = text.strip_prefix('-').unwrap_or(text);
        if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let secs: f64 = text.parse().ok()?;
            if !secs.is_finite() {
                return None;
            }
            return Some(Self {
                millis: (secs * 1000.0).round() as i64,
            });
        }
        berth_util::time::parse_iso8601_millis(text).map(Self::from_epoch_millis)
    }

    /// Renders as `YYYY-MM-DDThh:mm:ssZ` (with `.mmm` when not whole seconds),
    /// which is how AWS presents `aws:CurrentTime`.
    pub fn to_iso8601(self) -> String {
        berth_util::time::format_iso8601_millis(self.millis)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso8601())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iso_and_epoch_forms() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2019-07-16T12:00:00Z", Some(1_563_278_400_000)),
            ("2019-07-16", Some(1_563_235_200_000)),
            ("2019-07-16T12:00Z", Some(1_563_278_400_000)),
            ("2019-07-16T14:00:00+02:00", Some(1_563_278_400_000)),
            ("2019-07-16T07:00:00-0500", Some(1_563_278_400_000)),
            ("2019-07-16T12:00:00.250Z", Some(1_563_278_400_250)),
            ("1563278400", Some(1_563_278_400_000)),
            ("2020-02-30", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                Timestamp::parse(text).map(|t| t.epoch_millis()),
                *want,
                "{text}"
            );
        }
    }

    #[test]
    fn renders_round_trip() {
        for text in [
            "2024-02-29T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "2000-01-01T00:00:00.123Z",
        ] {
            let ts = Timestamp::parse(text).expect("parse");
            assert_eq!(ts.to_iso8601(), text);
        }
    }
}
