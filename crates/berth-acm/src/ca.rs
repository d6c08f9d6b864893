//! Berth's local certificate authority: one per installation (not per
//! account or Region), an ECDSA P-256 root named "Berth Local CA", created
//! the first time a certificate is requested (or its PEM is asked for) and
//! kept in the store at [`CA_KEY`] with its private key sealed, so every
//! server of an installation signs with the same root and it survives
//! restarts. RequestCertificate's certificates are signed by it at once.

use std::sync::Arc;

use berth_model::{AwsError, Sealer};
use berth_store::{Compare, Op, Store, StoreExt, Txn};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde::{Deserialize, Serialize};

/// Where the CA lives in the store.
pub const CA_KEY: &str = "acm/ca";

/// The CA's common name.
pub const CA_NAME: &str = "Berth Local CA";

/// How long the root is valid: 20 years.
const CA_VALIDITY_DAYS: i64 = 20 * 365;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CaRecord {
    cert_pem: String,
    /// The PKCS #8 PEM of the key, sealed (`berth_model::seal::seal_text`).
    key: String,
    created: i64,
}

/// The CA, opened.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(..)")
    }
}

fn internal(what: &str) -> AwsError {
    tracing::error!("Berth's CA: {what}");
    AwsError::internal("An internal error occurred.")
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and never starting with a zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    fn open(record: &CaRecord, sealer: Option<&dyn Sealer>) -> Result<Ca, AwsError> {
        let key_pem = berth_model::seal::open_text(sealer, &record.key)
            .map_err(|_| internal("its key cannot be opened (wrong master key?)"))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| internal("its key does not parse"))?;
        let issuer = Issuer::from_ca_cert_pem(&record.cert_pem, key)
            .map_err(|_| internal("its certificate does not parse"))?;
        Ok(Ca {
            cert_pem: record.cert_pem.clone(),
            issuer,
        })
    }

    fn generate(now: i64) -> Result<(CaRecord, String), AwsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|_| internal("generating its key failed"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_NAME);
        dn.push(DnType::OrganizationName, "Berth");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = time_of(now - 3600)?;
        params.not_after = time_of(now + CA_VALIDITY_DAYS * 86_400)?;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|_| internal("self-signing failed"))?;
        Ok((
            CaRecord {
                cert_pem: cert.pem(),
                key: String::new(),
                created: now,
            },
            key.serialize_pem(),
        ))
    }

    /// The CA of the installation, created in the store when there is
    /// none yet (two servers racing to create it agree on the first).
    pub async fn load_or_create(
        store: &Arc<dyn Store>,
        sealer: Option<&dyn Sealer>,
    ) -> Result<Ca, AwsError> {
        if let Some(kv) = store.get(CA_KEY) {
            let record: CaRecord =
                serde_json::from_slice(&kv.value).map_err(|_| internal("its record is corrupt"))?;
            return Ca::open(&record, sealer);
        }
        let (mut record, key_pem) = Ca::generate(berth_util::time::now_secs())?;
        record.key = berth_model::seal::seal_text(sealer, &key_pem)
            .map_err(|_| internal("sealing its key failed"))?;
        let value = serde_json::to_vec(&record).map_err(|_| internal("encoding failed"))?;
        let outcome = store
            .txn(Txn {
                compares: vec![Compare::ModRevision {
                    key: CA_KEY.to_string(),
                    revision: 0,
                }],
                ops: vec![Op::put(CA_KEY, value)],
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "store failure");
                AwsError::internal("The request could not be stored; retry it.")
            })?;
        if outcome.succeeded {
            tracing::info!("created Berth's local certificate authority");
            return Ca::open(&record, sealer);
        }
        let kv = store
            .get(CA_KEY)
            .ok_or_else(|| internal("its record vanished"))?;
        let record: CaRecord =
            serde_json::from_slice(&kv.value).map_err(|_| internal("its record is corrupt"))?;
        Ca::open(&record, sealer)
    }

    /// A server certificate for `names` (the first is the subject's common
    /// name), valid from `not_before` to `not_after`, for `key`.
    pub fn issue(
        &self,
        names: &[String],
        key: &KeyPair,
        not_before: i64,
        not_after: i64,
    ) -> Result<String, AwsError> {
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|_| AwsError::bad_request("ValidationException", "Invalid domain name."))?;
        let mut dn = DistinguishedName::new();
        if let Some(first) = names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = time_of(not_before)?;
        params.not_after = time_of(not_after)?;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|_| internal("signing a certificate failed"))?;
        Ok(cert.pem())
    }
}

fn time_of(secs: i64) -> Result<time::OffsetDateTime, AwsError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| internal("a date is out of range"))
}

/// A fresh key pair for a requested certificate, for ACM's key algorithm
/// name (`RSA_2048`, `EC_prime256v1`, `EC_secp384r1`). RSA keys come from
/// the `rsa` crate (ring cannot generate them) and sign through ring.
pub fn generate_key(algorithm: &str) -> Result<KeyPair, AwsError> {
    match algorithm {
        "EC_prime256v1" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|_| internal("generating a key failed")),
        "EC_secp384r1" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .map_err(|_| internal("generating a key failed")),
        _ => {
            use rsa::pkcs8::EncodePrivateKey;
            let mut rng = rand::rngs::OsRng;
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048)
                .map_err(|_| internal("generating an RSA key failed"))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|_| internal("encoding an RSA key failed"))?;
            KeyPair::try_from(der.as_bytes()).map_err(|_| internal("loading an RSA key failed"))
        }
    }
}
