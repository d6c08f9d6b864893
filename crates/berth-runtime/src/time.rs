//! Docker's timestamps: RFC 3339 with up to nanosecond precision, and Go's
//! zero time (`0001-01-01T00:00:00Z`) for "never".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a Docker timestamp; `None` for the zero time, any instant before
/// the Unix epoch, or text that is not RFC 3339.
pub(crate) fn parse_docker_time(text: &str) -> Option<SystemTime> {
    let nanos = berth_util::time::parse_iso8601(text)?.unix_timestamp_nanos();
    // Go's zero time (year 1) and anything before the epoch: none.
    let nanos = u64::try_from(nanos).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
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
            "abcd-ef-ghTij:kl:mnZ",
            "2024-02-29T12:34:56ZZ",
        ] {
            assert_eq!(parse_docker_time(bad), None, "{bad}");
        }
    }
}
