//! The load balancers' addresses on this host. Each load balancer has an
//! interface in each of its subnets (an EC2 record with a private address,
//! like a task's); its listeners bind that address here, so the address is
//! made local: a `/32` on the host's `lo`, labelled for this installation
//! (`lo:b<installation>`; `lo` exists everywhere, where dummy links need a
//! kernel module). Local addresses win over the host's routes to VPC
//! routers, so the host (and, through their routers, the VPC's tasks)
//! reaches the load balancer, and two load balancers may both listen on 80.
//! The label is per installation so several Berths on one host never touch
//! each other's addresses; they are removed when the data plane stops.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;

/// How long one `ip` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HostAddressError {
    #[error("running {command}: {message}")]
    Command { command: String, message: String },
}

/// The addresses of one installation's load balancers on `lo`, by label.
#[derive(Clone, Debug)]
pub struct HostAddresses {
    label: String,
}

/// The device holding the addresses.
const DEVICE: &str = "lo";

#[derive(Debug, Deserialize)]
struct IpAddrInfo {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IpLink {
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

/// An IPv4 address of `lo` as `ip -j addr show dev lo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoAddress {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub label: Option<String>,
}

pub fn parse_addresses(json: &str) -> Vec<LoAddress> {
    let links: Vec<IpLink> = serde_json::from_str(json).unwrap_or_default();
    links
        .iter()
        .flat_map(|l| l.addr_info.iter())
        .filter(|a| a.family == "inet")
        .filter_map(|a| {
            Some(LoAddress {
                address: a.local.as_deref()?.parse().ok()?,
                prefix: a.prefixlen?,
                label: a.label.clone(),
            })
        })
        .collect()
}

/// The `ip -batch` lines that make `label` hold exactly `wanted` on `lo`,
/// each as a /32. A wanted /32 held under another installation's label
/// (one that stopped without cleaning up: two live installations cannot
/// serve one address anyway) is taken over.
pub fn plan(label: &str, have: &[LoAddress], wanted: &BTreeSet<Ipv4Addr>) -> Vec<String> {
    let mut out = Vec::new();
    let ours = |a: &LoAddress| a.label.as_deref() == Some(label);
    for a in have.iter().filter(|a| ours(a)) {
        if a.prefix != 32 || !wanted.contains(&a.address) {
            out.push(format!("addr del {}/{} dev {DEVICE}", a.address, a.prefix));
        }
    }
    for address in wanted {
        if have
            .iter()
            .any(|a| ours(a) && a.address == *address && a.prefix == 32)
        {
            continue;
        }
        let foreign = have.iter().any(|a| {
            !ours(a)
                && a.address == *address
                && a.prefix == 32
                && a.label.as_deref().is_some_and(|l| l.starts_with("lo:b"))
        });
        if foreign {
            out.push(format!("addr del {address}/32 dev {DEVICE}"));
        }
        out.push(format!("addr add {address}/32 dev {DEVICE} label {label}"));
    }
    out
}

impl HostAddresses {
    /// The addresses of the installation `id` (a few hex characters kept
    /// in the store, so a restarted server finds its addresses again).
    /// Labels are at most 15 characters and start with the device's name.
    pub fn new(id: &str) -> Self {
        let id: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(11)
            .collect();
        HostAddresses {
            label: format!("{DEVICE}:b{id}"),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Makes the label hold exactly `wanted`.
    pub async fn ensure(&self, wanted: &BTreeSet<Ipv4Addr>) -> Result<(), HostAddressError> {
        let json = run(&["-j", "addr", "show", "dev", DEVICE], None).await?;
        let have = parse_addresses(&json);
        let commands = plan(&self.label, &have, wanted);
        if commands.is_empty() {
            return Ok(());
        }
        tracing::info!(label = %self.label, ?commands, "updating the load balancers' addresses");
        let mut input = commands.join("\n");
        input.push('\n');
        run(&["-batch", "-"], Some(&input)).await.map(|_| ())
    }

    /// Removes the installation's addresses. Synchronous (one short `ip`
    /// command), so it can run when the data plane is dropped: at a
    /// graceful stop, or when this server stops being the leader.
    pub fn remove(&self) {
        match std::process::Command::new("ip")
            .args(["addr", "flush", "dev", DEVICE, "label", &self.label])
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {
                tracing::info!(label = %self.label, "removed the load balancers' addresses")
            }
            other => {
                tracing::warn!(label = %self.label, result = ?other, "removing the load balancers' addresses failed")
            }
        }
    }
}

async fn run(args: &[&str], input: Option<&str>) -> Result<String, HostAddressError> {
    use tokio::io::AsyncWriteExt;
    let command = format!("ip {}", args.join(" "));
    let failed = |message: String| HostAddressError::Command {
        command: command.clone(),
        message,
    };
    let mut child = tokio::process::Command::new("ip")
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addresses: &[&str]) -> BTreeSet<Ipv4Addr> {
        addresses.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn lo(address: &str, prefix: u8, label: &str) -> LoAddress {
        LoAddress {
            address: address.parse().unwrap(),
            prefix,
            label: Some(label.into()),
        }
    }

    #[test]
    fn missing_addresses_are_added_under_the_label() {
        assert_eq!(
            plan("lo:b1a2b", &[], &set(&["172.31.0.10", "172.31.16.4"])),
            vec![
                "addr add 172.31.0.10/32 dev lo label lo:b1a2b",
                "addr add 172.31.16.4/32 dev lo label lo:b1a2b",
            ]
        );
    }

    #[test]
    fn only_the_difference_is_changed() {
        let have = vec![
            lo("127.0.0.1", 8, "lo"),
            lo("172.31.0.10", 32, "lo:b1"),
            lo("172.31.0.11", 32, "lo:b1"),
            lo("10.0.0.1", 24, "lo:b1"),
            lo("172.31.0.20", 32, "lo:b2"),
        ];
        assert_eq!(
            plan("lo:b1", &have, &set(&["172.31.0.10", "172.31.0.12"])),
            vec![
                "addr del 172.31.0.11/32 dev lo",
                "addr del 10.0.0.1/24 dev lo",
                "addr add 172.31.0.12/32 dev lo label lo:b1",
            ],
            "another installation's addresses are left alone"
        );
        let done = vec![lo("172.31.0.10", 32, "lo:b1")];
        assert!(plan("lo:b1", &done, &set(&["172.31.0.10"])).is_empty());
    }

    #[test]
    fn an_address_left_by_another_installation_is_taken_over() {
        let have = vec![lo("172.31.0.10", 32, "lo:bdead")];
        assert_eq!(
            plan("lo:b1", &have, &set(&["172.31.0.10"])),
            vec![
                "addr del 172.31.0.10/32 dev lo",
                "addr add 172.31.0.10/32 dev lo label lo:b1",
            ]
        );
    }

    #[test]
    fn addresses_are_read_with_their_labels() {
        let json = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],
            "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"label":"lo"},
                         {"family":"inet","local":"172.31.0.10","prefixlen":32,"label":"lo:b1"},
                         {"family":"inet6","local":"::1","prefixlen":128}]}]"#;
        assert_eq!(
            parse_addresses(json),
            vec![lo("127.0.0.1", 8, "lo"), lo("172.31.0.10", 32, "lo:b1")]
        );
    }

    #[test]
    fn labels_fit_the_kernel_limit() {
        let addresses = HostAddresses::new("0123456789abcdef-and-more");
        assert_eq!(addresses.label(), "lo:b0123456789a");
        assert!(addresses.label().len() <= 15);
    }
}
