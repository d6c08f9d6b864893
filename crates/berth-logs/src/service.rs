//! The CloudWatch Logs JSON 1.1 handlers. Each handler validates the whole
//! request first, then reads the in-memory catalog or queues one write.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_model::authz::Requirement;
use berth_model::shapes::logs;
use berth_model::{json_op, AwsError, JsonService, RequestContext};
use berth_util::time::now_millis;
use serde::Serialize;

use crate::filter::FilterPattern;
use crate::limits::{self, invalid, required, PutEvent};
use crate::store::{
    group_key, group_not_found, scan_stream, stream_not_found, Catalog, GroupChange, GroupEntry,
    MergedScan, NewEvent, NewGroup, Outcome, Store, StreamInfo, WriteOp,
};
use crate::tokens::{self, Direction, EventKey};
use crate::LogsError;

/// FilterLogEvents stops after scanning this many events and hands back a
/// token, so one call's latency stays bounded however selective the pattern.
const FILTER_SCAN_BUDGET: usize = 200_000;
/// Rows fetched per stream per round trip while merging streams.
const FILTER_CHUNK: usize = 512;

/// CloudWatch Logs for one Berth server.
pub struct LogsService {
    pub(crate) store: Arc<Store>,
    pub(crate) queries: crate::queries::Queries,
    pub(crate) tails: Arc<crate::livetail::Sessions>,
}

/// Operations with no output members answer `{}`.
#[derive(Serialize)]
pub(crate) struct Empty {}

/// The model's operations Berth does not implement, each with the reason.
/// They answer `InvalidOperationException` naming the reason, never a fake
/// success.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    ("AssociateKmsKey", "Berth has no AWS KMS to encrypt log groups or query results with"),
    ("DisassociateKmsKey", "Berth has no AWS KMS; no log group can have a KMS key"),
    ("AssociateSourceToS3TableIntegration", "Berth has no Amazon S3 Tables"),
    ("DisassociateSourceFromS3TableIntegration", "Berth has no Amazon S3 Tables"),
    ("ListSourcesForS3TableIntegration", "Berth has no Amazon S3 Tables"),
    ("CreateDelivery", "log deliveries carry AWS services' vended logs to S3, Firehose or other log groups; Berth's services vend none"),
    ("DeleteDelivery", "Berth has no log deliveries (see CreateDelivery)"),
    ("GetDelivery", "Berth has no log deliveries (see CreateDelivery)"),
    ("DescribeDeliveries", "Berth has no log deliveries (see CreateDelivery)"),
    ("UpdateDeliveryConfiguration", "Berth has no log deliveries (see CreateDelivery)"),
    ("PutDeliverySource", "delivery sources are AWS resources that vend logs (CloudFront, Bedrock …), which Berth does not have"),
    ("GetDeliverySource", "Berth has no delivery sources (see PutDeliverySource)"),
    ("DeleteDeliverySource", "Berth has no delivery sources (see PutDeliverySource)"),
    ("DescribeDeliverySources", "Berth has no delivery sources (see PutDeliverySource)"),
    ("PutDeliveryDestination", "delivery destinations are S3 buckets, Firehose streams or X-Ray, which Berth does not have"),
    ("GetDeliveryDestination", "Berth has no delivery destinations (see PutDeliveryDestination)"),
    ("DeleteDeliveryDestination", "Berth has no delivery destinations (see PutDeliveryDestination)"),
    ("DescribeDeliveryDestinations", "Berth has no delivery destinations (see PutDeliveryDestination)"),
    ("PutDeliveryDestinationPolicy", "Berth has no delivery destinations (see PutDeliveryDestination)"),
    ("GetDeliveryDestinationPolicy", "Berth has no delivery destinations (see PutDeliveryDestination)"),
    ("DeleteDeliveryDestinationPolicy", "Berth has no delivery destinations (see PutDeliveryDestination)"),
    ("DescribeConfigurationTemplates", "Berth has no log deliveries, so no delivery configuration templates"),
    ("CreateLogAnomalyDetector", "log anomaly detection is a machine-learning service Berth does not have"),
    ("DeleteLogAnomalyDetector", "Berth has no log anomaly detection"),
    ("GetLogAnomalyDetector", "Berth has no log anomaly detection"),
    ("ListLogAnomalyDetectors", "Berth has no log anomaly detection"),
    ("UpdateLogAnomalyDetector", "Berth has no log anomaly detection"),
    ("ListAnomalies", "Berth has no log anomaly detection"),
    ("UpdateAnomaly", "Berth has no log anomaly detection"),
    ("PutAccountPolicy", "account policies apply data protection, subscription, transformer and field index policies account-wide; Berth applies none of those to events"),
    ("DescribeAccountPolicies", "Berth has no account policies (see PutAccountPolicy)"),
    ("DeleteAccountPolicy", "Berth has no account policies (see PutAccountPolicy)"),
    ("PutIndexPolicy", "Berth's event store has no field indexes"),
    ("DescribeIndexPolicies", "Berth's event store has no field indexes"),
    ("DeleteIndexPolicy", "Berth's event store has no field indexes"),
    ("DescribeFieldIndexes", "Berth's event store has no field indexes"),
    ("PutTransformer", "Berth does not transform events at ingestion"),
    ("GetTransformer", "Berth does not transform events at ingestion"),
    ("DeleteTransformer", "Berth does not transform events at ingestion"),
    ("TestTransformer", "Berth does not transform events at ingestion"),
    ("PutIntegration", "integrations connect CloudWatch Logs to Amazon OpenSearch Service, which Berth does not have"),
    ("GetIntegration", "Berth has no OpenSearch integrations"),
    ("DeleteIntegration", "Berth has no OpenSearch integrations"),
    ("ListIntegrations", "Berth has no OpenSearch integrations"),
    ("CreateScheduledQuery", "scheduled queries deliver their results to S3 or EventBridge, which Berth does not have"),
    ("GetScheduledQuery", "Berth has no scheduled queries (see CreateScheduledQuery)"),
    ("GetScheduledQueryHistory", "Berth has no scheduled queries (see CreateScheduledQuery)"),
    ("ListScheduledQueries", "Berth has no scheduled queries (see CreateScheduledQuery)"),
    ("UpdateScheduledQuery", "Berth has no scheduled queries (see CreateScheduledQuery)"),
    ("DeleteScheduledQuery", "Berth has no scheduled queries (see CreateScheduledQuery)"),
    ("CreateLookupTable", "lookup tables are read from S3, which Berth does not have"),
    ("GetLookupTable", "Berth has no lookup tables (see CreateLookupTable)"),
    ("DescribeLookupTables", "Berth has no lookup tables (see CreateLookupTable)"),
    ("UpdateLookupTable", "Berth has no lookup tables (see CreateLookupTable)"),
    ("DeleteLookupTable", "Berth has no lookup tables (see CreateLookupTable)"),
    ("CreateImportTask", "import tasks read log data from S3, which Berth does not have"),
    ("CancelImportTask", "Berth has no import tasks (see CreateImportTask)"),
    ("DescribeImportTasks", "Berth has no import tasks (see CreateImportTask)"),
    ("DescribeImportTaskBatches", "Berth has no import tasks (see CreateImportTask)"),
    ("PutSyslogConfiguration", "Berth does not receive syslog"),
    ("DeleteSyslogConfiguration", "Berth does not receive syslog"),
    ("ListSyslogConfigurations", "Berth does not receive syslog"),
    ("PutBearerTokenAuthentication", "Berth authenticates every call with SigV4 and has no bearer-token ingestion endpoint"),
    ("PutStorageTierPolicy", "Berth keeps every event in one store; it has no storage tiers"),
    ("GetStorageTierPolicy", "Berth keeps every event in one store; it has no storage tiers"),
    ("GetLogObject", "log objects are the large payloads of AWS vended logs kept in S3, which Berth does not have"),
    ("GetLogFields", "data sources other than log groups (S3, third-party sources) do not exist in Berth; GetLogGroupFields serves log groups"),
    ("ListAggregateLogGroupSummaries", "aggregate summaries group log groups by data source, which Berth's log groups do not have"),
];

