//! Amazon ECR's API (`AmazonEC2ContainerRegistry_V20150921`, JSON 1.1).
//!
//! Handlers validate input first, then ask IAM (`ecr:<Operation>` on the
//! repository's canonical ARN, `arn:aws:ecr:<region>:<account>:repository/<name>`,
//! with the repository's tags as `aws:ResourceTag/*` and, on CreateRepository
//! and the tag calls, the request's tags as `aws:RequestTag/*`/`aws:TagKeys`;
//! operations without a repository on `*`), then do every state-dependent
//! check in the same store mutation as the write it guards. Repository
//! policies (joined with the registry policy) take part through the
//! authorizer's resource-policy source. Registry-level operations live in
//! [`registry_ops`]. Operations of the model that Berth does not implement
//! are listed in [`NOT_IMPLEMENTED`] and answer a precise error naming why.

mod registry_ops;

use std::sync::Arc;

use base64::Engine;
use berth_model::authz::{self, Requirement};
use berth_model::shapes::ecr;
use berth_model::tags::{self, TagRef};
use berth_model::{Arn, AwsError, JsonService, PrincipalKind, RequestContext};
use berth_store::{Op, StoreError, StoreExt};
use futures::stream;

use crate::blobs::UploadError;
use crate::digest::Digest;
use crate::gc::CompleteError;
use crate::meta::{
    self, ExclusionFilter, ManifestRecord, PutError, RepoRecord, Scope, TagPair, TagRecord,
};
use crate::uploads::Session;
use crate::{lifecycle, Registry};

/// ECR answers `partSize` 10 MiB for layer uploads.
const PART_SIZE: i64 = 10 * 1024 * 1024;
const NAME_PATTERN: &str = "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*";

pub struct EcrService {
    registry: Arc<Registry>,
}

impl EcrService {
    pub fn new(registry: Arc<Registry>) -> EcrService {
        EcrService { registry }
    }
}

// --- errors ------------------------------------------------------------------

fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("InvalidParameterException", message)
}

fn server(e: impl std::fmt::Display) -> AwsError {
    tracing::error!(error = %e, "ECR request failed");
    AwsError::new(
        500,
        "ServerException",
        "The registry failed; retry the request.",
    )
}

fn store_error(e: StoreError) -> AwsError {
    server(e)
}

fn repo_not_found(scope: &Scope, name: &str) -> AwsError {
    AwsError::bad_request(
        "RepositoryNotFoundException",
        format!(
            "The repository with name '{name}' does not exist in the registry with id '{}'",
            scope.account
        ),
    )
}

fn missing(member: &str) -> AwsError {
    invalid(format!(
        "Invalid parameter at '{member}' failed to satisfy constraint: 'must not be null'"
    ))
}

/// ECR operations Berth leaves unimplemented, with the reason.
pub(crate) const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    ("PutSigningConfiguration", "managed image signing needs AWS Signer, which Berth does not have"),
    ("GetSigningConfiguration", "managed image signing needs AWS Signer, which Berth does not have"),
    ("DeleteSigningConfiguration", "managed image signing needs AWS Signer, which Berth does not have"),
    ("DescribeImageSigningStatus", "managed image signing needs AWS Signer, which Berth does not have"),
    ("RegisterPullTimeUpdateExclusion", "Berth does not record image pull times (lastRecordedPullTime), so there is nothing to exclude principals from"),
    ("DeregisterPullTimeUpdateExclusion", "Berth does not record image pull times (lastRecordedPullTime), so there is nothing to exclude principals from"),
    ("ListPullTimeUpdateExclusions", "Berth does not record image pull times (lastRecordedPullTime), so there is nothing to exclude principals from"),
    ("StartReplicationBackfill", "Berth replicates images pushed after PutReplicationConfiguration; backfilling images that existed before is not implemented"),
    ("StopReplicationBackfill", "Berth replicates images pushed after PutReplicationConfiguration; backfilling images that existed before is not implemented"),
    ("ListReplicationBackfills", "Berth replicates images pushed after PutReplicationConfiguration; backfilling images that existed before is not implemented"),
    ("DescribeReplicationBackfillResults", "Berth replicates images pushed after PutReplicationConfiguration; backfilling images that existed before is not implemented"),
    ("UpdateImageStorageClass", "Berth keeps every image in one storage class (STANDARD); there is no archive class to move images to"),
];

fn unsupported(operation: &str) -> AwsError {
    let reason = NOT_IMPLEMENTED
        .iter()
        .find(|(op, _)| *op == operation)
        .map_or("it is not implemented", |(_, why)| why);
    let code = if operation == "UpdateImageStorageClass" {
        "ImageStorageClassUpdateNotSupportedException"
    } else {
        "ValidationException"
    };
    AwsError::bad_request(
        code,
        format!("Berth does not support ECR {operation}: {reason}."),
    )
}

/// Operations an agent's credential may call: it pulls, nothing else.
const AGENT_OPERATIONS: &[&str] = &[
    "GetAuthorizationToken",
    "BatchGetImage",
    "BatchCheckLayerAvailability",
    "GetDownloadUrlForLayer",
    "DescribeImages",
    "DescribeRepositories",
    "ListImages",
];

// --- helpers -------------------------------------------------------------------

struct Call<'a> {
    registry: &'a Arc<Registry>,
    scope: Scope,
    ctx: &'a RequestContext,
}

impl Call<'_> {
    fn store(&self) -> &dyn berth_store::Store {
        self.registry.store.as_ref()
    }

    fn check_registry(&self, registry_id: &Option<String>) -> Result<(), AwsError> {
        match registry_id {
            Some(id) if id != &self.scope.account => Err(invalid(format!(
                "Invalid parameter at 'registryId' failed to satisfy constraint: 'registry {id} is not this account's ({})'",
                self.scope.account
            ))),
            _ => Ok(()),
        }
    }

    /// The repository name member, checked against ECR's rules.
    fn name(
        &self,
        registry_id: &Option<String>,
        name: &Option<String>,
    ) -> Result<String, AwsError> {
        self.check_registry(registry_id)?;
        let name = name.as_deref().ok_or_else(|| missing("repositoryName"))?;
        check_name(name)?;
        Ok(name.to_string())
    }

    /// `action` on the repository the input's `repositoryName` names.
    fn on_repo(
        &self,
        action: &str,
        input: &impl RepositoryInput,
    ) -> Result<Vec<Requirement>, AwsError> {
        let (registry_id, name) = input.repository();
        let name = self.name(registry_id, name)?;
        Ok(vec![self.on_name(action, &name)])
    }

    /// `action` on repository `name` (a valid name), with its tags.
    fn on_name(&self, action: &str, name: &str) -> Requirement {
        self.registry
            .repository_requirement(&self.scope, action, name)
    }

    fn repo(&self, name: &str) -> Result<RepoRecord, AwsError> {
        meta::get(self.store(), &self.scope.repo(name))
            .ok_or_else(|| repo_not_found(&self.scope, name))
    }

    fn repository_shape(&self, r: &RepoRecord) -> ecr::Repository {
        ecr::Repository {
            repository_arn: Some(self.scope.repo_arn(&r.name)),
            registry_id: Some(self.scope.account.clone()),
            repository_name: Some(r.name.clone()),
            repository_uri: Some(self.registry.repository_uri(&r.name)),
            created_at: Some(r.created_at),
            image_tag_mutability: Some(r.image_tag_mutability.clone()),
            image_tag_mutability_exclusion_filters: (!r.mutability_exclusions.is_empty()).then(
                || {
                    r.mutability_exclusions
                        .iter()
                        .map(|f| ecr::ImageTagMutabilityExclusionFilter {
                            filter_type: Some(f.filter_type.clone()),
                            filter: Some(f.filter.clone()),
                        })
                        .collect()
                },
            ),
            image_scanning_configuration: Some(ecr::ImageScanningConfiguration {
                scan_on_push: Some(r.scan_on_push),
            }),
            encryption_configuration: Some(ecr::EncryptionConfiguration {
                encryption_type: Some(r.encryption_type.clone()),
                kms_key: r.kms_key.clone(),
            }),
        }
    }

    /// Reads, changes and writes a repository record in one mutation.
    async fn update_repo<T: Send + 'static>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut RepoRecord) -> Result<T, AwsError> + Send + 'static,
    ) -> Result<(RepoRecord, T), AwsError> {
        let (scope, name) = (self.scope.clone(), name.to_string());
        let outcome = self
            .registry
            .store
            .update(move |view| {
                let mut record: RepoRecord = meta::get(view, &scope.repo(&name))
                    .ok_or_else(|| repo_not_found(&scope, &name))?;
                let value = change(&mut record)?;
                Ok((
                    vec![Op::put(scope.repo(&name), meta::encode(&record))],
                    (record, value),
                ))
            })
            .await
            .map_err(store_error)??;
        Ok(outcome.1)
    }

    fn image_id(digest: &str, tag: Option<&str>) -> ecr::ImageIdentifier {
        ecr::ImageIdentifier {
            image_digest: Some(digest.to_string()),
            image_tag: tag.map(str::to_string),
        }
    }
}

