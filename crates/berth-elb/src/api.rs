//! The ELBv2 operations: parse, validate, authorize, then one store
//! mutation that re-checks what depends on state.

use std::collections::BTreeMap;

use berth_model::authz::Requirement;
use berth_model::{AwsError, RequestContext};
use berth_util::time::{format_iso8601_millis, now_epoch};

use crate::attrs::{self, limit, DEFAULT_SSL_POLICY, SSL_POLICIES};
use crate::model::{
    canonical_zone, dns_name, Action, Condition, FixedResponse, Forward, HealthCheck, LbZone,
    Listener, LoadBalancer, Redirect, Rule, State, Target, TargetGroup,
};
use crate::wire::{error, validation, Params, Xml};
use crate::{ElbService, NOT_IMPLEMENTED};

type Tags = Vec<(String, String)>;

pub(crate) fn action(op: &str) -> String {
    format!("elasticloadbalancing:{op}")
}

fn tag_refs(tags: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

fn on(op: &str, arn: &str, tags: &[(String, String)]) -> Requirement {
    Requirement::new(action(op), arn).resource_tags(tag_refs(tags))
}

/// A create: `op` with the request's tags, and AddTags (with
/// `elasticloadbalancing:CreateAction`) when it tags.
fn create_reqs(
    op: &str,
    arn: &str,
    tags: &Tags,
    extra: Vec<(&str, Vec<String>)>,
) -> Vec<Requirement> {
    let mut r = Requirement::new(action(op), arn).request_tags(tag_refs(tags));
    for (k, v) in extra {
        if !v.is_empty() {
            r = r.condition_values(k, v);
        }
    }
    let mut out = vec![r];
    if !tags.is_empty() {
        out.push(
            Requirement::new(action("AddTags"), arn)
                .request_tags(tag_refs(tags))
                .condition("elasticloadbalancing:CreateAction", op),
        );
    }
    out
}

fn anywhere(op: &str) -> Vec<Requirement> {
    vec![Requirement::new(action(op), "*")]
}

fn now_iso(t: f64) -> String {
    format_iso8601_millis((t * 1000.0) as i64)
}

fn new_id() -> String {
    berth_util::ids::random_hex(8)
}

// ---- lookups ----------------------------------------------------------------

fn lb_not_found(arn: &str) -> AwsError {
    error(
        "LoadBalancerNotFound",
        format!("Load balancer '{arn}' not found"),
    )
}
fn tg_not_found(arn: &str) -> AwsError {
    error(
        "TargetGroupNotFound",
        format!("Target group '{arn}' not found"),
    )
}
fn listener_not_found(arn: &str) -> AwsError {
    error("ListenerNotFound", format!("Listener '{arn}' not found"))
}
fn rule_not_found(arn: &str) -> AwsError {
    error("RuleNotFound", format!("Rule '{arn}' not found"))
}

fn check_arn(arn: &str, kind: &str, what: &str) -> Result<(), AwsError> {
    let ok = arn.starts_with("arn:aws:elasticloadbalancing:") && arn.contains(&format!(":{kind}/"));
    if ok {
        Ok(())
    } else {
        Err(validation(format!("'{arn}' is not a valid {what} ARN")))
    }
}

fn get_lb<'a>(s: &'a State, arn: &str) -> Result<&'a LoadBalancer, AwsError> {
    check_arn(arn, "loadbalancer", "load balancer")?;
    s.load_balancers.get(arn).ok_or_else(|| lb_not_found(arn))
}
fn get_tg<'a>(s: &'a State, arn: &str) -> Result<&'a TargetGroup, AwsError> {
    check_arn(arn, "targetgroup", "target group")?;
    s.target_groups.get(arn).ok_or_else(|| tg_not_found(arn))
}
fn get_listener<'a>(s: &'a State, arn: &str) -> Result<&'a Listener, AwsError> {
    check_arn(arn, "listener", "listener")?;
    s.listeners.get(arn).ok_or_else(|| listener_not_found(arn))
}

/// A rule, or a listener's default rule (`Err` names neither).
enum RuleRef<'a> {
    Rule(&'a Rule),
    Default(&'a Listener),
}

fn get_rule<'a>(s: &'a State, arn: &str) -> Result<RuleRef<'a>, AwsError> {
    check_arn(arn, "listener-rule", "rule")?;
    if let Some(r) = s.rules.get(arn) {
        return Ok(RuleRef::Rule(r));
    }
    s.listeners
        .values()
        .find(|l| l.default_rule_arn == arn)
        .map(RuleRef::Default)
        .ok_or_else(|| rule_not_found(arn))
}

// ---- validation ---------------------------------------------------------------

fn check_name(name: &str, what: &str) -> Result<(), AwsError> {
    if name.is_empty() {
        return Err(validation(format!("{what} name cannot be empty")));
    }
    if name.len() > 32 {
        return Err(validation(format!(
            "{what} name '{name}' cannot be longer than '32' characters"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(validation(format!(
            "{what} name '{name}' can only contain characters that are alphanumeric characters or hyphens(-)"
        )));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(validation(format!(
            "{what} name '{name}' cannot begin or end with '-' character"
        )));
    }
    if what == "Load balancer" && name.to_ascii_lowercase().starts_with("internal-") {
        return Err(validation(format!(
            "Load balancer name '{name}' cannot begin with 'internal-'"
        )));
    }
    Ok(())
}

fn parse_tags(p: &Params, name: &str) -> Result<Tags, AwsError> {
    let mut out: Tags = Vec::new();
    for t in p.structs(name) {
        let key = t.get("Key").unwrap_or("").to_string();
        let value = t.get("Value").unwrap_or("").to_string();
        if key.is_empty() || key.len() > 128 {
            return Err(validation(
                "Tag keys must be between 1 and 128 characters long",
            ));
        }
        if value.len() > 256 {
            return Err(validation(
                "Tag values must be between 0 and 256 characters long",
            ));
        }
        if key.starts_with("aws:") {
            return Err(validation(format!(
                "Tag key '{key}' cannot begin with the reserved prefix 'aws:'"
            )));
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(error(
                "DuplicateTagKeys",
                format!("Tag key '{key}' is duplicated"),
            ));
        }
        out.push((key, value));
    }
    if out.len() > 50 {
        return Err(error(
            "TooManyTags",
            "The quota for the number of tags that can be assigned to a resource has been reached (50)",
        ));
    }
    Ok(out)
}

fn merge_tags(existing: &mut Tags, new: &Tags) -> Result<(), AwsError> {
    for (k, v) in new {
        match existing.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.clone(),
            None => existing.push((k.clone(), v.clone())),
        }
    }
    if existing.len() > 50 {
        return Err(error(
            "TooManyTags",
            "The quota for the number of tags that can be assigned to a resource has been reached (50)",
        ));
    }
    Ok(())
}

fn page_size(p: &Params) -> Result<usize, AwsError> {
    Ok(p.bounded("PageSize", 1, 400)?.unwrap_or(400) as usize)
}

/// A page of `items` after the marker (an index); the next marker.
fn paginate<T: Clone>(items: Vec<T>, p: &Params) -> Result<(Vec<T>, Option<String>), AwsError> {
    let size = page_size(p)?;
    let start = match p.get("Marker") {
        None | Some("") => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| validation(format!("Invalid marker '{m}'")))?,
    };
    let page: Vec<T> = items.iter().skip(start).take(size).cloned().collect();
    let next = (start + size < items.len()).then(|| (start + size).to_string());
    Ok((page, next))
}

const HTTP_PROTOCOLS: &[&str] = &["HTTP", "HTTPS"];
const ALL_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "TCP", "TLS", "UDP", "TCP_UDP", "GENEVE", "QUIC", "TCP_QUIC",
];

fn unsupported_protocol(proto: &str) -> AwsError {
    error(
        "UnsupportedProtocol",
        format!(
            "Protocol '{proto}' is not supported by Berth's load balancers: they serve HTTP and HTTPS (application) and TCP and TLS (network)"
        ),
    )
}

// ---- actions and conditions -----------------------------------------------------

const PLACEHOLDERS: &[&str] = &["#{protocol}", "#{host}", "#{port}", "#{path}", "#{query}"];