/// An operation of the model Berth leaves unimplemented, with its reason.
fn unsupported(operation: &str) -> AwsError {
    let reason = NOT_IMPLEMENTED
        .iter()
        .find(|(op, _)| *op == operation)
        .map_or("Berth does not implement it", |(_, reason)| *reason);
    AwsError::bad_request(
        "InvalidOperationException",
        format!("Berth cannot perform the CloudWatch Logs operation {operation}: {reason}."),
    )
}

fn group_arn(ctx: &RequestContext, name: &str) -> String {
    ctx.arn("logs", &format!("log-group:{name}"))
}

/// A log group as a request names it (by name, or by ARN with or without
/// `:*`), with the account and region the reference points at.
///
/// The ARNs IAM is asked about are those AWS forms: the group's own ARN
/// (`log-group:<name>`) for the ARN-based tagging calls, and for the
/// classic group-level calls (CreateLogGroup, DescribeLogStreams,
/// PutRetentionPolicy, FilterLogEvents, …) the group's ARN with an empty
/// stream, `log-group:<name>:log-stream:`, which is what AWS's refusals
/// name (so `log-group:<name>:*` grants them); stream calls name
/// `log-group:<name>:log-stream:<stream>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRef {
    pub(crate) region: String,
    pub(crate) account: String,
    pub(crate) name: String,
}

impl GroupRef {
    pub(crate) fn own(ctx: &RequestContext, name: &str) -> GroupRef {
        GroupRef {
            region: ctx.region.clone(),
            account: ctx.account_id.clone(),
            name: name.to_string(),
        }
    }

    fn base(&self) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{}",
            self.region, self.account, self.name
        )
    }

    /// `log-group:<name>`: the group's ARN.
    pub(crate) fn arn(&self) -> String {
        self.base()
    }

    /// `log-group:<name>:log-stream:`: what classic group-level calls ask.
    pub(crate) fn classic(&self) -> String {
        format!("{}:log-stream:", self.base())
    }

    /// `log-group:<name>:log-stream:<stream>`.
    fn stream(&self, stream: &str) -> String {
        format!("{}:log-stream:{stream}", self.base())
    }

    /// The group's name, once the caller may know whether it exists: a
    /// group of another account or region does not, from its point of view.
    pub(crate) fn name_in(&self, ctx: &RequestContext) -> Result<&str, AwsError> {
        if self.region != ctx.region || self.account != ctx.account_id {
            return Err(group_not_found());
        }
        Ok(&self.name)
    }
}

/// Reads a log group ARN (`arn:aws:logs:<region>:<account>:log-group:<name>`,
/// optionally ending in `:*`).
pub(crate) fn parse_group_arn(arn: &str) -> Result<GroupRef, AwsError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, _, "logs", region, account, resource] = parts.as_slice() else {
        return Err(invalid(format!("Invalid ARN: {arn}")));
    };
    let Some(name) = resource.strip_prefix("log-group:") else {
        return Err(invalid(format!("Invalid ARN: {arn}")));
    };
    let name = name.strip_suffix(":*").unwrap_or(name);
    limits::check_group_name(name, "logGroupIdentifier")?;
    Ok(GroupRef {
        region: region.to_string(),
        account: account.to_string(),
        name: name.to_string(),
    })
}

/// Reads a log group ARN into the group name. Another account's or
/// region's group does not exist from the caller's point of view.
fn group_name_from_arn(ctx: &RequestContext, arn: &str) -> Result<String, AwsError> {
    parse_group_arn(arn)?.name_in(ctx).map(str::to_string)
}

/// The group a request names by `logGroupName` or `logGroupIdentifier`
/// (a name or an ARN); exactly one of them.
pub(crate) fn resolve_group(
    ctx: &RequestContext,
    name: &Option<String>,
    identifier: &Option<String>,
) -> Result<GroupRef, AwsError> {
    match (name, identifier) {
        (Some(_), Some(_)) => Err(invalid(
            "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
        )),
        (Some(name), None) => {
            limits::check_group_name(name, "logGroupName")?;
            Ok(GroupRef::own(ctx, name))
        }
        (None, Some(identifier)) if identifier.starts_with("arn:") => parse_group_arn(identifier),
        (None, Some(identifier)) => {
            limits::check_group_name(identifier, "logGroupIdentifier")?;
            Ok(GroupRef::own(ctx, identifier))
        }
        (None, None) => Err(invalid(
            "Should provide either logGroupName or logGroupIdentifier.",
        )),
    }
}

