//! Security groups of awsvpc tasks, enforced with nftables inside the
//! task's own network namespace (the pause container's): what the server's
//! `GetNetworkPolicy` answers becomes one `inet berth_sg` table whose
//! chains drop everything the rules do not allow.
//!
//! Rendering is pure ([`render_ruleset`]); applying runs
//! `nsenter --net=/proc/<pid>/ns/net nft -f -` so the whole table is
//! replaced in one transaction (no moment without rules).

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use berth_model::agent_protocol::{GetNetworkPolicyResponse, NetworkRule};
use tokio::io::AsyncWriteExt;

use crate::task_endpoint::ENDPOINT_IP;

/// The table the agent owns in a task's namespace.
pub const TABLE: &str = "berth_sg";
/// How long one `nft` run may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    #[error("nft did not finish within {0:?}")]
    Timeout(Duration),
}

/// A CIDR block checked to be IPv4 (anything else could smuggle nft
/// syntax into the ruleset), in canonical text.
fn ipv4_cidr(text: &str) -> Option<String> {
    let (address, prefix) = match text.trim().split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().ok()?),
        None => (text.trim(), 32),
    };
    let address: Ipv4Addr = address.parse().ok()?;
    if prefix > 32 {
        return None;
    }
    // nft rejects host bits below the prefix; keep the network part.
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    let network = Ipv4Addr::from(u32::from(address) & mask);
    Some(format!("{network}/{prefix}"))
}

/// A port range for nft: `None` means every port.
fn port_range(from: Option<i32>, to: Option<i32>) -> Result<Option<String>, String> {
    let (from, to) = match (from, to) {
        (None, None) => return Ok(None),
        (Some(f), None) => (f, f),
        (None, Some(t)) => (t, t),
        (Some(f), Some(t)) => (f, t),
    };
    // EC2 writes "all ports" as -1 (or 0..65535).
    if from < 0 || to < 0 || (from == 0 && to == 65535) {
        return Ok(None);
    }
    if from > 65535 || to > 65535 || from > to {
        return Err(format!("invalid port range {from}-{to}"));
    }
    Ok(Some(if from == to {
        from.to_string()
    } else {
        format!("{from}-{to}")
    }))
}

/// The nft match for a rule's protocol and ports (empty: any traffic),
/// or why the rule cannot be expressed.
fn protocol_match(rule: &NetworkRule) -> Result<String, String> {
    let protocol = rule.protocol.trim().to_ascii_lowercase();
    let name = match protocol.as_str() {
        "-1" | "all" => return Ok(String::new()),
        "tcp" | "6" => "tcp",
        "udp" | "17" => "udp",
        "icmp" | "1" => {
            // For ICMP, EC2's ports are the type and the code (-1: any).
            let mut text = "meta l4proto icmp".to_string();
            if let Some(kind) = rule.from_port.filter(|t| *t >= 0) {
                if kind > 255 {
                    return Err(format!("invalid ICMP type {kind}"));
                }
                text.push_str(&format!(" icmp type {kind}"));
                if let Some(code) = rule.to_port.filter(|c| *c >= 0) {
                    if code > 255 {
                        return Err(format!("invalid ICMP code {code}"));
                    }
                    text.push_str(&format!(" icmp code {code}"));
                }
            }
            return Ok(text);
        }
        other => {
            let number: u8 = other
                .parse()
                .map_err(|_| format!("unknown protocol {:?}", rule.protocol))?;
            return Ok(format!("meta l4proto {number}"));
        }
    };
    Ok(match port_range(rule.from_port, rule.to_port)? {
        Some(ports) => format!("{name} dport {ports}"),
        None => format!("meta l4proto {name}"),
    })
}

