//! The clock and the date formats AWS uses, on the `time` crate.
//!
//! The `now_*` functions are the one place Berth reads the wall clock for a
//! timestamp (durations use `Instant`). Everything else here is pure: the
//! formatting and parsing functions take and give seconds (or milliseconds,
//! or nanoseconds) since the Unix epoch, in UTC. Instants outside the years
//! -9999..=9999 are clamped to that range when formatted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::time::error::{Parse, TryFromParsed};
use ::time::format_description::well_known::Iso8601;
use ::time::format_description::BorrowedFormatItem;
use ::time::macros::format_description;
use ::time::{Date, OffsetDateTime, PrimitiveDateTime};

// ---- the clock -----------------------------------------------------------------

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Whole seconds since the epoch: what SigV4, IAM and STS dates and token
/// expiries count in.
pub fn now_secs() -> i64 {
    i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX)
}

/// Milliseconds since the epoch: CloudWatch Logs' timestamps.
pub fn now_millis() -> i64 {
    i64::try_from(since_epoch().as_millis()).unwrap_or(i64::MAX)
}

/// Seconds since the epoch with a fraction: how AWS JSON 1.1 services send
/// timestamps (`createdAt`, `CreatedDate` …).
pub fn now_epoch() -> f64 {
    since_epoch().as_secs_f64()
}

// ---- formats -------------------------------------------------------------------

