//! The Query protocol's input (form fields named `A.member.1.B`) and the XML
//! of the answers.

use berth_model::xml::xml_escape;
use berth_model::AwsError;

/// The form fields of a request, or of one structure inside it, with the
/// structure's prefix removed.
#[derive(Clone, Debug, Default)]
pub struct Params {
    fields: Vec<(String, String)>,
}

impl Params {
    pub fn new(fields: &[(String, String)]) -> Params {
        Params {
            fields: fields.to_vec(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request names `name` at all (a value, an empty list or a
    /// structure).
    pub fn has(&self, name: &str) -> bool {
        let dotted = format!("{name}.");
        self.fields
            .iter()
            .any(|(k, _)| k == name || k.starts_with(&dotted))
    }

    pub fn required(&self, name: &str) -> Result<&str, AwsError> {
        self.get(name).ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_first(name)
            ))
        })
    }

    /// The structure at `name.` (empty when absent).
    pub fn sub(&self, name: &str) -> Params {
        let prefix = format!("{name}.");
        Params {
            fields: self
                .fields
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|r| (r.to_string(), v.clone())))
                .collect(),
        }
    }

    /// The members of list `name` (`name.member.N…`), in index order.
    fn members(&self, name: &str) -> Vec<(u32, Params)> {
        let prefix = format!("{name}.member.");
        let mut out: Vec<(u32, Params)> = Vec::new();
        for (k, v) in &self.fields {
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let (index, tail) = match rest.split_once('.') {
                Some((i, t)) => (i, Some(t)),
                None => (rest, None),
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            let entry = match out.iter_mut().find(|(i, _)| *i == index) {
                Some(e) => e,
                None => {
                    out.push((index, Params::default()));
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            entry
                .1
                .fields
                .push((tail.unwrap_or("").to_string(), v.clone()));
        }
        out.sort_by_key(|(i, _)| *i);
        out
    }

    /// A list of strings.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.members(name)
            .into_iter()
            .filter_map(|(_, p)| p.get("").map(str::to_string))
            .collect()
    }

    /// A list of structures.
    pub fn structs(&self, name: &str) -> Vec<Params> {
        self.members(name).into_iter().map(|(_, p)| p).collect()
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, AwsError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                validation(format!(
                    "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must be a number",
                    lower_first(name)
                ))
            }),
        }
    }

    /// An integer within `min..=max` as the model bounds it.
    pub fn bounded(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, AwsError> {
        let v = self.int(name)?;
        if let Some(n) = v {
            if n < min {
                return Err(validation(format!(
                    "1 validation error detected: Value '{n}' at '{}' failed to satisfy constraint: Member must have value greater than or equal to {min}",
                    lower_first(name)
                )));
            }
            if n > max {
                return Err(validation(format!(
                    "1 validation error detected: Value '{n}' at '{}' failed to satisfy constraint: Member must have value less than or equal to {max}",
                    lower_first(name)
                )));
            }
        }
        Ok(v)
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(validation(format!(
                "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must be a boolean",
                lower_first(name)
            ))),
        }
    }

    /// A value of an enumeration of the model.
    pub fn one_of(&self, name: &str, allowed: &[&str]) -> Result<Option<String>, AwsError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v.to_string())),
            Some(v) => Err(validation(format!(
                "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                lower_first(name),
                allowed.join(", ")
            ))),
        }
    }
}

fn lower_first(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub fn validation(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("ValidationError", message)
}

pub fn error(code: &'static str, message: impl Into<String>) -> AwsError {
    AwsError::bad_request(code, message)
}

/// Builds the inner XML of a result.
#[derive(Default)]
pub struct Xml {
    out: String,
}

impl Xml {
    pub fn new() -> Xml {
        Xml::default()
    }

    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.out.push_str(&xml_escape(value));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.text(name, v);
        }
        self
    }

    pub fn num(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        self.text(name, &value.to_string())
    }

    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.text(name, if value { "true" } else { "false" })
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// A list of strings as `<name><member>…</member></name>`.
    pub fn strings(&mut self, name: &str, values: &[String]) -> &mut Self {
        self.open(name);
        for v in values {
            self.text("member", v);
        }
        self.close(name)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(fields: &[(&str, &str)]) -> Params {
        Params::new(
            &fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn lists_and_structures_read_in_index_order() {
        let params = p(&[
            ("Names.member.2", "b"),
            ("Names.member.1", "a"),
            ("Tags.member.10.Key", "k10"),
            ("Tags.member.2.Key", "k2"),
            ("Tags.member.2.Value", "v2"),
        ]);
        assert_eq!(params.list("Names"), vec!["a", "b"]);
        let tags = params.structs("Tags");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].get("Key"), Some("k2"));
        assert_eq!(tags[0].get("Value"), Some("v2"));
        assert_eq!(tags[1].get("Key"), Some("k10"));
        assert!(params.has("Tags"));
        assert!(!params.has("Tag"));
        assert_eq!(p(&[("Names", "")]).list("Names"), Vec::<String>::new());
    }

    #[test]
    fn bounds_are_checked() {
        let params = p(&[("Port", "0")]);
        assert_eq!(
            params.bounded("Port", 1, 65535).unwrap_err().code,
            "ValidationError"
        );
        assert_eq!(
            p(&[("Port", "80")]).bounded("Port", 1, 65535).unwrap(),
            Some(80)
        );
    }
}
