//! Multi-Region secrets: ReplicateSecretToRegions (and CreateSecret's
//! AddReplicaRegions), RemoveRegionsFromReplication and
//! StopReplicationToReplica.
//!
//! A replica is a real secret in the other Region's scope
//! (`/secretsmanager/<account>/<region>/secrets/<name>`), with the primary's
//! ARN in that Region, so clients signing for that Region read it as any
//! other secret. It carries the primary's versions, staging labels,
//! description, tags and resource policy, and is rewritten in the same
//! transaction as every change of the primary (see [`sync_ops`]); the
//! replica itself refuses writes ("Operation not permitted on a replica
//! secret"). The primary lists its replicas with their status: `InSync`, or
//! `Failed` when a secret of that name already exists there and
//! ForceOverwriteReplicaSecret was not given.

use berth_model::shapes::secretsmanager as sm;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView, StoreExt};
use berth_util::time::now_secs;
use serde::{Deserialize, Serialize};

use super::{
    encode, find_secret, invalid_parameter, invalid_request, marked_for_deletion, not_found,
    prefix, replica_refused, required, SecretRecord, SecretsManagerService,
};
use crate::common::{corrupt, store_error, validation, AWS_REGIONS};

pub const IN_SYNC: &str = "InSync";
pub const FAILED: &str = "Failed";
const DEFAULT_KMS_KEY: &str = "alias/aws/secretsmanager";

/// One replica of a primary secret, as the primary records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Replica {
    pub region: String,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    pub status: String,
    pub message: String,
}

fn invalid_region() -> AwsError {
    invalid_parameter("Invalid replica region.")
}