fn check_placeholders(value: &str, member: &str) -> Result<(), AwsError> {
    let mut rest = value;
    while let Some(i) = rest.find("#{") {
        let tail = &rest[i..];
        let end = tail.find('}').ok_or_else(|| {
            error(
                "InvalidLoadBalancerAction",
                format!("The redirect {member} '{value}' has an unterminated placeholder"),
            )
        })?;
        let ph = &tail[..=end];
        if !PLACEHOLDERS.contains(&ph) {
            return Err(error(
                "InvalidLoadBalancerAction",
                format!(
                    "The redirect {member} '{value}' uses an unknown placeholder '{ph}'; valid are {}",
                    PLACEHOLDERS.join(", ")
                ),
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

fn parse_actions(p: &Params, name: &str, alb: bool) -> Result<Vec<Action>, AwsError> {
    let list = p.structs(name);
    if list.is_empty() {
        return Err(validation(format!(
            "At least one action must be specified in '{name}'"
        )));
    }
    let mut out: Vec<Action> = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let kind = a
            .get("Type")
            .ok_or_else(|| validation("An action type must be specified"))?;
        let order = a.bounded("Order", 1, 50000)?.map(|n| n as u32);
        let mut action = Action {
            kind: kind.to_string(),
            order,
            ..Default::default()
        };
        match kind {
            "forward" => {
                let mut groups: Vec<(String, Option<u32>)> = Vec::new();
                let plain = a.get("TargetGroupArn").map(str::to_string);
                let fc = a.sub("ForwardConfig");
                for g in fc.structs("TargetGroups") {
                    let arn = g
                        .get("TargetGroupArn")
                        .ok_or_else(|| validation("A target group ARN must be specified in ForwardConfig"))?;
                    let weight = g.bounded("Weight", 0, 999)?.map(|n| n as u32);
                    if groups.iter().any(|(a, _)| a == arn) {
                        return Err(validation(format!(
                            "Target group '{arn}' is listed more than once in ForwardConfig"
                        )));
                    }
                    groups.push((arn.to_string(), weight));
                }
                let mut forward = Forward::default();
                match (&plain, groups.is_empty()) {
                    (None, true) => {
                        return Err(validation(
                            "A target group ARN must be specified for a forward action",
                        ))
                    }
                    (Some(arn), true) => {
                        forward.groups = vec![(arn.clone(), None)];
                        forward.plain = true;
                    }
                    (Some(arn), false) => {
                        if groups.len() != 1 || groups[0].0 != *arn {
                            return Err(validation(
                                "You cannot specify both a target group ARN and a forward config with different target groups",
                            ));
                        }
                        forward.groups = groups;
                        forward.plain = true;
                    }
                    (None, false) => forward.groups = groups,
                }
                let per_action = if alb {
                    limit("target-groups-per-action-on-application-load-balancer")
                } else {
                    limit("target-groups-per-action-on-network-load-balancer")
                };
                if forward.groups.len() > per_action {
                    return Err(error(
                        "TooManyTargetGroups",
                        format!("A forward action can name at most {per_action} target groups"),
                    ));
                }
                let st = fc.sub("TargetGroupStickinessConfig");
                forward.stickiness = st.bool("Enabled")?.unwrap_or(false);
                forward.stickiness_duration = st.bounded("DurationSeconds", 1, 604800)?.map(|n| n as u32);
                if forward.stickiness && forward.stickiness_duration.is_none() {
                    return Err(validation(
                        "A duration must be specified when target group stickiness is enabled",
                    ));
                }
                action.forward = Some(forward);
            }
            "redirect" | "fixed-response" if !alb => {
                return Err(error(
                    "InvalidLoadBalancerAction",
                    format!("Action type '{kind}' is not supported by network load balancers"),
                ))
            }
            "redirect" => {
                let rc = a.sub("RedirectConfig");
                let status = rc
                    .one_of("StatusCode", &["HTTP_301", "HTTP_302"])?
                    .ok_or_else(|| validation("A redirect status code must be specified"))?;
                let protocol = rc.get("Protocol").unwrap_or("#{protocol}").to_string();
                if !["HTTP", "HTTPS", "#{protocol}"].contains(&protocol.as_str()) {
                    return Err(validation(format!(
                        "Redirect protocol '{protocol}' must be one of 'HTTP, HTTPS, #{{protocol}}'"
                    )));
                }
                let port = rc.get("Port").unwrap_or("#{port}").to_string();
                if port != "#{port}" && !port.parse::<u16>().is_ok_and(|n| n >= 1) {
                    return Err(validation(format!(
                        "Redirect port '{port}' must be a number between 1 and 65535 or '#{{port}}'"
                    )));
                }
                let host = rc.get("Host").unwrap_or("#{host}").to_string();
                let path = rc.get("Path").unwrap_or("/#{path}").to_string();
                let query = rc.get("Query").unwrap_or("#{query}").to_string();
                if host.is_empty() || host.len() > 128 {
                    return Err(validation("Redirect host must be between 1 and 128 characters"));
                }
                if !path.starts_with('/') || path.len() > 128 {
                    return Err(validation(
                        "Redirect path must start with '/' and be at most 128 characters",
                    ));
                }
                if query.starts_with('?') || query.len() > 128 {
                    return Err(validation(
                        "Redirect query must not start with '?' and be at most 128 characters",
                    ));
                }
                check_placeholders(&host, "host")?;
                check_placeholders(&path, "path")?;
                check_placeholders(&query, "query")?;
                if protocol == "#{protocol}"
                    && port == "#{port}"
                    && host == "#{host}"
                    && path == "/#{path}"
                    && query == "#{query}"
                {
                    return Err(error(
                        "InvalidLoadBalancerAction",
                        "The redirect configuration is not valid because it creates a loop.",
                    ));
                }
                action.redirect = Some(Redirect {
                    protocol,
                    port,
                    host,
                    path,
                    query,
                    status_code: status,
                });
            }
            "fixed-response" => {
                let fr = a.sub("FixedResponseConfig");
                let status = fr
                    .get("StatusCode")
                    .ok_or_else(|| validation("A fixed-response status code must be specified"))?;
                let ok = status.len() == 3
                    && status.bytes().all(|b| b.is_ascii_digit())
                    && matches!(status.as_bytes()[0], b'2' | b'4' | b'5');
                if !ok {
                    return Err(validation(format!(
                        "1 validation error detected: Value '{status}' at 'statusCode' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(2|4|5)\\d\\d$"
                    )));
                }
                let ct = fr.get("ContentType").map(str::to_string);
                if let Some(c) = &ct {
                    const TYPES: &[&str] = &[
                        "text/plain",
                        "text/css",
                        "text/html",
                        "application/javascript",
                        "application/json",
                    ];
                    if !TYPES.contains(&c.as_str()) {
                        return Err(validation(format!(
                            "Content type '{c}' must be one of '{}'",
                            TYPES.join(", ")
                        )));
                    }
                }
                let body = fr.get("MessageBody").map(str::to_string);
                if body.as_ref().is_some_and(|b| b.len() > 1024) {
                    return Err(validation(
                        "The fixed-response message body cannot be longer than 1024 characters",
                    ));
                }
                action.fixed_response = Some(FixedResponse {
                    body,
                    status_code: status.to_string(),
                    content_type: ct,
                });
            }
            "authenticate-oidc" | "authenticate-cognito" | "jwt-validation" => {
                return Err(error(
                    "InvalidLoadBalancerAction",
                    format!(
                        "Action type '{kind}' is not supported by Berth: it has no identity provider integration (forward, redirect and fixed-response are)"
                    ),
                ))
            }
            other => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{other}' at 'actions.{}.member.type' failed to satisfy constraint: Member must satisfy enum value set: [forward, authenticate-oidc, authenticate-cognito, redirect, fixed-response, jwt-validation]",
                    i + 1
                )))
            }
        }
        out.push(action);
    }
    // Orders unique; exactly one terminal action, the last.
    let mut orders: Vec<u32> = out.iter().filter_map(|a| a.order).collect();
    orders.sort_unstable();
    if orders.windows(2).any(|w| w[0] == w[1]) {
        return Err(validation("Action orders must be unique"));
    }
    if out.len() > 1 {
        return Err(error(
            "TooManyActions",
            "Only one forward, redirect or fixed-response action can be specified",
        ));
    }
    Ok(out)
}

