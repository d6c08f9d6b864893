//! ECS's native blue/green, linear and canary deployments behind Elastic
//! Load Balancing (`deploymentConfiguration.strategy` BLUE_GREEN | LINEAR |
//! CANARY with `loadBalancers[].advancedConfiguration`): the stored state of
//! the deployment under way ([`BlueGreen`], on the service record, so a
//! restarted server resumes it), which target group a task registers in
//! ([`balancers_for`]), and the listener rule weights a state wants
//! ([`wanted_weights`]).
//!
//! "Blue" is the target group serving production before the deployment,
//! "green" the other one of each load balancer's pair (`targetGroupArn`,
//! `advancedConfiguration.alternateTargetGroupArn`); which one is blue
//! alternates from one deployment to the next
//! ([`ServiceRecord::alternate_serving`]).

use berth_model::shapes::ecs::{DeploymentConfiguration, LoadBalancer};

use crate::state::services::ServiceRecord;
pub(crate) use crate::state::services::{BlueGreen, Weights};
use crate::state::tasks::TaskRecord;

pub(crate) const ROLLING: &str = "ROLLING";
pub(crate) const BLUE_GREEN: &str = "BLUE_GREEN";
pub(crate) const LINEAR: &str = "LINEAR";
pub(crate) const CANARY: &str = "CANARY";

/// ECS's lifecycle stages, in order.
pub(crate) const SCALE_UP: &str = "SCALE_UP";
pub(crate) const TEST_TRAFFIC_SHIFT: &str = "TEST_TRAFFIC_SHIFT";
pub(crate) const PRODUCTION_TRAFFIC_SHIFT: &str = "PRODUCTION_TRAFFIC_SHIFT";
pub(crate) const BAKE_TIME: &str = "BAKE_TIME";
pub(crate) const CLEAN_UP: &str = "CLEAN_UP";

/// Seconds in a deployment's minute unless the server says otherwise.
pub const DEFAULT_MINUTE_SECONDS: f64 = 60.0;

/// The deployment strategy of a configuration (ROLLING when unset).
pub(crate) fn strategy(config: Option<&DeploymentConfiguration>) -> &str {
    config
        .and_then(|c| c.strategy.as_deref())
        .unwrap_or(ROLLING)
}

/// The deployment configuration a service's deployments follow: its own,
/// with CodeDeploy's strategy, steps and bake time for a CODE_DEPLOY
/// service that CodeDeploy deployed.
pub(crate) fn effective_configuration(record: &ServiceRecord) -> DeploymentConfiguration {
    let mut config = record
        .service
        .deployment_configuration
        .clone()
        .unwrap_or_default();
    if let Some(cd) = &record.code_deploy {
        config.strategy = cd.configuration.strategy.clone();
        config.canary_configuration = cd.configuration.canary_configuration.clone();
        config.linear_configuration = cd.configuration.linear_configuration.clone();
        config.bake_time_in_minutes = cd.configuration.bake_time_in_minutes;
    }
    config
}

/// Whether a service deploys by shifting listener rule weights: a native
/// strategy and load balancers with an alternate target group.
pub(crate) fn shifts_traffic(record: &ServiceRecord) -> bool {
    let config = effective_configuration(record);
    let native = matches!(strategy(Some(&config)), BLUE_GREEN | LINEAR | CANARY);
    native && !pairs(record).is_empty()
}

/// One load balancer's pair of target groups and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair {
    /// Index in the service's `loadBalancers`.
    pub index: usize,
    pub blue: String,
    pub green: String,
    pub production_rule: String,
    pub test_rule: Option<String>,
}

/// The service's load balancers with an alternate group, blue and green
/// as they are now.
pub(crate) fn pairs(record: &ServiceRecord) -> Vec<Pair> {
    let mut out = Vec::new();
    if let Some(cd) = &record.code_deploy {
        // CodeDeploy's deployment group: one pair, its listeners.
        let primary = record
            .service
            .load_balancers
            .iter()
            .flatten()
            .next()
            .and_then(|lb| lb.target_group_arn.clone());
        if let Some(primary) = primary {
            let alternate = cd.alternate_target_group_arn.clone();
            let (blue, green) = if record.alternate_serving {
                (alternate, primary)
            } else {
                (primary, alternate)
            };
            out.push(Pair {
                index: 0,
                blue,
                green,
                production_rule: cd.production_listener.clone(),
                test_rule: cd.test_listener.clone().filter(|r| !r.is_empty()),
            });
        }
        return out;
    }
    for (index, lb) in record.service.load_balancers.iter().flatten().enumerate() {
        let Some(adv) = lb.advanced_configuration.as_ref() else {
            continue;
        };
        let (Some(primary), Some(alternate), Some(production)) = (
            lb.target_group_arn.clone(),
            adv.alternate_target_group_arn.clone(),
            adv.production_listener_rule.clone(),
        ) else {
            continue;
        };
        let (blue, green) = if record.alternate_serving {
            (alternate, primary)
        } else {
            (primary, alternate)
        };
        out.push(Pair {
            index,
            blue,
            green,
            production_rule: production,
            test_rule: adv.test_listener_rule.clone().filter(|r| !r.is_empty()),
        });
    }
    out
}

