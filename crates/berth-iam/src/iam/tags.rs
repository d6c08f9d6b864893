//! Tags on users, roles, customer managed policies, instance profiles,
//! OpenID Connect providers and server certificates (Tag*, Untag*,
//! List*Tags), and the lookup every entity without policies shares: find
//! the record a parameter names and authorize on its canonical ARN with its
//! tags as `aws:ResourceTag/*`.

use berth_model::authz::Requirement;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView};
use serde_json::Value;

use super::{check_policy_arn, parse_tags, policy_not_found, tags_xml, IamService, MAX_TAGS};
use crate::records::{
    instance_profile_key, oidc_provider_key, policy_key, role_key, server_certificate_key, user_key,
};
use crate::util::{
    check_name, get_json, invalid_input, limit_exceeded, no_such_entity, paginate, to_bytes,
    validation, Params, Xml,
};
use crate::{local_policy_name, role_not_found, user_not_found};

/// An entity that carries tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tagged {
    User,
    Role,
    Policy,
    InstanceProfile,
    OidcProvider,
    ServerCertificate,
}

/// A stored entity located by a request's parameters.
pub(super) struct Entity {
    pub key: String,
    /// Its canonical ARN (the one it would have at `/` when absent).
    pub arn: String,
    pub tags: Vec<(String, String)>,
    /// The record, when it exists.
    pub value: Option<Value>,
    /// The name (or ARN) as the request gave it, for messages.
    pub given: String,
}

impl Tagged {
    /// `User`, `Role`, ... as IAM's action names spell the entity.
    fn noun(self) -> &'static str {
        match self {
            Tagged::User => "User",
            Tagged::Role => "Role",
            Tagged::Policy => "Policy",
            Tagged::InstanceProfile => "InstanceProfile",
            Tagged::OidcProvider => "OpenIDConnectProvider",
            Tagged::ServerCertificate => "ServerCertificate",
        }
    }

    pub(super) fn not_found(self, given: &str) -> AwsError {
        match self {
            Tagged::User => user_not_found(given),
            Tagged::Role => role_not_found(given),
            Tagged::Policy => policy_not_found(given),
            Tagged::InstanceProfile => instance_profile_not_found(given),
            Tagged::OidcProvider => oidc_not_found(given),
            Tagged::ServerCertificate => certificate_not_found(given),
        }
    }

    /// The store key, the ARN at path `/`, and the name as given.
    fn locate(self, account: &str, p: &Params<'_>) -> Result<(String, String, String), AwsError> {
        let named = |param: &str, member: &str, max: usize, kind: &str| {
            let name = p.required(param, member)?;
            check_name(name, member, 1, max)?;
            Ok::<_, AwsError>((
                name.to_string(),
                format!("arn:aws:iam::{account}:{kind}/{name}"),
            ))
        };
        Ok(match self {
            Tagged::User => {
                let (name, arn) = named("UserName", "userName", 128, "user")?;
                (user_key(account, &name), arn, name)
            }
            Tagged::Role => {
                let (name, arn) = named("RoleName", "roleName", 64, "role")?;
                (role_key(account, &name), arn, name)
            }
            Tagged::InstanceProfile => {
                let (name, arn) = named(
                    "InstanceProfileName",
                    "instanceProfileName",
                    128,
                    "instance-profile",
                )?;
                (instance_profile_key(account, &name), arn, name)
            }
            Tagged::ServerCertificate => {
                let (name, arn) = named(
                    "ServerCertificateName",
                    "serverCertificateName",
                    128,
                    "server-certificate",
                )?;
                (server_certificate_key(account, &name), arn, name)
            }
            Tagged::Policy => {
                let arn = p.required("PolicyArn", "policyArn")?;
                check_policy_arn(arn)?;
                let key = match local_policy_name(account, arn) {
                    Some(name) => policy_key(account, name),
                    // AWS managed policies and other accounts' are not
                    // stored here: nothing to find.
                    None => String::new(),
                };
                (key, arn.to_string(), arn.to_string())
            }
            Tagged::OidcProvider => {
                let arn = oidc_arn_param(p)?;
                let url = oidc_url_of_arn(account, arn).unwrap_or_default();
                (
                    oidc_provider_key(account, url),
                    arn.to_string(),
                    arn.to_string(),
                )
            }
        })
    }

    /// The canonical ARN of a stored record.
    fn arn_of(self, account: &str, v: &Value) -> String {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
        match self {
            Tagged::User => format!("arn:aws:iam::{account}:user{}{}", s("path"), s("name")),
            Tagged::Role => format!("arn:aws:iam::{account}:role{}{}", s("path"), s("name")),
            Tagged::Policy => format!("arn:aws:iam::{account}:policy{}{}", s("path"), s("name")),
            Tagged::InstanceProfile => format!(
                "arn:aws:iam::{account}:instance-profile{}{}",
                s("path"),
                s("name")
            ),
            Tagged::ServerCertificate => format!(
                "arn:aws:iam::{account}:server-certificate{}{}",
                s("path"),
                s("name")
            ),
            Tagged::OidcProvider => format!("arn:aws:iam::{account}:oidc-provider/{}", s("url")),
        }
    }
}

