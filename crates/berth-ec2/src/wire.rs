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
/// refused as EC2 does.
pub fn filters(params: &Params, known: &[&str]) -> Result<Vec<Filter>, Ec2Error> {
    let mut out = Vec::new();
    for f in params.structs("Filter") {
        let name = f.required("Name", "Filter.Name")?.to_string();
        if !known.contains(&name.as_str()) {
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
