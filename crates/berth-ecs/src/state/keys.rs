//! Where ECS keeps its records in the store. Every key starts with
//! `/ecs/<account>/<region>/` so accounts and regions never see each other.

use berth_model::RequestContext;

/// The account and region a request acts in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn of(ctx: &RequestContext) -> Scope {
        Scope {
            account: ctx.account_id.clone(),
            region: ctx.region.clone(),
        }
    }

    fn root(&self) -> String {
        format!("/ecs/{}/{}/", self.account, self.region)
    }

    pub fn arn(&self, resource: &str) -> String {
        format!("arn:aws:ecs:{}:{}:{resource}", self.region, self.account)
    }

    pub fn clusters(&self) -> String {
        format!("{}clusters/", self.root())
    }

    pub fn cluster(&self, name: &str) -> String {
        format!("{}clusters/{name}", self.root())
    }

    /// Task definition revisions, zero-padded so key order is revision order.
    pub fn task_definitions(&self) -> String {
        format!("{}taskdefs/", self.root())
    }

    pub fn task_definition_family(&self, family: &str) -> String {
        format!("{}taskdefs/{family}/", self.root())
    }

    pub fn task_definition(&self, family: &str, revision: u32) -> String {
        format!("{}taskdefs/{family}/{revision:010}", self.root())
    }

    /// The last revision number a family handed out; survives deletion so
    /// revisions only grow.
    pub fn family_counter(&self, family: &str) -> String {
        format!("{}taskdef-families/{family}", self.root())
    }

    pub fn family_counters(&self) -> String {
        format!("{}taskdef-families/", self.root())
    }

    pub fn account_settings(&self) -> String {
        format!("{}account-settings/", self.root())
    }

    /// A setting for one principal, or for the account default (`principal` = "").
    pub fn account_setting(&self, name: &str, principal: &str) -> String {
        format!("{}account-settings/{name}/{principal}", self.root())
    }
}

impl Scope {
    /// Container instances of a cluster.
    pub fn instances(&self, cluster: &str) -> String {
        format!("{}instances/{cluster}/", self.root())
    }

    /// Container instances of every cluster (instance ids are unique in an
    /// account+region, so Fargate hosts are found whichever cluster they
    /// registered in).
    pub fn all_instances(&self) -> String {
        format!("{}instances/", self.root())
    }

    /// Index of the tasks an instance runs, whichever cluster they belong
    /// to (a Fargate host runs tasks of every cluster):
    /// `instance-tasks/<host cluster>/<instance id>/<task cluster>/<task id>`.
    /// Every write of a task writes its entry too, so a watch on one
    /// instance's prefix sees every change of its tasks.
    pub fn instance_tasks(&self, host_cluster: &str, instance_id: &str) -> String {
        format!(
            "{}instance-tasks/{host_cluster}/{instance_id}/",
            self.root()
        )
    }

    /// Written (with a fresh random value) by every change of the instance's
    /// `instance-tasks/` entries, in the same mutation: its revision says
    /// whether what was computed from the entries is still current.
    pub fn instance_tasks_version(&self, host_cluster: &str, instance_id: &str) -> String {
        format!(
            "{}instance-tasks-version/{host_cluster}/{instance_id}",
            self.root()
        )
    }

    /// The index entries of every instance of a cluster.
    pub fn cluster_instance_tasks(&self, host_cluster: &str) -> String {
        format!("{}instance-tasks/{host_cluster}/", self.root())
    }

    pub fn instance_task(
        &self,
        host_cluster: &str,
        instance_id: &str,
        task_cluster: &str,
        task_id: &str,
    ) -> String {
        format!(
            "{}instance-tasks/{host_cluster}/{instance_id}/{task_cluster}/{task_id}",
            self.root()
        )
    }

    /// Services of a cluster.
    pub fn services(&self, cluster: &str) -> String {
        format!("{}services/{cluster}/", self.root())
    }

    /// The services of every cluster of the account and region.
    pub fn all_services(&self) -> String {
        format!("{}services/", self.root())
    }

    /// Tasks of every cluster.
    pub fn all_tasks(&self) -> String {
        format!("{}tasks/", self.root())
    }

    /// Tasks of a cluster.
    pub fn tasks(&self, cluster: &str) -> String {
        format!("{}tasks/{cluster}/", self.root())
    }
}

impl Scope {
    pub fn instance(&self, cluster: &str, id: &str) -> String {
        format!("{}instances/{cluster}/{id}", self.root())
    }

    /// Container instance id by the host's name, so an agent that registers
    /// again gets its instance back.
    pub fn instance_name(&self, cluster: &str, name: &str) -> String {
        format!("{}instance-names/{cluster}/{name}", self.root())
    }

