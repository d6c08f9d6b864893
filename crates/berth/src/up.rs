//! `berth up`: the all-in-one server: the embedded store, every service and
//! controller, and an agent in the same process.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use berth_ecs::Presence;
use berth_store::{SqliteOptions, SqliteStore, Store};

use crate::credentials::{self, Origin};
use crate::logs_place::LogsPlace;
use crate::node::Node;
use crate::{ServeArgs, UpArgs};

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("berth"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/berth"))
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    // Everything under the data directory is private to this user: the
    // directory 0700, every file 0600 (umask 077 for what is created later,
    // older data directories tightened now).
    crate::private_dir::private_umask();
    crate::private_dir::make_private(&data_dir)?;

    let sqlite = Arc::new(
        SqliteStore::open(SqliteOptions::new(data_dir.join("store.db")))
            .with_context(|| format!("opening the store in {}", data_dir.display()))?,
    );
    let store: Arc<dyn Store> = sqlite.clone();
    // Log events live in their own database so log traffic never slows the
    // control-plane store.
    let logs = berth_logs::LogsService::open(&data_dir).context("opening the log store")?;
    let node = Node::build(
        &args.serve,
        &data_dir,
        store.clone(),
        Arc::new(Presence::default()),
        LogsPlace::single(logs, data_dir.clone()),
    )
    .await?;
    // Berth's DNS server (before the agent registers: it is told where).
    let dns = crate::dns::start(&args.serve, store.clone(), &node.dns_endpoint).await?;
    // The only server always leads.
    let leader_work = node.start_leader_work();

    let listener = tokio::net::TcpListener::bind(args.serve.listen)
        .await
        .with_context(|| format!("binding {}", args.serve.listen))?;
    let address = listener.local_addr()?;
    print_banner(&args.serve, &data_dir, address, &node.root);
    print_agent_hint(address, &node.agent_token);
    tracing::info!(%address, data_dir = %data_dir.display(), "berth is serving");
    let agent = if args.no_agent {
        tracing::info!("the in-process agent is off (--no-agent)");
        None
    } else {
        crate::agent::spawn_local(
            address,
            &args.serve.region,
            &data_dir,
            &node.root,
            &node.agent_token,
        )
        .await
    };

    crate::node::serve_http(
        listener,
        node.app.clone(),
        &args.serve,
        node.stopping.clone(),
    )
    .await?;
    tracing::info!("shutting down");
    node.flush().await;
    drop(dns);
    for handle in leader_work {
        handle.abort();
    }
    if let Some(agent) = agent {
        agent.abort();
    }
    drop(node);
    drop(store);
    sqlite.close();
    Ok(())
}

fn print_banner(
    args: &ServeArgs,
    data_dir: &std::path::Path,
    address: std::net::SocketAddr,
    root: &credentials::RootKeys,
) {
    let endpoint = format!("http://{address}");
    println!(
        "Berth {} is running on {endpoint}",
        env!("CARGO_PKG_VERSION")
    );
    println!("Data directory: {}", data_dir.display());
    println!();
    match &root.origin {
        Origin::Generated(path) => {
            println!(
                "Root credentials were generated and saved to {} (profile {}).",
                path.display(),
                credentials::PROFILE
            );
            println!("They are printed only this once. Point the aws CLI at Berth with:");
            println!();
            println!("export AWS_ENDPOINT_URL={endpoint}");
            println!("export AWS_ACCESS_KEY_ID={}", root.access_key_id);
            println!("export AWS_SECRET_ACCESS_KEY={}", root.secret_access_key);
            println!("export AWS_DEFAULT_REGION={}", args.region);
            // Cloud Map's DiscoverInstances has the host prefix `data-`,
            // which an address endpoint cannot take.
            println!("export AWS_DISABLE_HOST_PREFIX_INJECTION=true");
        }
        Origin::File(path) => {
            println!("Point the aws CLI at Berth with:");
            println!();
            println!("export AWS_ENDPOINT_URL={endpoint}");
            println!("export AWS_SHARED_CREDENTIALS_FILE={}", path.display());
            println!("export AWS_PROFILE={}", credentials::PROFILE);
            println!("export AWS_DEFAULT_REGION={}", args.region);
            println!("export AWS_DISABLE_HOST_PREFIX_INJECTION=true");
        }
        Origin::Environment => {
            println!("Root credentials come from BERTH_ROOT_ACCESS_KEY_ID / BERTH_ROOT_SECRET_ACCESS_KEY.");
            println!("Point the aws CLI at Berth with:");
            println!();
            println!("export AWS_ENDPOINT_URL={endpoint}");
            println!("export AWS_ACCESS_KEY_ID=\"$BERTH_ROOT_ACCESS_KEY_ID\"");
            println!("export AWS_SECRET_ACCESS_KEY=\"$BERTH_ROOT_SECRET_ACCESS_KEY\"");
            println!("export AWS_DEFAULT_REGION={}", args.region);
            println!("export AWS_DISABLE_HOST_PREFIX_INJECTION=true");
        }
    }
    println!();
}

/// How another host joins as an agent (the token itself is not printed).
fn print_agent_hint(address: std::net::SocketAddr, token: &crate::agent::AgentToken) {
    let endpoint = format!("http://{address}");
    match &token.origin {
        crate::agent::TokenOrigin::File(path) => {
            println!(
                "Agents on other hosts register with the token in {} (copy it there, mode 0600):",
                path.display()
            );
            println!();
            println!(
                "berth agent --server {endpoint} --registration-token-file <copy of that file>"
            );
        }
        crate::agent::TokenOrigin::Environment => {
            println!("Agents on other hosts register with the token in BERTH_AGENT_TOKEN:");
            println!();
            println!("BERTH_AGENT_TOKEN=<the same token> berth agent --server {endpoint}");
        }
    }
    println!("(with AWS credentials allowed berth:RegisterAgent on the cluster, or root's)");
    println!();
}

pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