/// The load balancers a task registers with: the green group of each pair
/// for the tasks of a deployment being brought in, the serving (blue) one
/// for every other task.
pub(crate) fn balancers_for(record: &ServiceRecord, task: &TaskRecord) -> Vec<LoadBalancer> {
    let mut balancers = record.service.load_balancers.clone().unwrap_or_default();
    // Gateway routes' target groups come after the service's own, so the
    // blue/green pairs' indexes below still name the service's.
    let routes = crate::state::gateway_routes::balancers(&record.gateway_routes);
    if !shifts_traffic(record) {
        balancers.extend(routes);
        return balancers;
    }
    let green = record
        .blue_green
        .as_ref()
        .is_some_and(|bg| task.task.started_by.as_deref() == Some(bg.deployment.as_str()));
    for pair in pairs(record) {
        if let Some(lb) = balancers.get_mut(pair.index) {
            lb.target_group_arn = Some(if green { pair.green } else { pair.blue });
        }
    }
    balancers.extend(routes);
    balancers
}

/// The rules to set for `weights`: (rule ARN, [(group, weight)]).
pub(crate) fn wanted_weights(
    record: &ServiceRecord,
    weights: Weights,
) -> Vec<(String, Vec<(String, u32)>)> {
    let mut out = Vec::new();
    for pair in pairs(record) {
        let p = weights.production.min(100);
        out.push((
            pair.production_rule.clone(),
            vec![(pair.blue.clone(), 100 - p), (pair.green.clone(), p)],
        ));
        if let Some(test) = pair.test_rule {
            let (b, g) = if weights.test_on_green {
                (0, 100)
            } else {
                (100, 0)
            };
            out.push((test, vec![(pair.blue.clone(), b), (pair.green.clone(), g)]));
        }
    }
    out
}

/// The production percentages a strategy goes through, with the bake (in
/// minutes) after each step but the last.
pub(crate) fn steps(config: &DeploymentConfiguration) -> Vec<(u32, i32)> {
    match strategy(Some(config)) {
        CANARY => {
            let canary = config.canary_configuration.clone().unwrap_or_default();
            let percent = canary.canary_percent.unwrap_or(5.0);
            let bake = canary.canary_bake_time_in_minutes.unwrap_or(10);
            vec![(round_percent(percent), bake), (100, 0)]
        }
        LINEAR => {
            let linear = config.linear_configuration.clone().unwrap_or_default();
            let step = linear.step_percent.unwrap_or(10.0).max(1.0);
            let bake = linear.step_bake_time_in_minutes.unwrap_or(6);
            let mut out = Vec::new();
            let mut total = 0.0;
            loop {
                total += step;
                if total >= 100.0 - f64::EPSILON {
                    out.push((100, 0));
                    return out;
                }
                out.push((round_percent(total), bake));
            }
        }
        _ => vec![(100, 0)],
    }
}

/// A percentage as a whole weight (ELB weights are integers), at least 1.
fn round_percent(p: f64) -> u32 {
    (p.round() as u32).clamp(1, 100)
}

/// The bake (minutes) after production reached `percent`, or `None` when
/// `percent` is the last step.
pub(crate) fn next_step(config: &DeploymentConfiguration, percent: u32) -> Option<(u32, i32)> {
    let list = steps(config);
    let pos = list.iter().position(|(p, _)| *p == percent)?;
    let bake = list[pos].1;
    list.get(pos + 1).map(|(next, _)| (*next, bake))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::shapes::ecs::{CanaryConfiguration, LinearConfiguration};

    #[test]
    fn each_strategy_steps_through_its_percentages() {
        let bg = DeploymentConfiguration {
            strategy: Some(BLUE_GREEN.into()),
            ..Default::default()
        };
        assert_eq!(steps(&bg), vec![(100, 0)]);
        let canary = DeploymentConfiguration {
            strategy: Some(CANARY.into()),
            canary_configuration: Some(CanaryConfiguration {
                canary_percent: Some(10.0),
                canary_bake_time_in_minutes: Some(3),
            }),
            ..Default::default()
        };
        assert_eq!(steps(&canary), vec![(10, 3), (100, 0)]);
        assert_eq!(next_step(&canary, 10), Some((100, 3)));
        assert_eq!(next_step(&canary, 100), None);
        let linear = DeploymentConfiguration {
            strategy: Some(LINEAR.into()),
            linear_configuration: Some(LinearConfiguration {
                step_percent: Some(25.0),
                step_bake_time_in_minutes: Some(2),
            }),
            ..Default::default()
        };
        assert_eq!(steps(&linear), vec![(25, 2), (50, 2), (75, 2), (100, 0)]);
        let linear30 = DeploymentConfiguration {
            strategy: Some(LINEAR.into()),
            linear_configuration: Some(LinearConfiguration {
                step_percent: Some(30.0),
                step_bake_time_in_minutes: Some(1),
            }),
            ..Default::default()
        };
        assert_eq!(steps(&linear30), vec![(30, 1), (60, 1), (90, 1), (100, 0)]);
    }
}