/// Whether `region` has the form of a Region code (`RegionType`'s pattern,
/// `^([a-z]+-)+\d+$`).
fn region_form(region: &str) -> bool {
    let Some((head, digits)) = region.rsplit_once('-') else {
        return false;
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && head
            .split('-')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

fn check_region_form(region: &str, member: &str) -> Result<(), AwsError> {
    if region.is_empty() || region.len() > 128 || !region_form(region) {
        return Err(validation(format!(
            "1 validation error detected: Value '{region}' at '{member}' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: ^([a-z]+-)+\\d+$"
        )));
    }
    Ok(())
}

/// Checks AddReplicaRegions: Regions of the `aws` partition, none twice, not
/// the primary's own. Answers `(region, kms key)` pairs.
pub fn check_regions(
    own_region: &str,
    regions: Option<&Vec<sm::ReplicaRegionType>>,
) -> Result<Vec<(String, Option<String>)>, AwsError> {
    let Some(regions) = regions else {
        return Ok(Vec::new());
    };
    if regions.is_empty() {
        return Err(validation(
            "1 validation error detected: Value '[]' at 'addReplicaRegions' failed to satisfy \
             constraint: Member must have length greater than or equal to 1",
        ));
    }
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let region = r.region.clone().unwrap_or_default();
        check_region_form(
            &region,
            &format!("addReplicaRegions.{}.member.region", i + 1),
        )?;
        if let Some(k) = &r.kms_key_id {
            if k.chars().count() > 2048 {
                return Err(validation(format!(
                    "1 validation error detected: Value at 'addReplicaRegions.{}.member.kmsKeyId' \
                     failed to satisfy constraint: Member must have length less than or equal \
                     to 2048",
                    i + 1
                )));
            }
        }
        if region == own_region
            || !AWS_REGIONS.contains(&region.as_str())
            || out.iter().any(|(r, _)| *r == region)
        {
            return Err(invalid_region());
        }
        out.push((region, r.kms_key_id.clone().filter(|k| !k.is_empty())));
    }
    Ok(out)
}

/// The ARN of `primary_arn`'s replica in `region`: the same ARN in that
/// Region.
pub fn replica_arn(primary_arn: &str, region: &str) -> String {
    let mut parts: Vec<&str> = primary_arn.splitn(5, ':').collect();
    if parts.len() == 5 {
        parts[3] = region;
    }
    parts.join(":")
}

/// ReplicationStatus as Describe/List/Create answer it (absent without
/// replicas).
pub fn statuses(record: &SecretRecord) -> Option<Vec<sm::ReplicationStatusType>> {
    if record.replicas.is_empty() {
        return None;
    }
    Some(
        record
            .replicas
            .iter()
            .map(|r| sm::ReplicationStatusType {
                region: Some(r.region.clone()),
                kms_key_id: Some(
                    r.kms_key_id
                        .clone()
                        .unwrap_or_else(|| DEFAULT_KMS_KEY.to_string()),
                ),
                status: Some(r.status.clone()),
                status_message: Some(r.message.clone()),
                last_accessed_date: None,
            })
            .collect(),
    )
}

/// The replica of `primary` (in `primary_region`) for `region`, keeping
/// what belongs to the replica itself from `existing`.
fn replica_record(
    primary: &SecretRecord,
    primary_region: &str,
    region: &str,
    kms_key_id: Option<String>,
    existing: Option<&SecretRecord>,
    now: f64,
) -> SecretRecord {
    SecretRecord {
        name: primary.name.clone(),
        arn: replica_arn(&primary.arn, region),
        description: primary.description.clone(),
        kms_key_id,
        tags: primary.tags.clone(),
        created: existing.map_or(now, |e| e.created),
        last_changed: primary.last_changed,
        deleted: None,
        purge_at: None,
        versions: primary.versions.clone(),
        resource_policy: primary.resource_policy.clone(),
        primary_region: Some(primary_region.to_string()),
        replicas: Vec::new(),
        last_accessed: existing.and_then(|e| e.last_accessed),
    }
}

/// The live (not purged) secret stored at `key`.
fn live<V: ReadView + ?Sized>(
    view: &V,
    key: &str,
    now: f64,
) -> Result<Option<SecretRecord>, AwsError> {
    let Some(kv) = view.get(key) else {
        return Ok(None);
    };
    let record: SecretRecord = serde_json::from_slice(&kv.value).map_err(|_| corrupt(key))?;
    Ok((!record.purged(now)).then_some(record))
}

/// Adds replicas of `record` (in `primary_region`) in `regions`; answers
/// the writes of the replicas (the caller writes `record` itself).
pub fn add_ops<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    primary_region: &str,
    record: &mut SecretRecord,
    regions: &[(String, Option<String>)],
    force_overwrite: bool,
    now: f64,
) -> Result<Vec<Op>, AwsError> {
    let mut ops = Vec::new();
    for (region, kms_key_id) in regions {
        if record
            .replicas
            .iter()
            .any(|r| r.region == *region && r.status == IN_SYNC)
        {
            return Err(invalid_parameter(format!(
                "The secret {} is already replicated to {region}.",
                record.name
            )));
        }
        // A replica that failed before is tried again.
        record.replicas.retain(|r| r.region != *region);
        let key = format!("{}{}", prefix(account, region), record.name);
        let existing = live(view, &key, now)?;
        let failure = match &existing {
            Some(_) if !force_overwrite => Some(format!(
                "Replication failed: Secret name {} already exists in region {region}.",
                record.name
            )),
            Some(e) if !e.replicas.is_empty() => Some(format!(
                "Replication failed: Secret {} in region {region} is a primary secret with \
                 replicas of its own.",
                record.name
            )),
            _ => None,
        };
        if let Some(message) = failure {
            record.replicas.push(Replica {
                region: region.clone(),
                kms_key_id: kms_key_id.clone(),
                status: FAILED.to_string(),
                message,
            });
            continue;
        }
        let replica = replica_record(
            record,
            primary_region,
            region,
            kms_key_id.clone(),
            None,
            now,
        );
        ops.push(encode(&key, &replica)?);
        record.replicas.push(Replica {
            region: region.clone(),
            kms_key_id: kms_key_id.clone(),
            status: IN_SYNC.to_string(),
            message: "Replication succeeded".to_string(),
        });
    }
    Ok(ops)
}

