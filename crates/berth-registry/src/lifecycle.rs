//! ECR lifecycle policies: parsing with ECR's validation, and the pure
//! function that decides which images a policy expires.
//!
//! The rules follow ECR's documented semantics: rules run in ascending
//! `rulePriority`; each selects the images its tag filter matches (newest
//! first); an image is expired by at most one rule, and an image that a
//! higher-priority rule's selection matched can never be expired by a
//! lower-priority rule, though lower rules still count it.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::meta::wildcard_match;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Count {
    /// Keep the newest N matching images.
    MoreThan(usize),
    /// Expire matching images pushed more than N days ago.
    SincePushedDays(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub priority: i64,
    pub tag_status: TagStatus,
    pub tag_prefixes: Vec<String>,
    pub tag_patterns: Vec<String>,
    pub count: Count,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Sorted by priority.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPolicy {
    rules: Option<Vec<RawRule>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    rule_priority: Option<i64>,
    #[allow(dead_code)]
    description: Option<String>,
    selection: Option<RawSelection>,
    action: Option<RawAction>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelection {
    tag_status: Option<String>,
    tag_prefix_list: Option<Vec<String>>,
    tag_pattern_list: Option<Vec<String>>,
    count_type: Option<String>,
    count_unit: Option<String>,
    count_number: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Parses a policy text; the error is the message ECR's
/// `InvalidParameterException` carries.
pub fn parse(text: &str) -> Result<Policy, String> {
    let raw: RawPolicy = serde_json::from_str(text)
        .map_err(|e| format!("Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle policy validation failure: {e}'"))?;
    let fail = |m: String| {
        format!("Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle policy validation failure: {m}'")
    };
    let raw_rules = raw
        .rules
        .filter(|r| !r.is_empty())
        .ok_or_else(|| fail("the policy needs at least one rule".into()))?;
    let mut rules = Vec::new();
    let mut priorities = HashSet::new();
    for r in raw_rules {
        let priority = r
            .rule_priority
            .ok_or_else(|| fail("rulePriority is required".into()))?;
        if priority < 1 {
            return Err(fail(format!(
                "rulePriority must be a positive integer, got {priority}"
            )));
        }
        if !priorities.insert(priority) {
            return Err(fail(format!(
                "rulePriority {priority} is used more than once"
            )));
        }
        match r.action.and_then(|a| a.kind) {
            Some(kind) if kind == "expire" => {}
            other => {
                return Err(fail(format!(
                    "rule {priority}: action type must be 'expire', got {other:?}"
                )))
            }
        }
        let s = r
            .selection
            .ok_or_else(|| fail(format!("rule {priority}: selection is required")))?;
        let tag_status = match s.tag_status.as_deref() {
            Some("tagged") => TagStatus::Tagged,
            Some("untagged") => TagStatus::Untagged,
            Some("any") => TagStatus::Any,
            other => {
                return Err(fail(format!(
                    "rule {priority}: tagStatus must be tagged, untagged or any, got {other:?}"
                )))
            }
        };
        let prefixes = s.tag_prefix_list.unwrap_or_default();
        let patterns = s.tag_pattern_list.unwrap_or_default();
        if tag_status == TagStatus::Tagged {
            if prefixes.is_empty() == patterns.is_empty() {
                return Err(fail(format!("rule {priority}: a tagged rule needs exactly one of tagPrefixList and tagPatternList")));
            }
        } else if !prefixes.is_empty() || !patterns.is_empty() {
            return Err(fail(format!(
                "rule {priority}: tagPrefixList and tagPatternList apply only to tagStatus tagged"
            )));
        }
        let number = s
            .count_number
            .ok_or_else(|| fail(format!("rule {priority}: countNumber is required")))?;
        if number < 1 {
            return Err(fail(format!(
                "rule {priority}: countNumber must be at least 1"
            )));
        }
        let count = match (s.count_type.as_deref(), s.count_unit.as_deref()) {
            (Some("imageCountMoreThan"), None) => Count::MoreThan(number as usize),
            (Some("imageCountMoreThan"), Some(_)) => {
                return Err(fail(format!("rule {priority}: countUnit is not allowed with imageCountMoreThan")))
            }
            (Some("sinceImagePushed"), Some("days")) => Count::SincePushedDays(number.min(u32::MAX as i64) as u32),
            (Some("sinceImagePushed"), _) => {
                return Err(fail(format!("rule {priority}: sinceImagePushed needs countUnit 'days'")))
            }
            (other, _) => {
                return Err(fail(format!("rule {priority}: countType must be imageCountMoreThan or sinceImagePushed, got {other:?}")))
            }
        };
        rules.push(Rule {
            priority,
            tag_status,
            tag_prefixes: prefixes,
            tag_patterns: patterns,
            count,
        });
    }
    rules.sort_by_key(|r| r.priority);
    if rules
        .iter()
        .filter(|r| r.tag_status == TagStatus::Untagged)
        .count()
        > 1
    {
        return Err(fail("only one rule may select untagged images".into()));
    }
    if let Some(pos) = rules.iter().position(|r| r.tag_status == TagStatus::Any) {
        if pos != rules.len() - 1 {
            return Err(fail(
                "a rule with tagStatus any must have the highest rulePriority".into(),
            ));
        }
    }
    Ok(Policy { rules })
}

/// One image as a policy sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub digest: String,
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub pushed_at: f64,
}

impl Rule {
    fn selects(&self, image: &Image) -> bool {
        match self.tag_status {
            TagStatus::Any => true,
            TagStatus::Untagged => image.tags.is_empty(),
            // Every prefix (or pattern) must match one of the image's tags.
            TagStatus::Tagged => {
                !image.tags.is_empty()
                    && self
                        .tag_prefixes
                        .iter()
                        .all(|p| image.tags.iter().any(|t| t.starts_with(p.as_str())))
                    && self
                        .tag_patterns
                        .iter()
                        .all(|p| image.tags.iter().any(|t| wildcard_match(p, t)))
            }
        }
    }
}

/// The images `policy` expires at `now`, each with the priority of the rule
/// that expires it, oldest first.
pub fn evaluate(policy: &Policy, images: &[Image], now: f64) -> Vec<(String, i64)> {
    let mut by_age: Vec<&Image> = images.iter().collect();
    // Newest first; the digest breaks ties so the result is deterministic.
    by_age.sort_by(|a, b| {
        b.pushed_at
            .total_cmp(&a.pushed_at)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    let mut seen_by_higher: HashSet<&str> = HashSet::new();
    let mut expired: BTreeMap<&str, (f64, i64)> = BTreeMap::new();
    for rule in &policy.rules {
        let matched: Vec<&Image> = by_age.iter().copied().filter(|i| rule.selects(i)).collect();
        let candidates: Vec<&Image> = match rule.count {
            Count::MoreThan(keep) => matched.iter().skip(keep).copied().collect(),
            Count::SincePushedDays(days) => {
                let cutoff = now - f64::from(days) * 86_400.0;
                matched
                    .iter()
                    .copied()
                    .filter(|i| i.pushed_at < cutoff)
                    .collect()
            }
        };
        for image in candidates {
            if !seen_by_higher.contains(image.digest.as_str()) {
                expired
                    .entry(image.digest.as_str())
                    .or_insert((image.pushed_at, rule.priority));
            }
        }
        seen_by_higher.extend(matched.iter().map(|i| i.digest.as_str()));
    }
    let mut out: Vec<(f64, String, i64)> = expired
        .into_iter()
        .map(|(d, (at, p))| (at, d.to_string(), p))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    out.into_iter().map(|(_, d, p)| (d, p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(digest: &str, tags: &[&str], pushed_at: f64) -> Image {
        Image {
            digest: digest.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at,
        }
    }

    fn digests(v: Vec<(String, i64)>) -> Vec<String> {
        v.into_iter().map(|(d, _)| d).collect()
    }

    #[test]
    fn keeps_the_newest_n() {
        let p = parse(r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}"#).unwrap();
        let images = [
            img("a", &["1"], 1.0),
            img("b", &[], 2.0),
            img("c", &["3"], 3.0),
            img("d", &["4"], 4.0),
        ];
        assert_eq!(digests(evaluate(&p, &images, 10.0)), vec!["a", "b"]);
    }

    #[test]
    fn since_pushed_and_untagged() {
        let p = parse(r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}"#).unwrap();
        let day = 86_400.0;
        let images = [
            img("old-untagged", &[], 0.0),
            img("old-tagged", &["v"], 0.0),
            img("new", &[], 5.0 * day),
        ];
        assert_eq!(
            digests(evaluate(&p, &images, 5.5 * day)),
            vec!["old-untagged"]
        );
    }

    /// The example from ECR's documentation ("Filtering on multiple rules").
    #[test]
    fn higher_priority_matches_are_protected() {
        let p = parse(r#"{"rules":[
            {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
            {"rulePriority":2,"selection":{"tagStatus":"tagged","tagPrefixList":["beta"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#).unwrap();
        let images = [
            img("A", &["beta-1", "prod-1"], 1.0),
            img("B", &["beta-2", "prod-2"], 2.0),
            img("C", &["beta-3"], 3.0),
        ];
        assert_eq!(evaluate(&p, &images, 10.0), vec![("A".to_string(), 1)]);
    }

    #[test]
    fn prefixes_must_all_match_and_patterns_work() {
        let p = parse(r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod","beta"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#).unwrap();
        let images = [
            img("a", &["prod-1", "beta-1"], 1.0),
            img("b", &["prod-2"], 2.0),
            img("c", &["prod-3", "beta-3"], 3.0),
        ];
        assert_eq!(digests(evaluate(&p, &images, 10.0)), vec!["a"]);
        let p = parse(r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["v*-rc"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#).unwrap();
        let images = [
            img("a", &["v1-rc"], 1.0),
            img("b", &["v2"], 2.0),
            img("c", &["v3-rc"], 3.0),
        ];
        assert_eq!(digests(evaluate(&p, &images, 10.0)), vec!["a"]);
    }

    #[test]
    fn validation() {
        let rule = |sel: &str| {
            format!(
                r#"{{"rules":[{{"rulePriority":1,"selection":{sel},"action":{{"type":"expire"}}}}]}}"#
            )
        };
        assert!(parse(&rule(
            r#"{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1}"#
        ))
        .is_err());
        assert!(parse(&rule(
            r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":0}"#
        ))
        .is_err());
        assert!(parse(&rule(
            r#"{"tagStatus":"any","countType":"sinceImagePushed","countNumber":3}"#
        ))
        .is_err());
        assert!(parse(&rule(r#"{"tagStatus":"untagged","tagPrefixList":["x"],"countType":"imageCountMoreThan","countNumber":1}"#)).is_err());
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"rules":[]}"#).is_err());
        let any_first = r#"{"rules":[
            {"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
            {"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        assert!(parse(any_first).is_err());
    }
}
