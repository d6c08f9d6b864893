//! EC2 request parameters (`Name.N`, `Filter.N.Value.M`), filters and the
//! XML of results.

use std::collections::BTreeMap;

use crate::model::Ec2Error;

/// The form fields of an EC2 request (or of one member of a list).
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required member; `wire` is its name in EC2's message.
    pub fn required(&self, name: &str, wire: &'static str) -> Result<&str, Ec2Error> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or(Ec2Error::Missing(wire))
    }

    /// The members of `Prefix.N.*` grouped by N, in index order.
    pub fn structs(&self, prefix: &str) -> Vec<Params> {
        let mut groups: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
        for (name, value) in &self.0 {
            let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let (index, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            groups
                .entry(index)
                .or_default()
                .push((tail.to_string(), value.clone()));
        }
        groups.into_values().map(Params).collect()
    }

    /// The values of `Prefix.N`, in index order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.structs(prefix)
            .into_iter()
            .filter_map(|p| p.get("").map(str::to_string))
            .collect()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, Ec2Error> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(Ec2Error::InvalidValue(format!(
                "Value ({v}) for parameter {name} is invalid. Expected a boolean."
            ))),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i32>, Ec2Error> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Ec2Error::InvalidValue(format!(
                    "Value ({v}) for parameter {name} is invalid. Expected an integer."
                ))
            }),
        }
    }
}

/// One `Filter.N`: a name and the values any of which may match.
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// Reads `Filter.N.Name`/`Filter.N.Value.M`; names outside `known` are
/// refused as EC2 does (`tag:<key>` is known when `known` has `tag:`).
pub fn filters(params: &Params, known: &[&str]) -> Result<Vec<Filter>, Ec2Error> {
    let mut out = Vec::new();
    for f in params.structs("Filter") {
        let name = f.required("Name", "Filter.Name")?.to_string();
        let tag_filter = name.starts_with("tag:") && name.len() > 4 && known.contains(&"tag:");
        if !tag_filter && !known.contains(&name.as_str()) {
            return Err(Ec2Error::InvalidValue(format!(
                "The filter '{name}' is invalid"
            )));
        }
        out.push(Filter {
            values: f.list("Value"),
            name,
        });
    }
    Ok(out)
}

/// A resource's values for the `tag:<key>` and `tag-key` filters, `None`
/// for other names.
pub fn tag_field(tags: &[(&str, &str)], name: &str) -> Option<Vec<String>> {
    if name == "tag-key" {
        return Some(tags.iter().map(|(k, _)| k.to_string()).collect());
    }
    let key = name.strip_prefix("tag:")?;
    Some(
        tags.iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .collect(),
    )
}

/// `<tagSet>` with a resource's tags.
pub fn render_tags(x: &mut Xml, tags: &[(&str, &str)]) {
    x.open("tagSet");
    for (k, v) in tags {
        x.open("item").text("key", k).text("value", v).close("item");
    }
    x.close("tagSet");
}

/// The most tags one resource may have, as AWS.
pub const MAX_TAGS: usize = 50;

/// Checks one tag as EC2 does.
pub fn check_tag(key: &str, value: &str) -> Result<(), Ec2Error> {
    if key.is_empty() {
        return Err(Ec2Error::InvalidValue(
            "Tag keys must not be empty.".to_string(),
        ));
    }
    if key.chars().count() > 128 {
        return Err(Ec2Error::InvalidValue(format!(
            "Tag key exceeds the maximum length of 128 characters: {key}"
        )));
    }
    if value.chars().count() > 256 {
        return Err(Ec2Error::InvalidValue(format!(
            "Tag value exceeds the maximum length of 256 characters: {value}"
        )));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(Ec2Error::InvalidValue(
            "Tag keys starting with 'aws:' are reserved for internal use".to_string(),
        ));
    }
    Ok(())
}

/// The tags of a create's `TagSpecification.N` for `resource_type` (the
/// only type the action creates), checked; a spec naming another type is
/// refused as EC2 does.
pub fn tag_specs(p: &Params, resource_type: &str) -> Result<Vec<(String, String)>, Ec2Error> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for spec in p.structs("TagSpecification") {
        let kind = spec.required("ResourceType", "TagSpecification.ResourceType")?;
        if kind != resource_type {
            return Err(Ec2Error::InvalidValue(format!(
                "'{kind}' is not a valid taggable resource type for this operation."
            )));
        }
        for tag in spec.structs("Tag") {
            let key = tag.get("Key").unwrap_or("");
            let value = tag.get("Value").unwrap_or("");
            check_tag(key, value)?;
            tags.retain(|(k, _)| k != key);
            tags.push((key.to_string(), value.to_string()));
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(Ec2Error::Other(
            "TagLimitExceeded",
            "The maximum number of Tags for a resource has been reached.".to_string(),
        ));
    }
    Ok(tags)
}