/// An input that names one repository (`registryId`, `repositoryName`).
trait RepositoryInput {
    fn repository(&self) -> (&Option<String>, &Option<String>);
}

macro_rules! repository_inputs {
    ($($shape:ident),* $(,)?) => {
        $(impl RepositoryInput for ecr::$shape {
            fn repository(&self) -> (&Option<String>, &Option<String>) {
                (&self.registry_id, &self.repository_name)
            }
        })*
    };
}

repository_inputs!(
    DeleteRepositoryRequest,
    ListImagesRequest,
    DescribeImagesRequest,
    BatchGetImageRequest,
    BatchDeleteImageRequest,
    PutImageRequest,
    BatchCheckLayerAvailabilityRequest,
    InitiateLayerUploadRequest,
    UploadLayerPartRequest,
    CompleteLayerUploadRequest,
    GetDownloadUrlForLayerRequest,
    PutImageTagMutabilityRequest,
    PutImageScanningConfigurationRequest,
    SetRepositoryPolicyRequest,
    GetRepositoryPolicyRequest,
    DeleteRepositoryPolicyRequest,
    PutLifecyclePolicyRequest,
    GetLifecyclePolicyRequest,
    DeleteLifecyclePolicyRequest,
    StartImageScanRequest,
    DescribeImageScanFindingsRequest,
    StartLifecyclePolicyPreviewRequest,
    GetLifecyclePolicyPreviewRequest,
    DescribeImageReplicationStatusRequest,
);

fn check_name(name: &str) -> Result<(), AwsError> {
    if !meta::valid_repository_name(name) {
        return Err(invalid(format!(
            "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy regular expression '{NAME_PATTERN}' and have a length between 2 and 256'"
        )));
    }
    Ok(())
}

fn check_mutability(
    mutability: &str,
    filters: &Option<Vec<ecr::ImageTagMutabilityExclusionFilter>>,
) -> Result<Vec<ExclusionFilter>, AwsError> {
    if !ecr::IMAGE_TAG_MUTABILITY_VALUES.contains(&mutability) {
        return Err(invalid(format!(
            "Invalid parameter at 'imageTagMutability' failed to satisfy constraint: 'Member must satisfy enum value set: {:?}'",
            ecr::IMAGE_TAG_MUTABILITY_VALUES
        )));
    }
    let filters = filters.clone().unwrap_or_default();
    let with_exclusion = mutability.ends_with("_WITH_EXCLUSION");
    if with_exclusion && filters.is_empty() {
        return Err(invalid(format!(
            "imageTagMutabilityExclusionFilters are required with imageTagMutability {mutability}."
        )));
    }
    if !with_exclusion && !filters.is_empty() {
        return Err(invalid(format!(
            "imageTagMutabilityExclusionFilters are only allowed with IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION, not {mutability}."
        )));
    }
    filters
        .into_iter()
        .map(|f| {
            let kind = f.filter_type.unwrap_or_default();
            let filter = f.filter.unwrap_or_default();
            let ok_filter = !filter.is_empty()
                && filter.len() <= 128
                && filter.bytes().all(|b| b.is_ascii_alphanumeric() || b"._*-".contains(&b));
            if kind != "WILDCARD" || !ok_filter {
                return Err(invalid(format!(
                    "Invalid image tag mutability exclusion filter {kind}/{filter}: filterType must be WILDCARD and filter 1-128 of [0-9a-zA-Z._*-]."
                )));
            }
            Ok(ExclusionFilter { filter_type: kind, filter })
        })
        .collect()
}

fn check_tags(new: &[ecr::Tag], existing: &[TagPair]) -> Result<(), AwsError> {
    let refs: Vec<TagRef> = new
        .iter()
        .map(|t| TagRef {
            key: t.key.as_deref().unwrap_or(""),
            value: t.value.as_deref().unwrap_or(""),
        })
        .collect();
    tags::check_user_tags(refs, existing.iter().map(|t| t.key.as_str())).map_err(|m| {
        if m.starts_with("A resource can have at most") {
            AwsError::bad_request("TooManyTagsException", m)
        } else {
            AwsError::bad_request("InvalidTagParameterException", m)
        }
    })
}

fn merge_tags(existing: &mut Vec<TagPair>, new: &[ecr::Tag]) {
    for t in new {
        let key = t.key.clone().unwrap_or_default();
        let value = t.value.clone().unwrap_or_default();
        match existing.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = value,
            None => existing.push(TagPair { key, value }),
        }
    }
}

const TOKEN_ENGINE: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn encode_token(last: &str) -> String {
    TOKEN_ENGINE.encode(format!("berth1:{last}"))
}

fn decode_token(token: &Option<String>) -> Result<Option<String>, AwsError> {
    let Some(token) = token.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    TOKEN_ENGINE
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.strip_prefix("berth1:").map(str::to_string))
        .map(Some)
        .ok_or_else(|| {
            invalid("Invalid parameter at 'nextToken': the token is not one this service returned.")
        })
}

fn page_size(max: Option<i32>) -> Result<usize, AwsError> {
    match max {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value between 1 and 1000', got {n}"
        ))),
    }
}

/// One page of `items` (sorted by their key) after the token's key.
fn paginate<T>(
    items: Vec<(String, T)>,
    token: &Option<String>,
    max: Option<i32>,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let limit = page_size(max)?;
    let after = decode_token(token)?;
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    let next = if rest.len() > limit {
        rest.truncate(limit);
        rest.last().map(|(k, _)| encode_token(k))
    } else {
        None
    };
    Ok((rest.into_iter().map(|(_, v)| v).collect(), next))
}

fn tag_status(filter: Option<String>) -> Result<String, AwsError> {
    let status = filter.unwrap_or_else(|| "ANY".to_string());
    if !ecr::TAG_STATUS_VALUES.contains(&status.as_str()) {
        return Err(invalid(format!(
            "Invalid parameter at 'filter.tagStatus' failed to satisfy constraint: 'Member must satisfy enum value set: {:?}'",
            ecr::TAG_STATUS_VALUES
        )));
    }
    Ok(status)
}

/// Resolves an image id to a digest, or the ECR failure code and reason.
fn resolve_id(
    view: &(impl berth_store::ReadView + ?Sized),
    scope: &Scope,
    repo: &str,
    id: &ecr::ImageIdentifier,
) -> Result<String, (&'static str, String)> {
    let by_tag = match id.image_tag.as_deref() {
        Some(tag) => {
            if tag.is_empty() || tag.len() > 300 {
                return Err(("InvalidImageTag", format!("Invalid image tag '{tag}'")));
            }
            match meta::get::<TagRecord>(view, &scope.tag(repo, tag)) {
                Some(t) => Some(t.digest),
                None => return Err(("ImageNotFound", "Requested image not found".into())),
            }
        }
        None => None,
    };
    match (id.image_digest.as_deref(), by_tag) {
        (Some(d), by_tag) => {
            if Digest::parse(d).is_err() {
                return Err(("InvalidImageDigest", format!("Invalid image digest '{d}'")));
            }
            if let Some(t) = by_tag {
                if t != d {
                    return Err((
                        "ImageTagDoesNotMatchDigest",
                        "Image tag does not match the specified image digest".into(),
                    ));
                }
            }
            if view.get(&scope.manifest(repo, d)).is_none() {
                return Err(("ImageNotFound", "Requested image not found".into()));
            }
            Ok(d.to_string())
        }
        (None, Some(t)) => Ok(t),
        (None, None) => Err((
            "MissingDigestAndTag",
            "Invalid request parameters: both tag and digest cannot be null".into(),
        )),
    }
}

