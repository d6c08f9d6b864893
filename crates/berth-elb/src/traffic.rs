//! Traffic shifting for ECS's blue/green, linear and canary deployments:
//! a listener rule's forward action (or a listener's default action, its
//! default rule) read, and its target groups' weights set in one store
//! mutation.

use berth_model::AwsError;

use crate::model::{Action, State};
use crate::wire::error;
use crate::ElbService;

/// A rule's forward action as ECS needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleForward {
    /// The rule's ARN (a listener's default rule when a listener's ARN or
    /// its default rule's ARN was given).
    pub rule_arn: String,
    pub listener_arn: String,
    pub load_balancer_arn: String,
    /// The forward action's target groups and weights (empty: the rule
    /// does not forward).
    pub groups: Vec<(String, Option<u32>)>,
}

fn rule_not_found(arn: &str) -> AwsError {
    error(
        "RuleNotFound",
        format!("One or more rules not found: '{arn}'"),
    )
}

/// The actions of a rule, a listener's default rule, or a listener (its
/// default actions), with the rule and listener ARNs.
fn actions_of<'a>(s: &'a State, arn: &str) -> Option<(String, String, &'a [Action])> {
    if let Some(rule) = s.rules.get(arn) {
        return Some((rule.arn.clone(), rule.listener_arn.clone(), &rule.actions));
    }
    s.listeners
        .values()
        .find(|l| l.arn == arn || l.default_rule_arn == arn)
        .map(|l| {
            (
                l.default_rule_arn.clone(),
                l.arn.clone(),
                l.default_actions.as_slice(),
            )
        })
}

fn actions_of_mut<'a>(s: &'a mut State, arn: &str) -> Option<&'a mut Vec<Action>> {
    if s.rules.contains_key(arn) {
        return s.rules.get_mut(arn).map(|r| &mut r.actions);
    }
    s.listeners
        .values_mut()
        .find(|l| l.arn == arn || l.default_rule_arn == arn)
        .map(|l| &mut l.default_actions)
}

impl ElbService {
    /// CodeDeploy: the ARN of the target group named `name` (deployment
    /// groups name their pair by name).
    pub fn target_group_arn(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<String>, AwsError> {
        let s = self.read(account, region)?;
        Ok(s.target_groups
            .values()
            .find(|g| g.name == name)
            .map(|g| g.arn.clone()))
    }

    /// ECS: a listener rule's forward action (`arn`: a rule, a listener's
    /// default rule, or a listener).
    pub fn rule_forward(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<RuleForward, AwsError> {
        let s = self.read(account, region)?;
        let (rule_arn, listener_arn, actions) =
            actions_of(&s, arn).ok_or_else(|| rule_not_found(arn))?;
        let load_balancer_arn = s
            .listeners
            .get(&listener_arn)
            .map(|l| l.lb_arn.clone())
            .or_else(|| {
                s.listeners
                    .values()
                    .find(|l| l.arn == listener_arn)
                    .map(|l| l.lb_arn.clone())
            })
            .unwrap_or_default();
        let groups = actions
            .iter()
            .find_map(|a| a.forward.as_ref())
            .map(|f| f.groups.clone())
            .unwrap_or_default();
        Ok(RuleForward {
            rule_arn,
            listener_arn,
            load_balancer_arn,
            groups,
        })
    }

    /// ECS: sets the weights of a rule's forward action to exactly
    /// `weights` (target group, weight), in one mutation. The rule must
    /// forward.
    pub async fn set_forward_weights(
        &self,
        account: &str,
        region: &str,
        arn: &str,
        weights: &[(String, u32)],
    ) -> Result<(), AwsError> {
        let arn = arn.to_string();
        let weights: Vec<(String, Option<u32>)> =
            weights.iter().map(|(g, w)| (g.clone(), Some(*w))).collect();
        self.mutate(account, region, move |s| {
            for (group, _) in &weights {
                if !s.target_groups.contains_key(group) {
                    return Err(error(
                        "TargetGroupNotFound",
                        format!("One or more target groups not found: '{group}'"),
                    ));
                }
            }
            let actions = actions_of_mut(s, &arn).ok_or_else(|| rule_not_found(&arn))?;
            let forward = actions
                .iter_mut()
                .find_map(|a| a.forward.as_mut())
                .ok_or_else(|| {
                    error(
                        "InvalidConfigurationRequest",
                        format!("The rule '{arn}' has no forward action."),
                    )
                })?;
            forward.groups = weights.clone();
            forward.plain = false;
            Ok(())
        })
        .await
    }
}
