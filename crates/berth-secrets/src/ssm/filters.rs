//! DescribeParameters' and GetParametersByPath's filters: `ParameterFilters`
//! (`Name`, `Type`, `KeyId`, `Path`, `Tier`, `DataType`, `tag:<key>`, and
//! `Label` for GetParametersByPath only) and DescribeParameters' legacy
//! `Filters` (`Name`, `Type`, `KeyId`).
//!
//! Values of one filter are alternatives; filters combine with AND. Input
//! that breaks the model's constraints is a ValidationException; a key,
//! option or value the operation does not take is InvalidFilterKey,
//! InvalidFilterOption or InvalidFilterValue, worded as Parameter Store
//! words them.

use berth_model::shapes::ssm;
use berth_model::AwsError;

use super::{ParamRecord, ParamVersion, SECURE_STRING, STRING, STRING_LIST};
use crate::common::validation;

const KEY_PATTERN: &str = "tag:.+|Name|Type|KeyId|Path|Label|Tier|DataType";
pub const TIERS: [&str; 3] = ["Standard", "Advanced", "Intelligent-Tiering"];

#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // `KeyId` is the filter AWS names so.
pub enum Key {
    Name,
    Type,
    KeyId,
    Path,
    Label,
    Tier,
    DataType,
    Tag(String),
}

