//! CloudWatch Logs' documented limits and name rules, and the validation
//! messages AWS answers when a request breaks them. Pure functions: nothing
//! here touches state.

use berth_model::AwsError;

/// The most events one PutLogEvents call may carry.
pub const MAX_EVENTS_PER_PUT: usize = 10_000;
/// The most bytes one PutLogEvents call may carry: UTF-8 message bytes plus
/// [`EVENT_OVERHEAD_BYTES`] per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What AWS counts for each event on top of its message.
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// The largest single event, overhead included. AWS raised this from 256 KB
/// to 1 MB in 2025; the current API reference says "no larger than 1 MB".
pub const MAX_EVENT_BYTES: usize = 1_048_576;
/// Docker's awslogs driver splits a line longer than this many bytes into
/// several events (`maximumBytesPerEvent = 262144 - perEventBytes` in moby's
/// `daemon/logger/awslogs`); the agent ingest path does the same so what is
/// stored looks like what ECS + awslogs would have stored.
pub const AWSLOGS_DRIVER_MAX_MESSAGE_BYTES: usize = 262_144 - EVENT_OVERHEAD_BYTES;
/// A PutLogEvents batch may not span more than 24 hours.
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 60 * 60 * 1000;
/// Events older than this are rejected as too old.
pub const MAX_EVENT_AGE_MS: i64 = 14 * DAY_MS;
/// Events further than this in the future are rejected as too new.
pub const MAX_EVENT_FUTURE_MS: i64 = 2 * 60 * 60 * 1000;
/// GetLogEvents and FilterLogEvents return at most this many events…
pub const MAX_EVENTS_PER_READ: usize = 10_000;
/// …and at most this many bytes (message bytes plus overhead).
pub const MAX_READ_BYTES: usize = 1_048_576;
/// Describe* page size bounds.
pub const MAX_DESCRIBE_LIMIT: i32 = 50;
pub const MAX_NAME_LEN: usize = 512;

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The retention periods AWS accepts, in days.
pub const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The log group classes the model defines.
pub const LOG_GROUP_CLASSES: &[&str] = &["STANDARD", "INFREQUENT_ACCESS", "DELIVERY"];

/// An `InvalidParameterException`, the code CloudWatch Logs uses for every
/// malformed request.
pub fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidParameterException", message)
}

/// AWS's wording for a constraint violation on one member.
pub fn constraint(value: &str, member: &str, rule: &str) -> AwsError {
    invalid(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    ))
}

/// AWS's wording for a missing required member.
pub fn missing(member: &str) -> AwsError {
    invalid(format!(
        "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
    ))
}

/// Returns the value of a required member or the error AWS gives without it.
pub fn required<'a>(value: &'a Option<String>, member: &str) -> Result<&'a str, AwsError> {
    value.as_deref().ok_or_else(|| missing(member))
}

