//! IAM and STS for Berth, over the Query protocol.
//!
//! * [`Iam`] owns the state (users, access keys, roles, managed and inline
//!   policies, role sessions) in the [`Store`] and a cache of parsed policies.
//! * [`IamService`] (signing name `iam`) and [`StsService`] (`sts`) are the
//!   [`berth_model::QueryService`]s to register with the gateway.
//! * [`IamCredentials`] resolves IAM user access keys and STS session keys
//!   for the gateway's signature check.
//! * [`Iam::identity_policies`] gives an authorizer the policies of a caller;
//!   [`Iam::issue_role_session`] mints role credentials (for task roles).
//! * Secret access keys of users and sessions are sealed with the
//!   [`Sealer`] given to [`Iam::with_sealer`] before they reach the store, and
//!   kept opened in memory once read; [`Iam::seal_stored_secrets`] seals
//!   what an older data directory stored in plaintext.
//!
//! Architecture invariant: every handler validates its input completely
//! before touching state, and every state-dependent check runs in the same
//! store mutation as the write it guards.

mod authorizer;
mod credentials;
mod federation;
mod iam;
mod not_implemented;
mod records;
mod sts;
mod usage;
mod util;

#[cfg(test)]
mod tests;

pub use authorizer::IamAuthorizer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_model::seal::{self, Sealer};
use berth_model::{AwsError, Principal, PrincipalKind};
use berth_policy::{managed, Policy, PrincipalRef};
use berth_store::{Op, ReadView, Revision, Store, StoreExt};
use berth_util::time::now_secs;

pub use credentials::IamCredentials;
pub use iam::IamService;
pub use not_implemented::NOT_IMPLEMENTED;
pub use sts::StsService;

use records::{
    group_key, policy_key, role_key, session_key, user_key, AccessKeyRecord, PolicyRecord,
    RoleRecord, SessionKind, SessionRecord, ACCESS_KEYS_PREFIX, SESSIONS_PREFIX,
};
use util::{get_json, store_error};

/// IAM's XML namespace.
pub const IAM_NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// STS's XML namespace.
pub const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Parsed policies kept at most; the cache is cleared beyond this.
const POLICY_CACHE_LIMIT: usize = 4096;
/// Expired sessions looked at per session issued.
const SESSION_GC_BATCH: usize = 64;
/// The longest session STS hands out.
pub const MAX_SESSION_SECS: u32 = 43_200;
/// The shortest session STS hands out.
pub const MIN_SESSION_SECS: u32 = 900;

/// Temporary credentials of a role session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Seconds since the epoch.
    pub expiration: i64,
    /// `AROA…:<session>`.
    pub assumed_role_id: String,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`.
    pub arn: String,
}

/// The IAM and STS state and the logic shared by both services.
pub struct Iam {
    store: Arc<dyn Store>,
    /// Seals secret access keys at rest; `None` keeps them as they are
    /// (tests and benchmarks over throwaway stores).
    sealer: Option<Arc<dyn Sealer>>,
    /// Parsed policies keyed by `managed:<arn>#<version>`,
    /// `local:<policy id>#<version>` (ids are fresh per creation, versions
    /// immutable), or `inline:`/`trust:` plus the document text.
    cache: Mutex<HashMap<String, Arc<Policy>>>,
    /// Decoded user and role records by store key, with their revision.
    holders: RevisionCache<HolderEntry>,
    /// Default versions of customer managed policies by store key.
    local_policies: RevisionCache<Option<Arc<Policy>>>,
    /// Decoded sessions by store key, their secrets opened.
    sessions: RevisionCache<SessionRecord>,
    /// Decoded access keys by store key, their secrets opened.
    access_keys: RevisionCache<AccessKeyRecord>,
    /// When access keys were last used, kept in memory and flushed to the
    /// store now and then.
    pub(crate) usage: usage::UsageTracker,
    /// OpenID Connect signing keys fetched from providers, by JWKS URL.
    pub(crate) jwks: federation::JwksCache,
    /// Authenticates the authorization messages STS can decode.
    pub(crate) message_key: [u8; 32],
}

pub(crate) type RevisionCache<T> = Mutex<HashMap<String, (Revision, Arc<T>)>>;