pub(super) fn instance_profile_not_found(name: &str) -> AwsError {
    no_such_entity(format!("Instance Profile {name} cannot be found."))
}

pub(super) fn oidc_not_found(arn: &str) -> AwsError {
    no_such_entity(format!("OpenIDConnect Provider not found for arn {arn}"))
}

pub(super) fn certificate_not_found(name: &str) -> AwsError {
    no_such_entity(format!(
        "The Server Certificate with name {name} cannot be found."
    ))
}

/// `OpenIDConnectProviderArn`, checked as an ARN.
pub(super) fn oidc_arn_param<'a>(p: &Params<'a>) -> Result<&'a str, AwsError> {
    let arn = p.required("OpenIDConnectProviderArn", "openIDConnectProviderArn")?;
    if arn.len() < 20 || arn.len() > 2048 {
        return Err(validation(format!(
            "1 validation error detected: Value '{arn}' at 'openIDConnectProviderArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
        )));
    }
    Ok(arn)
}

/// The provider URL (without scheme) of an OIDC provider ARN of `account`.
pub(super) fn oidc_url_of_arn<'a>(account: &str, arn: &'a str) -> Option<&'a str> {
    arn.strip_prefix(&format!("arn:aws:iam::{account}:oidc-provider/"))
        .filter(|u| !u.is_empty())
}

fn tags_of(v: &Value) -> Vec<(String, String)> {
    v.get("tags")
        .cloned()
        .and_then(|t| serde_json::from_value(t).ok())
        .unwrap_or_default()
}

impl IamService {
    /// The entity the parameters name, as stored now.
    pub(super) fn entity(
        &self,
        ctx: &RequestContext,
        tagged: Tagged,
        p: &Params<'_>,
    ) -> Result<Entity, AwsError> {
        let (key, fallback, given) = tagged.locate(&ctx.account_id, p)?;
        let view: &dyn ReadView = self.iam.store();
        let value: Option<Value> = if key.is_empty() {
            None
        } else {
            get_json(view, &key)?
        };
        // Policies and providers are found by their exact ARN only.
        let value = value.filter(|v| match tagged {
            Tagged::Policy | Tagged::OidcProvider => tagged.arn_of(&ctx.account_id, v) == fallback,
            _ => true,
        });
        Ok(Entity {
            arn: value
                .as_ref()
                .map_or(fallback, |v| tagged.arn_of(&ctx.account_id, v)),
            tags: value.as_ref().map(tags_of).unwrap_or_default(),
            key,
            value,
            given,
        })
    }

