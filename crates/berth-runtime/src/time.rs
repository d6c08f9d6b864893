//! Docker's timestamps: RFC 3339 with up to nanosecond precision, and Go's
//! zero time (`0001-01-01T00:00:00Z`) for "never". Parsed by hand because
//! this is the only date handling the crate needs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a Docker timestamp; `None` for the zero time, any instant before
/// the Unix epoch, or text that is not RFC 3339.
pub(crate) fn parse_docker_time(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let sep_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !sep_ok {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut rest = &text[19..];
    let mut nanos: u64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Digits beyond nanoseconds cannot be represented; drop them.
        for (i, b) in frac.bytes().take(digits).enumerate() {
            if i < 9 {
                nanos = nanos * 10 + u64::from(b - b'0');
            }
        }
        for _ in digits..9 {
            nanos *= 10;
        }
        rest = &frac[digits..];
    }

    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let sign = match ob[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };

    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    if secs < 0 {
        return None;
    }
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, u32::try_from(nanos).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> (u64, u32) {
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        (d.as_secs(), d.subsec_nanos())
    }

    #[test]
    fn zero_time_is_none() {
        assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_docker_time(""), None);
    }

    #[test]
    fn parses_nanoseconds_utc() {
        let t = parse_docker_time("2024-02-29T12:34:56.123456789Z").unwrap();
        assert_eq!(secs(t), (1_709_210_096, 123_456_789));
    }

    #[test]
    fn parses_short_fraction_and_offsets() {
        let t = parse_docker_time("1970-01-01T00:00:01.5Z").unwrap();
        assert_eq!(secs(t), (1, 500_000_000));
        let t = parse_docker_time("1970-01-01T02:00:00+02:00").unwrap();
        assert_eq!(secs(t), (0, 0));
        let t = parse_docker_time("2000-01-01T00:00:00-01:30").unwrap();
        assert_eq!(secs(t), (946_684_800 + 5400, 0));
        let t = parse_docker_time("2000-01-01T00:00:00.1234567891234Z").unwrap();
        assert_eq!(secs(t), (946_684_800, 123_456_789));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "2024-02-29 12:34:56",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56.Z",
            "2024-02-29T12:34:56+0200",
            "abcd-ef-ghTij:kl:mnZ",
            "2024-02-29T12:34:56ZZ",
        ] {
            assert_eq!(parse_docker_time(bad), None, "{bad}");
        }
    }
}
