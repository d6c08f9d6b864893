//! Input checks: the model's constraints and Cloud Map's rules, worded as
//! InvalidInput errors. Nothing here reads state.

use std::collections::BTreeMap;

use berth_model::shapes::servicediscovery as sd;
use berth_model::AwsError;

use crate::model::{invalid, Scope, MAX_ATTRIBUTES_SIZE, MAX_CUSTOM_ATTRIBUTES, MAX_TAGS};

fn printable(text: &str) -> bool {
    text.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// `^(?!arn:)[!-~]{1,max}$` (HTTP namespace names, DiscoverInstances'
/// NamespaceName).
pub fn namespace_name(name: &str, max: usize, what: &str) -> Result<(), AwsError> {
    if name.is_empty() || name.len() > max || !printable(name) || name.starts_with("arn:") {
        return Err(invalid(format!(
            "{what} '{name}' is not valid: use 1 to {max} printable ASCII characters without spaces, not starting with 'arn:'"
        )));
    }
    Ok(())
}

/// A DNS label as Route 53 takes it in a zone name.
fn dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A private DNS namespace's name: the model's pattern and a domain name
/// Route 53 can host.
pub fn private_namespace_name(name: &str) -> Result<(), AwsError> {
    namespace_name(name, 253, "Namespace name")?;
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || !trimmed.split('.').all(dns_label) {
        return Err(invalid(format!(
            "Namespace name '{name}' is not a valid domain name"
        )));
    }
    Ok(())
}

/// The model's ServiceName pattern: dot-separated labels of letters,
/// digits, `-` and `_` (not starting or ending with `-`), 127 characters
/// at most; or `.`.
pub fn service_name(name: &str) -> Result<(), AwsError> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = name == "." || (name.len() <= 127 && name.split('.').all(label));
    if !ok {
        return Err(invalid(format!(
            "Service name '{name}' is not valid: use dot-separated labels of letters, digits, hyphens and underscores, 127 characters at most"
        )));
    }
    Ok(())
}

pub fn max_len(value: Option<&str>, max: usize, what: &str) -> Result<(), AwsError> {
    if let Some(v) = value {
        if v.chars().count() > max {
            return Err(invalid(format!(
                "{what} is too long: it must be {max} characters or fewer"
            )));
        }
    }
    Ok(())
}

pub fn required<'a>(value: &'a Option<String>, what: &str) -> Result<&'a str, AwsError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid(format!("{what} is required"))),
    }
}

/// Tags as (key, value) pairs, checked: keys 1-128, values 0-256, no
/// `aws:` keys, no key twice, at most [`MAX_TAGS`].
pub fn tags(tags: &Option<Vec<sd::Tag>>) -> Result<Vec<(String, String)>, AwsError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for tag in tags.iter().flatten() {
        let key = tag.key.clone().unwrap_or_default();
        let value = tag
            .value
            .clone()
            .ok_or_else(|| invalid(format!("Tag '{key}' has no value")))?;
        if key.is_empty() || key.chars().count() > 128 {
            return Err(invalid("A tag key must be 1 to 128 characters long"));
        }
        if value.chars().count() > 256 {
            return Err(invalid("A tag value must be 256 characters or fewer"));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(format!(
                "Tag key '{key}' is not valid: the aws: prefix is reserved for AWS use"
            )));
        }
        if let Some(existing) = out.iter_mut().find(|(k, _)| *k == key) {
            existing.1 = value;
        } else {
            out.push((key, value));
        }
    }
    Ok(out)
}

pub fn too_many_tags(arn: &str) -> AwsError {
    AwsError::bad_request(
        "TooManyTagsException",
        format!("The resource {arn} would have more than {MAX_TAGS} tags"),
    )
}

/// `MaxResults`: `default` when absent, else 1 to `max`.
pub fn page_size(max_results: Option<i32>, default: usize, max: usize) -> Result<usize, AwsError> {
    match max_results {
        None => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "MaxResults {n} is not valid: it must be between 1 and {max}"
        ))),
    }
}

/// The id a namespace is named by: `ns-…`, or its ARN in this account
/// and Region. `None`: it names no namespace here.
pub fn namespace_id(scope: &Scope, value: &str) -> Option<String> {
    resource_id(scope, value, "namespace", "ns-")
}

pub fn service_id(scope: &Scope, value: &str) -> Option<String> {
    resource_id(scope, value, "service", "srv-")
}

fn resource_id(scope: &Scope, value: &str, kind: &str, prefix: &str) -> Option<String> {
    let id = if value.starts_with("arn:") {
        let rest = value.strip_prefix(&scope.arn(&format!("{kind}/")))?;
        rest.to_string()
    } else {
        value.to_string()
    };
    let body = id.strip_prefix(prefix)?;
    if body.is_empty()
        || body.len() > 60
        || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    Some(id)
}

/// `^[0-9a-zA-Z_/:.@-]+$`, 64 characters at most.
pub fn instance_id(id: &str) -> Result<(), AwsError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/:.@-".contains(&b));
    if !ok {
        return Err(invalid(format!(
            "InstanceId '{id}' is not valid: use 1 to 64 letters, digits and _/:.@-"
        )));
    }
    Ok(())
}