/// Checks the target groups an action names against the state and the
/// listener's load balancer and protocol.
fn check_action_groups(
    s: &State,
    actions: &[Action],
    lb: &LoadBalancer,
    listener_protocol: &str,
) -> Result<(), AwsError> {
    if lb.is_alb() {
        let mut unique: Vec<&str> = s
            .target_groups
            .keys()
            .filter(|g| s.lbs_of_group(g).contains(&lb.arn))
            .map(String::as_str)
            .collect();
        for g in actions.iter().flat_map(|a| a.target_groups()) {
            if !unique.contains(&g) {
                unique.push(g);
            }
        }
        let max = limit("target-groups-per-application-load-balancer");
        if unique.len() > max {
            return Err(error(
                "TooManyUniqueTargetGroupsPerLoadBalancer",
                format!("You've reached the limit on the number of unique target groups per load balancer ({max})"),
            ));
        }
    }
    for a in actions {
        for arn in a.target_groups() {
            let tg = get_tg(s, arn)?;
            let compatible = match listener_protocol {
                "HTTP" | "HTTPS" => HTTP_PROTOCOLS.contains(&tg.protocol.as_deref().unwrap_or("")),
                "TCP" => tg.protocol.as_deref() == Some("TCP"),
                "TLS" => matches!(tg.protocol.as_deref(), Some("TCP" | "TLS")),
                _ => false,
            };
            if !compatible {
                return Err(error(
                    "IncompatibleProtocols",
                    format!(
                        "The protocol '{}' of target group '{arn}' is not compatible with listener protocol '{listener_protocol}'",
                        tg.protocol.as_deref().unwrap_or("")
                    ),
                ));
            }
            if tg.vpc_id.as_deref() != Some(lb.vpc_id.as_str()) {
                return Err(error(
                    "InvalidConfigurationRequest",
                    format!(
                        "Target group '{arn}' is in VPC '{}', not in the load balancer's VPC '{}'",
                        tg.vpc_id.as_deref().unwrap_or(""),
                        lb.vpc_id
                    ),
                ));
            }
            let others: Vec<String> = s
                .lbs_of_group(arn)
                .into_iter()
                .filter(|l| *l != lb.arn)
                .collect();
            if !others.is_empty() {
                return Err(error(
                    "TargetGroupAssociationLimit",
                    format!(
                        "The following target groups cannot be associated with more than one load balancer: {arn}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

const FIELDS: &[&str] = &[
    "http-header",
    "http-request-method",
    "host-header",
    "path-pattern",
    "query-string",
    "source-ip",
];

fn parse_conditions(p: &Params) -> Result<Vec<Condition>, AwsError> {
    let mut out: Vec<Condition> = Vec::new();
    for c in p.structs("Conditions") {
        let field = c
            .get("Field")
            .ok_or_else(|| validation("A condition field must be specified"))?
            .to_string();
        if !FIELDS.contains(&field.as_str()) {
            return Err(validation(format!(
                "Condition field '{field}' must be one of '[{}]'",
                FIELDS.join(", ")
            )));
        }
        let legacy = c.list("Values");
        let config_name = match field.as_str() {
            "host-header" => "HostHeaderConfig",
            "path-pattern" => "PathPatternConfig",
            "http-header" => "HttpHeaderConfig",
            "http-request-method" => "HttpRequestMethodConfig",
            "query-string" => "QueryStringConfig",
            _ => "SourceIpConfig",
        };
        let config = c.sub(config_name);
        let has_config = c.has(config_name);
        if c.has("RegexValues") || config.has("RegexValues") {
            return Err(validation(
                "Regular expression condition values are not supported by Berth; use Values",
            ));
        }
        let mut cond = Condition {
            field: field.clone(),
            ..Default::default()
        };
        match field.as_str() {
            "host-header" | "path-pattern" => {
                if !legacy.is_empty() && has_config {
                    return Err(validation(format!(
                        "You cannot specify both 'Values' and '{config_name}' for condition '{field}'"
                    )));
                }
                if !legacy.is_empty() {
                    cond.values = legacy;
                    cond.legacy = true;
                } else {
                    cond.values = config.list("Values");
                }
            }
            _ => {
                if !legacy.is_empty() {
                    return Err(validation(format!(
                        "Condition '{field}' must be specified with '{config_name}'"
                    )));
                }
                match field.as_str() {
                    "http-header" => {
                        let name = config.get("HttpHeaderName").ok_or_else(|| {
                            validation("An HTTP header name must be specified for an http-header condition")
                        })?;
                        if name.is_empty()
                            || name.len() > 40
                            || !name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                        {
                            return Err(validation(format!(
                                "HTTP header name '{name}' is not valid"
                            )));
                        }
                        cond.header_name = Some(name.to_string());
                        cond.values = config.list("Values");
                    }
                    "http-request-method" => {
                        cond.values = config.list("Values");
                        for v in &cond.values {
                            if v.is_empty()
                                || v.len() > 40
                                || !v
                                    .bytes()
                                    .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
                            {
                                return Err(validation(format!(
                                    "HTTP request method '{v}' must contain only A-Z, hyphens (-) and underscores (_)"
                                )));
                            }
                        }
                    }
                    "query-string" => {
                        for kv in config.structs("Values") {
                            let value = kv.get("Value").ok_or_else(|| {
                                validation("A value must be specified for each query-string key/value pair")
                            })?;
                            cond.query
                                .push((kv.get("Key").map(str::to_string), value.to_string()));
                        }
                    }
                    _ => {
                        cond.values = config.list("Values");
                        for v in &cond.values {
                            let ok = v.split_once('/').is_some_and(|(ip, len)| {
                                ip.parse::<std::net::Ipv4Addr>().is_ok()
                                    && len.parse::<u8>().is_ok_and(|l| l <= 32)
                            });
                            if !ok {
                                return Err(validation(format!(
                                    "Source IP '{v}' must be an IPv4 CIDR block"
                                )));
                            }
                        }
                    }
                }
            }
        }
        if cond.values.is_empty() && cond.query.is_empty() {
            return Err(validation(format!(
                "At least one value must be specified for condition '{field}'"
            )));
        }
        for v in cond.values.iter().chain(cond.query.iter().map(|(_, v)| v)) {
            if v.len() > 128 {
                return Err(validation(format!(
                    "Condition value '{v}' cannot be longer than 128 characters"
                )));
            }
        }
        if matches!(
            field.as_str(),
            "host-header" | "path-pattern" | "http-request-method" | "source-ip"
        ) && out.iter().any(|o| o.field == field)
        {
            return Err(validation(format!(
                "A rule can only have one '{field}' condition"
            )));
        }
        out.push(cond);
    }
    if out.is_empty() {
        return Err(validation("A rule must have at least one condition"));
    }
    let values: usize = out.iter().map(|c| c.values.len() + c.query.len()).sum();
    let max = limit("condition-values-per-alb-rule");
    if values > max {
        return Err(validation(format!(
            "A rule can only have '{max}' condition values"
        )));
    }
    let wildcards: usize = out
        .iter()
        .flat_map(|c| {
            c.values
                .iter()
                .chain(c.query.iter().map(|(_, v)| v))
                .chain(c.query.iter().filter_map(|(k, _)| k.as_ref()))
        })
        .map(|v| v.matches(['*', '?']).count())
        .sum();
    let max = limit("condition-wildcards-per-alb-rule");
    if wildcards > max {
        return Err(validation(format!(
            "A rule can only have '{max}' wildcards"
        )));
    }
    Ok(out)
}

// ---- rendering ------------------------------------------------------------------

fn render_lb(x: &mut Xml, lb: &LoadBalancer) {
    x.open("member")
        .text("LoadBalancerArn", &lb.arn)
        .text("DNSName", &lb.dns_name)
        .text("CanonicalHostedZoneId", &lb.hosted_zone_id)
        .text("CreatedTime", &now_iso(lb.created))
        .text("LoadBalancerName", &lb.name)
        .text("Scheme", &lb.scheme)
        .text("VpcId", &lb.vpc_id)
        .open("State")
        .text("Code", "active")
        .close("State")
        .text("Type", &lb.lb_type);
    render_zones(x, lb);
    if !lb.security_groups.is_empty() {
        x.strings("SecurityGroups", &lb.security_groups);
    }
    x.text("IpAddressType", &lb.ip_address_type);
    x.close("member");
}

fn render_zones(x: &mut Xml, lb: &LoadBalancer) {
    x.open("AvailabilityZones");
    for z in &lb.zones {
        x.open("member")
            .text("ZoneName", &z.zone_name)
            .text("SubnetId", &z.subnet_id)
            .open("LoadBalancerAddresses")
            .open("member")
            .text("PrivateIPv4Address", &z.address)
            .close("member")
            .close("LoadBalancerAddresses")
            .close("member");
    }
    x.close("AvailabilityZones");
}

fn render_tg(x: &mut Xml, s: &State, tg: &TargetGroup) {
    x.open("member")
        .text("TargetGroupArn", &tg.arn)
        .text("TargetGroupName", &tg.name)
        .opt("Protocol", tg.protocol.as_deref());
    if let Some(p) = tg.port {
        x.num("Port", p);
    }
    x.opt("VpcId", tg.vpc_id.as_deref())
        .opt("HealthCheckProtocol", tg.health.protocol.as_deref())
        .opt("HealthCheckPort", tg.health.port.as_deref())
        .bool("HealthCheckEnabled", tg.health.enabled)
        .num("HealthCheckIntervalSeconds", tg.health.interval)
        .num("HealthCheckTimeoutSeconds", tg.health.timeout)
        .num("HealthyThresholdCount", tg.health.healthy)
        .num("UnhealthyThresholdCount", tg.health.unhealthy)
        .opt("HealthCheckPath", tg.health.path.as_deref());
    if tg.health.http_code.is_some() || tg.health.grpc_code.is_some() {
        x.open("Matcher")
            .opt("HttpCode", tg.health.http_code.as_deref())
            .opt("GrpcCode", tg.health.grpc_code.as_deref())
            .close("Matcher");
    }
    x.strings("LoadBalancerArns", &s.lbs_of_group(&tg.arn))
        .text("TargetType", &tg.target_type)
        .opt("ProtocolVersion", tg.protocol_version.as_deref())
        .opt("IpAddressType", tg.ip_address_type.as_deref())
        .close("member");
}

fn render_actions(x: &mut Xml, name: &str, actions: &[Action]) {
    x.open(name);
    for a in actions {
        x.open("member").text("Type", &a.kind);
        if let Some(o) = a.order {
            x.num("Order", o);
        }
        if let Some(f) = &a.forward {
            if f.groups.len() == 1 {
                x.text("TargetGroupArn", &f.groups[0].0);
            }
            x.open("ForwardConfig").open("TargetGroups");
            for (arn, w) in &f.groups {
                x.open("member")
                    .text("TargetGroupArn", arn)
                    .num("Weight", w.unwrap_or(1))
                    .close("member");
            }
            x.close("TargetGroups")
                .open("TargetGroupStickinessConfig")
                .bool("Enabled", f.stickiness);
            if let Some(d) = f.stickiness_duration {
                x.num("DurationSeconds", d);
            }
            x.close("TargetGroupStickinessConfig")
                .close("ForwardConfig");
        }
        if let Some(r) = &a.redirect {
            x.open("RedirectConfig")
                .text("Protocol", &r.protocol)
                .text("Port", &r.port)
                .text("Host", &r.host)
                .text("Path", &r.path)
                .text("Query", &r.query)
                .text("StatusCode", &r.status_code)
                .close("RedirectConfig");
        }
        if let Some(f) = &a.fixed_response {
            x.open("FixedResponseConfig")
                .opt("MessageBody", f.body.as_deref())
                .text("StatusCode", &f.status_code)
                .opt("ContentType", f.content_type.as_deref())
                .close("FixedResponseConfig");
        }
        x.close("member");
    }
    x.close(name);
}

fn render_listener(x: &mut Xml, l: &Listener) {
    x.open("member")
        .text("ListenerArn", &l.arn)
        .text("LoadBalancerArn", &l.lb_arn)
        .num("Port", l.port)
        .text("Protocol", &l.protocol);
    if let Some(c) = &l.certificate {
        x.open("Certificates")
            .open("member")
            .text("CertificateArn", c)
            .close("member")
            .close("Certificates");
    }
    x.opt("SslPolicy", l.ssl_policy.as_deref());
    render_actions(x, "DefaultActions", &l.default_actions);
    if let Some(a) = &l.alpn_policy {
        x.strings("AlpnPolicy", std::slice::from_ref(a));
    }
    x.close("member");
}

fn render_conditions(x: &mut Xml, conditions: &[Condition]) {
    x.open("Conditions");
    for c in conditions {
        x.open("member").text("Field", &c.field);
        if c.legacy {
            x.strings("Values", &c.values);
        }
        match c.field.as_str() {
            "host-header" => {
                x.open("HostHeaderConfig")
                    .strings("Values", &c.values)
                    .close("HostHeaderConfig");
            }
            "path-pattern" => {
                x.open("PathPatternConfig")
                    .strings("Values", &c.values)
                    .close("PathPatternConfig");
            }
            "http-header" => {
                x.open("HttpHeaderConfig")
                    .opt("HttpHeaderName", c.header_name.as_deref())
                    .strings("Values", &c.values)
                    .close("HttpHeaderConfig");
            }
            "http-request-method" => {
                x.open("HttpRequestMethodConfig")
                    .strings("Values", &c.values)
                    .close("HttpRequestMethodConfig");
            }
            "query-string" => {
                x.open("QueryStringConfig").open("Values");
                for (k, v) in &c.query {
                    x.open("member")
                        .opt("Key", k.as_deref())
                        .text("Value", v)
                        .close("member");
                }
                x.close("Values").close("QueryStringConfig");
            }
            _ => {
                x.open("SourceIpConfig")
                    .strings("Values", &c.values)
                    .close("SourceIpConfig");
            }
        }
        x.close("member");
    }
    x.close("Conditions");
}

fn render_rule(x: &mut Xml, r: &RuleRef<'_>) {
    x.open("member");
    match r {
        RuleRef::Rule(r) => {
            x.text("RuleArn", &r.arn)
                .text("Priority", &r.priority.to_string());
            render_conditions(x, &r.conditions);
            render_actions(x, "Actions", &r.actions);
            x.bool("IsDefault", false);
        }
        RuleRef::Default(l) => {
            x.text("RuleArn", &l.default_rule_arn)
                .text("Priority", "default");
            render_conditions(x, &[]);
            render_actions(x, "Actions", &l.default_actions);
            x.bool("IsDefault", true);
        }
    }
    x.close("member");
}

fn render_attrs(x: &mut Xml, attrs: &BTreeMap<String, String>) {
    x.open("Attributes");
    for (k, v) in attrs {
        x.open("member")
            .text("Key", k)
            .text("Value", v)
            .close("member");
    }
    x.close("Attributes");
}

fn parse_attrs(p: &Params) -> Result<Vec<(String, String)>, AwsError> {
    let mut out = Vec::new();
    for a in p.structs("Attributes") {
        let k = a
            .get("Key")
            .ok_or_else(|| validation("An attribute key must be specified"))?;
        out.push((k.to_string(), a.get("Value").unwrap_or("").to_string()));
    }
    if out.is_empty() {
        return Err(validation("At least one attribute must be specified"));
    }
    Ok(out)
}

// ---- dispatch -----------------------------------------------------------------------

impl ElbService {
    pub(crate) async fn dispatch(
        &self,
        ctx: &RequestContext,
        op: &str,
        p: &Params,
    ) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.as_str(), ctx.region.as_str());
        match op {
            "CreateLoadBalancer" => self.create_load_balancer(ctx, p).await,
            "DescribeLoadBalancers" => {
                ctx.authorize(&anywhere(op))?;
                let s = self.read(a, r)?;
                let arns = p.list("LoadBalancerArns");
                let names = p.list("Names");
                if !arns.is_empty() && !names.is_empty() {
                    return Err(validation(
                        "Load balancer names and load balancer ARNs cannot be specified at the same time",
                    ));
                }
                let mut list: Vec<LoadBalancer> = Vec::new();
                if !arns.is_empty() {
                    for arn in &arns {
                        list.push(get_lb(&s, arn)?.clone());
                    }
                } else if !names.is_empty() {
                    for n in &names {
                        let lb = s
                            .load_balancers
                            .values()
                            .find(|l| &l.name == n)
                            .ok_or_else(|| {
                                error(
                                    "LoadBalancerNotFound",
                                    format!("Load balancers '[{n}]' not found"),
                                )
                            })?;
                        list.push(lb.clone());
                    }
                } else {
                    list = s.load_balancers.values().cloned().collect();
                    list.sort_by(|x, y| x.created.total_cmp(&y.created));
                }
                let (page, next) = paginate(list, p)?;
                let mut x = Xml::new();
                x.open("LoadBalancers");
                for lb in &page {
                    render_lb(&mut x, lb);
                }
                x.close("LoadBalancers").opt("NextMarker", next.as_deref());
                Ok(x.finish())
            }
            "DeleteLoadBalancer" => self.delete_load_balancer(ctx, p).await,
            "SetSubnets" => self.set_subnets(ctx, p).await,
            "SetSecurityGroups" => self.set_security_groups(ctx, p).await,
            "DescribeLoadBalancerAttributes" => {
                ctx.authorize(&anywhere(op))?;
                let s = self.read(a, r)?;
                let lb = get_lb(&s, p.required("LoadBalancerArn")?)?;
                let mut x = Xml::new();
                render_attrs(&mut x, &lb.attributes);
                Ok(x.finish())
            }
            "ModifyLoadBalancerAttributes" => {
                let arn = p.required("LoadBalancerArn")?.to_string();
                let changes = parse_attrs(p)?;
                let s = self.read(a, r)?;
                let lb = get_lb(&s, &arn)?;
                ctx.authorize(&[on(op, &arn, &lb.tags)])?;
                for (k, v) in &changes {
                    attrs::check_lb(lb.is_alb(), k, v)?;
                }
                let attrs = self
                    .mutate(a, r, move |s| {
                        let lb = s
                            .load_balancers
                            .get_mut(&arn)
                            .ok_or_else(|| lb_not_found(&arn))?;
                        for (k, v) in &changes {
                            lb.attributes.insert(k.clone(), v.clone());
                        }
                        Ok(lb.attributes.clone())
                    })
                    .await?;
                let mut x = Xml::new();
                render_attrs(&mut x, &attrs);
                Ok(x.finish())
            }
            "CreateTargetGroup" => self.create_target_group(ctx, p).await,
            "DescribeTargetGroups" => {
                ctx.authorize(&anywhere(op))?;
                let s = self.read(a, r)?;
                let arns = p.list("TargetGroupArns");
                let names = p.list("Names");
                let mut list: Vec<&TargetGroup> = Vec::new();
                if !arns.is_empty() {
                    for arn in &arns {
                        list.push(get_tg(&s, arn)?);
                    }
                } else if !names.is_empty() {
                    for n in &names {
                        list.push(s.target_groups.values().find(|t| &t.name == n).ok_or_else(
                            || {
                                error(
                                    "TargetGroupNotFound",
                                    format!("Target groups '[{n}]' not found"),
                                )
                            },
                        )?);
                    }
                } else if let Some(lb_arn) = p.get("LoadBalancerArn") {
                    get_lb(&s, lb_arn)?;
                    list = s
                        .target_groups
                        .values()
                        .filter(|t| s.lbs_of_group(&t.arn).iter().any(|l| l == lb_arn))
                        .collect();
                } else {
                    list = s.target_groups.values().collect();
                }
                let (page, next) = paginate(list, p)?;
                let mut x = Xml::new();
                x.open("TargetGroups");
                for tg in page {
                    render_tg(&mut x, &s, tg);
                }
                x.close("TargetGroups").opt("NextMarker", next.as_deref());
                Ok(x.finish())
            }
            "ModifyTargetGroup" => self.modify_target_group(ctx, p).await,
            "DeleteTargetGroup" => {
                let arn = p.required("TargetGroupArn")?.to_string();
                check_arn(&arn, "targetgroup", "target group")?;
                let s = self.read(a, r)?;
                let tags = s
                    .target_groups
                    .get(&arn)
                    .map(|t| t.tags.clone())
                    .unwrap_or_default();
                ctx.authorize(&[on(op, &arn, &tags)])?;
                self.mutate(a, r, move |s| {
                    if !s.lbs_of_group(&arn).is_empty() {
                        return Err(error(
                            "ResourceInUse",
                            format!(
                                "Target group '{arn}' is currently in use by a listener or a rule"
                            ),
                        ));
                    }
                    s.target_groups.remove(&arn);
                    Ok(())
                })
                .await?;
                Ok(String::new())
            }
            "DescribeTargetGroupAttributes" => {
                ctx.authorize(&anywhere(op))?;
                let s = self.read(a, r)?;
                let tg = get_tg(&s, p.required("TargetGroupArn")?)?;
                let mut x = Xml::new();
                render_attrs(&mut x, &tg.attributes);
                Ok(x.finish())
            }
            "ModifyTargetGroupAttributes" => {
                let arn = p.required("TargetGroupArn")?.to_string();
                let changes = parse_attrs(p)?;
                let s = self.read(a, r)?;
                let tg = get_tg(&s, &arn)?;
                ctx.authorize(&[on(op, &arn, &tg.tags)])?;
                for (k, v) in &changes {
                    attrs::check_tg(tg.is_network(), k, v)?;
                }
                let attrs = self
                    .mutate(a, r, move |s| {
                        let tg = s
                            .target_groups
                            .get_mut(&arn)
                            .ok_or_else(|| tg_not_found(&arn))?;
                        for (k, v) in &changes {
                            tg.attributes.insert(k.clone(), v.clone());
                        }
                        Ok(tg.attributes.clone())
                    })
                    .await?;
                let mut x = Xml::new();
                render_attrs(&mut x, &attrs);
                Ok(x.finish())
            }
            "RegisterTargets" | "DeregisterTargets" => {
                let arn = p.required("TargetGroupArn")?.to_string();
                let s = self.read(a, r)?;
                let tg = get_tg(&s, &arn)?;
                ctx.authorize(&[on(op, &arn, &tg.tags)])?;
                let list = parse_target_list(p, tg)?;
                if op == "RegisterTargets" {
                    self.register(a, r, &arn, list).await?;
                } else {
                    self.deregister(a, r, &arn, list).await?;
                }
                Ok(String::new())
            }
            "DescribeTargetHealth" => {
                ctx.authorize(&anywhere(op))?;
                let arn = p.required("TargetGroupArn")?;
                let s = self.read(a, r)?;
                let tg = get_tg(&s, arn)?;
                let asked = if p.has("Targets") {
                    Some(parse_target_list(p, tg)?)
                } else {
                    None
                };
                Ok(self.describe_target_health(&s, tg, asked))
            }
            "CreateListener" => self.create_listener(ctx, p).await,
            "DescribeListeners" => {
                ctx.authorize(&anywhere(op))?;
                let s = self.read(a, r)?;
                let arns = p.list("ListenerArns");
                let list: Vec<&Listener> = if !arns.is_empty() {
                    arns.iter()
                        .map(|arn| get_listener(&s, arn))
                        .collect::<Result<_, _>>()?
                } else if let Some(lb) = p.get("LoadBalancerArn") {
                    get_lb(&s, lb)?;
                    let mut v: Vec<&Listener> = s.listeners_of(lb).collect();
                    v.sort_by_key(|l| l.port);
                    v
                } else {
                    return Err(validation(
                        "You must specify either listener ARNs or a load balancer ARN",
                    ));
                };
                let (page, next) = paginate(list, p)?;
                let mut x = Xml::new();
                x.open("Listeners");
                for l in page {
                    render_listener(&mut x, l);
                }
                x.close("Listeners").opt("NextMarker", next.as_deref());
                Ok(x.finish())
            }
            "ModifyListener" => self.modify_listener(ctx, p).await,
            "DeleteListener" => {
                let arn = p.required("ListenerArn")?.to_string();
                let s = self.read(a, r)?;
                let l = get_listener(&s, &arn)?;
                ctx.authorize(&[on(op, &arn, &l.tags)])?;
                self.mutate(a, r, move |s| {
                    s.listeners
                        .remove(&arn)
                        .ok_or_else(|| listener_not_found(&arn))?;
                    s.rules.retain(|_, rule| rule.listener_arn != arn);
                    Ok(())
                })
                .await?;
                Ok(String::new())
            }
            "DescribeListenerAttributes" => {
                ctx.authorize(&anywhere(op))?;
                let s = self.read(a, r)?;
                let l = get_listener(&s, p.required("ListenerArn")?)?;
                let mut x = Xml::new();
                render_attrs(&mut x, &l.attributes);
                Ok(x.finish())
            }
            "ModifyListenerAttributes" => {
                let arn = p.required("ListenerArn")?.to_string();
                let changes = parse_attrs(p)?;
                let s = self.read(a, r)?;
                let l = get_listener(&s, &arn)?;
                ctx.authorize(&[on(op, &arn, &l.tags)])?;
                for (k, v) in &changes {
                    attrs::check_listener(&l.protocol, k, v)?;
                }
                let attrs = self
                    .mutate(a, r, move |s| {
                        let l = s
                            .listeners
                            .get_mut(&arn)
                            .ok_or_else(|| listener_not_found(&arn))?;
                        for (k, v) in &changes {
                            l.attributes.insert(k.clone(), v.clone());
                        }
                        Ok(l.attributes.clone())
                    })
                    .await?;
                let mut x = Xml::new();
                render_attrs(&mut x, &attrs);
                Ok(x.finish())
            }
            "AddListenerCertificates" | "RemoveListenerCertificates" => {
                let arn = p.required("ListenerArn")?.to_string();
                let certs: Vec<String> = p
                    .structs("Certificates")
                    .iter()
                    .filter_map(|c| c.get("CertificateArn").map(str::to_string))
                    .collect();
                if certs.is_empty() {
                    return Err(validation("At least one certificate must be specified"));
                }
                let s = self.read(a, r)?;
                let l = get_listener(&s, &arn)?;
                ctx.authorize(&[on(op, &arn, &l.tags)])?;
                let add = op == "AddListenerCertificates";
                if add {
                    if !matches!(l.protocol.as_str(), "HTTPS" | "TLS") {
                        return Err(error(
                            "InvalidConfigurationRequest",
                            format!(
                                "Certificates cannot be added to a listener with protocol '{}'",
                                l.protocol
                            ),
                        ));
                    }
                    for c in &certs {
                        self.certificates.check(a, r, c)?;
                    }
                }
                let certs2 = certs.clone();
                self.mutate(a, r, move |s| {
                    let l = s.listeners.get_mut(&arn).ok_or_else(|| listener_not_found(&arn))?;
                    if add {
                        for c in &certs2 {
                            if l.certificate.as_ref() != Some(c) && !l.extra_certificates.contains(c) {
                                l.extra_certificates.push(c.clone());
                            }
                        }
                        if l.extra_certificates.len() + 1 > limit("certificates-per-application-load-balancer") {
                            return Err(error(
                                "TooManyCertificates",
                                "You've reached the limit on the number of certificates per load balancer (25)",
                            ));
                        }
                    } else {
                        for c in &certs2 {
                            if l.certificate.as_ref() == Some(c) {
                                return Err(error(
                                    "OperationNotPermitted",
                                    format!("The default certificate '{c}' cannot be removed; use ModifyListener to replace it"),
                                ));
                            }
                            l.extra_certificates.retain(|e| e != c);
                        }
                    }
                    Ok(())
                })
                .await?;
                if !add {
                    return Ok(String::new());
                }
                let mut x = Xml::new();
                x.open("Certificates");
                for c in &certs {
                    x.open("member")
                        .text("CertificateArn", c)
                        .bool("IsDefault", false)
                        .close("member");
                }
                x.close("Certificates");
                Ok(x.finish())
            }
            "DescribeListenerCertificates" => {
                ctx.authorize(&anywhere(op))?;
                let s = self.read(a, r)?;
                let l = get_listener(&s, p.required("ListenerArn")?)?;
                let mut all: Vec<(String, bool)> =
                    l.certificate.iter().map(|c| (c.clone(), true)).collect();
                all.extend(l.extra_certificates.iter().map(|c| (c.clone(), false)));
                let (page, next) = paginate(all, p)?;
                let mut x = Xml::new();
                x.open("Certificates");
                for (c, d) in page {
                    x.open("member")
                        .text("CertificateArn", &c)
                        .bool("IsDefault", d)
                        .close("member");
                }
                x.close("Certificates").opt("NextMarker", next.as_deref());
                Ok(x.finish())
            }
            "DescribeSSLPolicies" => {
                ctx.authorize(&anywhere(op))?;
                let names = p.list("Names");
                let lb_type =
                    p.one_of("LoadBalancerType", &["application", "network", "gateway"])?;
                let mut list = Vec::new();
                if names.is_empty() {
                    list.extend(SSL_POLICIES.iter());
                } else {
                    for n in &names {
                        list.push(SSL_POLICIES.iter().find(|sp| sp.name == n).ok_or_else(
                            || error("SSLPolicyNotFound", format!("SSL policy '{n}' not found")),
                        )?);
                    }
                }
                if lb_type.as_deref() == Some("gateway") {
                    list.clear();
                }
                let (page, next) = paginate(list, p)?;
                let mut x = Xml::new();
                x.open("SslPolicies");
                for sp in page {
                    x.open("member");
                    x.strings(
                        "SslProtocols",
                        &sp.protocols
                            .iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>(),
                    );
                    x.open("Ciphers");
                    for (i, c) in sp.ciphers.iter().enumerate() {
                        x.open("member")
                            .text("Name", c)
                            .num("Priority", i + 1)
                            .close("member");
                    }
                    x.close("Ciphers").text("Name", sp.name);
                    x.strings(
                        "SupportedLoadBalancerTypes",
                        &["application".to_string(), "network".to_string()],
                    );
                    x.close("member");
                }
                x.close("SslPolicies").opt("NextMarker", next.as_deref());
                Ok(x.finish())
            }
            "CreateRule" => self.create_rule(ctx, p).await,
            "DescribeRules" => {
                ctx.authorize(&anywhere(op))?;
                let s = self.read(a, r)?;
                let arns = p.list("RuleArns");
                let mut list: Vec<RuleRef<'_>> = Vec::new();
                if !arns.is_empty() {
                    for arn in &arns {
                        list.push(get_rule(&s, arn)?);
                    }
                } else if let Some(l) = p.get("ListenerArn") {
                    let l = get_listener(&s, l)?;
                    let mut rules: Vec<&Rule> = s.rules_of(&l.arn).collect();
                    rules.sort_by_key(|r| r.priority);
                    list.extend(rules.into_iter().map(RuleRef::Rule));
                    list.push(RuleRef::Default(l));
                } else {
                    return Err(validation(
                        "You must specify either listener ARN or rule ARNs",
                    ));
                }
                let size = page_size(p)?;
                let start: usize = p.get("Marker").and_then(|m| m.parse().ok()).unwrap_or(0);
                let mut x = Xml::new();
                x.open("Rules");
                for rr in list.iter().skip(start).take(size) {
                    render_rule(&mut x, rr);
                }
                x.close("Rules");
                if start + size < list.len() {
                    x.text("NextMarker", &(start + size).to_string());
                }
                Ok(x.finish())
            }
            "ModifyRule" => self.modify_rule(ctx, p).await,
            "DeleteRule" => {
                let arn = p.required("RuleArn")?.to_string();
                let s = self.read(a, r)?;
                let tags = match get_rule(&s, &arn)? {
                    RuleRef::Rule(r) => r.tags.clone(),
                    RuleRef::Default(_) => Vec::new(),
                };
                ctx.authorize(&[on(op, &arn, &tags)])?;
                self.mutate(a, r, move |s| match get_rule(s, &arn)? {
                    RuleRef::Default(_) => Err(error(
                        "OperationNotPermitted",
                        format!("Default rule '{arn}' cannot be deleted"),
                    )),
                    RuleRef::Rule(_) => {
                        s.rules.remove(&arn);
                        Ok(())
                    }
                })
                .await?;
                Ok(String::new())
            }
            "SetRulePriorities" => self.set_rule_priorities(ctx, p).await,
            "AddTags" | "RemoveTags" | "DescribeTags" => self.tags(ctx, op, p).await,
            "DescribeAccountLimits" => {
                ctx.authorize(&anywhere(op))?;
                let (page, next) = paginate(attrs::LIMITS.to_vec(), p)?;
                let mut x = Xml::new();
                x.open("Limits");
                for (n, m) in page {
                    x.open("member")
                        .text("Name", n)
                        .text("Max", &m.to_string())
                        .close("member");
                }
                x.close("Limits").opt("NextMarker", next.as_deref());
                Ok(x.finish())
            }
            other => {
                if let Some((_, reason)) = NOT_IMPLEMENTED.iter().find(|(n, _)| *n == other) {
                    ctx.authorize(&anywhere(other))?;
                    return Err(error("OperationNotPermitted", format!("{other}: {reason}")));
                }
                Err(AwsError::bad_request("InvalidAction", ""))
            }
        }
    }

    // ---- load balancers ----

    async fn create_load_balancer(
        &self,
        ctx: &RequestContext,
        p: &Params,
    ) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let name = p.required("Name")?.to_string();
        check_name(&name, "Load balancer")?;
        let lb_type = p
            .one_of("Type", &["application", "network", "gateway"])?
            .unwrap_or_else(|| "application".into());
        if lb_type == "gateway" {
            return Err(validation(
                "Gateway load balancers are not supported by Berth: it has no GENEVE appliances to route to",
            ));
        }
        let alb = lb_type == "application";
        let scheme = p
            .one_of("Scheme", &["internet-facing", "internal"])?
            .unwrap_or_else(|| "internet-facing".into());
        let ip_type = p
            .one_of(
                "IpAddressType",
                &["ipv4", "dualstack", "dualstack-without-public-ipv4"],
            )?
            .unwrap_or_else(|| "ipv4".into());
        if ip_type != "ipv4" {
            return Err(validation(format!(
                "IpAddressType '{ip_type}' is not supported: Berth's VPCs are IPv4-only"
            )));
        }
        if p.has("CustomerOwnedIpv4Pool") || p.has("IpamPools") {
            return Err(validation(
                "Customer-owned and IPAM address pools are not supported by Berth",
            ));
        }
        let subnet_ids = self.subnet_ids(p)?;
        let tags = parse_tags(p, "Tags")?;
        let groups_in = p.list("SecurityGroups");
        let subnets = self.check_subnets(&a, &r, &subnet_ids, alb)?;
        let vpc = subnets[0].vpc_id.clone();
        let groups = if alb || !groups_in.is_empty() {
            self.networks.security_groups(&a, &r, &vpc, &groups_in)?
        } else {
            Vec::new()
        };
        let kind = if alb { "app" } else { "net" };
        let id = new_id();
        let arn = format!("arn:aws:elasticloadbalancing:{r}:{a}:loadbalancer/{kind}/{name}/{id}");
        ctx.authorize(&create_reqs(
            "CreateLoadBalancer",
            &arn,
            &tags,
            vec![
                ("elasticloadbalancing:Scheme", vec![scheme.clone()]),
                ("elasticloadbalancing:Subnet", subnet_ids.clone()),
                ("elasticloadbalancing:SecurityGroup", groups.clone()),
            ],
        ))?;
        // Idempotent: the same name with the same settings answers the
        // existing load balancer.
        let s = self.read(&a, &r)?;
        if let Some(existing) = s.load_balancers.values().find(|l| l.name == name) {
            let same = existing.lb_type == lb_type
                && existing.scheme == scheme
                && existing
                    .zones
                    .iter()
                    .map(|z| &z.subnet_id)
                    .eq(subnet_ids.iter());
            if same {
                let mut x = Xml::new();
                x.open("LoadBalancers");
                render_lb(&mut x, existing);
                x.close("LoadBalancers");
                return Ok(x.finish());
            }
            return Err(duplicate_lb(&name));
        }
        check_lb_quota(&s, alb)?;
        // Interfaces first; released again if the write fails.
        let description = format!("ELB {kind}/{name}/{id}");
        let mut zones: Vec<LbZone> = Vec::new();
        for sn in &subnets {
            match self
                .networks
                .attach(&a, &r, &sn.subnet_id, &groups, &description)
                .await
            {
                Ok((eni, ip)) => zones.push(LbZone {
                    subnet_id: sn.subnet_id.clone(),
                    zone_name: sn.availability_zone.clone(),
                    zone_id: sn.zone_id.clone(),
                    eni_id: eni,
                    address: ip.to_string(),
                }),
                Err(e) => {
                    self.release(&a, &r, &zones).await;
                    return Err(e);
                }
            }
        }
        let lb = LoadBalancer {
            arn: arn.clone(),
            name: name.clone(),
            lb_type: lb_type.clone(),
            scheme: scheme.clone(),
            vpc_id: vpc,
            created: now_epoch(),
            dns_name: dns_name(&name, &lb_type, &scheme, &r),
            hosted_zone_id: canonical_zone(&r, &lb_type).to_string(),
            zones: zones.clone(),
            security_groups: groups,
            ip_address_type: ip_type,
            attributes: attrs::lb_defaults(alb),
            tags,
        };
        let record = lb.clone();
        let written = self
            .mutate(&a, &r, move |s| {
                if s.load_balancers.values().any(|l| l.name == record.name) {
                    return Err(duplicate_lb(&record.name));
                }
                check_lb_quota(s, alb)?;
                s.load_balancers.insert(record.arn.clone(), record.clone());
                Ok(())
            })
            .await;
        if let Err(e) = written {
            self.release(&a, &r, &zones).await;
            return Err(e);
        }
        let mut x = Xml::new();
        x.open("LoadBalancers");
        render_lb(&mut x, &lb);
        x.close("LoadBalancers");
        Ok(x.finish())
    }

    fn subnet_ids(&self, p: &Params) -> Result<Vec<String>, AwsError> {
        let plain = p.list("Subnets");
        let mappings = p.structs("SubnetMappings");
        if !plain.is_empty() && !mappings.is_empty() {
            return Err(validation(
                "You can specify subnets or subnet mappings, not both",
            ));
        }
        let mut ids = plain;
        for m in &mappings {
            if m.has("AllocationId") || m.has("IPv6Address") || m.has("PrivateIPv4Address") {
                return Err(validation(
                    "Subnet mappings with an allocation ID or a fixed address are not supported by Berth: it assigns each load balancer the next free address of the subnet",
                ));
            }
            ids.push(
                m.get("SubnetId")
                    .ok_or_else(|| {
                        validation("A subnet ID must be specified in each subnet mapping")
                    })?
                    .to_string(),
            );
        }
        if ids.is_empty() {
            return Err(validation("At least one subnet must be specified"));
        }
        Ok(ids)
    }

    fn check_subnets(
        &self,
        a: &str,
        r: &str,
        ids: &[String],
        alb: bool,
    ) -> Result<Vec<crate::SubnetInfo>, AwsError> {
        let subnets = self.networks.subnets(a, r, ids)?;
        let Some(first) = subnets.first() else {
            return Err(validation("At least one subnet must be specified"));
        };
        if subnets.iter().any(|s| s.vpc_id != first.vpc_id) {
            return Err(error(
                "InvalidConfigurationRequest",
                "All subnets of a load balancer must belong to the same VPC",
            ));
        }
        for (i, s) in subnets.iter().enumerate() {
            if subnets[..i]
                .iter()
                .any(|o| o.availability_zone == s.availability_zone)
            {
                return Err(error(
                    "InvalidConfigurationRequest",
                    format!(
                        "A load balancer cannot be attached to multiple subnets in the same Availability Zone ({})",
                        s.availability_zone
                    ),
                ));
            }
        }
        if alb && subnets.len() < 2 {
            return Err(validation(
                "At least two subnets in two different Availability Zones must be specified",
            ));
        }
        Ok(subnets)
    }

    async fn release(&self, a: &str, r: &str, zones: &[LbZone]) {
        for z in zones {
            if let Err(e) = self.networks.detach(a, r, &z.eni_id).await {
                tracing::warn!(eni = %z.eni_id, code = %e.code, "releasing a load balancer interface failed");
            }
        }
    }

    async fn delete_load_balancer(
        &self,
        ctx: &RequestContext,
        p: &Params,
    ) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let arn = p.required("LoadBalancerArn")?.to_string();
        check_arn(&arn, "loadbalancer", "load balancer")?;
        let s = self.read(&a, &r)?;
        let tags = s
            .load_balancers
            .get(&arn)
            .map(|l| l.tags.clone())
            .unwrap_or_default();
        ctx.authorize(&[on("DeleteLoadBalancer", &arn, &tags)])?;
        let removed = self
            .mutate(&a, &r, move |s| {
                let Some(lb) = s.load_balancers.get(&arn) else {
                    return Ok(None);
                };
                if lb.attributes.get("deletion_protection.enabled").map(String::as_str) == Some("true") {
                    return Err(error(
                        "OperationNotPermitted",
                        format!("Load balancer '{arn}' cannot be deleted because deletion protection is enabled"),
                    ));
                }
                let lb = s.load_balancers.remove(&arn);
                let listeners: Vec<String> = s.listeners_of(&arn).map(|l| l.arn.clone()).collect();
                for l in &listeners {
                    s.listeners.remove(l);
                }
                s.rules.retain(|_, rule| !listeners.contains(&rule.listener_arn));
                Ok(lb)
            })
            .await?;
        if let Some(lb) = removed {
            self.release(&a, &r, &lb.zones).await;
        }
        Ok(String::new())
    }

    async fn set_subnets(&self, ctx: &RequestContext, p: &Params) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let arn = p.required("LoadBalancerArn")?.to_string();
        if let Some(t) = p.get("IpAddressType") {
            if t != "ipv4" {
                return Err(validation(format!(
                    "IpAddressType '{t}' is not supported: Berth's VPCs are IPv4-only"
                )));
            }
        }
        let ids = self.subnet_ids(p)?;
        let s = self.read(&a, &r)?;
        let lb = get_lb(&s, &arn)?.clone();
        ctx.authorize(&[on("SetSubnets", &arn, &lb.tags)
            .condition_values("elasticloadbalancing:Subnet", ids.clone())])?;
        let subnets = self.check_subnets(&a, &r, &ids, lb.is_alb())?;
        if subnets.iter().any(|s| s.vpc_id != lb.vpc_id) {
            return Err(error(
                "InvalidSubnet",
                format!(
                    "The subnets must belong to the load balancer's VPC '{}'",
                    lb.vpc_id
                ),
            ));
        }
        let description = format!("ELB {}", lb.path());
        let mut added: Vec<LbZone> = Vec::new();
        let mut zones: Vec<LbZone> = Vec::new();
        for sn in &subnets {
            if let Some(z) = lb.zones.iter().find(|z| z.subnet_id == sn.subnet_id) {
                zones.push(z.clone());
                continue;
            }
            match self
                .networks
                .attach(&a, &r, &sn.subnet_id, &lb.security_groups, &description)
                .await
            {
                Ok((eni, ip)) => {
                    let z = LbZone {
                        subnet_id: sn.subnet_id.clone(),
                        zone_name: sn.availability_zone.clone(),
                        zone_id: sn.zone_id.clone(),
                        eni_id: eni,
                        address: ip.to_string(),
                    };
                    added.push(z.clone());
                    zones.push(z);
                }
                Err(e) => {
                    self.release(&a, &r, &added).await;
                    return Err(e);
                }
            }
        }
        let removed: Vec<LbZone> = lb
            .zones
            .iter()
            .filter(|z| !zones.iter().any(|n| n.subnet_id == z.subnet_id))
            .cloned()
            .collect();
        let new_zones = zones.clone();
        let arn2 = arn.clone();
        let written = self
            .mutate(&a, &r, move |s| {
                let lb = s
                    .load_balancers
                    .get_mut(&arn2)
                    .ok_or_else(|| lb_not_found(&arn2))?;
                lb.zones = new_zones.clone();
                Ok(lb.clone())
            })
            .await;
        match written {
            Ok(lb) => {
                self.release(&a, &r, &removed).await;
                let mut x = Xml::new();
                render_zones(&mut x, &lb);
                x.text("IpAddressType", &lb.ip_address_type);
                Ok(x.finish())
            }
            Err(e) => {
                self.release(&a, &r, &added).await;
                Err(e)
            }
        }
    }

    async fn set_security_groups(
        &self,
        ctx: &RequestContext,
        p: &Params,
    ) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let arn = p.required("LoadBalancerArn")?.to_string();
        if !p.has("SecurityGroups") {
            p.required("SecurityGroups")?;
        }
        let ids = p.list("SecurityGroups");
        let s = self.read(&a, &r)?;
        let lb = get_lb(&s, &arn)?.clone();
        ctx.authorize(&[on("SetSecurityGroups", &arn, &lb.tags)
            .condition_values("elasticloadbalancing:SecurityGroup", ids.clone())])?;
        if !lb.is_alb() && lb.security_groups.is_empty() {
            return Err(error(
                "InvalidConfigurationRequest",
                "You cannot set security groups on a Network Load Balancer which was created without any security groups.",
            ));
        }
        if lb.is_alb() && ids.is_empty() {
            return Err(validation(
                "An Application Load Balancer must have at least one security group",
            ));
        }
        let groups = if ids.is_empty() {
            Vec::new()
        } else {
            self.networks
                .security_groups(&a, &r, &lb.vpc_id, &ids)
                .map_err(|e| error("InvalidSecurityGroup", e.message))?
        };
        // The interfaces first: their groups are what the data plane and
        // other groups' rules see. Without groups (an NLB's), the VPC's
        // default group.
        let eni_groups = if groups.is_empty() {
            self.networks
                .security_groups(&a, &r, &lb.vpc_id, &[])
                .map_err(|e| error("InvalidSecurityGroup", e.message))?
        } else {
            groups.clone()
        };
        for zone in &lb.zones {
            self.networks
                .set_groups(&a, &r, &zone.eni_id, &eni_groups)
                .await?;
        }
        let g2 = groups.clone();
        self.mutate(&a, &r, move |s| {
            let lb = s
                .load_balancers
                .get_mut(&arn)
                .ok_or_else(|| lb_not_found(&arn))?;
            lb.security_groups = g2.clone();
            Ok(())
        })
        .await?;
        let mut x = Xml::new();
        x.strings("SecurityGroupIds", &groups);
        Ok(x.finish())
    }

    // ---- target groups ----

    async fn create_target_group(
        &self,
        ctx: &RequestContext,
        p: &Params,
    ) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let name = p.required("Name")?.to_string();
        check_name(&name, "Target group")?;
        let target_type = p
            .one_of("TargetType", &["instance", "ip", "lambda", "alb"])?
            .unwrap_or_else(|| "instance".into());
        if target_type == "lambda" || target_type == "alb" {
            return Err(validation(format!(
                "Target type '{target_type}' is not supported by Berth: targets are ECS container instances (instance) or task addresses (ip)"
            )));
        }
        let protocol = p
            .one_of("Protocol", ALL_PROTOCOLS)?
            .ok_or_else(|| validation("A protocol must be specified"))?;
        if !matches!(protocol.as_str(), "HTTP" | "HTTPS" | "TCP" | "TLS") {
            return Err(unsupported_protocol(&protocol));
        }
        let port = p
            .bounded("Port", 1, 65535)?
            .ok_or_else(|| validation("A port must be specified"))? as u16;
        let vpc = p
            .get("VpcId")
            .ok_or_else(|| validation("A VPC ID must be specified"))?
            .to_string();
        if self.networks.vpc_cidr(&a, &r, &vpc)?.is_none() {
            return Err(validation(format!("The VPC ID '{vpc}' is not found")));
        }
        if let Some(t) = p.get("IpAddressType") {
            if t != "ipv4" {
                return Err(validation(format!(
                    "IpAddressType '{t}' is not supported: Berth's VPCs are IPv4-only"
                )));
            }
        }
        let http = HTTP_PROTOCOLS.contains(&protocol.as_str());
        let version = p.one_of("ProtocolVersion", &["HTTP1", "HTTP2", "GRPC"])?;
        if version.is_some() && !http {
            return Err(validation(
                "A protocol version can only be specified for target groups with the HTTP or HTTPS protocol",
            ));
        }
        let version = if http {
            Some(version.unwrap_or_else(|| "HTTP1".into()))
        } else {
            None
        };
        let defaults = default_health(&protocol, version.as_deref());
        let health = parse_health(p, defaults, &protocol, version.as_deref())?;
        let tags = parse_tags(p, "Tags")?;
        let id = new_id();
        let arn = format!("arn:aws:elasticloadbalancing:{r}:{a}:targetgroup/{name}/{id}");
        ctx.authorize(&create_reqs("CreateTargetGroup", &arn, &tags, Vec::new()))?;
        let tg = TargetGroup {
            arn,
            name: name.clone(),
            protocol: Some(protocol.clone()),
            protocol_version: version,
            port: Some(port),
            vpc_id: Some(vpc),
            ip_address_type: Some("ipv4".into()),
            attributes: attrs::tg_defaults(!http, &target_type),
            target_type,
            health,
            tags,
            targets: Vec::new(),
        };
        let tg = self
            .mutate(&a, &r, move |s| {
                if let Some(existing) = s.target_groups.values().find(|t| t.name == tg.name) {
                    let same = existing.protocol == tg.protocol
                        && existing.port == tg.port
                        && existing.vpc_id == tg.vpc_id
                        && existing.target_type == tg.target_type
                        && existing.health == tg.health;
                    if same {
                        return Ok(existing.clone());
                    }
                    return Err(error(
                        "DuplicateTargetGroupName",
                        format!("A target group with the same name '{}' exists, but with different settings", tg.name),
                    ));
                }
                if s.target_groups.len() >= limit("target-groups") {
                    return Err(error(
                        "TooManyTargetGroups",
                        format!("You have reached the maximum number of target groups ({})", limit("target-groups")),
                    ));
                }
                s.target_groups.insert(tg.arn.clone(), tg.clone());
                Ok(tg.clone())
            })
            .await?;
        let s = self.read(&a, &r)?;
        let mut x = Xml::new();
        x.open("TargetGroups");
        render_tg(&mut x, &s, &tg);
        x.close("TargetGroups");
        Ok(x.finish())
    }

    async fn modify_target_group(
        &self,
        ctx: &RequestContext,
        p: &Params,
    ) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let arn = p.required("TargetGroupArn")?.to_string();
        let s = self.read(&a, &r)?;
        let tg = get_tg(&s, &arn)?;
        ctx.authorize(&[on("ModifyTargetGroup", &arn, &tg.tags)])?;
        let protocol = tg.protocol.clone().unwrap_or_default();
        let health = parse_health(
            p,
            tg.health.clone(),
            &protocol,
            tg.protocol_version.as_deref(),
        )?;
        let tg = self
            .mutate(&a, &r, move |s| {
                let tg = s
                    .target_groups
                    .get_mut(&arn)
                    .ok_or_else(|| tg_not_found(&arn))?;
                tg.health = health.clone();
                Ok(tg.clone())
            })
            .await?;
        let s = self.read(&a, &r)?;
        let mut x = Xml::new();
        x.open("TargetGroups");
        render_tg(&mut x, &s, &tg);
        x.close("TargetGroups");
        Ok(x.finish())
    }

    // ---- listeners ----

    fn check_certificate(
        &self,
        a: &str,
        r: &str,
        protocol: &str,
        p: &Params,
        current: Option<&str>,
    ) -> Result<Option<String>, AwsError> {
        let certs: Vec<String> = p
            .structs("Certificates")
            .iter()
            .filter_map(|c| c.get("CertificateArn").map(str::to_string))
            .collect();
        let secure = matches!(protocol, "HTTPS" | "TLS");
        if !secure {
            if !certs.is_empty() {
                return Err(validation(format!(
                    "Certificates cannot be specified for a listener with protocol '{protocol}'"
                )));
            }
            return Ok(None);
        }
        if certs.len() > 1 {
            return Err(error(
                "TooManyCertificates",
                "Only one default certificate can be specified for a listener",
            ));
        }
        match certs
            .into_iter()
            .next()
            .or_else(|| current.map(str::to_string))
        {
            None => Err(error(
                "CertificateNotFound",
                format!("A certificate must be specified for {protocol} listeners"),
            )),
            Some(c) => {
                self.certificates.check(a, r, &c)?;
                Ok(Some(c))
            }
        }
    }

    async fn create_listener(&self, ctx: &RequestContext, p: &Params) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let lb_arn = p.required("LoadBalancerArn")?.to_string();
        let s = self.read(&a, &r)?;
        let lb = get_lb(&s, &lb_arn)?.clone();
        let protocol = p.one_of("Protocol", ALL_PROTOCOLS)?.unwrap_or_else(|| {
            if lb.is_alb() {
                "HTTP".into()
            } else {
                "TCP".into()
            }
        });
        check_listener_protocol(&lb, &protocol)?;
        let port =
            p.bounded("Port", 1, 65535)?
                .ok_or_else(|| validation("A listener port must be specified"))? as u16;
        let cert = self.check_certificate(&a, &r, &protocol, p, None)?;
        let ssl_policy = ssl_policy(p, &protocol, None)?;
        let alpn = alpn(p, &protocol)?;
        if p.has("MutualAuthentication") {
            let mode = p
                .sub("MutualAuthentication")
                .get("Mode")
                .unwrap_or("off")
                .to_string();
            if mode != "off" {
                return Err(validation(
                    "Mutual TLS is not supported by Berth: trust stores are not implemented",
                ));
            }
        }
        let actions = parse_actions(p, "DefaultActions", lb.is_alb())?;
        let tags = parse_tags(p, "Tags")?;
        let kind_path = lb.path().to_string();
        let id = new_id();
        let arn = format!("arn:aws:elasticloadbalancing:{r}:{a}:listener/{kind_path}/{id}");
        let default_rule_arn = format!(
            "arn:aws:elasticloadbalancing:{r}:{a}:listener-rule/{kind_path}/{id}/{}",
            new_id()
        );
        let mut reqs = create_reqs(
            "CreateListener",
            &arn,
            &tags,
            vec![
                (
                    "elasticloadbalancing:ListenerProtocol",
                    vec![protocol.clone()],
                ),
                (
                    "elasticloadbalancing:SslPolicy",
                    ssl_policy.iter().cloned().collect(),
                ),
            ],
        );
        reqs[0] = reqs[0].clone().resource_tags(tag_refs(&lb.tags));
        ctx.authorize(&reqs)?;
        let listener = Listener {
            arn,
            lb_arn: lb_arn.clone(),
            port,
            protocol: protocol.clone(),
            ssl_policy,
            certificate: cert,
            extra_certificates: Vec::new(),
            alpn_policy: alpn,
            default_actions: actions,
            default_rule_arn,
            attributes: attrs::listener_defaults(&protocol),
            tags,
        };
        let l = listener.clone();
        self.mutate(&a, &r, move |s| {
            let lb = get_lb(s, &l.lb_arn)?.clone();
            if s.listeners_of(&l.lb_arn).any(|o| o.port == l.port) {
                return Err(error(
                    "DuplicateListener",
                    format!("A listener already exists on port {} of load balancer '{}'", l.port, l.lb_arn),
                ));
            }
            let max = if lb.is_alb() {
                limit("listeners-per-application-load-balancer")
            } else {
                limit("listeners-per-network-load-balancer")
            };
            if s.listeners_of(&l.lb_arn).count() >= max {
                return Err(error(
                    "TooManyListeners",
                    format!("You've reached the limit on the number of listeners per load balancer ({max})"),
                ));
            }
            if lb.is_alb() && s.rule_count(&l.lb_arn) + 1 > limit("rules-per-application-load-balancer") {
                return Err(error(
                    "TooManyRules",
                    "You've reached the limit on the number of rules per load balancer (100)",
                ));
            }
            check_action_groups(s, &l.default_actions, &lb, &l.protocol)?;
            s.listeners.insert(l.arn.clone(), l.clone());
            Ok(())
        })
        .await?;
        let mut x = Xml::new();
        x.open("Listeners");
        render_listener(&mut x, &listener);
        x.close("Listeners");
        Ok(x.finish())
    }

    async fn modify_listener(&self, ctx: &RequestContext, p: &Params) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let arn = p.required("ListenerArn")?.to_string();
        let s = self.read(&a, &r)?;
        let l = get_listener(&s, &arn)?.clone();
        let lb = get_lb(&s, &l.lb_arn)?.clone();
        let protocol = p
            .one_of("Protocol", ALL_PROTOCOLS)?
            .unwrap_or_else(|| l.protocol.clone());
        check_listener_protocol(&lb, &protocol)?;
        let port = p.bounded("Port", 1, 65535)?.map_or(l.port, |n| n as u16);
        let cert = self.check_certificate(&a, &r, &protocol, p, l.certificate.as_deref())?;
        let ssl = ssl_policy(p, &protocol, l.ssl_policy.as_deref())?;
        let alpn_policy = if p.has("AlpnPolicy") {
            alpn(p, &protocol)?
        } else {
            l.alpn_policy.clone()
        };
        let actions = if p.has("DefaultActions") {
            Some(parse_actions(p, "DefaultActions", lb.is_alb())?)
        } else {
            None
        };
        let mut reqs = vec![on("ModifyListener", &arn, &l.tags)
            .condition("elasticloadbalancing:ListenerProtocol", protocol.clone())];
        if let Some(sp) = &ssl {
            reqs[0] = reqs[0]
                .clone()
                .condition("elasticloadbalancing:SslPolicy", sp.clone());
        }
        ctx.authorize(&reqs)?;
        let updated = self
            .mutate(&a, &r, move |s| {
                let current = get_listener(s, &arn)?.clone();
                let lb = get_lb(s, &current.lb_arn)?.clone();
                if port != current.port && s.listeners_of(&current.lb_arn).any(|o| o.port == port) {
                    return Err(error(
                        "DuplicateListener",
                        format!(
                            "A listener already exists on port {port} of load balancer '{}'",
                            current.lb_arn
                        ),
                    ));
                }
                let mut next = current.clone();
                next.port = port;
                if next.protocol != protocol {
                    next.attributes = attrs::listener_defaults(&protocol);
                }
                next.protocol = protocol.clone();
                next.certificate = cert.clone();
                if cert.is_none() {
                    next.extra_certificates.clear();
                }
                next.ssl_policy = ssl.clone();
                next.alpn_policy = alpn_policy.clone();
                if let Some(actions) = &actions {
                    next.default_actions = actions.clone();
                }
                check_action_groups(s, &next.default_actions, &lb, &next.protocol)?;
                for rule in s.rules_of(&arn) {
                    check_action_groups(s, &rule.actions, &lb, &next.protocol)?;
                }
                s.listeners.insert(arn.clone(), next.clone());
                Ok(next)
            })
            .await?;
        let mut x = Xml::new();
        x.open("Listeners");
        render_listener(&mut x, &updated);
        x.close("Listeners");
        Ok(x.finish())
    }

    // ---- rules ----

    async fn create_rule(&self, ctx: &RequestContext, p: &Params) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let listener_arn = p.required("ListenerArn")?.to_string();
        let priority =
            p.bounded("Priority", 1, 50000)?
                .ok_or_else(|| validation("A rule priority must be specified"))? as u32;
        if p.has("Transforms") {
            return Err(validation("Rule transforms are not supported by Berth"));
        }
        let s = self.read(&a, &r)?;
        let l = get_listener(&s, &listener_arn)?.clone();
        let lb = get_lb(&s, &l.lb_arn)?.clone();
        if !lb.is_alb() {
            return Err(error(
                "InvalidConfigurationRequest",
                "Rules are not supported for listeners of Network Load Balancers",
            ));
        }
        let conditions = parse_conditions(p)?;
        let actions = parse_actions(p, "Actions", true)?;
        let tags = parse_tags(p, "Tags")?;
        let rest = listener_arn
            .split_once(":listener/")
            .map_or("", |(_, x)| x)
            .to_string();
        let arn = format!(
            "arn:aws:elasticloadbalancing:{r}:{a}:listener-rule/{rest}/{}",
            new_id()
        );
        let mut reqs = create_reqs("CreateRule", &arn, &tags, Vec::new());
        reqs[0] = reqs[0].clone().resource_tags(tag_refs(&l.tags));
        ctx.authorize(&reqs)?;
        let rule = Rule {
            arn,
            listener_arn,
            priority,
            conditions,
            actions,
            tags,
        };
        let rr = rule.clone();
        self.mutate(&a, &r, move |s| {
            let l = get_listener(s, &rr.listener_arn)?.clone();
            let lb = get_lb(s, &l.lb_arn)?.clone();
            if s.rules_of(&l.arn).any(|o| o.priority == rr.priority) {
                return Err(error(
                    "PriorityInUse",
                    format!("Priority '{}' is currently in use", rr.priority),
                ));
            }
            if s.rule_count(&lb.arn) + 1 > limit("rules-per-application-load-balancer") {
                return Err(error(
                    "TooManyRules",
                    "You've reached the limit on the number of rules per load balancer (100)",
                ));
            }
            check_action_groups(s, &rr.actions, &lb, &l.protocol)?;
            s.rules.insert(rr.arn.clone(), rr.clone());
            Ok(())
        })
        .await?;
        let mut x = Xml::new();
        x.open("Rules");
        render_rule(&mut x, &RuleRef::Rule(&rule));
        x.close("Rules");
        Ok(x.finish())
    }

    async fn modify_rule(&self, ctx: &RequestContext, p: &Params) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let arn = p.required("RuleArn")?.to_string();
        if p.has("Transforms") {
            return Err(validation("Rule transforms are not supported by Berth"));
        }
        let s = self.read(&a, &r)?;
        let (tags, is_default) = match get_rule(&s, &arn)? {
            RuleRef::Rule(r) => (r.tags.clone(), false),
            RuleRef::Default(_) => (Vec::new(), true),
        };
        let conditions = if p.has("Conditions") {
            if is_default {
                return Err(error(
                    "OperationNotPermitted",
                    format!("Conditions cannot be set on the default rule '{arn}'"),
                ));
            }
            Some(parse_conditions(p)?)
        } else {
            None
        };
        let actions = if p.has("Actions") {
            Some(parse_actions(p, "Actions", true)?)
        } else {
            None
        };
        ctx.authorize(&[on("ModifyRule", &arn, &tags)])?;
        let arn2 = arn.clone();
        self.mutate(&a, &r, move |s| {
            let listener_arn = match get_rule(s, &arn2)? {
                RuleRef::Rule(r) => r.listener_arn.clone(),
                RuleRef::Default(l) => l.arn.clone(),
            };
            let l = get_listener(s, &listener_arn)?.clone();
            let lb = get_lb(s, &l.lb_arn)?.clone();
            if let Some(acts) = &actions {
                check_action_groups(s, acts, &lb, &l.protocol)?;
            }
            if let Some(rule) = s.rules.get_mut(&arn2) {
                if let Some(c) = &conditions {
                    rule.conditions = c.clone();
                }
                if let Some(acts) = &actions {
                    rule.actions = acts.clone();
                }
            } else if let (Some(acts), Some(l)) = (&actions, s.listeners.get_mut(&listener_arn)) {
                l.default_actions = acts.clone();
            }
            Ok(())
        })
        .await?;
        let s = self.read(&a, &r)?;
        let rr = get_rule(&s, &arn)?;
        let mut x = Xml::new();
        x.open("Rules");
        render_rule(&mut x, &rr);
        x.close("Rules");
        Ok(x.finish())
    }

    async fn set_rule_priorities(
        &self,
        ctx: &RequestContext,
        p: &Params,
    ) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let mut pairs: Vec<(String, u32)> = Vec::new();
        for rp in p.structs("RulePriorities") {
            let arn = rp
                .get("RuleArn")
                .ok_or_else(|| validation("A rule ARN must be specified"))?;
            let pr = rp
                .bounded("Priority", 1, 50000)?
                .ok_or_else(|| validation("A rule priority must be specified"))?
                as u32;
            pairs.push((arn.to_string(), pr));
        }
        if pairs.is_empty() {
            return Err(validation("At least one rule priority must be specified"));
        }
        let s = self.read(&a, &r)?;
        let mut reqs = Vec::new();
        for (arn, _) in &pairs {
            match get_rule(&s, arn)? {
                RuleRef::Rule(rule) => reqs.push(on("SetRulePriorities", arn, &rule.tags)),
                RuleRef::Default(_) => {
                    return Err(error(
                        "OperationNotPermitted",
                        format!("Default rule '{arn}' cannot have a priority"),
                    ))
                }
            }
        }
        ctx.authorize(&reqs)?;
        let rules = self
            .mutate(&a, &r, move |s| {
                for (arn, pr) in &pairs {
                    let rule = s.rules.get_mut(arn).ok_or_else(|| rule_not_found(arn))?;
                    rule.priority = *pr;
                }
                let mut seen: Vec<(String, u32)> = Vec::new();
                for rule in s.rules.values() {
                    if seen
                        .iter()
                        .any(|(l, pr)| *l == rule.listener_arn && *pr == rule.priority)
                    {
                        return Err(error(
                            "PriorityInUse",
                            format!("Priority '{}' is currently in use", rule.priority),
                        ));
                    }
                    seen.push((rule.listener_arn.clone(), rule.priority));
                }
                Ok(pairs
                    .iter()
                    .filter_map(|(arn, _)| s.rules.get(arn).cloned())
                    .collect::<Vec<Rule>>())
            })
            .await?;
        let mut x = Xml::new();
        x.open("Rules");
        for rule in &rules {
            render_rule(&mut x, &RuleRef::Rule(rule));
        }
        x.close("Rules");
        Ok(x.finish())
    }

    // ---- tags ----

    async fn tags(&self, ctx: &RequestContext, op: &str, p: &Params) -> Result<String, AwsError> {
        let (a, r) = (ctx.account_id.clone(), ctx.region.clone());
        let arns = p.list("ResourceArns");
        if arns.is_empty() {
            p.required("ResourceArns")?;
            return Err(validation("At least one resource ARN must be specified"));
        }
        if arns.len() > 20 {
            return Err(validation("At most 20 resource ARNs can be specified"));
        }
        let s = self.read(&a, &r)?;
        let mut current: Vec<Tags> = Vec::new();
        for arn in &arns {
            current.push(resource_tags(&s, arn)?.clone());
        }
        match op {
            "DescribeTags" => {
                ctx.authorize(&anywhere(op))?;
                let mut x = Xml::new();
                x.open("TagDescriptions");
                for (arn, tags) in arns.iter().zip(&current) {
                    x.open("member").text("ResourceArn", arn).open("Tags");
                    for (k, v) in tags {
                        x.open("member")
                            .text("Key", k)
                            .text("Value", v)
                            .close("member");
                    }
                    x.close("Tags").close("member");
                }
                x.close("TagDescriptions");
                Ok(x.finish())
            }
            "AddTags" => {
                let tags = parse_tags(p, "Tags")?;
                if tags.is_empty() {
                    return Err(validation("At least one tag must be specified"));
                }
                let reqs: Vec<Requirement> = arns
                    .iter()
                    .zip(&current)
                    .map(|(arn, t)| on(op, arn, t).request_tags(tag_refs(&tags)))
                    .collect();
                ctx.authorize(&reqs)?;
                self.mutate(&a, &r, move |s| {
                    for arn in &arns {
                        merge_tags(resource_tags_mut(s, arn)?, &tags)?;
                    }
                    Ok(())
                })
                .await?;
                Ok(String::new())
            }
            _ => {
                let keys = p.list("TagKeys");
                if keys.is_empty() {
                    return Err(validation("At least one tag key must be specified"));
                }
                let reqs: Vec<Requirement> = arns
                    .iter()
                    .zip(&current)
                    .map(|(arn, t)| on(op, arn, t).tag_keys(keys.clone()))
                    .collect();
                ctx.authorize(&reqs)?;
                self.mutate(&a, &r, move |s| {
                    for arn in &arns {
                        resource_tags_mut(s, arn)?.retain(|(k, _)| !keys.contains(k));
                    }
                    Ok(())
                })
                .await?;
                Ok(String::new())
            }
        }
    }
}