    /// Authorizes `action` on the entity the parameters name (canonical
    /// ARN, its tags as `aws:ResourceTag/*`), `more` adding request keys.
    pub(super) fn authorize_entity(
        &self,
        ctx: &RequestContext,
        tagged: Tagged,
        p: &Params<'_>,
        action: &str,
        more: impl FnOnce(Requirement) -> Requirement,
    ) -> Result<Entity, AwsError> {
        let entity = self.entity(ctx, tagged, p)?;
        let requirement = Requirement::new(action, entity.arn.clone())
            .resource_tags(entity.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        ctx.authorize(&[more(requirement)])?;
        Ok(entity)
    }

    /// Changes the tags of the entity found at `entity.key` (the same one
    /// authorized: same ARN).
    async fn edit_tags(
        &self,
        ctx: &RequestContext,
        tagged: Tagged,
        entity: Entity,
        f: impl Fn(&mut Vec<(String, String)>) -> Result<(), AwsError> + Send + 'static,
    ) -> Result<(), AwsError> {
        if entity.value.is_none() {
            return Err(tagged.not_found(&entity.given));
        }
        let account = ctx.account_id.clone();
        self.iam
            .update(move |view| {
                let mut value: Value = get_json(view, &entity.key)?
                    .filter(|v| tagged.arn_of(&account, v) == entity.arn)
                    .ok_or_else(|| tagged.not_found(&entity.given))?;
                let mut tags = tags_of(&value);
                f(&mut tags)?;
                value["tags"] = serde_json::to_value(&tags)
                    .map_err(|e| AwsError::internal(format!("encoding tags failed: {e}")))?;
                Ok((vec![Op::put(entity.key.clone(), to_bytes(&value)?)], ()))
            })
            .await
    }

    pub(super) async fn tag(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        tagged: Tagged,
    ) -> Result<String, AwsError> {
        let tags = parse_tags(p)?;
        if tags.is_empty() {
            return Err(validation(
                "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null",
            ));
        }
        let action = format!("iam:Tag{}", tagged.noun());
        let entity = self.authorize_entity(ctx, tagged, p, &action, |r| {
            r.request_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        })?;
        if tagged == Tagged::Policy && entity.value.is_none() && entity.arn.contains(":aws:policy/")
        {
            return Err(invalid_input(format!(
                "Policy {} is an AWS managed policy and cannot be changed.",
                entity.arn
            )));
        }
        let noun = tagged.noun();
        self.edit_tags(ctx, tagged, entity, move |existing| {
            for (key, value) in &tags {
                match existing
                    .iter_mut()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                {
                    Some(slot) => *slot = (key.clone(), value.clone()),
                    None => existing.push((key.clone(), value.clone())),
                }
            }
            if existing.len() > MAX_TAGS {
                return Err(limit_exceeded(format!(
                    "Cannot exceed quota for TagsPer{noun}: {MAX_TAGS}"
                )));
            }
            Ok(())
        })
        .await?;
        Ok(String::new())
    }

    pub(super) async fn untag(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        tagged: Tagged,
    ) -> Result<String, AwsError> {
        let keys: Vec<String> =
            p.0.iter()
                .filter(|(k, _)| k.starts_with("TagKeys.member."))
                .map(|(_, v)| v.clone())
                .collect();
        if keys.is_empty() {
            return Err(validation(
                "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null",
            ));
        }
        if keys.len() > MAX_TAGS {
            return Err(validation(format!(
                "1 validation error detected: Value at 'tagKeys' failed to satisfy constraint: Member must have length less than or equal to {MAX_TAGS}"
            )));
        }
        for key in &keys {
            if key.is_empty() || key.chars().count() > 128 {
                return Err(validation(format!(
                    "1 validation error detected: Value '{key}' at 'tagKeys' failed to satisfy constraint: Member must have length less than or equal to 128"
                )));
            }
        }
        let action = format!("iam:Untag{}", tagged.noun());
        let entity = self.authorize_entity(ctx, tagged, p, &action, |r| {
            r.tag_keys(keys.iter().cloned())
        })?;
        self.edit_tags(ctx, tagged, entity, move |existing| {
            existing.retain(|(k, _)| !keys.iter().any(|key| key.eq_ignore_ascii_case(k)));
            Ok(())
        })
        .await?;
        Ok(String::new())
    }

    pub(super) fn list_tags(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
        tagged: Tagged,
    ) -> Result<String, AwsError> {
        let max = p.max_items()?;
        let action = format!("iam:List{}Tags", tagged.noun());
        let entity = self.authorize_entity(ctx, tagged, p, &action, |r| r)?;
        if entity.value.is_none() {
            return Err(tagged.not_found(&entity.given));
        }
        let items: Vec<(String, (String, String))> = entity
            .tags
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("{i:04}"), t))
            .collect();
        let (page, next) = paginate(items, p.get("Marker"), max);
        let mut x = Xml::new();
        tags_xml_always(&mut x, &page);
        x.page(next.as_deref());
        Ok(x.finish())
    }
}

/// `<Tags>` even when empty (List*Tags always answers the list).
fn tags_xml_always(x: &mut Xml, tags: &[(String, String)]) {
    if tags.is_empty() {
        x.open("Tags").close("Tags");
    } else {
        tags_xml(x, tags);
    }
}
