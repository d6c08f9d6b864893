//! OpenID Connect identity providers (the IAM side: their records; STS's
//! AssumeRoleWithWebIdentity verifies tokens against them, see
//! `crate::federation`).
//!
//! As on AWS a provider URL begins with `https://`. Berth also accepts
//! `http://` when the host is this machine's loopback (`localhost`,
//! `127.0.0.0/8`, `[::1]`), port included, so a local identity provider
//! (a test's, a developer's) can serve its keys without TLS.

use berth_model::authz::Requirement;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView};
use berth_util::time::{format_iso8601, now_secs};

use super::tags::{oidc_not_found, Tagged};
use super::{parse_tags, tags_xml, IamService};
use crate::records::{oidc_provider_key, oidc_providers_prefix, OidcProviderRecord};
use crate::util::{
    already_exists, get_json, invalid_input, limit_exceeded, list_json, to_bytes, validation,
    Params, Xml,
};

const MAX_THUMBPRINTS: usize = 5;
const MAX_CLIENT_IDS: usize = 100;

/// `(scheme, url without scheme)` of a provider URL, checked.
pub(crate) fn split_provider_url(url: &str) -> Result<(&'static str, String), AwsError> {
    if url.is_empty() || url.len() > 255 {
        return Err(validation(format!(
            "1 validation error detected: Value '{url}' at 'url' failed to satisfy constraint: Member must have length less than or equal to 255"
        )));
    }
    let lower = url.to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        ("https", &url[8..])
    } else if lower.starts_with("http://") {
        ("http", &url[7..])
    } else {
        return Err(invalid_input(
            "Invalid URL: the URL of an OpenID Connect provider must begin with https://",
        ));
    };
    let rest = rest.trim_end_matches('/');
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(invalid_input(format!("Invalid URL: {url}")));
    }
    if scheme == "http" && !is_loopback(host_port) {
        return Err(invalid_input(
            "Invalid URL: the URL of an OpenID Connect provider must begin with https:// \
             (Berth accepts http:// only for a provider on this machine's loopback address)",
        ));
    }
    Ok((scheme, rest.to_string()))
}

/// Whether `host[:port]` names this machine's loopback.
fn is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn thumbprints(p: &Params<'_>) -> Result<Vec<String>, AwsError> {
    let list: Vec<String> =
        p.0.iter()
            .filter(|(k, _)| k.starts_with("ThumbprintList.member."))
            .map(|(_, v)| v.clone())
            .collect();
    if list.len() > MAX_THUMBPRINTS {
        return Err(limit_exceeded(format!(
            "Thumbprint list must contain fewer than {} entries.",
            MAX_THUMBPRINTS + 1
        )));
    }
    for t in &list {
        if t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(validation(format!(
                "1 validation error detected: Value '{t}' at 'thumbprintList' failed to satisfy constraint: Member must have length greater than or equal to 40"
            )));
        }
    }
    Ok(list)
}

fn check_client_id(id: &str) -> Result<(), AwsError> {
    if id.is_empty() || id.len() > 255 {
        return Err(validation(format!(
            "1 validation error detected: Value '{id}' at 'clientID' failed to satisfy constraint: Member must have length less than or equal to 255"
        )));
    }
    Ok(())
}

impl IamService {
    pub(super) async fn create_oidc_provider(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let url = p.required("Url", "url")?;
        let (scheme, bare) = split_provider_url(url)?;
        let mut client_ids: Vec<String> = Vec::new();
        for (_, id) in
            p.0.iter()
                .filter(|(k, _)| k.starts_with("ClientIDList.member."))
        {
            check_client_id(id)?;
            if !client_ids.contains(id) {
                client_ids.push(id.clone());
            }
        }
        if client_ids.len() > MAX_CLIENT_IDS {
            return Err(limit_exceeded(format!(
                "Cannot exceed quota for ClientIdsPerOpenIdConnectProvider: {MAX_CLIENT_IDS}"
            )));
        }
        let thumbprints = thumbprints(p)?;
        let tags = parse_tags(p)?;
        let record = OidcProviderRecord {
            url: bare,
            scheme: scheme.to_string(),
            client_ids,
            thumbprints,
            created: now_secs(),
            tags,
        };
        let arn = record.arn(&ctx.account_id);
        ctx.authorize(&[
            Requirement::new("iam:CreateOpenIDConnectProvider", arn.clone())
                .request_tags(record.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ])?;
        let key = oidc_provider_key(&ctx.account_id, &record.url);
        let value = to_bytes(&record)?;
        let taken = already_exists(format!("Provider with url {url} already exists."));
        self.iam
            .update(move |view| {
                if view.get(&key).is_some() {
                    return Err(taken.clone());
                }
                Ok((vec![Op::put(key.clone(), value.clone())], ()))
            })
            .await?;
        let mut x = Xml::new();
        x.text("OpenIDConnectProviderArn", &arn);
        tags_xml(&mut x, &record.tags);
        Ok(x.finish())
    }

    fn found_provider(entity: &super::tags::Entity) -> Result<OidcProviderRecord, AwsError> {
        entity
            .value
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| oidc_not_found(&entity.given))
    }

