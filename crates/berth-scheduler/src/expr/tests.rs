use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn parse(s: &str) -> Expression {
    parse_expression(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn fails(s: &str) -> ParseError {
    match parse_expression(s) {
        Ok(e) => panic!("{s:?} parsed as {e}"),
        Err(e) => e,
    }
}

fn host(attrs: &[(&str, Option<&str>)], groups: &[(&str, u32)]) -> InstanceSnapshot {
    InstanceSnapshot {
        ec2_instance_id: "i-abcd1234".to_string(),
        agent_connected: true,
        attributes: std::sync::Arc::new(
            attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        ),
        groups: groups.iter().map(|(g, n)| (g.to_string(), *n)).collect(),
        task_count: groups.iter().map(|(_, n)| n).sum(),
        agent_version: Some("1.14.4".to_string()),
        registered_at: parse_time("2018-02-01T10:00:00Z"),
        ..InstanceSnapshot::default()
    }
}

#[test]
fn documented_examples_parse_and_print_canonically() {
    for (input, canonical) in [
        ("attribute:ecs.instance-type == t2.small", None),
        (
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
            None,
        ),
        (
            "attribute:ecs.instance-type =~ g2.* and attribute:ecs.availability-zone != us-east-1d",
            None,
        ),
        ("task:group == service:production", None),
        (
            "not(task:group == database)",
            Some("not (task:group == database)"),
        ),
        ("runningTasksCount == 1", None),
        ("agentVersion < 1.14.5", None),
        (
            "registeredAt < 2018-02-13",
            Some("registeredAt < 2018-02-13T00:00:00Z"),
        ),
        (
            "ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']",
            Some("ec2InstanceId in [i-abcd1234, i-wxyx7890]"),
        ),
        ("attribute:stack exists", None),
        ("attribute:stack !exists", None),
        ("attribute:ecs.os-type == linux", None),
    ] {
        let e = parse(input);
        assert_eq!(e.to_string(), canonical.unwrap_or(input), "{input}");
        assert_eq!(parse(&e.to_string()), e);
    }
}

#[test]
fn keywords_are_case_insensitive_and_have_symbolic_forms() {
    let words = parse(
        "ATTRIBUTE:zone EQUALS a AND NOT (Task:Group Not_In [x, y]) OR agentconnected == TRUE",
    );
    let symbols =
        parse("attribute:zone == a && !(task:group !in [x, y]) || agentConnected == true");
    assert_eq!(words, symbols);
    assert_eq!(
        symbols.to_string(),
        "attribute:zone == a and not (task:group not_in [x, y]) or agentConnected == true"
    );
    assert_eq!(
        parse("attribute:a not_exists"),
        parse("attribute:a !exists")
    );
    assert_eq!(
        parse("attribute:a matches b.*"),
        parse("attribute:a =~ b.*")
    );
    assert_eq!(
        parse("attribute:a not_matches b.*"),
        parse("attribute:a !~ b.*")
    );
    assert_eq!(
        parse("runningTasksCount greater_than_equal 2"),
        parse("runningTasksCount >= 2")
    );
    // Attribute names and values keep their case.
    assert_ne!(parse("attribute:Zone == a"), parse("attribute:zone == a"));
    assert_ne!(parse("attribute:zone == A"), parse("attribute:zone == a"));
}

#[test]
fn precedence_not_binds_tighter_than_and_than_or() {
    let e = parse("attribute:a exists or attribute:b exists and not attribute:c exists");
    assert_eq!(
        e.to_string(),
        "attribute:a exists or attribute:b exists and not (attribute:c exists)"
    );
    let grouped = parse("(attribute:a exists or attribute:b exists) and attribute:c exists");
    assert_eq!(
        grouped.to_string(),
        "(attribute:a exists or attribute:b exists) and attribute:c exists"
    );
    let only_b = host(&[("b", None)], &[]);
    assert!(e.matches(&only_b));
    assert!(!grouped.matches(&only_b));
}

#[test]
fn errors_name_the_character_position() {
    for (input, position, message) in [
        (
            "attribute:zone",
            14,
            "expected an operator after 'attribute:zone'",
        ),
        ("attribute:zone == a and", 23, "expected a subject"),
        ("zone == a", 0, "unknown subject 'zone'"),
        ("attribute:zone = a", 15, "unexpected '='"),
        ("attribute:zone in [a, b", 23, "expected ',' or ']'"),
        ("attribute:zone in a", 18, "expected '['"),
        ("(attribute:zone == a", 20, "expected ')'"),
        ("attribute:zone == 'a", 18, "unterminated quoted value"),
        ("runningTasksCount > x", 20, "whole number"),
        (
            "ec2InstanceId > i-1",
            14,
            "cannot be used with 'ec2InstanceId'",
        ),
        ("attribute:t =~ '(a'", 15, "invalid regular expression"),
        ("attribute:zöne == a b", 20, "expected 'and', 'or'"),
        ("attribute: == a", 0, "attribute name"),
        ("agentConnected == yes", 18, "true or false"),
        ("registeredAt > 2018-13-01", 15, "date"),
        ("attribute:a == b & attribute:c exists", 17, "'&&'"),
        ("", 0, "expected a subject"),
        ("attribute:a ==", 14, "expected a value"),
    ] {
        let e = fails(input);
        assert_eq!(e.position, position, "{input}: {e}");
        assert!(e.message.contains(message), "{input}: {e}");
        assert!(e.to_string().contains(&format!("at character {position}")));
    }
    let deep = format!("{}attribute:a exists{}", "(".repeat(100), ")".repeat(100));
    assert!(fails(&deep).message.contains("nests more than"));
}

#[test]
fn attributes_compare_only_when_present() {
    let prod = host(&[("stack", Some("prod"))], &[]);
    let dev = host(&[("stack", Some("dev"))], &[]);
    let none = host(&[], &[]);
    let flag = host(&[("stack", None)], &[]);
    let ne = parse("attribute:stack != prod");
    assert!(!ne.matches(&prod) && ne.matches(&dev) && !ne.matches(&none) && ne.matches(&flag));
    let not_in = parse("attribute:stack not_in [prod, qa]");
    assert!(!not_in.matches(&prod) && not_in.matches(&dev) && !not_in.matches(&none));
    let exists = parse("attribute:stack exists");
    assert!(exists.matches(&flag) && !exists.matches(&none));
    assert!(parse("attribute:stack !exists").matches(&none));
    let re = parse("attribute:stack =~ pr.*");
    assert!(re.matches(&prod) && !re.matches(&dev) && !re.matches(&none));
    // The pattern must match the whole value.
    assert!(!parse("attribute:stack =~ ro").matches(&prod));
    assert!(parse("attribute:stack !~ ro").matches(&prod));
    let num = host(&[("size", Some("10"))], &[]);
    assert!(parse("attribute:size > 9").matches(&num));
    assert!(!parse("attribute:size < 9").matches(&num));
}

#[test]
fn task_groups_fields_and_counts() {
    let web = host(&[], &[("service:web", 2), ("family:batch", 0)]);
    let empty = host(&[], &[]);
    assert!(parse("task:group == service:web").matches(&web));
    assert!(
        !parse("task:group == family:batch").matches(&web),
        "zero counts do not count"
    );
    assert!(!parse("task:group != service:web").matches(&web));
    assert!(parse("task:group != service:web").matches(&empty));
    assert!(parse("task:group in [a, service:web]").matches(&web));
    assert!(parse("task:group =~ service:.*").matches(&web));
    assert!(parse("task:group exists").matches(&web));
    assert!(parse("task:group !exists").matches(&empty));
    assert!(parse("runningTasksCount == 2").matches(&web));
    assert!(parse("runningTasksCount < 1").matches(&empty));
    assert!(parse("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']").matches(&web));
    assert!(parse("ec2InstanceId =~ i-.*").matches(&web));
    assert!(parse("agentConnected == true").matches(&web));
    assert!(parse("agentConnected != false").matches(&web));
    assert!(parse("agentVersion < 1.14.5").matches(&web));
    assert!(parse("agentVersion >= 1.14").matches(&web));
    assert!(!parse("agentVersion == 1.14.5").matches(&web));
    assert!(parse("registeredAt < 2018-02-13").matches(&web));
    assert!(parse("registeredAt > 2018-02-01T10:59:59+01:00").matches(&web));
    assert!(!parse("registeredAt > 2018-02-01T10:00:00").matches(&web));
    let unknown = InstanceSnapshot::default();
    assert!(!parse("agentVersion < 9").matches(&unknown));
    assert!(!parse("registeredAt < 2100-01-01").matches(&unknown));
}

#[test]
fn settled_knows_what_the_batch_can_change() {
    let db = host(&[("zone", Some("a"))], &[("db", 1)]);
    let batch: BTreeSet<&str> = ["web"].into_iter().collect();
    let settled = |s: &str, inst: &InstanceSnapshot| parse(s).settled(inst, &batch);
    assert_eq!(settled("task:group == db", &db), Tri::True);
    assert_eq!(settled("task:group == cache", &db), Tri::False);
    assert_eq!(settled("task:group == web", &db), Tri::Unknown);
    assert_eq!(settled("task:group != web", &db), Tri::Unknown);
    assert_eq!(settled("task:group != db", &db), Tri::False);
    assert_eq!(settled("runningTasksCount < 3", &db), Tri::Unknown);
    assert_eq!(
        settled("attribute:zone == b and task:group == web", &db),
        Tri::False
    );
    assert_eq!(
        settled("attribute:zone == a or task:group == web", &db),
        Tri::True
    );
    assert_eq!(
        settled("attribute:zone == a and task:group == web", &db),
        Tri::Unknown
    );
}

#[test]
fn times_round_trip() {
    for s in [
        "1970-01-01T00:00:00Z",
        "2000-02-29T23:59:59Z",
        "0001-03-01T12:00:00Z",
        "9999-12-31T23:59:59Z",
    ] {
        assert_eq!(format_time(parse_time(s).unwrap()), s);
    }
    assert_eq!(
        parse_time("2018-06-18T22:28:28+02:00"),
        parse_time("2018-06-18T20:28:28Z")
    );
    assert_eq!(parse_time("2018-06-18"), parse_time("2018-06-18T00:00:00"));
    assert_eq!(parse_time("2019-02-29"), None);
    assert_eq!(parse_time("2018-06-18T24:00:00"), None);
}

// ------------------------------------------------------------ properties

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._:/*-]{1,8}",
        "[a-z ,()=!]{0,6}",
        Just("and".to_string()),
        Just("not".to_string()),
        Just("in".to_string()),
        Just("it's".to_string()),
    ]
}

fn arb_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,5}(\\.\\*)?",
        Just("(t2|m5)\\..*".to_string()),
        Just("[a-z]+-[0-9]".to_string()),
    ]
}

fn arb_cond() -> impl Strategy<Value = Cond> {
    (
        0..7usize,
        0..12usize,
        arb_text(),
        proptest::collection::vec(arb_text(), 1..4),
        arb_pattern(),
        any::<i64>(),
        proptest::collection::vec(0u64..1000, 1..4),
        -62_135_596_800i64..253_402_300_800,
        proptest::collection::vec(any::<bool>(), 1..3),
        "[a-zA-Z][a-zA-Z0-9._/-]{0,10}",
    )
        .prop_map(
            |(s, o, text, list, pattern, number, version, time, bools, name)| {
                let subject = match s {
                    0 => Subject::Attribute(name),
                    1 => Subject::Ec2InstanceId,
                    2 => Subject::AgentConnected,
                    3 => Subject::AgentVersion,
                    4 => Subject::RegisteredAt,
                    5 => Subject::RunningTasksCount,
                    _ => Subject::TaskGroup,
                };
                let ops: Vec<Op> = [
                    Op::Eq,
                    Op::Ne,
                    Op::Gt,
                    Op::Ge,
                    Op::Lt,
                    Op::Le,
                    Op::Exists,
                    Op::NotExists,
                    Op::In,
                    Op::NotIn,
                    Op::Matches,
                    Op::NotMatches,
                ]
                .into_iter()
                .filter(|op| subject.allows(*op))
                .collect();
                let op = ops[o % ops.len()];
                let arg = match (op, &subject) {
                    (Op::Exists | Op::NotExists, _) => Arg::None,
                    (Op::Matches | Op::NotMatches, _) => {
                        Arg::Pattern(Pattern::new(&pattern).expect("valid pattern"))
                    }
                    (Op::In | Op::NotIn, Subject::AgentConnected) => {
                        Arg::List(bools.iter().map(bool::to_string).collect())
                    }
                    (Op::In | Op::NotIn, _) => Arg::List(list),
                    (_, Subject::RunningTasksCount) => Arg::Number(number),
                    (_, Subject::AgentVersion) => Arg::Version(version),
                    (_, Subject::RegisteredAt) => Arg::Time(time),
                    (_, Subject::AgentConnected) => Arg::Text(bools[0].to_string()),
                    _ => Arg::Text(text),
                };
                Cond { subject, op, arg }
            },
        )
}

fn arb_node() -> impl Strategy<Value = Node> {
    arb_cond()
        .prop_map(Node::Cond)
        .prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Node::And),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Node::Or),
                inner.prop_map(|n| Node::Not(Box::new(n))),
            ]
        })
}

fn arb_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("("),
        Just(")"),
        Just("["),
        Just("]"),
        Just(","),
        Just("and"),
        Just("||"),
        Just("!"),
        Just("not"),
        Just("=="),
        Just("!in"),
        Just("=~"),
        Just("exists"),
        Just("attribute:zone"),
        Just("task:group"),
        Just("runningTasksCount"),
        Just("a"),
        Just("'b c'"),
        Just("3"),
        Just("\""),
    ];
    proptest::collection::vec(token, 0..14).prop_map(|t| t.join(" "))
}

fn arb_instance() -> impl Strategy<Value = InstanceSnapshot> {
    (
        proptest::option::of("[a-c]"),
        proptest::option::of(0u32..3),
        any::<bool>(),
    )
        .prop_map(|(zone, db, connected)| {
            let mut inst = host(&[], &[]);
            if let Some(z) = zone {
                std::sync::Arc::make_mut(&mut inst.attributes).insert("zone".into(), Some(z));
            }
            if let Some(n) = db {
                inst.groups.insert("db".into(), n);
                inst.task_count = n;
            }
            inst.agent_connected = connected;
            inst
        })
}

proptest! {
    #[test]
    fn printed_expressions_parse_back(root in arb_node()) {
        let e = Expression { root };
        let printed = e.to_string();
        let again = parse_expression(&printed);
        prop_assert_eq!(again.as_ref(), Ok(&e), "printed as {}", printed);
    }

    #[test]
    fn never_panics_on_arbitrary_text(s in any::<String>()) {
        if let Err(e) = parse_expression(&s) {
            prop_assert!(e.position <= s.chars().count());
        }
    }

    #[test]
    fn token_soup_parses_or_errors_and_reparses(s in arb_soup()) {
        match parse_expression(&s) {
            Ok(e) => prop_assert_eq!(parse_expression(&e.to_string()), Ok(e)),
            Err(e) => prop_assert!(e.position <= s.chars().count()),
        }
    }

    /// `settled` never contradicts evaluation, before or after the batch's
    /// groups are added.
    #[test]
    fn settled_agrees_with_matches(root in arb_node(), inst in arb_instance(), added in 0u32..3) {
        let e = Expression { root };
        let batch: BTreeSet<&str> = ["db", "web"].into_iter().collect();
        let now = e.settled(&inst, &batch);
        let mut later = inst.clone();
        let groups: BTreeMap<String, u32> = [("web".to_string(), added), ("db".to_string(), added)].into();
        for (g, n) in groups {
            *later.groups.entry(g).or_insert(0) += n;
            later.task_count += n;
        }
        for state in [&inst, &later] {
            match now {
                Tri::True => prop_assert!(e.matches(state)),
                Tri::False => prop_assert!(!e.matches(state)),
                Tri::Unknown => {}
            }
        }
    }
}
