//! What is attached to log groups and accounts besides events: metric
//! filters (stored and validated; publishing their metrics needs CloudWatch
//! metrics, which Berth does not have), data protection policies (stored
//! and validated, not applied to events), resource policies (stored and
//! validated, not evaluated: they grant AWS service principals, which Berth
//! has none of, the right to deliver logs), deletion protection (enforced);
//! and the calls whose target service Berth lacks, answered precisely:
//! subscription filters and destinations (no Kinesis, Firehose, Lambda or
//! OpenSearch) and export tasks (no S3).

use berth_model::authz::{self, Requirement};
use berth_model::shapes::logs;
use berth_model::{AwsError, RequestContext};
use berth_util::time::now_millis;

use crate::filter::FilterPattern;
use crate::limits::{self, invalid, required};
use crate::service::{parse_group_arn, resolve_group, Empty, GroupRef};
use crate::store::{group_key, group_not_found, kinds, Catalog, ObjectKey, PutRules, WriteOp};
use crate::tokens;
use crate::LogsService;

/// Metric filters per log group, as AWS's quota.
pub const MAX_METRIC_FILTERS: usize = 100;
/// Account-level resource policies per Region, as AWS's quota.
pub const MAX_RESOURCE_POLICIES: usize = 10;
const STANDARD_UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// A filter or destination name: 1 to 512 characters, no `:` or `*`.
fn check_filter_name(name: &str, member: &str) -> Result<(), AwsError> {
    let len = name.chars().count();
    if !(1..=512).contains(&len) {
        return Err(limits::constraint(
            name,
            member,
            "Member must have length between 1 and 512",
        ));
    }
    if name.contains(':') || name.contains('*') {
        return Err(limits::constraint(
            name,
            member,
            "Member must satisfy regular expression pattern: [^:*]*",
        ));
    }
    Ok(())
}

fn check_limit(limit: Option<i32>, max: i32, default: usize) -> Result<usize, AwsError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(limits::constraint(
            &n.to_string(),
            "limit",
            &format!("Member must have value between 1 and {max}"),
        )),
    }
}

fn parse_pattern(text: &str) -> Result<FilterPattern, AwsError> {
    if text.chars().count() > 1024 {
        return Err(limits::constraint(
            text,
            "filterPattern",
            "Member must have length less than or equal to 1024",
        ));
    }
    FilterPattern::parse(text).map_err(|e| invalid(format!("Invalid filter pattern: {e}")))
}

/// A metric name or namespace: 1 to 255 characters without `:`, `*`, `$`.
fn check_metric_name(value: &str, member: &str) -> Result<(), AwsError> {
    let len = value.chars().count();
    if !(1..=255).contains(&len) {
        return Err(limits::constraint(
            value,
            member,
            "Member must have length between 1 and 255",
        ));
    }
    if value.contains([':', '*', '$']) {
        return Err(limits::constraint(
            value,
            member,
            "Member must satisfy regular expression pattern: [^:*$]*",
        ));
    }
    Ok(())
}

/// A `$field` or `$.selector` a metric value or dimension takes from
/// events must name something the pattern can produce.
fn check_field_reference(value: &str, pattern: &FilterPattern, what: &str) -> Result<(), AwsError> {
    if let Some(selector) = value.strip_prefix("$.") {
        if selector.is_empty() {
            return Err(invalid(format!("Invalid {what}: {value}")));
        }
        return Ok(());
    }
    if let Some(name) = value.strip_prefix('$') {
        if pattern.field_names().contains(&name) {
            return Ok(());
        }
        return Err(invalid(format!(
            "Invalid {what}: {value} is not a field of the filter pattern."
        )));
    }
    Err(invalid(format!(
        "Invalid {what}: {value} must name a field ($name or $.selector)."
    )))
}

fn check_transformation(
    t: &logs::MetricTransformation,
    pattern: &FilterPattern,
) -> Result<(), AwsError> {
    let name = required(&t.metric_name, "metricTransformations.member.metricName")?;
    check_metric_name(name, "metricTransformations.member.metricName")?;
    let namespace = required(
        &t.metric_namespace,
        "metricTransformations.member.metricNamespace",
    )?;
    check_metric_name(namespace, "metricTransformations.member.metricNamespace")?;
    let value = required(&t.metric_value, "metricTransformations.member.metricValue")?;
    if value.is_empty() || value.chars().count() > 100 {
        return Err(limits::constraint(
            value,
            "metricTransformations.member.metricValue",
            "Member must have length between 1 and 100",
        ));
    }
    if value.parse::<f64>().is_err() {
        check_field_reference(value, pattern, "metric value")?;
    }
    if let Some(unit) = &t.unit {
        if !STANDARD_UNITS.contains(&unit.as_str()) {
            return Err(limits::constraint(
                unit,
                "metricTransformations.member.unit",
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    STANDARD_UNITS.join(", ")
                ),
            ));
        }
    }
    if let Some(dimensions) = &t.dimensions {
        if dimensions.len() > 3 {
            return Err(invalid("A metric filter may have at most 3 dimensions."));
        }
        if !dimensions.is_empty() && t.default_value.is_some() {
            return Err(invalid(
                "A metric filter with dimensions cannot have a default value.",
            ));
        }
        for (key, field) in dimensions {
            if key.is_empty() || key.chars().count() > 255 {
                return Err(limits::constraint(
                    key,
                    "metricTransformations.member.dimensions",
                    "Member must have length between 1 and 255",
                ));
            }
            check_field_reference(field, pattern, "dimension value")?;
        }
    }
    Ok(())
}

