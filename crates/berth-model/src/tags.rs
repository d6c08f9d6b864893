//! AWS tag rules shared by every taggable resource: at most 50 user tags, keys
//! 1–128 and values 0–256 characters of letters, digits, spaces and `_.:/=+-@`,
//! and the reserved `aws:` prefix.

/// A tag as every service's shape stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRef<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

pub const MAX_TAGS: usize = 50;
pub const MAX_KEY_LEN: usize = 128;
pub const MAX_VALUE_LEN: usize = 256;

fn allowed_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

/// Whether a key or value starts with the reserved `aws:` prefix (any case).
pub fn is_reserved(text: &str) -> bool {
    text.len() >= 4 && text[..4].eq_ignore_ascii_case("aws:")
}

/// Checks one tag key; returns the reason it is invalid.
pub fn check_key(key: &str) -> Result<(), String> {
    let len = key.chars().count();
    if len == 0 || len > MAX_KEY_LEN {
        return Err(format!(
            "Tag key '{key}' must be between 1 and {MAX_KEY_LEN} characters long."
        ));
    }
    if !key.chars().all(allowed_char) {
        return Err(format!(
            "Tag key '{key}' contains invalid characters. Allowed: letters, numbers, spaces and _.:/=+-@"
        ));
    }
    Ok(())
}

/// Checks one tag value; returns the reason it is invalid.
pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_VALUE_LEN {
        return Err(format!(
            "Tag value for key '{key}' must be at most {MAX_VALUE_LEN} characters long."
        ));
    }
    if !value.chars().all(allowed_char) {
        return Err(format!(
            "Tag value for key '{key}' contains invalid characters. Allowed: letters, numbers, spaces and _.:/=+-@"
        ));
    }
    Ok(())
}

/// Validates tags a user adds: format, the `aws:` prefix, duplicates within the
/// request, and the limit of 50 once merged with `existing` keys.
pub fn check_user_tags<'a>(
    new_tags: impl IntoIterator<Item = TagRef<'a>>,
    existing_keys: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let mut keys: std::collections::BTreeSet<&str> = existing_keys
        .into_iter()
        .filter(|k| !is_reserved(k))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for tag in new_tags {
        check_key(tag.key)?;
        check_value(tag.key, tag.value)?;
        if is_reserved(tag.key) {
            return Err(format!(
                "Tag key '{}' uses the reserved prefix 'aws:'; tags with this prefix cannot be added or changed by users.",
                tag.key
            ));
        }
        if !seen.insert(tag.key) {
            return Err(format!("Duplicate tag key '{}' in the request.", tag.key));
        }
        keys.insert(tag.key);
    }
    if keys.len() > MAX_TAGS {
        return Err(format!(
            "A resource can have at most {MAX_TAGS} tags; this request would leave it with {}.",
            keys.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(key: &'a str, value: &'a str) -> TagRef<'a> {
        TagRef { key, value }
    }

    #[test]
    fn accepts_normal_tags() {
        assert!(check_user_tags([t("env", "prod"), t("team name", "a.b/c@d")], []).is_ok());
    }

    #[test]
    fn rejects_reserved_prefix_any_case() {
        assert!(check_user_tags([t("AwS:x", "1")], []).is_err());
    }

    #[test]
    fn rejects_bad_lengths_and_chars() {
        assert!(check_user_tags([t("", "1")], []).is_err());
        assert!(check_user_tags([t(&"k".repeat(129), "1")], []).is_err());
        assert!(check_user_tags([t("k", &"v".repeat(257))], []).is_err());
        assert!(check_user_tags([t("k#", "1")], []).is_err());
    }

    #[test]
    fn counts_limit_with_existing() {
        let existing: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = existing.iter().map(String::as_str).collect();
        assert!(check_user_tags([t("k1", "updated")], refs.clone()).is_ok());
        assert!(check_user_tags([t("new", "x")], refs).is_err());
    }
}