fn resource_tags<'a>(s: &'a State, arn: &str) -> Result<&'a Tags, AwsError> {
    if arn.contains(":loadbalancer/") {
        return Ok(&get_lb(s, arn)?.tags);
    }
    if arn.contains(":targetgroup/") {
        return Ok(&get_tg(s, arn)?.tags);
    }
    if arn.contains(":listener/") {
        return Ok(&get_listener(s, arn)?.tags);
    }
    if arn.contains(":listener-rule/") {
        return match get_rule(s, arn)? {
            RuleRef::Rule(r) => Ok(&r.tags),
            RuleRef::Default(_) => Err(error(
                "OperationNotPermitted",
                "Default rules cannot be tagged in Berth",
            )),
        };
    }
    Err(validation(format!(
        "'{arn}' is not a valid Elastic Load Balancing resource ARN"
    )))
}

fn resource_tags_mut<'a>(s: &'a mut State, arn: &str) -> Result<&'a mut Tags, AwsError> {
    if let Some(x) = s.load_balancers.get_mut(arn) {
        return Ok(&mut x.tags);
    }
    if let Some(x) = s.target_groups.get_mut(arn) {
        return Ok(&mut x.tags);
    }
    if let Some(x) = s.listeners.get_mut(arn) {
        return Ok(&mut x.tags);
    }
    if let Some(x) = s.rules.get_mut(arn) {
        return Ok(&mut x.tags);
    }
    Err(validation(format!("Resource '{arn}' not found")))
}