// --- the service ---------------------------------------------------------------

use berth_model::json_op as op;

#[async_trait::async_trait]
impl JsonService for EcrService {
    fn target_prefix(&self) -> &'static str {
        ecr::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        ecr::SIGNING_NAME
    }

    /// Layer parts (base64 in JSON) and manifests are the only bulk input.
    fn max_body(&self, operation: &str) -> usize {
        match operation {
            "UploadLayerPart" => 32 * 1024 * 1024,
            "PutImage" => 8 * 1024 * 1024,
            _ => berth_model::service::DEFAULT_MAX_BODY,
        }
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        if !ecr::OPERATIONS.contains(&operation) {
            return Err(AwsError::unknown_operation(format!(
                "ECR has no operation named '{operation}'."
            )));
        }
        if ctx.principal.kind == PrincipalKind::Agent && !AGENT_OPERATIONS.contains(&operation) {
            return Err(AwsError::access_denied(format!(
                "{} is an agent credential and may not call ecr:{operation}.",
                ctx.principal.arn
            )));
        }
        let c = &Call {
            registry: &self.registry,
            scope: Scope {
                account: ctx.account_id.clone(),
                region: ctx.region.clone(),
            },
            ctx,
        };
        let ctx = c.ctx;
        match operation {
            "GetAuthorizationToken" => {
                op!(ctx, body, |i| authz::on("ecr:GetAuthorizationToken", Vec::new())
                => get_authorization_token(c, i))
            }
            "CreateRepository" => op!(ctx, body, |i| create_requirements(c, &i)?
                => create_repository(c, i).await),
            "DescribeRepositories" => op!(ctx, body, |i| describe_requirements(c, &i)?
                => describe_repositories(c, i)),
            "DeleteRepository" => op!(ctx, body, |i| c.on_repo("ecr:DeleteRepository", &i)?
                => delete_repository(c, i).await),
            "ListImages" => op!(ctx, body, |i| c.on_repo("ecr:ListImages", &i)?
                => list_images(c, i)),
            "DescribeImages" => op!(ctx, body, |i| c.on_repo("ecr:DescribeImages", &i)?
                => describe_images(c, i)),
            "BatchGetImage" => op!(ctx, body, |i| c.on_repo("ecr:BatchGetImage", &i)?
                => batch_get_image(c, i)),
            "BatchDeleteImage" => op!(ctx, body, |i| c.on_repo("ecr:BatchDeleteImage", &i)?
                => batch_delete_image(c, i).await),
            "PutImage" => op!(ctx, body, |i| c.on_repo("ecr:PutImage", &i)?
                => put_image(c, i).await),
            "BatchCheckLayerAvailability" => {
                op!(ctx, body, |i| c.on_repo("ecr:BatchCheckLayerAvailability", &i)?
                => batch_check_layers(c, i))
            }
            "InitiateLayerUpload" => op!(ctx, body, |i| c.on_repo("ecr:InitiateLayerUpload", &i)?
                => initiate_layer_upload(c, i).await),
            "UploadLayerPart" => op!(ctx, body, |i| c.on_repo("ecr:UploadLayerPart", &i)?
                => upload_layer_part(c, i).await),
            "CompleteLayerUpload" => op!(ctx, body, |i| c.on_repo("ecr:CompleteLayerUpload", &i)?
                => complete_layer_upload(c, i).await),
            "GetDownloadUrlForLayer" => {
                op!(ctx, body, |i| c.on_repo("ecr:GetDownloadUrlForLayer", &i)?
                => get_download_url(c, i))
            }
            "PutImageTagMutability" => {
                op!(ctx, body, |i| c.on_repo("ecr:PutImageTagMutability", &i)?
                => put_tag_mutability(c, i).await)
            }
            "PutImageScanningConfiguration" => {
                op!(ctx, body, |i| c.on_repo("ecr:PutImageScanningConfiguration", &i)?
                => put_scanning(c, i).await)
            }
            "SetRepositoryPolicy" => op!(ctx, body, |i| c.on_repo("ecr:SetRepositoryPolicy", &i)?
                => set_policy(c, i).await),
            "GetRepositoryPolicy" => op!(ctx, body, |i| c.on_repo("ecr:GetRepositoryPolicy", &i)?
                => get_policy(c, i)),
            "DeleteRepositoryPolicy" => {
                op!(ctx, body, |i| c.on_repo("ecr:DeleteRepositoryPolicy", &i)?
                => delete_policy(c, i).await)
            }
            "PutLifecyclePolicy" => op!(ctx, body, |i| c.on_repo("ecr:PutLifecyclePolicy", &i)?
                => put_lifecycle(c, i).await),
            "GetLifecyclePolicy" => op!(ctx, body, |i| c.on_repo("ecr:GetLifecyclePolicy", &i)?
                => get_lifecycle(c, i)),
            "DeleteLifecyclePolicy" => {
                op!(ctx, body, |i| c.on_repo("ecr:DeleteLifecyclePolicy", &i)?
                => delete_lifecycle(c, i).await)
            }
            "TagResource" => op!(ctx, body, |i| tag_requirements(c, &i)?
                => tag_resource(c, i).await),
            "UntagResource" => op!(ctx, body, |i| untag_requirements(c, &i)?
                => untag_resource(c, i).await),
            "ListTagsForResource" => op!(ctx, body, |i| list_tags_requirements(c, &i)?
                => list_tags(c, i)),
            "DescribeRegistry" => op!(ctx, body, |i| registry_ops::describe_registry_requirements()
                => registry_ops::describe_registry(c, i)),
            "PutRegistryPolicy" => {
                op!(ctx, body, |i| authz::on("ecr:PutRegistryPolicy", Vec::new())
                => registry_ops::put_registry_policy(c, i).await)
            }
            "GetRegistryPolicy" => {
                op!(ctx, body, |i| authz::on("ecr:GetRegistryPolicy", Vec::new())
                => registry_ops::get_registry_policy(c, i))
            }
            "DeleteRegistryPolicy" => {
                op!(ctx, body, |i| authz::on("ecr:DeleteRegistryPolicy", Vec::new())
                => registry_ops::delete_registry_policy(c, i).await)
            }
            "GetAccountSetting" => {
                op!(ctx, body, |i| authz::on("ecr:GetAccountSetting", Vec::new())
                => registry_ops::get_account_setting(c, i))
            }
            "PutAccountSetting" => {
                op!(ctx, body, |i| authz::on("ecr:PutAccountSetting", Vec::new())
                => registry_ops::put_account_setting(c, i).await)
            }
            "ListImageReferrers" => {
                op!(ctx, body, |i| registry_ops::list_referrers_requirements(c, &i)?
                => registry_ops::list_image_referrers(c, i))
            }
            "GetRegistryScanningConfiguration" => {
                op!(ctx, body, |i| authz::on("ecr:GetRegistryScanningConfiguration", Vec::new())
                => registry_ops::get_registry_scanning(c, i))
            }
            "PutRegistryScanningConfiguration" => {
                op!(ctx, body, |i| authz::on("ecr:PutRegistryScanningConfiguration", Vec::new())
                => registry_ops::put_registry_scanning(c, i).await)
            }
            "BatchGetRepositoryScanningConfiguration" => {
                op!(ctx, body, |i| registry_ops::batch_scanning_requirements(c, &i)?
                => registry_ops::batch_get_repository_scanning(c, i))
            }
            "StartImageScan" => op!(ctx, body, |i| c.on_repo("ecr:StartImageScan", &i)?
                => registry_ops::start_image_scan(c, i)),
            "DescribeImageScanFindings" => {
                op!(ctx, body, |i| c.on_repo("ecr:DescribeImageScanFindings", &i)?
                => registry_ops::describe_image_scan_findings(c, i))
            }
            "CreateRepositoryCreationTemplate" => {
                op!(ctx, body, |i| authz::on("ecr:CreateRepositoryCreationTemplate", Vec::new())
                => registry_ops::create_template(c, i).await)
            }
            "UpdateRepositoryCreationTemplate" => {
                op!(ctx, body, |i| authz::on("ecr:UpdateRepositoryCreationTemplate", Vec::new())
                => registry_ops::update_template(c, i).await)
            }
            "DeleteRepositoryCreationTemplate" => {
                op!(ctx, body, |i| authz::on("ecr:DeleteRepositoryCreationTemplate", Vec::new())
                => registry_ops::delete_template(c, i).await)
            }
            "DescribeRepositoryCreationTemplates" => {
                op!(ctx, body, |i| authz::on("ecr:DescribeRepositoryCreationTemplates", Vec::new())
                => registry_ops::describe_templates(c, i))
            }
            "StartLifecyclePolicyPreview" => {
                op!(ctx, body, |i| c.on_repo("ecr:StartLifecyclePolicyPreview", &i)?
                => registry_ops::start_lifecycle_preview(c, i).await)
            }
            "GetLifecyclePolicyPreview" => {
                op!(ctx, body, |i| c.on_repo("ecr:GetLifecyclePolicyPreview", &i)?
                => registry_ops::get_lifecycle_preview(c, i))
            }
            "PutReplicationConfiguration" => {
                op!(ctx, body, |i| authz::on("ecr:PutReplicationConfiguration", Vec::new())
                => registry_ops::put_replication(c, i).await)
            }
            "DescribeImageReplicationStatus" => {
                op!(ctx, body, |i| c.on_repo("ecr:DescribeImageReplicationStatus", &i)?
                => registry_ops::describe_replication_status(c, i))
            }
            "CreatePullThroughCacheRule" => {
                op!(ctx, body, |i| authz::on("ecr:CreatePullThroughCacheRule", Vec::new())
                => registry_ops::create_cache_rule(c, i).await)
            }
            "DescribePullThroughCacheRules" => {
                op!(ctx, body, |i| authz::on("ecr:DescribePullThroughCacheRules", Vec::new())
                => registry_ops::describe_cache_rules(c, i))
            }
            "UpdatePullThroughCacheRule" => {
                op!(ctx, body, |i| authz::on("ecr:UpdatePullThroughCacheRule", Vec::new())
                => registry_ops::update_cache_rule(c, i).await)
            }
            "DeletePullThroughCacheRule" => {
                op!(ctx, body, |i| authz::on("ecr:DeletePullThroughCacheRule", Vec::new())
                => registry_ops::delete_cache_rule(c, i).await)
            }
            "ValidatePullThroughCacheRule" => {
                op!(ctx, body, |i| authz::on("ecr:ValidatePullThroughCacheRule", Vec::new())
                => registry_ops::validate_cache_rule(c, i).await)
            }
            other => Err(unsupported(other)),
        }
    }
}