impl Key {
    fn parse(key: &str) -> Option<Key> {
        Some(match key {
            "Name" => Key::Name,
            "Type" => Key::Type,
            "KeyId" => Key::KeyId,
            "Path" => Key::Path,
            "Label" => Key::Label,
            "Tier" => Key::Tier,
            "DataType" => Key::DataType,
            other => Key::Tag(
                other
                    .strip_prefix("tag:")
                    .filter(|k| !k.is_empty())?
                    .to_string(),
            ),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matching {
    Equals,
    BeginsWith,
    Contains,
    Recursive,
    OneLevel,
}

#[derive(Clone, Debug)]
pub struct Filter {
    pub key: Key,
    pub matching: Matching,
    pub values: Vec<String>,
}

/// Which operation the filters are for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    DescribeParameters,
    GetParametersByPath,
}

fn invalid_key(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidFilterKey", message)
}

fn invalid_option(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidFilterOption", message)
}

fn invalid_value(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidFilterValue", message)
}

/// Checks and reads `ParameterFilters`.
pub fn parse_parameter_filters(
    filters: &[ssm::ParameterStringFilter],
    operation: Operation,
) -> Result<Vec<Filter>, AwsError> {
    // The model's constraints first, all of them, as AWS's request
    // validation reports them.
    let mut errors = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let n = i + 1;
        let key = f.key.as_deref().unwrap_or_default();
        if key.is_empty() || key.chars().count() > 132 || Key::parse(key).is_none() {
            errors.push(format!(
                "Value '{key}' at 'parameterFilters.{n}.member.key' failed to satisfy \
                 constraint: Member must satisfy regular expression pattern: {KEY_PATTERN}"
            ));
        }
        if let Some(option) = &f.option {
            if option.is_empty() || option.chars().count() > 10 {
                errors.push(format!(
                    "Value '{option}' at 'parameterFilters.{n}.member.option' failed to satisfy \
                     constraint: Member must have length less than or equal to 10, Member must \
                     have length greater than or equal to 1"
                ));
            }
        }
        if let Some(values) = &f.values {
            if values.is_empty() || values.len() > 50 {
                errors.push(format!(
                    "Value '[{}]' at 'parameterFilters.{n}.member.values' failed to satisfy \
                     constraint: Member must have length less than or equal to 50, Member must \
                     have length greater than or equal to 1",
                    values.join(", ")
                ));
            } else if values
                .iter()
                .any(|v| v.is_empty() || v.chars().count() > 1024)
            {
                errors.push(format!(
                    "Value '[{}]' at 'parameterFilters.{n}.member.values' failed to satisfy \
                     constraint: Member must satisfy constraint: [Member must have length less \
                     than or equal to 1024, Member must have length greater than or equal to 1]",
                    values.join(", ")
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(validation(format!(
            "{} validation error{} detected: {}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("; ")
        )));
    }
    let mut out: Vec<Filter> = Vec::new();
    for f in filters {
        let name = f.key.clone().unwrap_or_default();
        let Some(key) = Key::parse(&name) else {
            continue;
        };
        let allowed = match operation {
            Operation::DescribeParameters => key != Key::Label,
            Operation::GetParametersByPath => {
                matches!(key, Key::Type | Key::KeyId | Key::Label)
            }
        };
        if !allowed {
            return Err(invalid_key(match operation {
                Operation::DescribeParameters => format!(
                    "The following filter key is not valid: {name}. Valid filter keys include: \
                     [Path, Name, Type, KeyId, Tier, DataType, tag]."
                ),
                Operation::GetParametersByPath => format!(
                    "The following filter key is not valid: {name}. Valid filter keys include: \
                     [Type, KeyId, Label]."
                ),
            }));
        }
        if out.iter().any(|o| o.key == key) {
            return Err(invalid_key(format!(
                "The following filter is duplicated in the request: {name}. A request can \
                 contain only one occurrence of a specific filter."
            )));
        }
        let values = f.values.clone().unwrap_or_default();
        if values.is_empty() && !matches!(key, Key::Tag(_)) {
            return Err(invalid_value(format!(
                "The following filter values are missing : null for filter key {name}."
            )));
        }
        let matching = match (&key, f.option.as_deref()) {
            (Key::Path, None | Some("OneLevel")) => Matching::OneLevel,
            (Key::Path, Some("Recursive")) => Matching::Recursive,
            (Key::Path, Some(other)) => {
                return Err(invalid_option(format!(
                    "The following filter option is not valid: {other}. Valid options include: \
                     [Recursive, OneLevel]."
                )))
            }
            (_, None | Some("Equals")) => Matching::Equals,
            (Key::Label, Some(other)) => {
                return Err(invalid_option(format!(
                    "The following filter option is not valid: {other}. Valid options include: \
                     [Equals]."
                )))
            }
            (_, Some("BeginsWith")) => Matching::BeginsWith,
            (Key::Name, Some("Contains")) if operation == Operation::DescribeParameters => {
                Matching::Contains
            }
            (Key::Name, Some(other)) if operation == Operation::DescribeParameters => {
                return Err(invalid_option(format!(
                    "The following filter option is not valid: {other}. Valid options include: \
                     [BeginsWith, Contains, Equals]."
                )))
            }
            (_, Some(other)) => {
                return Err(invalid_option(format!(
                    "The following filter option is not valid: {other}. Valid options include: \
                     [BeginsWith, Equals]."
                )))
            }
        };
        check_values(&key, &name, &values)?;
        out.push(Filter {
            key,
            matching,
            values,
        });
    }
    Ok(out)
}

fn check_values(key: &Key, name: &str, values: &[String]) -> Result<(), AwsError> {
    let enumerated: Option<&[&str]> = match key {
        Key::Type => Some(&[STRING, STRING_LIST, SECURE_STRING]),
        Key::Tier => Some(&TIERS),
        Key::DataType => Some(&super::data_types::DATA_TYPES),
        _ => None,
    };
    if let Some(allowed) = enumerated {
        if let Some(bad) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
            return Err(invalid_value(format!(
                "The following filter value is not valid: {bad}. Valid values include: [{}].",
                allowed.join(", ")
            )));
        }
    }
    if *key == Key::Path {
        for v in values {
            let first = v.trim_start_matches('/').to_ascii_lowercase();
            if first.starts_with("aws") || first.starts_with("ssm") {
                return Err(validation(
                    "Filters for common parameters can't be prefixed with \"aws\" or \"ssm\" \
                     (case-insensitive). When using global parameters, please specify within a \
                     global namespace.",
                ));
            }
            let chars_ok = v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
            if !v.starts_with('/') || v.contains("//") || !chars_ok {
                return Err(validation(format!(
                    "The parameter doesn't meet the parameter name requirements. The parameter \
                     name must begin with a forward slash \"/\". It can't be prefixed with \"aws\" \
                     or \"ssm\" (case-insensitive). It must use only letters, numbers, or the \
                     following symbols: . (period), - (hyphen), _ (underscore). Special \
                     characters are not allowed. All sub-paths, if specified, must use the \
                     forward slash symbol \"/\". Valid example: /get/parameters2-/by1./path0_. \
                     (filter {name})"
                )));
            }
        }
    }
    Ok(())
}

/// Checks and reads DescribeParameters' legacy `Filters`.
pub fn parse_legacy_filters(filters: &[ssm::ParametersFilter]) -> Result<Vec<Filter>, AwsError> {
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let n = i + 1;
        let name = f.key.clone().unwrap_or_default();
        let key = match name.as_str() {
            "Name" => Key::Name,
            "Type" => Key::Type,
            "KeyId" => Key::KeyId,
            _ => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{name}' at 'filters.{n}.member.key' \
                     failed to satisfy constraint: Member must satisfy enum value set: [Name, \
                     Type, KeyId]"
                )))
            }
        };
        let values = f.values.clone().unwrap_or_default();
        if values.is_empty() || values.len() > 50 {
            return Err(validation(format!(
                "1 validation error detected: Value '[{}]' at 'filters.{n}.member.values' failed \
                 to satisfy constraint: Member must have length less than or equal to 50, Member \
                 must have length greater than or equal to 1",
                values.join(", ")
            )));
        }
        if values
            .iter()
            .any(|v| v.is_empty() || v.chars().count() > 1024)
        {
            return Err(validation(format!(
                "1 validation error detected: Value '[{}]' at 'filters.{n}.member.values' failed \
                 to satisfy constraint: Member must satisfy constraint: [Member must have length \
                 less than or equal to 1024, Member must have length greater than or equal to 1]",
                values.join(", ")
            )));
        }
        check_values(&key, &name, &values)?;
        // The legacy Name filter finds names that begin with a value.
        let matching = if key == Key::Name {
            Matching::BeginsWith
        } else {
            Matching::Equals
        };
        out.push(Filter {
            key,
            matching,
            values,
        });
    }
    Ok(out)
}