    pub fn task(&self, cluster: &str, id: &str) -> String {
        format!("{}tasks/{cluster}/{id}", self.root())
    }

    /// A cluster's tasks that are not STOPPED (value: what ListTasks and
    /// the cluster's counts need, see `index`).
    pub fn live_tasks(&self, cluster: &str) -> String {
        format!("{}live-tasks/{cluster}/", self.root())
    }

    pub fn live_task(&self, cluster: &str, id: &str) -> String {
        format!("{}live-tasks/{cluster}/{id}", self.root())
    }

    /// STOPPED tasks by when they stopped (milliseconds, zero-padded so
    /// key order is time order), for the collector.
    pub fn stopped_tasks(&self) -> String {
        format!("{}stopped-tasks/", self.root())
    }

    pub fn stopped_task(&self, stopped_at_ms: u64, cluster: &str, id: &str) -> String {
        format!(
            "{}stopped-tasks/{stopped_at_ms:015}/{cluster}/{id}",
            self.root()
        )
    }

    /// The first `stopped-tasks/` key of tasks that stopped at or after
    /// `stopped_at_ms`.
    pub fn stopped_tasks_from(&self, stopped_at_ms: u64) -> String {
        format!("{}stopped-tasks/{stopped_at_ms:015}/", self.root())
    }

    /// awsvpc tasks whose interface is not yet DELETED, for the network
    /// controller.
    pub fn eni_tasks(&self) -> String {
        format!("{}eni-tasks/", self.root())
    }

    pub fn eni_task(&self, cluster: &str, id: &str) -> String {
        format!("{}eni-tasks/{cluster}/{id}", self.root())
    }

    /// Tasks started by one RunTask `clientToken`.
    pub fn task_client_token(&self, cluster: &str, token: &str) -> String {
        format!("{}task-tokens/{cluster}/{token}", self.root())
    }
}

/// Where an `instance-tasks/` entry's key names its task: the task's
/// cluster and id, after the instance's prefix.
pub(crate) fn indexed_task<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    key.strip_prefix(prefix)?.split_once('/')
}

/// The account, region and rest of an ECS key
/// (`/ecs/<account>/<region>/<rest>`).
pub(crate) fn split_key(key: &str) -> Option<(Scope, &str)> {
    let rest = key.strip_prefix("/ecs/")?;
    let (account, rest) = rest.split_once('/')?;
    let (region, rest) = rest.split_once('/')?;
    Some((
        Scope {
            account: account.to_string(),
            region: region.to_string(),
        },
        rest,
    ))
}

/// Whether `key` is a task record (`/ecs/<account>/<region>/tasks/<cluster>/<id>`).
/// The task key an `eni-tasks/` entry stands for.
pub(crate) fn task_of_eni_entry(key: &str) -> Option<String> {
    let (scope, rest) = split_key(key)?;
    let (cluster, id) = rest.strip_prefix("eni-tasks/")?.split_once('/')?;
    (!id.is_empty() && !id.contains('/')).then(|| scope.task(cluster, id))
}

/// The account/region pairs that have ECS state: one short range per pair,
/// skipping over everything each one holds.
pub(crate) fn scopes(view: &(impl berth_store::ReadView + ?Sized)) -> Vec<Scope> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = view.range("/ecs/", after.as_deref(), 1);
        let Some(kv) = page.first() else {
            return out;
        };
        let Some((scope, _)) = split_key(&kv.key) else {
            return out;
        };
        // DEL sorts after every character a key here uses.
        after = Some(format!("/ecs/{}/{}/\u{7f}", scope.account, scope.region));
        out.push(scope);
    }
}

pub(crate) fn is_task_key(key: &str) -> bool {
    split_key(key).is_some_and(|(_, rest)| {
        rest.strip_prefix("tasks/")
            .is_some_and(|r| r.split('/').count() == 2)
    })
}

/// Credentials minted for agents, by access key id (global: the key itself
/// names the account, region and instance it is bound to).
pub(crate) fn agent_credential(access_key_id: &str) -> String {
    format!("/berth/agent-credentials/{access_key_id}")
}

impl Scope {
    pub fn service(&self, cluster: &str, name: &str) -> String {
        format!("{}services/{cluster}/{name}", self.root())
    }
}

impl Scope {
    /// Index of a service's tasks: `svc-tasks/<cluster>/<service>/<task id>`
    /// (empty values), so the controller reads a service's tasks without
    /// scanning the cluster's.
    pub fn service_tasks(&self, cluster: &str, service: &str) -> String {
        format!("{}svc-tasks/{cluster}/{service}/", self.root())
    }

    pub fn service_task(&self, cluster: &str, service: &str, task_id: &str) -> String {
        format!("{}svc-tasks/{cluster}/{service}/{task_id}", self.root())
    }
}
