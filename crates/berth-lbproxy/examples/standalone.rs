//! Runs the data plane alone: one HTTP listener forwarding to fixed targets (for benchmarks).
//! `standalone LISTEN TARGET [TARGET...]`, e.g. `standalone 127.0.0.1:8080 127.0.0.1:9000`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use berth_lbproxy::*;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |s: &String| -> SocketAddr {
        s.parse().unwrap_or_else(|_| {
            eprintln!("usage: standalone LISTEN TARGET [TARGET...]");
            std::process::exit(2)
        })
    };
    if args.len() < 2 {
        eprintln!("usage: standalone LISTEN TARGET [TARGET...]");
        std::process::exit(2);
    }
    let listen = parse(&args[0]);
    let targets = args[1..]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let a = parse(a);
            TargetConfig {
                id: format!("t{i}"),
                port: a.port(),
                address: a,
                draining: false,
            }
        })
        .collect();
    let cfg = DataPlaneConfig {
        listeners: vec![ListenerConfig {
            id: "l".into(),
            kind: LbKind::Application,
            protocol: ListenerProtocol::Http,
            bind: vec![listen],
            certificates: vec![],
            alpn_http2: true,
            idle_timeout: Duration::from_secs(60),
            source_filter: None,
            rules: vec![RuleConfig {
                priority: u32::MAX,
                conditions: vec![],
                action: Action::Forward {
                    groups: vec![("tg".into(), 1)],
                    group_stickiness: None,
                },
            }],
            lb_id: "app/bench/1".into(),
        }],
        target_groups: BTreeMap::from([(
            "tg".to_string(),
            TargetGroupConfig {
                protocol: TargetProtocol::Http,
                protocol_version: HttpVersion::Http1,
                targets,
                health_check: HealthCheckConfig::alb_default(),
                algorithm: Algorithm::RoundRobin,
                stickiness: None,
                slow_start: Duration::ZERO,
                source_addresses: vec![],
            },
        )]),
    };
    let (dp, mut rx) = DataPlane::new();
    let errors = dp.apply(cfg).await;
    if !errors.is_empty() {
        eprintln!("{errors:?}");
        std::process::exit(1);
    }
    println!("listening on {listen}");
    while let Some(r) = rx.recv().await {
        eprintln!("{:?} {:?} {:?}", r.target_id, r.state, r.reason);
    }
}