fn check_policy_document(
    document: &str,
    member: &str,
    max: usize,
) -> Result<serde_json::Value, AwsError> {
    let len = document.chars().count();
    if len == 0 || len > max {
        return Err(limits::constraint(
            "<policy>",
            member,
            &format!("Member must have length between 1 and {max}"),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(document)
        .map_err(|e| invalid(format!("The policy document is not valid JSON: {e}")))?;
    let statements = value
        .get("Statement")
        .ok_or_else(|| invalid("The policy document must have a Statement."))?;
    let statements: Vec<&serde_json::Value> = match statements {
        serde_json::Value::Array(items) => items.iter().collect(),
        object @ serde_json::Value::Object(_) => vec![object],
        _ => {
            return Err(invalid(
                "The policy document's Statement must be an object or an array.",
            ))
        }
    };
    for statement in statements {
        match statement.get("Effect").and_then(|e| e.as_str()) {
            Some("Allow" | "Deny") => {}
            _ => {
                return Err(invalid(
                    "Every statement of the policy document needs an Effect of Allow or Deny.",
                ))
            }
        }
        if statement.get("Action").is_none() && statement.get("NotAction").is_none() {
            return Err(invalid(
                "Every statement of the policy document needs an Action.",
            ));
        }
    }
    Ok(value)
}

/// The managed data identifiers' ARN prefix.
const MANAGED_IDENTIFIER: &str = "arn:aws:dataprotection::aws:data-identifier/";

/// Validates a data protection policy as CloudWatch Logs requires it: a
/// Name, Version 2021-06-01, and exactly two statements over the same data
/// identifiers, the first auditing (with a FindingsDestination), the second
/// de-identifying (with a MaskConfig).
fn check_data_protection_policy(document: &str) -> Result<(), AwsError> {
    if document.is_empty() || document.len() > 30_720 {
        return Err(invalid(
            "The data protection policy document must be between 1 and 30720 characters.",
        ));
    }
    let value: serde_json::Value = serde_json::from_str(document)
        .map_err(|e| invalid(format!("The data protection policy is not valid JSON: {e}")))?;
    if !value.get("Name").is_some_and(|n| n.is_string()) {
        return Err(invalid("The data protection policy must have a Name."));
    }
    if value.get("Version").and_then(|v| v.as_str()) != Some("2021-06-01") {
        return Err(invalid(
            "The data protection policy's Version must be \"2021-06-01\".",
        ));
    }
    let custom: Vec<&str> = value
        .pointer("/Configuration/CustomDataIdentifier")
        .and_then(|c| c.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("Name").and_then(|n| n.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let statements = value
        .get("Statement")
        .and_then(|s| s.as_array())
        .ok_or_else(|| invalid("The data protection policy must have a Statement array."))?;
    if statements.len() != 2 {
        return Err(invalid(
            "The data protection policy must have exactly two statements: one with an Audit \
             operation and one with a Deidentify operation.",
        ));
    }
    let identifiers = |statement: &serde_json::Value| -> Result<Vec<String>, AwsError> {
        let list = statement
            .get("DataIdentifier")
            .and_then(|d| d.as_array())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| invalid("Each statement needs a non-empty DataIdentifier array."))?;
        let mut out = Vec::new();
        for item in list {
            let id = item
                .as_str()
                .ok_or_else(|| invalid("DataIdentifier entries must be strings."))?;
            let managed = id
                .strip_prefix(MANAGED_IDENTIFIER)
                .is_some_and(|name| !name.is_empty());
            if !managed && !custom.contains(&id) {
                return Err(invalid(format!(
                    "Unknown data identifier {id}: use a managed data identifier \
                     ({MANAGED_IDENTIFIER}<name>) or a CustomDataIdentifier of the policy."
                )));
            }
            out.push(id.to_string());
        }
        out.sort();
        Ok(out)
    };
    let audit = &statements[0];
    let deidentify = &statements[1];
    if !audit
        .pointer("/Operation/Audit/FindingsDestination")
        .is_some_and(|d| d.is_object())
    {
        return Err(invalid(
            "The first statement must have an Operation with Audit and a FindingsDestination.",
        ));
    }
    if !deidentify
        .pointer("/Operation/Deidentify/MaskConfig")
        .is_some_and(|d| d.is_object())
    {
        return Err(invalid(
            "The second statement must have an Operation with Deidentify and a MaskConfig.",
        ));
    }
    if identifiers(audit)? != identifiers(deidentify)? {
        return Err(invalid(
            "Both statements of the data protection policy must list the same data identifiers.",
        ));
    }
    Ok(())
}

/// Which AWS service an ARN names.
fn arn_service(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some(service)) if !service.is_empty() => Some(service),
        _ => None,
    }
}

/// Why Berth cannot deliver to `arn`, named by the missing service.
fn undeliverable(arn: &str) -> AwsError {
    let service = match arn_service(arn) {
        Some("kinesis") => "Amazon Kinesis Data Streams",
        Some("firehose") => "Amazon Data Firehose",
        Some("lambda") => "AWS Lambda",
        Some("es" | "aoss" | "opensearch") => "Amazon OpenSearch Service",
        Some("logs") => {
            return AwsError::bad_request(
                "ResourceNotFoundException",
                format!(
                    "The destination {arn} does not exist: Berth has no Amazon Kinesis Data \
                     Streams, so no CloudWatch Logs destination can be created."
                ),
            )
        }
        _ => {
            return invalid(format!(
                "{arn} is not a supported destination: subscription filters deliver to \
                 Kinesis Data Streams, Data Firehose, Lambda, OpenSearch Service or a \
                 CloudWatch Logs destination."
            ))
        }
    };
    invalid(format!(
        "Berth has no {service}, so it cannot deliver log events to {arn}."
    ))
}

fn check_role_arn(role: &str, member: &str) -> Result<(), AwsError> {
    if role.is_empty() || arn_service(role) != Some("iam") || !role.contains(":role/") {
        return Err(invalid(format!("{member} {role} is not an IAM role ARN.")));
    }
    Ok(())
}

fn metric_filter_key(ctx: &RequestContext, group: &str, name: &str) -> ObjectKey {
    ObjectKey {
        account: ctx.account_id.clone(),
        region: ctx.region.clone(),
        kind: kinds::METRIC_FILTER,
        scope: group.to_string(),
        name: name.to_string(),
    }
}

fn data_protection_key(ctx: &RequestContext, group: &str) -> ObjectKey {
    ObjectKey {
        account: ctx.account_id.clone(),
        region: ctx.region.clone(),
        kind: kinds::DATA_PROTECTION,
        scope: group.to_string(),
        name: String::new(),
    }
}

fn resource_policy_key(ctx: &RequestContext, scope: &str, name: &str) -> ObjectKey {
    ObjectKey {
        account: ctx.account_id.clone(),
        region: ctx.region.clone(),
        kind: kinds::RESOURCE_POLICY,
        scope: scope.to_string(),
        name: name.to_string(),
    }
}

pub(crate) fn deletion_protection_key(account: &str, region: &str, group: &str) -> ObjectKey {
    ObjectKey {
        account: account.to_string(),
        region: region.to_string(),
        kind: kinds::DELETION_PROTECTION,
        scope: group.to_string(),
        name: String::new(),
    }
}

/// How many metric filters a group has, whether it has a data protection
/// policy and deletion protection: what DescribeLogGroups shows of them.
pub(crate) fn group_extras(
    catalog: &Catalog,
    account: &str,
    region: &str,
    group: &str,
) -> (i32, bool, bool) {
    let filters = catalog
        .objects_in(account, region, kinds::METRIC_FILTER, group)
        .count();
    let protected_data = catalog
        .objects_in(account, region, kinds::DATA_PROTECTION, group)
        .next()
        .is_some();
    let protected = catalog
        .object(&deletion_protection_key(account, region, group))
        .is_some_and(|v| v == "true");
    (
        i32::try_from(filters).unwrap_or(i32::MAX),
        protected_data,
        protected,
    )
}

impl LogsService {
    // ---------------------------------------------------- metric filters ---

    pub(crate) async fn put_metric_filter(
        &self,
        ctx: &RequestContext,
        input: logs::PutMetricFilterRequest,
    ) -> Result<Empty, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        let name = required(&input.filter_name, "filterName")?;
        check_filter_name(name, "filterName")?;
        let pattern_text = input
            .filter_pattern
            .as_deref()
            .ok_or_else(|| limits::missing("filterPattern"))?;
        let pattern = parse_pattern(pattern_text)?;
        let transformations = input
            .metric_transformations
            .as_ref()
            .ok_or_else(|| limits::missing("metricTransformations"))?;
        if transformations.len() != 1 {
            return Err(limits::constraint(
                "<transformations>",
                "metricTransformations",
                "Member must have length between 1 and 1",
            ));
        }
        check_transformation(&transformations[0], &pattern)?;
        if let Some(criteria) = &input.field_selection_criteria {
            if criteria.chars().count() > 2000 {
                return Err(limits::constraint(
                    "<criteria>",
                    "fieldSelectionCriteria",
                    "Member must have length less than or equal to 2000",
                ));
            }
        }
        for field in input.emit_system_field_dimensions.iter().flatten() {
            if !matches!(field.as_str(), "@aws.account" | "@aws.region") {
                return Err(invalid(format!(
                    "emitSystemFieldDimensions may hold @aws.account and @aws.region, not {field}."
                )));
            }
        }
        let reference = GroupRef::own(ctx, group);
        self.authorize_group(ctx, "PutMetricFilter", &reference, |r| r)?;
        let record = logs::MetricFilter {
            filter_name: Some(name.to_string()),
            filter_pattern: Some(pattern_text.to_string()),
            metric_transformations: input.metric_transformations.clone(),
            creation_time: Some(now_millis()),
            log_group_name: Some(group.to_string()),
            apply_on_transformed_logs: Some(input.apply_on_transformed_logs.unwrap_or(false)),
            field_selection_criteria: input.field_selection_criteria.clone(),
            emit_system_field_dimensions: input.emit_system_field_dimensions.clone(),
        };
        let value = serde_json::to_string(&record)
            .map_err(|e| AwsError::internal(format!("could not encode a metric filter: {e}")))?;
        self.store
            .write(WriteOp::PutObject {
                key: metric_filter_key(ctx, group, name),
                value,
                rules: PutRules {
                    group: Some(group_key(&ctx.account_id, &ctx.region, group)),
                    max_in_scope: Some((
                        MAX_METRIC_FILTERS,
                        AwsError::bad_request("LimitExceededException", "Resource limit exceeded."),
                    )),
                    ..Default::default()
                },
            })
            .await?;
        Ok(Empty {})
    }

    pub(crate) fn describe_metric_filters(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeMetricFiltersRequest,
    ) -> Result<logs::DescribeMetricFiltersResponse, AwsError> {
        if let Some(group) = &input.log_group_name {
            limits::check_group_name(group, "logGroupName")?;
        }
        if let Some(prefix) = &input.filter_name_prefix {
            check_filter_name(prefix, "filterNamePrefix")?;
        }
        match (&input.metric_name, &input.metric_namespace) {
            (Some(name), Some(namespace)) => {
                check_metric_name(name, "metricName")?;
                check_metric_name(namespace, "metricNamespace")?;
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "metricName and metricNamespace must be specified together.",
                ))
            }
        }
        let limit = check_limit(input.limit, 50, 50)?;
        let after = input
            .next_token
            .as_deref()
            .map(tokens::decode_opaque)
            .transpose()?;
        match &input.log_group_name {
            Some(group) => self.authorize_group(
                ctx,
                "DescribeMetricFilters",
                &GroupRef::own(ctx, group),
                |r| r,
            )?,
            None => ctx.authorize(&[Requirement::new(
                "logs:DescribeMetricFilters",
                ctx.arn("logs", "log-group::log-stream:"),
            )])?,
        }
        let catalog = self.store.catalog();
        if let Some(group) = &input.log_group_name {
            if catalog.group(&ctx.account_id, &ctx.region, group).is_none() {
                return Err(group_not_found());
            }
        }
        let mut filters: Vec<logs::MetricFilter> = catalog
            .objects_of_kind(&ctx.account_id, &ctx.region, kinds::METRIC_FILTER)
            .filter(|(k, _)| input.log_group_name.as_ref().is_none_or(|g| k.scope == *g))
            .filter(|(k, _)| {
                input.log_group_name.is_none()
                    || input
                        .filter_name_prefix
                        .as_ref()
                        .is_none_or(|p| k.name.starts_with(p.as_str()))
            })
            .filter_map(|(_, v)| serde_json::from_str::<logs::MetricFilter>(v).ok())
            .filter(|f| {
                let Some(name) = &input.metric_name else {
                    return true;
                };
                f.metric_transformations.iter().flatten().any(|t| {
                    t.metric_name.as_ref() == Some(name)
                        && t.metric_namespace == input.metric_namespace
                })
            })
            .collect();
        drop(catalog);
        let sort_key = |f: &logs::MetricFilter| {
            format!(
                "{}\n{}",
                f.filter_name.as_deref().unwrap_or(""),
                f.log_group_name.as_deref().unwrap_or("")
            )
        };
        filters.sort_by_key(sort_key);
        if let Some(after) = after {
            filters.retain(|f| sort_key(f) > after);
        }
        let next_token =
            (filters.len() > limit).then(|| tokens::encode_opaque(&sort_key(&filters[limit - 1])));
        filters.truncate(limit);
        Ok(logs::DescribeMetricFiltersResponse {
            metric_filters: Some(filters),
            next_token,
        })
    }

    pub(crate) async fn delete_metric_filter(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteMetricFilterRequest,
    ) -> Result<Empty, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        let name = required(&input.filter_name, "filterName")?;
        check_filter_name(name, "filterName")?;
        self.authorize_group(ctx, "DeleteMetricFilter", &GroupRef::own(ctx, group), |r| r)?;
        if self
            .store
            .catalog()
            .group(&ctx.account_id, &ctx.region, group)
            .is_none()
        {
            return Err(group_not_found());
        }
        self.store
            .write(WriteOp::DeleteObject {
                key: metric_filter_key(ctx, group, name),
                missing: AwsError::bad_request(
                    "ResourceNotFoundException",
                    "The specified metric filter does not exist.",
                ),
            })
            .await?;
        Ok(Empty {})
    }

    pub(crate) fn test_metric_filter(
        &self,
        ctx: &RequestContext,
        input: logs::TestMetricFilterRequest,
    ) -> Result<logs::TestMetricFilterResponse, AwsError> {
        let text = input
            .filter_pattern
            .as_deref()
            .ok_or_else(|| limits::missing("filterPattern"))?;
        let pattern = parse_pattern(text)?;
        let messages = input
            .log_event_messages
            .as_ref()
            .ok_or_else(|| limits::missing("logEventMessages"))?;
        if messages.is_empty() || messages.len() > 50 {
            return Err(limits::constraint(
                "<messages>",
                "logEventMessages",
                "Member must have length between 1 and 50",
            ));
        }
        if messages.iter().any(String::is_empty) {
            return Err(limits::constraint(
                "",
                "logEventMessages.member",
                "Member must have length greater than or equal to 1",
            ));
        }
        // A dry run over the caller's own messages: no resource involved.
        ctx.authorize(&authz::on("logs:TestMetricFilter", []))?;
        let matches = messages
            .iter()
            .enumerate()
            .filter_map(|(i, message)| {
                pattern
                    .extract(message)
                    .map(|values| logs::MetricFilterMatchRecord {
                        event_number: Some(i as i64 + 1),
                        event_message: Some(message.clone()),
                        extracted_values: Some(values),
                    })
            })
            .collect();
        Ok(logs::TestMetricFilterResponse {
            matches: Some(matches),
        })
    }

    // ---------------------------------------------- subscription filters ---

    pub(crate) fn put_subscription_filter(
        &self,
        ctx: &RequestContext,
        input: logs::PutSubscriptionFilterRequest,
    ) -> Result<Empty, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        let name = required(&input.filter_name, "filterName")?;
        check_filter_name(name, "filterName")?;
        let pattern = input
            .filter_pattern
            .as_deref()
            .ok_or_else(|| limits::missing("filterPattern"))?;
        parse_pattern(pattern)?;
        let destination = required(&input.destination_arn, "destinationArn")?;
        if destination.is_empty() {
            return Err(limits::constraint(
                destination,
                "destinationArn",
                "Member must have length greater than or equal to 1",
            ));
        }
        if let Some(role) = &input.role_arn {
            check_role_arn(role, "roleArn")?;
        }
        if let Some(distribution) = &input.distribution {
            if !matches!(distribution.as_str(), "Random" | "ByLogStream") {
                return Err(limits::constraint(
                    distribution,
                    "distribution",
                    "Member must satisfy enum value set: [Random, ByLogStream]",
                ));
            }
        }
        let reference = GroupRef::own(ctx, group);
        self.authorize_group(ctx, "PutSubscriptionFilter", &reference, |r| r)?;
        if self
            .store
            .catalog()
            .group(&ctx.account_id, &ctx.region, group)
            .is_none()
        {
            return Err(group_not_found());
        }
        Err(undeliverable(destination))
    }

    pub(crate) fn describe_subscription_filters(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeSubscriptionFiltersRequest,
    ) -> Result<logs::DescribeSubscriptionFiltersResponse, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        if let Some(prefix) = &input.filter_name_prefix {
            check_filter_name(prefix, "filterNamePrefix")?;
        }
        check_limit(input.limit, 50, 50)?;
        if let Some(token) = &input.next_token {
            tokens::decode_opaque(token)?;
        }
        self.authorize_group(
            ctx,
            "DescribeSubscriptionFilters",
            &GroupRef::own(ctx, group),
            |r| r,
        )?;
        if self
            .store
            .catalog()
            .group(&ctx.account_id, &ctx.region, group)
            .is_none()
        {
            return Err(group_not_found());
        }
        // No subscription filter can exist: PutSubscriptionFilter has no
        // target to deliver to in Berth.
        Ok(logs::DescribeSubscriptionFiltersResponse {
            subscription_filters: Some(Vec::new()),
            next_token: None,
        })
    }

    pub(crate) fn delete_subscription_filter(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteSubscriptionFilterRequest,
    ) -> Result<Empty, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        let name = required(&input.filter_name, "filterName")?;
        check_filter_name(name, "filterName")?;
        self.authorize_group(
            ctx,
            "DeleteSubscriptionFilter",
            &GroupRef::own(ctx, group),
            |r| r,
        )?;
        if self
            .store
            .catalog()
            .group(&ctx.account_id, &ctx.region, group)
            .is_none()
        {
            return Err(group_not_found());
        }
        Err(AwsError::bad_request(
            "ResourceNotFoundException",
            "The specified subscription filter does not exist.",
        ))
    }

    // ------------------------------------------------------ destinations ---

    fn destination_arn(ctx: &RequestContext, name: &str) -> String {
        ctx.arn("logs", &format!("destination:{name}"))
    }

    pub(crate) fn put_destination(
        &self,
        ctx: &RequestContext,
        input: logs::PutDestinationRequest,
    ) -> Result<logs::PutDestinationResponse, AwsError> {
        let name = required(&input.destination_name, "destinationName")?;
        check_filter_name(name, "destinationName")?;
        let target = required(&input.target_arn, "targetArn")?;
        if target.is_empty() {
            return Err(limits::constraint(
                target,
                "targetArn",
                "Member must have length greater than or equal to 1",
            ));
        }
        let role = required(&input.role_arn, "roleArn")?;
        check_role_arn(role, "roleArn")?;
        let tags = input.tags.clone().unwrap_or_default();
        crate::service::check_new_tags(&tags)?;
        ctx.authorize(&[Requirement::new(
            "logs:PutDestination",
            Self::destination_arn(ctx, name),
        )
        .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
        match arn_service(target) {
            Some("kinesis") | None => Err(undeliverable(target)),
            Some(_) => Err(invalid(format!(
                "The target of a destination must be a Kinesis data stream, not {target}."
            ))),
        }
    }

    pub(crate) fn put_destination_policy(
        &self,
        ctx: &RequestContext,
        input: logs::PutDestinationPolicyRequest,
    ) -> Result<Empty, AwsError> {
        let name = required(&input.destination_name, "destinationName")?;
        check_filter_name(name, "destinationName")?;
        let policy = required(&input.access_policy, "accessPolicy")?;
        check_policy_document(policy, "accessPolicy", 5120)?;
        ctx.authorize(&[Requirement::new(
            "logs:PutDestinationPolicy",
            Self::destination_arn(ctx, name),
        )])?;
        Err(destination_not_found())
    }

    pub(crate) fn describe_destinations(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeDestinationsRequest,
    ) -> Result<logs::DescribeDestinationsResponse, AwsError> {
        if let Some(prefix) = &input.destination_name_prefix {
            check_filter_name(prefix, "DestinationNamePrefix")?;
        }
        check_limit(input.limit, 50, 50)?;
        if let Some(token) = &input.next_token {
            tokens::decode_opaque(token)?;
        }
        ctx.authorize(&[Requirement::new(
            "logs:DescribeDestinations",
            Self::destination_arn(ctx, "*"),
        )])?;
        Ok(logs::DescribeDestinationsResponse {
            destinations: Some(Vec::new()),
            next_token: None,
        })
    }

    pub(crate) fn delete_destination(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteDestinationRequest,
    ) -> Result<Empty, AwsError> {
        let name = required(&input.destination_name, "destinationName")?;
        check_filter_name(name, "destinationName")?;
        ctx.authorize(&[Requirement::new(
            "logs:DeleteDestination",
            Self::destination_arn(ctx, name),
        )])?;
        Err(destination_not_found())
    }

    // -------------------------------------------------- resource policies ---

    /// The scope a resource policy call names: "" for the account, or the
    /// log group of `resourceArn`.
    fn policy_scope(
        &self,
        _ctx: &RequestContext,
        resource_arn: &Option<String>,
    ) -> Result<Option<GroupRef>, AwsError> {
        match resource_arn {
            None => Ok(None),
            Some(arn) => parse_group_arn(arn).map(Some).map_err(|_| {
                invalid(format!(
                    "Invalid resourceArn {arn}: only log group ARNs have resource policies."
                ))
            }),
        }
    }

    pub(crate) async fn put_resource_policy(
        &self,
        ctx: &RequestContext,
        input: logs::PutResourcePolicyRequest,
    ) -> Result<logs::PutResourcePolicyResponse, AwsError> {
        let name = required(&input.policy_name, "policyName")?;
        if name.is_empty() || name.chars().count() > 256 {
            return Err(limits::constraint(
                name,
                "policyName",
                "Member must have length between 1 and 256",
            ));
        }
        let document = required(&input.policy_document, "policyDocument")?;
        check_policy_document(document, "policyDocument", 51_200)?;
        let group = self.policy_scope(ctx, &input.resource_arn)?;
        if let Some(expected) = &input.expected_revision_id {
            if expected.is_empty() {
                return Err(limits::constraint(
                    expected,
                    "expectedRevisionId",
                    "Member must have length greater than or equal to 1",
                ));
            }
        }
        match &group {
            Some(g) => ctx.authorize(&[self.group_requirement("PutResourcePolicy", g.arn(), g)])?,
            None => ctx.authorize(&authz::on("logs:PutResourcePolicy", []))?,
        }
        let now = now_millis();
        let (scope, record, rules) = match &group {
            None => (
                String::new(),
                logs::ResourcePolicy {
                    policy_name: Some(name.to_string()),
                    policy_document: Some(document.to_string()),
                    last_updated_time: Some(now),
                    policy_scope: Some("ACCOUNT".into()),
                    resource_arn: None,
                    revision_id: None,
                },
                PutRules {
                    max_in_scope: Some((
                        MAX_RESOURCE_POLICIES,
                        AwsError::bad_request("LimitExceededException", "Resource limit exceeded."),
                    )),
                    ..Default::default()
                },
            ),
            Some(g) => {
                let name_in = g.name_in(ctx)?;
                let current = {
                    let catalog = self.store.catalog();
                    let found = catalog
                        .objects_in(
                            &ctx.account_id,
                            &ctx.region,
                            kinds::RESOURCE_POLICY,
                            name_in,
                        )
                        .filter_map(|(_, v)| serde_json::from_str::<logs::ResourcePolicy>(v).ok())
                        .next();
                    found
                };
                if let Some(current) = &current {
                    if current.policy_name.as_deref() != Some(name) {
                        return Err(AwsError::bad_request(
                            "LimitExceededException",
                            format!(
                                "Log group {name_in} already has the resource policy {}; a log \
                                 group has at most one.",
                                current.policy_name.as_deref().unwrap_or("")
                            ),
                        ));
                    }
                    if input.expected_revision_id != current.revision_id {
                        return Err(AwsError::bad_request(
                            "OperationAbortedException",
                            "The expectedRevisionId does not match the policy's current revision.",
                        ));
                    }
                } else if input.expected_revision_id.is_some() {
                    return Err(AwsError::bad_request(
                        "OperationAbortedException",
                        "The log group has no resource policy yet; omit expectedRevisionId.",
                    ));
                }
                (
                    name_in.to_string(),
                    logs::ResourcePolicy {
                        policy_name: Some(name.to_string()),
                        policy_document: Some(document.to_string()),
                        last_updated_time: Some(now),
                        policy_scope: Some("RESOURCE".into()),
                        resource_arn: Some(g.arn()),
                        revision_id: Some(uuid::Uuid::new_v4().to_string()),
                    },
                    PutRules {
                        group: Some(group_key(&ctx.account_id, &ctx.region, name_in)),
                        ..Default::default()
                    },
                )
            }
        };
        let value = serde_json::to_string(&record)
            .map_err(|e| AwsError::internal(format!("could not encode a resource policy: {e}")))?;
        self.store
            .write(WriteOp::PutObject {
                key: resource_policy_key(ctx, &scope, name),
                value,
                rules,
            })
            .await?;
        Ok(logs::PutResourcePolicyResponse {
            revision_id: record.revision_id.clone(),
            resource_policy: Some(record),
        })
    }

    pub(crate) fn describe_resource_policies(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeResourcePoliciesRequest,
    ) -> Result<logs::DescribeResourcePoliciesResponse, AwsError> {
        let limit = check_limit(input.limit, 50, 50)?;
        let scope = input
            .policy_scope
            .as_deref()
            .unwrap_or(if input.resource_arn.is_some() {
                "RESOURCE"
            } else {
                "ACCOUNT"
            });
        if !matches!(scope, "ACCOUNT" | "RESOURCE") {
            return Err(limits::constraint(
                scope,
                "policyScope",
                "Member must satisfy enum value set: [ACCOUNT, RESOURCE]",
            ));
        }
        let group = self.policy_scope(ctx, &input.resource_arn)?;
        let after = input
            .next_token
            .as_deref()
            .map(tokens::decode_opaque)
            .transpose()?;
        ctx.authorize(&authz::on("logs:DescribeResourcePolicies", []))?;
        let catalog = self.store.catalog();
        let mut policies: Vec<(String, logs::ResourcePolicy)> = catalog
            .objects_of_kind(&ctx.account_id, &ctx.region, kinds::RESOURCE_POLICY)
            .filter(|(k, _)| match (scope, &group) {
                ("ACCOUNT", _) => k.scope.is_empty(),
                (_, Some(g)) => g.name_in(ctx).is_ok_and(|n| k.scope == n),
                (_, None) => !k.scope.is_empty(),
            })
            .filter_map(|(k, v)| {
                serde_json::from_str::<logs::ResourcePolicy>(v)
                    .ok()
                    .map(|p| (format!("{}\n{}", k.scope, k.name), p))
            })
            .collect();
        drop(catalog);
        if let Some(after) = after {
            policies.retain(|(key, _)| *key > after);
        }
        let next_token =
            (policies.len() > limit).then(|| tokens::encode_opaque(&policies[limit - 1].0));
        policies.truncate(limit);
        Ok(logs::DescribeResourcePoliciesResponse {
            resource_policies: Some(policies.into_iter().map(|(_, p)| p).collect()),
            next_token,
        })
    }

    pub(crate) async fn delete_resource_policy(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteResourcePolicyRequest,
    ) -> Result<Empty, AwsError> {
        let name = required(&input.policy_name, "policyName")?;
        if name.is_empty() {
            return Err(limits::constraint(
                name,
                "policyName",
                "Member must have length greater than or equal to 1",
            ));
        }
        let group = self.policy_scope(ctx, &input.resource_arn)?;
        match &group {
            Some(g) => {
                ctx.authorize(&[self.group_requirement("DeleteResourcePolicy", g.arn(), g)])?
            }
            None => ctx.authorize(&authz::on("logs:DeleteResourcePolicy", []))?,
        }
        let missing = || {
            AwsError::bad_request(
                "ResourceNotFoundException",
                format!("Policy with name [{name}] does not exist."),
            )
        };
        let scope = match &group {
            None => String::new(),
            Some(g) => g.name_in(ctx).map_err(|_| missing())?.to_string(),
        };
        let key = resource_policy_key(ctx, &scope, name);
        if let Some(expected) = &input.expected_revision_id {
            let current = self
                .store
                .catalog()
                .object(&key)
                .and_then(|v| serde_json::from_str::<logs::ResourcePolicy>(v).ok());
            if let Some(current) = current {
                if current.revision_id.as_ref() != Some(expected) {
                    return Err(AwsError::bad_request(
                        "OperationAbortedException",
                        "The expectedRevisionId does not match the policy's current revision.",
                    ));
                }
            }
        }
        self.store
            .write(WriteOp::DeleteObject {
                key,
                missing: missing(),
            })
            .await?;
        Ok(Empty {})
    }

    // ------------------------------------------- data protection policies ---

    pub(crate) async fn put_data_protection_policy(
        &self,
        ctx: &RequestContext,
        input: logs::PutDataProtectionPolicyRequest,
    ) -> Result<logs::PutDataProtectionPolicyResponse, AwsError> {
        let identifier = required(&input.log_group_identifier, "logGroupIdentifier")?;
        let group = resolve_group(ctx, &None, &input.log_group_identifier)?;
        let document = required(&input.policy_document, "policyDocument")?;
        check_data_protection_policy(document)?;
        self.authorize_group(ctx, "PutDataProtectionPolicy", &group, |r| r)?;
        let name = group.name_in(ctx)?;
        let now = now_millis();
        let record = logs::GetDataProtectionPolicyResponse {
            log_group_identifier: Some(identifier.to_string()),
            policy_document: Some(document.to_string()),
            last_updated_time: Some(now),
        };
        let value = serde_json::to_string(&record)
            .map_err(|e| AwsError::internal(format!("could not encode a policy: {e}")))?;
        self.store
            .write(WriteOp::PutObject {
                key: data_protection_key(ctx, name),
                value,
                rules: PutRules {
                    group: Some(group_key(&ctx.account_id, &ctx.region, name)),
                    ..Default::default()
                },
            })
            .await?;
        Ok(logs::PutDataProtectionPolicyResponse {
            log_group_identifier: Some(identifier.to_string()),
            policy_document: Some(document.to_string()),
            last_updated_time: Some(now),
        })
    }

    pub(crate) fn get_data_protection_policy(
        &self,
        ctx: &RequestContext,
        input: logs::GetDataProtectionPolicyRequest,
    ) -> Result<logs::GetDataProtectionPolicyResponse, AwsError> {
        let identifier = required(&input.log_group_identifier, "logGroupIdentifier")?;
        let group = resolve_group(ctx, &None, &input.log_group_identifier)?;
        self.authorize_group(ctx, "GetDataProtectionPolicy", &group, |r| r)?;
        let name = group.name_in(ctx)?;
        let catalog = self.store.catalog();
        if catalog.group(&ctx.account_id, &ctx.region, name).is_none() {
            return Err(group_not_found());
        }
        let stored = catalog
            .object(&data_protection_key(ctx, name))
            .and_then(|v| serde_json::from_str::<logs::GetDataProtectionPolicyResponse>(v).ok());
        Ok(logs::GetDataProtectionPolicyResponse {
            log_group_identifier: Some(identifier.to_string()),
            policy_document: stored.as_ref().and_then(|s| s.policy_document.clone()),
            last_updated_time: stored.and_then(|s| s.last_updated_time),
        })
    }

    pub(crate) async fn delete_data_protection_policy(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteDataProtectionPolicyRequest,
    ) -> Result<Empty, AwsError> {
        let group = resolve_group(ctx, &None, &input.log_group_identifier)?;
        self.authorize_group(ctx, "DeleteDataProtectionPolicy", &group, |r| r)?;
        let name = group.name_in(ctx)?;
        if self
            .store
            .catalog()
            .group(&ctx.account_id, &ctx.region, name)
            .is_none()
        {
            return Err(group_not_found());
        }
        self.store
            .write(WriteOp::DeleteObject {
                key: data_protection_key(ctx, name),
                missing: AwsError::bad_request(
                    "ResourceNotFoundException",
                    "The specified log group has no data protection policy.",
                ),
            })
            .await?;
        Ok(Empty {})
    }

    // ------------------------------------------------------- export tasks ---

    pub(crate) fn create_export_task(
        &self,
        ctx: &RequestContext,
        input: logs::CreateExportTaskRequest,
    ) -> Result<logs::CreateExportTaskResponse, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        if let Some(name) = &input.task_name {
            if name.is_empty() || name.chars().count() > 512 {
                return Err(limits::constraint(
                    name,
                    "taskName",
                    "Member must have length between 1 and 512",
                ));
            }
        }
        if let Some(prefix) = &input.log_stream_name_prefix {
            limits::check_stream_name(prefix, "logStreamNamePrefix")?;
        }
        let from = input.from.ok_or_else(|| limits::missing("from"))?;
        let to = input.to.ok_or_else(|| limits::missing("to"))?;
        for (value, member) in [(from, "from"), (to, "to")] {
            if value < 0 {
                return Err(limits::constraint(
                    &value.to_string(),
                    member,
                    "Member must have value greater than or equal to 0",
                ));
            }
        }
        if to < from {
            return Err(invalid("The 'to' time must be later than the 'from' time."));
        }
        let bucket = required(&input.destination, "destination")?;
        if bucket.is_empty() || bucket.chars().count() > 512 {
            return Err(limits::constraint(
                bucket,
                "destination",
                "Member must have length between 1 and 512",
            ));
        }
        self.authorize_group(ctx, "CreateExportTask", &GroupRef::own(ctx, group), |r| r)?;
        if self
            .store
            .catalog()
            .group(&ctx.account_id, &ctx.region, group)
            .is_none()
        {
            return Err(group_not_found());
        }
        Err(invalid(format!(
            "Berth has no Amazon S3, so it cannot export log group {group} to the bucket \
             '{bucket}'. Read the events with GetLogEvents, FilterLogEvents or StartQuery instead."
        )))
    }

    pub(crate) fn describe_export_tasks(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeExportTasksRequest,
    ) -> Result<logs::DescribeExportTasksResponse, AwsError> {
        if let Some(id) = &input.task_id {
            if id.is_empty() || id.chars().count() > 512 {
                return Err(limits::constraint(
                    id,
                    "taskId",
                    "Member must have length between 1 and 512",
                ));
            }
        }
        if let Some(status) = &input.status_code {
            if !matches!(
                status.as_str(),
                "CANCELLED" | "COMPLETED" | "FAILED" | "PENDING" | "PENDING_CANCEL" | "RUNNING"
            ) {
                return Err(limits::constraint(
                    status,
                    "statusCode",
                    "Member must satisfy enum value set: [CANCELLED, COMPLETED, FAILED, PENDING, \
                     PENDING_CANCEL, RUNNING]",
                ));
            }
        }
        check_limit(input.limit, 50, 50)?;
        if let Some(token) = &input.next_token {
            tokens::decode_opaque(token)?;
        }
        ctx.authorize(&authz::on("logs:DescribeExportTasks", []))?;
        // CreateExportTask cannot create one without S3.
        Ok(logs::DescribeExportTasksResponse {
            export_tasks: Some(Vec::new()),
            next_token: None,
        })
    }

    pub(crate) fn cancel_export_task(
        &self,
        ctx: &RequestContext,
        input: logs::CancelExportTaskRequest,
    ) -> Result<Empty, AwsError> {
        let id = required(&input.task_id, "taskId")?;
        if id.is_empty() || id.chars().count() > 512 {
            return Err(limits::constraint(
                id,
                "taskId",
                "Member must have length between 1 and 512",
            ));
        }
        ctx.authorize(&authz::on("logs:CancelExportTask", []))?;
        Err(AwsError::bad_request(
            "ResourceNotFoundException",
            "The specified export task does not exist.",
        ))
    }

    // -------------------------------------------------------- log groups ---

    pub(crate) async fn put_log_group_deletion_protection(
        &self,
        ctx: &RequestContext,
        input: logs::PutLogGroupDeletionProtectionRequest,
    ) -> Result<Empty, AwsError> {
        let group = resolve_group(ctx, &None, &input.log_group_identifier)?;
        let enabled = input
            .deletion_protection_enabled
            .ok_or_else(|| limits::missing("deletionProtectionEnabled"))?;
        self.authorize_group(ctx, "PutLogGroupDeletionProtection", &group, |r| r)?;
        let name = group.name_in(ctx)?;
        let key = deletion_protection_key(&ctx.account_id, &ctx.region, name);
        let op = if enabled {
            WriteOp::PutObject {
                key,
                value: "true".into(),
                rules: PutRules {
                    group: Some(group_key(&ctx.account_id, &ctx.region, name)),
                    ..Default::default()
                },
            }
        } else {
            if self
                .store
                .catalog()
                .group(&ctx.account_id, &ctx.region, name)
                .is_none()
            {
                return Err(group_not_found());
            }
            if self.store.catalog().object(&key).is_none() {
                return Ok(Empty {});
            }
            WriteOp::DeleteObject {
                key,
                missing: group_not_found(),
            }
        };
        self.store.write(op).await?;
        Ok(Empty {})
    }

    pub(crate) fn list_log_groups(
        &self,
        ctx: &RequestContext,
        input: logs::ListLogGroupsRequest,
    ) -> Result<logs::ListLogGroupsResponse, AwsError> {
        let patterns: Option<Vec<(bool, String)>> = input
            .log_group_name_pattern
            .as_deref()
            .map(|pattern| {
                let valid_piece = |p: &str| {
                    let body = p.strip_prefix('^').unwrap_or(p);
                    (3..=24).contains(&body.chars().count())
                        && body
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-_/#".contains(c))
                };
                let pieces: Vec<&str> = pattern.split('|').collect();
                if pieces.len() > 5 || !pieces.iter().all(|p| valid_piece(p)) {
                    return Err(limits::constraint(
                        pattern,
                        "logGroupNamePattern",
                        "Member must satisfy regular expression pattern: \
                         (\\^?[\\.\\-_\\/#A-Za-z0-9]{3,24})(\\|\\^?[\\.\\-_\\/#A-Za-z0-9]{3,24}){0,4}",
                    ));
                }
                Ok(pieces
                    .into_iter()
                    .map(|p| match p.strip_prefix('^') {
                        Some(prefix) => (true, prefix.to_string()),
                        None => (false, p.to_ascii_lowercase()),
                    })
                    .collect())
            })
            .transpose()?;
        if let Some(class) = &input.log_group_class {
            if !matches!(
                class.as_str(),
                "STANDARD" | "INFREQUENT_ACCESS" | "DELIVERY" | "ESSENTIALS"
            ) {
                return Err(limits::constraint(
                    class,
                    "logGroupClass",
                    "Member must satisfy enum value set: [STANDARD, INFREQUENT_ACCESS, DELIVERY, \
                     ESSENTIALS]",
                ));
            }
        }
        let limit = check_limit(input.limit, 1000, 50)?;
        let tag_filters: Vec<(String, Vec<String>)> = input
            .log_group_tags
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|f| {
                let key = f
                    .key
                    .ok_or_else(|| limits::missing("logGroupTags.member.key"))?;
                Ok((key, f.values.unwrap_or_default()))
            })
            .collect::<Result<_, AwsError>>()?;
        let after = input
            .next_token
            .as_deref()
            .map(tokens::decode_opaque)
            .transpose()?;
        ctx.authorize(&[Requirement::new(
            "logs:ListLogGroups",
            ctx.arn("logs", "log-group::log-stream:"),
        )])?;
        // Berth's log groups have no data sources and no field indexes, so
        // filters on them match none.
        let impossible = input.data_sources.is_some() || input.field_index_names.is_some();
        let accounts_ok = input.include_linked_accounts != Some(true)
            || input
                .account_identifiers
                .as_ref()
                .is_none_or(|ids| ids.is_empty() || ids.contains(&ctx.account_id));
        let catalog = self.store.catalog();
        let mut page = Vec::new();
        let mut more = false;
        if !impossible && accounts_ok {
            for entry in catalog.groups_of(&ctx.account_id, &ctx.region, after.as_deref()) {
                let name = entry.info.name.as_str();
                let wanted = patterns.as_ref().is_none_or(|ps| {
                    ps.iter().any(|(prefix, p)| {
                        if *prefix {
                            name.starts_with(p.as_str())
                        } else {
                            name.to_ascii_lowercase().contains(p.as_str())
                        }
                    })
                }) && input
                    .log_group_class
                    .as_deref()
                    .is_none_or(|c| entry.info.class == c)
                    && tag_filters.iter().all(|(key, values)| {
                        entry
                            .info
                            .tags
                            .get(key)
                            .is_some_and(|v| values.is_empty() || values.contains(v))
                    });
                if !wanted {
                    continue;
                }
                if page.len() == limit {
                    more = true;
                    break;
                }
                page.push(logs::LogGroupSummary {
                    log_group_name: Some(entry.info.name.clone()),
                    log_group_arn: Some(ctx.arn("logs", &format!("log-group:{name}"))),
                    log_group_class: Some(entry.info.class.clone()),
                });
            }
        }
        let next_token = more
            .then(|| {
                page.last()
                    .and_then(|g: &logs::LogGroupSummary| g.log_group_name.as_deref())
                    .map(tokens::encode_opaque)
            })
            .flatten();
        Ok(logs::ListLogGroupsResponse {
            log_groups: Some(page),
            next_token,
        })
    }
}

