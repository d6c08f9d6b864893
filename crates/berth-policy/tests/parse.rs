//! Parsing and validation: accepted shapes and IAM-style error messages.

use berth_policy::{
    ActionBlock, Effect, Policy, PolicyError, PrincipalBlock, ResourceBlock, Version,
};

#[derive(Clone, Copy)]
enum Kind {
    Any,
    Identity,
    Resource,
    Trust,
}

fn parse(kind: Kind, text: &str) -> Result<Policy, PolicyError> {
    match kind {
        Kind::Any => Policy::parse(text),
        Kind::Identity => Policy::parse_identity(text),
        Kind::Resource => Policy::parse_resource(text),
        Kind::Trust => Policy::parse_trust(text),
    }
}

#[test]
fn rejected_documents_report_iam_messages() {
    let cases: &[(&str, Kind, &str, &str)] = &[
        ("not json", Kind::Any, "{", "Syntax errors in policy."),
        ("top-level array", Kind::Any, "[]", "Syntax errors in policy."),
        (
            "unknown top-level element",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":[],"Extra":1}"#,
            "Syntax errors in policy.",
        ),
        (
            "condition key without vendor",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"username":"a"}}}}"#,
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
        ),
        (
            "bad version",
            Kind::Any,
            r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
            "The policy failed legacy parsing",
        ),
        ("missing statement", Kind::Any, r#"{"Version":"2012-10-17"}"#, "Missing required field Statement"),
        ("empty statement list", Kind::Any, r#"{"Version":"2012-10-17","Statement":[]}"#, "Syntax errors in policy."),
        (
            "missing effect",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Action":"*","Resource":"*"}}"#,
            "Missing required field Effect",
        ),
        (
            "bad effect",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Permit","Action":"*","Resource":"*"}}"#,
            "Invalid effect: Permit",
        ),
        (
            "missing action",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Resource":"*"}}"#,
            "Policy statement must contain actions.",
        ),
        (
            "empty action list",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":[],"Resource":"*"}}"#,
            "Policy statement must contain actions.",
        ),
        (
            "action and notaction together",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","NotAction":"iam:*","Resource":"*"}}"#,
            "Syntax errors in policy.",
        ),
        (
            "action without vendor",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"DescribeClusters","Resource":"*"}}"#,
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
        ),
        (
            "action with two colons",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:Describe:Clusters","Resource":"*"}}"#,
            "Actions/Condition can contain only one colon.",
        ),
        (
            "resource not an arn",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"my-bucket"}}"#,
            "Resource my-bucket must be in ARN format or \"*\".",
        ),
        (
            "unknown condition operator",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualz":{"aws:username":"a"}}}}"#,
            "Invalid Condition type : StringEqualz.",
        ),
        (
            "null with ifexists",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NullIfExists":{"aws:username":"true"}}}}"#,
            "Invalid Condition type : NullIfExists.",
        ),
        (
            "numeric value not a number",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericLessThan":{"s3:max-keys":"ten"}}}}"#,
            "Invalid value for condition NumericLessThan: ten",
        ),
        (
            "bad cidr",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/40"}}}}"#,
            "Invalid value for condition IpAddress: 10.0.0.0/40",
        ),
        (
            "bad date",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"tomorrow"}}}}"#,
            "Invalid value for condition DateLessThan: tomorrow",
        ),
        (
            "duplicate sid",
            Kind::Any,
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"A","Effect":"Deny","Action":"*","Resource":"*"}]}"#,
            "Statement IDs (SID) in a single policy must be unique.",
        ),
        (
            "identity policy with principal",
            Kind::Identity,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#,
            "Policy document should not specify a principal.",
        ),
        (
            "identity policy without resource",
            Kind::Identity,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*"}}"#,
            "Policy statement must contain resources.",
        ),
        (
            "identity policy with non-alphanumeric sid",
            Kind::Identity,
            r#"{"Version":"2012-10-17","Statement":{"Sid":"allow all","Effect":"Allow","Action":"*","Resource":"*"}}"#,
            "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*",
        ),
        (
            "resource policy without principal",
            Kind::Resource,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*"}}"#,
            "Missing required field Principal",
        ),
        (
            "trust policy without principal",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"sts:AssumeRole"}}"#,
            "Missing required field Principal",
        ),
        (
            "trust policy with resource",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole","Resource":"*"}}"#,
            "Has prohibited field Resource",
        ),
        (
            "trust policy with non-sts action",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"ecs:RunTask"}}"#,
            "AssumeRole policy may only specify STS AssumeRole actions.",
        ),
        (
            "principal with partial wildcard",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/*"},"Action":"sts:AssumeRole"}}"#,
            "Invalid principal in policy: \"AWS\":\"arn:aws:iam::123456789012:user/*\"",
        ),
        (
            "principal that is not an arn",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"sts:AssumeRole"}}"#,
            "Invalid principal in policy: \"AWS\":\"alice\"",
        ),
        (
            "unknown principal type",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Robot":"r2d2"},"Action":"sts:AssumeRole"}}"#,
            "Invalid principal in policy: \"Robot\":\"r2d2\"",
        ),
        (
            "principal string other than star",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"123456789012","Action":"sts:AssumeRole"}}"#,
            "Invalid principal in policy: \"123456789012\"",
        ),
    ];
    for (name, kind, text, want) in cases {
        match parse(*kind, text) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert_eq!(e.to_string(), *want, "{name}"),
        }
    }
}

#[test]
fn accepted_documents() {
    let cases: &[(&str, Kind, &str)] = &[
        (
            "single statement object",
            Kind::Identity,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*"}}"#,
        ),
        (
            "version defaults to 2008",
            Kind::Identity,
            r#"{"Statement":[{"Effect":"Allow","Action":["ecs:List*","ecs:Describe*"],"Resource":["*"]}]}"#,
        ),
        (
            "notaction and notresource",
            Kind::Identity,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotAction":"iam:*","NotResource":"arn:aws:s3:::b/*"}}"#,
        ),
        (
            "condition with numbers and booleans",
            Kind::Identity,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*","Condition":{"NumericLessThanEquals":{"s3:max-keys":10},"Bool":{"aws:SecureTransport":true}}}}"#,
        ),
        (
            "variables skip value validation until evaluation",
            Kind::Identity,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"arn:aws:s3:::b/${aws:username}/*"}}"#,
        ),
        (
            "ecs tasks trust policy",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"","Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        ),
        (
            "trust policy with accounts, roles and sessions",
            Kind::Trust,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":["123456789012","arn:aws:iam::111122223333:root","arn:aws:iam::111122223333:role/path/Deployer","arn:aws:sts::111122223333:assumed-role/Deployer/ci"]},"Action":["sts:AssumeRole","sts:TagSession"]}}"#,
        ),
        (
            "resource policy with star principal",
            Kind::Resource,
            r#"{"Version":"2008-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}"#,
        ),
        (
            "resource policy with not principal",
            Kind::Resource,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/Bob"},"Action":"*"}}"#,
        ),
    ];
    for (name, kind, text) in cases {
        if let Err(e) = parse(*kind, text) {
            panic!("{name}: rejected with {e}");
        }
    }
}

#[test]
fn parsed_model_reflects_document() {
    let p = Policy::parse(
        r#"{"Version":"2012-10-17","Id":"p1","Statement":[
            {"Sid":"One","Effect":"Deny","NotAction":["iam:*"],"Resource":"*"},
            {"Effect":"Allow","Principal":{"AWS":"123456789012","Service":["ecs.amazonaws.com"]},"Action":"sts:AssumeRole","NotResource":["arn:aws:iam::123456789012:role/x"]}
        ]}"#,
    )
    .expect("valid");
    assert_eq!(p.version, Version::V2012_10_17);
    assert_eq!(p.id.as_deref(), Some("p1"));
    assert_eq!(p.statements.len(), 2);
    let s0 = &p.statements[0];
    assert_eq!(s0.sid.as_deref(), Some("One"));
    assert_eq!(s0.effect, Effect::Deny);
    assert_eq!(s0.action, ActionBlock::NotAction(vec!["iam:*".into()]));
    assert_eq!(s0.resource, Some(ResourceBlock::Resource(vec!["*".into()])));
    let Some(PrincipalBlock::Principal(pr)) = &p.statements[1].principal else {
        panic!("principal expected");
    };
    assert_eq!(pr.aws, vec!["arn:aws:iam::123456789012:root".to_string()]);
    assert_eq!(pr.service, vec!["ecs.amazonaws.com".to_string()]);
    assert_eq!(
        p.referenced_aws_principals(),
        vec!["arn:aws:iam::123456789012:root"]
    );
}