/// The attribute keys Cloud Map gives a meaning.
pub const RESERVED_ATTRIBUTES: &[&str] = &[
    "AWS_ALIAS_DNS_NAME",
    "AWS_EC2_INSTANCE_ID",
    "AWS_INIT_HEALTH_STATUS",
    "AWS_INSTANCE_CNAME",
    "AWS_INSTANCE_IPV4",
    "AWS_INSTANCE_IPV6",
    "AWS_INSTANCE_PORT",
];

/// The form of RegisterInstance's Attributes (the service's needs are
/// checked against the service later).
pub fn attributes(attrs: &BTreeMap<String, String>) -> Result<(), AwsError> {
    let mut custom = 0;
    let mut size = 0;
    for (key, value) in attrs {
        let key_ok =
            !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| (b'!'..=b'~').contains(&b));
        if !key_ok {
            return Err(invalid(format!("Attribute key '{key}' is not valid")));
        }
        let value_ok = value.len() <= 1024
            && value
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
            && !value.starts_with([' ', '\t'])
            && !value.ends_with([' ', '\t']);
        if !value_ok {
            return Err(invalid(format!(
                "The value of attribute '{key}' is not valid"
            )));
        }
        if !RESERVED_ATTRIBUTES.contains(&key.as_str()) {
            custom += 1;
        }
        size += key.len() + value.len();
    }
    if custom > MAX_CUSTOM_ATTRIBUTES {
        return Err(invalid(format!(
            "An instance can have at most {MAX_CUSTOM_ATTRIBUTES} custom attributes"
        )));
    }
    if size > MAX_ATTRIBUTES_SIZE {
        return Err(invalid(format!(
            "The attributes of an instance must total {MAX_ATTRIBUTES_SIZE} characters or fewer"
        )));
    }
    if let Some(ip) = attrs.get("AWS_INSTANCE_IPV4") {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(invalid(format!(
                "AWS_INSTANCE_IPV4 '{ip}' is not a valid IPv4 address"
            )));
        }
    }
    if let Some(ip) = attrs.get("AWS_INSTANCE_IPV6") {
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(format!(
                "AWS_INSTANCE_IPV6 '{ip}' is not a valid IPv6 address"
            )));
        }
    }
    if let Some(port) = attrs.get("AWS_INSTANCE_PORT") {
        if !matches!(port.parse::<u32>(), Ok(1..=65535)) {
            return Err(invalid(format!(
                "AWS_INSTANCE_PORT '{port}' is not a valid port (1 to 65535)"
            )));
        }
    }
    if let Some(cname) = attrs.get("AWS_INSTANCE_CNAME") {
        let trimmed = cname.strip_suffix('.').unwrap_or(cname);
        if trimmed.is_empty() || trimmed.len() > 253 || !trimmed.split('.').all(dns_label) {
            return Err(invalid(format!(
                "AWS_INSTANCE_CNAME '{cname}' is not a valid domain name"
            )));
        }
    }
    if let Some(status) = attrs.get("AWS_INIT_HEALTH_STATUS") {
        if status != "HEALTHY" && status != "UNHEALTHY" {
            return Err(invalid(format!(
                "AWS_INIT_HEALTH_STATUS '{status}' is not valid: use HEALTHY or UNHEALTHY"
            )));
        }
    }
    Ok(())
}

/// DnsRecords: known types, TTL 0 to 2147483647, each type once, in one of
/// the combinations Cloud Map takes (A, AAAA, A+AAAA, SRV with or without
/// A/AAAA, CNAME alone).
pub fn dns_records(records: &Option<Vec<sd::DnsRecord>>) -> Result<Vec<(String, i64)>, AwsError> {
    let records = records
        .as_ref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| invalid("DnsConfig.DnsRecords must contain at least one record"))?;
    let mut out: Vec<(String, i64)> = Vec::new();
    for r in records {
        let t = r.r#type.clone().unwrap_or_default();
        if !sd::RECORD_TYPE_VALUES.contains(&t.as_str()) {
            return Err(invalid(format!(
                "DnsRecord Type '{t}' is not valid: use A, AAAA, SRV or CNAME"
            )));
        }
        let ttl = r
            .ttl
            .ok_or_else(|| invalid(format!("The {t} DnsRecord has no TTL")))?;
        if !(0..=2_147_483_647).contains(&ttl) {
            return Err(invalid(format!(
                "TTL {ttl} of the {t} DnsRecord is not valid: it must be between 0 and 2147483647"
            )));
        }
        if out.iter().any(|(seen, _)| *seen == t) {
            return Err(invalid(format!(
                "DnsConfig.DnsRecords names record type {t} more than once"
            )));
        }
        out.push((t, ttl));
    }
    if out.iter().any(|(t, _)| t == "CNAME") && out.len() > 1 {
        return Err(invalid(
            "A CNAME DnsRecord cannot be combined with other record types",
        ));
    }
    Ok(out)
}
