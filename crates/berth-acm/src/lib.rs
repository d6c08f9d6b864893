//! An AWS Certificate Manager subset (`acm`, JSON 1.1, target prefix
//! `CertificateManager`) and Berth's local certificate authority ([`ca`]).
//!
//! Certificates are imported (PEM certificate, private key and chain,
//! checked: the key belongs to the certificate, it has not expired, the
//! chain signs it) or requested: RequestCertificate issues at once, signed
//! by Berth's CA, with ACM's 395-day validity, so a requested certificate
//! is `ISSUED` the moment it exists. Private keys are stored sealed with the
//! server's master key and no API returns them: only the load balancers'
//! data plane reads them, through [`AcmService::certificate_pem`].
//!
//! Store layout: `acm/<account>/<region>/certificates/<id>` holds one
//! [`CertRecord`]; `acm/<account>/<region>/account-configuration` the
//! expiry-events setting; `acm/ca` the installation's CA.

pub mod ca;
mod ops;
pub mod x509;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use berth_model::shapes::acm as shapes;
use berth_model::{json_op, AwsError, JsonService, RequestContext, Sealer};
use berth_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use ca::{Ca, CA_KEY, CA_NAME};

/// The ACM operations Berth does not implement, and why.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    (
        "CreateAcmeDomainValidation",
        "ACM's ACME endpoints issue public certificates to ACME clients over the Internet; \
         Berth's CA issues certificates through RequestCertificate only.",
    ),
    (
        "CreateAcmeEndpoint",
        "ACM's ACME endpoints issue public certificates to ACME clients over the Internet; \
         Berth's CA issues certificates through RequestCertificate only.",
    ),
    (
        "CreateAcmeExternalAccountBinding",
        "ACME external account bindings belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "DeleteAcmeDomainValidation",
        "ACME domain validations belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "DeleteAcmeEndpoint",
        "ACM's ACME endpoints are not implemented in Berth (RequestCertificate issues at once).",
    ),
    (
        "DeleteAcmeExternalAccountBinding",
        "ACME external account bindings belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "DescribeAcmeAccount",
        "ACME accounts belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "DescribeAcmeDomainValidation",
        "ACME domain validations belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "DescribeAcmeEndpoint",
        "ACM's ACME endpoints are not implemented in Berth (RequestCertificate issues at once).",
    ),
    (
        "DescribeAcmeExternalAccountBinding",
        "ACME external account bindings belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "GetAcmeExternalAccountBindingCredentials",
        "ACME external account bindings belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "ListAcmeAccounts",
        "ACME accounts belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "ListAcmeDomainValidations",
        "ACME domain validations belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "ListAcmeEndpoints",
        "ACM's ACME endpoints are not implemented in Berth (RequestCertificate issues at once).",
    ),
    (
        "ListAcmeExternalAccountBindings",
        "ACME external account bindings belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "RevokeAcmeAccount",
        "ACME accounts belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "RevokeAcmeExternalAccountBinding",
        "ACME external account bindings belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "UpdateAcmeDomainValidation",
        "ACME domain validations belong to ACM's ACME endpoints, which Berth does not have.",
    ),
    (
        "UpdateAcmeEndpoint",
        "ACM's ACME endpoints are not implemented in Berth (RequestCertificate issues at once).",
    ),
    (
        "ListCertificateDomainValidations",
        "Berth's certificates are validated the moment they are requested, so there is no \
         per-domain validation (or email-to-DNS migration) to report; DescribeCertificate's \
         DomainValidationOptions show each name as SUCCESS.",
    ),
    (
        "RevokeCertificate",
        "Only exported public certificates can be revoked, and Berth does not export \
         certificates (its CA publishes no revocation list).",
    ),
    (
        "SearchCertificates",
        "Berth implements ListCertificates (statuses, key types, paging); the X.509 attribute \
         filter language of SearchCertificates is not implemented.",
    ),
    (
        "TagResource",
        "TagResource tags ACM's ACME resources, which Berth does not have; certificates are \
         tagged with AddTagsToCertificate.",
    ),
    (
        "UntagResource",
        "UntagResource untags ACM's ACME resources, which Berth does not have; certificates are \
         untagged with RemoveTagsFromCertificate.",
    ),
    (
        "ListTagsForResource",
        "ListTagsForResource lists tags of ACM's ACME resources, which Berth does not have; a \
         certificate's tags come from ListTagsForCertificate.",
    ),
];