fn duplicate_lb(name: &str) -> AwsError {
    error(
        "DuplicateLoadBalancerName",
        format!("A load balancer with the same name '{name}' exists, but with different settings"),
    )
}

fn check_lb_quota(s: &State, alb: bool) -> Result<(), AwsError> {
    let (name, kind) = if alb {
        ("application-load-balancers", "application")
    } else {
        ("network-load-balancers", "network")
    };
    let max = limit(name);
    if s.load_balancers
        .values()
        .filter(|l| l.lb_type == kind)
        .count()
        >= max
    {
        return Err(error(
            "TooManyLoadBalancers",
            format!("You've reached the limit on the number of {kind} load balancers ({max})"),
        ));
    }
    Ok(())
}

fn check_listener_protocol(lb: &LoadBalancer, protocol: &str) -> Result<(), AwsError> {
    if matches!(protocol, "UDP" | "TCP_UDP" | "GENEVE" | "QUIC" | "TCP_QUIC") {
        return Err(unsupported_protocol(protocol));
    }
    let ok = if lb.is_alb() {
        HTTP_PROTOCOLS.contains(&protocol)
    } else {
        matches!(protocol, "TCP" | "TLS")
    };
    if !ok {
        return Err(error(
            "IncompatibleProtocols",
            format!(
                "Listener protocol '{protocol}' is not supported with a load balancer of type '{}'",
                lb.lb_type
            ),
        ));
    }
    Ok(())
}

