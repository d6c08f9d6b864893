//! TLS: listener certificates chosen by SNI, and the client side used towards HTTPS/TLS targets
//! (which, as with ELB, does not verify the target's certificate).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_cert::der::Decode;

use crate::config::CertificatePem;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct Entry {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// First certificate = default; the others answer the SNI names their SANs cover.
#[derive(Debug)]
struct SniResolver {
    entries: Vec<Entry>,
}

fn name_matches(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(rest) => match host.split_once('.') {
            Some((first, tail)) => !first.is_empty() && tail.eq_ignore_ascii_case(rest),
            None => false,
        },
        None => false,
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            // Exact names first, then wildcards, as ELB prefers the most specific certificate.
            for exact in [true, false] {
                for e in &self.entries {
                    if e.names
                        .iter()
                        .any(|n| n.starts_with("*.") != exact && name_matches(n, sni))
                    {
                        return Some(e.key.clone());
                    }
                }
            }
        }
        self.entries.first().map(|e| e.key.clone())
    }
}

fn san_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(parsed) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return names;
    };
    if let Ok(Some((_, san))) = parsed
        .tbs_certificate
        .get::<x509_cert::ext::pkix::SubjectAltName>()
    {
        for gn in san.0 {
            if let x509_cert::ext::pkix::name::GeneralName::DnsName(d) = gn {
                names.push(d.as_str().to_string());
            }
        }
    }
    if names.is_empty() {
        for rdn in parsed.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == const_oid_cn() {
                    if let Ok(s) = atv
                        .value
                        .decode_as::<x509_cert::der::asn1::Utf8StringRef<'_>>()
                    {
                        names.push(s.as_str().to_string());
                    } else if let Ok(s) = atv
                        .value
                        .decode_as::<x509_cert::der::asn1::PrintableStringRef<'_>>()
                    {
                        names.push(s.as_str().to_string());
                    }
                }
            }
        }
    }
    names
}

fn const_oid_cn() -> x509_cert::der::oid::ObjectIdentifier {
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3")
}

pub fn certified_key(pem: &CertificatePem) -> Result<(Vec<String>, Arc<CertifiedKey>), String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("certificate chain: no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("private key: {e}"))?;
    let names = san_names(&chain[0]);
    Ok((names, Arc::new(CertifiedKey::new(chain, signing))))
}

/// A server config for a listener: SNI over its certificates, ALPN h2 when asked.
pub fn server_config(
    certs: &[CertificatePem],
    alpn_http2: bool,
    http: bool,
) -> Result<Arc<rustls::ServerConfig>, String> {
    if certs.is_empty() {
        return Err("a secure listener needs a certificate".into());
    }
    let mut entries = Vec::with_capacity(certs.len());
    for c in certs {
        let (names, key) = certified_key(c)?;
        entries.push(Entry { names, key });
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { entries }));
    if http {
        if alpn_http2 {
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        } else {
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
    }
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Towards targets: any certificate (as ELB), ALPN h2 when the group speaks HTTP/2.
pub fn client_config(alpn: &[&[u8]]) -> Option<Arc<rustls::ClientConfig>> {
    let p = provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Some(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_names() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("Example.com", "example.COM"));
    }
}
