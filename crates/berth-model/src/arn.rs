//! Amazon Resource Names: `arn:partition:service:region:account:resource`.

use std::fmt;

/// A parsed ARN. The resource part keeps its own separators (`cluster/default`,
/// `task-definition/web:3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    pub resource: String,
}

/// The ARN of SSM parameter `name`: `/app/db` and `app/db` both give
/// `arn:aws:ssm:<region>:<account>:parameter/app/db`, as SSM reports them.
pub fn ssm_parameter_arn(region: &str, account: &str, name: &str) -> String {
    let sep = if name.starts_with('/') { "" } else { "/" };
    format!("arn:aws:ssm:{region}:{account}:parameter{sep}{name}")
}

impl Arn {
    /// Parses an ARN; returns `None` when the text is not one.
    pub fn parse(text: &str) -> Option<Arn> {
        let mut parts = text.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let partition = parts.next()?;
        let service = parts.next()?;
        let region = parts.next()?;
        let account = parts.next()?;
        let resource = parts.next()?;
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return None;
        }
        Some(Arn {
            partition: partition.to_string(),
            service: service.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            resource: resource.to_string(),
        })
    }

    /// The resource type before the first `/` (or `:`), e.g. `cluster`.
    pub fn resource_type(&self) -> &str {
        let end = self
            .resource
            .find(['/', ':'])
            .unwrap_or(self.resource.len());
        &self.resource[..end]
    }

    /// The resource after its type and separator, e.g. `default` for `cluster/default`.
    pub fn resource_id(&self) -> &str {
        let ty = self.resource_type().len();
        self.resource.get(ty + 1..).unwrap_or("")
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_task_definition_arn() {
        let a = Arn::parse("arn:aws:ecs:us-east-1:000000000000:task-definition/web:3").unwrap();
        assert_eq!(a.service, "ecs");
        assert_eq!(a.resource_type(), "task-definition");
        assert_eq!(a.resource_id(), "web:3");
    }

    #[test]
    fn rejects_non_arns() {
        assert!(Arn::parse("default").is_none());
        assert!(Arn::parse("arn:aws:ecs").is_none());
        assert!(Arn::parse("arn::ecs:r:a:x").is_none());
    }

    proptest! {
        #[test]
        fn display_round_trips(service in "[a-z]{1,10}", region in "[a-z0-9-]{0,12}",
                               account in "[0-9]{0,12}", resource in "[a-zA-Z0-9/:_-]{1,40}") {
            let arn = Arn { partition: "aws".into(), service, region, account, resource };
            prop_assert_eq!(Arn::parse(&arn.to_string()), Some(arn));
        }
    }
}