fn ssl_policy(
    p: &Params,
    protocol: &str,
    current: Option<&str>,
) -> Result<Option<String>, AwsError> {
    let secure = matches!(protocol, "HTTPS" | "TLS");
    match p.get("SslPolicy") {
        Some(sp) if !secure => Err(validation(format!(
            "An SSL policy cannot be specified for a listener with protocol '{protocol}' (given '{sp}')"
        ))),
        Some(sp) => {
            if SSL_POLICIES.iter().any(|x| x.name == sp) {
                Ok(Some(sp.to_string()))
            } else {
                Err(error("SSLPolicyNotFound", format!("SSL policy '{sp}' not found")))
            }
        }
        None if secure => Ok(Some(current.unwrap_or(DEFAULT_SSL_POLICY).to_string())),
        None => Ok(None),
    }
}

fn alpn(p: &Params, protocol: &str) -> Result<Option<String>, AwsError> {
    let list = p.list("AlpnPolicy");
    let Some(v) = list.first() else {
        return Ok(None);
    };
    if protocol != "TLS" {
        return Err(validation(
            "An ALPN policy can only be specified for TLS listeners",
        ));
    }
    const ALL: &[&str] = &[
        "HTTP1Only",
        "HTTP2Only",
        "HTTP2Optional",
        "HTTP2Preferred",
        "None",
    ];
    if !ALL.contains(&v.as_str()) {
        return Err(error(
            "ALPNPolicyNotFound",
            format!("ALPN policy '{v}' not found"),
        ));
    }
    Ok(Some(v.clone()))
}