/// One chain's accept lines for `rules`; `peer` is `saddr` (ingress) or
/// `daddr` (egress). Rules that cannot be expressed are left out (the
/// chain's drop policy then covers them: failing closed) and returned as
/// warnings.
fn rule_lines(rules: &[NetworkRule], peer: &str, warnings: &mut Vec<String>) -> Vec<String> {
    let mut lines = Vec::new();
    for rule in rules {
        let matcher = match protocol_match(rule) {
            Ok(m) => m,
            Err(why) => {
                warnings.push(format!("rule {rule:?} left out: {why}"));
                continue;
            }
        };
        let mut cidrs: Vec<String> = Vec::new();
        for cidr in &rule.cidrs {
            match ipv4_cidr(cidr) {
                Some(c) if !cidrs.contains(&c) => cidrs.push(c),
                Some(_) => {}
                None => warnings.push(format!("peer {cidr:?} left out: not an IPv4 CIDR block")),
            }
        }
        if cidrs.is_empty() {
            continue;
        }
        let mut line = format!("ip {peer} {{ {} }}", cidrs.join(", "));
        if !matcher.is_empty() {
            line.push(' ');
            line.push_str(&matcher);
        }
        line.push_str(" accept");
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines
}

/// The nft script that replaces the task's table with `policy`, and
/// warnings about rules it had to leave out. Its first two lines make the
/// delete succeed whether or not the table exists, so the script is one
/// atomic replace.
pub fn render_ruleset(policy: &GetNetworkPolicyResponse) -> (String, Vec<String>) {
    render_ruleset_for(policy, None)
}

/// [`render_ruleset`] for a task whose VPC resolver is `resolver`: DNS to
/// it passes whatever the groups say, as security groups never filter
/// traffic to the Amazon DNS server.
pub fn render_ruleset_for(
    policy: &GetNetworkPolicyResponse,
    resolver: Option<std::net::Ipv4Addr>,
) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    let ingress = rule_lines(&policy.ingress, "saddr", &mut warnings);
    let egress = rule_lines(&policy.egress, "daddr", &mut warnings);
    let mut out = String::new();
    out.push_str(&format!("table inet {TABLE}\n"));
    out.push_str(&format!("delete table inet {TABLE}\n"));
    out.push_str(&format!("table inet {TABLE} {{\n"));
    out.push_str("  chain input {\n");
    out.push_str("    type filter hook input priority 0; policy drop;\n");
    out.push_str("    iif \"lo\" accept\n");
    out.push_str("    ct state established,related accept\n");
    for line in &ingress {
        out.push_str(&format!("    {line}\n"));
    }
    out.push_str("  }\n");
    out.push_str("  chain output {\n");
    out.push_str("    type filter hook output priority 0; policy drop;\n");
    out.push_str("    oif \"lo\" accept\n");
    out.push_str("    ct state established,related accept\n");
    // The task endpoint (credentials, metadata) is the agent's, not a peer
    // the security groups govern.
    out.push_str(&format!("    ip daddr {ENDPOINT_IP} accept\n"));
    if let Some(resolver) = resolver {
        out.push_str(&format!(
            "    ip daddr {resolver} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        ));
    }
    for line in &egress {
        out.push_str(&format!("    {line}\n"));
    }
    out.push_str("  }\n");
    out.push_str("}\n");
    (out, warnings)
}

/// Replaces the table in the network namespace of process `pid` with
/// `script` (from [`render_ruleset`]).
pub async fn apply(pid: u32, script: &str) -> Result<(), PolicyError> {
    let namespace = format!("--net=/proc/{pid}/ns/net");
    let mut child = tokio::process::Command::new("nsenter")
        .args([namespace.as_str(), "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PolicyError::Spawn {
            program: "nsenter".into(),
            source,
        })?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await?;
            // Closing stdin ends nft's input.
            drop(stdin);
        }
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(APPLY_TIMEOUT, run)
        .await
        .map_err(|_| PolicyError::Timeout(APPLY_TIMEOUT))?
        .map_err(|source| PolicyError::Spawn {
            program: "nsenter nft".into(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(PolicyError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, from: Option<i32>, to: Option<i32>, cidrs: &[&str]) -> NetworkRule {
        NetworkRule {
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn renders_ingress_and_egress() {
        let policy = GetNetworkPolicyResponse {
            ingress: vec![
                rule("tcp", Some(80), Some(80), &["0.0.0.0/0"]),
                rule(
                    "udp",
                    Some(5000),
                    Some(5010),
                    &["10.0.0.0/8", "192.168.1.7"],
                ),
                rule("icmp", Some(-1), Some(-1), &["172.31.0.0/16"]),
            ],
            egress: vec![rule("-1", None, None, &["0.0.0.0/0"])],
            ..Default::default()
        };
        let (script, warnings) = render_ruleset(&policy);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            script,
            "table inet berth_sg\n\
             delete table inet berth_sg\n\
             table inet berth_sg {\n\
             \x20 chain input {\n\
             \x20   type filter hook input priority 0; policy drop;\n\
             \x20   iif \"lo\" accept\n\
             \x20   ct state established,related accept\n\
             \x20   ip saddr { 0.0.0.0/0 } tcp dport 80 accept\n\
             \x20   ip saddr { 10.0.0.0/8, 192.168.1.7/32 } udp dport 5000-5010 accept\n\
             \x20   ip saddr { 172.31.0.0/16 } meta l4proto icmp accept\n\
             \x20 }\n\
             \x20 chain output {\n\
             \x20   type filter hook output priority 0; policy drop;\n\
             \x20   oif \"lo\" accept\n\
             \x20   ct state established,related accept\n\
             \x20   ip daddr 169.254.170.2 accept\n\
             \x20   ip daddr { 0.0.0.0/0 } accept\n\
             \x20 }\n\
             }\n"
        );
    }

    #[test]
    fn empty_policy_drops_everything_but_loopback_and_the_endpoint() {
        let (script, _) = render_ruleset(&GetNetworkPolicyResponse::default());
        assert!(!script.contains("saddr"));
        assert_eq!(script.matches(" accept\n").count(), 5);
    }

    #[test]
    fn dns_to_the_vpc_resolver_passes_whatever_the_groups_say() {
        let resolver = Some("172.31.0.2".parse().unwrap());
        let (script, _) = render_ruleset_for(&GetNetworkPolicyResponse::default(), resolver);
        assert!(script.contains(
            "    ip daddr 172.31.0.2 meta l4proto { tcp, udp } th dport 53 accept\n  }\n}\n"
        ));
        // Only DNS, and only in the output chain.
        assert_eq!(script.matches("172.31.0.2").count(), 1);
        assert_eq!(
            render_ruleset_for(&GetNetworkPolicyResponse::default(), None),
            render_ruleset(&GetNetworkPolicyResponse::default())
        );
    }

    #[test]
    fn port_forms() {
        assert_eq!(port_range(None, None), Ok(None));
        assert_eq!(port_range(Some(-1), Some(-1)), Ok(None));
        assert_eq!(port_range(Some(0), Some(65535)), Ok(None));
        assert_eq!(port_range(Some(443), None), Ok(Some("443".into())));
        assert_eq!(port_range(Some(1), Some(2)), Ok(Some("1-2".into())));
        assert!(port_range(Some(9), Some(2)).is_err());
        assert!(port_range(Some(1), Some(70000)).is_err());
    }

    #[test]
    fn protocol_forms() {
        let m = |p: &str, f, t| protocol_match(&rule(p, f, t, &[]));
        assert_eq!(m("TCP", None, None), Ok("meta l4proto tcp".into()));
        assert_eq!(m("6", Some(22), Some(22)), Ok("tcp dport 22".into()));
        assert_eq!(m("17", Some(53), Some(53)), Ok("udp dport 53".into()));
        assert_eq!(m("all", None, None), Ok(String::new()));
        assert_eq!(
            m("icmp", Some(8), Some(-1)),
            Ok("meta l4proto icmp icmp type 8".into())
        );
        assert_eq!(
            m("1", Some(3), Some(4)),
            Ok("meta l4proto icmp icmp type 3 icmp code 4".into())
        );
        assert_eq!(m("47", None, None), Ok("meta l4proto 47".into()));
        assert!(m("gre; flush ruleset", None, None).is_err());
    }

    #[test]
    fn bad_peers_and_rules_fail_closed() {
        let policy = GetNetworkPolicyResponse {
            ingress: vec![
                rule(
                    "tcp",
                    Some(22),
                    Some(22),
                    &["10.1.2.3/24", "::/0", "1.2.3.4/33", "x } accept"],
                ),
                rule("sctp", None, None, &["0.0.0.0/0"]),
                rule("tcp", Some(8080), Some(8080), &[]),
            ],
            egress: vec![],
            ..Default::default()
        };
        let (script, warnings) = render_ruleset(&policy);
        // Host bits are cleared; the rest is left out.
        assert!(script.contains("ip saddr { 10.1.2.0/24 } tcp dport 22 accept"));
        assert!(!script.contains("8080"));
        assert!(!script.contains("sctp"));
        assert_eq!(warnings.len(), 4, "{warnings:?}");
    }
}
