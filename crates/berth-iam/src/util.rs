//! Small helpers shared by IAM and STS: input checks with AWS's wording,
//! XML output, ids, time and store access.

use berth_model::AwsError;
use berth_store::{ReadView, StoreError};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;

/// Characters left as is when IAM URL-encodes a policy document.
const DOCUMENT_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The name pattern of users, roles, policies and sessions.
pub const NAME_PATTERN: &str = r"[\w+=,.@-]+";

/// A policy document as IAM returns it: URL-encoded JSON.
pub fn encode_document(document: &str) -> String {
    utf8_percent_encode(document, DOCUMENT_ENCODE).to_string()
}

/// A stable id for an AWS managed policy, derived from its name.
pub fn stable_id(prefix: &str, name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::from(prefix);
    let chars = berth_util::ids::UPPER_ALNUM;
    while out.len() < 21 {
        for b in name.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        out.push(chars[(hash % chars.len() as u64) as usize] as char);
    }
    out
}

// ---- errors ----------------------------------------------------------------

pub fn validation(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("ValidationError", message)
}

pub fn invalid_input(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidInput", message)
}

pub fn malformed(e: &berth_policy::PolicyError) -> AwsError {
    AwsError::bad_request("MalformedPolicyDocument", e.to_string())
}

pub fn no_such_entity(message: impl Into<String>) -> AwsError {
    AwsError::new(404, "NoSuchEntity", message)
}

pub fn already_exists(message: impl Into<String>) -> AwsError {
    AwsError::new(409, "EntityAlreadyExists", message)
}

pub fn delete_conflict(message: impl Into<String>) -> AwsError {
    AwsError::new(409, "DeleteConflict", message)
}

pub fn limit_exceeded(message: impl Into<String>) -> AwsError {
    AwsError::new(409, "LimitExceeded", message)
}

pub fn store_error(e: StoreError) -> AwsError {
    tracing::error!(error = %e, "IAM store access failed");
    AwsError::new(
        500,
        "ServiceFailure",
        "The store failed; the server log has the details.",
    )
}

pub fn corrupt(key: &str) -> AwsError {
    tracing::error!(key, "IAM record cannot be decoded");
    AwsError::new(
        500,
        "ServiceFailure",
        format!("The stored record {key} cannot be read."),
    )
}

fn constraint(value: &str, member: &str, constraint: &str) -> AwsError {
    validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    ))
}

// ---- request parameters -----------------------------------------------------

/// The form fields of a Query request.
pub struct Params<'a>(pub &'a [(String, String)]);

