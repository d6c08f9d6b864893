//! Parameter data types (PutParameter's `DataType`): what Parameter Store
//! checks a value against.
//!
//! `text` checks nothing. `aws:ec2:image` takes an AMI ID (`ami-` and 8 or
//! 17 hexadecimal digits) of a `String` parameter; AWS also checks, after
//! answering, that the image exists in the account; Berth has no machine
//! images, so it checks the form only, and does so before answering.
//! `aws:ssm:integration` is an Automation webhook integration: a
//! `SecureString` in the reserved `/d9d01087-4a3f-49e0-b0b4-d568d7826553/ssm/
//! integrations/webhook/` namespace whose value is a JSON object. The other
//! types are checked item by item for a `StringList`. A value is never
//! echoed in an error (it may be a SecureString's).

use berth_model::AwsError;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::common::validation;

pub const TEXT: &str = "text";
pub const EC2_IMAGE: &str = "aws:ec2:image";
pub const SSM_INTEGRATION: &str = "aws:ssm:integration";
/// The namespace Automation reserves for integrations.
pub const INTEGRATION_NAMESPACE: &str =
    "/d9d01087-4a3f-49e0-b0b4-d568d7826553/ssm/integrations/webhook/";

/// Every data type the model lists.
pub const DATA_TYPES: [&str; 16] = [
    TEXT,
    EC2_IMAGE,
    SSM_INTEGRATION,
    "aws:region",
    "aws:account:id",
    "boolean",
    "integer",
    "float",
    "binary",
    "hostname",
    "email",
    "ipv4-address",
    "ipv6-address",
    "url",
    "json",
    "jsonc",
];

/// Data types that need the advanced tier.
pub fn needs_advanced(data_type: &str) -> bool {
    matches!(data_type, "url" | "json" | "jsonc")
}

/// Whether the data type is one of the model's.
pub fn check_known(data_type: &str) -> Result<(), AwsError> {
    if DATA_TYPES.contains(&data_type) {
        return Ok(());
    }
    Err(validation(format!(
        "The following data type is not supported: {data_type} (Data type names are all \
         lowercase.)"
    )))
}

/// Whether a parameter may change from `from` to `to`: never to or from
/// `aws:ec2:image` or `aws:ssm:integration`.
pub fn check_change(name: &str, from: &str, to: &str) -> Result<(), AwsError> {
    let fixed = |t: &str| t == EC2_IMAGE || t == SSM_INTEGRATION;
    if from != to && (fixed(from) || fixed(to)) {
        return Err(validation(format!(
            "You can't change the data type of parameter {name} from {from} to {to}: a parameter \
             can't change to or from the aws:ec2:image and aws:ssm:integration data types. \
             Delete the parameter and create it again."
        )));
    }
    Ok(())
}

/// Checks a value of parameter `name`, of type `param_type`, against
/// `data_type`.
pub fn check_value(
    name: &str,
    param_type: &str,
    data_type: &str,
    value: &str,
) -> Result<(), AwsError> {
    let wrong_type = |allowed: &str| {
        validation(format!(
            "The data type {data_type} can't be used with a {param_type} parameter; use {allowed}."
        ))
    };
    match data_type {
        TEXT => return Ok(()),
        EC2_IMAGE if param_type != super::STRING => {
            return Err(wrong_type("a String parameter"));
        }
        EC2_IMAGE => {}
        SSM_INTEGRATION => {
            if param_type != super::SECURE_STRING {
                return Err(wrong_type("a SecureString parameter"));
            }
            if !name.starts_with(INTEGRATION_NAMESPACE) || name.len() == INTEGRATION_NAMESPACE.len()
            {
                return Err(validation(format!(
                    "A parameter of data type aws:ssm:integration must be named \
                     {INTEGRATION_NAMESPACE}<integration name>."
                )));
            }
        }
        "json" | "jsonc" | "binary" if param_type == super::STRING_LIST => {
            return Err(wrong_type("a String or SecureString parameter"));
        }
        _ => {}
    }
    let items: Vec<&str> = if param_type == super::STRING_LIST {
        value.split(',').collect()
    } else {
        vec![value]
    };
    for item in items {
        if let Err(why) = item_matches(data_type, item) {
            return Err(validation(format!(
                "The value of parameter {name} isn't valid for the data type {data_type}: {why}."
            )));
        }
    }
    Ok(())
}

