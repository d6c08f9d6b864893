//! Console passwords (login profiles), ChangePassword, and the account
//! password policy they must satisfy. Berth has no console to sign in to;
//! it keeps passwords (PBKDF2-HMAC-SHA256, never the password) so tools
//! that manage them, and ChangePassword, behave as on AWS.

use base64::Engine as _;
use berth_model::authz::Requirement;
use berth_model::{AwsError, PrincipalKind, RequestContext};
use berth_store::Op;
use berth_store::ReadView;
use berth_util::time::{format_iso8601, now_secs};
use subtle::ConstantTimeEq;

use super::{target_user, IamService, Kind};
use crate::records::{
    password_policy_key, user_key, LoginProfile, PasswordPolicyRecord, UserRecord,
};
use crate::util::{already_exists, get_json, no_such_entity, to_bytes, validation, Params, Xml};
use crate::{last_segment, user_not_found};

const PBKDF2_ROUNDS: u32 = 100_000;
/// Earlier passwords kept for reuse prevention (IAM's maximum).
const MAX_REMEMBERED: usize = 24;
const SYMBOLS: &str = "!@#$%^&*()_+-=[]{}|'";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn derive(password: &str, salt: &[u8]) -> Vec<u8> {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, PBKDF2_ROUNDS, &mut out);
    out.to_vec()
}

/// A new salt and key for `password` (slow on purpose: run it off the
/// async workers).
async fn hash(password: String) -> Result<(String, String), AwsError> {
    tokio::task::spawn_blocking(move || {
        let salt: [u8; 16] = rand::random();
        (b64().encode(salt), b64().encode(derive(&password, &salt)))
    })
    .await
    .map_err(|_| AwsError::internal("Hashing a password failed."))
}

/// Whether `password` is the one `salt`/`key` were derived from.
async fn matches(password: String, salt: String, key: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let (Ok(salt), Ok(key)) = (b64().decode(salt), b64().decode(key)) else {
            return false;
        };
        bool::from(derive(&password, &salt).ct_eq(&key))
    })
    .await
    .unwrap_or(false)
}

/// A password parameter: 1 to 128 characters from IAM's set.
fn check_password(value: &str, member: &str) -> Result<(), AwsError> {
    let len = value.chars().count();
    let chars_ok = value
        .chars()
        .all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}'));
    if len == 0 || len > 128 || !chars_ok {
        return Err(validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+"
        )));
    }
    Ok(())
}

fn violation(message: impl Into<String>) -> AwsError {
    AwsError::bad_request("PasswordPolicyViolation", message)
}

/// Checks `password` against the account's policy, or IAM's default policy
/// when the account has none (at least 8 characters, and three of:
/// uppercase, lowercase, numbers, symbols).
fn check_policy(
    password: &str,
    policy: Option<&PasswordPolicyRecord>,
    account: &str,
) -> Result<(), AwsError> {
    let upper = password.chars().any(|c| c.is_ascii_uppercase());
    let lower = password.chars().any(|c| c.is_ascii_lowercase());
    let number = password.chars().any(|c| c.is_ascii_digit());
    let symbol = password.chars().any(|c| SYMBOLS.contains(c));
    let length = password.chars().count();
    match policy {
        None => {
            if length < 8 {
                return Err(violation("Password should have a minimum length of 8"));
            }
            if [upper, lower, number, symbol]
                .iter()
                .filter(|b| **b)
                .count()
                < 3
            {
                return Err(violation(
                    "Password should have at least three of the following: uppercase letters, lowercase letters, numbers and symbols",
                ));
            }
            if password == account {
                return Err(violation(
                    "Password should not be identical to the account name",
                ));
            }
        }
        Some(p) => {
            if length < p.minimum_length as usize {
                return Err(violation(format!(
                    "Password should have a minimum length of {}",
                    p.minimum_length
                )));
            }
            if p.require_uppercase && !upper {
                return Err(violation(
                    "Password should have at least one uppercase letter",
                ));
            }
            if p.require_lowercase && !lower {
                return Err(violation(
                    "Password should have at least one lowercase letter",
                ));
            }
            if p.require_numbers && !number {
                return Err(violation("Password should have at least one number"));
            }
            if p.require_symbols && !symbol {
                return Err(violation("Password should have at least one symbol"));
            }
        }
    }
    Ok(())
}

fn login_not_found(user: &str) -> AwsError {
    no_such_entity(format!("Login Profile for User {user} cannot be found."))
}

