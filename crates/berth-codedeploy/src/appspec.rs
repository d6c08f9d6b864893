//! The AppSpec of an Amazon ECS deployment (YAML or JSON: JSON is YAML).
//!
//! ```yaml
//! version: 0.0
//! Resources:
//!   - TargetService:
//!       Type: AWS::ECS::Service
//!       Properties:
//!         TaskDefinition: "arn:aws:ecs:us-east-1:000000000000:task-definition/web:2"
//!         LoadBalancerInfo: {ContainerName: "app", ContainerPort: 80}
//!         PlatformVersion: "LATEST"
//!         NetworkConfiguration: {AwsvpcConfiguration: {Subnets: [..], SecurityGroups: [..], AssignPublicIp: DISABLED}}
//!         CapacityProviderStrategy: [{CapacityProvider: FARGATE, Weight: 1, Base: 0}]
//! Hooks:
//!   - BeforeInstall: "fn"
//! ```
//!
//! CodeDeploy accepts an AppSpec it cannot read at CreateDeployment and
//! fails the deployment (`INVALID_REVISION`); [`parse`] answers the message
//! the deployment's errorInformation carries.

use serde_json::{json, Map, Value};

/// The lifecycle hooks of an ECS deployment, in order.
pub const HOOK_EVENTS: [&str; 5] = [
    "BeforeInstall",
    "AfterInstall",
    "AfterAllowTestTraffic",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
];

/// What an ECS AppSpec says.
#[derive(Debug, Clone, PartialEq)]
pub struct EcsAppSpec {
    pub task_definition: String,
    pub container_name: String,
    pub container_port: i32,
    pub platform_version: Option<String>,
    /// ECS's `networkConfiguration` shape.
    pub network_configuration: Option<Value>,
    /// ECS's `capacityProviderStrategy` shape.
    pub capacity_provider_strategy: Option<Value>,
    /// (lifecycle event, Lambda function) pairs.
    pub hooks: Vec<(String, String)>,
}

const PREFIX: &str = "The deployment failed because the AppSpec file that specifies the \
                      deployment configuration is missing or has an invalid configuration.";

fn invalid(detail: impl std::fmt::Display) -> String {
    format!("{PREFIX} {detail}")
}

/// A member of a mapping, its name matched case-insensitively (CodeDeploy
/// reads `Resources` and `resources` alike).
fn member<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(value: Option<&Value>, what: &str) -> Result<Option<Vec<String>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| text(v).ok_or_else(|| invalid(format!("{what} must be a list of strings."))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid(format!("{what} must be a list of strings."))),
    }
}