/// SigV4's `X-Amz-Date`: `20150830T123600Z`.
const AMZ_DATE: &[BorrowedFormatItem<'_>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// RFC 7231's IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const HTTP_DATE: &[BorrowedFormatItem<'_>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

const ISO_SECONDS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

const ISO_MILLIS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

const ISO_NANOS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// The instant `nanos` after the epoch, clamped to what the formats can show.
fn at_nanos(nanos: i128) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or_else(|_| {
        if nanos < 0 {
            PrimitiveDateTime::MIN.assume_utc()
        } else {
            PrimitiveDateTime::MAX.assume_utc()
        }
    })
}

fn at_secs(secs: i64) -> OffsetDateTime {
    at_nanos(i128::from(secs) * 1_000_000_000)
}

fn format(t: OffsetDateTime, description: &[BorrowedFormatItem<'_>]) -> String {
    // Formatting a UTC date-time with numeric and textual components into a
    // String cannot fail; the fallback is never taken.
    t.format(description).unwrap_or_default()
}

/// `20150830T123600Z` (SigV4's `X-Amz-Date`).
pub fn format_amz_date(secs: i64) -> String {
    format(at_secs(secs), AMZ_DATE)
}

/// Parses `20150830T123600Z`.
pub fn parse_amz_date(text: &str) -> Option<i64> {
    if text.len() != 16 || !text.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let t = PrimitiveDateTime::parse(text, AMZ_DATE).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (an HTTP `Date`).
pub fn format_http_date(secs: i64) -> String {
    format(at_secs(secs), HTTP_DATE)
}

/// Parses an RFC 7231 `Date` header: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let t = PrimitiveDateTime::parse(text, HTTP_DATE).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// `2026-11-30T12:00:00Z`: how AWS's XML services (IAM, STS) and the task
/// metadata endpoint present dates.
pub fn format_iso8601(secs: i64) -> String {
    format(at_secs(secs), ISO_SECONDS)
}

/// `2026-11-30T12:00:00Z`, or `2026-11-30T12:00:00.250Z` when `millis` is
/// not a whole second (how IAM presents `aws:CurrentTime`).
pub fn format_iso8601_millis(millis: i64) -> String {
    let t = at_nanos(i128::from(millis) * 1_000_000);
    if millis.rem_euclid(1000) == 0 {
        format(t, ISO_SECONDS)
    } else {
        format(t, ISO_MILLIS)
    }
}

/// `2026-11-30T12:00:00.123456789Z`: always nine fraction digits.
pub fn format_iso8601_nanos(nanos: i128) -> String {
    format(at_nanos(nanos), ISO_NANOS)
}

/// Parses ISO 8601 / RFC 3339 as IAM, ECS and Docker write it: a date
/// (`2024-01-02`, midnight UTC), or a date and time (`2024-01-02T03:04`,
/// `…T03:04:05`, with an optional fraction) with an optional zone (`Z`,
/// `±hh:mm`, `±hhmm`, `±hh`; UTC without one). `T` and `Z` may be lower
/// case. Invalid dates (`2020-02-30`) and times (`24:00:00`) are refused.
pub fn parse_iso8601(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim().to_ascii_uppercase();
    let insufficient = |e: &Parse| {
        matches!(
            e,
            Parse::TryFromParsed(TryFromParsed::InsufficientInformation)
        )
    };
    // With a zone; without one (UTC); a date alone. Each later form is tried
    // only when the text lacked what the earlier one needs.
    match OffsetDateTime::parse(&text, &Iso8601::DEFAULT) {
        Ok(t) => return Some(t),
        Err(e) if !insufficient(&e) => return None,
        Err(_) => {}
    }
    match PrimitiveDateTime::parse(&text, &Iso8601::DEFAULT) {
        Ok(t) => return Some(t.assume_utc()),
        Err(e) if !insufficient(&e) => return None,
        Err(_) => {}
    }
    Date::parse(&text, &Iso8601::DEFAULT)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

/// [`parse_iso8601`] in milliseconds since the epoch (a finer fraction is
/// floored).
pub fn parse_iso8601_millis(text: &str) -> Option<i64> {
    let nanos = parse_iso8601(text)?.unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1_000_000)).ok()
}

/// [`parse_iso8601`] in whole seconds since the epoch (floored).
pub fn parse_iso8601_secs(text: &str) -> Option<i64> {
    Some(parse_iso8601(text)?.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amz_and_http_dates() {
        assert_eq!(format_amz_date(0), "19700101T000000Z");
        assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
        assert_eq!(parse_amz_date("+0150830T123600Z"), None);
        assert_eq!(parse_amz_date("20150830T123600"), None);
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(1_440_938_160)
        );
        assert_eq!(
            format_http_date(1_440_938_160),
            "Sun, 30 Aug 2015 12:36:00 GMT"
        );
        assert_eq!(parse_http_date("Sun, 30 Aug 2015 12:36:00 UTC"), None);
        assert_eq!(parse_http_date("Sun, 30 Foo 2015 12:36:00 GMT"), None);
    }

    #[test]
    fn iso8601_forms() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2019-07-16T12:00:00Z", Some(1_563_278_400_000)),
            ("2019-07-16t12:00:00z", Some(1_563_278_400_000)),
            ("2019-07-16", Some(1_563_235_200_000)),
            ("2019-07-16T12:00", Some(1_563_278_400_000)),
            ("2019-07-16T12:00Z", Some(1_563_278_400_000)),
            ("2019-07-16T12:00:00", Some(1_563_278_400_000)),
            ("2019-07-16T14:00:00+02:00", Some(1_563_278_400_000)),
            ("2019-07-16T07:00:00-0500", Some(1_563_278_400_000)),
            ("2019-07-16T12:00:00.250Z", Some(1_563_278_400_250)),
            ("2019-07-16T12:00:00.2509Z", Some(1_563_278_400_250)),
            ("1969-12-31T23:59:59.250Z", Some(-750)),
            ("2020-02-30", None),
            ("2019-02-29", None),
            ("2018-06-18T24:00:00", None),
            ("2018-13-01", None),
            ("2019-07-16T12", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_iso8601_millis(text), *want, "{text}");
        }
        assert_eq!(
            parse_iso8601_secs("2018-06-18T22:28:28+02:00"),
            parse_iso8601_secs("2018-06-18T20:28:28Z")
        );
    }

    #[test]
    fn iso8601_rendering() {
        assert_eq!(format_iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_iso8601(1_795_003_200), "2026-11-18T12:00:00Z");
        assert_eq!(format_iso8601_millis(-1000), "1969-12-31T23:59:59Z");
        assert_eq!(
            format_iso8601_millis(946_684_800_123),
            "2000-01-01T00:00:00.123Z"
        );
        assert_eq!(
            format_iso8601_nanos(1_000_000_000_000_000_005),
            "2001-09-09T01:46:40.000000005Z"
        );
        // Far outside the years the formats hold: clamped, never a panic.
        assert_eq!(format_iso8601(i64::MAX), "9999-12-31T23:59:59Z");
        assert!(format_amz_date(i64::MIN).ends_with("T000000Z"));
    }

    #[test]
    fn the_clock_agrees_with_itself() {
        let (s, ms, f) = (now_secs(), now_millis(), now_epoch());
        assert!(s > 1_700_000_000);
        assert!((ms / 1000 - s).abs() <= 1);
        assert!((f - s as f64).abs() <= 1.0);
    }

    proptest! {
        #[test]
        fn amz_date_round_trips(epoch in -62_135_596_800i64..253_402_300_799) {
            prop_assert_eq!(parse_amz_date(&format_amz_date(epoch)), Some(epoch));
        }

        #[test]
        fn iso8601_round_trips(millis in -62_135_596_800_000i64..253_402_300_799_000) {
            prop_assert_eq!(parse_iso8601_millis(&format_iso8601_millis(millis)), Some(millis));
        }

        #[test]
        fn http_date_round_trips(epoch in 0i64..253_402_300_799) {
            prop_assert_eq!(parse_http_date(&format_http_date(epoch)), Some(epoch));
        }
    }
}