fn login_xml(x: &mut Xml, user: &str, login: &LoginProfile) {
    x.open("LoginProfile")
        .text("UserName", user)
        .text("CreateDate", &format_iso8601(login.created))
        .text(
            "PasswordResetRequired",
            if login.reset_required {
                "true"
            } else {
                "false"
            },
        )
        .close("LoginProfile");
}

impl IamService {
    fn password_policy(&self, account: &str) -> Result<Option<PasswordPolicyRecord>, AwsError> {
        get_json(self.iam.store(), &password_policy_key(account))
    }

    /// Whether `password` is one of the last `n` passwords of `login`.
    async fn reused(password: &str, login: &LoginProfile, n: usize) -> bool {
        let mut earlier = vec![(login.salt.clone(), login.hash.clone())];
        earlier.extend(login.previous.iter().cloned());
        for (salt, key) in earlier.into_iter().take(n) {
            if matches(password.to_string(), salt, key).await {
                return true;
            }
        }
        false
    }

    /// Stores `login` as the user's password (the user must still be the
    /// one authorized); `create` refuses a user that already has one.
    async fn write_login(
        &self,
        account: &str,
        user: &str,
        checked: super::Checked,
        create: bool,
        edit: impl Fn(Option<LoginProfile>) -> Result<LoginProfile, AwsError> + Send + 'static,
    ) -> Result<(String, LoginProfile), AwsError> {
        let key = user_key(account, user);
        let user = user.to_string();
        self.iam
            .update(move |view| {
                let mut record: UserRecord =
                    get_json(view, &key)?.ok_or_else(|| user_not_found(&user))?;
                checked.same(&record.id)?;
                if create && record.login.is_some() {
                    return Err(already_exists(format!(
                        "Login Profile for user {} already exists.",
                        record.name
                    )));
                }
                if !create && record.login.is_none() {
                    return Err(login_not_found(&record.name));
                }
                let login = edit(record.login.take())?;
                record.login = Some(login.clone());
                Ok((
                    vec![Op::put(key.clone(), to_bytes(&record)?)],
                    (record.name.clone(), login),
                ))
            })
            .await
    }

