//! Server certificates: an X.509 certificate (PEM), its chain and private
//! key, stored for load balancers. The certificate and chain must parse as
//! PEM X.509 certificates; the private key must be a PEM RSA key (PKCS#1 or
//! PKCS#8) whose public half is the certificate's. The key is stored sealed
//! and never answered.

use berth_model::authz::Requirement;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView};
use berth_util::ids::unique_id;
use berth_util::time::{format_iso8601, now_secs};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use x509_cert::der::{DecodePem, Encode};
use x509_cert::Certificate;

use super::tags::{certificate_not_found, Tagged};
use super::{parse_tags, tags_xml, IamService};
use crate::records::{server_certificate_key, server_certificates_prefix, ServerCertificateRecord};
use crate::util::{
    already_exists, check_name, check_path, check_path_prefix, get_json, list_json, paginate,
    to_bytes, validation, Params, Xml,
};

fn malformed(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("MalformedCertificate", message)
}

fn length(value: &str, member: &str, max: usize) -> Result<(), AwsError> {
    if value.is_empty() || value.len() > max {
        return Err(validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member must have length less than or equal to {max}"
        )));
    }
    Ok(())
}

/// The certificate's notAfter (seconds since the epoch), once the body,
/// chain and key are found well formed and matching.
pub(crate) fn validate(body: &str, chain: Option<&str>, key: &str) -> Result<i64, AwsError> {
    let cert = Certificate::from_pem(body.trim().as_bytes()).map_err(|_| {
        malformed("Unable to parse certificate. Please ensure the certificate is in PEM format.")
    })?;
    if let Some(chain) = chain {
        let certs = Certificate::load_pem_chain(chain.trim().as_bytes()).map_err(|_| {
            malformed(
                "Unable to parse certificate chain. Please ensure the chain is in PEM format.",
            )
        })?;
        if certs.is_empty() {
            return Err(malformed(
                "Unable to parse certificate chain. Please ensure the chain is in PEM format.",
            ));
        }
    }
    let key = key.trim();
    let private = rsa::RsaPrivateKey::from_pkcs1_pem(key)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(key))
        .map_err(|_| {
            malformed(
                "Unable to parse the private key. Berth accepts PEM RSA keys (PKCS#1 or PKCS#8).",
            )
        })?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| malformed("Unable to read the certificate's public key."))?;
    let public = rsa::RsaPublicKey::from_public_key_der(&spki).map_err(|_| {
        malformed("The certificate's public key is not an RSA key, which Berth requires.")
    })?;
    if public != private.to_public_key() {
        return Err(AwsError::bad_request(
            "KeyPairMismatch",
            "Unable to validate certificate. Please ensure the certificate and private key match.",
        ));
    }
    let not_after = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    Ok(i64::try_from(not_after).unwrap_or(i64::MAX))
}

fn metadata_xml(x: &mut Xml, tag: &str, c: &ServerCertificateRecord, account: &str) {
    x.open(tag)
        .text("Path", &c.path)
        .text("ServerCertificateName", &c.name)
        .text("ServerCertificateId", &c.id)
        .text("Arn", &c.arn(account))
        .text("UploadDate", &format_iso8601(c.created))
        .text("Expiration", &format_iso8601(c.expiration))
        .close(tag);
}

fn cert_name<'a>(p: &Params<'a>) -> Result<&'a str, AwsError> {
    let name = p.required("ServerCertificateName", "serverCertificateName")?;
    check_name(name, "serverCertificateName", 1, 128)?;
    Ok(name)
}