/// Rewrites every in-sync replica of `record` (in `primary_region`) from it.
/// A replica that is no longer this secret's is marked Failed.
pub fn sync_ops<V: ReadView + ?Sized>(
    view: &V,
    account: &str,
    primary_region: &str,
    record: &mut SecretRecord,
    now: f64,
) -> Result<Vec<Op>, AwsError> {
    let mut ops = Vec::new();
    let snapshot = record.clone();
    for replica in record.replicas.iter_mut().filter(|r| r.status == IN_SYNC) {
        let key = format!("{}{}", prefix(account, &replica.region), snapshot.name);
        let existing = live(view, &key, now)?;
        let ours = existing.as_ref().is_some_and(|e| {
            e.primary_region.as_deref() == Some(primary_region)
                && e.arn == replica_arn(&snapshot.arn, &replica.region)
        });
        if !ours {
            replica.status = FAILED.to_string();
            replica.message = format!(
                "Replication failed: Secret {} in region {} is no longer a replica of this \
                 secret.",
                snapshot.name, replica.region
            );
            continue;
        }
        let updated = replica_record(
            &snapshot,
            primary_region,
            &replica.region,
            replica.kms_key_id.clone(),
            existing.as_ref(),
            now,
        );
        ops.push(encode(&key, &updated)?);
    }
    Ok(ops)
}