impl<'a> Params<'a> {
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A member the operation requires; `member` is its camel-case name for
    /// the message.
    pub fn required(&self, name: &str, member: &str) -> Result<&'a str, AwsError> {
        self.get(name).ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ))
        })
    }

    pub fn bool(&self, name: &str, member: &str) -> Result<Option<bool>, AwsError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(constraint(v, member, "Member must be a boolean")),
        }
    }

    /// An integer member within `min..=max`.
    pub fn int(
        &self,
        name: &str,
        member: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, AwsError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value: i64 = text
            .parse()
            .map_err(|_| constraint(text, member, "Member must be an integer"))?;
        if value < min {
            return Err(constraint(
                text,
                member,
                &format!("Member must have value greater than or equal to {min}"),
            ));
        }
        if value > max {
            return Err(constraint(
                text,
                member,
                &format!("Member must have value less than or equal to {max}"),
            ));
        }
        Ok(Some(value))
    }

    /// `MaxItems` (1 to 1000, default 100).
    pub fn max_items(&self) -> Result<usize, AwsError> {
        Ok(self.int("MaxItems", "maxItems", 1, 1000)?.unwrap_or(100) as usize)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// A user, role, policy or session name: `[\w+=,.@-]+`, `min..=max` long.
pub fn check_name(value: &str, member: &str, min: usize, max: usize) -> Result<(), AwsError> {
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
    if !value.chars().all(is_name_char) {
        let pattern = if min == 2 {
            r"[\w+=,.@-]*"
        } else {
            NAME_PATTERN
        };
        return Err(constraint(
            value,
            member,
            &format!("Member must satisfy regular expression pattern: {pattern}"),
        ));
    }
    Ok(())
}

/// A user or role path: `/` or `/…/` with printable ASCII between.
pub fn check_path(value: &str) -> Result<(), AwsError> {
    let ok = value.len() <= 512
        && value.starts_with('/')
        && value.ends_with('/')
        && value.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !ok {
        return Err(constraint(
            value,
            "path",
            r"Member must satisfy regular expression pattern: (\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
        ));
    }
    Ok(())
}

/// A managed policy path: `((/[A-Za-z0-9\.,\+@=_-]+)*)/`.
pub fn check_policy_path(value: &str) -> Result<(), AwsError> {
    let ok = value.len() <= 512
        && value.starts_with('/')
        && value.ends_with('/')
        && !value.contains("//")
        && value
            .chars()
            .all(|c| c == '/' || c.is_ascii_alphanumeric() || ".,+@=_-".contains(c));
    if !ok {
        return Err(constraint(
            value,
            "path",
            r"Member must satisfy regular expression pattern: ((/[A-Za-z0-9\.,\+@=_-]+)*)/",
        ));
    }
    Ok(())
}

/// A path prefix filter: `/` followed by printable ASCII.
pub fn check_path_prefix(value: &str) -> Result<(), AwsError> {
    let ok = value.len() <= 512
        && value.starts_with('/')
        && value.bytes().all(|b| (0x21..=0x7f).contains(&b));
    if !ok {
        return Err(constraint(
            value,
            "pathPrefix",
            r"Member must satisfy regular expression pattern: \u002F[\u0021-\u007F]*",
        ));
    }
    Ok(())
}

/// A policy document's size and character limits (the JSON is checked by
/// the policy parser).
pub fn check_document(value: &str, member: &str) -> Result<(), AwsError> {
    if value.is_empty() || value.len() > 131_072 {
        return Err(constraint(
            value,
            member,
            "Member must have length less than or equal to 131072",
        ));
    }
    Ok(())
}

/// A description: at most 1000 characters.
pub fn check_description(value: &str) -> Result<(), AwsError> {
    if value.chars().count() > 1000 {
        return Err(constraint(
            value,
            "description",
            "Member must have length less than or equal to 1000",
        ));
    }
    Ok(())
}

// ---- XML ----------------------------------------------------------------------

/// Builds the inner XML of a result.
#[derive(Default)]
pub struct Xml(pub String);

impl Xml {
    pub fn new() -> Self {
        Xml(String::new())
    }

    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self.0.push_str(&berth_model::xml::xml_escape(value));
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    pub fn opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.text(name, value);
        }
        self
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// `<IsTruncated>` and, when truncated, `<Marker>`.
    pub fn page(&mut self, marker: Option<&str>) -> &mut Self {
        match marker {
            Some(marker) => self.text("IsTruncated", "true").text("Marker", marker),
            None => self.text("IsTruncated", "false"),
        }
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// One page of `items` (sorted by their key) after `marker`; returns the page
/// and the marker of the next page when there is one.
pub fn paginate<T>(
    items: Vec<(String, T)>,
    marker: Option<&str>,
    max_items: usize,
) -> (Vec<T>, Option<String>) {
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(key, _)| marker.is_none_or(|m| key.as_str() > m))
        .collect();
    let next = if rest.len() > max_items {
        rest.truncate(max_items);
        rest.last().map(|(key, _)| key.clone())
    } else {
        None
    };
    (rest.into_iter().map(|(_, item)| item).collect(), next)
}

// ---- store --------------------------------------------------------------------

pub fn get_json<T: DeserializeOwned>(
    view: &dyn ReadView,
    key: &str,
) -> Result<Option<T>, AwsError> {
    match view.get(key) {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|_| corrupt(key)),
    }
}

pub fn list_json<T: DeserializeOwned>(
    view: &dyn ReadView,
    prefix: &str,
) -> Result<Vec<T>, AwsError> {
    view.range(prefix, None, usize::MAX)
        .into_iter()
        .map(|kv| serde_json::from_slice(&kv.value).map_err(|_| corrupt(&kv.key)))
        .collect()
}

pub fn to_bytes<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, AwsError> {
    serde_json::to_vec(value)
        .map_err(|e| AwsError::internal(format!("encoding a record failed: {e}")))
}