/// CreateRepository: the new repository's ARN, with the tags it is created
/// with as `aws:RequestTag/*` and `aws:TagKeys`.
fn create_requirements(
    c: &Call,
    i: &ecr::CreateRepositoryRequest,
) -> Result<Vec<Requirement>, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let tags = i.tags.as_deref().unwrap_or_default();
    Ok(vec![Requirement::new(
        "ecr:CreateRepository",
        c.scope.repo_arn(&name),
    )
    .request_tags(tags.iter().map(|t| {
        (
            t.key.as_deref().unwrap_or_default(),
            t.value.as_deref().unwrap_or_default(),
        )
    }))])
}

/// DescribeRepositories: each repository named, or all of them
/// (`repository/*`) when none is.
fn describe_requirements(
    c: &Call,
    i: &ecr::DescribeRepositoriesRequest,
) -> Result<Vec<Requirement>, AwsError> {
    c.check_registry(&i.registry_id)?;
    let names = i.repository_names.as_deref().unwrap_or_default();
    if names.is_empty() {
        return Ok(vec![Requirement::new(
            "ecr:DescribeRepositories",
            c.scope.repo_arn("*"),
        )]);
    }
    names
        .iter()
        .map(|name| {
            check_name(name)?;
            Ok(c.on_name("ecr:DescribeRepositories", name))
        })
        .collect()
}

/// TagResource: the repository (with its tags) and the tags set.
fn tag_requirements(c: &Call, i: &ecr::TagResourceRequest) -> Result<Vec<Requirement>, AwsError> {
    let name = repo_of_arn(c, &i.resource_arn)?;
    let tags = i.tags.as_deref().ok_or_else(|| missing("tags"))?;
    Ok(vec![c.on_name("ecr:TagResource", &name).request_tags(
        tags.iter().map(|t| {
            (
                t.key.as_deref().unwrap_or_default(),
                t.value.as_deref().unwrap_or_default(),
            )
        }),
    )])
}

/// UntagResource: the repository (with its tags) and the keys removed.
fn untag_requirements(
    c: &Call,
    i: &ecr::UntagResourceRequest,
) -> Result<Vec<Requirement>, AwsError> {
    let name = repo_of_arn(c, &i.resource_arn)?;
    let keys = i.tag_keys.as_deref().ok_or_else(|| missing("tagKeys"))?;
    Ok(vec![c
        .on_name("ecr:UntagResource", &name)
        .tag_keys(keys.iter().cloned())])
}

/// ListTagsForResource: the repository the ARN names.
fn list_tags_requirements(
    c: &Call,
    i: &ecr::ListTagsForResourceRequest,
) -> Result<Vec<Requirement>, AwsError> {
    let name = repo_of_arn(c, &i.resource_arn)?;
    Ok(vec![c.on_name("ecr:ListTagsForResource", &name)])
}

fn get_authorization_token(
    c: &Call,
    i: ecr::GetAuthorizationTokenRequest,
) -> Result<ecr::GetAuthorizationTokenResponse, AwsError> {
    for id in i.registry_ids.iter().flatten() {
        c.check_registry(&Some(id.clone()))?;
    }
    let (token, expires_at) = c.registry.mint_token(&c.ctx.principal, &c.scope.region);
    Ok(ecr::GetAuthorizationTokenResponse {
        authorization_data: Some(vec![ecr::AuthorizationData {
            authorization_token: Some(token),
            expires_at: Some(expires_at),
            proxy_endpoint: Some(format!("http://{}", c.registry.host())),
        }]),
    })
}

async fn create_repository(
    c: &Call<'_>,
    i: ecr::CreateRepositoryRequest,
) -> Result<ecr::CreateRepositoryResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let mutability = i.image_tag_mutability.unwrap_or_else(|| "MUTABLE".into());
    let exclusions = check_mutability(&mutability, &i.image_tag_mutability_exclusion_filters)?;
    let new_tags = i.tags.unwrap_or_default();
    check_tags(&new_tags, &[])?;
    let encryption = i.encryption_configuration.unwrap_or_default();
    let encryption_type = encryption
        .encryption_type
        .unwrap_or_else(|| "AES256".into());
    if !ecr::ENCRYPTION_TYPE_VALUES.contains(&encryption_type.as_str()) {
        return Err(invalid(format!(
            "Invalid parameter at 'encryptionConfiguration.encryptionType' failed to satisfy constraint: 'Member must satisfy enum value set: {:?}'",
            ecr::ENCRYPTION_TYPE_VALUES
        )));
    }
    if encryption_type == "AES256" && encryption.kms_key.is_some() {
        return Err(invalid(
            "A KMS key may only be given with encryptionType KMS or KMS_DSSE.",
        ));
    }
    if encryption
        .kms_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 2048)
    {
        return Err(invalid("kmsKey must be 1-2048 characters."));
    }
    let mut tags = Vec::new();
    merge_tags(&mut tags, &new_tags);
    let record = RepoRecord {
        name: name.clone(),
        created_at: berth_util::time::now_epoch(),
        image_tag_mutability: mutability,
        mutability_exclusions: exclusions,
        scan_on_push: i
            .image_scanning_configuration
            .and_then(|s| s.scan_on_push)
            .unwrap_or(false),
        encryption_type,
        kms_key: encryption.kms_key,
        tags,
        policy: None,
        lifecycle_policy: None,
        lifecycle_evaluated_at: None,
    };
    let (scope, value) = (c.scope.clone(), record.clone());
    c.registry
        .store
        .update(move |view| {
            if view.get(&scope.repo(&value.name)).is_some() {
                return Err(AwsError::bad_request(
                    "RepositoryAlreadyExistsException",
                    format!(
                        "The repository with name '{}' already exists in the registry with id '{}'",
                        value.name, scope.account
                    ),
                ));
            }
            Ok((
                vec![Op::put(scope.repo(&value.name), meta::encode(&value))],
                (),
            ))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::CreateRepositoryResponse {
        repository: Some(c.repository_shape(&record)),
    })
}