fn check_length(value: &str, member: &str, min: usize, max: usize) -> Result<(), AwsError> {
    let len = value.chars().count();
    if len < min {
        return Err(constraint(
            value,
            member,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if len > max {
        return Err(constraint(
            value,
            member,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

fn is_group_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#')
}

/// `logGroupName`: 1–512 characters of `[\.\-_/#A-Za-z0-9]`.
pub fn check_group_name(name: &str, member: &str) -> Result<(), AwsError> {
    check_length(name, member, 1, MAX_NAME_LEN)?;
    if !name.chars().all(is_group_name_char) {
        return Err(constraint(
            name,
            member,
            r"Member must satisfy regular expression pattern: [\.\-_/#A-Za-z0-9]+",
        ));
    }
    Ok(())
}

/// `logGroupNamePrefix` has the group-name alphabet; `logGroupNamePattern`
/// the same alphabet but may be empty.
pub fn check_group_name_fragment(value: &str, member: &str, min: usize) -> Result<(), AwsError> {
    check_length(value, member, min, MAX_NAME_LEN)?;
    if !value.chars().all(is_group_name_char) {
        return Err(constraint(
            value,
            member,
            r"Member must satisfy regular expression pattern: [\.\-_/#A-Za-z0-9]*",
        ));
    }
    Ok(())
}

/// `logStreamName`: 1–512 characters, no `:` and no `*`.
pub fn check_stream_name(name: &str, member: &str) -> Result<(), AwsError> {
    check_length(name, member, 1, MAX_NAME_LEN)?;
    if name.contains([':', '*']) {
        return Err(constraint(
            name,
            member,
            "Member must satisfy regular expression pattern: [^:*]*",
        ));
    }
    Ok(())
}

/// `logStreamNamePrefix`: same alphabet as stream names.
pub fn check_stream_prefix(prefix: &str) -> Result<(), AwsError> {
    check_stream_name(prefix, "logStreamNamePrefix")
}

pub fn check_retention(days: i32) -> Result<(), AwsError> {
    if RETENTION_DAYS.contains(&days) {
        return Ok(());
    }
    let allowed: Vec<String> = RETENTION_DAYS.iter().map(i32::to_string).collect();
    Err(constraint(
        &days.to_string(),
        "retentionInDays",
        &format!(
            "Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ),
    ))
}

pub fn check_log_group_class(class: &str) -> Result<(), AwsError> {
    if LOG_GROUP_CLASSES.contains(&class) {
        return Ok(());
    }
    Err(constraint(
        class,
        "logGroupClass",
        &format!(
            "Member must satisfy enum value set: [{}]",
            LOG_GROUP_CLASSES.join(", ")
        ),
    ))
}

/// `kmsKeyId`: at most 256 characters (the key itself is not checked: Berth
/// has no KMS, it only keeps the reference).
pub fn check_kms_key_id(key: &str) -> Result<(), AwsError> {
    check_length(key, "kmsKeyId", 0, 256)
}

/// A Describe* `limit`: 1–50, default 50.
pub fn describe_limit(limit: Option<i32>) -> Result<usize, AwsError> {
    page_limit(limit, MAX_DESCRIBE_LIMIT, MAX_DESCRIBE_LIMIT)
}

/// A read `limit`: 1–10,000, default 10,000.
pub fn read_limit(limit: Option<i32>) -> Result<usize, AwsError> {
    page_limit(
        limit,
        MAX_EVENTS_PER_READ as i32,
        MAX_EVENTS_PER_READ as i32,
    )
}

fn page_limit(limit: Option<i32>, max: i32, default: i32) -> Result<usize, AwsError> {
    let value = limit.unwrap_or(default);
    if value < 1 {
        return Err(constraint(
            &value.to_string(),
            "limit",
            "Member must have value greater than or equal to 1",
        ));
    }
    if value > max {
        return Err(constraint(
            &value.to_string(),
            "limit",
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    Ok(value as usize)
}

/// The bytes AWS counts for one event.
pub fn event_size(message: &str) -> usize {
    message.len() + EVENT_OVERHEAD_BYTES
}

/// One event of a PutLogEvents batch, already read from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutEvent {
    pub timestamp: i64,
    pub message: String,
}

/// Which events of an accepted batch AWS rejects by age, and which it stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchVerdict {
    /// Index of the last event rejected as older than 14 days (or older than
    /// the group's retention).
    pub too_old_end_index: Option<usize>,
    /// Index of the first event rejected as more than 2 hours in the future.
    pub too_new_start_index: Option<usize>,
}

impl BatchVerdict {
    /// The half-open range of indexes that are stored.
    pub fn accepted(&self, len: usize) -> std::ops::Range<usize> {
        let start = self.too_old_end_index.map_or(0, |i| i + 1);
        let end = self.too_new_start_index.unwrap_or(len);
        start.min(end)..end
    }
}

/// Checks a PutLogEvents batch as AWS does: the structural rules (count,
/// sizes, order, span) fail the whole call; the age rules only reject the
/// events concerned. `retention_days` is the group's retention, if any.
pub fn check_put_batch(
    events: &[PutEvent],
    now_ms: i64,
    retention_days: Option<i32>,
) -> Result<BatchVerdict, AwsError> {
    if events.is_empty() {
        return Err(constraint(
            "[]",
            "logEvents",
            "Member must have length greater than or equal to 1",
        ));
    }
    if events.len() > MAX_EVENTS_PER_PUT {
        return Err(invalid(format!(
            "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length less than or equal to {MAX_EVENTS_PER_PUT}"
        )));
    }
    let mut total = 0usize;
    for event in events {
        if event.timestamp < 0 {
            return Err(constraint(
                &event.timestamp.to_string(),
                "logEvents.member.timestamp",
                "Member must have value greater than or equal to 0",
            ));
        }
        if event.message.is_empty() {
            return Err(constraint(
                "",
                "logEvents.member.message",
                "Member must have length greater than or equal to 1",
            ));
        }
        let size = event_size(&event.message);
        if size > MAX_EVENT_BYTES {
            return Err(invalid(format!(
                "Log event too large: {size} bytes exceeds limit of {MAX_EVENT_BYTES}"
            )));
        }
        total += size;
    }
    if total > MAX_BATCH_BYTES {
        return Err(invalid(format!(
            "Upload too large: {total} bytes exceeds limit of {MAX_BATCH_BYTES}"
        )));
    }
    if events.windows(2).any(|w| w[1].timestamp < w[0].timestamp) {
        return Err(invalid(
            "Log events in a single PutLogEvents request must be in chronological order.",
        ));
    }
    let first = events[0].timestamp;
    let last = events[events.len() - 1].timestamp;
    if last - first > MAX_BATCH_SPAN_MS {
        return Err(invalid(
            "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
        ));
    }

    let mut oldest_allowed = now_ms - MAX_EVENT_AGE_MS;
    if let Some(days) = retention_days {
        oldest_allowed = oldest_allowed.max(now_ms - i64::from(days) * DAY_MS);
    }
    let newest_allowed = now_ms + MAX_EVENT_FUTURE_MS;
    // Events are sorted, so the too-old ones form a prefix and the too-new
    // ones a suffix: AWS reports one end index and one start index.
    let too_old = events
        .iter()
        .take_while(|e| e.timestamp < oldest_allowed)
        .count();
    let too_new = events
        .iter()
        .rev()
        .take_while(|e| e.timestamp > newest_allowed)
        .count();
    Ok(BatchVerdict {
        too_old_end_index: too_old.checked_sub(1),
        too_new_start_index: (too_new > 0).then(|| events.len() - too_new),
    })
}

/// Splits a message the way Docker's awslogs driver does: pieces of at most
/// `max_bytes` bytes, cut on UTF-8 character boundaries.
pub fn split_message(message: &str, max_bytes: usize) -> Vec<String> {
    if message.len() <= max_bytes {
        return vec![message.to_string()];
    }
    let mut pieces = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let mut cut = rest.len().min(max_bytes);
        while cut > 0 && !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // max_bytes is smaller than one character: take the character.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        pieces.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(timestamp: i64, message: &str) -> PutEvent {
        PutEvent {
            timestamp,
            message: message.to_string(),
        }
    }

    #[test]
    fn group_names() {
        assert!(check_group_name("/ecs/web-app_1.#x", "logGroupName").is_ok());
        assert!(check_group_name("", "logGroupName").is_err());
        assert!(check_group_name("a:b", "logGroupName").is_err());
        assert!(check_group_name("a b", "logGroupName").is_err());
        assert!(check_group_name(&"a".repeat(512), "logGroupName").is_ok());
        let e = check_group_name(&"a".repeat(513), "logGroupName").unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
    }

    #[test]
    fn stream_names() {
        assert!(check_stream_name("ecs/web/0123abc", "logStreamName").is_ok());
        assert!(check_stream_name("with space and [brackets]", "logStreamName").is_ok());
        assert!(check_stream_name("a:b", "logStreamName").is_err());
        assert!(check_stream_name("a*", "logStreamName").is_err());
        assert!(check_stream_name("", "logStreamName").is_err());
    }

    #[test]
    fn retention_values() {
        for days in RETENTION_DAYS {
            assert!(check_retention(*days).is_ok());
        }
        let e = check_retention(2).unwrap_err();
        assert!(
            e.message.contains("enum value set: [1, 3, 5"),
            "{}",
            e.message
        );
        assert!(check_retention(0).is_err());
        assert!(check_retention(3654).is_err());
    }

    #[test]
    fn limits_default_and_bounds() {
        assert_eq!(describe_limit(None).unwrap(), 50);
        assert!(describe_limit(Some(0)).is_err());
        assert!(describe_limit(Some(51)).is_err());
        assert_eq!(read_limit(None).unwrap(), 10_000);
        assert!(read_limit(Some(10_001)).is_err());
    }

    #[test]
    fn batch_structure_rules() {
        let now = 1_700_000_000_000;
        assert!(check_put_batch(&[], now, None).is_err());
        let many: Vec<PutEvent> = (0..10_001).map(|_| ev(now, "x")).collect();
        assert!(check_put_batch(&many, now, None).is_err());
        let e = check_put_batch(&[ev(now, "b"), ev(now - 1, "a")], now, None).unwrap_err();
        assert_eq!(
            e.message,
            "Log events in a single PutLogEvents request must be in chronological order."
        );
        let span = check_put_batch(
            &[ev(now - MAX_BATCH_SPAN_MS - 1, "a"), ev(now, "b")],
            now,
            None,
        )
        .unwrap_err();
        assert!(span.message.contains("24 hours"));
        // Exactly at the batch limit is fine; one byte more is not.
        let big = "x".repeat(MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES);
        assert!(check_put_batch(&[ev(now, &big)], now, None).is_ok());
        let too_big = "x".repeat(MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES + 1);
        let e = check_put_batch(&[ev(now, &too_big)], now, None).unwrap_err();
        assert!(
            e.message.starts_with("Log event too large"),
            "{}",
            e.message
        );
        let half = "x".repeat(MAX_BATCH_BYTES / 2);
        let e = check_put_batch(&[ev(now, &half), ev(now, &half)], now, None).unwrap_err();
        assert!(e.message.starts_with("Upload too large"), "{}", e.message);
    }

    #[test]
    fn batch_age_rules() {
        let now = 100 * DAY_MS;
        let events = [
            ev(now - 15 * DAY_MS, "old"),
            ev(now - 14 * DAY_MS - 1, "old"),
            ev(now, "ok"),
            ev(now + MAX_EVENT_FUTURE_MS + 1, "new"),
        ];
        // The 24 h span rule would fail this batch; check the age split on
        // a batch within the span instead.
        assert!(check_put_batch(&events, now, None).is_err());
        let events = [
            ev(now - 21 * 60 * 60 * 1000, "ok"),
            ev(now, "ok"),
            ev(now + MAX_EVENT_FUTURE_MS + 1, "new"),
        ];
        let verdict = check_put_batch(&events, now, None).unwrap();
        assert_eq!(verdict.too_old_end_index, None);
        assert_eq!(verdict.too_new_start_index, Some(2));
        assert_eq!(verdict.accepted(3), 0..2);
        // A 1-day retention makes a 23 h old event fine but a 25 h one too old.
        let events = [
            ev(now - 25 * 60 * 60 * 1000, "old"),
            ev(now - 23 * 60 * 60 * 1000, "ok"),
        ];
        let verdict = check_put_batch(&events, now, Some(1)).unwrap();
        assert_eq!(verdict.too_old_end_index, Some(0));
        assert_eq!(verdict.accepted(2), 1..2);
        // All too old.
        let events = [ev(now - 20 * DAY_MS, "a"), ev(now - 20 * DAY_MS, "b")];
        let verdict = check_put_batch(&events, now, None).unwrap();
        assert_eq!(verdict.accepted(2), 2..2);
    }

    #[test]
    fn split_like_awslogs() {
        assert_eq!(split_message("abc", 10), vec!["abc"]);
        assert_eq!(split_message("abcdef", 4), vec!["abcd", "ef"]);
        // "é" is two bytes: never cut inside it.
        assert_eq!(split_message("aéé", 2), vec!["a", "é", "é"]);
        let long = "y".repeat(AWSLOGS_DRIVER_MAX_MESSAGE_BYTES * 2 + 5);
        let pieces = split_message(&long, AWSLOGS_DRIVER_MAX_MESSAGE_BYTES);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[2].len(), 5);
    }
}