/// `MaxResults` within `min..=max` (AWS's range for the action).
pub fn max_results(p: &Params, min: i32, max: i32) -> Result<Option<usize>, Ec2Error> {
    match p.int("MaxResults")? {
        None => Ok(None),
        Some(n) if (min..=max).contains(&n) => Ok(Some(n as usize)),
        Some(n) => Err(Ec2Error::InvalidValue(format!(
            "Value ( {n} ) for parameter maxResults is invalid. Expecting a value between {min} and {max}."
        ))),
    }
}

/// One page of `items` (sorted by key): those after `NextToken`, at most
/// `MaxResults` of them, and the token of the next page. Tokens name the
/// last key answered, so a page is stable under concurrent inserts.
pub fn page<T>(
    p: &Params,
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    limit: Option<usize>,
) -> Result<(Vec<T>, Option<String>), Ec2Error> {
    let after = match p.get("NextToken") {
        None | Some("") => None,
        Some(token) => Some(decode_token(token).ok_or_else(|| {
            Ec2Error::Other(
                "InvalidPaginationToken",
                format!("Invalid pagination token: {token}"),
            )
        })?),
    };
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|i| after.as_deref().is_none_or(|a| key(i).as_str() > a))
        .collect();
    let Some(limit) = limit else {
        return Ok((rest, None));
    };
    if rest.len() <= limit {
        return Ok((rest, None));
    }
    rest.truncate(limit);
    let token = rest.last().map(|i| encode_token(&key(i)));
    Ok((rest, token))
}

fn encode_token(key: &str) -> String {
    let mut out = String::from("b1");
    for b in key.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn decode_token(token: &str) -> Option<String> {
    let hex = token.strip_prefix("b1")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// `<nextToken>` when there is a next page.
pub fn render_token(x: &mut Xml, token: &Option<String>) {
    if let Some(t) = token {
        x.text("nextToken", t);
    }
}

/// A Describe answer: the page's resources, each an `item` of `set`
/// rendered by `item`, then the page's `nextToken`.
pub fn render_page<T>(
    set: &str,
    items: impl IntoIterator<Item = T>,
    token: &Option<String>,
    mut item: impl FnMut(&mut Xml, T),
) -> String {
    let mut x = Xml::default();
    x.open(set);
    for i in items {
        x.open("item");
        item(&mut x, i);
        x.close("item");
    }
    x.close(set);
    render_token(&mut x, token);
    x.0
}

/// Whether a resource passes every filter; `field` gives the resource's
/// values for a filter name.
pub fn matches(filters: &[Filter], field: impl Fn(&str) -> Vec<String>) -> bool {
    filters.iter().all(|f| {
        let have = field(&f.name);
        f.values
            .iter()
            .any(|pattern| have.iter().any(|v| glob(pattern, v)))
    })
}

/// EC2's filter wildcards: `*` any run, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Builds result XML.
#[derive(Default)]
pub struct Xml(pub String);

impl Xml {
    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.0.push_str(&format!(
            "<{name}>{}</{name}>",
            berth_model::xml::xml_escape(value)
        ));
        self
    }

    /// `text` when there is a value, nothing otherwise.
    pub fn opt_text(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.text(name, v),
            None => self,
        }
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.0.push_str(&format!("<{name}>"));
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.0.push_str(&format!("</{name}>"));
        self
    }

    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.text(name, if value { "true" } else { "false" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn lists_and_structs() {
        let params = p(&[
            ("VpcId.2", "b"),
            ("VpcId.1", "a"),
            ("Filter.1.Name", "vpc-id"),
            ("Filter.1.Value.1", "x"),
            ("Filter.1.Value.2", "y"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ]);
        assert_eq!(params.list("VpcId"), ["a", "b"]);
        let f = filters(&params, &["vpc-id"]).unwrap();
        assert_eq!(f[0].values, ["x", "y"]);
        assert!(filters(&params, &["cidr"]).is_err());
        let perms = params.structs("IpPermissions");
        assert_eq!(
            perms[0].structs("IpRanges")[0].get("CidrIp"),
            Some("0.0.0.0/0")
        );
    }

    #[test]
    fn wildcards() {
        assert!(glob("vpc-*", "vpc-123"));
        assert!(glob("us-east-1?", "us-east-1a"));
        assert!(glob("*", ""));
        assert!(!glob("vpc-1", "vpc-12"));
        assert!(glob("a*c*e", "abcde"));
    }
}