/// The `logGroupName` and `logStreamName` of a request, present and valid.
fn group_and_stream<'a>(
    group: &'a Option<String>,
    stream: &'a Option<String>,
) -> Result<(&'a str, &'a str), AwsError> {
    let group = required(group, "logGroupName")?;
    limits::check_group_name(group, "logGroupName")?;
    let stream = required(stream, "logStreamName")?;
    limits::check_stream_name(stream, "logStreamName")?;
    Ok((group, stream))
}

pub(crate) fn check_new_tags(tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
    let refs = tags.iter().map(|(k, v)| berth_model::tags::TagRef {
        key: k.as_str(),
        value: v.as_str(),
    });
    berth_model::tags::check_user_tags(refs, std::iter::empty()).map_err(invalid)
}

fn check_tag_keys(keys: &[String]) -> Result<(), AwsError> {
    if keys.is_empty() {
        return Err(limits::constraint(
            "[]",
            "tagKeys",
            "Member must have length greater than or equal to 1",
        ));
    }
    for key in keys {
        berth_model::tags::check_key(key).map_err(invalid)?;
    }
    Ok(())
}

fn render_group(ctx: &RequestContext, catalog: &Catalog, entry: &GroupEntry) -> logs::LogGroup {
    let arn = group_arn(ctx, &entry.info.name);
    let (metric_filters, data_protection, deletion_protection) =
        crate::policies::group_extras(catalog, &ctx.account_id, &ctx.region, &entry.info.name);
    logs::LogGroup {
        log_group_name: Some(entry.info.name.clone()),
        creation_time: Some(entry.info.created_ms),
        retention_in_days: entry.info.retention_days,
        metric_filter_count: Some(metric_filters),
        data_protection_status: data_protection.then(|| "ACTIVATED".to_string()),
        arn: Some(format!("{arn}:*")),
        log_group_arn: Some(arn),
        stored_bytes: Some(entry.stored_bytes()),
        kms_key_id: entry.info.kms_key_id.clone(),
        log_group_class: Some(entry.info.class.clone()),
        deletion_protection_enabled: Some(deletion_protection),
        ..Default::default()
    }
}

fn render_stream(ctx: &RequestContext, group: &str, stream: &StreamInfo) -> logs::LogStream {
    logs::LogStream {
        log_stream_name: Some(stream.name.clone()),
        creation_time: Some(stream.created_ms),
        first_event_timestamp: stream.first_event_ms,
        last_event_timestamp: stream.last_event_ms,
        last_ingestion_time: stream.last_ingestion_ms,
        upload_sequence_token: Some(tokens::event_digits(
            EventKey {
                timestamp: stream.last_ingestion_ms.unwrap_or(0),
                seq: 0,
            },
            stream.id,
        )),
        arn: Some(ctx.arn(
            "logs",
            &format!("log-group:{group}:log-stream:{}", stream.name),
        )),
        stored_bytes: Some(stream.stored_bytes),
    }
}

