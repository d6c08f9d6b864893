//! The ACM operations.

use std::sync::Arc;

use base64::Engine;
use berth_model::authz::Requirement;
use berth_model::shapes::acm as sh;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::x509::{self, PemProblem};
use crate::{AcmService, CertRecord};

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;
const URL: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// ACM's validity for the certificates it issues: 395 days (13 months).
pub const VALIDITY_DAYS: i64 = 395;
/// How long RequestCertificate's IdempotencyToken holds.
const IDEMPOTENCY_SECS: f64 = 3600.0;
/// ACM's initial quota of names per certificate.
const MAX_NAMES: usize = 10;
const ARN_PATTERN: &str = r"arn:[\w+=/,.@-]+:acm:[\w+=/,.@-]*:[0-9]+:[\w+=,.@-]+(/[\w+=,.@-]+)*";
/// ListCertificates' key types when Includes.keyTypes is absent.
const DEFAULT_KEY_TYPES: [&str; 2] = ["RSA_1024", "RSA_2048"];
const DEFAULT_DAYS_BEFORE_EXPIRY: i32 = 45;

// ---------- helpers ----------

pub(crate) fn validation(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("ValidationException", message)
}

fn null_member(member: &str) -> AwsError {
    validation(format!(
        "1 validation error detected: Value null at '{member}' failed to satisfy constraint: \
         Member must not be null"
    ))
}

fn store_error(e: berth_store::StoreError) -> AwsError {
    tracing::error!(error = %e, "store failure");
    AwsError::internal("The request could not be stored; retry it.")
}

fn corrupt(key: &str) -> AwsError {
    tracing::error!(key, "undecodable ACM record in the store");
    AwsError::internal("An internal error occurred.")
}

fn not_found(arn: &str) -> AwsError {
    AwsError::bad_request(
        "ResourceNotFoundException",
        format!("Could not find certificate {arn}."),
    )
}

pub(crate) fn prefix(account: &str, region: &str) -> String {
    format!("acm/{account}/{region}/certificates/")
}

fn config_key(account: &str, region: &str) -> String {
    format!("acm/{account}/{region}/account-configuration")
}

fn now() -> f64 {
    // ACM reports its dates in whole seconds.
    berth_util::time::now_secs() as f64
}

fn arn_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(&format!("^{ARN_PATTERN}$")).unwrap_or_else(|_| unreachable!())
    })
}

/// The certificate id of an ARN of the account and Region, checked as ACM
/// checks it: model constraints first (ValidationException), then the form
/// (InvalidArnException).
fn certificate_id<'a>(
    account: &str,
    region: &str,
    arn: Option<&'a str>,
) -> Result<Option<&'a str>, AwsError> {
    let arn = arn.ok_or_else(|| null_member("certificateArn"))?;
    if arn.len() < 20 || arn.len() > 2048 || !arn_regex().is_match(arn) {
        return Err(validation(format!(
            "1 validation error detected: Value '{arn}' at 'certificateArn' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: {ARN_PATTERN}"
        )));
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let id = parts
        .get(5)
        .and_then(|r| r.strip_prefix("certificate/"))
        .filter(|id| uuid::Uuid::parse_str(id).is_ok());
    let Some(id) = id else {
        return Err(AwsError::bad_request(
            "InvalidArnException",
            format!("String '{arn}' is not a valid ARN."),
        ));
    };
    if parts[1] != "aws" || parts[3] != region || parts[4] != account {
        // Another partition, Region or account: not one of this scope's.
        return Ok(None);
    }
    Ok(Some(id))
}

pub(crate) fn read_record(
    store: &dyn ReadView,
    account: &str,
    region: &str,
    arn: &str,
) -> Result<Option<CertRecord>, AwsError> {
    let Some(id) = certificate_id(account, region, Some(arn))? else {
        return Ok(None);
    };
    read_by_id(store, account, region, id)
}

fn read_by_id(
    store: &dyn ReadView,
    account: &str,
    region: &str,
    id: &str,
) -> Result<Option<CertRecord>, AwsError> {
    let key = format!("{}{id}", prefix(account, region));
    match store.get(&key) {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|_| corrupt(&key)),
    }
}

fn record_op(account: &str, region: &str, record: &CertRecord) -> Result<Op, AwsError> {
    let id = record.arn.rsplit('/').next().unwrap_or_default();
    let key = format!("{}{id}", prefix(account, region));
    let value = serde_json::to_vec(record).map_err(|_| corrupt(&key))?;
    Ok(Op::put(key, value))
}

