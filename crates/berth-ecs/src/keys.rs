//! Where ECS keeps its records in the store. Every key starts with
//! `/ecs/<account>/<region>/` so accounts and regions never see each other.

use berth_model::RequestContext;

/// The account and region a request acts in.
#[derive(Clone, Debug, PartialEq, Eq)]
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

    /// Services of a cluster.
    pub fn services(&self, cluster: &str) -> String {
        format!("{}services/{cluster}/", self.root())
    }

    /// Tasks of a cluster.
    pub fn tasks(&self, cluster: &str) -> String {
        format!("{}tasks/{cluster}/", self.root())
    }
}
