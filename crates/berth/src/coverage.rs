//! `berth not-implemented`: every operation of the AWS models Berth serves
//! that Berth leaves unimplemented, with the reason, as JSON by service
//! (the botocore service names). The conformance test walks every model
//! operation and allows only these to answer "not implemented".

use std::collections::BTreeMap;

/// The lists, by service; the IAM crate's entries are prefixed `iam:` or
/// `sts:`.
pub fn not_implemented() -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let mut out: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    let mut add = |service: &'static str, list: &[(&str, &str)]| {
        let entry = out.entry(service).or_default();
        for (operation, reason) in list {
            entry.insert(operation.to_string(), reason.to_string());
        }
    };
    add("ecs", berth_ecs::NOT_IMPLEMENTED);
    add("ecr", berth_registry::NOT_IMPLEMENTED);
    add("ec2", berth_ec2::NOT_IMPLEMENTED);
    add("logs", berth_logs::NOT_IMPLEMENTED);
    add(
        "secretsmanager",
        berth_secrets::secretsmanager::NOT_IMPLEMENTED,
    );
    add("ssm", berth_secrets::ssm::NOT_IMPLEMENTED);
    add("servicediscovery", berth_discovery::NOT_IMPLEMENTED);
    add("acm", berth_acm::NOT_IMPLEMENTED);
    add("codedeploy", berth_codedeploy::NOT_IMPLEMENTED);
    add("elbv2", berth_elb::NOT_IMPLEMENTED);
    for (prefixed, reason) in berth_iam::NOT_IMPLEMENTED {
        if let Some((service, operation)) = prefixed.split_once(':') {
            let service = if service == "sts" { "sts" } else { "iam" };
            out.entry(service)
                .or_default()
                .insert(operation.to_string(), reason.to_string());
        }
    }
    out
}

pub fn print() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&not_implemented())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_entry_has_a_reason() {
        for (service, list) in super::not_implemented() {
            for (operation, reason) in list {
                assert!(
                    reason.len() > 20,
                    "{service}:{operation} needs a reason, has {reason:?}"
                );
            }
        }
    }
}
