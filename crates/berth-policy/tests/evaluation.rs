//! Table-driven evaluation tests: identity policies, resource policies and
//! trust policies against requests, asserting the exact decision.
//!
//! Many rows follow the examples in the IAM User Guide ("Policy evaluation
//! logic", "IAM policy elements: Variables and tags", "Condition operators",
//! "Single-valued vs. multivalued context keys").

use berth_policy::{
    evaluate, evaluate_trust, Context, Decision, Policy, PolicySource, PrincipalRef,
    PrincipalScope, Request, Timestamp,
};

const ACCT: &str = "111122223333";
const CLUSTER: &str = "arn:aws:ecs:us-east-1:111122223333:cluster/default";
const REPO: &str = "arn:aws:ecr:us-east-1:111122223333:repository/app";
const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf";
const PROD_SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-XyZ123";
const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/app-role";

const ALLOW_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#;

/// Who is calling.
#[derive(Debug, Clone, Copy, Default)]
enum Who {
    /// IAM user `alice` in [`ACCT`].
    #[default]
    Alice,
    /// IAM user `bob` in [`ACCT`].
    Bob,
    /// Session `task-1` of role `app-role` in [`ACCT`].
    RoleSession,
    /// The root user of [`ACCT`].
    Root,
    /// IAM user `carol` in another account.
    OtherAccount,
    /// A service principal.
    Service(&'static str),
    /// A web-identity federated caller.
    Federated(&'static str),
}

impl Who {
    fn principal(self) -> PrincipalRef {
        match self {
            Who::Alice => PrincipalRef::user(ACCT, "/", "alice", "AIDAALICE"),
            Who::Bob => PrincipalRef::user(ACCT, "/", "bob", "AIDABOB"),
            Who::RoleSession => {
                PrincipalRef::assumed_role(ACCT, "/", "app-role", "task-1", "AROAAPP")
            }
            Who::Root => PrincipalRef::root(ACCT),
            Who::OtherAccount => PrincipalRef::user("999988887777", "/", "carol", "AIDACAROL"),
            Who::Service(name) => PrincipalRef::service(name),
            Who::Federated(provider) => PrincipalRef::federated(ACCT, provider),
        }
    }
}

/// A context value in a table row.
#[derive(Debug, Clone, Copy)]
enum V {
    S(&'static str),
    L(&'static [&'static str]),
    B(bool),
    N(f64),
    Ip(&'static str),
    /// Sets `aws:CurrentTime` and `aws:EpochTime` (the key is ignored).
    Now(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    identity: &'static [&'static str],
    resource_policy: Option<&'static str>,
    who: Who,
    action: &'static str,
    resource: &'static str,
    ctx: &'static [(&'static str, V)],
}

const BASE: Case = Case {
    identity: &[],
    resource_policy: None,
    who: Who::Alice,
    action: "ecs:DescribeClusters",
    resource: CLUSTER,
    ctx: &[],
};

fn build_context(entries: &[(&str, V)]) -> Context {
    let mut ctx = Context::new();
    for (key, value) in entries {
        match value {
            V::S(s) => ctx.set(key, *s),
            V::L(list) => ctx.set(key, *list),
            V::B(b) => ctx.set(key, *b),
            V::N(n) => ctx.set(key, *n),
            V::Ip(ip) => ctx.set_source_ip(ip.parse().expect("test ip")),
            V::Now(t) => ctx.set_current_time(Timestamp::parse(t).expect("test time")),
        };
    }
    ctx
}

fn decide(case: &Case) -> Decision {
    let identity: Vec<Policy> = case
        .identity
        .iter()
        .map(|text| {
            Policy::parse_identity(text).unwrap_or_else(|e| panic!("identity policy {text}: {e}"))
        })
        .collect();
    let refs: Vec<&Policy> = identity.iter().collect();
    let resource = case.resource_policy.map(|text| {
        Policy::parse_resource(text).unwrap_or_else(|e| panic!("resource policy {text}: {e}"))
    });
    let principal = case.who.principal();
    let ctx = build_context(case.ctx);
    let req = Request::new(&principal, case.action, case.resource, &ctx);
    evaluate(&refs, resource.as_ref(), &req)
}

fn kind(d: &Decision) -> Want {
    match d {
        Decision::Allow(_) => Want::Allow,
        Decision::ExplicitDeny(_) => Want::ExplicitDeny,
        Decision::ImplicitDeny => Want::ImplicitDeny,
    }
}

use Want::{Allow, ExplicitDeny as Deny, ImplicitDeny as Implicit};

#[rustfmt::skip]
const CASES: &[(&str, Want, Case)] = &[
    // ---- Default deny, Action matching --------------------------------------------------
    ("no policies: default deny", Implicit, BASE),
    ("exact action and resource", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:DescribeClusters","Resource":"arn:aws:ecs:us-east-1:111122223333:cluster/default"}}"#],
        ..BASE }),
    ("action match is case-insensitive", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ECS:describeclusters","Resource":"*"}}"#],
        ..BASE }),
    ("action wildcard ecs:Describe* matches DescribeServices", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:Describe*","Resource":"*"}}"#],
        action: "ecs:DescribeServices", ..BASE }),
    ("action wildcard ecs:Describe* does not match ListClusters", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:Describe*","Resource":"*"}}"#],
        action: "ecs:ListClusters", ..BASE }),
    ("action ? matches exactly one character", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:ListTask?","Resource":"*"}}"#],
        action: "ecs:ListTasks", ..BASE }),
    ("action ? does not match a longer name", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:ListTask?","Resource":"*"}}"#],
        action: "ecs:ListTaskDefinitions", ..BASE }),
    ("Action * allows any action", Allow, Case {
        identity: &[ALLOW_ALL], action: "iam:CreateUser", resource: "arn:aws:iam::111122223333:user/x", ..BASE }),
    ("other service prefix does not match", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"*"}}"#],
        ..BASE }),
    ("second action in list matches", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["ecs:ListClusters","ecs:DescribeClusters"],"Resource":"*"}}"#],
        ..BASE }),

    // ---- Resource matching ----------------------------------------------------------------
    ("resource match is case-sensitive", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:us-east-1:111122223333:cluster/Default"}}"#],
        ..BASE }),
    ("resource wildcard cluster/*", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:111122223333:cluster/*"}}"#],
        ..BASE }),
    ("resource ? wildcard matches one character", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111122223333:repository/ap?"}}"#],
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource ? wildcard does not match two characters", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111122223333:repository/a?"}}"#],
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource in another account does not match", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:us-east-1:999999999999:cluster/*"}}"#],
        ..BASE }),
    ("second resource in list matches", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":["arn:aws:ecs:us-east-1:111122223333:cluster/other","arn:aws:ecs:us-east-1:111122223333:cluster/default"]}}"#],
        ..BASE }),
    ("service-specific resource pattern does not match resource *", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/*"}}"#],
        action: "ecr:GetAuthorizationToken", resource: "*", ..BASE }),

    // ---- Explicit deny beats allow ---------------------------------------------------------
    ("deny over allow in the same policy", Deny, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]}"#],
        action: "ecs:DeleteCluster", ..BASE }),
    ("deny in a second policy beats allow in the first", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/default"}}"#],
        ..BASE }),
    ("deny for another action leaves the allow", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]}"#],
        ..BASE }),
    ("a non-matching deny alone is still an implicit deny", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}}"#],
        ..BASE }),

    // ---- NotAction --------------------------------------------------------------------------
    ("Allow NotAction iam:* allows ECS", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}}"#],
        action: "ecs:CreateCluster", ..BASE }),
    ("Allow NotAction iam:* does not allow IAM", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}}"#],
        action: "iam:CreateUser", resource: "arn:aws:iam::111122223333:user/x", ..BASE }),
    ("Deny NotAction iam:* (everything except IAM) denies ECS", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotAction":"iam:*","Resource":"*"}}"#],
        action: "ecs:CreateCluster", ..BASE }),
    ("Deny NotAction iam:* (everything except IAM) leaves IAM allowed", Allow, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotAction":"iam:*","Resource":"*"}}"#],
        action: "iam:ListUsers", resource: "*", ..BASE }),

    // ---- NotResource ------------------------------------------------------------------------
    ("Allow NotResource: other secret allowed", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"secretsmanager:*","NotResource":"arn:aws:secretsmanager:*:*:secret:prod/*"}}"#],
        action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("Allow NotResource: excluded secret not allowed", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"secretsmanager:*","NotResource":"arn:aws:secretsmanager:*:*:secret:prod/*"}}"#],
        action: "secretsmanager:GetSecretValue", resource: PROD_SECRET, ..BASE }),
    ("Deny NotResource denies everything but the listed repository", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecr:*","NotResource":"arn:aws:ecr:us-east-1:111122223333:repository/app"}}"#],
        action: "ecr:PutImage", resource: "arn:aws:ecr:us-east-1:111122223333:repository/other", ..BASE }),
    ("Deny NotResource leaves the listed repository allowed", Allow, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecr:*","NotResource":"arn:aws:ecr:us-east-1:111122223333:repository/app"}}"#],
        action: "ecr:PutImage", resource: REPO, ..BASE }),

    // ---- Policy variables -----------------------------------------------------------------
    ("variables: home/${aws:username}/* allows own home", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/home/${aws:username}/*"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/home/alice/notes.txt", ..BASE }),
    ("variables: home/${aws:username}/* refuses another user's home", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/home/${aws:username}/*"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/home/bob/notes.txt", ..BASE }),
    ("variables: version 2008-10-17 does not substitute", Implicit, Case {
        identity: &[r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/home/${aws:username}/*"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/home/alice/notes.txt", ..BASE }),
    ("variables: version 2008-10-17 treats ${...} as literal text", Allow, Case {
        identity: &[r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/home/${aws:username}/*"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/home/${aws:username}/notes.txt", ..BASE }),
    ("variables: missing Version means 2008-10-17", Implicit, Case {
        identity: &[r#"{"Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/home/${aws:username}/*"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/home/alice/notes.txt", ..BASE }),
    ("variables: role session has no aws:username, statement does not match", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/home/${aws:username}/*"}}"#],
        who: Who::RoleSession, action: "s3:GetObject", resource: "arn:aws:s3:::bucket/home/alice/notes.txt", ..BASE }),
    ("variables: default value used when key is missing", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/home/${aws:username, 'shared'}/*"}}"#],
        who: Who::RoleSession, action: "s3:GetObject", resource: "arn:aws:s3:::bucket/home/shared/notes.txt", ..BASE }),
    ("variables: default ignored when key is present", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/home/${aws:username, 'shared'}/*"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/home/shared/notes.txt", ..BASE }),
    ("variables: aws:userid of a role session", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::bucket/${aws:userid}/*"}}"#],
        who: Who::RoleSession, action: "s3:PutObject", resource: "arn:aws:s3:::bucket/AROAAPP:task-1/out.log", ..BASE }),
    ("variables: ${aws:PrincipalTag/team} in resource matches", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/${aws:PrincipalTag/team}/*"}}"#],
        action: "ecr:BatchGetImage", resource: "arn:aws:ecr:us-east-1:111122223333:repository/blue/web",
        ctx: &[("aws:PrincipalTag/team", V::S("blue"))], ..BASE }),
    ("variables: ${aws:PrincipalTag/team} for another team's repo", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/${aws:PrincipalTag/team}/*"}}"#],
        action: "ecr:BatchGetImage", resource: "arn:aws:ecr:us-east-1:111122223333:repository/blue/web",
        ctx: &[("aws:PrincipalTag/team", V::S("red"))], ..BASE }),
    ("variables: ${*} is a literal star", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/literal${*}"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/literal*", ..BASE }),
    ("variables: ${*} is not a wildcard", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/literal${*}"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/literalX", ..BASE }),
    ("variables: ${?} is a literal question mark", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/what${?}"}}"#],
        action: "s3:GetObject", resource: "arn:aws:s3:::bucket/whatX", ..BASE }),
    ("variables: ${$} in a condition value", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/price":"${$}5"}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:RequestTag/price", V::S("$5"))], ..BASE }),
    ("variables: ${aws:username} in a condition value matches", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/owner":"${aws:username}"}}}}"#],
        action: "secretsmanager:GetSecretValue", resource: SECRET, ctx: &[("aws:ResourceTag/owner", V::S("alice"))], ..BASE }),
    ("variables: ${aws:username} in a condition value mismatches", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/owner":"${aws:username}"}}}}"#],
        action: "secretsmanager:GetSecretValue", resource: SECRET, ctx: &[("aws:ResourceTag/owner", V::S("bob"))], ..BASE }),
    ("ABAC: ResourceTag equals ${aws:PrincipalTag/team}", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/team":"${aws:PrincipalTag/team}"}}}}"#],
        ctx: &[("aws:ResourceTag/team", V::S("blue")), ("aws:PrincipalTag/team", V::S("blue"))], ..BASE }),
    ("ABAC: untagged principal gets nothing", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/team":"${aws:PrincipalTag/team}"}}}}"#],
        ctx: &[("aws:ResourceTag/team", V::S("blue"))], ..BASE }),

    // ---- String operators -------------------------------------------------------------------
    ("StringEquals match", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/env":"prod"}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("prod"))], ..BASE }),
    ("StringEquals is case-sensitive", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/env":"prod"}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("Prod"))], ..BASE }),
    ("condition key names are case-insensitive", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"AWS:REQUESTTAG/ENV":"prod"}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("prod"))], ..BASE }),
    ("StringEquals with missing key is false", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/env":"prod"}}}}"#],
        ..BASE }),
    ("StringEqualsIgnoreCase", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"aws:RequestTag/env":"prod"}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("PROD"))], ..BASE }),
    ("StringNotEqualsIgnoreCase", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringNotEqualsIgnoreCase":{"aws:RequestTag/env":"prod"}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("PROD"))], ..BASE }),
    ("StringNotEquals with missing key is true", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringNotEquals":{"aws:RequestTag/env":"prod"}}}}"#],
        ..BASE }),
    ("StringNotEquals with a listed value is false", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringNotEquals":{"aws:RequestTag/env":["dev","prod"]}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("prod"))], ..BASE }),
    ("StringLike with wildcard", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringLike":{"aws:RequestTag/team":"team-*"}}}}"#],
        ctx: &[("aws:RequestTag/team", V::S("team-blue"))], ..BASE }),
    ("StringNotLike matching value is false", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringNotLike":{"aws:RequestTag/team":"team-*"}}}}"#],
        ctx: &[("aws:RequestTag/team", V::S("team-blue"))], ..BASE }),
    ("StringEquals does not treat * as a wildcard", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/team":"team-*"}}}}"#],
        ctx: &[("aws:RequestTag/team", V::S("team-blue"))], ..BASE }),
    ("values for one key are ORed", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/env":["dev","test"]}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("test"))], ..BASE }),
    ("keys and operators are ANDed", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/env":"dev"},"StringLike":{"aws:RequestTag/team":"*"}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("dev"))], ..BASE }),
    ("StringEqualsIfExists with missing key is true", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEqualsIfExists":{"aws:RequestTag/env":"prod"}}}}"#],
        ..BASE }),
    ("StringEqualsIfExists with mismatching key is false", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEqualsIfExists":{"aws:RequestTag/env":"prod"}}}}"#],
        ctx: &[("aws:RequestTag/env", V::S("dev"))], ..BASE }),

    // ---- ARN operators ------------------------------------------------------------------------
    ("ArnLike aws:PrincipalArn is the role ARN for a session", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/app-*"}}}}"#],
        who: Who::RoleSession, ..BASE }),
    ("ArnEquals aws:PrincipalArn for a user", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/alice"}}}}"#],
        ..BASE }),
    ("ArnEquals aws:PrincipalArn for another user", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/alice"}}}}"#],
        who: Who::Bob, ..BASE }),
    ("ArnNotLike deny hits principals outside the pattern", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"secretsmanager:GetSecretValue","Resource":"*","Condition":{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/app-*"}}}}"#],
        action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("ArnNotLike deny spares principals inside the pattern", Allow, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"secretsmanager:GetSecretValue","Resource":"*","Condition":{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/app-*"}}}}"#],
        who: Who::RoleSession, action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("ArnNotEquals", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iam:PassRole","Resource":"*","Condition":{"ArnNotEquals":{"iam:AssociatedResourceArn":"arn:aws:ecs:us-east-1:111122223333:cluster/default"}}}}"#],
        action: "iam:PassRole", resource: ROLE_ARN, ctx: &[("iam:AssociatedResourceArn", V::S(CLUSTER))], ..BASE }),

    // ---- Numeric, Bool, Null ------------------------------------------------------------------
    ("NumericGreaterThanEquals true", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"secretsmanager:DeleteSecret","Resource":"*","Condition":{"NumericGreaterThanEquals":{"secretsmanager:RecoveryWindowInDays":7}}}}"#],
        action: "secretsmanager:DeleteSecret", resource: SECRET, ctx: &[("secretsmanager:RecoveryWindowInDays", V::N(10.0))], ..BASE }),
    ("NumericGreaterThanEquals false", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"secretsmanager:DeleteSecret","Resource":"*","Condition":{"NumericGreaterThanEquals":{"secretsmanager:RecoveryWindowInDays":7}}}}"#],
        action: "secretsmanager:DeleteSecret", resource: SECRET, ctx: &[("secretsmanager:RecoveryWindowInDays", V::N(3.0))], ..BASE }),
    ("NumericEquals reads a string context value", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"secretsmanager:DeleteSecret","Resource":"*","Condition":{"NumericEquals":{"secretsmanager:RecoveryWindowInDays":"7"}}}}"#],
        action: "secretsmanager:DeleteSecret", resource: SECRET, ctx: &[("secretsmanager:RecoveryWindowInDays", V::S("7.0"))], ..BASE }),
    ("NumericLessThan false at the boundary", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*","Condition":{"NumericLessThan":{"s3:max-keys":10}}}}"#],
        action: "s3:ListBucket", resource: "arn:aws:s3:::bucket", ctx: &[("s3:max-keys", V::N(10.0))], ..BASE }),
    ("NumericNotEquals with missing key is true", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*","Condition":{"NumericNotEquals":{"s3:max-keys":10}}}}"#],
        action: "s3:ListBucket", resource: "arn:aws:s3:::bucket", ..BASE }),
    ("Bool aws:SecureTransport false: deny over plain HTTP", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}}"#],
        ctx: &[("aws:SecureTransport", V::B(false))], ..BASE }),
    ("Bool aws:SecureTransport false: TLS is allowed", Allow, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}}"#],
        ctx: &[("aws:SecureTransport", V::B(true))], ..BASE }),
    ("Bool with missing key does not match, so the deny is skipped", Allow, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}}"#],
        ..BASE }),
    ("BoolIfExists with missing key matches, so the deny applies", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}}"#],
        ..BASE }),
    ("Bool with JSON boolean value", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":true}}}}"#],
        ctx: &[("aws:SecureTransport", V::B(true))], ..BASE }),
    ("Null true: deny when the request tag is missing", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecs:CreateCluster","Resource":"*","Condition":{"Null":{"aws:RequestTag/env":"true"}}}}"#],
        action: "ecs:CreateCluster", ..BASE }),
    ("Null true: tag present, deny skipped", Allow, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecs:CreateCluster","Resource":"*","Condition":{"Null":{"aws:RequestTag/env":"true"}}}}"#],
        action: "ecs:CreateCluster", ctx: &[("aws:RequestTag/env", V::S("dev"))], ..BASE }),
    ("Null false: allow only when key present, key missing", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Null":{"aws:TagKeys":"false"}}}}"#],
        ..BASE }),

    // ---- IP addresses -------------------------------------------------------------------------
    ("IpAddress inside CIDR", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}}}"#],
        ctx: &[("aws:SourceIp", V::Ip("203.0.113.9"))], ..BASE }),
    ("IpAddress outside CIDR", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}}}"#],
        ctx: &[("aws:SourceIp", V::Ip("198.51.100.1"))], ..BASE }),
    ("IpAddress with a list of CIDRs", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":["203.0.113.0/24","198.51.100.0/22"]}}}}"#],
        ctx: &[("aws:SourceIp", V::Ip("198.51.103.250"))], ..BASE }),
    ("IpAddress IPv6 CIDR", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"2001:DB8:1234:5678::/64"}}}}"#],
        ctx: &[("aws:SourceIp", V::Ip("2001:db8:1234:5678::42"))], ..BASE }),
    ("IpAddress with no source IP is false", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}}}"#],
        ..BASE }),
    ("NotIpAddress deny from outside the corporate range", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}}}"#],
        ctx: &[("aws:SourceIp", V::Ip("198.51.100.1"))], ..BASE }),
    ("NotIpAddress deny spares the corporate range", Allow, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}}}"#],
        ctx: &[("aws:SourceIp", V::Ip("192.0.2.17"))], ..BASE }),

    // ---- Dates ------------------------------------------------------------------------------
    ("DateLessThan aws:CurrentTime before the cutoff", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}}}"#],
        ctx: &[("now", V::Now("2026-11-30T12:00:00Z"))], ..BASE }),
    ("DateLessThan aws:CurrentTime after the cutoff", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}}}"#],
        ctx: &[("now", V::Now("2031-06-01T00:00:00Z"))], ..BASE }),
    ("DateGreaterThan and DateLessThan window", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2026-12-31T23:59:59Z"}}}}"#],
        ctx: &[("now", V::Now("2026-11-30T12:00:00Z"))], ..BASE }),
    ("DateGreaterThan with missing time is false", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-01-01"}}}}"#],
        ..BASE }),
    ("DateLessThan with an epoch-seconds policy value", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"1893456000"}}}}"#],
        ctx: &[("now", V::Now("2029-12-31T23:59:59Z"))], ..BASE }),
    ("DateEquals on a day", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateEquals":{"aws:CurrentTime":"2026-11-30"}}}}"#],
        ctx: &[("now", V::Now("2026-11-30T12:00:00Z"))], ..BASE }),
    ("NumericLessThan on aws:EpochTime", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericLessThan":{"aws:EpochTime":1893456000}}}}"#],
        ctx: &[("now", V::Now("2026-11-30T12:00:00Z"))], ..BASE }),
    ("DateGreaterThanEquals on aws:EpochTime", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateGreaterThanEquals":{"aws:EpochTime":"2027-01-01T00:00:00Z"}}}}"#],
        ctx: &[("now", V::Now("2026-11-30T12:00:00Z"))], ..BASE }),

    // ---- Set qualifiers ---------------------------------------------------------------------
    ("ForAllValues: every tag key allowed", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["env"]))], ..BASE }),
    ("ForAllValues: one tag key not allowed", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["env","owner"]))], ..BASE }),
    ("ForAllValues: missing key is true", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}}}"#],
        action: "ecs:TagResource", ..BASE }),
    ("ForAllValues: empty list is true", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&[]))], ..BASE }),
    ("ForAllValues:StringLike on every value", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringLike":{"aws:TagKeys":"team*"}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["team-a","team-b"]))], ..BASE }),
    ("ForAnyValue: one value matches", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":"env"}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["owner","env"]))], ..BASE }),
    ("ForAnyValue: no value matches", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":"env"}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["owner"]))], ..BASE }),
    ("ForAnyValue: missing key is false", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":"env"}}}}"#],
        action: "ecs:TagResource", ..BASE }),
    ("ForAnyValue ...IfExists: missing key is true", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringEqualsIfExists":{"aws:TagKeys":"env"}}}}"#],
        action: "ecs:TagResource", ..BASE }),
    ("Deny ForAnyValue:StringLike on a forbidden tag key", Deny, Case {
        identity: &[ALLOW_ALL, r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringLike":{"aws:TagKeys":"secret*"}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["env","secretX"]))], ..BASE }),
    ("ForAnyValue:StringNotEquals: a value outside the list", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringNotEquals":{"aws:TagKeys":"env"}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["env","x"]))], ..BASE }),
    ("ForAnyValue:StringNotEquals: all values in the list", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAnyValue:StringNotEquals":{"aws:TagKeys":"env"}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["env"]))], ..BASE }),
    ("ForAllValues: single allowed value, extra key present", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:TagResource","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":"env"}}}}"#],
        action: "ecs:TagResource", ctx: &[("aws:TagKeys", V::L(&["env","cost"]))], ..BASE }),

    // ---- Global principal keys --------------------------------------------------------------
    ("aws:PrincipalAccount", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalAccount":"111122223333"}}}}"#],
        ..BASE }),
    ("aws:username restricts to alice", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:username":"alice"}}}}"#],
        who: Who::Bob, ..BASE }),
    ("aws:userid prefix for a role", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringLike":{"aws:userid":"AROAAPP:*"}}}}"#],
        who: Who::RoleSession, ..BASE }),
    ("context value overrides the derived principal key", Implicit, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalAccount":"111122223333"}}}}"#],
        ctx: &[("aws:PrincipalAccount", V::S("000000000000"))], ..BASE }),

    // ---- Resource-based policies ------------------------------------------------------------
    ("resource policy naming the user allows without identity policy", Allow, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Sid":"pull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}}"#),
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource policy naming another user", Implicit, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"ecr:*"}}"#),
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource policy with Principal *", Allow, Case {
        resource_policy: Some(r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}}"#),
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource policy naming only the account delegates to IAM: not enough alone", Implicit, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"ecr:*"}}"#),
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource policy naming the account plus identity allow", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}}"#],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"ecr:*"}}"#),
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("identity allow alone suffices in the same account", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"*"}}"#],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"ecr:*"}}"#),
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource policy deny beats identity allow", Deny, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"ecr:*"}}"#),
        action: "ecr:PutImage", resource: REPO, ..BASE }),
    ("resource policy deny naming the account applies to its users", Deny, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"ecr:DeleteRepository"}}"#),
        action: "ecr:DeleteRepository", resource: REPO, ..BASE }),
    ("identity deny beats resource policy allow", Deny, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"secretsmanager:*","Resource":"*"}}"#],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"*"}}"#),
        action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("resource policy deny on insecure transport", Deny, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Principal":"*","Action":"secretsmanager:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}}"#),
        action: "secretsmanager:GetSecretValue", resource: SECRET, ctx: &[("aws:SecureTransport", V::B(false))], ..BASE }),
    ("secret policy naming the role allows its sessions", Allow, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/app-role"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}}"#),
        who: Who::RoleSession, action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("secret policy naming the session ARN", Allow, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/app-role/task-1"},"Action":"secretsmanager:GetSecretValue"}}"#),
        who: Who::RoleSession, action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("secret policy naming another session", Implicit, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/app-role/task-2"},"Action":"secretsmanager:GetSecretValue"}}"#),
        who: Who::RoleSession, action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("NotPrincipal deny hits everyone not listed", Deny, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::111122223333:user/alice","arn:aws:iam::111122223333:root"]},"Action":"secretsmanager:GetSecretValue","Resource":"*"}}"#),
        who: Who::Bob, action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("NotPrincipal deny spares the listed user (with its account)", Allow, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::111122223333:user/alice","arn:aws:iam::111122223333:root"]},"Action":"secretsmanager:GetSecretValue","Resource":"*"}}"#),
        action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("NotPrincipal deny listing only the role does not spare its session", Deny, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/app-role"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}}"#),
        who: Who::RoleSession, action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("resource policy Resource element must match", Implicit, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"arn:aws:secretsmanager:*:*:secret:other-*"}}"#),
        action: "secretsmanager:GetSecretValue", resource: SECRET, ..BASE }),
    ("resource policy action must match", Implicit, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"ecr:BatchGetImage"}}"#),
        action: "ecr:PutImage", resource: REPO, ..BASE }),
    ("resource policy naming a service principal", Allow, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"ecr:BatchGetImage"}}"#),
        who: Who::Service("ecs-tasks.amazonaws.com"), action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource policy naming a user of another account", Implicit, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999988887777:user/alice"},"Action":"ecr:*"}}"#),
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource policy condition with aws:PrincipalAccount", Allow, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage","Condition":{"StringEquals":{"aws:PrincipalAccount":"111122223333"}}}}"#),
        action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("resource policy condition with aws:PrincipalAccount, other account", Implicit, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage","Condition":{"StringEquals":{"aws:PrincipalAccount":"111122223333"}}}}"#),
        who: Who::OtherAccount, action: "ecr:BatchGetImage", resource: REPO, ..BASE }),

    // ---- Cross-account: both sides must allow ------------------------------------------------
    ("cross-account: identity allow alone is not enough", Implicit, Case {
        identity: &[ALLOW_ALL],
        who: Who::OtherAccount, action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("cross-account: resource policy naming the user alone is not enough", Implicit, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999988887777:user/carol"},"Action":"ecr:BatchGetImage"}}"#),
        who: Who::OtherAccount, action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("cross-account: identity allow plus resource policy naming the account", Allow, Case {
        identity: &[r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:BatchGetImage","Resource":"arn:aws:ecr:*:111122223333:repository/*"}}"#],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"999988887777"},"Action":"ecr:BatchGetImage"}}"#),
        who: Who::OtherAccount, action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("cross-account: identity allow plus resource policy naming the user", Allow, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999988887777:user/carol"},"Action":"ecr:BatchGetImage"}}"#),
        who: Who::OtherAccount, action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
    ("cross-account: resource policy for another action", Implicit, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"999988887777"},"Action":"ecr:BatchGetImage"}}"#),
        who: Who::OtherAccount, action: "ecr:PutImage", resource: REPO, ..BASE }),
    ("cross-account: resource policy deny", Deny, Case {
        identity: &[ALLOW_ALL],
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:*"},{"Effect":"Deny","Principal":{"AWS":"999988887777"},"Action":"ecr:PutImage"}]}"#),
        who: Who::OtherAccount, action: "ecr:PutImage", resource: REPO, ..BASE }),
    ("resources without an account field count as same-account", Allow, Case {
        identity: &[ALLOW_ALL],
        who: Who::OtherAccount, action: "s3:GetObject", resource: "arn:aws:s3:::bucket/x", ..BASE }),

    ("root is evaluated like any principal (caller short-circuits root)", Implicit, Case {
        who: Who::Root, ..BASE }),
    ("resource policy naming the account root lets root in directly", Allow, Case {
        resource_policy: Some(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"ecr:*"}}"#),
        who: Who::Root, action: "ecr:BatchGetImage", resource: REPO, ..BASE }),
];

#[test]
fn evaluation_table() {
    assert!(CASES.len() >= 70, "only {} cases", CASES.len());
    let mut failures = Vec::new();
    for (name, want, case) in CASES {
        let got = decide(case);
        if kind(&got) != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn case_names_are_unique() {
    let mut names: Vec<&str> = CASES.iter().map(|(n, _, _)| *n).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate case names");
}

#[test]
fn decisions_report_the_deciding_statement() {
    let identity = Policy::parse_identity(
        r#"{"Version":"2012-10-17","Statement":[
            {"Sid":"AllowAll","Effect":"Allow","Action":"*","Resource":"*"},
            {"Sid":"NoDelete","Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]}"#,
    )
    .expect("valid");
    let alice = Who::Alice.principal();
    let ctx = Context::new();

    let req = Request::new(&alice, "ecs:DeleteCluster", CLUSTER, &ctx);
    let d = evaluate(&[&identity], None, &req);
    assert_eq!(d.sid(), Some("NoDelete"));
    assert!(matches!(d, Decision::ExplicitDeny(ref m) if m.source == PolicySource::Identity(0)));

    let req = Request::new(&alice, "ecs:DescribeClusters", CLUSTER, &ctx);
    let d = evaluate(&[&identity], None, &req);
    assert_eq!(d.sid(), Some("AllowAll"));
    assert!(d.is_allowed());

    let resource = Policy::parse_resource(
        r#"{"Version":"2012-10-17","Statement":{"Sid":"Pull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"ecr:BatchGetImage"}}"#,
    )
    .expect("valid");
    let req = Request::new(&alice, "ecr:BatchGetImage", REPO, &ctx);
    match evaluate(&[], Some(&resource), &req) {
        Decision::Allow(m) => {
            assert_eq!(m.source, PolicySource::Resource);
            assert_eq!(m.principal_scope, PrincipalScope::Direct);
            assert_eq!(m.sid.as_deref(), Some("Pull"));
        }
        other => panic!("want allow, got {other:?}"),
    }
}

#[test]
fn context_helpers_feed_condition_keys() {
    let policy = Policy::parse_identity(
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:CreateCluster","Resource":"*","Condition":{
            "StringEquals":{"aws:RequestTag/env":"dev"},
            "ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]},
            "StringEqualsIfExists":{"aws:ResourceTag/team":"blue"},
            "Bool":{"aws:SecureTransport":"true"}}}}"#,
    )
    .expect("valid");
    let alice = Who::Alice.principal();
    let mut ctx = Context::new();
    ctx.set_request_tag("env", "dev")
        .set_request_tag("team", "blue")
        .set_secure_transport(true);
    let req = Request::new(&alice, "ecs:CreateCluster", CLUSTER, &ctx);
    assert!(evaluate(&[&policy], None, &req).is_allowed());

    ctx.set_request_tag("cost", "1");
    let req = Request::new(&alice, "ecs:CreateCluster", CLUSTER, &ctx);
    assert_eq!(evaluate(&[&policy], None, &req), Decision::ImplicitDeny);

    let mut ctx = Context::new();
    ctx.set_request_tag("env", "dev")
        .set_secure_transport(true)
        .set_resource_tag("team", "red");
    let req = Request::new(&alice, "ecs:CreateCluster", CLUSTER, &ctx);
    assert_eq!(evaluate(&[&policy], None, &req), Decision::ImplicitDeny);

    // set_principal copies the derived keys, which a later set can override.
    let mut ctx = Context::new();
    ctx.set_principal(&alice);
    assert_eq!(
        ctx.get("AWS:USERNAME"),
        Some(&berth_policy::ContextValue::String("alice".into()))
    );
    assert_eq!(
        ctx.get("aws:PrincipalArn"),
        Some(&berth_policy::ContextValue::String(
            "arn:aws:iam::111122223333:user/alice".into()
        ))
    );
}

// ---- Trust policies (sts:AssumeRole) ------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrustWant {
    Direct,
    Account,
    Deny,
    Implicit,
}

/// Description, trust policy, caller, STS action, context, expected outcome.
type TrustRow = (
    &'static str,
    &'static str,
    Who,
    &'static str,
    &'static [(&'static str, V)],
    TrustWant,
);

#[rustfmt::skip]
const TRUST_CASES: &[TrustRow] = &[
    ("ecs-tasks service may assume",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}}"#,
        Who::Service("ecs-tasks.amazonaws.com"), "sts:AssumeRole", &[], TrustWant::Direct),
    ("another service may not",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}}"#,
        Who::Service("lambda.amazonaws.com"), "sts:AssumeRole", &[], TrustWant::Implicit),
    ("users are not the service",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}}"#,
        Who::Alice, "sts:AssumeRole", &[], TrustWant::Implicit),
    ("named user trusted directly",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"sts:AssumeRole"}}"#,
        Who::Alice, "sts:AssumeRole", &[], TrustWant::Direct),
    ("account trust delegates to identity policies",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"sts:AssumeRole"}}"#,
        Who::Alice, "sts:AssumeRole", &[], TrustWant::Account),
    ("account trust does not cover another account",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole"}}"#,
        Who::OtherAccount, "sts:AssumeRole", &[], TrustWant::Implicit),
    ("cross-account trust names the other account",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"999988887777"},"Action":"sts:AssumeRole"}}"#,
        Who::OtherAccount, "sts:AssumeRole", &[], TrustWant::Account),
    ("external id required and present",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:ExternalId":"xyz"}}}}"#,
        Who::Alice, "sts:AssumeRole", &[("sts:ExternalId", V::S("xyz"))], TrustWant::Direct),
    ("external id required and missing",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:ExternalId":"xyz"}}}}"#,
        Who::Alice, "sts:AssumeRole", &[], TrustWant::Implicit),
    ("explicit deny in a trust policy",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole"},{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"sts:*"}]}"#,
        Who::Bob, "sts:AssumeRole", &[], TrustWant::Deny),
    ("direct allow preferred over account allow",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole"},{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"sts:AssumeRole"}]}"#,
        Who::Bob, "sts:AssumeRole", &[], TrustWant::Direct),
    ("action not in trust policy",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"sts:AssumeRole"}}"#,
        Who::Alice, "sts:TagSession", &[], TrustWant::Implicit),
    ("web identity federation",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::111122223333:oidc-provider/token.example.com"},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"token.example.com:aud":"berth"}}}}"#,
        Who::Federated("arn:aws:iam::111122223333:oidc-provider/token.example.com"), "sts:AssumeRoleWithWebIdentity",
        &[("token.example.com:aud", V::S("berth"))], TrustWant::Direct),
    ("role session chaining names the role",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/app-role"},"Action":"sts:AssumeRole"}}"#,
        Who::RoleSession, "sts:AssumeRole", &[], TrustWant::Direct),
];

#[test]
fn trust_table() {
    let target_role = "arn:aws:iam::111122223333:role/target";
    let mut failures = Vec::new();
    for (name, text, who, action, ctx, want) in TRUST_CASES {
        let trust = Policy::parse_trust(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let principal = who.principal();
        let ctx = build_context(ctx);
        let req = Request::new(&principal, action, target_role, &ctx);
        let got = evaluate_trust(&trust, &req);
        let got_kind = match &got {
            Decision::Allow(m) if m.principal_scope == PrincipalScope::Direct => TrustWant::Direct,
            Decision::Allow(m) if m.principal_scope == PrincipalScope::Account => {
                TrustWant::Account
            }
            Decision::Allow(_) => panic!("{name}: unexpected scope in {got:?}"),
            Decision::ExplicitDeny(_) => TrustWant::Deny,
            Decision::ImplicitDeny => TrustWant::Implicit,
        };
        if got_kind != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
        if let Decision::Allow(m) | Decision::ExplicitDeny(m) = &got {
            assert_eq!(m.source, PolicySource::Trust, "{name}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- Managed policies with gateway-style action names ----------------------------------------

#[test]
fn managed_policies_with_mapped_actions() {
    use berth_policy::actions::iam_action;
    use berth_policy::managed;

    let param = "arn:aws:ssm:us-east-1:111122223333:parameter/app/db";
    let log_stream = "arn:aws:logs:us-east-1:111122223333:log-group:/ecs/web:log-stream:web/1";
    #[rustfmt::skip]
    let cases: &[(&managed::ManagedPolicy, &str, &str, &str, bool)] = &[
        (&managed::AMAZON_ECS_TASK_EXECUTION_ROLE_POLICY, "ecr", "GetAuthorizationToken", "*", true),
        (&managed::AMAZON_ECS_TASK_EXECUTION_ROLE_POLICY, "ecr", "BatchGetImage", REPO, true),
        (&managed::AMAZON_ECS_TASK_EXECUTION_ROLE_POLICY, "logs", "PutLogEvents", log_stream, true),
        (&managed::AMAZON_ECS_TASK_EXECUTION_ROLE_POLICY, "ecr", "PutImage", REPO, false),
        (&managed::AMAZON_ECS_TASK_EXECUTION_ROLE_POLICY, "secretsmanager", "GetSecretValue", SECRET, false),
        (&managed::AMAZON_EC2_CONTAINER_REGISTRY_READ_ONLY, "ecr", "DescribeRepositories", REPO, true),
        (&managed::AMAZON_EC2_CONTAINER_REGISTRY_READ_ONLY, "ecr", "DeleteRepository", REPO, false),
        (&managed::AMAZON_SSM_READ_ONLY_ACCESS, "ssm", "GetParametersByPath", param, true),
        (&managed::AMAZON_SSM_READ_ONLY_ACCESS, "ssm", "PutParameter", param, false),
        (&managed::ADMINISTRATOR_ACCESS, "iam", "CreateRole", "arn:aws:iam::111122223333:role/x", true),
    ];
    let alice = Who::RoleSession.principal();
    let ctx = Context::new();
    for (managed, service, op, resource, want) in cases {
        let policy = managed.policy().expect("managed policy parses");
        let action = iam_action(service, op);
        let req = Request::new(&alice, &action, resource, &ctx);
        assert_eq!(
            evaluate(&[&policy], None, &req).is_allowed(),
            *want,
            "{} {action} on {resource}",
            managed.name
        );
    }
}

#[test]
fn explain_lists_the_deciding_statements_and_missing_keys() {
    use berth_policy::{explain, Effect, PolicySource};
    let allow = Policy::parse_identity(
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:*","Resource":"*"},
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"StringEquals":{"s3:prefix":"home/"}}},
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#,
    )
    .unwrap();
    let deny = Policy::parse_identity(
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Deny","Action":"s3:DeleteObject","Resource":"*"}]}"#,
    )
    .unwrap();
    let alice = PrincipalRef::user("123456789012", "/", "alice", "AIDAEXAMPLE");
    let ctx = Context::new();
    let get = Request::new(&alice, "s3:GetObject", "arn:aws:s3:::b/k", &ctx);
    let e = explain(&[&allow, &deny], None, &get);
    assert!(e.decision.is_allowed());
    let idx: Vec<usize> = e.matched.iter().map(|m| m.index).collect();
    assert_eq!(idx, vec![0, 2]);
    assert!(e
        .matched
        .iter()
        .all(|m| m.effect == Effect::Allow && m.source == PolicySource::Identity(0)));
    assert_eq!(e.missing_keys, vec!["s3:prefix".to_string()]);
    let del = Request::new(&alice, "s3:DeleteObject", "arn:aws:s3:::b/k", &ctx);
    let e = explain(&[&allow, &deny], None, &del);
    assert!(matches!(
        e.decision,
        berth_policy::Decision::ExplicitDeny(_)
    ));
    assert_eq!(e.matched.len(), 1);
    assert_eq!(e.matched[0].source, PolicySource::Identity(1));
    let other = Request::new(&alice, "ec2:RunInstances", "*", &ctx);
    assert!(explain(&[&allow], None, &other).matched.is_empty());
    assert_eq!(
        allow.condition_keys(),
        vec!["s3:prefix"],
        "condition keys of a policy"
    );
}
