//! The load balancers' addresses on this host. Each load balancer has an
//! interface in each of its subnets (an EC2 record with a private address,
//! like a task's); its listeners bind that address here, so the address is
//! made local: a `/32` on a dummy link of this installation
//! (`blb-<installation>`). Local addresses win over the host's routes to
//! VPC routers, so the host (and, through their routers, the VPC's tasks)
//! reaches the load balancer, and two load balancers may both listen on 80.
//! The link is named per installation so several Berths on one host never
//! touch each other's addresses; it is removed at a graceful stop.

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

/// The dummy link holding one installation's load balancer addresses.
#[derive(Clone, Debug)]
pub struct HostAddresses {
    link: String,
}

#[derive(Debug, Deserialize)]
struct IpAddrInfo {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
}

#[derive(Debug, Deserialize)]
struct IpLink {
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

/// What `ip -j addr show dev LINK` says: whether it is up, and its IPv4
/// addresses with their prefix lengths.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

pub fn parse_link(json: &str) -> Option<LinkState> {
    let links: Vec<IpLink> = serde_json::from_str(json).ok()?;
    let link = links.into_iter().next()?;
    Some(LinkState {
        up: link.flags.iter().any(|f| f == "UP"),
        addresses: link
            .addr_info
            .iter()
            .filter(|a| a.family == "inet")
            .filter_map(|a| Some((a.local.as_deref()?.parse().ok()?, a.prefixlen?)))
            .collect(),
    })
}

/// The `ip -batch` lines that make `link` (None: absent) hold exactly
/// `wanted`, each as a /32.
pub fn plan(link_name: &str, link: Option<&LinkState>, wanted: &BTreeSet<Ipv4Addr>) -> Vec<String> {
    let mut out = Vec::new();
    if link.is_none() {
        out.push(format!("link add {link_name} type dummy"));
    }
    if !link.is_some_and(|l| l.up) {
        out.push(format!("link set {link_name} up"));
    }
    let have: Vec<(Ipv4Addr, u8)> = link.map(|l| l.addresses.clone()).unwrap_or_default();
    for (address, prefix) in &have {
        if *prefix != 32 || !wanted.contains(address) {
            out.push(format!("addr del {address}/{prefix} dev {link_name}"));
        }
    }
    for address in wanted {
        if !have.contains(&(*address, 32)) {
            out.push(format!("addr add {address}/32 dev {link_name}"));
        }
    }
    out
}

impl HostAddresses {
    /// The link of the installation `id` (a few hex characters kept in
    /// the store, so a restarted server finds its link again).
    pub fn new(id: &str) -> Self {
        let id: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(11)
            .collect();
        HostAddresses {
            link: format!("blb-{id}"),
        }
    }

    pub fn link(&self) -> &str {
        &self.link
    }

    /// Makes the link hold exactly `wanted`.
    pub async fn ensure(&self, wanted: &BTreeSet<Ipv4Addr>) -> Result<(), HostAddressError> {
        let state = match run(&["-j", "addr", "show", "dev", &self.link], None).await {
            Ok(json) => parse_link(&json),
            // "Device does not exist."
            Err(_) => None,
        };
        if state.is_none() && wanted.is_empty() {
            return Ok(());
        }
        let commands = plan(&self.link, state.as_ref(), wanted);
        if commands.is_empty() {
            return Ok(());
        }
        tracing::info!(link = %self.link, ?commands, "updating the load balancers' addresses");
        let mut input = commands.join("\n");
        input.push('\n');
        run(&["-batch", "-"], Some(&input)).await.map(|_| ())
    }

    /// Removes the link and its addresses (at a graceful stop).
    pub async fn remove(&self) {
        if run(&["link", "show", "dev", &self.link], None)
            .await
            .is_ok()
        {
            if let Err(e) = run(&["link", "del", &self.link], None).await {
                tracing::warn!(link = %self.link, error = %e, "removing the load balancers' link failed");
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

    #[test]
    fn a_missing_link_is_made_with_its_addresses() {
        assert_eq!(
            plan("blb-1a2b", None, &set(&["172.31.0.10", "172.31.16.4"])),
            vec![
                "link add blb-1a2b type dummy",
                "link set blb-1a2b up",
                "addr add 172.31.0.10/32 dev blb-1a2b",
                "addr add 172.31.16.4/32 dev blb-1a2b",
            ]
        );
    }

    #[test]
    fn only_the_difference_is_changed() {
        let link = LinkState {
            up: true,
            addresses: vec![
                ("172.31.0.10".parse().unwrap(), 32),
                ("172.31.0.11".parse().unwrap(), 32),
                ("10.0.0.1".parse().unwrap(), 24),
            ],
        };
        assert_eq!(
            plan("blb-1", Some(&link), &set(&["172.31.0.10", "172.31.0.12"])),
            vec![
                "addr del 172.31.0.11/32 dev blb-1",
                "addr del 10.0.0.1/24 dev blb-1",
                "addr add 172.31.0.12/32 dev blb-1",
            ]
        );
        let done = LinkState {
            up: true,
            addresses: vec![("172.31.0.10".parse().unwrap(), 32)],
        };
        assert!(plan("blb-1", Some(&done), &set(&["172.31.0.10"])).is_empty());
    }

    #[test]
    fn ip_json_is_read() {
        let json = r#"[{"ifindex":9,"ifname":"blb-1","flags":["BROADCAST","NOARP","UP","LOWER_UP"],
            "addr_info":[{"family":"inet","local":"172.31.0.10","prefixlen":32},
                         {"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;
        assert_eq!(
            parse_link(json),
            Some(LinkState {
                up: true,
                addresses: vec![("172.31.0.10".parse().unwrap(), 32)]
            })
        );
    }

    #[test]
    fn link_names_fit_the_kernel_limit() {
        let addresses = HostAddresses::new("0123456789abcdef-and-more");
        assert_eq!(addresses.link(), "blb-0123456789a");
        assert!(addresses.link().len() <= 15);
    }
}