/// The requirement of `action` on an existing certificate (with its tags)
/// or on the ARN the caller named.
fn on_certificate(action: &str, arn: &str, record: Option<&CertRecord>) -> Requirement {
    let mut requirement = Requirement::new(action, arn);
    if let Some(record) = record {
        requirement =
            requirement.resource_tags(record.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    requirement
}

/// Reads the certificate the input names, after the caller may perform
/// `action` on it; a missing one answers ResourceNotFoundException (after
/// the check, as AWS does).
fn authorized_record(
    svc: &AcmService,
    ctx: &RequestContext,
    action: &str,
    arn: Option<&str>,
) -> Result<CertRecord, AwsError> {
    let id = certificate_id(&ctx.account_id, &ctx.region, arn)?;
    let arn = arn.unwrap_or_default();
    let record = match id {
        Some(id) => read_by_id(svc.store.as_ref(), &ctx.account_id, &ctx.region, id)?,
        None => None,
    };
    ctx.authorize(&[on_certificate(action, arn, record.as_ref())])?;
    record.ok_or_else(|| not_found(arn))
}

fn check_tags(tags: &[sh::Tag]) -> Result<Vec<(String, String)>, AwsError> {
    if tags.is_empty() || tags.len() > berth_model::tags::MAX_TAGS {
        return Err(validation(format!(
            "1 validation error detected: Value at 'tags' failed to satisfy constraint: Member \
             must have length less than or equal to 50 and greater than or equal to 1 (got {})",
            tags.len()
        )));
    }
    let mut out = Vec::new();
    for tag in tags {
        let key = tag
            .key
            .as_deref()
            .ok_or_else(|| null_member("tags.member.key"))?;
        let value = tag.value.clone().unwrap_or_default();
        berth_model::tags::check_key(key).map_err(validation)?;
        berth_model::tags::check_value(key, &value).map_err(validation)?;
        if berth_model::tags::is_reserved(key) {
            return Err(AwsError::bad_request(
                "InvalidTagException",
                format!("Tag key '{key}' uses the reserved prefix 'aws:'."),
            ));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn merge_tags(
    existing: &mut Vec<(String, String)>,
    new: &[(String, String)],
) -> Result<(), AwsError> {
    for (k, v) in new {
        match existing.iter_mut().find(|(ek, _)| ek == k) {
            Some(entry) => entry.1 = v.clone(),
            None => existing.push((k.clone(), v.clone())),
        }
    }
    if existing.len() > berth_model::tags::MAX_TAGS {
        return Err(AwsError::bad_request(
            "TooManyTagsException",
            "The request contains too many tags: a certificate can have at most 50 tags.",
        ));
    }
    Ok(())
}

/// A blob member as bytes (botocore sends blobs base64-encoded).
fn blob(member: &str, value: Option<&str>, max: usize) -> Result<Vec<u8>, AwsError> {
    let value = value.ok_or_else(|| null_member(member))?;
    let bytes = B64
        .decode(value.trim())
        .map_err(|_| AwsError::serialization(format!("'{member}' is not valid base64.")))?;
    if bytes.is_empty() || bytes.len() > max {
        return Err(validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: \
             Member must have length less than or equal to {max} and greater than or equal to 1"
        )));
    }
    Ok(bytes)
}

/// Whether `name` is a DNS name ACM accepts (its DomainNameString pattern,
/// without the look-aheads the regex crate lacks).
fn valid_domain(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    let labels: Vec<&str> = rest.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn validation_record(arn: &str, name: &str) -> (String, String) {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{arn}|{name}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let base = name.strip_prefix("*.").unwrap_or(name);
    (
        format!("_{}.{base}.", &hex[..32]),
        format!("_{}.{}.acm-validations.aws.", &hex[32..], &hex[..10]),
    )
}

fn domain_validations(record: &CertRecord) -> Vec<sh::DomainValidation> {
    let method = record
        .validation_method
        .clone()
        .unwrap_or_else(|| "DNS".to_string());
    record
        .info
        .names
        .iter()
        .map(|name| {
            let base = name.strip_prefix("*.").unwrap_or(name).to_string();
            let mut dv = sh::DomainValidation {
                domain_name: Some(name.clone()),
                validation_domain: Some(base.clone()),
                validation_status: Some("SUCCESS".into()),
                validation_method: Some(method.clone()),
                ..Default::default()
            };
            if method == "EMAIL" {
                dv.validation_emails = Some(
                    [
                        "admin",
                        "administrator",
                        "hostmaster",
                        "postmaster",
                        "webmaster",
                    ]
                    .iter()
                    .map(|u| format!("{u}@{base}"))
                    .collect(),
                );
            } else {
                let (rname, value) = validation_record(&record.arn, name);
                dv.resource_record = Some(sh::ResourceRecord {
                    name: Some(rname),
                    r#type: Some("CNAME".into()),
                    value: Some(value),
                });
            }
            dv
        })
        .collect()
}

fn detail(record: &CertRecord, now: f64) -> sh::CertificateDetail {
    let info = &record.info;
    let imported = record.is_imported();
    sh::CertificateDetail {
        certificate_arn: Some(record.arn.clone()),
        domain_name: Some(info.domain_name.clone()),
        subject_alternative_names: Some(info.names.clone()),
        domain_validation_options: (!imported).then(|| domain_validations(record)),
        serial: Some(info.serial.clone()),
        subject: Some(info.subject.clone()),
        issuer: Some(info.issuer.clone()),
        created_at: (!imported).then_some(record.created_at),
        issued_at: (!imported).then_some(record.issued_at),
        imported_at: imported.then_some(record.issued_at),
        status: Some(record.status(now).into()),
        not_before: Some(info.not_before as f64),
        not_after: Some(info.not_after as f64),
        key_algorithm: Some(info.key_algorithm.clone()),
        signature_algorithm: Some(info.signature_algorithm.clone()),
        in_use_by: Some(record.in_use_by.clone()),
        r#type: Some(record.cert_type.clone()),
        key_usages: Some(
            info.key_usages
                .iter()
                .map(|n| sh::KeyUsage {
                    name: Some(n.clone()),
                })
                .collect(),
        ),
        extended_key_usages: Some(
            info.extended_key_usages
                .iter()
                .map(|(n, oid)| sh::ExtendedKeyUsage {
                    name: Some(n.clone()),
                    oid: Some(oid.clone()),
                })
                .collect(),
        ),
        renewal_eligibility: Some(record.renewal_eligibility().into()),
        renewal_summary: record.renewed_at.map(|at| sh::RenewalSummary {
            renewal_status: Some("SUCCESS".into()),
            domain_validation_options: Some(domain_validations(record)),
            updated_at: Some(at),
            ..Default::default()
        }),
        options: Some(sh::CertificateOptions {
            certificate_transparency_logging_preference: Some(record.transparency.clone()),
            export: Some("DISABLED".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn summary(record: &CertRecord, now: f64) -> sh::CertificateSummary {
    let info = &record.info;
    let imported = record.is_imported();
    sh::CertificateSummary {
        certificate_arn: Some(record.arn.clone()),
        domain_name: Some(info.domain_name.clone()),
        subject_alternative_name_summaries: Some(info.names.iter().take(100).cloned().collect()),
        has_additional_subject_alternative_names: Some(info.names.len() > 100),
        status: Some(record.status(now).into()),
        r#type: Some(record.cert_type.clone()),
        key_algorithm: Some(info.key_algorithm.clone()),
        key_usages: Some(info.key_usages.clone()),
        extended_key_usages: Some(
            info.extended_key_usages
                .iter()
                .map(|(n, _)| n.clone())
                .collect(),
        ),
        export_option: Some("DISABLED".into()),
        in_use: Some(!record.in_use_by.is_empty()),
        exported: Some(false),
        renewal_eligibility: Some(record.renewal_eligibility().into()),
        not_before: Some(info.not_before as f64),
        not_after: Some(info.not_after as f64),
        created_at: (!imported).then_some(record.created_at),
        issued_at: (!imported).then_some(record.issued_at),
        imported_at: imported.then_some(record.issued_at),
        ..Default::default()
    }
}

fn pem_error(what: &str, problem: PemProblem) -> AwsError {
    match (what, problem) {
        ("certificate", PemProblem::SeveralCertificates) => validation(
            "The certificate field contains more than one certificate. You can specify only one \
             certificate in this field.",
        ),
        ("certificate", _) => validation(
            "Unable to parse certificate. Please ensure the certificate is in PEM format.",
        ),
        ("chain", _) => validation(
            "Unable to parse certificate chain. Please ensure the chain is in PEM format.",
        ),
        _ => validation("The private key is not supported."),
    }
}

// ---------- ImportCertificate ----------

pub async fn import_certificate(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::ImportCertificateRequest,
) -> Result<sh::ImportCertificateResponse, AwsError> {
    let (account, region) = (&ctx.account_id, &ctx.region);
    let cert_bytes = blob("certificate", input.certificate.as_deref(), 32_768)?;
    let key_bytes = blob("privateKey", input.private_key.as_deref(), 8192)?;
    let chain_bytes = match input.certificate_chain.as_deref() {
        Some(c) => Some(blob("certificateChain", Some(c), 2_097_152)?),
        None => None,
    };
    let tags = match &input.tags {
        Some(tags) => check_tags(tags)?,
        None => Vec::new(),
    };
    // Re-import over an existing ARN: authorize on it; a new one on `*`.
    let existing = match input.certificate_arn.as_deref() {
        Some(arn) => {
            let record = authorized_record(svc, ctx, "acm:ImportCertificate", Some(arn))?;
            if input.tags.is_some() {
                return Err(validation(
                    "Tags cannot be specified when reimporting a certificate.",
                ));
            }
            if !record.is_imported() {
                return Err(validation(format!(
                    "Certificate {} was not imported and cannot be reimported.",
                    record.arn
                )));
            }
            Some(record)
        }
        None => {
            ctx.authorize(&[Requirement::new("acm:ImportCertificate", "*")
                .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
            None
        }
    };

    let cert_der =
        x509::single_certificate_der(&cert_bytes).map_err(|p| pem_error("certificate", p))?;
    let cert = x509::parse(&cert_der)
        .ok_or_else(|| pem_error("certificate", PemProblem::NotCertificate))?;
    let info = x509::info(&cert).ok_or_else(|| {
        validation(
            "The certificate's key algorithm is not supported. Supported: RSA 1024, 2048, 3072 \
             and 4096 bits; EC prime256v1, secp384r1 and secp521r1.",
        )
    })?;
    let key = x509::private_key(&key_bytes).map_err(|p| pem_error("key", p))?;
    if !x509::key_matches(&cert, &key) {
        return Err(validation(
            "The private key does not match the public key in the certificate.",
        ));
    }
    let now = now();
    if (info.not_after as f64) < now {
        return Err(validation("The certificate is expired."));
    }
    if (info.not_before as f64) > now {
        return Err(validation("The certificate is not yet valid."));
    }
    let chain_pem = match &chain_bytes {
        None => None,
        Some(bytes) => {
            let ders = x509::chain_ders(bytes).map_err(|p| pem_error("chain", p))?;
            let first = ders
                .first()
                .and_then(|d| x509::parse(d))
                .ok_or_else(|| pem_error("chain", PemProblem::NotCertificate))?;
            if !x509::signed_by(&cert, &first) {
                return Err(validation(
                    "Could not validate the certificate with the certificate chain.",
                ));
            }
            Some(ders.iter().map(|d| x509::to_pem(d)).collect::<String>())
        }
    };
    let key_pem = String::from_utf8_lossy(&key_bytes).into_owned();
    let sealed = berth_model::seal::seal_text(svc.sealer(), &key_pem).map_err(|e| {
        tracing::error!(error = %e, "sealing a private key failed");
        AwsError::internal("An internal error occurred.")
    })?;
    let record = match existing {
        Some(old) => CertRecord {
            cert_pem: x509::to_pem(&cert_der),
            chain_pem,
            key: sealed,
            info,
            issued_at: now,
            ..old
        },
        None => CertRecord {
            arn: ctx.arn("acm", &format!("certificate/{}", uuid::Uuid::new_v4())),
            cert_type: "IMPORTED".into(),
            cert_pem: x509::to_pem(&cert_der),
            chain_pem,
            key: sealed,
            info,
            validation_method: None,
            created_at: now,
            issued_at: now,
            in_use_by: Vec::new(),
            tags,
            transparency: "DISABLED".into(),
            idempotency_token: None,
            renewed_at: None,
        },
    };
    let op = record_op(account, region, &record)?;
    svc.store
        .mutate(Box::new(move |_| Ok(vec![op.clone()])))
        .await
        .map_err(store_error)?;
    Ok(sh::ImportCertificateResponse {
        certificate_arn: Some(record.arn),
    })
}

// ---------- RequestCertificate ----------

pub async fn request_certificate(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::RequestCertificateRequest,
) -> Result<sh::RequestCertificateResponse, AwsError> {
    let (account, region) = (ctx.account_id.clone(), ctx.region.clone());
    let domain = input
        .domain_name
        .clone()
        .ok_or_else(|| null_member("domainName"))?;
    if !valid_domain(&domain) {
        return Err(validation(format!(
            "1 validation error detected: Value '{domain}' at 'domainName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: \
             (\\*\\.)?(((?!-)[A-Za-z0-9-]{{0,62}}[A-Za-z0-9])\\.)+((?!-)[A-Za-z0-9-]{{1,62}}[A-Za-z0-9])"
        )));
    }
    let mut names = vec![domain.to_ascii_lowercase()];
    if let Some(sans) = &input.subject_alternative_names {
        if sans.is_empty() || sans.len() > 100 {
            return Err(validation(
                "1 validation error detected: Value at 'subjectAlternativeNames' failed to \
                 satisfy constraint: Member must have length less than or equal to 100 and \
                 greater than or equal to 1",
            ));
        }
        for san in sans {
            if !valid_domain(san) {
                return Err(AwsError::bad_request(
                    "InvalidDomainValidationOptionsException",
                    format!("Domain name {san} is not valid."),
                ));
            }
            let san = san.to_ascii_lowercase();
            if !names.contains(&san) {
                names.push(san);
            }
        }
    }
    if names.len() > MAX_NAMES {
        return Err(AwsError::bad_request(
            "LimitExceededException",
            format!(
                "Certificate request exceeds the maximum of {MAX_NAMES} domain names per \
                 certificate."
            ),
        ));
    }
    let method = input
        .validation_method
        .clone()
        .unwrap_or_else(|| "DNS".to_string());
    if !sh::VALIDATION_METHOD_VALUES.contains(&method.as_str()) {
        return Err(validation(format!(
            "1 validation error detected: Value '{method}' at 'validationMethod' failed to \
             satisfy constraint: Member must satisfy enum value set: [EMAIL, DNS, HTTP]"
        )));
    }
    let key_algorithm = input
        .key_algorithm
        .clone()
        .unwrap_or_else(|| "RSA_2048".to_string());
    if !["RSA_2048", "EC_prime256v1", "EC_secp384r1"].contains(&key_algorithm.as_str()) {
        return Err(validation(format!(
            "1 validation error detected: Value '{key_algorithm}' at 'keyAlgorithm' failed to \
             satisfy constraint: Member must satisfy enum value set: [RSA_2048, EC_prime256v1, \
             EC_secp384r1]"
        )));
    }
    if let Some(token) = &input.idempotency_token {
        if token.is_empty()
            || token.len() > 32
            || !token.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            return Err(validation(format!(
                "1 validation error detected: Value '{token}' at 'idempotencyToken' failed to \
                 satisfy constraint: Member must satisfy regular expression pattern: \\w+"
            )));
        }
    }
    let transparency = input
        .options
        .as_ref()
        .and_then(|o| o.certificate_transparency_logging_preference.clone())
        .unwrap_or_else(|| "ENABLED".to_string());
    if !["ENABLED", "DISABLED"].contains(&transparency.as_str()) {
        return Err(validation(format!(
            "1 validation error detected: Value '{transparency}' at \
             'options.certificateTransparencyLoggingPreference' failed to satisfy constraint: \
             Member must satisfy enum value set: [ENABLED, DISABLED]"
        )));
    }
    if input.options.as_ref().and_then(|o| o.export.as_deref()) == Some("ENABLED") {
        return Err(validation(
            "Berth cannot issue exportable certificates: ExportCertificate would return the \
             private key encrypted with a passphrase, which Berth does not implement.",
        ));
    }
    let tags = match &input.tags {
        Some(tags) => check_tags(tags)?,
        None => Vec::new(),
    };
    ctx.authorize(&[Requirement::new("acm:RequestCertificate", "*")
        .condition("acm:ValidationMethod", method.clone())
        .condition("acm:KeyAlgorithm", key_algorithm.clone())
        .condition_values("acm:DomainNames", names.clone())
        .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
    if let Some(ca_arn) = &input.certificate_authority_arn {
        return Err(validation(format!(
            "Berth has no AWS Private CA, so it cannot issue from {ca_arn}: omit \
             CertificateAuthorityArn and Berth's local CA issues the certificate."
        )));
    }
    if input.managed_by.is_some() {
        return Err(validation(
            "ManagedBy names CloudFront, which Berth does not have.",
        ));
    }

    let now = now();
    // IdempotencyToken: the same token within an hour answers the same ARN.
    if let Some(token) = &input.idempotency_token {
        for kv in svc
            .store
            .range(&prefix(&account, &region), None, usize::MAX)
        {
            if let Ok(record) = serde_json::from_slice::<CertRecord>(&kv.value) {
                if record.idempotency_token.as_deref() == Some(token.as_str())
                    && now - record.created_at < IDEMPOTENCY_SECS
                {
                    return Ok(sh::RequestCertificateResponse {
                        certificate_arn: Some(record.arn),
                    });
                }
            }
        }
    }

    let ca = svc.ca().await?;
    let not_before = now as i64 - 60;
    let not_after = now as i64 + VALIDITY_DAYS * 86_400;
    let issue_names = names.clone();
    let (cert_pem, key_pem) = tokio::task::spawn_blocking(move || {
        let key = crate::ca::generate_key(&key_algorithm)?;
        let pem = ca.issue(&issue_names, &key, not_before, not_after)?;
        Ok::<_, AwsError>((pem, key.serialize_pem()))
    })
    .await
    .map_err(|_| AwsError::internal("An internal error occurred."))??;
    let ca_pem = svc.ca().await?.cert_pem.clone();
    let record = issued_record(
        svc,
        ctx.arn("acm", &format!("certificate/{}", uuid::Uuid::new_v4())),
        &cert_pem,
        &key_pem,
        &ca_pem,
        now,
    )?;
    let record = CertRecord {
        validation_method: Some(method),
        tags,
        transparency,
        idempotency_token: input.idempotency_token.clone(),
        ..record
    };
    let op = record_op(&account, &region, &record)?;
    svc.store
        .mutate(Box::new(move |_| Ok(vec![op.clone()])))
        .await
        .map_err(store_error)?;
    Ok(sh::RequestCertificateResponse {
        certificate_arn: Some(record.arn),
    })
}

fn issued_record(
    svc: &AcmService,
    arn: String,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    now: f64,
) -> Result<CertRecord, AwsError> {
    let der = x509::single_certificate_der(cert_pem.as_bytes())
        .map_err(|_| AwsError::internal("An internal error occurred."))?;
    let info = x509::parse(&der)
        .and_then(|c| x509::info(&c))
        .ok_or_else(|| AwsError::internal("An internal error occurred."))?;
    let key = berth_model::seal::seal_text(svc.sealer(), key_pem).map_err(|e| {
        tracing::error!(error = %e, "sealing a private key failed");
        AwsError::internal("An internal error occurred.")
    })?;
    Ok(CertRecord {
        arn,
        cert_type: "AMAZON_ISSUED".into(),
        cert_pem: cert_pem.to_string(),
        chain_pem: Some(ca_pem.to_string()),
        key,
        info,
        validation_method: None,
        created_at: now,
        issued_at: now,
        in_use_by: Vec::new(),
        tags: Vec::new(),
        transparency: "ENABLED".into(),
        idempotency_token: None,
        renewed_at: None,
    })
}

// ---------- reads ----------

pub fn describe_certificate(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::DescribeCertificateRequest,
) -> Result<sh::DescribeCertificateResponse, AwsError> {
    let record = authorized_record(
        svc,
        ctx,
        "acm:DescribeCertificate",
        input.certificate_arn.as_deref(),
    )?;
    Ok(sh::DescribeCertificateResponse {
        certificate: Some(detail(&record, now())),
    })
}

pub fn get_certificate(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::GetCertificateRequest,
) -> Result<sh::GetCertificateResponse, AwsError> {
    let record = authorized_record(
        svc,
        ctx,
        "acm:GetCertificate",
        input.certificate_arn.as_deref(),
    )?;
    Ok(sh::GetCertificateResponse {
        certificate: Some(record.cert_pem.clone()),
        certificate_chain: record.chain_pem.clone(),
    })
}

pub fn list_certificates(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::ListCertificatesRequest,
) -> Result<sh::ListCertificatesResponse, AwsError> {
    let max = match input.max_items {
        None => 1000,
        Some(n) if (1..=1000).contains(&n) => n as usize,
        Some(n) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{n}' at 'maxItems' failed to satisfy \
                 constraint: Member must have value {} 1000",
                if n < 1 {
                    "greater than or equal to 1 and less than or equal to"
                } else {
                    "less than or equal to"
                }
            )))
        }
    };
    let statuses = input.certificate_statuses.clone().unwrap_or_default();
    for s in &statuses {
        if !sh::CERTIFICATE_STATUS_VALUES.contains(&s.as_str()) {
            return Err(validation(format!(
                "1 validation error detected: Value '[{s}]' at 'certificateStatuses' failed to \
                 satisfy constraint: Member must satisfy constraint: [Member must satisfy enum \
                 value set: [{}]]",
                sh::CERTIFICATE_STATUS_VALUES.join(", ")
            )));
        }
    }
    let includes = input.includes.clone().unwrap_or_default();
    let key_types: Vec<String> = match &includes.key_types {
        Some(types) => {
            for t in types {
                if !sh::KEY_ALGORITHM_VALUES.contains(&t.as_str()) {
                    return Err(validation(format!(
                        "1 validation error detected: Value '[{t}]' at 'includes.keyTypes' \
                         failed to satisfy constraint: Member must satisfy constraint: [Member \
                         must satisfy enum value set: [{}]]",
                        sh::KEY_ALGORITHM_VALUES.join(", ")
                    )));
                }
            }
            types.clone()
        }
        None => DEFAULT_KEY_TYPES.iter().map(|s| s.to_string()).collect(),
    };
    let start_after = match input.next_token.as_deref() {
        None => None,
        Some(token) => Some(
            URL.decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    AwsError::bad_request("InvalidArgsException", "Invalid NextToken.")
                })?,
        ),
    };
    ctx.authorize(&[Requirement::new("acm:ListCertificates", "*")])?;
    let now = now();
    let prefix = prefix(&ctx.account_id, &ctx.region);
    let mut out = Vec::new();
    let mut next_token = None;
    for kv in svc.store.range(&prefix, start_after.as_deref(), usize::MAX) {
        let Ok(record) = serde_json::from_slice::<CertRecord>(&kv.value) else {
            continue;
        };
        let status = record.status(now);
        if !statuses.is_empty() && !statuses.iter().any(|s| s == status) {
            continue;
        }
        if !key_types.contains(&record.info.key_algorithm) {
            continue;
        }
        if let Some(kus) = &includes.key_usage {
            if !kus
                .iter()
                .any(|k| k == "ANY" || record.info.key_usages.contains(k))
            {
                continue;
            }
        }
        if let Some(ekus) = &includes.extended_key_usage {
            if !ekus
                .iter()
                .any(|k| k == "ANY" || record.info.extended_key_usages.iter().any(|(n, _)| n == k))
            {
                continue;
            }
        }
        if out.len() == max {
            next_token = Some(URL.encode(out_last_key(&prefix, &out)));
            break;
        }
        out.push(summary(&record, now));
    }
    if input.sort_by.as_deref() == Some("CREATED_AT") {
        out.sort_by(|a, b| {
            let (x, y) = (
                a.created_at.or(a.imported_at).unwrap_or_default(),
                b.created_at.or(b.imported_at).unwrap_or_default(),
            );
            x.total_cmp(&y)
        });
        if input.sort_order.as_deref() == Some("DESCENDING") {
            out.reverse();
        }
    }
    Ok(sh::ListCertificatesResponse {
        next_token,
        certificate_summary_list: Some(out),
    })
}

/// The store key of the last summary of a page.
fn out_last_key(prefix: &str, page: &[sh::CertificateSummary]) -> String {
    let id = page
        .last()
        .and_then(|s| s.certificate_arn.as_deref())
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default();
    format!("{prefix}{id}")
}

pub fn list_tags(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::ListTagsForCertificateRequest,
) -> Result<sh::ListTagsForCertificateResponse, AwsError> {
    let record = authorized_record(
        svc,
        ctx,
        "acm:ListTagsForCertificate",
        input.certificate_arn.as_deref(),
    )?;
    Ok(sh::ListTagsForCertificateResponse {
        tags: Some(
            record
                .tags
                .iter()
                .map(|(k, v)| sh::Tag {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
        ),
    })
}

// ---------- writes ----------

/// Writes `record` if the certificate is still there (a concurrent delete
/// wins), applying `change` to the stored version.
async fn update_record<F>(
    svc: &AcmService,
    ctx: &RequestContext,
    arn: &str,
    change: F,
) -> Result<CertRecord, AwsError>
where
    F: Fn(&mut CertRecord) -> Result<(), AwsError> + Send + Sync + 'static,
{
    update_in(&svc.store, &ctx.account_id, &ctx.region, arn, change).await
}

async fn update_in<F>(
    store: &Arc<dyn Store>,
    account: &str,
    region: &str,
    arn: &str,
    change: F,
) -> Result<CertRecord, AwsError>
where
    F: Fn(&mut CertRecord) -> Result<(), AwsError> + Send + Sync + 'static,
{
    let (account, region, arn) = (account.to_string(), region.to_string(), arn.to_string());
    let result = store
        .update(move |view| {
            let mut record =
                read_record(view, &account, &region, &arn)?.ok_or_else(|| not_found(&arn))?;
            change(&mut record)?;
            Ok((vec![record_op(&account, &region, &record)?], record))
        })
        .await
        .map_err(store_error)?;
    result.map(|(_, record)| record)
}

pub(crate) async fn set_in_use_by(
    store: &Arc<dyn Store>,
    account: &str,
    region: &str,
    arn: &str,
    users: Vec<String>,
) -> Result<(), AwsError> {
    let mut users = users;
    users.sort();
    users.dedup();
    match update_in(store, account, region, arn, move |r| {
        r.in_use_by = users.clone();
        Ok(())
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == "ResourceNotFoundException" => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn delete_certificate(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::DeleteCertificateRequest,
) -> Result<serde_json::Value, AwsError> {
    let record = authorized_record(
        svc,
        ctx,
        "acm:DeleteCertificate",
        input.certificate_arn.as_deref(),
    )?;
    let (account, region, arn) = (ctx.account_id.clone(), ctx.region.clone(), record.arn);
    let users = svc.users.clone();
    let result = svc
        .store
        .update(move |view| {
            let record =
                read_record(view, &account, &region, &arn)?.ok_or_else(|| not_found(&arn))?;
            // The recorded users, and those the using service's own records
            // name now (a listener created a moment ago is not recorded yet).
            let mut in_use_by = record.in_use_by.clone();
            if let Some(users) = &users {
                for user in users(view, &account, &region, &arn) {
                    if !in_use_by.contains(&user) {
                        in_use_by.push(user);
                    }
                }
            }
            if !in_use_by.is_empty() {
                return Err(AwsError::bad_request(
                    "ResourceInUseException",
                    format!("Certificate {arn} in use by {}", in_use_by.join(", ")),
                ));
            }
            let id = arn.rsplit('/').next().unwrap_or_default();
            Ok((
                vec![Op::delete(format!("{}{id}", prefix(&account, &region)))],
                (),
            ))
        })
        .await
        .map_err(store_error)?;
    result?;
    Ok(serde_json::json!({}))
}

pub async fn add_tags(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::AddTagsToCertificateRequest,
) -> Result<serde_json::Value, AwsError> {
    let id = certificate_id(
        &ctx.account_id,
        &ctx.region,
        input.certificate_arn.as_deref(),
    )?;
    let tags = check_tags(input.tags.as_deref().ok_or_else(|| null_member("tags"))?)?;
    let arn = input.certificate_arn.clone().unwrap_or_default();
    let record = match id {
        Some(id) => read_by_id(svc.store.as_ref(), &ctx.account_id, &ctx.region, id)?,
        None => None,
    };
    ctx.authorize(&[
        on_certificate("acm:AddTagsToCertificate", &arn, record.as_ref())
            .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    ])?;
    if record.is_none() {
        return Err(not_found(&arn));
    }
    update_record(svc, ctx, &arn, move |r| merge_tags(&mut r.tags, &tags)).await?;
    Ok(serde_json::json!({}))
}

pub async fn remove_tags(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::RemoveTagsFromCertificateRequest,
) -> Result<serde_json::Value, AwsError> {
    let id = certificate_id(
        &ctx.account_id,
        &ctx.region,
        input.certificate_arn.as_deref(),
    )?;
    let given = input.tags.clone().ok_or_else(|| null_member("tags"))?;
    if given.is_empty() || given.len() > 50 {
        return Err(validation(
            "1 validation error detected: Value at 'tags' failed to satisfy constraint: Member \
             must have length less than or equal to 50 and greater than or equal to 1",
        ));
    }
    let mut pairs: Vec<(String, Option<String>)> = Vec::new();
    for tag in &given {
        let key = tag
            .key
            .clone()
            .ok_or_else(|| null_member("tags.member.key"))?;
        berth_model::tags::check_key(&key).map_err(validation)?;
        if berth_model::tags::is_reserved(&key) {
            return Err(AwsError::bad_request(
                "InvalidTagException",
                format!("Tag key '{key}' uses the reserved prefix 'aws:'."),
            ));
        }
        pairs.push((key, tag.value.clone()));
    }
    let arn = input.certificate_arn.clone().unwrap_or_default();
    let record = match id {
        Some(id) => read_by_id(svc.store.as_ref(), &ctx.account_id, &ctx.region, id)?,
        None => None,
    };
    ctx.authorize(&[
        on_certificate("acm:RemoveTagsFromCertificate", &arn, record.as_ref())
            .tag_keys(pairs.iter().map(|(k, _)| k.clone())),
    ])?;
    if record.is_none() {
        return Err(not_found(&arn));
    }
    update_record(svc, ctx, &arn, move |r| {
        r.tags.retain(|(k, v)| {
            !pairs
                .iter()
                .any(|(pk, pv)| pk == k && pv.as_ref().is_none_or(|pv| pv == v))
        });
        Ok(())
    })
    .await?;
    Ok(serde_json::json!({}))
}

pub async fn renew_certificate(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::RenewCertificateRequest,
) -> Result<serde_json::Value, AwsError> {
    let record = authorized_record(
        svc,
        ctx,
        "acm:RenewCertificate",
        input.certificate_arn.as_deref(),
    )?;
    if record.is_imported() {
        return Err(validation(format!(
            "Certificate {} is an imported certificate: ACM cannot renew it; import the new \
             certificate over the same ARN with ImportCertificate.",
            record.arn
        )));
    }
    let ca = svc.ca().await?;
    let names = record.info.names.clone();
    let algorithm = record.info.key_algorithm.clone();
    let now = now();
    let (not_before, not_after) = (now as i64 - 60, now as i64 + VALIDITY_DAYS * 86_400);
    let issuer = ca.clone();
    let (cert_pem, key_pem) = tokio::task::spawn_blocking(move || {
        let key = crate::ca::generate_key(&algorithm)?;
        let pem = issuer.issue(&names, &key, not_before, not_after)?;
        Ok::<_, AwsError>((pem, key.serialize_pem()))
    })
    .await
    .map_err(|_| AwsError::internal("An internal error occurred."))??;
    let fresh = issued_record(
        svc,
        record.arn.clone(),
        &cert_pem,
        &key_pem,
        &ca.cert_pem,
        now,
    )?;
    update_record(svc, ctx, &record.arn, move |r| {
        r.cert_pem = fresh.cert_pem.clone();
        r.chain_pem = fresh.chain_pem.clone();
        r.key = fresh.key.clone();
        r.info = fresh.info.clone();
        r.issued_at = now;
        r.renewed_at = Some(now);
        Ok(())
    })
    .await?;
    Ok(serde_json::json!({}))
}

pub fn export_certificate(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::ExportCertificateRequest,
) -> Result<sh::ExportCertificateResponse, AwsError> {
    let passphrase = blob("passphrase", input.passphrase.as_deref(), 128)?;
    if passphrase.len() < 4 {
        return Err(validation(
            "1 validation error detected: Value at 'passphrase' failed to satisfy constraint: \
             Member must have length greater than or equal to 4",
        ));
    }
    let record = authorized_record(
        svc,
        ctx,
        "acm:ExportCertificate",
        input.certificate_arn.as_deref(),
    )?;
    Err(validation(format!(
        "Certificate ARN: {} is not a private certificate",
        record.arn
    )))
}

pub fn resend_validation_email(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::ResendValidationEmailRequest,
) -> Result<serde_json::Value, AwsError> {
    let domain = input.domain.clone().ok_or_else(|| null_member("domain"))?;
    let validation_domain = input
        .validation_domain
        .clone()
        .ok_or_else(|| null_member("validationDomain"))?;
    let record = authorized_record(
        svc,
        ctx,
        "acm:ResendValidationEmail",
        input.certificate_arn.as_deref(),
    )?;
    if !record.info.names.contains(&domain) || !valid_domain(&validation_domain) {
        return Err(AwsError::bad_request(
            "InvalidDomainValidationOptionsException",
            format!(
                "Domain {domain} is not a name of certificate {}.",
                record.arn
            ),
        ));
    }
    Err(AwsError::bad_request(
        "InvalidStateException",
        format!(
            "Certificate {} is in status {}: validation emails are sent only for a certificate \
             in PENDING_VALIDATION status.",
            record.arn,
            record.status(now())
        ),
    ))
}

pub async fn update_certificate_options(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::UpdateCertificateOptionsRequest,
) -> Result<serde_json::Value, AwsError> {
    let options = input
        .options
        .clone()
        .ok_or_else(|| null_member("options"))?;
    let pref = options.certificate_transparency_logging_preference.clone();
    if let Some(p) = &pref {
        if !["ENABLED", "DISABLED"].contains(&p.as_str()) {
            return Err(validation(format!(
                "1 validation error detected: Value '{p}' at \
                 'options.certificateTransparencyLoggingPreference' failed to satisfy \
                 constraint: Member must satisfy enum value set: [ENABLED, DISABLED]"
            )));
        }
    }
    let record = authorized_record(
        svc,
        ctx,
        "acm:UpdateCertificateOptions",
        input.certificate_arn.as_deref(),
    )?;
    if options.export.as_deref() == Some("ENABLED") {
        return Err(validation(
            "Berth cannot make certificates exportable: ExportCertificate would return the \
             private key encrypted with a passphrase, which Berth does not implement.",
        ));
    }
    if record.is_imported() && pref.is_some() {
        return Err(validation(format!(
            "Certificate {} is an imported certificate; certificate transparency logging \
             applies only to certificates ACM issues.",
            record.arn
        )));
    }
    if let Some(p) = pref {
        update_record(svc, ctx, &record.arn, move |r| {
            r.transparency = p.clone();
            Ok(())
        })
        .await?;
    }
    Ok(serde_json::json!({}))
}

// ---------- account configuration ----------

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AccountConfig {
    days_before_expiry: i32,
}

pub fn get_account_configuration(
    svc: &AcmService,
    ctx: &RequestContext,
    _input: serde_json::Value,
) -> Result<sh::GetAccountConfigurationResponse, AwsError> {
    ctx.authorize(&[Requirement::new("acm:GetAccountConfiguration", "*")])?;
    let key = config_key(&ctx.account_id, &ctx.region);
    let days = match svc.store.get(&key) {
        None => DEFAULT_DAYS_BEFORE_EXPIRY,
        Some(kv) => {
            serde_json::from_slice::<AccountConfig>(&kv.value)
                .map_err(|_| corrupt(&key))?
                .days_before_expiry
        }
    };
    Ok(sh::GetAccountConfigurationResponse {
        expiry_events: Some(sh::ExpiryEventsConfiguration {
            days_before_expiry: Some(days),
        }),
    })
}

pub async fn put_account_configuration(
    svc: &AcmService,
    ctx: &RequestContext,
    input: sh::PutAccountConfigurationRequest,
) -> Result<serde_json::Value, AwsError> {
    let token = input
        .idempotency_token
        .clone()
        .ok_or_else(|| null_member("idempotencyToken"))?;
    if token.is_empty()
        || token.len() > 32
        || !token.chars().all(|c| c.is_alphanumeric() || c == '_')
    {
        return Err(validation(format!(
            "1 validation error detected: Value '{token}' at 'idempotencyToken' failed to \
             satisfy constraint: Member must satisfy regular expression pattern: \\w+"
        )));
    }
    let days = input
        .expiry_events
        .as_ref()
        .and_then(|e| e.days_before_expiry);
    if let Some(d) = days {
        if !(1..=45).contains(&d) {
            return Err(validation(format!(
                "1 validation error detected: Value '{d}' at 'expiryEvents.daysBeforeExpiry' \
                 failed to satisfy constraint: Member must have value less than or equal to 45 \
                 and greater than or equal to 1"
            )));
        }
    }
    ctx.authorize(&[Requirement::new("acm:PutAccountConfiguration", "*")])?;
    if let Some(days) = days {
        let value = serde_json::to_vec(&AccountConfig {
            days_before_expiry: days,
        })
        .map_err(|_| AwsError::internal("An internal error occurred."))?;
        let op = Op::put(config_key(&ctx.account_id, &ctx.region), value);
        svc.store
            .mutate(Box::new(move |_| Ok(vec![op.clone()])))
            .await
            .map_err(store_error)?;
    }
    Ok(serde_json::json!({}))
}