/// Parses an ECS AppSpec; `Err` is the message of the failed deployment.
pub fn parse(content: &str) -> Result<EcsAppSpec, String> {
    let doc: Value = serde_norway::from_str(content).map_err(|_| {
        invalid("The input AppSpec file is a not well-formed yaml. The template cannot be parsed.")
    })?;
    let Value::Object(root) = doc else {
        return Err(invalid(
            "The input AppSpec file is a not well-formed yaml. The template cannot be parsed.",
        ));
    };
    match member(&root, "version").and_then(text).as_deref() {
        Some("0.0") | Some("0") => {}
        Some(other) => {
            return Err(invalid(format!(
                "The AppSpec file version {other} is not supported: the version must be 0.0."
            )))
        }
        None => return Err(invalid("The AppSpec file must specify version 0.0.")),
    }
    let resources = match member(&root, "Resources") {
        Some(Value::Array(items)) => items,
        _ => {
            return Err(invalid(
                "The AppSpec file must have a Resources section listing one TargetService.",
            ))
        }
    };
    if resources.len() != 1 {
        return Err(invalid(format!(
            "The Resources section must list exactly one resource for an Amazon ECS \
             deployment; it lists {}.",
            resources.len()
        )));
    }
    let Some(Value::Object(entry)) = resources.first() else {
        return Err(invalid(
            "Each resource of the Resources section must be a mapping.",
        ));
    };
    let Some((_, Value::Object(target))) = entry.iter().next() else {
        return Err(invalid(
            "The resource must be a mapping with Type and Properties.",
        ));
    };
    match member(target, "Type").and_then(text).as_deref() {
        Some("AWS::ECS::Service") => {}
        Some(other) => {
            return Err(invalid(format!(
                "The resource type {other} is not valid for an Amazon ECS deployment: use \
                 AWS::ECS::Service."
            )))
        }
        None => return Err(invalid("The resource must have Type AWS::ECS::Service.")),
    }
    let Some(Value::Object(props)) = member(target, "Properties") else {
        return Err(invalid("The resource must have Properties."));
    };
    let task_definition = member(props, "TaskDefinition")
        .and_then(text)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| invalid("The TargetService must specify a TaskDefinition."))?;
    let Some(Value::Object(lb)) = member(props, "LoadBalancerInfo") else {
        return Err(invalid(
            "The TargetService must specify LoadBalancerInfo with ContainerName and \
             ContainerPort.",
        ));
    };
    let container_name = member(lb, "ContainerName")
        .and_then(text)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("LoadBalancerInfo must specify a ContainerName."))?;
    let container_port = member(lb, "ContainerPort")
        .and_then(text)
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| {
            invalid("LoadBalancerInfo must specify a ContainerPort between 1 and 65535.")
        })?;
    let platform_version = member(props, "PlatformVersion").and_then(text);
    let network_configuration = match member(props, "NetworkConfiguration") {
        None | Some(Value::Null) => None,
        Some(Value::Object(nc)) => {
            let Some(Value::Object(vpc)) = member(nc, "AwsvpcConfiguration") else {
                return Err(invalid(
                    "NetworkConfiguration must specify AwsvpcConfiguration.",
                ));
            };
            let mut out = Map::new();
            if let Some(subnets) = string_list(member(vpc, "Subnets"), "Subnets")? {
                out.insert("subnets".into(), json!(subnets));
            }
            if let Some(groups) = string_list(member(vpc, "SecurityGroups"), "SecurityGroups")? {
                out.insert("securityGroups".into(), json!(groups));
            }
            if let Some(assign) = member(vpc, "AssignPublicIp").and_then(text) {
                if assign != "ENABLED" && assign != "DISABLED" {
                    return Err(invalid(format!(
                        "AssignPublicIp must be ENABLED or DISABLED, not {assign}."
                    )));
                }
                out.insert("assignPublicIp".into(), json!(assign));
            }
            Some(json!({ "awsvpcConfiguration": out }))
        }
        Some(_) => return Err(invalid("NetworkConfiguration must be a mapping.")),
    };
    let capacity_provider_strategy = match member(props, "CapacityProviderStrategy") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                let Value::Object(item) = item else {
                    return Err(invalid(
                        "Each CapacityProviderStrategy item must be a mapping.",
                    ));
                };
                let provider =
                    member(item, "CapacityProvider")
                        .and_then(text)
                        .ok_or_else(|| {
                            invalid(
                                "Each CapacityProviderStrategy item must name a CapacityProvider.",
                            )
                        })?;
                let mut entry = Map::new();
                entry.insert("capacityProvider".into(), json!(provider));
                for (from, to) in [("Weight", "weight"), ("Base", "base")] {
                    if let Some(v) = member(item, from) {
                        let n = text(v).and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| {
                            invalid(format!("CapacityProviderStrategy {from} must be a number."))
                        })?;
                        entry.insert(to.into(), json!(n));
                    }
                }
                out.push(Value::Object(entry));
            }
            Some(Value::Array(out))
        }
        Some(_) => return Err(invalid("CapacityProviderStrategy must be a list.")),
    };
    let mut hooks = Vec::new();
    match member(&root, "Hooks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Value::Object(item) = item else {
                    return Err(invalid(
                        "Each hook must map a lifecycle event to a function.",
                    ));
                };
                for (event, function) in item {
                    let Some(canonical) =
                        HOOK_EVENTS.iter().find(|e| e.eq_ignore_ascii_case(event))
                    else {
                        return Err(invalid(format!(
                            "The lifecycle event {event} is not valid for an Amazon ECS \
                             deployment: use one of {}.",
                            HOOK_EVENTS.join(", ")
                        )));
                    };
                    let function = text(function).ok_or_else(|| {
                        invalid(format!("The hook {event} must name a Lambda function."))
                    })?;
                    hooks.push((canonical.to_string(), function));
                }
            }
        }
        Some(_) => return Err(invalid("The Hooks section must be a list.")),
    }
    Ok(EcsAppSpec {
        task_definition,
        container_name,
        container_port,
        platform_version,
        network_configuration,
        capacity_provider_strategy,
        hooks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
version: 0.0
Resources:
  - TargetService:
      Type: AWS::ECS::Service
      Properties:
        TaskDefinition: "arn:aws:ecs:us-east-1:000000000000:task-definition/web:2"
        LoadBalancerInfo:
          ContainerName: "app"
          ContainerPort: 80
        PlatformVersion: "LATEST"
        NetworkConfiguration:
          AwsvpcConfiguration:
            Subnets: ["subnet-1", "subnet-2"]
            SecurityGroups: ["sg-1"]
            AssignPublicIp: "DISABLED"
        CapacityProviderStrategy:
          - CapacityProvider: FARGATE
            Weight: 1
            Base: 0
"#;

    #[test]
    fn yaml_appspec() {
        let spec = parse(YAML).unwrap();
        assert_eq!(
            spec.task_definition,
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:2"
        );
        assert_eq!(spec.container_name, "app");
        assert_eq!(spec.container_port, 80);
        assert_eq!(spec.platform_version.as_deref(), Some("LATEST"));
        assert_eq!(
            spec.network_configuration,
            Some(
                json!({"awsvpcConfiguration": {"subnets": ["subnet-1", "subnet-2"],
                "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"}})
            )
        );
        assert_eq!(
            spec.capacity_provider_strategy,
            Some(json!([{"capacityProvider": "FARGATE", "weight": 1, "base": 0}]))
        );
        assert!(spec.hooks.is_empty());
    }

    #[test]
    fn json_appspec_with_hooks() {
        let content = r#"{"version": 0.0, "Resources": [{"TargetService": {"Type": "AWS::ECS::Service",
            "Properties": {"TaskDefinition": "web:3", "LoadBalancerInfo": {"ContainerName": "c",
            "ContainerPort": "8080"}}}}], "Hooks": [{"BeforeInstall": "check"},
            {"AfterAllowTraffic": "validate"}]}"#;
        let spec = parse(content).unwrap();
        assert_eq!(spec.task_definition, "web:3");
        assert_eq!(spec.container_port, 8080);
        assert_eq!(spec.network_configuration, None);
        assert_eq!(
            spec.hooks,
            vec![
                ("BeforeInstall".to_string(), "check".to_string()),
                ("AfterAllowTraffic".to_string(), "validate".to_string())
            ]
        );
    }

    #[test]
    fn bad_appspecs() {
        let cases = [
            ("version: 0.0\nResources: [", "not well-formed"),
            ("just text", "not well-formed"),
            ("Resources: []", "version 0.0"),
            ("version: 1\nResources: []", "version 1 is not supported"),
            ("version: 0.0", "Resources section"),
            ("version: 0.0\nResources: []", "exactly one resource"),
            (
                "version: 0.0\nResources:\n  - T:\n      Type: AWS::Lambda::Function\n",
                "AWS::Lambda::Function is not valid",
            ),
            (
                "version: 0.0\nResources:\n  - T:\n      Type: AWS::ECS::Service\n      Properties:\n        LoadBalancerInfo: {ContainerName: a, ContainerPort: 80}\n",
                "TaskDefinition",
            ),
            (
                "version: 0.0\nResources:\n  - T:\n      Type: AWS::ECS::Service\n      Properties:\n        TaskDefinition: t\n",
                "LoadBalancerInfo",
            ),
            (
                "version: 0.0\nResources:\n  - T:\n      Type: AWS::ECS::Service\n      Properties:\n        TaskDefinition: t\n        LoadBalancerInfo: {ContainerName: a, ContainerPort: 70000}\n",
                "ContainerPort",
            ),
            (
                "version: 0.0\nResources:\n  - T:\n      Type: AWS::ECS::Service\n      Properties:\n        TaskDefinition: t\n        LoadBalancerInfo: {ContainerName: a, ContainerPort: 80}\nHooks:\n  - BeforeBlockTraffic: f\n",
                "BeforeBlockTraffic is not valid",
            ),
        ];
        for (content, needle) in cases {
            let err = parse(content).unwrap_err();
            assert!(err.starts_with(PREFIX), "{err}");
            assert!(err.contains(needle), "{content:?}: {err}");
        }
    }
}