fn describe_repositories(
    c: &Call,
    i: ecr::DescribeRepositoriesRequest,
) -> Result<ecr::DescribeRepositoriesResponse, AwsError> {
    c.check_registry(&i.registry_id)?;
    if let Some(names) = i.repository_names.filter(|n| !n.is_empty()) {
        if i.max_results.is_some() || i.next_token.is_some() {
            return Err(invalid(
                "maxResults and nextToken cannot be used with repositoryNames.",
            ));
        }
        let mut out = Vec::new();
        for name in &names {
            check_name(name)?;
            out.push(c.repository_shape(&c.repo(name)?));
        }
        return Ok(ecr::DescribeRepositoriesResponse {
            repositories: Some(out),
            next_token: None,
        });
    }
    let prefix = c.scope.repos();
    let items: Vec<(String, RepoRecord)> = meta::scan(c.store(), &prefix)
        .iter()
        .filter_map(|kv| Some((kv.key[prefix.len()..].to_string(), meta::decode(kv)?)))
        .collect();
    let (records, next) = paginate(items, &i.next_token, i.max_results)?;
    Ok(ecr::DescribeRepositoriesResponse {
        repositories: Some(records.iter().map(|r| c.repository_shape(r)).collect()),
        next_token: next,
    })
}

async fn delete_repository(
    c: &Call<'_>,
    i: ecr::DeleteRepositoryRequest,
) -> Result<ecr::DeleteRepositoryResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let force = i.force.unwrap_or(false);
    let (scope, repo) = (c.scope.clone(), name.clone());
    let (_, record) = c
        .registry
        .store
        .update(move |view| {
            let record: RepoRecord =
                meta::get(view, &scope.repo(&repo)).ok_or_else(|| repo_not_found(&scope, &repo))?;
            let images = view.range(&scope.manifests(&repo), None, 1);
            if !images.is_empty() && !force {
                return Err(AwsError::bad_request(
                    "RepositoryNotEmptyException",
                    format!(
                        "The repository with name '{repo}' in registry with id '{}' cannot be deleted because it still contains images",
                        scope.account
                    ),
                ));
            }
            let mut ops = vec![Op::delete(scope.repo(&repo))];
            for prefix in scope.repo_prefixes(&repo) {
                ops.extend(meta::scan(view, &prefix).into_iter().map(|kv| Op::delete(kv.key)));
            }
            Ok((ops, record))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::DeleteRepositoryResponse {
        repository: Some(c.repository_shape(&record)),
    })
}

fn list_images(c: &Call, i: ecr::ListImagesRequest) -> Result<ecr::ListImagesResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let status = tag_status(i.filter.and_then(|f| f.tag_status))?;
    c.repo(&name)?;
    let mut items = Vec::new();
    for image in meta::images(c.store(), &c.scope, &name) {
        let digest = &image.record.digest;
        if image.tags.is_empty() {
            if status != "TAGGED" {
                items.push((format!("{digest}|"), Call::image_id(digest, None)));
            }
        } else if status != "UNTAGGED" {
            for tag in &image.tags {
                items.push((format!("{digest}|{tag}"), Call::image_id(digest, Some(tag))));
            }
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let (ids, next) = paginate(items, &i.next_token, i.max_results)?;
    Ok(ecr::ListImagesResponse {
        image_ids: Some(ids),
        next_token: next,
    })
}

fn image_detail(c: &Call, repo: &str, image: &meta::ImageView) -> ecr::ImageDetail {
    let mut tags = image.tags.clone();
    tags.sort();
    ecr::ImageDetail {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(repo.to_string()),
        image_digest: Some(image.record.digest.clone()),
        image_tags: (!tags.is_empty()).then_some(tags),
        image_size_in_bytes: Some(image.record.image_size),
        image_pushed_at: Some(image.record.pushed_at),
        image_manifest_media_type: Some(image.record.media_type.clone()),
        artifact_media_type: image
            .record
            .artifact_type
            .clone()
            .or(image.record.config_media_type.clone()),
        subject_manifest_digest: image.record.subject.clone(),
        image_status: Some("ACTIVE".into()),
        ..Default::default()
    }
}

fn describe_images(
    c: &Call,
    i: ecr::DescribeImagesRequest,
) -> Result<ecr::DescribeImagesResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let status = tag_status(i.filter.and_then(|f| f.tag_status))?;
    c.repo(&name)?;
    let images = meta::images(c.store(), &c.scope, &name);
    if let Some(ids) = i.image_ids.filter(|ids| !ids.is_empty()) {
        if i.max_results.is_some() || i.next_token.is_some() {
            return Err(invalid(
                "maxResults and nextToken cannot be used with imageIds.",
            ));
        }
        let mut out: Vec<ecr::ImageDetail> = Vec::new();
        for id in &ids {
            let digest = resolve_id(c.store(), &c.scope, &name, id).map_err(|(code, _)| {
                let shown = format!(
                    "{{imageDigest:'{}', imageTag:'{}'}}",
                    id.image_digest.as_deref().unwrap_or("null"),
                    id.image_tag.as_deref().unwrap_or("null")
                );
                if code == "ImageNotFound" || code == "ImageTagDoesNotMatchDigest" {
                    AwsError::bad_request(
                        "ImageNotFoundException",
                        format!("The image with imageId {shown} does not exist within the repository with name '{name}' in the registry with id '{}'", c.scope.account),
                    )
                } else {
                    invalid(format!("Invalid image identifier {shown}: {code}"))
                }
            })?;
            if out
                .iter()
                .any(|d| d.image_digest.as_deref() == Some(digest.as_str()))
            {
                continue;
            }
            if let Some(image) = images.iter().find(|im| im.record.digest == digest) {
                out.push(image_detail(c, &name, image));
            }
        }
        return Ok(ecr::DescribeImagesResponse {
            image_details: Some(out),
            next_token: None,
        });
    }
    let items: Vec<(String, ecr::ImageDetail)> = images
        .iter()
        .filter(|im| match status.as_str() {
            "TAGGED" => !im.tags.is_empty(),
            "UNTAGGED" => im.tags.is_empty(),
            _ => true,
        })
        .map(|im| (im.record.digest.clone(), image_detail(c, &name, im)))
        .collect();
    let (details, next) = paginate(items, &i.next_token, i.max_results)?;
    Ok(ecr::DescribeImagesResponse {
        image_details: Some(details),
        next_token: next,
    })
}

fn check_image_ids(
    ids: &Option<Vec<ecr::ImageIdentifier>>,
) -> Result<Vec<ecr::ImageIdentifier>, AwsError> {
    let ids = ids
        .clone()
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| missing("imageIds"))?;
    if ids.len() > 100 {
        return Err(invalid(
            "Invalid parameter at 'imageIds' failed to satisfy constraint: 'Member must have length less than or equal to 100'",
        ));
    }
    Ok(ids)
}

fn failure(id: &ecr::ImageIdentifier, code: &str, reason: String) -> ecr::ImageFailure {
    ecr::ImageFailure {
        image_id: Some(id.clone()),
        failure_code: Some(code.to_string()),
        failure_reason: Some(reason),
    }
}