    pub(super) async fn create_login_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let user = target_user(ctx, p)?.ok_or_else(|| {
            validation("Must specify userName when calling with root credentials")
        })?;
        let password = p.required("Password", "password")?;
        check_password(password, "password")?;
        let reset = p
            .bool("PasswordResetRequired", "passwordResetRequired")?
            .unwrap_or(false);
        let checked = self.authorize_holder(ctx, Kind::User, "iam:CreateLoginProfile", user)?;
        let policy = self.password_policy(&ctx.account_id)?;
        check_policy(password, policy.as_ref(), &ctx.account_id)?;
        let (salt, hash) = hash(password.to_string()).await?;
        let now = now_secs();
        let (name, login) = self
            .write_login(&ctx.account_id, user, checked, true, move |_| {
                Ok(LoginProfile {
                    created: now,
                    reset_required: reset,
                    salt: salt.clone(),
                    hash: hash.clone(),
                    previous: Vec::new(),
                })
            })
            .await?;
        let mut x = Xml::new();
        login_xml(&mut x, &name, &login);
        Ok(x.finish())
    }

    pub(super) fn get_login_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let user = target_user(ctx, p)?.ok_or_else(|| {
            validation("Must specify userName when calling with root credentials")
        })?;
        let checked = self.authorize_holder(ctx, Kind::User, "iam:GetLoginProfile", user)?;
        let record: UserRecord = get_json(self.iam.store(), &user_key(&ctx.account_id, user))?
            .ok_or_else(|| user_not_found(user))?;
        checked.same(&record.id)?;
        let login = record.login.ok_or_else(|| login_not_found(&record.name))?;
        let mut x = Xml::new();
        login_xml(&mut x, &record.name, &login);
        Ok(x.finish())
    }

    /// Sets a new password on a user that has one, checking the policy
    /// (length, characters, reuse).
    async fn set_password(
        &self,
        ctx: &RequestContext,
        user: &str,
        checked: super::Checked,
        password: Option<&str>,
        reset: Option<bool>,
    ) -> Result<(), AwsError> {
        let policy = self.password_policy(&ctx.account_id)?;
        let new_key = match password {
            Some(password) => {
                check_policy(password, policy.as_ref(), &ctx.account_id)?;
                let record: Option<UserRecord> =
                    get_json(self.iam.store(), &user_key(&ctx.account_id, user))?;
                if let (Some(n), Some(login)) = (
                    policy.as_ref().and_then(|p| p.reuse_prevention),
                    record.and_then(|r| r.login),
                ) {
                    if Self::reused(password, &login, n as usize).await {
                        return Err(violation(format!(
                            "Password should not be one of your last {n} passwords"
                        )));
                    }
                }
                Some(hash(password.to_string()).await?)
            }
            None => None,
        };
        self.write_login(&ctx.account_id, user, checked, false, move |old| {
            let mut login = old.ok_or_else(|| AwsError::internal("login profile vanished"))?;
            if let Some((salt, hash)) = &new_key {
                login
                    .previous
                    .insert(0, (login.salt.clone(), login.hash.clone()));
                login.previous.truncate(MAX_REMEMBERED);
                login.salt = salt.clone();
                login.hash = hash.clone();
            }
            if let Some(reset) = reset {
                login.reset_required = reset;
            }
            Ok(login)
        })
        .await?;
        Ok(())
    }

    pub(super) async fn update_login_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let user = Kind::User.name(p)?;
        let password = p.get("Password");
        if let Some(password) = password {
            check_password(password, "password")?;
        }
        let reset = p.bool("PasswordResetRequired", "passwordResetRequired")?;
        let checked = self.authorize_holder(ctx, Kind::User, "iam:UpdateLoginProfile", user)?;
        self.set_password(ctx, user, checked, password, reset)
            .await?;
        Ok(String::new())
    }

    pub(super) async fn delete_login_profile(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let user = target_user(ctx, p)?
            .ok_or_else(|| validation("Must specify userName when calling with root credentials"))?
            .to_string();
        let checked = self.authorize_holder(ctx, Kind::User, "iam:DeleteLoginProfile", &user)?;
        let key = user_key(&ctx.account_id, &user);
        self.iam
            .update(move |view| {
                let mut record: UserRecord =
                    get_json(view, &key)?.ok_or_else(|| user_not_found(&user))?;
                checked.same(&record.id)?;
                if record.login.take().is_none() {
                    return Err(login_not_found(&record.name));
                }
                Ok((vec![Op::put(key.clone(), to_bytes(&record)?)], ()))
            })
            .await?;
        Ok(String::new())
    }

    /// A user changes its own password. Allowed by `iam:ChangePassword` on
    /// the user, or by the account policy's AllowUsersToChangePassword.
    pub(super) async fn change_password(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let old = p.required("OldPassword", "oldPassword")?;
        check_password(old, "oldPassword")?;
        let new = p.required("NewPassword", "newPassword")?;
        check_password(new, "newPassword")?;
        if ctx.principal.kind != PrincipalKind::User {
            ctx.no_authorization_needed();
            return Err(AwsError::bad_request(
                "InvalidUserType",
                "Only IAM users can change their own password.",
            ));
        }
        let name = last_segment(&ctx.principal.arn).to_string();
        let allowed_by_policy = self
            .password_policy(&ctx.account_id)?
            .is_some_and(|p| p.allow_users_to_change);
        let checked = if allowed_by_policy {
            ctx.no_authorization_needed();
            let record: UserRecord = get_json(self.iam.store(), &user_key(&ctx.account_id, &name))?
                .ok_or_else(|| user_not_found(&name))?;
            super::Checked(Some(record.id))
        } else {
            self.authorize_holder(ctx, Kind::User, "iam:ChangePassword", &name)?
        };
        let record: UserRecord = get_json(self.iam.store(), &user_key(&ctx.account_id, &name))?
            .ok_or_else(|| user_not_found(&name))?;
        let login = record.login.ok_or_else(|| login_not_found(&record.name))?;
        if !matches(old.to_string(), login.salt.clone(), login.hash.clone()).await {
            return Err(AwsError::new(
                403,
                "AccessDenied",
                "The old password is incorrect.",
            ));
        }
        self.set_password(ctx, &name, checked, Some(new), Some(false))
            .await?;
        Ok(String::new())
    }

    pub(super) fn get_password_policy(&self, ctx: &RequestContext) -> Result<String, AwsError> {
        // Users may read the policy when it lets them change passwords.
        let policy = self.password_policy(&ctx.account_id)?;
        if policy.as_ref().is_some_and(|p| p.allow_users_to_change)
            && ctx.principal.kind == PrincipalKind::User
        {
            ctx.no_authorization_needed();
        } else {
            ctx.authorize(&[Requirement::new("iam:GetAccountPasswordPolicy", "*")])?;
        }
        let policy = policy.ok_or_else(|| {
            no_such_entity(format!(
                "The Password Policy with domain name {} cannot be found.",
                ctx.account_id
            ))
        })?;
        let b = |v: bool| if v { "true" } else { "false" };
        let mut x = Xml::new();
        x.open("PasswordPolicy")
            .text("MinimumPasswordLength", &policy.minimum_length.to_string())
            .text("RequireSymbols", b(policy.require_symbols))
            .text("RequireNumbers", b(policy.require_numbers))
            .text("RequireUppercaseCharacters", b(policy.require_uppercase))
            .text("RequireLowercaseCharacters", b(policy.require_lowercase))
            .text(
                "AllowUsersToChangePassword",
                b(policy.allow_users_to_change),
            )
            .text("ExpirePasswords", b(policy.max_age.is_some_and(|a| a > 0)));
        if let Some(age) = policy.max_age {
            x.text("MaxPasswordAge", &age.to_string());
        }
        if let Some(n) = policy.reuse_prevention {
            x.text("PasswordReusePrevention", &n.to_string());
        }
        if let Some(h) = policy.hard_expiry {
            x.text("HardExpiry", b(h));
        }
        x.close("PasswordPolicy");
        Ok(x.finish())
    }

    pub(super) async fn update_password_policy(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let flag = |name: &str, member: &str| p.bool(name, member).map(|v| v.unwrap_or(false));
        let policy = PasswordPolicyRecord {
            minimum_length: p
                .int("MinimumPasswordLength", "minimumPasswordLength", 6, 128)?
                .unwrap_or(6) as u32,
            require_symbols: flag("RequireSymbols", "requireSymbols")?,
            require_numbers: flag("RequireNumbers", "requireNumbers")?,
            require_uppercase: flag("RequireUppercaseCharacters", "requireUppercaseCharacters")?,
            require_lowercase: flag("RequireLowercaseCharacters", "requireLowercaseCharacters")?,
            allow_users_to_change: flag(
                "AllowUsersToChangePassword",
                "allowUsersToChangePassword",
            )?,
            max_age: p
                .int("MaxPasswordAge", "maxPasswordAge", 1, 1095)?
                .map(|v| v as u32),
            reuse_prevention: p
                .int("PasswordReusePrevention", "passwordReusePrevention", 1, 24)?
                .map(|v| v as u32),
            hard_expiry: p.bool("HardExpiry", "hardExpiry")?,
        };
        ctx.authorize(&[Requirement::new("iam:UpdateAccountPasswordPolicy", "*")])?;
        let key = password_policy_key(&ctx.account_id);
        let value = to_bytes(&policy)?;
        self.iam
            .update(move |_| Ok((vec![Op::put(key.clone(), value.clone())], ())))
            .await?;
        Ok(String::new())
    }

    pub(super) async fn delete_password_policy(
        &self,
        ctx: &RequestContext,
    ) -> Result<String, AwsError> {
        ctx.authorize(&[Requirement::new("iam:DeleteAccountPasswordPolicy", "*")])?;
        let key = password_policy_key(&ctx.account_id);
        let account = ctx.account_id.clone();
        self.iam
            .update(move |view: &dyn ReadView| {
                if view.get(&key).is_none() {
                    return Err(no_such_entity(format!(
                        "The account policy with name PasswordPolicy cannot be found for account {account}."
                    )));
                }
                Ok((vec![Op::delete(key.clone())], ()))
            })
            .await?;
        Ok(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_custom_policies() {
        assert!(check_policy("Abcdefg1", None, "1").is_ok());
        assert_eq!(
            check_policy("Abc1", None, "1").unwrap_err().code,
            "PasswordPolicyViolation"
        );
        assert!(check_policy("abcdefgh", None, "1").is_err());
        let p = PasswordPolicyRecord {
            minimum_length: 10,
            require_symbols: true,
            ..Default::default()
        };
        assert_eq!(
            check_policy("short!", Some(&p), "1").unwrap_err().message,
            "Password should have a minimum length of 10"
        );
        assert_eq!(
            check_policy("longenough1", Some(&p), "1")
                .unwrap_err()
                .message,
            "Password should have at least one symbol"
        );
        assert!(check_policy("longenough!", Some(&p), "1").is_ok());
    }

    #[test]
    fn hashes_verify() {
        let salt = [7u8; 16];
        let key = derive("pw", &salt);
        assert_eq!(key, derive("pw", &salt));
        assert_ne!(key, derive("pW", &salt));
    }
}
