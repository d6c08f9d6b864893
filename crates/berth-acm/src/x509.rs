//! Reading certificates and private keys: what DescribeCertificate reports
//! about a certificate, and whether a private key belongs to it.

use rcgen::{KeyPair, PublicKeyData};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::public_key::PublicKey;

/// What a certificate says about itself, as ACM reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CertInfo {
    /// The subject's common name (else the first DNS name).
    pub domain_name: String,
    /// DNS names of the subjectAltName extension (the domain name first).
    pub names: Vec<String>,
    /// Colon-separated lowercase hex, as ACM writes it.
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    /// `RSA_2048`, `EC_prime256v1` …
    pub key_algorithm: String,
    /// `SHA256WITHRSA`, `SHA256WITHECDSA` …
    pub signature_algorithm: String,
    /// ACM's names: `DIGITAL_SIGNATURE`, `KEY_ENCIPHERMENT` …
    pub key_usages: Vec<String>,
    /// (ACM's name, OID): `TLS_WEB_SERVER_AUTHENTICATION` …
    pub extended_key_usages: Vec<(String, String)>,
    pub is_ca: bool,
}

/// Why a PEM input cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemProblem {
    #[error("no PEM block")]
    NoPem,
    #[error("more than one certificate")]
    SeveralCertificates,
    #[error("not a certificate")]
    NotCertificate,
    #[error("unsupported key")]
    UnsupportedKey,
}

/// The PEM blocks of `text`.
pub fn pem_blocks(text: &[u8]) -> Result<Vec<Pem>, PemProblem> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(text) {
        out.push(block.map_err(|_| PemProblem::NoPem)?);
    }
    if out.is_empty() {
        return Err(PemProblem::NoPem);
    }
    Ok(out)
}

/// The one certificate of `text` as DER.
pub fn single_certificate_der(text: &[u8]) -> Result<Vec<u8>, PemProblem> {
    let blocks = pem_blocks(text)?;
    if blocks.len() > 1 {
        return Err(PemProblem::SeveralCertificates);
    }
    let block = &blocks[0];
    if block.label != "CERTIFICATE" {
        return Err(PemProblem::NotCertificate);
    }
    block.parse_x509().map_err(|_| PemProblem::NotCertificate)?;
    Ok(block.contents.clone())
}

/// Every certificate of a chain, as DER, in order.
pub fn chain_ders(text: &[u8]) -> Result<Vec<Vec<u8>>, PemProblem> {
    let blocks = pem_blocks(text)?;
    let mut out = Vec::new();
    for block in blocks {
        if block.label != "CERTIFICATE" {
            return Err(PemProblem::NotCertificate);
        }
        block.parse_x509().map_err(|_| PemProblem::NotCertificate)?;
        out.push(block.contents);
    }
    Ok(out)
}

pub fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| cert)
}

/// `der` encoded as a PEM certificate.
pub fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn name_string(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut parts = Vec::new();
    for rdn in name.iter() {
        for atv in rdn.iter() {
            let key = match atv.attr_type().to_id_string().as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "1.2.840.113549.1.9.1" => "EMAILADDRESS",
                _ => continue,
            };
            if let Ok(value) = atv.as_str() {
                parts.push(format!("{key}={value}"));
            }
        }
    }
    parts.join(",")
}

fn first_attr(name: &x509_parser::x509::X509Name<'_>, oid: &str) -> Option<String> {
    name.iter()
        .flat_map(|rdn| rdn.iter())
        .find(|atv| atv.attr_type().to_id_string() == oid)
        .and_then(|atv| atv.as_str().ok().map(str::to_string))
}

