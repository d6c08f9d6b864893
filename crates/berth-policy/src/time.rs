//! Minimal UTC timestamp handling for the `Date*` condition operators.
//!
//! The crate has no clock: callers pass the current time in through
//! [`crate::Context::set_current_time`]. This module only converts between
//! epoch milliseconds and ISO 8601 text, using Howard Hinnant's
//! days-from-civil algorithm so no date crate is needed.

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
        parse_iso8601(text)
    }

    /// Renders as `YYYY-MM-DDThh:mm:ssZ` (with `.mmm` when not whole seconds),
    /// which is how AWS presents `aws:CurrentTime`.
    pub fn to_iso8601(self) -> String {
        let secs = self.millis.div_euclid(1000);
        let ms = self.millis.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (sod / 3600, (sod % 3600) / 60, sod % 60);
        if ms == 0 {
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
        } else {
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso8601())
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(s: &str, n: usize) -> Option<i64> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn parse_iso8601(text: &str) -> Option<Timestamp> {
    let (date, time) = match text.find(['T', 't']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let mut dp = date.split('-');
    let y = digits(dp.next()?, 4)?;
    let m = digits(dp.next()?, 2)?;
    let d = digits(dp.next()?, 2)?;
    if dp.next().is_some() || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let mut millis = days_from_civil(y, m, d) * 86_400_000;
    let Some(time) = time else {
        return Some(Timestamp { millis });
    };
    // Split off the zone designator.
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, zone) = time.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = zone[1..].replace(':', "");
        let (zh, zm) = match zone.len() {
            2 => (digits(&zone, 2)?, 0),
            4 => (digits(&zone[..2], 2)?, digits(&zone[2..], 2)?),
            _ => return None,
        };
        (c, sign * (zh * 3600 + zm * 60) * 1000)
    } else {
        (time, 0)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (clock, None),
    };
    let mut tp = hms.split(':');
    let hh = digits(tp.next()?, 2)?;
    let mm = digits(tp.next()?, 2)?;
    let ss = match tp.next() {
        Some(s) => digits(s, 2)?,
        None => 0,
    };
    if tp.next().is_some() || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let frac_ms = match frac {
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{:0<3}", &f[..f.len().min(3)]);
            padded.parse::<i64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    millis += (hh * 3600 + mm * 60 + ss) * 1000 + frac_ms - offset_ms;
    Some(Timestamp { millis })
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