fn default_health(protocol: &str, version: Option<&str>) -> HealthCheck {
    let http = HTTP_PROTOCOLS.contains(&protocol);
    let grpc = version == Some("GRPC");
    HealthCheck {
        enabled: true,
        protocol: Some(if http {
            protocol.to_string()
        } else {
            "TCP".into()
        }),
        port: Some("traffic-port".into()),
        path: http.then(|| if grpc { "/AWS.ALB/healthcheck" } else { "/" }.to_string()),
        interval: 30,
        // The API reference's defaults: 6 s for HTTP target groups,
        // 10 s for TCP, TLS and HTTPS ones.
        timeout: if protocol == "HTTP" { 6 } else { 10 },
        healthy: 5,
        unhealthy: 2,
        http_code: (http && !grpc).then(|| "200".to_string()),
        grpc_code: grpc.then(|| "12".to_string()),
    }
}

fn parse_health(
    p: &Params,
    mut h: HealthCheck,
    protocol: &str,
    version: Option<&str>,
) -> Result<HealthCheck, AwsError> {
    let http_tg = HTTP_PROTOCOLS.contains(&protocol);
    if let Some(hp) = p.one_of("HealthCheckProtocol", ALL_PROTOCOLS)? {
        let ok = if http_tg {
            HTTP_PROTOCOLS.contains(&hp.as_str())
        } else {
            matches!(hp.as_str(), "TCP" | "HTTP" | "HTTPS")
        };
        if !ok {
            return Err(validation(format!(
                "Health check protocol '{hp}' is not supported for target groups with the {protocol} protocol"
            )));
        }
        let was_http = h
            .protocol
            .as_deref()
            .is_some_and(|x| HTTP_PROTOCOLS.contains(&x));
        let now_http = HTTP_PROTOCOLS.contains(&hp.as_str());
        if now_http && !was_http {
            h.path = Some("/".into());
            h.http_code = Some(if http_tg { "200" } else { "200-399" }.into());
        } else if !now_http {
            h.path = None;
            h.http_code = None;
            h.grpc_code = None;
        }
        h.protocol = Some(hp);
    }
    if let Some(port) = p.get("HealthCheckPort") {
        if port != "traffic-port" && !port.parse::<u16>().is_ok_and(|n| n >= 1) {
            return Err(validation(format!(
                "Health check port '{port}' must be 'traffic-port' or a number between 1 and 65535"
            )));
        }
        h.port = Some(port.to_string());
    }
    if let Some(enabled) = p.bool("HealthCheckEnabled")? {
        if !enabled {
            return Err(validation(
                "Health checks cannot be disabled for target groups with target type 'instance' or 'ip'",
            ));
        }
        h.enabled = true;
    }
    let hc_http = h
        .protocol
        .as_deref()
        .is_some_and(|x| HTTP_PROTOCOLS.contains(&x));
    if let Some(path) = p.get("HealthCheckPath") {
        if !hc_http {
            return Err(validation(
                "A health check path can only be specified for HTTP and HTTPS health checks",
            ));
        }
        if !path.starts_with('/') || path.len() > 1024 {
            return Err(validation(format!(
                "Health check path '{path}' must begin with '/' and be at most 1024 characters"
            )));
        }
        h.path = Some(path.to_string());
    }
    if let Some(n) = p.bounded("HealthCheckIntervalSeconds", 5, 300)? {
        h.interval = n as u32;
    }
    if let Some(n) = p.bounded("HealthCheckTimeoutSeconds", 2, 120)? {
        h.timeout = n as u32;
    }
    if let Some(n) = p.bounded("HealthyThresholdCount", 2, 10)? {
        h.healthy = n as u32;
    }
    if let Some(n) = p.bounded("UnhealthyThresholdCount", 2, 10)? {
        h.unhealthy = n as u32;
    }
    if h.timeout >= h.interval {
        return Err(validation(format!(
            "Health check timeout '{}' must be smaller than the interval '{}'",
            h.timeout, h.interval
        )));
    }
    if p.has("Matcher") {
        let m = p.sub("Matcher");
        if !hc_http {
            return Err(validation(
                "A matcher can only be specified for HTTP and HTTPS health checks",
            ));
        }
        if let Some(code) = m.get("HttpCode") {
            if version == Some("GRPC") {
                return Err(validation(
                    "An HTTP code matcher cannot be used with the GRPC protocol version",
                ));
            }
            let (lo, hi) = if http_tg { (200, 499) } else { (200, 599) };
            check_codes(code, lo, hi, "HTTP")?;
            h.http_code = Some(code.to_string());
        } else if let Some(code) = m.get("GrpcCode") {
            if version != Some("GRPC") {
                return Err(validation(
                    "A gRPC code matcher can only be used with the GRPC protocol version",
                ));
            }
            check_codes(code, 0, 99, "gRPC")?;
            h.grpc_code = Some(code.to_string());
        } else {
            return Err(validation("A matcher must specify HttpCode or GrpcCode"));
        }
    }
    Ok(h)
}