fn batch_get_image(
    c: &Call,
    i: ecr::BatchGetImageRequest,
) -> Result<ecr::BatchGetImageResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let ids = check_image_ids(&i.image_ids)?;
    c.repo(&name)?;
    let mut images = Vec::new();
    let mut failures = Vec::new();
    for id in &ids {
        match resolve_id(c.store(), &c.scope, &name, id) {
            Ok(digest) => {
                let Some(m) =
                    meta::get::<ManifestRecord>(c.store(), &c.scope.manifest(&name, &digest))
                else {
                    failures.push(failure(
                        id,
                        "ImageNotFound",
                        "Requested image not found".into(),
                    ));
                    continue;
                };
                images.push(ecr::Image {
                    registry_id: Some(c.scope.account.clone()),
                    repository_name: Some(name.clone()),
                    image_id: Some(Call::image_id(&digest, id.image_tag.as_deref())),
                    image_manifest: Some(m.manifest),
                    image_manifest_media_type: Some(m.media_type),
                });
            }
            Err((code, reason)) => failures.push(failure(id, code, reason)),
        }
    }
    Ok(ecr::BatchGetImageResponse {
        images: Some(images),
        failures: Some(failures),
    })
}

async fn batch_delete_image(
    c: &Call<'_>,
    i: ecr::BatchDeleteImageRequest,
) -> Result<ecr::BatchDeleteImageResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let ids = check_image_ids(&i.image_ids)?;
    let (scope, repo) = (c.scope.clone(), name.clone());
    let (_, (deleted, failures)) = c
        .registry
        .store
        .update(move |view| {
            if view.get(&scope.repo(&repo)).is_none() {
                return Err(repo_not_found(&scope, &repo));
            }
            let mut ops: Vec<Op> = Vec::new();
            let mut deleted = Vec::new();
            let mut failures = Vec::new();
            let mut gone: std::collections::BTreeSet<String> = Default::default();
            for id in &ids {
                let digest = match resolve_id(view, &scope, &repo, id) {
                    Ok(d)
                        if !gone.contains(&format!(
                            "{d}|{}",
                            id.image_tag.clone().unwrap_or_default()
                        )) && !gone.contains(&format!("{d}|*")) =>
                    {
                        d
                    }
                    Ok(_) => {
                        failures.push(failure(
                            id,
                            "ImageNotFound",
                            "Requested image not found".into(),
                        ));
                        continue;
                    }
                    Err((code, reason)) => {
                        failures.push(failure(id, code, reason));
                        continue;
                    }
                };
                let image = meta::images(view, &scope, &repo)
                    .into_iter()
                    .find(|im| im.record.digest == digest);
                let Some(image) = image else { continue };
                match (&id.image_tag, &id.image_digest) {
                    (Some(tag), None) => {
                        // Removing an image's last tag deletes the image, as ECR does.
                        let remaining: Vec<&String> = image
                            .tags
                            .iter()
                            .filter(|t| *t != tag && !gone.contains(&format!("{digest}|{t}")))
                            .collect();
                        ops.push(Op::delete(scope.tag(&repo, tag)));
                        gone.insert(format!("{digest}|{tag}"));
                        if remaining.is_empty() {
                            ops.extend(meta::delete_image_ops(view, &scope, &repo, &digest));
                            gone.insert(format!("{digest}|*"));
                        }
                        deleted.push(Call::image_id(&digest, Some(tag)));
                    }
                    _ => {
                        ops.extend(meta::delete_image_ops(view, &scope, &repo, &digest));
                        gone.insert(format!("{digest}|*"));
                        if image.tags.is_empty() {
                            deleted.push(Call::image_id(&digest, None));
                        }
                        for tag in &image.tags {
                            deleted.push(Call::image_id(&digest, Some(tag)));
                        }
                    }
                }
            }
            Ok((ops, (deleted, failures)))
        })
        .await
        .map_err(store_error)??;
    Ok(ecr::BatchDeleteImageResponse {
        image_ids: Some(deleted),
        failures: Some(failures),
    })
}

async fn put_image(
    c: &Call<'_>,
    i: ecr::PutImageRequest,
) -> Result<ecr::PutImageResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let manifest = i
        .image_manifest
        .filter(|m| !m.is_empty())
        .ok_or_else(|| missing("imageManifest"))?;
    if let Some(tag) = &i.image_tag {
        if !meta::valid_tag(tag) {
            return Err(invalid(format!(
                "Invalid parameter at 'imageTag' failed to satisfy constraint: 'Invalid image tag {tag}'"
            )));
        }
    }
    let parsed = meta::parse_manifest(manifest.as_bytes(), i.image_manifest_media_type.as_deref())
        .map_err(|m| {
            invalid(format!(
                "Invalid parameter at 'imageManifest' failed to satisfy constraint: '{m}'"
            ))
        })?;
    let digest = match &i.image_digest {
        Some(d) => {
            let claimed = Digest::parse(d)
                .map_err(|e| invalid(format!("Invalid parameter at 'imageDigest': {e}")))?;
            let actual = claimed.of_same_kind(manifest.as_bytes());
            if actual != claimed {
                return Err(AwsError::bad_request(
                    "ImageDigestDoesNotMatchException",
                    format!("The specified image digest {claimed} does not match the digest of the manifest, {actual}."),
                ));
            }
            claimed.to_string()
        }
        None => Digest::sha256_of(manifest.as_bytes()).to_string(),
    };
    c.repo(&name)?;
    let outcome = meta::put_manifest(
        c.store(),
        &c.scope,
        &name,
        manifest.as_bytes(),
        &parsed,
        &digest,
        i.image_tag.as_deref(),
        berth_util::time::now_epoch(),
    )
    .await;
    match outcome {
        Ok(o) if o.unchanged => Err(AwsError::bad_request(
            "ImageAlreadyExistsException",
            format!(
                "Image with digest '{digest}' and tag '{}' already exists in the repository with name '{name}' in registry with id '{}'",
                i.image_tag.as_deref().unwrap_or("null"),
                c.scope.account
            ),
        )),
        Ok(_) => Ok({
            c.registry
                .replicate_after_push(&c.scope, &name, &digest, i.image_tag.as_deref());
            ecr::PutImageResponse {
            image: Some(ecr::Image {
                registry_id: Some(c.scope.account.clone()),
                repository_name: Some(name),
                image_id: Some(Call::image_id(&digest, i.image_tag.as_deref())),
                image_manifest: Some(manifest),
                image_manifest_media_type: Some(parsed.media_type),
            }),
        }}),
        Err(PutError::RepositoryNotFound) => Err(repo_not_found(&c.scope, &name)),
        Err(PutError::Invalid(m)) => Err(invalid(m)),
        Err(PutError::BlobsUnknown(missing)) => Err(AwsError::bad_request(
            "LayersNotFoundException",
            format!("Layers with digests {missing:?} required for pushing image into repository with name '{name}' in registry with id '{}' do not exist", c.scope.account),
        )),
        Err(PutError::ManifestsUnknown(missing)) => Err(AwsError::bad_request(
            "ReferencedImagesNotFoundException",
            format!("Images with digests {missing:?} referenced by the manifest list do not exist in repository '{name}'"),
        )),
        Err(PutError::TagImmutable(tag)) => Err(AwsError::bad_request(
            "ImageTagAlreadyExistsException",
            format!("The image tag '{tag}' already exists in the '{name}' repository and cannot be overwritten because the tag is immutable."),
        )),
        Err(PutError::Store(e)) => Err(store_error(e)),
    }
}

