//! Every example identity-based policy of AWS's IAM User Guide ("Example IAM
//! identity-based policies" and the pages it links, one per example) parses
//! as an identity policy: what IAM accepts, Berth must accept. Each entry of
//! `data/iam_user_guide_examples.json` names the page it was taken from.

use berth_policy::Policy;

const EXAMPLES: &str = include_str!("data/iam_user_guide_examples.json");

#[test]
fn every_user_guide_example_parses_as_an_identity_policy() {
    let examples: Vec<serde_json::Value> = serde_json::from_str(EXAMPLES).unwrap();
    assert!(examples.len() >= 30, "{} examples", examples.len());
    let mut failures = Vec::new();
    for example in &examples {
        let page = example["page"].as_str().unwrap();
        let text = example["policy"].as_str().unwrap();
        assert!(page.starts_with("https://docs.aws.amazon.com/IAM/latest/UserGuide/"));
        if let Err(e) = Policy::parse_identity(text) {
            failures.push(format!("{page}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