impl IamService {
    pub(super) async fn upload_server_certificate(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = cert_name(p)?;
        let path = p.get("Path").unwrap_or("/");
        check_path(path)?;
        let body = p.required("CertificateBody", "certificateBody")?;
        length(body, "certificateBody", 16_384)?;
        let key = p.required("PrivateKey", "privateKey")?;
        length(key, "privateKey", 16_384)?;
        let chain = p.get("CertificateChain");
        if let Some(chain) = chain {
            length(chain, "certificateChain", 2_097_152)?;
        }
        let tags = parse_tags(p)?;
        let expiration = validate(body, chain, key)?;
        ctx.authorize(&[Requirement::new(
            "iam:UploadServerCertificate",
            format!(
                "arn:aws:iam::{}:server-certificate{path}{name}",
                ctx.account_id
            ),
        )
        .request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))])?;
        let record = ServerCertificateRecord {
            name: name.to_string(),
            path: path.to_string(),
            id: unique_id("ASCA"),
            created: now_secs(),
            expiration,
            body: body.to_string(),
            chain: chain.map(str::to_string),
            private_key: self.iam.seal_secret(key)?,
            tags,
        };
        let store_key = server_certificate_key(&ctx.account_id, name);
        let value = to_bytes(&record)?;
        let taken = already_exists(format!(
            "The Server Certificate with name {name} already exists."
        ));
        self.iam
            .update(move |view| {
                if view.get(&store_key).is_some() {
                    return Err(taken.clone());
                }
                Ok((vec![Op::put(store_key.clone(), value.clone())], ()))
            })
            .await?;
        let mut x = Xml::new();
        metadata_xml(
            &mut x,
            "ServerCertificateMetadata",
            &record,
            &ctx.account_id,
        );
        tags_xml(&mut x, &record.tags);
        Ok(x.finish())
    }

    fn found_certificate(
        entity: &super::tags::Entity,
    ) -> Result<ServerCertificateRecord, AwsError> {
        entity
            .value
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| certificate_not_found(&entity.given))
    }

    pub(super) fn get_server_certificate(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        cert_name(p)?;
        let entity = self.authorize_entity(
            ctx,
            Tagged::ServerCertificate,
            p,
            "iam:GetServerCertificate",
            |r| r,
        )?;
        let c = Self::found_certificate(&entity)?;
        let mut x = Xml::new();
        x.open("ServerCertificate");
        metadata_xml(&mut x, "ServerCertificateMetadata", &c, &ctx.account_id);
        x.text("CertificateBody", &c.body)
            .opt("CertificateChain", c.chain.as_deref());
        tags_xml(&mut x, &c.tags);
        x.close("ServerCertificate");
        Ok(x.finish())
    }

    pub(super) fn list_server_certificates(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let prefix = p.get("PathPrefix").unwrap_or("/");
        check_path_prefix(prefix)?;
        let max = p.max_items()?;
        ctx.authorize(&[Requirement::new("iam:ListServerCertificates", "*")])?;
        let view: &dyn ReadView = self.iam.store();
        let items: Vec<(String, ServerCertificateRecord)> = list_json::<ServerCertificateRecord>(
            view,
            &server_certificates_prefix(&ctx.account_id),
        )?
        .into_iter()
        .filter(|c| c.path.starts_with(prefix))
        .map(|c| (c.name.to_ascii_lowercase(), c))
        .collect();
        let (page, next) = paginate(items, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("ServerCertificateMetadataList");
        for c in &page {
            metadata_xml(&mut x, "member", c, &ctx.account_id);
        }
        x.close("ServerCertificateMetadataList")
            .page(next.as_deref());
        Ok(x.finish())
    }

    pub(super) async fn delete_server_certificate(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        cert_name(p)?;
        let entity = self.authorize_entity(
            ctx,
            Tagged::ServerCertificate,
            p,
            "iam:DeleteServerCertificate",
            |r| r,
        )?;
        let c = Self::found_certificate(&entity)?;
        let key = entity.key.clone();
        self.iam
            .update(move |view| {
                match get_json::<ServerCertificateRecord>(view, &key)? {
                    Some(current) if current.id == c.id => {}
                    _ => return Err(certificate_not_found(&c.name)),
                }
                Ok((vec![Op::delete(key.clone())], ()))
            })
            .await?;
        Ok(String::new())
    }

    pub(super) async fn update_server_certificate(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        cert_name(p)?;
        let new_name = p.get("NewServerCertificateName");
        if let Some(n) = new_name {
            check_name(n, "newServerCertificateName", 1, 128)?;
        }
        let new_path = p.get("NewPath");
        if let Some(path) = new_path {
            check_path(path)?;
        }
        let entity = self.authorize_entity(
            ctx,
            Tagged::ServerCertificate,
            p,
            "iam:UpdateServerCertificate",
            |r| r,
        )?;
        let c = Self::found_certificate(&entity)?;
        let target = format!(
            "arn:aws:iam::{}:server-certificate{}{}",
            ctx.account_id,
            new_path.unwrap_or(&c.path),
            new_name.unwrap_or(&c.name)
        );
        if target != entity.arn {
            ctx.authorize(&[Requirement::new("iam:UpdateServerCertificate", target)])?;
        }
        let account = ctx.account_id.clone();
        let key = entity.key.clone();
        let new_name = new_name.map(str::to_string);
        let new_path = new_path.map(str::to_string);
        self.iam
            .update(move |view| {
                let mut current: ServerCertificateRecord = get_json(view, &key)?
                    .filter(|r: &ServerCertificateRecord| r.id == c.id)
                    .ok_or_else(|| certificate_not_found(&c.name))?;
                if let Some(path) = &new_path {
                    current.path = path.clone();
                }
                let mut ops = Vec::new();
                let mut target_key = key.clone();
                if let Some(n) = &new_name {
                    target_key = server_certificate_key(&account, n);
                    if target_key != key {
                        if view.get(&target_key).is_some() {
                            return Err(already_exists(format!(
                                "The Server Certificate with name {n} already exists."
                            )));
                        }
                        ops.push(Op::delete(key.clone()));
                    }
                    current.name = n.clone();
                }
                ops.push(Op::put(target_key, to_bytes(&current)?));
                Ok((ops, ()))
            })
            .await?;
        Ok(String::new())
    }
}