fn batch_check_layers(
    c: &Call,
    i: ecr::BatchCheckLayerAvailabilityRequest,
) -> Result<ecr::BatchCheckLayerAvailabilityResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let digests = i
        .layer_digests
        .filter(|d| !d.is_empty())
        .ok_or_else(|| missing("layerDigests"))?;
    if digests.len() > 100 {
        return Err(invalid("layerDigests may name at most 100 layers."));
    }
    c.repo(&name)?;
    let mut layers = Vec::new();
    let mut failures = Vec::new();
    for d in digests {
        let layer_failure = |code: &str, reason: &str| ecr::LayerFailure {
            layer_digest: Some(d.clone()),
            failure_code: Some(code.to_string()),
            failure_reason: Some(reason.to_string()),
        };
        if Digest::parse(&d).is_err() {
            failures.push(layer_failure("InvalidLayerDigest", "Invalid layer digest"));
            continue;
        }
        match meta::get::<meta::LayerLink>(c.store(), &c.scope.layer(&name, &d)) {
            Some(link) => layers.push(ecr::Layer {
                layer_digest: Some(d.clone()),
                layer_availability: Some("AVAILABLE".into()),
                layer_size: Some(link.size as i64),
                media_type: None,
            }),
            None => failures.push(layer_failure(
                "MissingLayerDigest",
                "Could not find the requested layer",
            )),
        }
    }
    Ok(ecr::BatchCheckLayerAvailabilityResponse {
        layers: Some(layers),
        failures: Some(failures),
    })
}

async fn initiate_layer_upload(
    c: &Call<'_>,
    i: ecr::InitiateLayerUploadRequest,
) -> Result<ecr::InitiateLayerUploadResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    c.repo(&name)?;
    let id = c
        .registry
        .uploads
        .start(&c.scope, &name)
        .await
        .map_err(server)?;
    Ok(ecr::InitiateLayerUploadResponse {
        upload_id: Some(id.to_string()),
        part_size: Some(PART_SIZE),
    })
}

fn upload_not_found(id: &str, name: &str, scope: &Scope) -> AwsError {
    AwsError::bad_request(
        "UploadNotFoundException",
        format!(
            "Upload with id '{id}' is not found in repository '{name}' in registry with id '{}'",
            scope.account
        ),
    )
}

/// Claims upload `id` for this call.
async fn claim_upload(
    c: &Call<'_>,
    name: &str,
    id: &str,
    sealed: bool,
    busy_type: &'static str,
) -> Result<Session, AwsError> {
    c.registry
        .uploads
        .claim(&c.scope, name, id, sealed)
        .await
        .map_err(|e| match e {
            UploadError::Unknown => upload_not_found(id, name, &c.scope),
            UploadError::Busy { size } => AwsError::bad_request(
                busy_type,
                format!(
                    "Another request is writing upload '{id}' ({size} bytes received); try again."
                ),
            ),
            other => server(other),
        })
}

async fn upload_layer_part(
    c: &Call<'_>,
    i: ecr::UploadLayerPartRequest,
) -> Result<ecr::UploadLayerPartResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let id = i.upload_id.ok_or_else(|| missing("uploadId"))?;
    let first = i.part_first_byte.ok_or_else(|| missing("partFirstByte"))?;
    let last = i.part_last_byte.ok_or_else(|| missing("partLastByte"))?;
    let blob = i.layer_part_blob.ok_or_else(|| missing("layerPartBlob"))?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| AwsError::serialization("layerPartBlob is not valid base64."))?;
    c.repo(&name)?;
    let part_error = |m: String| AwsError::bad_request("InvalidLayerPartException", m);
    let part_len = last
        .checked_sub(first)
        .and_then(|n| n.checked_add(1))
        .and_then(|n| usize::try_from(n).ok());
    let uploads = &c.registry.uploads;
    let mut session = claim_upload(c, &name, &id, false, "InvalidLayerPartException").await?;
    let refusal = if first < 0 || first as u64 != session.size {
        Some(part_error(format!(
            "The part's first byte {first} does not follow the last byte received ({}).",
            session.size as i64 - 1
        )))
    } else if last < first || part_len != Some(data.len()) {
        Some(part_error(format!(
            "partFirstByte {first} and partLastByte {last} do not match the part's {} bytes.",
            data.len()
        )))
    } else {
        None
    };
    if let Some(refusal) = refusal {
        uploads.release(session).await.map_err(server)?;
        return Err(refusal);
    }
    let body = stream::iter(vec![Ok::<_, String>(bytes::Bytes::from(data))]);
    let appended = uploads.append(&mut session, body).await;
    let released = uploads.release(session).await;
    appended.map_err(server)?;
    let size = released.map_err(server)?;
    Ok(ecr::UploadLayerPartResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        upload_id: Some(id),
        last_byte_received: Some(size as i64 - 1),
    })
}

async fn complete_layer_upload(
    c: &Call<'_>,
    i: ecr::CompleteLayerUploadRequest,
) -> Result<ecr::CompleteLayerUploadResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let id = i.upload_id.ok_or_else(|| missing("uploadId"))?;
    let digests = i
        .layer_digests
        .filter(|d| !d.is_empty())
        .ok_or_else(|| missing("layerDigests"))?;
    if digests.len() != 1 {
        return Err(invalid(
            "Berth completes one layer per upload: give exactly one layerDigest.",
        ));
    }
    let digest = Digest::parse(&digests[0])
        .map_err(|e| invalid(format!("Invalid parameter at 'layerDigests': {e}")))?;
    c.repo(&name)?;
    let uploads = &c.registry.uploads;
    let session = claim_upload(c, &name, &id, true, "InvalidLayerException").await?;
    if session.size == 0 {
        uploads.release(session).await.map_err(server)?;
        return Err(AwsError::bad_request(
            "EmptyUploadException",
            format!("The upload with id '{id}' does not contain any layer parts."),
        ));
    }
    if c.store()
        .get(&c.scope.layer(&name, &digest.to_string()))
        .is_some()
    {
        uploads.cancel(session).await;
        return Err(AwsError::bad_request(
            "LayerAlreadyExistsException",
            format!("Layer '{digest}' already exists in the repository with name '{name}' in registry with id '{}'", c.scope.account),
        ));
    }
    match c.registry.complete_upload(session, &digest).await {
        Ok(_) => Ok(ecr::CompleteLayerUploadResponse {
            registry_id: Some(c.scope.account.clone()),
            repository_name: Some(name),
            upload_id: Some(id),
            layer_digest: Some(digest.to_string()),
        }),
        Err(CompleteError::Upload(UploadError::DigestMismatch { expected, actual })) => {
            Err(AwsError::bad_request(
                "InvalidLayerException",
                format!("The layer digest calculated for the uploaded parts ({actual}) does not match the given digest {expected}; nothing was stored."),
            ))
        }
        Err(CompleteError::Upload(UploadError::Unknown)) => Err(upload_not_found(&id, &name, &c.scope)),
        Err(CompleteError::RepositoryNotFound) => Err(repo_not_found(&c.scope, &name)),
        Err(e) => Err(server(e)),
    }
}

fn get_download_url(
    c: &Call,
    i: ecr::GetDownloadUrlForLayerRequest,
) -> Result<ecr::GetDownloadUrlForLayerResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let digest = i.layer_digest.ok_or_else(|| missing("layerDigest"))?;
    Digest::parse(&digest)
        .map_err(|e| invalid(format!("Invalid parameter at 'layerDigest': {e}")))?;
    c.repo(&name)?;
    if c.store().get(&c.scope.layer(&name, &digest)).is_none() {
        return Err(AwsError::bad_request(
            "LayersNotFoundException",
            format!("The layer {digest} does not exist in the repository with name '{name}' in the registry with id '{}'", c.scope.account),
        ));
    }
    // A URL for this layer alone, briefly: not a registry login.
    Ok(ecr::GetDownloadUrlForLayerResponse {
        download_url: Some(
            c.registry
                .layer_url(&c.ctx.principal, &c.scope.region, &name, &digest),
        ),
        layer_digest: Some(digest),
    })
}

async fn put_tag_mutability(
    c: &Call<'_>,
    i: ecr::PutImageTagMutabilityRequest,
) -> Result<ecr::PutImageTagMutabilityResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let mutability = i
        .image_tag_mutability
        .ok_or_else(|| missing("imageTagMutability"))?;
    let exclusions = check_mutability(&mutability, &i.image_tag_mutability_exclusion_filters)?;
    let (m, e) = (mutability.clone(), exclusions);
    c.update_repo(&name, move |r| {
        r.image_tag_mutability = m.clone();
        r.mutability_exclusions = e.clone();
        Ok(())
    })
    .await?;
    Ok(ecr::PutImageTagMutabilityResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        image_tag_mutability: Some(mutability),
        image_tag_mutability_exclusion_filters: i.image_tag_mutability_exclusion_filters,
    })
}

