//! `berth server`: one of several servers of an installation, sharing an
//! etcd (the store, elections, agent presence) and a shared directory (keys,
//! registry blobs, the log store). Any server answers any call; one, the
//! leader, runs the controllers and the log store, and hands them to another
//! within about a lease TTL when it dies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_ecs::Presence;
use berth_store::{Elections, EtcdElections, EtcdOptions, EtcdStore, LeasedSet, Store};

use crate::cluster::{self, ClusterKey, EtcdPresence, Forwarder, LeaderIdentity, LEADER_ROLE};
use crate::logs_place::LogsPlace;
use crate::node::Node;
use crate::ServerArgs;

fn advertise_url(args: &ServerArgs) -> String {
    if let Some(url) = &args.advertise {
        return url.trim_end_matches('/').to_string();
    }
    let mut address = args.serve.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{address}")
}

fn server_id(args: &ServerArgs) -> String {
    if let Some(id) = &args.server_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "berth".to_string());
    format!("{host}-{}", args.serve.listen.port())
}

/// Opens the store, retrying while etcd elects a leader or comes up.
async fn open_store(args: &ServerArgs) -> anyhow::Result<EtcdStore> {
    let mut options = EtcdOptions::new(args.etcd.clone());
    options.namespace = args.etcd_namespace.clone();
    let mut last = None;
    for _ in 0..60 {
        match EtcdStore::open(options.clone()).await {
            Ok(store) => return Ok(store),
            Err(e) => {
                tracing::warn!(error = %e, "etcd is not answering yet");
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow::anyhow!(
        "opening the store on etcd {:?}: {:?}",
        args.etcd,
        last
    ))
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    crate::private_dir::private_umask();
    crate::private_dir::make_private(&args.shared_dir)?;
    let shared = args.shared_dir.clone();
    let etcd = Arc::new(open_store(&args).await?);
    let store: Arc<dyn Store> = etcd.clone();
    let id = server_id(&args);
    let url = advertise_url(&args);
    let ttl = Duration::from_secs(args.leader_ttl.max(1));
    let elections = EtcdElections::new(&etcd, ttl);
    let key = Arc::new(ClusterKey::load_or_create(&shared)?);
    let forwarder = Forwarder::new(key.clone(), elections.clone(), url.clone());
    let logs = LogsPlace::clustered(shared.clone(), forwarder);
    let presence_set = Arc::new(
        LeasedSet::open(&etcd, "agents", ttl)
            .await
            .context("opening the agent presence set")?,
    );
    let presence =
        Arc::new(Presence::default().shared(EtcdPresence::new(presence_set, id.clone())));
    let node = Node::build(
        &args.serve,
        &shared,
        store.clone(),
        presence.clone(),
        logs.clone(),
    )
    .await?;
    // Every server answers DNS from the shared store.
    let dns = crate::dns::start(&args.serve, store.clone(), &node.dns_endpoint).await?;
    let app = node
        .app
        .clone()
        .merge(cluster::internal_routes(Arc::new(cluster::Internal {
            key,
            logs: logs.clone(),
            authorizer: node.authorizer.clone(),
        })));

    // Agents silent past the timeout stop counting as connected here, and
    // the other servers are told.
    let sweeper = {
        let presence = presence.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                presence.sweep();
            }
        })
    };

    let identity = serde_json::to_string(&LeaderIdentity {
        id: id.clone(),
        url: url.clone(),
    })?;
    let node = Arc::new(node);
    let leading = {
        let node = node.clone();
        let elections = elections.clone();
        let logs = logs.clone();
        tokio::spawn(async move { lead_when_elected(node, elections, logs, identity).await })
    };

    let listener = tokio::net::TcpListener::bind(args.serve.listen)
        .await
        .with_context(|| format!("binding {}", args.serve.listen))?;
    let address = listener.local_addr()?;
    println!(
        "Berth {} server {id} is running on http://{address} (advertised as {url})",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "Store: etcd {} under {}; shared directory: {}",
        args.etcd.join(","),
        args.etcd_namespace,
        shared.display()
    );
    tracing::info!(%address, server = %id, "berth server is serving");
    crate::node::serve_http(listener, app, &args.serve, node.stopping.clone()).await?;
    tracing::info!("shutting down");
    node.flush().await;
    drop(dns);
    // Aborting the campaign drops the leadership, which gives the role up
    // at once (the lease is revoked) so another server takes over.
    leading.abort();
    sweeper.abort();
    let _ = leading.await;
    logs.close_local();
    etcd.close();
    Ok(())
}

/// Campaigns for the leader role; while this server leads it runs the
/// controllers and serves the log store, and stops both the moment
/// leadership is lost, then campaigns again.
async fn lead_when_elected(
    node: Arc<Node>,
    elections: Arc<EtcdElections>,
    logs: Arc<LogsPlace>,
    identity: String,
) {
    loop {
        let mut leadership = match elections.campaign(LEADER_ROLE, &identity).await {
            Ok(leadership) => leadership,
            Err(e) => {
                tracing::warn!(error = %e, "campaigning for leadership failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = logs.open_local() {
            tracing::error!(error = %e, "this server leads but cannot open the log store");
        }
        let work = node.start_leader_work();
        tracing::info!("leading: controllers and the log store run here");
        leadership.lost().await;
        tracing::warn!("leadership lost: stopping the controllers and the log store");
        for handle in work {
            handle.abort();
        }
        logs.close_local();
        drop(leadership);
    }
}