/// The value cached for `key` when it was decoded at `revision`.
fn revision_cached<T>(cache: &RevisionCache<T>, key: &str, revision: Revision) -> Option<Arc<T>> {
    let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    match cache.get(key) {
        Some((at, value)) if *at == revision => Some(value.clone()),
        _ => None,
    }
}

fn remember<T>(cache: &RevisionCache<T>, key: &str, revision: Revision, value: Arc<T>) {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= POLICY_CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key.to_string(), (revision, value));
}

/// The fields users and roles share, as the authorizer needs them.
#[derive(serde::Deserialize)]
struct HolderFields {
    name: String,
    path: String,
    id: String,
    #[serde(default)]
    inline: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    attached: Vec<String>,
    #[serde(default)]
    tags: Vec<(String, String)>,
    #[serde(default)]
    groups: Vec<String>,
}

/// An authenticated caller as IAM knows it.
pub struct Identity {
    pub principal: PrincipalRef,
    /// Attached (default versions) and inline policies, the user's groups'
    /// included.
    pub policies: Vec<Arc<Policy>>,
    /// The user's or role's tags.
    pub tags: Vec<(String, String)>,
    /// A session's own policies: when set, a call must be allowed by these
    /// too (the session's permissions are the intersection).
    pub session_policies: Option<Vec<Arc<Policy>>>,
}

/// A user or role with its inline policies parsed.
pub(crate) struct HolderEntry {
    name: String,
    path: String,
    id: String,
    attached: Vec<String>,
    inline: Vec<Arc<Policy>>,
    /// The user's or role's tags (`aws:PrincipalTag/<key>`).
    tags: Vec<(String, String)>,
    /// A user's groups, by name.
    groups: Vec<String>,
}

impl Iam {
    /// IAM over `store`, keeping secret access keys as they are: for tests
    /// and benchmarks. A server uses [`with_sealer`](Self::with_sealer).
    pub fn new(store: Arc<dyn Store>) -> Arc<Iam> {
        Iam::build(store, None)
    }

    /// IAM over `store`, sealing the secrets of access keys and sessions
    /// with `sealer` before they are stored.
    pub fn with_sealer(store: Arc<dyn Store>, sealer: Arc<dyn Sealer>) -> Arc<Iam> {
        Iam::build(store, Some(sealer))
    }

    fn build(store: Arc<dyn Store>, sealer: Option<Arc<dyn Sealer>>) -> Arc<Iam> {
        Arc::new(Iam {
            store,
            sealer,
            cache: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            local_policies: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            access_keys: Mutex::new(HashMap::new()),
            usage: usage::UsageTracker::default(),
            jwks: federation::JwksCache::default(),
            message_key: rand::random(),
        })
    }

    /// The IAM Query service (signing name `iam`).
    pub fn iam_service(self: &Arc<Self>) -> Arc<IamService> {
        Arc::new(IamService::new(self.clone()))
    }

    /// The STS Query service (signing name `sts`).
    pub fn sts_service(self: &Arc<Self>) -> Arc<StsService> {
        Arc::new(StsService::new(self.clone()))
    }

