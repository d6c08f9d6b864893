//! The predefined deployment configurations of the ECS compute platform.

use berth_model::shapes::codedeploy as sh;

/// The deployment configuration a group uses when it names none.
pub const DEFAULT_ECS: &str = "CodeDeployDefault.ECSAllAtOnce";

/// The prefix AWS reserves for its own configurations.
pub const RESERVED_PREFIX: &str = "CodeDeployDefault.";

/// (name, traffic routing type, percentage, interval in minutes).
const PREDEFINED: [(&str, &str, i32, i32); 5] = [
    ("CodeDeployDefault.ECSAllAtOnce", "AllAtOnce", 0, 0),
    (
        "CodeDeployDefault.ECSCanary10Percent15Minutes",
        "TimeBasedCanary",
        10,
        15,
    ),
    (
        "CodeDeployDefault.ECSCanary10Percent5Minutes",
        "TimeBasedCanary",
        10,
        5,
    ),
    (
        "CodeDeployDefault.ECSLinear10PercentEvery1Minutes",
        "TimeBasedLinear",
        10,
        1,
    ),
    (
        "CodeDeployDefault.ECSLinear10PercentEvery3Minutes",
        "TimeBasedLinear",
        10,
        3,
    ),
];

/// The names of the predefined ECS configurations, sorted.
pub fn names() -> impl Iterator<Item = &'static str> {
    PREDEFINED.iter().map(|(name, ..)| *name)
}

/// A predefined configuration's routing, if `name` is one.
pub fn predefined(name: &str) -> Option<sh::TrafficRoutingConfig> {
    let (_, kind, percentage, interval) = PREDEFINED.iter().find(|(n, ..)| *n == name)?;
    Some(routing(kind, *percentage, *interval))
}

pub fn routing(kind: &str, percentage: i32, interval: i32) -> sh::TrafficRoutingConfig {
    let mut config = sh::TrafficRoutingConfig {
        r#type: Some(kind.to_string()),
        ..Default::default()
    };
    match kind {
        "TimeBasedCanary" => {
            config.time_based_canary = Some(sh::TimeBasedCanary {
                canary_percentage: Some(percentage),
                canary_interval: Some(interval),
            })
        }
        "TimeBasedLinear" => {
            config.time_based_linear = Some(sh::TimeBasedLinear {
                linear_percentage: Some(percentage),
                linear_interval: Some(interval),
            })
        }
        _ => {}
    }
    config
}

/// A stable id for a predefined configuration (AWS shows a UUID).
pub fn predefined_id(name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// What ECS is asked to do for a configuration's routing.
pub fn traffic(config: &sh::TrafficRoutingConfig) -> crate::TrafficRouting {
    match config.r#type.as_deref() {
        Some("TimeBasedCanary") => {
            let c = config.time_based_canary.clone().unwrap_or_default();
            crate::TrafficRouting::Canary {
                percentage: c.canary_percentage.unwrap_or(10),
                interval_minutes: c.canary_interval.unwrap_or(5),
            }
        }
        Some("TimeBasedLinear") => {
            let c = config.time_based_linear.clone().unwrap_or_default();
            crate::TrafficRouting::Linear {
                percentage: c.linear_percentage.unwrap_or(10),
                interval_minutes: c.linear_interval.unwrap_or(1),
            }
        }
        _ => crate::TrafficRouting::AllAtOnce,
    }
}