/// The key algorithm in ACM's words, from a certificate's public key.
fn key_algorithm(cert: &X509Certificate<'_>) -> Option<String> {
    match cert.public_key().parsed().ok()? {
        PublicKey::RSA(rsa) => {
            let modulus: Vec<u8> = rsa
                .modulus
                .iter()
                .copied()
                .skip_while(|b| *b == 0)
                .collect();
            let bits =
                modulus.len() * 8 - modulus.first().map_or(0, |b| b.leading_zeros() as usize);
            let size = [1024, 2048, 3072, 4096]
                .into_iter()
                .find(|s| bits <= *s && bits > s - 8)?;
            Some(format!("RSA_{size}"))
        }
        PublicKey::EC(_) => {
            let curve = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())?;
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => Some("EC_prime256v1".into()),
                "1.3.132.0.34" => Some("EC_secp384r1".into()),
                "1.3.132.0.35" => Some("EC_secp521r1".into()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn signature_algorithm(cert: &X509Certificate<'_>) -> String {
    match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.11" => "SHA256WITHRSA",
        "1.2.840.113549.1.1.12" => "SHA384WITHRSA",
        "1.2.840.113549.1.1.13" => "SHA512WITHRSA",
        "1.2.840.113549.1.1.5" => "SHA1WITHRSA",
        "1.2.840.10045.4.3.2" => "SHA256WITHECDSA",
        "1.2.840.10045.4.3.3" => "SHA384WITHECDSA",
        "1.2.840.10045.4.3.4" => "SHA512WITHECDSA",
        "1.2.840.113549.1.1.10" => "SHA256WITHRSASSA_PSS",
        _ => "UNKNOWN",
    }
    .to_string()
}

/// What ACM reports about `cert`; `None` when its key algorithm is one ACM
/// does not take.
pub fn info(cert: &X509Certificate<'_>) -> Option<CertInfo> {
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    let cn = first_attr(cert.subject(), "2.5.4.3");
    let domain_name = cn.clone().or_else(|| names.first().cloned())?;
    if !names.contains(&domain_name) {
        names.insert(0, domain_name.clone());
    } else if names.first() != Some(&domain_name) {
        names.retain(|n| *n != domain_name);
        names.insert(0, domain_name.clone());
    }
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let issuer = first_attr(cert.issuer(), "2.5.4.10")
        .or_else(|| first_attr(cert.issuer(), "2.5.4.3"))
        .unwrap_or_else(|| name_string(cert.issuer()));
    let mut key_usages = Vec::new();
    if let Ok(Some(ku)) = cert.key_usage() {
        let ku = ku.value;
        for (set, name) in [
            (ku.digital_signature(), "DIGITAL_SIGNATURE"),
            (ku.non_repudiation(), "NON_REPUDIATION"),
            (ku.key_encipherment(), "KEY_ENCIPHERMENT"),
            (ku.data_encipherment(), "DATA_ENCIPHERMENT"),
            (ku.key_agreement(), "KEY_AGREEMENT"),
            (ku.key_cert_sign(), "CERTIFICATE_SIGNING"),
            (ku.crl_sign(), "CRL_SIGNING"),
            (ku.encipher_only(), "ENCIPHER_ONLY"),
            (ku.decipher_only(), "DECIPHER_ONLY"),
        ] {
            if set {
                key_usages.push(name.to_string());
            }
        }
    }
    let mut extended_key_usages = Vec::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let eku = eku.value;
        for (set, name, oid) in [
            (
                eku.server_auth,
                "TLS_WEB_SERVER_AUTHENTICATION",
                "1.3.6.1.5.5.7.3.1",
            ),
            (
                eku.client_auth,
                "TLS_WEB_CLIENT_AUTHENTICATION",
                "1.3.6.1.5.5.7.3.2",
            ),
            (eku.code_signing, "CODE_SIGNING", "1.3.6.1.5.5.7.3.3"),
            (
                eku.email_protection,
                "EMAIL_PROTECTION",
                "1.3.6.1.5.5.7.3.4",
            ),
            (eku.time_stamping, "TIME_STAMPING", "1.3.6.1.5.5.7.3.8"),
            (eku.ocsp_signing, "OCSP_SIGNING", "1.3.6.1.5.5.7.3.9"),
            (eku.any, "ANY", "2.5.29.37.0"),
        ] {
            if set {
                extended_key_usages.push((name.to_string(), oid.to_string()));
            }
        }
        for other in &eku.other {
            extended_key_usages.push(("CUSTOM".to_string(), other.to_id_string()));
        }
    }
    Some(CertInfo {
        domain_name,
        names,
        serial,
        subject: name_string(cert.subject()),
        issuer,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key_algorithm: key_algorithm(cert)?,
        signature_algorithm: signature_algorithm(cert),
        key_usages,
        extended_key_usages,
        is_ca: cert.is_ca(),
    })
}

/// The private key of a PEM text as a key pair, for PKCS #8 keys of any
/// algorithm and PKCS #1 RSA keys.
pub fn private_key(text: &[u8]) -> Result<KeyPair, PemProblem> {
    let blocks = pem_blocks(text)?;
    if blocks.len() != 1 {
        return Err(PemProblem::UnsupportedKey);
    }
    let block = &blocks[0];
    match block.label.as_str() {
        "PRIVATE KEY" => {
            KeyPair::try_from(block.contents.as_slice()).map_err(|_| PemProblem::UnsupportedKey)
        }
        "RSA PRIVATE KEY" => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::from_pkcs1_der(&block.contents)
                .map_err(|_| PemProblem::UnsupportedKey)?;
            let der = key.to_pkcs8_der().map_err(|_| PemProblem::UnsupportedKey)?;
            KeyPair::try_from(der.as_bytes()).map_err(|_| PemProblem::UnsupportedKey)
        }
        _ => Err(PemProblem::UnsupportedKey),
    }
}

/// Whether `key` is the private half of `cert`'s public key.
pub fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    cert.public_key().subject_public_key.data.as_ref() == key.der_bytes()
}

/// Whether `issuer` signed `cert`.
pub fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.verify_signature(Some(issuer.public_key())).is_ok()
}