/// A certificate as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertRecord {
    pub arn: String,
    /// `IMPORTED` or `AMAZON_ISSUED`.
    pub cert_type: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificates that sign it, PEM (the CA's for issued ones).
    #[serde(default)]
    pub chain_pem: Option<String>,
    /// The private key's PEM, sealed with the master key.
    pub key: String,
    pub info: x509::CertInfo,
    /// RequestCertificate's validation method (`DNS`, `EMAIL`, `HTTP`).
    #[serde(default)]
    pub validation_method: Option<String>,
    /// When it was requested (issued certificates) or first imported.
    pub created_at: f64,
    /// When it was issued or last imported.
    pub issued_at: f64,
    #[serde(default)]
    pub in_use_by: Vec<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// `ENABLED` or `DISABLED`.
    pub transparency: String,
    #[serde(default)]
    pub idempotency_token: Option<String>,
    /// When RenewCertificate last re-issued it.
    #[serde(default)]
    pub renewed_at: Option<f64>,
}

impl CertRecord {
    pub fn is_imported(&self) -> bool {
        self.cert_type == "IMPORTED"
    }

    /// `ISSUED`, or `EXPIRED` once its validity has passed.
    pub fn status(&self, now: f64) -> &'static str {
        if (self.info.not_after as f64) < now {
            "EXPIRED"
        } else {
            "ISSUED"
        }
    }

    pub fn renewal_eligibility(&self) -> &'static str {
        if !self.is_imported() && !self.in_use_by.is_empty() {
            "ELIGIBLE"
        } else {
            "INELIGIBLE"
        }
    }
}

/// What the load balancers' data plane needs to serve a certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateMaterial {
    /// The certificate followed by its chain (leaf first), PEM.
    pub chain_pem: String,
    /// The private key, PEM (unsealed: keep it in memory only).
    pub key_pem: String,
    /// The DNS names it covers (domain name first), for SNI selection.
    pub names: Vec<String>,
}

impl std::fmt::Debug for CertificateMaterial {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateMaterial")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// The resources (load balancer ARNs) that use a certificate, read from the
/// store view DeleteCertificate's mutation runs against: `(view, account,
/// region, certificate ARN)`. The server gives ELB's; without one, only the
/// recorded `InUseBy` counts.
pub type CertificateUsers =
    Arc<dyn Fn(&dyn berth_store::ReadView, &str, &str, &str) -> Vec<String> + Send + Sync>;

/// The ACM service.
pub struct AcmService {
    store: Arc<dyn Store>,
    sealer: Option<Arc<dyn Sealer>>,
    /// The CA, opened once.
    ca: Mutex<Option<Arc<Ca>>>,
    users: Option<CertificateUsers>,
}

impl AcmService {
    /// `sealer` seals private keys (the server's master key); without one
    /// (tests) they are stored as they are.
    pub fn new(store: Arc<dyn Store>, sealer: Option<Arc<dyn Sealer>>) -> Self {
        AcmService {
            store,
            sealer,
            ca: Mutex::new(None),
            users: None,
        }
    }

    /// Who uses a certificate, asked when it is deleted (in the same store
    /// mutation), besides the recorded `InUseBy`.
    pub fn with_certificate_users(mut self, users: CertificateUsers) -> Self {
        self.users = Some(users);
        self
    }

    fn sealer(&self) -> Option<&dyn Sealer> {
        self.sealer.as_deref()
    }

    /// The installation's CA, created on first use.
    pub async fn ca(&self) -> Result<Arc<Ca>, AwsError> {
        let mut slot = self.ca.lock().await;
        if let Some(ca) = slot.as_ref() {
            return Ok(ca.clone());
        }
        let ca = Arc::new(Ca::load_or_create(&self.store, self.sealer()).await?);
        *slot = Some(ca.clone());
        Ok(ca)
    }

    /// The PEM of Berth's CA certificate (created on first use), for
    /// clients to trust.
    pub async fn ca_certificate_pem(&self) -> Result<String, AwsError> {
        Ok(self.ca().await?.cert_pem.clone())
    }