/// The labels a `Label` filter asks for.
pub fn labels(filters: &[Filter]) -> Option<&[String]> {
    filters
        .iter()
        .find(|f| f.key == Key::Label)
        .map(|f| f.values.as_slice())
}

/// A one-level name with and without its leading `/` (the same parameter);
/// a hierarchical name alone.
fn name_forms(name: &str) -> Vec<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.contains('/') {
        vec![name.to_string()]
    } else {
        vec![bare.to_string(), format!("/{bare}")]
    }
}

/// The path a parameter sits in: `/a/b` for `/a/b/c`, `/` for a one-level
/// name.
fn parent(name: &str) -> &str {
    match name.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &name[..i],
    }
}

impl Filter {
    /// Whether `record`, shown at `version`, passes.
    pub fn matches(&self, record: &ParamRecord, version: &ParamVersion) -> bool {
        let text = |candidate: &str| {
            self.values.iter().any(|v| match self.matching {
                Matching::BeginsWith => candidate.starts_with(v.as_str()),
                Matching::Contains => candidate.contains(v.as_str()),
                _ => candidate == v,
            })
        };
        match &self.key {
            Key::Name => match self.matching {
                Matching::Equals => self.values.iter().any(|v| {
                    let wanted = name_forms(v.trim());
                    name_forms(&record.name).iter().any(|n| wanted.contains(n))
                }),
                _ => name_forms(&record.name).iter().any(|n| text(n)),
            },
            Key::Type => text(&version.r#type),
            Key::KeyId => version.key_id.as_deref().is_some_and(text),
            Key::Tier => text(&record.tier),
            Key::DataType => text(&record.data_type),
            Key::Label => version.labels.iter().any(|l| self.values.contains(l)),
            Key::Tag(tag) => match record.tags.iter().find(|(k, _)| k == tag) {
                None => false,
                Some(_) if self.values.is_empty() => true,
                Some((_, value)) => text(value),
            },
            Key::Path => {
                // A one-level name sits at the root, with or without its `/`.
                let hierarchical = if record.name.starts_with('/') {
                    record.name.clone()
                } else {
                    format!("/{}", record.name)
                };
                self.values.iter().any(|v| {
                    let path = if v == "/" {
                        "/"
                    } else {
                        v.trim_end_matches('/')
                    };
                    match self.matching {
                        Matching::Recursive => {
                            path == "/" || hierarchical.starts_with(&format!("{path}/"))
                        }
                        _ => parent(&hierarchical) == path,
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssm::StoredValue;

    fn record(name: &str, tags: &[(&str, &str)]) -> ParamRecord {
        ParamRecord {
            name: name.to_string(),
            description: None,
            tier: "Advanced".into(),
            data_type: "text".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            versions: vec![ParamVersion {
                version: 1,
                r#type: "SecureString".into(),
                key_id: Some("alias/aws/ssm".into()),
                value: StoredValue::Plain("v".into()),
                modified: 1.0,
                user: "u".into(),
                labels: vec!["prod".into()],
                allowed_pattern: None,
                policies: vec![],
            }],
            resource_policies: vec![],
        }
    }

    fn filter(key: &str, option: Option<&str>, values: &[&str]) -> ssm::ParameterStringFilter {
        ssm::ParameterStringFilter {
            key: Some(key.into()),
            option: option.map(str::to_string),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    fn passes(f: ssm::ParameterStringFilter, r: &ParamRecord) -> bool {
        let parsed = parse_parameter_filters(&[f], Operation::DescribeParameters).unwrap();
        parsed[0].matches(r, &r.versions[0])
    }

    #[test]
    fn filters_match_as_parameter_store_does() {
        let deep = record("/app/prod/db", &[("env", "production")]);
        let root = record("plain", &[]);
        assert!(passes(filter("Path", None, &["/app/prod"]), &deep));
        assert!(passes(filter("Path", None, &["/app/prod/"]), &deep));
        assert!(!passes(filter("Path", None, &["/app"]), &deep));
        assert!(passes(filter("Path", Some("Recursive"), &["/app"]), &deep));
        assert!(!passes(filter("Path", Some("Recursive"), &["/ap"]), &deep));
        assert!(passes(filter("Path", None, &["/"]), &root));
        assert!(!passes(filter("Path", None, &["/"]), &deep));
        assert!(passes(filter("Name", None, &["/plain"]), &root));
        assert!(passes(filter("Name", None, &["plain"]), &root));
        assert!(passes(
            filter("Name", Some("BeginsWith"), &["/app/"]),
            &deep
        ));
        assert!(passes(filter("Name", Some("Contains"), &["prod"]), &deep));
        assert!(!passes(filter("Name", Some("Contains"), &["test"]), &deep));
        assert!(passes(filter("Type", None, &["SecureString"]), &deep));
        assert!(passes(filter("KeyId", None, &["alias/aws/ssm"]), &deep));
        assert!(passes(filter("Tier", None, &["Advanced"]), &deep));
        assert!(passes(filter("DataType", None, &["text"]), &deep));
        assert!(passes(filter("tag:env", None, &["production"]), &deep));
        assert!(passes(
            filter("tag:env", Some("BeginsWith"), &["prod"]),
            &deep
        ));
        assert!(passes(filter("tag:env", None, &[]), &deep));
        assert!(!passes(filter("tag:team", None, &[]), &deep));
        let legacy = parse_legacy_filters(&[ssm::ParametersFilter {
            key: Some("Name".into()),
            values: Some(vec!["/app".into()]),
        }])
        .unwrap();
        assert!(legacy[0].matches(&deep, &deep.versions[0]));
    }

    #[test]
    fn bad_filters_answer_parameter_stores_errors() {
        let describe = |f: Vec<ssm::ParameterStringFilter>| {
            parse_parameter_filters(&f, Operation::DescribeParameters)
                .unwrap_err()
                .code
                .to_string()
        };
        let by_path = |f: Vec<ssm::ParameterStringFilter>| {
            parse_parameter_filters(&f, Operation::GetParametersByPath)
                .unwrap_err()
                .code
                .to_string()
        };
        assert_eq!(
            describe(vec![filter("Colour", None, &["x"])]),
            "ValidationException"
        );
        assert_eq!(
            describe(vec![filter("Label", None, &["x"])]),
            "InvalidFilterKey"
        );
        assert_eq!(
            by_path(vec![filter("Name", None, &["x"])]),
            "InvalidFilterKey"
        );
        assert_eq!(
            by_path(vec![filter("tag:a", None, &["x"])]),
            "InvalidFilterKey"
        );
        assert_eq!(
            describe(vec![
                filter("Name", None, &["a"]),
                filter("Name", None, &["b"])
            ]),
            "InvalidFilterKey"
        );
        assert_eq!(
            describe(vec![filter("Name", None, &[])]),
            "InvalidFilterValue"
        );
        assert_eq!(
            describe(vec![filter("Type", None, &["Number"])]),
            "InvalidFilterValue"
        );
        assert_eq!(
            describe(vec![filter("Tier", None, &["Gold"])]),
            "InvalidFilterValue"
        );
        assert_eq!(
            describe(vec![filter("Path", Some("Equals"), &["/a"])]),
            "InvalidFilterOption"
        );
        assert_eq!(
            describe(vec![filter("Type", Some("Contains"), &["String"])]),
            "InvalidFilterOption"
        );
        assert_eq!(
            by_path(vec![filter("Label", Some("BeginsWith"), &["x"])]),
            "InvalidFilterOption"
        );
        assert_eq!(
            describe(vec![filter("Path", None, &["a/b"])]),
            "ValidationException"
        );
        assert_eq!(
            describe(vec![filter("Path", None, &["/aws/x"])]),
            "ValidationException"
        );
        assert_eq!(
            describe(vec![filter("Name", Some("EqualsEqualsX"), &["a"])]),
            "ValidationException"
        );
        assert!(parse_legacy_filters(&[ssm::ParametersFilter {
            key: Some("Tier".into()),
            values: Some(vec!["Standard".into()]),
        }])
        .is_err());
    }
}