fn destination_not_found() -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        "The specified destination does not exist.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DP: &str = r#"{
        "Name": "p", "Version": "2021-06-01",
        "Statement": [
            {"Sid": "audit", "DataIdentifier": ["arn:aws:dataprotection::aws:data-identifier/EmailAddress"],
             "Operation": {"Audit": {"FindingsDestination": {}}}},
            {"Sid": "redact", "DataIdentifier": ["arn:aws:dataprotection::aws:data-identifier/EmailAddress"],
             "Operation": {"Deidentify": {"MaskConfig": {}}}}
        ]}"#;

    #[test]
    fn data_protection_policies_are_checked_as_logs_requires() {
        check_data_protection_policy(DP).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(DP).unwrap();
        v["Version"] = "2012-10-17".into();
        assert!(check_data_protection_policy(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(DP).unwrap();
        v["Statement"][1]["DataIdentifier"] =
            serde_json::json!(["arn:aws:dataprotection::aws:data-identifier/Address"]);
        assert!(check_data_protection_policy(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(DP).unwrap();
        v["Statement"][0]["DataIdentifier"] = serde_json::json!(["Mine"]);
        v["Statement"][1]["DataIdentifier"] = serde_json::json!(["Mine"]);
        assert!(check_data_protection_policy(&v.to_string()).is_err());
        v["Configuration"] =
            serde_json::json!({"CustomDataIdentifier": [{"Name": "Mine", "Regex": "x+"}]});
        check_data_protection_policy(&v.to_string()).unwrap();
        assert!(check_data_protection_policy("not json").is_err());
    }

    #[test]
    fn undeliverable_targets_name_the_missing_service() {
        let e = undeliverable("arn:aws:kinesis:us-east-1:000000000000:stream/s");
        assert!(e.message.contains("Amazon Kinesis Data Streams"));
        let e = undeliverable("arn:aws:lambda:us-east-1:000000000000:function:f");
        assert!(e.message.contains("AWS Lambda"));
        let e = undeliverable("arn:aws:logs:us-east-1:000000000000:destination:d");
        assert_eq!(e.code, "ResourceNotFoundException");
        assert_eq!(undeliverable("nope").code, "InvalidParameterException");
    }

    #[test]
    fn metric_values_must_name_pattern_fields() {
        let pattern = FilterPattern::parse("[ip, user, status, bytes]").unwrap();
        let t = |value: &str| logs::MetricTransformation {
            metric_name: Some("m".into()),
            metric_namespace: Some("n".into()),
            metric_value: Some(value.into()),
            ..Default::default()
        };
        check_transformation(&t("1"), &pattern).unwrap();
        check_transformation(&t("$bytes"), &pattern).unwrap();
        check_transformation(&t("$.latency"), &pattern).unwrap();
        assert!(check_transformation(&t("$nope"), &pattern).is_err());
        assert!(check_transformation(&t("bytes"), &pattern).is_err());
        let mut with_dims = t("1");
        with_dims.dimensions = Some(std::collections::BTreeMap::from([(
            "Status".into(),
            "$status".into(),
        )]));
        check_transformation(&with_dims, &pattern).unwrap();
        with_dims.default_value = Some(0.0);
        assert!(check_transformation(&with_dims, &pattern).is_err());
        assert_eq!(
            pattern.extract("1.2.3.4 bob 200 512").unwrap(),
            std::collections::BTreeMap::from([
                ("$ip".to_string(), "1.2.3.4".to_string()),
                ("$user".to_string(), "bob".to_string()),
                ("$status".to_string(), "200".to_string()),
                ("$bytes".to_string(), "512".to_string()),
            ])
        );
        assert!(pattern.extract("too few").is_none());
    }
}