fn check_codes(code: &str, lo: u32, hi: u32, what: &str) -> Result<(), AwsError> {
    let bad = || {
        validation(format!(
            "{what} code matcher '{code}' must be a comma-separated list of codes or ranges between {lo} and {hi}"
        ))
    };
    if code.is_empty() {
        return Err(bad());
    }
    for part in code.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.trim().parse().map_err(|_| bad())?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        if a < lo || b > hi || a > b {
            return Err(bad());
        }
    }
    Ok(())
}

/// The `Targets` of a Register/Deregister/DescribeTargetHealth request:
/// (id, port) with the group's port as default.
fn parse_target_list(
    p: &Params,
    tg: &TargetGroup,
) -> Result<Vec<(String, u16, Option<String>)>, AwsError> {
    let list = p.structs("Targets");
    if list.is_empty() {
        return Err(validation("At least one target must be specified"));
    }
    let mut out = Vec::new();
    for t in list {
        let id = t
            .get("Id")
            .ok_or_else(|| validation("A target ID must be specified"))?;
        let port = t
            .bounded("Port", 1, 65535)?
            .map(|n| n as u16)
            .or(tg.port)
            .ok_or_else(|| validation("A port must be specified for each target"))?;
        out.push((
            id.to_string(),
            port,
            t.get("AvailabilityZone").map(str::to_string),
        ));
    }
    Ok(out)
}

impl ElbService {
    pub(crate) fn describe_target_health(
        &self,
        s: &State,
        tg: &TargetGroup,
        asked: Option<Vec<(String, u16, Option<String>)>>,
    ) -> String {
        let used = !s.lbs_of_group(&tg.arn).is_empty();
        let mut x = Xml::new();
        x.open("TargetHealthDescriptions");
        let rows: Vec<(String, u16, Option<&Target>)> = match asked {
            Some(list) => list
                .into_iter()
                .map(|(id, port, _)| {
                    let t = tg.targets.iter().find(|t| t.id == id && t.port == port);
                    (id, port, t)
                })
                .collect(),
            None => tg
                .targets
                .iter()
                .map(|t| (t.id.clone(), t.port, Some(t)))
                .collect(),
        };
        for (id, port, t) in rows {
            let (state, reason, description) = crate::targets::status(tg, t, used);
            x.open("member")
                .open("Target")
                .text("Id", &id)
                .num("Port", port);
            if let Some(az) = t.and_then(|t| t.availability_zone.as_deref()) {
                x.text("AvailabilityZone", az);
            }
            x.close("Target");
            let hc_port = match tg.health.port.as_deref() {
                Some("traffic-port") | None => port.to_string(),
                Some(p) => p.to_string(),
            };
            x.text("HealthCheckPort", &hc_port)
                .open("TargetHealth")
                .text("State", state)
                .opt("Reason", reason)
                .opt("Description", description.as_deref())
                .close("TargetHealth")
                .close("member");
        }
        x.close("TargetHealthDescriptions");
        x.finish()
    }
}