    pub(super) fn get_oidc_provider(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let entity = self.authorize_entity(
            ctx,
            Tagged::OidcProvider,
            p,
            "iam:GetOpenIDConnectProvider",
            |r| r,
        )?;
        let record = Self::found_provider(&entity)?;
        let mut x = Xml::new();
        x.text("Url", &record.url).open("ClientIDList");
        for id in &record.client_ids {
            x.text("member", id);
        }
        x.close("ClientIDList").open("ThumbprintList");
        for t in &record.thumbprints {
            x.text("member", t);
        }
        x.close("ThumbprintList")
            .text("CreateDate", &format_iso8601(record.created));
        tags_xml(&mut x, &record.tags);
        Ok(x.finish())
    }

    pub(super) fn list_oidc_providers(
        &self,
        ctx: &RequestContext,
        _p: &Params<'_>,
    ) -> Result<String, AwsError> {
        ctx.authorize(&[Requirement::new("iam:ListOpenIDConnectProviders", "*")])?;
        let view: &dyn ReadView = self.iam.store();
        let mut records =
            list_json::<OidcProviderRecord>(view, &oidc_providers_prefix(&ctx.account_id))?;
        records.sort_by(|a, b| a.url.cmp(&b.url));
        let mut x = Xml::new();
        x.open("OpenIDConnectProviderList");
        for r in &records {
            x.open("member")
                .text("Arn", &r.arn(&ctx.account_id))
                .close("member");
        }
        x.close("OpenIDConnectProviderList");
        Ok(x.finish())
    }

    pub(super) async fn delete_oidc_provider(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let entity = self.authorize_entity(
            ctx,
            Tagged::OidcProvider,
            p,
            "iam:DeleteOpenIDConnectProvider",
            |r| r,
        )?;
        Self::found_provider(&entity)?;
        self.edit_provider(ctx, entity, |_| Ok(None)).await
    }

    /// Rewrites (or, when `f` answers `None`, deletes) the provider found.
    async fn edit_provider(
        &self,
        ctx: &RequestContext,
        entity: super::tags::Entity,
        f: impl Fn(OidcProviderRecord) -> Result<Option<OidcProviderRecord>, AwsError> + Send + 'static,
    ) -> Result<String, AwsError> {
        let account = ctx.account_id.clone();
        self.iam
            .update(move |view| {
                let record: OidcProviderRecord = get_json(view, &entity.key)?
                    .filter(|r: &OidcProviderRecord| r.arn(&account) == entity.arn)
                    .ok_or_else(|| oidc_not_found(&entity.given))?;
                let op = match f(record)? {
                    Some(updated) => Op::put(entity.key.clone(), to_bytes(&updated)?),
                    None => Op::delete(entity.key.clone()),
                };
                Ok((vec![op], ()))
            })
            .await?;
        Ok(String::new())
    }

    pub(super) async fn update_oidc_thumbprints(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let list = thumbprints(p)?;
        if list.is_empty() {
            return Err(validation(
                "1 validation error detected: Value null at 'thumbprintList' failed to satisfy constraint: Member must not be null",
            ));
        }
        let entity = self.authorize_entity(
            ctx,
            Tagged::OidcProvider,
            p,
            "iam:UpdateOpenIDConnectProviderThumbprint",
            |r| r,
        )?;
        Self::found_provider(&entity)?;
        self.edit_provider(ctx, entity, move |mut r| {
            r.thumbprints = list.clone();
            Ok(Some(r))
        })
        .await
    }

    pub(super) async fn edit_oidc_client(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        add: bool,
    ) -> Result<String, AwsError> {
        let id = p.required("ClientID", "clientID")?.to_string();
        check_client_id(&id)?;
        let action = if add {
            "iam:AddClientIDToOpenIDConnectProvider"
        } else {
            "iam:RemoveClientIDFromOpenIDConnectProvider"
        };
        let entity = self.authorize_entity(ctx, Tagged::OidcProvider, p, action, |r| r)?;
        Self::found_provider(&entity)?;
        self.edit_provider(ctx, entity, move |mut r| {
            let present = r.client_ids.contains(&id);
            if add && !present {
                if r.client_ids.len() >= MAX_CLIENT_IDS {
                    return Err(limit_exceeded(format!(
                        "Cannot exceed quota for ClientIdsPerOpenIdConnectProvider: {MAX_CLIENT_IDS}"
                    )));
                }
                r.client_ids.push(id.clone());
            } else if !add {
                r.client_ids.retain(|c| *c != id);
            }
            Ok(Some(r))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls() {
        assert_eq!(
            split_provider_url("https://token.example.com/").unwrap(),
            ("https", "token.example.com".to_string())
        );
        assert_eq!(
            split_provider_url("http://127.0.0.1:8123/realm").unwrap(),
            ("http", "127.0.0.1:8123/realm".to_string())
        );
        assert!(split_provider_url("http://localhost:9000").is_ok());
        assert!(split_provider_url("http://[::1]:9000").is_ok());
        for bad in [
            "http://example.com",
            "ftp://x",
            "https://",
            "https://a?b=c",
            "x",
        ] {
            assert_eq!(
                split_provider_url(bad).unwrap_err().code,
                "InvalidInput",
                "{bad}"
            );
        }
    }
}