fn item_matches(data_type: &str, v: &str) -> Result<(), &'static str> {
    let ok = |b: bool, why: &'static str| if b { Ok(()) } else { Err(why) };
    match data_type {
        EC2_IMAGE => ok(
            v.strip_prefix("ami-").is_some_and(|hex| {
                (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
            }),
            "it must be an AMI ID such as ami-0abcdef1234567890",
        ),
        SSM_INTEGRATION => {
            let object = serde_json::from_str::<serde_json::Value>(v)
                .ok()
                .and_then(|v| v.as_object().cloned());
            let Some(object) = object else {
                return Err("it must be a JSON object with the integration's fields");
            };
            if object
                .keys()
                .any(|k| !["description", "headers", "payload", "url"].contains(&k.as_str()))
            {
                return Err("its fields are description, headers, payload and url");
            }
            ok(
                object.get("url").is_some_and(|u| u.is_string()),
                "it must give the webhook's url",
            )
        }
        "aws:region" => ok(is_region(v), "it must be a Region code such as us-east-1"),
        "aws:account:id" => ok(
            v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()),
            "it must be a 12-digit account ID",
        ),
        "boolean" => ok(
            v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
            "it must be true or false",
        ),
        "integer" => ok(v.parse::<i64>().is_ok(), "it must be a whole number"),
        "float" => ok(
            v.parse::<f64>().is_ok_and(f64::is_finite)
                && v.bytes().any(|b| b.is_ascii_digit())
                && !v.to_ascii_lowercase().contains("inf"),
            "it must be a decimal number",
        ),
        "binary" => {
            use base64::Engine;
            ok(
                !v.is_empty() && base64::engine::general_purpose::STANDARD.decode(v).is_ok(),
                "it must be base64",
            )
        }
        "hostname" => ok(
            is_hostname(v),
            "it must be a host name such as db.example.com",
        ),
        "email" => ok(
            v.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && !local.contains(char::is_whitespace)
                    && domain.contains('.')
                    && is_hostname(domain)
            }),
            "it must be an email address",
        ),
        "ipv4-address" => ok(v.parse::<Ipv4Addr>().is_ok(), "it must be an IPv4 address"),
        "ipv6-address" => ok(v.parse::<Ipv6Addr>().is_ok(), "it must be an IPv6 address"),
        "url" => ok(
            is_url(v),
            "it must be an absolute URL such as https://example.com/",
        ),
        "json" => ok(
            serde_json::from_str::<serde_json::Value>(v).is_ok(),
            "it must be JSON",
        ),
        "jsonc" => ok(
            strip_json_comments(v)
                .is_some_and(|s| serde_json::from_str::<serde_json::Value>(&s).is_ok()),
            "it must be JSON (comments allowed)",
        ),
        _ => Ok(()),
    }
}

/// `us-east-1`, `ap-southeast-2`, `us-gov-west-1` …
pub fn is_region(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

fn is_hostname(v: &str) -> bool {
    let v = v.strip_suffix('.').unwrap_or(v);
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_url(v: &str) -> bool {
    let Some((scheme, rest)) = v.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    scheme_ok && !host.is_empty() && !v.contains(char::is_whitespace)
}

/// JSON with `//` and `/* */` comments, as JSON (comments outside strings
/// removed); `None` for an unterminated comment.
fn strip_json_comments(v: &str) -> Option<String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                out.extend(chars.next());
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut closed = false;
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    last = c;
                }
                if !closed {
                    return None;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str, data_type: &str, v: &str) -> bool {
        check_value("/p", t, data_type, v).is_ok()
    }

    #[test]
    fn values_are_checked_against_their_data_type() {
        assert!(ok("String", "aws:ec2:image", "ami-0abcdef1234567890"));
        assert!(ok("String", "aws:ec2:image", "ami-12345678"));
        assert!(!ok("String", "aws:ec2:image", "ami-xyz"));
        assert!(!ok("String", "aws:ec2:image", "i-0abcdef1234567890"));
        assert!(!ok("StringList", "aws:ec2:image", "ami-12345678"));
        assert!(ok("String", "text", "anything at all"));
        assert!(ok("StringList", "integer", "1,-2,300"));
        assert!(!ok("StringList", "integer", "1,two"));
        assert!(ok("String", "boolean", "TRUE"));
        assert!(!ok("String", "boolean", "yes"));
        assert!(ok("String", "float", "-1.5e3"));
        assert!(!ok("String", "float", "NaN"));
        assert!(ok("String", "aws:region", "us-gov-west-1"));
        assert!(!ok("String", "aws:region", "us_east_1"));
        assert!(ok("String", "aws:account:id", "123456789012"));
        assert!(!ok("String", "aws:account:id", "12345"));
        assert!(ok("String", "hostname", "db-1.example.com"));
        assert!(!ok("String", "hostname", "-bad.example.com"));
        assert!(ok("String", "email", "ops@example.com"));
        assert!(!ok("String", "email", "ops@localhost"));
        assert!(ok("String", "ipv4-address", "10.0.0.1"));
        assert!(!ok("String", "ipv4-address", "10.0.0.256"));
        assert!(ok("String", "ipv6-address", "fe80::1"));
        assert!(ok("String", "url", "https://example.com/x?y=1"));
        assert!(!ok("String", "url", "example.com"));
        assert!(ok("SecureString", "json", r#"{"a": [1, 2]}"#));
        assert!(!ok("String", "json", "{a: 1}"));
        assert!(ok(
            "String",
            "jsonc",
            "{\n // a comment\n \"a\": \"//not a comment\" /* b */ }"
        ));
        assert!(!ok("String", "jsonc", "{ /* open "));
        assert!(!ok("StringList", "json", "1"));
        assert!(ok("String", "binary", "aGVsbG8="));
        assert!(!ok("String", "binary", "***"));
    }

    #[test]
    fn integrations_live_in_their_namespace() {
        let name = format!("{INTEGRATION_NAMESPACE}hook");
        let value = r#"{"description": "d", "url": "https://hooks.example.com/x"}"#;
        assert!(check_value(&name, "SecureString", SSM_INTEGRATION, value).is_ok());
        assert!(check_value(&name, "String", SSM_INTEGRATION, value).is_err());
        assert!(check_value("/other/hook", "SecureString", SSM_INTEGRATION, value).is_err());
        assert!(check_value(&name, "SecureString", SSM_INTEGRATION, r#"{"x": 1}"#).is_err());
        assert!(check_value(&name, "SecureString", SSM_INTEGRATION, "[]").is_err());
    }

    #[test]
    fn data_types_and_changes() {
        assert!(check_known("aws:ec2:image").is_ok());
        let e = check_known("Text").unwrap_err();
        assert_eq!(e.code, "ValidationException");
        assert!(e.message.contains("all lowercase"));
        assert!(check_change("/p", "text", "integer").is_ok());
        assert!(check_change("/p", "text", EC2_IMAGE).is_err());
        assert!(check_change("/p", SSM_INTEGRATION, "text").is_err());
        assert!(needs_advanced("json") && !needs_advanced("integer"));
    }
}