impl SecretsManagerService {
    pub(super) async fn replicate(
        &self,
        ctx: &RequestContext,
        input: sm::ReplicateSecretToRegionsRequest,
    ) -> Result<sm::ReplicateSecretToRegionsResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let Some(requested) = input.add_replica_regions.as_ref() else {
            return Err(validation(
                "1 validation error detected: Value null at 'addReplicaRegions' failed to \
                 satisfy constraint: Member must not be null",
            ));
        };
        let regions = check_regions(&ctx.region, Some(requested))?;
        let force = input.force_overwrite_replica_secret.unwrap_or(false);
        let names: Vec<String> = regions.iter().map(|(r, _)| r.clone()).collect();
        let secret_id =
            self.authorize_secret(ctx, "ReplicateSecretToRegions", &secret_id, |r| {
                r.condition_values("secretsmanager:AddReplicaRegions", names.iter().cloned())
            })?;
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let result = self
            .store
            .update(move |view| {
                let now = now_secs() as f64;
                let (key, mut record) =
                    find_secret(view, &account, &region, &secret_id, now)?.ok_or_else(not_found)?;
                if record.primary_region.is_some() {
                    return Err(replica_refused());
                }
                if record.deleted.is_some() {
                    return Err(marked_for_deletion());
                }
                let mut ops = add_ops(view, &account, &region, &mut record, &regions, force, now)?;
                ops.push(encode(&key, &record)?);
                Ok((ops, (record.arn.clone(), statuses(&record))))
            })
            .await
            .map_err(store_error)?;
        let (_, (arn, replication_status)) = result?;
        Ok(sm::ReplicateSecretToRegionsResponse {
            arn: Some(arn),
            replication_status,
        })
    }

    pub(super) async fn remove_regions(
        &self,
        ctx: &RequestContext,
        input: sm::RemoveRegionsFromReplicationRequest,
    ) -> Result<sm::RemoveRegionsFromReplicationResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let regions = input.remove_replica_regions.clone().unwrap_or_default();
        if regions.is_empty() {
            return Err(validation(
                "1 validation error detected: Value '[]' at 'removeReplicaRegions' failed to \
                 satisfy constraint: Member must have length greater than or equal to 1",
            ));
        }
        for (i, region) in regions.iter().enumerate() {
            check_region_form(region, &format!("removeReplicaRegions.{}.member", i + 1))?;
        }
        let secret_id =
            self.authorize_secret(ctx, "RemoveRegionsFromReplication", &secret_id, |r| r)?;
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let result = self
            .store
            .update(move |view| {
                let now = now_secs() as f64;
                let (key, mut record) =
                    find_secret(view, &account, &region, &secret_id, now)?.ok_or_else(not_found)?;
                if record.primary_region.is_some() {
                    return Err(replica_refused());
                }
                let mut ops = Vec::new();
                for gone in &regions {
                    let Some(replica) = record.replicas.iter().find(|r| r.region == *gone) else {
                        return Err(invalid_region());
                    };
                    let replica_key = format!("{}{}", prefix(&account, gone), record.name);
                    let ours = live(view, &replica_key, now)?.is_some_and(|e| {
                        e.primary_region.as_deref() == Some(region.as_str())
                            && e.arn == replica_arn(&record.arn, gone)
                    });
                    if replica.status == IN_SYNC && ours {
                        ops.push(Op::delete(replica_key));
                    }
                    record.replicas.retain(|r| r.region != *gone);
                }
                ops.push(encode(&key, &record)?);
                Ok((ops, (record.arn.clone(), statuses(&record))))
            })
            .await
            .map_err(store_error)?;
        let (_, (arn, replication_status)) = result?;
        Ok(sm::RemoveRegionsFromReplicationResponse {
            arn: Some(arn),
            replication_status: Some(replication_status.unwrap_or_default()),
        })
    }

    pub(super) async fn stop_replication(
        &self,
        ctx: &RequestContext,
        input: sm::StopReplicationToReplicaRequest,
    ) -> Result<sm::StopReplicationToReplicaResponse, AwsError> {
        let secret_id = required(&input.secret_id, "SecretId")?.to_string();
        let secret_id =
            self.authorize_secret(ctx, "StopReplicationToReplica", &secret_id, |r| r)?;
        let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
        let result = self
            .store
            .update(move |view| {
                let now = now_secs() as f64;
                let (key, mut record) =
                    find_secret(view, &account, &region, &secret_id, now)?.ok_or_else(not_found)?;
                let Some(primary_region) = record.primary_region.take() else {
                    return Err(invalid_request(format!(
                        "Secret {} is not a replica secret. Call StopReplicationToReplica in a \
                         replica's Region, on the replica.",
                        record.name
                    )));
                };
                record.last_changed = now;
                let mut ops = vec![encode(&key, &record)?];
                // The primary no longer lists this Region.
                let primary_key = format!("{}{}", prefix(&account, &primary_region), record.name);
                if let Some(mut primary) = live(view, &primary_key, now)? {
                    if primary.arn == replica_arn(&record.arn, &primary_region) {
                        primary.replicas.retain(|r| r.region != region);
                        ops.push(encode(&primary_key, &primary)?);
                    }
                }
                Ok((ops, record.arn.clone()))
            })
            .await
            .map_err(store_error)?;
        let (_, arn) = result?;
        Ok(sm::StopReplicationToReplicaResponse { arn: Some(arn) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_checked() {
        let r = |region: &str| sm::ReplicaRegionType {
            region: Some(region.into()),
            kms_key_id: None,
        };
        let ok = check_regions("us-east-1", Some(&vec![r("us-west-2"), r("eu-west-1")])).unwrap();
        assert_eq!(ok.len(), 2);
        let code = |regions: Vec<sm::ReplicaRegionType>| {
            check_regions("us-east-1", Some(&regions))
                .unwrap_err()
                .code
                .to_string()
        };
        assert_eq!(code(vec![r("us-east-1")]), "InvalidParameterException");
        assert_eq!(code(vec![r("mars-north-1")]), "InvalidParameterException");
        assert_eq!(
            code(vec![r("us-west-2"), r("us-west-2")]),
            "InvalidParameterException"
        );
        assert_eq!(code(vec![r("US_WEST_2")]), "ValidationException");
        assert_eq!(code(vec![]), "ValidationException");
        assert_eq!(
            replica_arn(
                "arn:aws:secretsmanager:us-east-1:000000000000:secret:a/b-AbCdEf",
                "us-west-2"
            ),
            "arn:aws:secretsmanager:us-west-2:000000000000:secret:a/b-AbCdEf"
        );
    }
}
