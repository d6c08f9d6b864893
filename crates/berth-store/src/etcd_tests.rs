//! The store contract on a real etcd (Debian's `etcd-server`), started on
//! free loopback ports for each test; the tests fail, never skip, when the
//! `etcd` binary is missing.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::*;

pub(crate) struct Etcd {
    child: Child,
    pub(crate) endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(crate) fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().expect("a temp dir");
    let client = free_port();
    let peer = free_port();
    let endpoint = format!("http://127.0.0.1:{client}");
    let child = Command::new("etcd")
        .args([
            "--data-dir",
            &dir.path().join("etcd").to_string_lossy(),
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
            "--max-txn-ops",
            "10000",
            "--max-request-bytes",
            "16777216",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (Debian's etcd-server) must be installed: scripts/test installs it");
    let etcd = Etcd {
        child,
        endpoint,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
            return etcd;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("etcd did not start");
}

fn options(etcd: &Etcd, namespace: &str) -> EtcdOptions {
    let mut options = EtcdOptions::new(vec![etcd.endpoint.clone()]);
    options.namespace = namespace.to_string();
    options
}

async fn open(etcd: &Etcd, namespace: &str) -> EtcdStore {
    // etcd may still be electing itself leader right after it listens.
    let mut last = None;
    for _ in 0..100 {
        match EtcdStore::open(options(etcd, namespace)).await {
            Ok(store) => return store,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("opening the etcd store failed: {last:?}");
}

async fn next_event(w: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch timed out")
        .expect("watch ended")
        .expect("watch failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_and_cas_on_etcd() {
    let etcd = start_etcd();
    let s = open(&etcd, "/t1").await;
    let r1 = s.put("/a", Bytes::from("1")).await.unwrap();
    let r2 = s.put("/a", Bytes::from("2")).await.unwrap();
    assert!(r2 > r1);
    let kv = s.get("/a").unwrap();
    assert_eq!(kv.value, Bytes::from("2"));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );
    assert_eq!(s.revision(), r2);
    // CAS: a stale compare fails and writes nothing.
    let stale = s
        .txn(Txn {
            compares: vec![Compare::ModRevision {
                key: "/a".into(),
                revision: r1,
            }],
            ops: vec![Op::put("/a", "3")],
        })
        .await
        .unwrap();
    assert!(!stale.succeeded);
    assert_eq!(s.get("/a").unwrap().value, Bytes::from("2"));
    let fresh = s
        .txn(Txn {
            compares: vec![Compare::ModRevision {
                key: "/a".into(),
                revision: r2,
            }],
            ops: vec![Op::put("/a", "3"), Op::delete("/missing")],
        })
        .await
        .unwrap();
    assert!(fresh.succeeded);
    assert_eq!(s.get("/a").unwrap().value, Bytes::from("3"));
    // Ranges are ordered and the internal sequence key never shows.
    for k in ["/r/3", "/r/1", "/r/2"] {
        s.put(k, Bytes::from(k)).await.unwrap();
    }
    let keys: Vec<String> = s
        .range("/", None, 100)
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/a", "/r/1", "/r/2", "/r/3"]);
    assert_eq!(s.count("/r/"), 3);
    // A second store on the same namespace sees the same state.
    let other = open(&etcd, "/t1").await;
    assert_eq!(other.get("/r/2").unwrap().value, Bytes::from("/r/2"));
    // Another namespace sees nothing of it.
    let elsewhere = open(&etcd, "/t2").await;
    assert_eq!(elsewhere.count("/"), 0);
}

/// Keys need not start with `/` (berth-ec2's are `ec2/…`): they are kept
/// inside the namespace, seen by the writer and by another store, and not
/// by a namespace whose name merely continues the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_without_a_leading_slash_stay_in_the_namespace() {
    let etcd = start_etcd();
    let s = open(&etcd, "/ns").await;
    s.put("ec2/vpc", Bytes::from("v")).await.unwrap();
    assert_eq!(s.get("ec2/vpc").unwrap().value, Bytes::from("v"));
    let other = open(&etcd, "/ns").await;
    assert_eq!(other.get("ec2/vpc").unwrap().value, Bytes::from("v"));
    assert_eq!(other.count("ec2/"), 1);
    let lookalike = open(&etcd, "/nsec2").await;
    assert_eq!(lookalike.count("/"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_never_lose_increments() {
    let etcd = start_etcd();
    let a = Arc::new(open(&etcd, "/inc").await);
    let b = Arc::new(open(&etcd, "/inc").await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .update(|view| {
                    let n: u64 = view
                        .get("/counter")
                        .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
                        .unwrap_or(0);
                    Ok::<_, ()>((vec![Op::put("/counter", (n + 1).to_string())], ()))
                })
                .await
                .unwrap()
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expect = Bytes::from("40");
    // Each server reads its own writes at once and the other's soon after.
    for store in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.get("/counter").map(|kv| kv.value) != Some(expect.clone()) {
            assert!(
                std::time::Instant::now() < deadline,
                "counter never reached 40"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_follow_and_resume_from_any_server() {
    let etcd = start_etcd();
    let a = open(&etcd, "/w").await;
    let start = a.revision();
    let mut live = a.watch("/x/", start).await.unwrap();
    let r1 = a.put("/x/1", Bytes::from("1")).await.unwrap();
    a.put("/y/1", Bytes::from("other prefix")).await.unwrap();
    let r2 = a.delete("/x/1").await.unwrap().unwrap();
    let e1 = next_event(&mut live).await;
    assert_eq!((e1.kind, e1.kv.mod_revision), (EventKind::Put, r1));
    let e2 = next_event(&mut live).await;
    assert_eq!(
        (e2.kind, e2.kv.key.as_str(), e2.kv.mod_revision),
        (EventKind::Delete, "/x/1", r2)
    );
    // A server that started after those writes resumes from before them:
    // its memory does not reach back, etcd's history does.
    let b = open(&etcd, "/w").await;
    let mut resumed = b.watch("/x/", start).await.unwrap();
    let e1 = next_event(&mut resumed).await;
    assert_eq!((e1.kind, e1.kv.mod_revision), (EventKind::Put, r1));
    let e2 = next_event(&mut resumed).await;
    assert_eq!((e2.kind, e2.kv.mod_revision), (EventKind::Delete, r2));
    // And follows live writes made through the other server.
    let r3 = a.put("/x/2", Bytes::from("2")).await.unwrap();
    let e3 = next_event(&mut resumed).await;
    assert_eq!(e3.kv.mod_revision, r3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_successor_on_loss() {
    let etcd = start_etcd();
    let store = open(&etcd, "/e").await;
    let elections = EtcdElections::new(&store, Duration::from_secs(2));
    let first = elections.campaign("controllers", "server-a").await.unwrap();
    assert_eq!(
        elections.leader("controllers").await.unwrap().as_deref(),
        Some("server-a")
    );
    let contender = {
        let elections = elections.clone();
        tokio::spawn(async move { elections.campaign("controllers", "server-b").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!contender.is_finished(), "two leaders at once");
    assert!(!first.is_lost());
    // Giving up (a server stopping) hands the role over promptly.
    let handed = std::time::Instant::now();
    drop(first);
    let mut second = tokio::time::timeout(Duration::from_secs(5), contender)
        .await
        .expect("no successor")
        .unwrap()
        .unwrap();
    assert!(handed.elapsed() < Duration::from_secs(4));
    assert_eq!(
        elections.leader("controllers").await.unwrap().as_deref(),
        Some("server-b")
    );
    // A leader whose lease cannot be renewed (etcd gone) knows it lost.
    drop(etcd);
    tokio::time::timeout(Duration::from_secs(10), second.lost())
        .await
        .expect("leadership not lost after etcd went away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_entries_are_shared_and_vanish_with_their_server() {
    let etcd = start_etcd();
    let store = open(&etcd, "/p").await;
    let a = LeasedSet::open(&store, "presence", Duration::from_secs(2))
        .await
        .unwrap();
    let b = LeasedSet::open(&store, "presence", Duration::from_secs(2))
        .await
        .unwrap();
    a.insert("instance-1", "server-a").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.get("instance-1").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "b never saw a's entry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // b takes the agent over; a's later removal of its own value is a no-op.
    b.insert("instance-1", "server-b").await.unwrap();
    a.remove("instance-1", "server-a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.get("instance-1").as_deref(), Some("server-b"));
    // a dies without cleaning up: its entries go with its lease.
    a.insert("instance-2", "server-a").await.unwrap();
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        if b.get("instance-2").is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a dead server's entry stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.get("instance-1").as_deref(), Some("server-b"));
}

/// A live server whose lease ran out (etcd too slow or unreachable past the
/// TTL) takes a new one and publishes its entries again, except those
/// another server took over meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_server_whose_lease_ran_out_publishes_its_entries_again() {
    let etcd = start_etcd();
    let store = open(&etcd, "/q").await;
    let a = LeasedSet::open(&store, "presence", Duration::from_secs(2))
        .await
        .unwrap();
    let b = LeasedSet::open(&store, "presence", Duration::from_secs(2))
        .await
        .unwrap();
    a.insert("kept", "server-a").await.unwrap();
    a.insert("moved", "server-a").await.unwrap();
    let expired = a.lease_id();
    store.client().revoke_lease(expired).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.get("kept").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked entry stayed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The agent of `moved` went to b while a's entries were gone.
    b.insert("moved", "server-b").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while b.get("kept").as_deref() != Some("server-a") {
        assert!(
            std::time::Instant::now() < deadline,
            "a never published its entry again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(a.lease_id(), expired);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.get("moved").as_deref(), Some("server-b"));
    // Entries put later go under the new lease and last.
    a.insert("later", "server-a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(b.get("later").as_deref(), Some("server-a"));
    assert_eq!(b.get("kept").as_deref(), Some("server-a"));
}
