//! The store contract, checked against the SQLite backend: CAS semantics,
//! revision bookkeeping, watch order and resume, durability across reopen.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::*;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn next_event(w: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch timed out")
        .expect("watch ended")
        .expect("watch failed")
}

#[test]
fn put_get_and_revision_metadata() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir);
        assert_eq!(s.revision(), 0);
        let r1 = s.put("/a", Bytes::from("1")).await.unwrap();
        let r2 = s.put("/a", Bytes::from("2")).await.unwrap();
        assert_eq!((r1, r2), (1, 2));
        let kv = s.get("/a").unwrap();
        assert_eq!(kv.value, Bytes::from("2"));
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 2, 2));
        assert_eq!(s.delete("/a").await.unwrap(), Some(3));
        assert_eq!(s.delete("/a").await.unwrap(), None);
        assert!(s.get("/a").is_none());
        assert_eq!(s.revision(), 3);
    });
}

#[test]
fn txn_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir);
        let create = |rev| Txn {
            compares: vec![Compare::ModRevision {
                key: "/k".into(),
                revision: rev,
            }],
            ops: vec![Op::put("/k", "v")],
        };
        let first = s.txn(create(0)).await.unwrap();
        assert!(first.succeeded);
        let again = s.txn(create(0)).await.unwrap();
        assert!(!again.succeeded, "create must fail when the key exists");
        let stale = s.txn(create(99)).await.unwrap();
        assert!(!stale.succeeded);
        let current = s.get("/k").unwrap().mod_revision;
        assert!(s.txn(create(current)).await.unwrap().succeeded);
        assert_eq!(s.revision(), 2);
    });
}

#[test]
fn concurrent_updates_never_lose_increments() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = Arc::new(open(&dir));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..50 {
                    let (_, n) = s
                        .update(|view| {
                            let n = view
                                .get("/counter")
                                .map(|kv| {
                                    String::from_utf8_lossy(&kv.value).parse::<u64>().unwrap()
                                })
                                .unwrap_or(0)
                                + 1;
                            Ok::<_, ()>((vec![Op::put("/counter", n.to_string())], n))
                        })
                        .await
                        .unwrap()
                        .unwrap();
                    seen.push(n);
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        assert_eq!(all, (1..=400).collect::<Vec<u64>>());
    });
}

#[test]
fn aborted_and_panicking_mutations_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir);
        let r = s.update(|_| Err::<(Vec<Op>, ()), _>("no")).await.unwrap();
        assert_eq!(r, Err("no"));
        let panicked = s.mutate(Box::new(|_| panic!("boom"))).await;
        assert!(matches!(panicked, Err(StoreError::Mutation(_))));
        assert_eq!(s.revision(), 0);
        s.put("/still", Bytes::from("works")).await.unwrap();
        assert_eq!(s.revision(), 1);
    });
}

#[test]
fn range_is_ordered_and_paginates() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = open(&dir);
        for i in (0..20).rev() {
            s.put(&format!("/p/{i:02}"), Bytes::from("x"))
                .await
                .unwrap();
        }
        s.put("/q/0", Bytes::from("x")).await.unwrap();
        assert_eq!(s.count("/p/"), 20);
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s.range("/p/", after.as_deref(), 7);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|kv| kv.key.clone());
            keys.extend(page.into_iter().map(|kv| kv.key));
        }
        let expected: Vec<String> = (0..20).map(|i| format!("/p/{i:02}")).collect();
        assert_eq!(keys, expected);
    });
}

#[test]
fn state_and_history_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        {
            let s = open(&dir);
            s.put("/a", Bytes::from("1")).await.unwrap();
            s.put("/b", Bytes::from("2")).await.unwrap();
            s.delete("/a").await.unwrap();
        }
        let s = open(&dir);
        assert_eq!(s.revision(), 3);
        assert!(s.get("/a").is_none());
        assert_eq!(s.get("/b").unwrap().value, Bytes::from("2"));
        let mut w = s.watch("/", 0).await.unwrap();
        let kinds: Vec<_> = [
            next_event(&mut w).await,
            next_event(&mut w).await,
            next_event(&mut w).await,
        ]
        .into_iter()
        .map(|e| (e.kind, e.kv.key, e.kv.mod_revision))
        .collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Put, "/a".to_string(), 1),
                (EventKind::Put, "/b".to_string(), 2),
                (EventKind::Delete, "/a".to_string(), 3)
            ]
        );
        assert_eq!(s.put("/c", Bytes::from("3")).await.unwrap(), 4);
        assert_eq!(next_event(&mut w).await.kv.key, "/c");
    });
}