    /// The gateway's credential source for IAM user keys and STS sessions.
    pub fn credentials(self: &Arc<Self>) -> Arc<IamCredentials> {
        Arc::new(IamCredentials::new(self.clone()))
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub(crate) async fn update<T, F>(&self, f: F) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: FnMut(&dyn ReadView) -> Result<(Vec<Op>, T), AwsError> + Send + 'static,
    {
        match self.store.update(f).await {
            Ok(Ok((_, value))) => Ok(value),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Parses `text` with `parse`, or returns the copy cached under `key`.
    pub(crate) fn cached(
        &self,
        key: String,
        text: &str,
        parse: fn(&str) -> Result<Policy, berth_policy::PolicyError>,
    ) -> Result<Arc<Policy>, AwsError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(policy) = cache.get(&key) {
                return Ok(policy.clone());
            }
        }
        let policy = Arc::new(parse(text).map_err(|e| util::malformed(&e))?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= POLICY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, policy.clone());
        Ok(policy)
    }

    /// A role's trust policy, parsed once per document text.
    pub(crate) fn trust_policy(&self, role: &RoleRecord) -> Result<Arc<Policy>, AwsError> {
        self.cached(
            format!("trust:{}", role.trust),
            &role.trust,
            Policy::parse_trust,
        )
    }

    /// A user's or role's record as the authorizer needs it, decoded and its
    /// inline policies parsed once per store revision of the record.
    pub(crate) fn holder(
        &self,
        view: &dyn ReadView,
        key: &str,
    ) -> Result<Option<Arc<HolderEntry>>, AwsError> {
        let Some(kv) = view.get(key) else {
            return Ok(None);
        };
        if let Some(entry) = revision_cached(&self.holders, key, kv.mod_revision) {
            return Ok(Some(entry));
        }
        let fields: HolderFields =
            serde_json::from_slice(&kv.value).map_err(|_| util::corrupt(key))?;
        let inline = fields
            .inline
            .values()
            .map(|document| {
                self.cached(
                    format!("inline:{document}"),
                    document,
                    Policy::parse_identity,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let entry = Arc::new(HolderEntry {
            name: fields.name,
            path: fields.path,
            id: fields.id,
            attached: fields.attached,
            inline,
            tags: fields.tags,
            groups: fields.groups,
        });
        remember(&self.holders, key, kv.mod_revision, entry.clone());
        Ok(Some(entry))
    }

    /// The parsed default version of a managed policy (AWS's or of
    /// `account`); `None` when it no longer exists.
    fn managed_default(
        &self,
        view: &dyn ReadView,
        account: &str,
        arn: &str,
    ) -> Result<Option<Arc<Policy>>, AwsError> {
        if let Some(m) = managed::by_arn(arn) {
            return self
                .cached(
                    format!("managed:{}#{}", m.arn, m.version_id),
                    m.document,
                    Policy::parse_identity,
                )
                .map(Some);
        }
        let Some(name) = local_policy_name(account, arn) else {
            return Ok(None);
        };
        let key = policy_key(account, name);
        let Some(kv) = view.get(&key) else {
            return Ok(None);
        };
        if let Some(found) = revision_cached(&self.local_policies, &key, kv.mod_revision) {
            return Ok(found.as_ref().clone());
        }
        let record: PolicyRecord =
            serde_json::from_slice(&kv.value).map_err(|_| util::corrupt(&key))?;
        let found = match record.default_document() {
            Some(version) if record.arn(account) == arn => Some(self.cached(
                format!("local:{}#{}", record.id, version.id),
                &version.document,
                Policy::parse_identity,
            )?),
            _ => None,
        };
        remember(
            &self.local_policies,
            &key,
            kv.mod_revision,
            Arc::new(found.clone()),
        );
        Ok(found)
    }

    /// The attached (default versions) and inline policies of a holder.
    fn holder_policies(
        &self,
        view: &dyn ReadView,
        account: &str,
        holder: &HolderEntry,
    ) -> Result<Vec<Arc<Policy>>, AwsError> {
        let mut out = Vec::with_capacity(holder.attached.len() + holder.inline.len());
        for arn in &holder.attached {
            if let Some(policy) = self.managed_default(view, account, arn)? {
                out.push(policy);
            }
        }
        out.extend(holder.inline.iter().cloned());
        for group in &holder.groups {
            if let Some(group) = self.holder(view, &group_key(account, group))? {
                for arn in &group.attached {
                    if let Some(policy) = self.managed_default(view, account, arn)? {
                        out.push(policy);
                    }
                }
                out.extend(group.inline.iter().cloned());
            }
        }
        Ok(out)
    }

    /// Session policy documents parsed (each once per text).
    fn session_policies(&self, texts: &Option<Vec<String>>) -> Option<Vec<Arc<Policy>>> {
        let texts = texts.as_ref()?;
        Some(
            texts
                .iter()
                .filter_map(|text| {
                    self.cached(format!("inline:{text}"), text, Policy::parse_identity)
                        .ok()
                })
                .collect(),
        )
    }

    /// The caller as the policy evaluator sees it, and its identity policies
    /// (attached managed and inline) — of the user, or of the role behind an
    /// assumed-role session. The root user has no policies (it is allowed
    /// everything); agents are no IAM identity.
    ///
    /// Fast: records are decoded and documents parsed once per store
    /// revision; a repeated call only reads memory and compares revisions.
    pub fn identity_policies(
        &self,
        principal: &Principal,
    ) -> Result<(PrincipalRef, Vec<Arc<Policy>>), AwsError> {
        self.identity(principal).map(|i| (i.principal, i.policies))
    }

    /// The caller as the authorizer sees it: [`identity_policies`](Self::identity_policies)
    /// and the tags of the user or role (`aws:PrincipalTag/<key>`).
    pub fn identity(&self, principal: &Principal) -> Result<Identity, AwsError> {
        let view: &dyn ReadView = self.store.as_ref();
        let account = principal.account_id.as_str();
        match principal.kind {
            PrincipalKind::Root => Ok(Identity {
                principal: PrincipalRef::root(account),
                policies: Vec::new(),
                tags: Vec::new(),
                session_policies: None,
            }),
            PrincipalKind::User => {
                let name = last_segment(&principal.arn);
                let user = self
                    .holder(view, &user_key(account, name))?
                    .ok_or_else(|| user_not_found(name))?;
                // A user deleted and created again under the same name is
                // another identity: what was issued to the first (a
                // registry token) grants the second nothing.
                if !principal.user_id.is_empty() && principal.user_id != user.id {
                    return Err(user_not_found(name));
                }
                let policies = self.holder_policies(view, account, &user)?;
                Ok(Identity {
                    principal: PrincipalRef::user(account, &user.path, &user.name, &user.id),
                    policies,
                    tags: user.tags.clone(),
                    session_policies: None,
                })
            }
            PrincipalKind::AssumedRole => {
                let session = self
                    .session(view, &principal.access_key_id)?
                    .ok_or_else(|| {
                        AwsError::new(
                            403,
                            "ExpiredToken",
                            "The security token included in the request is expired",
                        )
                    })?;
                if session.kind == SessionKind::Federated {
                    // A federated user may do what its user may and its
                    // session policies allow; a user deleted (or replaced)
                    // since grants nothing. The root user's federated
                    // users may do what their session policies allow.
                    let session_policies = self
                        .session_policies(&session.session_policies)
                        .unwrap_or_default();
                    let policies = if session.user_name.is_empty() {
                        session_policies.clone()
                    } else {
                        match self.holder(view, &user_key(account, &session.user_name))? {
                            Some(user) if user.id == session.user_id => {
                                self.holder_policies(view, account, &user)?
                            }
                            _ => Vec::new(),
                        }
                    };
                    return Ok(Identity {
                        principal: PrincipalRef::federated_user(account, &session.session_name),
                        policies,
                        tags: session.tags.clone(),
                        session_policies: Some(session_policies),
                    });
                }
                let reference = PrincipalRef::assumed_role(
                    account,
                    &session.role_path,
                    &session.role_name,
                    &session.session_name,
                    &session.role_id,
                );
                // A role deleted (or replaced) since the session began grants nothing.
                let (policies, tags) =
                    match self.holder(view, &role_key(account, &session.role_name))? {
                        Some(role) if role.id == session.role_id => (
                            self.holder_policies(view, account, &role)?,
                            role.tags.clone(),
                        ),
                        _ => (Vec::new(), Vec::new()),
                    };
                Ok(Identity {
                    principal: reference,
                    policies,
                    tags,
                    session_policies: self.session_policies(&session.session_policies),
                })
            }
            PrincipalKind::Agent => Err(util::invalid_input(format!(
                "{} is a Berth agent, not an IAM identity.",
                principal.arn
            ))),
        }
    }

    /// The record at `key`, decoded and passed through `finish` once per
    /// store revision.
    fn decoded_with<T: serde::de::DeserializeOwned>(
        &self,
        cache: &RevisionCache<T>,
        view: &dyn ReadView,
        key: &str,
        finish: impl FnOnce(&mut T) -> Result<(), AwsError>,
    ) -> Result<Option<Arc<T>>, AwsError> {
        let Some(kv) = view.get(key) else {
            return Ok(None);
        };
        if let Some(value) = revision_cached(cache, key, kv.mod_revision) {
            return Ok(Some(value));
        }
        let mut value: T = serde_json::from_slice(&kv.value).map_err(|_| util::corrupt(key))?;
        finish(&mut value)?;
        let value = Arc::new(value);
        remember(cache, key, kv.mod_revision, value.clone());
        Ok(Some(value))
    }

    /// A stored secret's plaintext (sealed, or plaintext from an older data
    /// directory).
    fn open_secret(&self, key: &str, stored: &str) -> Result<String, AwsError> {
        seal::open_text(self.sealer.as_deref(), stored).map_err(|e| {
            tracing::warn!(key, error = %e, "a stored secret access key cannot be opened");
            AwsError::internal("A stored credential cannot be decrypted.")
        })
    }

    /// `plaintext` as a record stores it: sealed when IAM has a sealer.
    pub(crate) fn seal_secret(&self, plaintext: &str) -> Result<String, AwsError> {
        seal::seal_text(self.sealer.as_deref(), plaintext)
            .map_err(|_| AwsError::internal("Sealing a new credential failed."))
    }

    /// A session record (expired ones too; callers check `expires`), its
    /// secret opened.
    pub(crate) fn session(
        &self,
        view: &dyn ReadView,
        access_key_id: &str,
    ) -> Result<Option<Arc<SessionRecord>>, AwsError> {
        let key = session_key(access_key_id);
        self.decoded_with(&self.sessions, view, &key, |record: &mut SessionRecord| {
            record.secret = self.open_secret(&key, &record.secret)?;
            Ok(())
        })
    }

    /// An access key record, its secret opened.
    pub(crate) fn access_key(
        &self,
        view: &dyn ReadView,
        access_key_id: &str,
    ) -> Result<Option<Arc<AccessKeyRecord>>, AwsError> {
        let key = records::access_key_key(access_key_id);
        self.decoded_with(
            &self.access_keys,
            view,
            &key,
            |record: &mut AccessKeyRecord| {
                record.secret = self.open_secret(&key, &record.secret)?;
                Ok(())
            },
        )
    }

    /// Seals every access key and session secret still stored in plaintext
    /// (written before Berth sealed them); returns how many. Nothing without
    /// a sealer. For the server's start.
    pub async fn seal_stored_secrets(&self) -> Result<usize, AwsError> {
        let Some(sealer) = self.sealer.clone() else {
            return Ok(0);
        };
        self.update(move |view| {
            let mut ops = Vec::new();
            let seal = |plaintext: &str| {
                seal::seal_text(Some(sealer.as_ref()), plaintext)
                    .map_err(|_| AwsError::internal("Sealing a stored credential failed."))
            };
            for kv in view.range(ACCESS_KEYS_PREFIX, None, usize::MAX) {
                let Ok(mut record) = serde_json::from_slice::<AccessKeyRecord>(&kv.value) else {
                    continue;
                };
                if !seal::is_sealed(&record.secret) {
                    record.secret = seal(&record.secret)?;
                    ops.push(Op::put(kv.key, util::to_bytes(&record)?));
                }
            }
            for kv in view.range(SESSIONS_PREFIX, None, usize::MAX) {
                let Ok(mut record) = serde_json::from_slice::<SessionRecord>(&kv.value) else {
                    continue;
                };
                if !seal::is_sealed(&record.secret) {
                    record.secret = seal(&record.secret)?;
                    ops.push(Op::put(kv.key, util::to_bytes(&record)?));
                }
            }
            let n = ops.len();
            Ok((ops, n))
        })
        .await
    }

    /// Mints credentials for a session of `role_arn` in `account`, valid for
    /// `duration_secs` (900 to 43200). Does not check the role's trust
    /// policy: the caller decides who may have the session (STS's AssumeRole
    /// checks it; the server checks `ecs-tasks.amazonaws.com` for task roles).
    pub async fn issue_role_session(
        &self,
        account: &str,
        role_arn: &str,
        session_name: &str,
        duration_secs: u32,
    ) -> Result<SessionCredentials, AwsError> {
        util::check_name(session_name, "roleSessionName", 2, 64)?;
        if !(MIN_SESSION_SECS..=MAX_SESSION_SECS).contains(&duration_secs) {
            return Err(util::validation(format!(
                "1 validation error detected: Value '{duration_secs}' at 'durationSeconds' failed to satisfy constraint: Member must have value between {MIN_SESSION_SECS} and {MAX_SESSION_SECS}"
            )));
        }
        let role = self
            .role_by_arn(account, role_arn)?
            .ok_or_else(|| no_role_for_arn(role_arn))?;
        self.write_session(account, role, session_name, duration_secs)
            .await
    }

    /// Mints a session of `role_arn` for an AWS service principal (ECS tasks
    /// assume their roles as `ecs-tasks.amazonaws.com`): the role's trust
    /// policy must allow that service `sts:AssumeRole`, as on AWS.
    pub async fn issue_service_role_session(
        &self,
        account: &str,
        role_arn: &str,
        service: &str,
        session_name: &str,
        duration_secs: u32,
    ) -> Result<SessionCredentials, AwsError> {
        let role = self
            .role_by_arn(account, role_arn)?
            .ok_or_else(|| no_role_for_arn(role_arn))?;
        let trust = self.trust_policy(&role)?;
        let principal = PrincipalRef::service(service);
        let mut context = berth_policy::Context::new();
        context.set_current_time(berth_policy::Timestamp::from_epoch_seconds(now_secs()));
        let request = berth_policy::Request::new(&principal, "sts:AssumeRole", role_arn, &context);
        if !berth_policy::evaluate_trust(&trust, &request).is_allowed() {
            return Err(AwsError::new(
                403,
                "AccessDenied",
                format!(
                    "{service} is not authorized to perform: sts:AssumeRole on resource: \
                     {role_arn}: the role's trust policy does not allow it"
                ),
            ));
        }
        self.issue_role_session(account, role_arn, session_name, duration_secs)
            .await
    }

    /// The policies of `role_arn` and the principal a session
    /// `session_name` of it is; NoSuchEntity when the role does not exist.
    pub fn role_session_policies(
        &self,
        account: &str,
        role_arn: &str,
        session_name: &str,
    ) -> Result<(PrincipalRef, Vec<Arc<Policy>>), AwsError> {
        let view: &dyn ReadView = self.store.as_ref();
        let name = role_arn
            .strip_prefix(&format!("arn:aws:iam::{account}:role/"))
            .map(last_segment)
            .ok_or_else(|| no_role_for_arn(role_arn))?;
        let role = self
            .holder(view, &role_key(account, name))?
            .ok_or_else(|| no_role_for_arn(role_arn))?;
        let reference =
            PrincipalRef::assumed_role(account, &role.path, &role.name, session_name, &role.id);
        Ok((reference, self.holder_policies(view, account, &role)?))
    }

    pub(crate) fn role_by_arn(
        &self,
        account: &str,
        role_arn: &str,
    ) -> Result<Option<RoleRecord>, AwsError> {
        let Some(rest) = role_arn.strip_prefix(&format!("arn:aws:iam::{account}:role/")) else {
            return Ok(None);
        };
        let name = last_segment(rest);
        let role: Option<RoleRecord> = get_json(self.store.as_ref(), &role_key(account, name))?;
        Ok(role.filter(|r| r.arn(account) == role_arn))
    }

    /// Writes a new session of `role` and deletes a few expired ones.
    pub(crate) async fn write_session(
        &self,
        account: &str,
        role: RoleRecord,
        session_name: &str,
        duration_secs: u32,
    ) -> Result<SessionCredentials, AwsError> {
        self.write_role_session(account, role, session_name, duration_secs, None)
            .await
    }

    /// Writes a new session of `role`, limited by `session_policies` when
    /// given.
    pub(crate) async fn write_role_session(
        &self,
        account: &str,
        role: RoleRecord,
        session_name: &str,
        duration_secs: u32,
        session_policies: Option<Vec<String>>,
    ) -> Result<SessionCredentials, AwsError> {
        let session = SessionRecord {
            account: account.to_string(),
            kind: SessionKind::Role,
            role_name: role.name.clone(),
            role_path: role.path.clone(),
            role_id: role.id.clone(),
            user_name: String::new(),
            user_path: String::new(),
            user_id: String::new(),
            session_name: session_name.to_string(),
            session_policies,
            tags: Vec::new(),
            secret: String::new(),
            token: String::new(),
            created: 0,
            expires: i64::from(duration_secs),
        };
        let guard = Guard {
            key: role_key(account, &role.name),
            id: role.id.clone(),
            gone: no_role_for_arn(&role.arn(account)),
        };
        self.insert_session(session, Some(guard)).await
    }

    /// Stores `session` (its `expires` holds the duration in seconds until
    /// now is known) with fresh keys; `guard` names a record that must
    /// still have the id the caller looked at. Deletes a few expired
    /// sessions on the way.
    pub(crate) async fn insert_session(
        &self,
        mut session: SessionRecord,
        guard: Option<Guard>,
    ) -> Result<SessionCredentials, AwsError> {
        let now = now_secs();
        session.created = now;
        session.expires += now;
        session.token = berth_util::ids::session_token();
        let access_key_id = berth_util::ids::access_key_id("ASIA");
        let key = session_key(&access_key_id);
        // The record keeps the secret sealed; the caller gets the plaintext.
        let secret = berth_util::ids::secret_access_key();
        let value = util::to_bytes(&SessionRecord {
            secret: self.seal_secret(&secret)?,
            ..session.clone()
        })?;
        self.update(move |view| {
            if let Some(guard) = &guard {
                #[derive(serde::Deserialize)]
                struct Id {
                    id: String,
                }
                match get_json::<Id>(view, &guard.key)? {
                    Some(current) if current.id == guard.id => {}
                    _ => return Err(guard.gone.clone()),
                }
            }
            let mut ops = vec![Op::put(key.clone(), value.clone())];
            for kv in view.range(SESSIONS_PREFIX, None, SESSION_GC_BATCH) {
                let expired = serde_json::from_slice::<SessionRecord>(&kv.value)
                    .map(|s| s.expires <= now)
                    .unwrap_or(true);
                if expired {
                    ops.push(Op::delete(kv.key));
                }
            }
            Ok((ops, ()))
        })
        .await?;
        Ok(SessionCredentials {
            assumed_role_id: session.user_id(),
            arn: session.arn(),
            access_key_id,
            secret_access_key: secret,
            session_token: session.token,
            expiration: session.expires,
        })
    }

    /// Writes the access-key uses noted in memory since the last flush (see
    /// `usage`); returns how many records changed. For a server that stops,
    /// so a graceful stop loses no "last used" date.
    pub async fn flush_key_usage(&self) -> Result<usize, AwsError> {
        self.usage.flush(self).await
    }

    /// Deletes every expired session; returns how many. For a periodic task.
    pub async fn gc_expired_sessions(&self) -> Result<usize, AwsError> {
        let now = now_secs();
        self.update(move |view| {
            let ops: Vec<Op> = view
                .range(SESSIONS_PREFIX, None, usize::MAX)
                .into_iter()
                .filter(|kv| {
                    serde_json::from_slice::<SessionRecord>(&kv.value)
                        .map(|s| s.expires <= now)
                        .unwrap_or(true)
                })
                .map(|kv| Op::delete(kv.key))
                .collect();
            let n = ops.len();
            Ok((ops, n))
        })
        .await
    }
}

/// A record a write depends on: at `key`, still with `id`, else `gone`.
pub(crate) struct Guard {
    pub key: String,
    pub id: String,
    pub gone: AwsError,
}

/// The text after the last `/` (a user's or role's name in its ARN).
pub(crate) fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The name of a customer managed policy of `account` from its ARN.
pub(crate) fn local_policy_name<'a>(account: &str, arn: &'a str) -> Option<&'a str> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (acct, resource) = rest.split_once(':')?;
    if acct != account || !resource.starts_with("policy/") {
        return None;
    }
    Some(last_segment(resource))
}

pub(crate) fn user_not_found(name: &str) -> AwsError {
    util::no_such_entity(format!("The user with name {name} cannot be found."))
}

pub(crate) fn role_not_found(name: &str) -> AwsError {
    util::no_such_entity(format!("The role with name {name} cannot be found."))
}

fn no_role_for_arn(arn: &str) -> AwsError {
    util::no_such_entity(format!(
        "The role with name {} cannot be found.",
        last_segment(arn)
    ))
}