    /// For the load balancers' data plane: the certificate `arn` of the
    /// account and Region with its chain and unsealed private key; `None`
    /// when there is no such certificate.
    pub fn certificate_pem(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<Option<CertificateMaterial>, AwsError> {
        let Some(record) = ops::read_record(self.store.as_ref(), account, region, arn)? else {
            return Ok(None);
        };
        let key_pem = berth_model::seal::open_text(self.sealer(), &record.key).map_err(|e| {
            tracing::error!(arn, error = %e, "a certificate's private key cannot be opened");
            AwsError::internal("An internal error occurred.")
        })?;
        let mut chain_pem = record.cert_pem.clone();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        if let Some(chain) = &record.chain_pem {
            chain_pem.push_str(chain);
        }
        Ok(Some(CertificateMaterial {
            chain_pem,
            key_pem,
            names: record.info.names.clone(),
        }))
    }

    /// For ELB's listeners: Ok when `arn` names a certificate of the account
    /// and Region that is `ISSUED`; else ELB's `CertificateNotFound`.
    pub fn check_issued(&self, account: &str, region: &str, arn: &str) -> Result<(), AwsError> {
        let not_found = || {
            AwsError::bad_request(
                "CertificateNotFound",
                format!("Certificate '{arn}' not found"),
            )
        };
        let record = ops::read_record(self.store.as_ref(), account, region, arn)
            .ok()
            .flatten()
            .ok_or_else(not_found)?;
        if record.status(berth_util::time::now_epoch()) != "ISSUED" {
            return Err(AwsError::bad_request(
                "CertificateNotFound",
                format!("Certificate '{arn}' is not in ISSUED status"),
            ));
        }
        Ok(())
    }

    /// For ELB's glue: the ARNs of the load balancers that use certificate
    /// `arn` (replaces the list; DescribeCertificate shows it as `InUseBy`
    /// and DeleteCertificate is refused while it is not empty). A missing
    /// certificate is not an error (it may have been deleted meanwhile).
    pub async fn set_in_use_by(
        &self,
        account: &str,
        region: &str,
        arn: &str,
        users: Vec<String>,
    ) -> Result<(), AwsError> {
        ops::set_in_use_by(&self.store, account, region, arn, users).await
    }
}

#[async_trait::async_trait]
impl JsonService for AcmService {
    fn target_prefix(&self) -> &'static str {
        shapes::TARGET_PREFIX
    }

    fn signing_name(&self) -> &'static str {
        shapes::SIGNING_NAME
    }

    fn max_body(&self, operation: &str) -> usize {
        // A certificate chain may be 2 MiB, base64-encoded.
        if operation == "ImportCertificate" {
            3 * 1024 * 1024
        } else {
            berth_model::service::DEFAULT_MAX_BODY
        }
    }

    async fn handle(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        let s = self;
        match operation {
            "ImportCertificate" => json_op!(body, |i| ops::import_certificate(s, ctx, i).await),
            "RequestCertificate" => json_op!(body, |i| ops::request_certificate(s, ctx, i).await),
            "DescribeCertificate" => {
                json_op!(body, |i| ops::describe_certificate(s, ctx, i))
            }
            "GetCertificate" => json_op!(body, |i| ops::get_certificate(s, ctx, i)),
            "ListCertificates" => json_op!(body, |i| ops::list_certificates(s, ctx, i)),
            "DeleteCertificate" => json_op!(body, |i| ops::delete_certificate(s, ctx, i).await),
            "AddTagsToCertificate" => {
                json_op!(body, |i| ops::add_tags(s, ctx, i).await)
            }
            "RemoveTagsFromCertificate" => {
                json_op!(body, |i| ops::remove_tags(s, ctx, i).await)
            }
            "ListTagsForCertificate" => json_op!(body, |i| ops::list_tags(s, ctx, i)),
            "GetAccountConfiguration" => {
                json_op!(body, |i| ops::get_account_configuration(s, ctx, i))
            }
            "PutAccountConfiguration" => {
                json_op!(body, |i| ops::put_account_configuration(s, ctx, i).await)
            }
            "ExportCertificate" => json_op!(body, |i| ops::export_certificate(s, ctx, i)),
            "RenewCertificate" => json_op!(body, |i| ops::renew_certificate(s, ctx, i).await),
            "ResendValidationEmail" => {
                json_op!(body, |i| ops::resend_validation_email(s, ctx, i))
            }
            "UpdateCertificateOptions" => {
                json_op!(body, |i| ops::update_certificate_options(s, ctx, i).await)
            }
            other => {
                if let Some((_, reason)) = NOT_IMPLEMENTED.iter().find(|(op, _)| *op == other) {
                    ctx.no_authorization_needed();
                    return Err(AwsError::bad_request(
                        "ValidationException",
                        format!("{other} is not available in Berth: {reason}"),
                    ));
                }
                Err(AwsError::unknown_operation(format!(
                    "Operation {other} is not supported."
                )))
            }
        }
    }
}