impl LogsService {
    /// Opens (or creates) `<data_dir>/logs/logs.db` and starts its writer.
    pub fn open(data_dir: &Path) -> Result<Arc<LogsService>, LogsError> {
        let dir = data_dir.join("logs");
        std::fs::create_dir_all(&dir).map_err(|source| LogsError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = Store::open(&dir.join("logs.db"))?;
        Ok(Arc::new(LogsService {
            store: Arc::new(store),
            queries: Default::default(),
            tails: Default::default(),
        }))
    }

    /// Deletes every event older than its group's retention at `now_ms`;
    /// returns how many were removed. Blocks until the deletion is durable.
    pub fn compact_once(&self, now_ms: i64) -> Result<u64, LogsError> {
        match self.store.write_blocking(WriteOp::Compact { now_ms })? {
            Outcome::Compacted(removed) => Ok(removed),
            _ => Ok(0),
        }
    }

    /// Runs [`compact_once`](Self::compact_once) every `interval` on the
    /// current tokio runtime until the service is dropped.
    pub fn spawn_compaction(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let service: Weak<LogsService> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                // Hold the service only while compacting, so dropping it
                // elsewhere ends this task.
                let Some(service) = service.upgrade() else {
                    break;
                };
                let result =
                    tokio::task::spawn_blocking(move || service.compact_once(now_millis())).await;
                match result {
                    Ok(Ok(removed)) if removed > 0 => {
                        tracing::info!(removed, "log retention removed expired events");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "log retention pass failed"),
                    Err(e) => tracing::warn!(error = %e, "log retention task panicked"),
                }
            }
        })
    }

    /// `logs:<operation>` on `resource`, a resource of `group`, with the
    /// group's tags (`aws:ResourceTag/<k>`; none when it does not exist).
    pub(crate) fn group_requirement(
        &self,
        operation: &str,
        resource: String,
        group: &GroupRef,
    ) -> Requirement {
        let catalog = self.store.catalog();
        let tags = catalog
            .group(&group.account, &group.region, &group.name)
            .map(|g| &g.info.tags);
        Requirement::new(format!("logs:{operation}"), resource).resource_tags(
            tags.into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    /// Asks IAM for `logs:<operation>` on the group's classic ARN
    /// (`log-group:<name>:log-stream:`) with its tags and what `extra` adds.
    pub(crate) fn authorize_group(
        &self,
        ctx: &RequestContext,
        operation: &str,
        group: &GroupRef,
        extra: impl FnOnce(Requirement) -> Requirement,
    ) -> Result<(), AwsError> {
        let requirement = self.group_requirement(operation, group.classic(), group);
        ctx.authorize(&[extra(requirement)])
    }

    /// Asks IAM for `logs:<operation>` on one stream of the group.
    fn authorize_stream(
        &self,
        ctx: &RequestContext,
        operation: &str,
        group: &GroupRef,
        stream: &str,
    ) -> Result<(), AwsError> {
        ctx.authorize(&[Requirement::new(
            format!("logs:{operation}"),
            group.stream(stream),
        )])
    }

    /// Whether the group exists (from the catalog).
    fn require_group(&self, ctx: &RequestContext, name: &str) -> Result<(), AwsError> {
        match self
            .store
            .catalog()
            .group(&ctx.account_id, &ctx.region, name)
        {
            Some(_) => Ok(()),
            None => Err(group_not_found()),
        }
    }

    async fn create_log_group(
        &self,
        ctx: &RequestContext,
        input: logs::CreateLogGroupRequest,
    ) -> Result<Empty, AwsError> {
        let name = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(name, "logGroupName")?;
        if let Some(key) = &input.kms_key_id {
            limits::check_kms_key_id(key)?;
        }
        let class = input.log_group_class.as_deref().unwrap_or("STANDARD");
        limits::check_log_group_class(class)?;
        let tags = input.tags.unwrap_or_default();
        check_new_tags(&tags)?;
        let group = GroupRef::own(ctx, name);
        let request_tags = || tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let mut requirements =
            vec![Requirement::new("logs:CreateLogGroup", group.classic())
                .request_tags(request_tags())];
        // Tags given at creation also need logs:TagResource, as on AWS.
        if !tags.is_empty() {
            requirements.push(
                Requirement::new("logs:TagResource", group.arn()).request_tags(request_tags()),
            );
        }
        ctx.authorize(&requirements)?;
        self.store
            .write(WriteOp::CreateGroup {
                key: group_key(&ctx.account_id, &ctx.region, name),
                group: NewGroup {
                    created_ms: now_millis(),
                    kms_key_id: input.kms_key_id,
                    class: class.to_string(),
                    tags,
                },
            })
            .await?;
        Ok(Empty {})
    }

    async fn delete_log_group(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteLogGroupRequest,
    ) -> Result<Empty, AwsError> {
        let name = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(name, "logGroupName")?;
        self.authorize_group(ctx, "DeleteLogGroup", &GroupRef::own(ctx, name), |r| r)?;
        self.store
            .write(WriteOp::DeleteGroup {
                key: group_key(&ctx.account_id, &ctx.region, name),
            })
            .await?;
        Ok(Empty {})
    }

    fn describe_log_groups(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeLogGroupsRequest,
    ) -> Result<logs::DescribeLogGroupsResponse, AwsError> {
        let prefix = input.log_group_name_prefix.as_deref();
        let pattern = input.log_group_name_pattern.as_deref();
        if prefix.is_some() && pattern.is_some() {
            return Err(invalid(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
            ));
        }
        if let Some(prefix) = prefix {
            limits::check_group_name_fragment(prefix, "logGroupNamePrefix", 1)?;
        }
        if let Some(pattern) = pattern {
            limits::check_group_name_fragment(pattern, "logGroupNamePattern", 0)?;
        }
        if let Some(class) = &input.log_group_class {
            limits::check_log_group_class(class)?;
        }
        let limit = limits::describe_limit(input.limit)?;
        let after = input
            .next_token
            .as_deref()
            .map(tokens::decode_opaque)
            .transpose()?;
        // AWS asks about the account's groups as a whole here.
        ctx.authorize(&[Requirement::new(
            "logs:DescribeLogGroups",
            ctx.arn("logs", "log-group::log-stream:"),
        )])?;
        let identifiers: Option<Vec<String>> = input
            .log_group_identifiers
            .as_ref()
            .map(|ids| {
                ids.iter()
                    .map(|id| {
                        if id.starts_with("arn:") {
                            group_name_from_arn(ctx, id)
                        } else {
                            limits::check_group_name(id, "logGroupIdentifiers")?;
                            Ok(id.clone())
                        }
                    })
                    .collect::<Result<_, _>>()
            })
            .transpose()?;
        let pattern_lower = pattern.map(str::to_ascii_lowercase);

        let catalog = self.store.catalog();
        let mut page: Vec<logs::LogGroup> = Vec::new();
        let mut more = false;
        for entry in catalog.groups_of(&ctx.account_id, &ctx.region, after.as_deref()) {
            let name = entry.info.name.as_str();
            let wanted = prefix.is_none_or(|p| name.starts_with(p))
                && pattern_lower
                    .as_deref()
                    .is_none_or(|p| name.to_ascii_lowercase().contains(p))
                && input
                    .log_group_class
                    .as_deref()
                    .is_none_or(|c| entry.info.class == c)
                && identifiers
                    .as_ref()
                    .is_none_or(|ids| ids.iter().any(|id| id == name));
            if !wanted {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(render_group(ctx, &catalog, entry));
        }
        let next_token = if more {
            page.last()
                .and_then(|g| g.log_group_name.as_deref())
                .map(tokens::encode_opaque)
        } else {
            None
        };
        Ok(logs::DescribeLogGroupsResponse {
            log_groups: Some(page),
            next_token,
        })
    }

    async fn put_retention_policy(
        &self,
        ctx: &RequestContext,
        input: logs::PutRetentionPolicyRequest,
    ) -> Result<Empty, AwsError> {
        let name = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(name, "logGroupName")?;
        let days = input
            .retention_in_days
            .ok_or_else(|| limits::missing("retentionInDays"))?;
        limits::check_retention(days)?;
        self.authorize_group(ctx, "PutRetentionPolicy", &GroupRef::own(ctx, name), |r| r)?;
        self.store
            .write(WriteOp::ChangeGroup {
                key: group_key(&ctx.account_id, &ctx.region, name),
                change: GroupChange::SetRetention(Some(days)),
            })
            .await?;
        Ok(Empty {})
    }

    async fn delete_retention_policy(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteRetentionPolicyRequest,
    ) -> Result<Empty, AwsError> {
        let name = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(name, "logGroupName")?;
        self.authorize_group(
            ctx,
            "DeleteRetentionPolicy",
            &GroupRef::own(ctx, name),
            |r| r,
        )?;
        self.store
            .write(WriteOp::ChangeGroup {
                key: group_key(&ctx.account_id, &ctx.region, name),
                change: GroupChange::SetRetention(None),
            })
            .await?;
        Ok(Empty {})
    }

    async fn create_log_stream(
        &self,
        ctx: &RequestContext,
        input: logs::CreateLogStreamRequest,
    ) -> Result<Empty, AwsError> {
        let (group, stream) = group_and_stream(&input.log_group_name, &input.log_stream_name)?;
        self.authorize_stream(ctx, "CreateLogStream", &GroupRef::own(ctx, group), stream)?;
        self.store
            .write(WriteOp::CreateStream {
                key: group_key(&ctx.account_id, &ctx.region, group),
                stream: stream.to_string(),
                created_ms: now_millis(),
                create_group: None,
                exists_ok: false,
            })
            .await?;
        Ok(Empty {})
    }

    async fn delete_log_stream(
        &self,
        ctx: &RequestContext,
        input: logs::DeleteLogStreamRequest,
    ) -> Result<Empty, AwsError> {
        let (group, stream) = group_and_stream(&input.log_group_name, &input.log_stream_name)?;
        self.authorize_stream(ctx, "DeleteLogStream", &GroupRef::own(ctx, group), stream)?;
        self.store
            .write(WriteOp::DeleteStream {
                key: group_key(&ctx.account_id, &ctx.region, group),
                stream: stream.to_string(),
            })
            .await?;
        Ok(Empty {})
    }

    fn describe_log_streams(
        &self,
        ctx: &RequestContext,
        input: logs::DescribeLogStreamsRequest,
    ) -> Result<logs::DescribeLogStreamsResponse, AwsError> {
        let group = resolve_group(ctx, &input.log_group_name, &input.log_group_identifier)?;
        let prefix = input.log_stream_name_prefix.as_deref();
        if let Some(prefix) = prefix {
            limits::check_stream_prefix(prefix)?;
        }
        let by_time = match input.order_by.as_deref() {
            None | Some("LogStreamName") => false,
            Some("LastEventTime") => true,
            Some(other) => {
                return Err(limits::constraint(
                    other,
                    "orderBy",
                    "Member must satisfy enum value set: [LogStreamName, LastEventTime]",
                ))
            }
        };
        if by_time && prefix.is_some() {
            return Err(invalid(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let descending = input.descending.unwrap_or(false);
        let limit = limits::describe_limit(input.limit)?;
        self.authorize_group(ctx, "DescribeLogStreams", &group, |r| r)?;
        let group = group.name_in(ctx)?.to_string();
        let after: Option<(i64, String)> = match input.next_token.as_deref() {
            None => None,
            Some(token) => {
                let text = tokens::decode_opaque(token)?;
                let (time, name) = text
                    .split_once('\n')
                    .ok_or_else(|| invalid("The specified nextToken is invalid."))?;
                let time = time
                    .parse::<i64>()
                    .map_err(|_| invalid("The specified nextToken is invalid."))?;
                Some((time, name.to_string()))
            }
        };

        let catalog = self.store.catalog();
        let entry = catalog
            .group(&ctx.account_id, &ctx.region, &group)
            .ok_or_else(group_not_found)?;
        let sort_key = |s: &StreamInfo| -> (i64, String) {
            let time = if by_time {
                s.last_event_ms.unwrap_or(0)
            } else {
                0
            };
            (time, s.name.clone())
        };
        let mut streams: Vec<((i64, String), &StreamInfo)> = entry
            .streams
            .values()
            .filter(|s| prefix.is_none_or(|p| s.name.starts_with(p)))
            .map(|s| (sort_key(s), s))
            .collect();
        streams.sort_by(|a, b| a.0.cmp(&b.0));
        if descending {
            streams.reverse();
        }
        let mut page = Vec::new();
        let mut last_key = None;
        let mut more = false;
        for (key, stream) in streams {
            let past_token = match &after {
                None => true,
                Some(after) if descending => key < *after,
                Some(after) => key > *after,
            };
            if !past_token {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(render_stream(ctx, &group, stream));
            last_key = Some(key);
        }
        let next_token = match (more, last_key) {
            (true, Some((time, name))) => Some(tokens::encode_opaque(&format!("{time}\n{name}"))),
            _ => None,
        };
        Ok(logs::DescribeLogStreamsResponse {
            log_streams: Some(page),
            next_token,
        })
    }

    async fn put_log_events(
        &self,
        ctx: &RequestContext,
        input: logs::PutLogEventsRequest,
    ) -> Result<logs::PutLogEventsResponse, AwsError> {
        let (group, stream) = group_and_stream(&input.log_group_name, &input.log_stream_name)?;
        // sequenceToken is ignored, as AWS has done since January 2023.
        let raw = input
            .log_events
            .ok_or_else(|| limits::missing("logEvents"))?;
        let mut events = Vec::with_capacity(raw.len());
        for event in raw {
            events.push(PutEvent {
                timestamp: event
                    .timestamp
                    .ok_or_else(|| limits::missing("logEvents.member.timestamp"))?,
                message: event
                    .message
                    .ok_or_else(|| limits::missing("logEvents.member.message"))?,
            });
        }
        self.authorize_stream(ctx, "PutLogEvents", &GroupRef::own(ctx, group), stream)?;
        let retention = {
            let catalog = self.store.catalog();
            let entry = catalog
                .group(&ctx.account_id, &ctx.region, group)
                .ok_or_else(group_not_found)?;
            if !entry.streams.contains_key(stream) {
                return Err(stream_not_found());
            }
            entry.info.retention_days
        };
        let now = now_millis();
        let verdict = limits::check_put_batch(&events, now, retention)?;
        let accepted = verdict.accepted(events.len());
        let new_events: Vec<NewEvent> = events
            .drain(accepted)
            .map(|e| NewEvent {
                timestamp: e.timestamp,
                message: e.message,
                position: None,
            })
            .collect();
        let outcome = self
            .store
            .write(WriteOp::Append {
                key: group_key(&ctx.account_id, &ctx.region, group),
                stream: stream.to_string(),
                events: new_events,
                ingest_ms: now,
                deduplicate: false,
                advance_cursor_to: None,
            })
            .await?;
        let next_sequence_token = match outcome {
            Outcome::Appended {
                last_key: Some(key),
                stream_id,
                ..
            } => tokens::event_digits(key, stream_id),
            Outcome::Appended { stream_id, .. } => tokens::event_digits(
                EventKey {
                    timestamp: now,
                    seq: 0,
                },
                stream_id,
            ),
            _ => tokens::event_digits(EventKey::MIN, 0),
        };
        let rejected = (verdict.too_old_end_index.is_some()
            || verdict.too_new_start_index.is_some())
        .then(|| logs::RejectedLogEventsInfo {
            too_new_log_event_start_index: verdict
                .too_new_start_index
                .map(|i| i32::try_from(i).unwrap_or(i32::MAX)),
            too_old_log_event_end_index: verdict
                .too_old_end_index
                .map(|i| i32::try_from(i).unwrap_or(i32::MAX)),
            expired_log_event_end_index: None,
        });
        Ok(logs::PutLogEventsResponse {
            next_sequence_token: Some(next_sequence_token),
            rejected_log_events_info: rejected,
            rejected_entity_info: None,
        })
    }

    async fn get_log_events(
        &self,
        ctx: &RequestContext,
        input: logs::GetLogEventsRequest,
    ) -> Result<logs::GetLogEventsResponse, AwsError> {
        let group = resolve_group(ctx, &input.log_group_name, &input.log_group_identifier)?;
        let stream = required(&input.log_stream_name, "logStreamName")?;
        limits::check_stream_name(stream, "logStreamName")?;
        let limit = limits::read_limit(input.limit)?;
        let token = input
            .next_token
            .as_deref()
            .map(tokens::parse_stream_token)
            .transpose()?;
        let start_from_head = input.start_from_head.unwrap_or(false);
        // startTime is inclusive, endTime exclusive.
        let lower = EventKey {
            timestamp: input.start_time.unwrap_or(i64::MIN),
            seq: i64::MIN,
        };
        let upper = EventKey {
            timestamp: input.end_time.unwrap_or(i64::MAX),
            seq: i64::MIN,
        };
        self.authorize_stream(ctx, "GetLogEvents", &group, stream)?;
        let group = group.name_in(ctx)?;
        let stream_id = {
            let catalog = self.store.catalog();
            let entry = catalog
                .group(&ctx.account_id, &ctx.region, group)
                .ok_or_else(group_not_found)?;
            entry.streams.get(stream).ok_or_else(stream_not_found)?.id
        };

        let (ascending, lower, upper) = match token {
            None => (start_from_head, lower, upper),
            Some((Direction::Forward, key)) => (true, lower.max(key), upper),
            Some((Direction::Backward, key)) => (false, lower, upper.min(key)),
        };
        let store = Arc::clone(&self.store);
        let mut events = tokio::task::spawn_blocking(move || {
            store.read(|conn| scan_stream(conn, stream_id, lower, upper, ascending, limit))
        })
        .await
        .map_err(|e| AwsError::internal(format!("log read task failed: {e}")))??;
        // The 1 MB response cap, counted from the end the scan started at.
        let mut bytes = 0usize;
        let keep = events
            .iter()
            .take_while(|e| {
                bytes += limits::event_size(&e.message);
                bytes <= limits::MAX_READ_BYTES
            })
            .count()
            .max(1)
            .min(events.len());
        events.truncate(keep);
        if !ascending {
            events.reverse();
        }

        let (forward, backward) = match (events.first(), events.last(), token) {
            (Some(first), Some(last), _) => (
                tokens::forward_token(last.key, stream_id),
                tokens::backward_token(first.key, stream_id),
            ),
            // Nothing new: hand back the caller's own token so it can tell
            // it has reached the end.
            (_, _, Some((_, key))) => (
                tokens::forward_token(key, stream_id),
                tokens::backward_token(key, stream_id),
            ),
            _ => (
                tokens::forward_token(EventKey::MIN, stream_id),
                tokens::backward_token(EventKey::MIN, stream_id),
            ),
        };
        Ok(logs::GetLogEventsResponse {
            events: Some(
                events
                    .into_iter()
                    .map(|e| logs::OutputLogEvent {
                        timestamp: Some(e.key.timestamp),
                        message: Some(e.message),
                        ingestion_time: Some(e.ingest_ms),
                    })
                    .collect(),
            ),
            next_forward_token: Some(forward),
            next_backward_token: Some(backward),
        })
    }

    async fn filter_log_events(
        &self,
        ctx: &RequestContext,
        input: logs::FilterLogEventsRequest,
    ) -> Result<logs::FilterLogEventsResponse, AwsError> {
        let group = resolve_group(ctx, &input.log_group_name, &input.log_group_identifier)?;
        if input.log_stream_names.is_some() && input.log_stream_name_prefix.is_some() {
            return Err(invalid(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.",
            ));
        }
        if let Some(names) = &input.log_stream_names {
            if names.is_empty() || names.len() > 100 {
                return Err(limits::constraint(
                    &format!("{names:?}"),
                    "logStreamNames",
                    "Member must have length between 1 and 100",
                ));
            }
            for name in names {
                limits::check_stream_name(name, "logStreamNames")?;
            }
        }
        if let Some(prefix) = &input.log_stream_name_prefix {
            limits::check_stream_prefix(prefix)?;
        }
        let pattern = match input.filter_pattern.as_deref() {
            Some(text) if text.chars().count() > 1024 => {
                return Err(limits::constraint(
                    text,
                    "filterPattern",
                    "Member must have length less than or equal to 1024",
                ))
            }
            Some(text) => FilterPattern::parse(text)
                .map_err(|e| invalid(format!("Invalid filter pattern: {e}")))?,
            None => FilterPattern::parse("").map_err(|e| invalid(e.to_string()))?,
        };
        let limit = limits::read_limit(input.limit)?;
        let after = input
            .next_token
            .as_deref()
            .map(tokens::decode_filter_token)
            .transpose()?;
        // startTime and endTime are both inclusive here.
        let mut lower = EventKey {
            timestamp: input.start_time.unwrap_or(i64::MIN),
            seq: i64::MIN,
        };
        if let Some(after) = after {
            lower = lower.max(after);
        }
        let upper = EventKey {
            timestamp: input.end_time.unwrap_or(i64::MAX),
            seq: i64::MAX,
        };
        self.authorize_group(ctx, "FilterLogEvents", &group, |r| r)?;
        let group = group.name_in(ctx)?;
        let streams: Vec<(i64, String)> = {
            let catalog = self.store.catalog();
            let entry = catalog
                .group(&ctx.account_id, &ctx.region, group)
                .ok_or_else(group_not_found)?;
            entry
                .streams
                .values()
                .filter(|s| {
                    input
                        .log_stream_names
                        .as_ref()
                        .is_none_or(|names| names.contains(&s.name))
                        && input
                            .log_stream_name_prefix
                            .as_ref()
                            .is_none_or(|p| s.name.starts_with(p.as_str()))
                })
                .map(|s| (s.id, s.name.clone()))
                .collect()
        };

        let store = Arc::clone(&self.store);
        let (found, next_key) = tokio::task::spawn_blocking(move || {
            store.read(|conn| {
                let ids: Vec<i64> = streams.iter().map(|(id, _)| *id).collect();
                let names: BTreeMap<i64, String> = streams.into_iter().collect();
                let mut scan = MergedScan::new(conn, &ids, lower, upper, FILTER_CHUNK);
                let mut found = Vec::new();
                let mut bytes = 0usize;
                let mut scanned = 0usize;
                let mut last_scanned = None;
                while let Some(event) = scan.next_event()? {
                    if scanned == FILTER_SCAN_BUDGET {
                        // More to scan: resume after the last event looked at.
                        return Ok((found, last_scanned));
                    }
                    scanned += 1;
                    let key = event.key;
                    if pattern.matches(&event.message) {
                        let size = limits::event_size(&event.message);
                        if found.len() == limit
                            || (bytes + size > limits::MAX_READ_BYTES && !found.is_empty())
                        {
                            return Ok((found, last_scanned));
                        }
                        bytes += size;
                        found.push(logs::FilteredLogEvent {
                            log_stream_name: names.get(&event.stream_id).cloned(),
                            timestamp: Some(key.timestamp),
                            message: Some(event.message),
                            ingestion_time: Some(event.ingest_ms),
                            event_id: Some(tokens::event_id(key, event.stream_id)),
                        });
                    }
                    last_scanned = Some(key);
                }
                Ok((found, None))
            })
        })
        .await
        .map_err(|e| AwsError::internal(format!("log read task failed: {e}")))??;
        Ok(logs::FilterLogEventsResponse {
            events: Some(found),
            searched_log_streams: None,
            next_token: next_key.map(tokens::encode_filter_token),
        })
    }

    async fn change_tags(
        &self,
        ctx: &RequestContext,
        group: &str,
        change: GroupChange,
    ) -> Result<Empty, AwsError> {
        self.store
            .write(WriteOp::ChangeGroup {
                key: group_key(&ctx.account_id, &ctx.region, group),
                change,
            })
            .await?;
        Ok(Empty {})
    }

    fn tags_of(
        &self,
        ctx: &RequestContext,
        group: &str,
    ) -> Result<BTreeMap<String, String>, AwsError> {
        self.store
            .catalog()
            .group(&ctx.account_id, &ctx.region, group)
            .map(|g| g.info.tags.clone())
            .ok_or_else(group_not_found)
    }

    async fn tag_resource(
        &self,
        ctx: &RequestContext,
        input: logs::TagResourceRequest,
    ) -> Result<Empty, AwsError> {
        let arn = required(&input.resource_arn, "resourceArn")?;
        let group = parse_group_arn(arn)?;
        let tags = input.tags.ok_or_else(|| limits::missing("tags"))?;
        check_new_tags(&tags)?;
        let requirement = self
            .group_requirement("TagResource", group.arn(), &group)
            .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        ctx.authorize(&[requirement])?;
        let group = group.name_in(ctx)?;
        self.require_group(ctx, group)?;
        self.change_tags(ctx, group, GroupChange::Tag(tags)).await
    }

    async fn untag_resource(
        &self,
        ctx: &RequestContext,
        input: logs::UntagResourceRequest,
    ) -> Result<Empty, AwsError> {
        let arn = required(&input.resource_arn, "resourceArn")?;
        let group = parse_group_arn(arn)?;
        let keys = input.tag_keys.ok_or_else(|| limits::missing("tagKeys"))?;
        check_tag_keys(&keys)?;
        let requirement = self
            .group_requirement("UntagResource", group.arn(), &group)
            .tag_keys(keys.iter().cloned());
        ctx.authorize(&[requirement])?;
        let group = group.name_in(ctx)?;
        self.require_group(ctx, group)?;
        self.change_tags(ctx, group, GroupChange::Untag(keys)).await
    }

    fn list_tags_for_resource(
        &self,
        ctx: &RequestContext,
        input: logs::ListTagsForResourceRequest,
    ) -> Result<logs::ListTagsForResourceResponse, AwsError> {
        let arn = required(&input.resource_arn, "resourceArn")?;
        let group = parse_group_arn(arn)?;
        ctx.authorize(&[self.group_requirement("ListTagsForResource", group.arn(), &group)])?;
        let group = group.name_in(ctx)?;
        Ok(logs::ListTagsForResourceResponse {
            tags: Some(self.tags_of(ctx, group)?),
        })
    }

    async fn tag_log_group(
        &self,
        ctx: &RequestContext,
        input: logs::TagLogGroupRequest,
    ) -> Result<Empty, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        let tags = input.tags.ok_or_else(|| limits::missing("tags"))?;
        check_new_tags(&tags)?;
        self.authorize_group(ctx, "TagLogGroup", &GroupRef::own(ctx, group), |r| {
            r.request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        })?;
        self.change_tags(ctx, group, GroupChange::Tag(tags)).await
    }

    async fn untag_log_group(
        &self,
        ctx: &RequestContext,
        input: logs::UntagLogGroupRequest,
    ) -> Result<Empty, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        let keys = input.tags.ok_or_else(|| limits::missing("tags"))?;
        check_tag_keys(&keys)?;
        self.authorize_group(ctx, "UntagLogGroup", &GroupRef::own(ctx, group), |r| {
            r.tag_keys(keys.iter().cloned())
        })?;
        self.change_tags(ctx, group, GroupChange::Untag(keys)).await
    }

    fn list_tags_log_group(
        &self,
        ctx: &RequestContext,
        input: logs::ListTagsLogGroupRequest,
    ) -> Result<logs::ListTagsLogGroupResponse, AwsError> {
        let group = required(&input.log_group_name, "logGroupName")?;
        limits::check_group_name(group, "logGroupName")?;
        self.authorize_group(ctx, "ListTagsLogGroup", &GroupRef::own(ctx, group), |r| r)?;
        Ok(logs::ListTagsLogGroupResponse {
            tags: Some(self.tags_of(ctx, group)?),
        })
    }
}

/// The largest request body `operation` accepts: a PutLogEvents batch holds
/// up to 1 MiB of events, which JSON escaping can grow several times (the
/// service answers a batch over its limits with CloudWatch's own errors).
pub fn max_body(operation: &str) -> usize {
    match operation {
        "PutLogEvents" => 8 * 1024 * 1024,
        _ => berth_model::service::DEFAULT_MAX_BODY,
    }
}

#[async_trait::async_trait]
impl JsonService for LogsService {
    fn target_prefix(&self) -> &'static str {
        logs::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        logs::SIGNING_NAME
    }

    fn max_body(&self, operation: &str) -> usize {
        max_body(operation)
    }

    fn streams(&self, operation: &str) -> bool {
        operation == "StartLiveTail"
    }

    async fn handle_streaming(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<berth_model::StreamingBody, AwsError> {
        match operation {
            "StartLiveTail" => {
                let input = berth_model::json::parse_input(body)?;
                self.start_live_tail(ctx, input)
            }
            other => Err(AwsError::internal(format!(
                "{other} is not a streaming operation."
            ))),
        }
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        match operation {
            "CreateLogGroup" => json_op!(body, |i| self.create_log_group(ctx, i).await),
            "DeleteLogGroup" => json_op!(body, |i| self.delete_log_group(ctx, i).await),
            "DescribeLogGroups" => json_op!(body, |i| self.describe_log_groups(ctx, i)),
            "PutRetentionPolicy" => json_op!(body, |i| self.put_retention_policy(ctx, i).await),
            "DeleteRetentionPolicy" => {
                json_op!(body, |i| self.delete_retention_policy(ctx, i).await)
            }
            "CreateLogStream" => json_op!(body, |i| self.create_log_stream(ctx, i).await),
            "DeleteLogStream" => json_op!(body, |i| self.delete_log_stream(ctx, i).await),
            "DescribeLogStreams" => json_op!(body, |i| self.describe_log_streams(ctx, i)),
            "PutLogEvents" => json_op!(body, |i| self.put_log_events(ctx, i).await),
            "GetLogEvents" => json_op!(body, |i| self.get_log_events(ctx, i).await),
            "FilterLogEvents" => json_op!(body, |i| self.filter_log_events(ctx, i).await),
            "TagResource" => json_op!(body, |i| self.tag_resource(ctx, i).await),
            "UntagResource" => json_op!(body, |i| self.untag_resource(ctx, i).await),
            "ListTagsForResource" => json_op!(body, |i| self.list_tags_for_resource(ctx, i)),
            "TagLogGroup" => json_op!(body, |i| self.tag_log_group(ctx, i).await),
            "UntagLogGroup" => json_op!(body, |i| self.untag_log_group(ctx, i).await),
            "ListTagsLogGroup" => json_op!(body, |i| self.list_tags_log_group(ctx, i)),
            "ListLogGroups" => json_op!(body, |i| self.list_log_groups(ctx, i)),
            "PutLogGroupDeletionProtection" => {
                json_op!(body, |i| self
                    .put_log_group_deletion_protection(ctx, i)
                    .await)
            }
            // Logs Insights.
            "StartQuery" => json_op!(body, |i| self.start_query(ctx, i).await),
            "GetQueryResults" => json_op!(body, |i| self.get_query_results(ctx, i)),
            "StopQuery" => json_op!(body, |i| self.stop_query(ctx, i)),
            "DescribeQueries" => json_op!(body, |i| self.describe_queries(ctx, i)),
            "ListLogGroupsForQuery" => json_op!(body, |i| self.list_log_groups_for_query(ctx, i)),
            "GetLogRecord" => json_op!(body, |i| self.get_log_record(ctx, i).await),
            "GetLogGroupFields" => json_op!(body, |i| self.get_log_group_fields(ctx, i).await),
            "PutQueryDefinition" => json_op!(body, |i| self.put_query_definition(ctx, i).await),
            "DescribeQueryDefinitions" => {
                json_op!(body, |i| self.describe_query_definitions(ctx, i))
            }
            "DeleteQueryDefinition" => {
                json_op!(body, |i| self.delete_query_definition(ctx, i).await)
            }
            // Metric filters.
            "PutMetricFilter" => json_op!(body, |i| self.put_metric_filter(ctx, i).await),
            "DescribeMetricFilters" => json_op!(body, |i| self.describe_metric_filters(ctx, i)),
            "DeleteMetricFilter" => json_op!(body, |i| self.delete_metric_filter(ctx, i).await),
            "TestMetricFilter" => json_op!(body, |i| self.test_metric_filter(ctx, i)),
            // Subscriptions and destinations (no target service in Berth).
            "PutSubscriptionFilter" => json_op!(body, |i| self.put_subscription_filter(ctx, i)),
            "DescribeSubscriptionFilters" => {
                json_op!(body, |i| self.describe_subscription_filters(ctx, i))
            }
            "DeleteSubscriptionFilter" => {
                json_op!(body, |i| self.delete_subscription_filter(ctx, i))
            }
            "PutDestination" => json_op!(body, |i| self.put_destination(ctx, i)),
            "PutDestinationPolicy" => json_op!(body, |i| self.put_destination_policy(ctx, i)),
            "DescribeDestinations" => json_op!(body, |i| self.describe_destinations(ctx, i)),
            "DeleteDestination" => json_op!(body, |i| self.delete_destination(ctx, i)),
            // Policies.
            "PutResourcePolicy" => json_op!(body, |i| self.put_resource_policy(ctx, i).await),
            "DescribeResourcePolicies" => {
                json_op!(body, |i| self.describe_resource_policies(ctx, i))
            }
            "DeleteResourcePolicy" => {
                json_op!(body, |i| self.delete_resource_policy(ctx, i).await)
            }
            "PutDataProtectionPolicy" => {
                json_op!(body, |i| self.put_data_protection_policy(ctx, i).await)
            }
            "GetDataProtectionPolicy" => {
                json_op!(body, |i| self.get_data_protection_policy(ctx, i))
            }
            "DeleteDataProtectionPolicy" => {
                json_op!(body, |i| self.delete_data_protection_policy(ctx, i).await)
            }
            // Export tasks (no S3 in Berth).
            "CreateExportTask" => json_op!(body, |i| self.create_export_task(ctx, i)),
            "DescribeExportTasks" => json_op!(body, |i| self.describe_export_tasks(ctx, i)),
            "CancelExportTask" => json_op!(body, |i| self.cancel_export_task(ctx, i)),
            "StartLiveTail" => Err(AwsError::bad_request(
                "InvalidOperationException",
                "StartLiveTail answers with an event stream; call it over HTTP.",
            )),
            other if logs::OPERATIONS.contains(&other) => Err(unsupported(other)),
            other => Err(AwsError::unknown_operation(format!(
                "CloudWatch Logs has no operation named '{other}'."
            ))),
        }
    }
}