#[test]
fn watch_filters_by_prefix_and_follows_live_writes() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = Arc::new(open(&dir));
        let mut w = s.watch("/x/", s.revision()).await.unwrap();
        let writer = s.clone();
        let writes = tokio::spawn(async move {
            for i in 0..300 {
                let prefix = if i % 3 == 0 { "/y/" } else { "/x/" };
                writer
                    .put(&format!("{prefix}{i}"), Bytes::from("v"))
                    .await
                    .unwrap();
            }
        });
        let mut last = 0;
        let mut seen = 0;
        while seen < 200 {
            let e = next_event(&mut w).await;
            assert!(e.kv.key.starts_with("/x/"));
            assert!(
                e.kv.mod_revision > last,
                "events must arrive in revision order"
            );
            last = e.kv.mod_revision;
            seen += 1;
        }
        writes.await.unwrap();
    });
}

#[test]
fn watch_below_compaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut options = SqliteOptions::new(dir.path().join("store.db"));
        options.retain_revisions = 10;
        let s = SqliteStore::open(options).unwrap();
        // Compaction runs every 256 batches; sequential puts are one batch each.
        for i in 0..300 {
            s.put(&format!("/k{i}"), Bytes::from("v")).await.unwrap();
        }
        match s.watch("/", 1).await {
            Err(StoreError::Compacted {
                compact_revision, ..
            }) => assert!(compact_revision > 1),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("watch from a compacted revision must fail"),
        }
        let mut w = s.watch("/", s.revision() - 5).await.unwrap();
        assert_eq!(next_event(&mut w).await.kv.mod_revision, s.revision() - 4);
    });
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, u8),
    Delete(u8),
    CasPut(u8, u8, bool),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        (0u8..8, any::<u8>()).prop_map(|(k, v)| ModelOp::Put(k, v)),
        (0u8..8).prop_map(ModelOp::Delete),
        (0u8..8, any::<u8>(), any::<bool>()).prop_map(|(k, v, stale)| ModelOp::CasPut(k, v, stale)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The store behaves like a map with revisions, and a watch from any
    /// revision replays exactly the changes after it, in order.
    #[test]
    fn behaves_like_a_revisioned_map(ops in proptest::collection::vec(model_op(), 1..40),
                                     resume_at in 0usize..40) {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let s = open(&dir);
            let mut model: BTreeMap<String, (String, u64)> = BTreeMap::new();
            let mut revision = 0u64;
            let mut log: Vec<(u64, String, Option<String>)> = Vec::new();
            for op in &ops {
                match op {
                    ModelOp::Put(k, v) => {
                        let key = format!("/m/{k}");
                        revision = s.put(&key, Bytes::from(v.to_string())).await.unwrap();
                        model.insert(key.clone(), (v.to_string(), revision));
                        log.push((revision, key, Some(v.to_string())));
                    }
                    ModelOp::Delete(k) => {
                        let key = format!("/m/{k}");
                        let r = s.delete(&key).await.unwrap();
                        assert_eq!(r.is_some(), model.remove(&key).is_some());
                        if let Some(r) = r {
                            revision = r;
                            log.push((r, key, None));
                        }
                    }
                    ModelOp::CasPut(k, v, stale) => {
                        let key = format!("/m/{k}");
                        let current = model.get(&key).map_or(0, |(_, r)| *r);
                        let expected = if *stale { current + 1000 } else { current };
                        let out = s.txn(Txn {
                            compares: vec![Compare::ModRevision { key: key.clone(), revision: expected }],
                            ops: vec![Op::put(key.clone(), v.to_string())],
                        }).await.unwrap();
                        assert_eq!(out.succeeded, !stale);
                        if let Some(r) = out.revision {
                            revision = r;
                            model.insert(key.clone(), (v.to_string(), r));
                            log.push((r, key, Some(v.to_string())));
                        }
                    }
                }
            }
            assert_eq!(s.revision(), revision);
            let stored: BTreeMap<String, (String, u64)> = s
                .range("/m/", None, usize::MAX)
                .into_iter()
                .map(|kv| (kv.key, (String::from_utf8(kv.value.to_vec()).unwrap(), kv.mod_revision)))
                .collect();
            assert_eq!(&stored, &model);

            let from = log.get(resume_at.min(log.len())).map_or(revision, |(r, _, _)| r - 1);
            let expected: Vec<_> = log.iter().filter(|(r, _, _)| *r > from).cloned().collect();
            let mut w = s.watch("/m/", from).await.unwrap();
            for (r, key, value) in expected {
                let e = next_event(&mut w).await;
                assert_eq!(e.kv.mod_revision, r);
                assert_eq!(e.kv.key, key);
                match value {
                    Some(v) => {
                        assert_eq!(e.kind, EventKind::Put);
                        assert_eq!(e.kv.value, Bytes::from(v));
                    }
                    None => assert_eq!(e.kind, EventKind::Delete),
                }
            }
        });
    }
}