async fn put_scanning(
    c: &Call<'_>,
    i: ecr::PutImageScanningConfigurationRequest,
) -> Result<ecr::PutImageScanningConfigurationResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let config = i
        .image_scanning_configuration
        .ok_or_else(|| missing("imageScanningConfiguration"))?;
    let scan = config.scan_on_push.unwrap_or(false);
    c.update_repo(&name, move |r| {
        r.scan_on_push = scan;
        Ok(())
    })
    .await?;
    Ok(ecr::PutImageScanningConfigurationResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        image_scanning_configuration: Some(ecr::ImageScanningConfiguration {
            scan_on_push: Some(scan),
        }),
    })
}

fn policy_not_found(c: &Call, name: &str) -> AwsError {
    AwsError::bad_request(
        "RepositoryPolicyNotFoundException",
        format!("Repository policy does not exist for the repository with name '{name}' in the registry with id '{}'", c.scope.account),
    )
}

async fn set_policy(
    c: &Call<'_>,
    i: ecr::SetRepositoryPolicyRequest,
) -> Result<ecr::SetRepositoryPolicyResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let text = i.policy_text.ok_or_else(|| missing("policyText"))?;
    let valid = text.len() <= 10240
        && serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .is_some_and(|v| v.get("Statement").is_some());
    if !valid {
        return Err(invalid(
            "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'",
        ));
    }
    let stored = text.clone();
    c.update_repo(&name, move |r| {
        r.policy = Some(stored.clone());
        Ok(())
    })
    .await?;
    Ok(ecr::SetRepositoryPolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        policy_text: Some(text),
    })
}

fn get_policy(
    c: &Call,
    i: ecr::GetRepositoryPolicyRequest,
) -> Result<ecr::GetRepositoryPolicyResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let text = c
        .repo(&name)?
        .policy
        .ok_or_else(|| policy_not_found(c, &name))?;
    Ok(ecr::GetRepositoryPolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        policy_text: Some(text),
    })
}

async fn delete_policy(
    c: &Call<'_>,
    i: ecr::DeleteRepositoryPolicyRequest,
) -> Result<ecr::DeleteRepositoryPolicyResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let not_found = policy_not_found(c, &name);
    let (_, text) = c
        .update_repo(&name, move |r| {
            r.policy.take().ok_or_else(|| not_found.clone())
        })
        .await?;
    Ok(ecr::DeleteRepositoryPolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        policy_text: Some(text),
    })
}

fn lifecycle_not_found(c: &Call, name: &str) -> AwsError {
    AwsError::bad_request(
        "LifecyclePolicyNotFoundException",
        format!("Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{}'", c.scope.account),
    )
}

async fn put_lifecycle(
    c: &Call<'_>,
    i: ecr::PutLifecyclePolicyRequest,
) -> Result<ecr::PutLifecyclePolicyResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let text = i
        .lifecycle_policy_text
        .ok_or_else(|| missing("lifecyclePolicyText"))?;
    if text.len() < 100 || text.len() > 30720 {
        return Err(invalid(
            "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Member must have length between 100 and 30720'",
        ));
    }
    lifecycle::parse(&text).map_err(invalid)?;
    let stored = text.clone();
    c.update_repo(&name, move |r| {
        r.lifecycle_policy = Some(stored.clone());
        Ok(())
    })
    .await?;
    // ECR evaluates policies some time after they are set; Berth starts at
    // once (and then on every garbage-collection pass).
    let (registry, scope, repo) = (c.registry.clone(), c.scope.clone(), name.clone());
    tokio::spawn(async move {
        match registry
            .apply_lifecycle(&scope, &repo, berth_util::time::now_epoch())
            .await
        {
            Ok(expired) if !expired.is_empty() => {
                tracing::info!(repository = %repo, images = expired.len(), "lifecycle policy expired images")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "applying a lifecycle policy failed"),
        }
    });
    Ok(ecr::PutLifecyclePolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        lifecycle_policy_text: Some(text),
    })
}

fn get_lifecycle(
    c: &Call,
    i: ecr::GetLifecyclePolicyRequest,
) -> Result<ecr::GetLifecyclePolicyResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let repo = c.repo(&name)?;
    let text = repo
        .lifecycle_policy
        .ok_or_else(|| lifecycle_not_found(c, &name))?;
    Ok(ecr::GetLifecyclePolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        lifecycle_policy_text: Some(text),
        last_evaluated_at: repo.lifecycle_evaluated_at,
    })
}

async fn delete_lifecycle(
    c: &Call<'_>,
    i: ecr::DeleteLifecyclePolicyRequest,
) -> Result<ecr::DeleteLifecyclePolicyResponse, AwsError> {
    let name = c.name(&i.registry_id, &i.repository_name)?;
    let not_found = lifecycle_not_found(c, &name);
    let (record, text) = c
        .update_repo(&name, move |r| {
            r.lifecycle_policy.take().ok_or_else(|| not_found.clone())
        })
        .await?;
    Ok(ecr::DeleteLifecyclePolicyResponse {
        registry_id: Some(c.scope.account.clone()),
        repository_name: Some(name),
        lifecycle_policy_text: Some(text),
        last_evaluated_at: record.lifecycle_evaluated_at,
    })
}

/// The repository a resource ARN names in the caller's account and region.
fn repo_of_arn(c: &Call, arn: &Option<String>) -> Result<String, AwsError> {
    let text = arn.as_deref().ok_or_else(|| missing("resourceArn"))?;
    let bad = || {
        invalid(format!("Invalid parameter at 'resourceArn' failed to satisfy constraint: '{text} is not a repository ARN'"))
    };
    let arn = Arn::parse(text).ok_or_else(bad)?;
    if arn.service != "ecr" || arn.resource_type() != "repository" {
        return Err(bad());
    }
    let name = arn.resource_id().to_string();
    if arn.account != c.scope.account || arn.region != c.scope.region {
        return Err(repo_not_found(&c.scope, &name));
    }
    check_name(&name)?;
    Ok(name)
}

async fn tag_resource(
    c: &Call<'_>,
    i: ecr::TagResourceRequest,
) -> Result<ecr::TagResourceResponse, AwsError> {
    let name = repo_of_arn(c, &i.resource_arn)?;
    let new = i.tags.ok_or_else(|| missing("tags"))?;
    c.update_repo(&name, move |r| {
        check_tags(&new, &r.tags)?;
        merge_tags(&mut r.tags, &new);
        Ok(())
    })
    .await?;
    Ok(ecr::TagResourceResponse {})
}

async fn untag_resource(
    c: &Call<'_>,
    i: ecr::UntagResourceRequest,
) -> Result<ecr::UntagResourceResponse, AwsError> {
    let name = repo_of_arn(c, &i.resource_arn)?;
    let keys = i.tag_keys.ok_or_else(|| missing("tagKeys"))?;
    if keys.iter().any(|k| tags::is_reserved(k)) {
        return Err(AwsError::bad_request(
            "InvalidTagParameterException",
            "Tags with the reserved prefix 'aws:' cannot be removed.",
        ));
    }
    c.update_repo(&name, move |r| {
        r.tags.retain(|t| !keys.contains(&t.key));
        Ok(())
    })
    .await?;
    Ok(ecr::UntagResourceResponse {})
}

fn list_tags(
    c: &Call,
    i: ecr::ListTagsForResourceRequest,
) -> Result<ecr::ListTagsForResourceResponse, AwsError> {
    let name = repo_of_arn(c, &i.resource_arn)?;
    let repo = c.repo(&name)?;
    Ok(ecr::ListTagsForResourceResponse {
        tags: Some(
            repo.tags
                .iter()
                .map(|t| ecr::Tag {
                    key: Some(t.key.clone()),
                    value: Some(t.value.clone()),
                })
                .collect(),
        ),
    })
}
