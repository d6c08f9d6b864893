use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::dns_registry::{self, HostedZone, RecordSet, RecordType as RT, Routing};
use berth_store::{MemoryStore, Store, StoreExt};
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};

use super::*;
use crate::index::Raw;

fn zone(id: &str, name: &str, negative_ttl: u32) -> HostedZone {
    HostedZone {
        id: id.into(),
        name: name.into(),
        vpc_ids: vec![],
        account: "000000000000".into(),
        region: "us-east-1".into(),
        publisher: "test".into(),
        negative_ttl,
    }
}

fn set(name: &str, t: RT, values: &[&str]) -> RecordSet {
    RecordSet {
        name: name.into(),
        record_type: t,
        ttl: 5,
        values: values.iter().map(|v| v.to_string()).collect(),
        routing: Routing::Simple,
        weight: None,
        healthy: true,
        source: "test".into(),
    }
}

async fn put_zone(store: &MemoryStore, z: &HostedZone) {
    store
        .put(
            &dns_registry::zone_key(&z.id),
            serde_json::to_vec(z).unwrap().into(),
        )
        .await
        .unwrap();
}

async fn put_set(store: &MemoryStore, zone_id: &str, set_id: &str, s: &RecordSet) {
    let key = dns_registry::record_key(zone_id, &s.name, s.record_type, set_id);
    store
        .put(&key, serde_json::to_vec(s).unwrap().into())
        .await
        .unwrap();
}

fn lower(name: &str) -> LowerName {
    LowerName::new(&Name::from_str(name).unwrap())
}

fn snapshot(store: &MemoryStore) -> Snapshot {
    Raw::load(store).snapshot(store.revision())
}

fn addresses(records: &[&Record]) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

async fn corp() -> MemoryStore {
    let store = MemoryStore::new();
    put_zone(&store, &zone("Z1", "corp.local", 15)).await;
    put_set(
        &store,
        "Z1",
        "i-1",
        &set("api.corp.local", RT::A, &["10.0.0.1", "10.0.0.2"]),
    )
    .await;
    put_set(
        &store,
        "Z1",
        "i-1",
        &set("api.corp.local", RT::Aaaa, &["fd00::1"]),
    )
    .await;
    store
}

#[tokio::test]
async fn answers_a_nxdomain_nodata_and_the_apex() {
    let store = corp().await;
    let snap = snapshot(&store);
    let rng = &mut rand::thread_rng();

    let a = snap
        .answer(&lower("API.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert_eq!(addresses(&a.answers), ["10.0.0.1", "10.0.0.2"]);
    assert!(a.authorities.is_empty());
    assert_eq!(a.answers[0].ttl, 5);

    let aaaa = snap
        .answer(&lower("api.corp.local."), RecordType::AAAA, rng)
        .unwrap();
    assert_eq!(addresses(&aaaa.answers), ["fd00::1"]);

    // NXDOMAIN with the SOA, whose TTL and minimum are the zone's negative TTL.
    let nx = snap
        .answer(&lower("nope.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(nx.rcode, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert_eq!(nx.authorities.len(), 1);
    let RData::SOA(soa) = &nx.authorities[0].data else {
        panic!("not an SOA")
    };
    assert_eq!(soa.minimum, 15);
    assert_eq!(nx.authorities[0].ttl, 15);

    // NODATA: the name exists, the type does not.
    let nodata = snap
        .answer(&lower("api.corp.local."), RecordType::SRV, rng)
        .unwrap();
    assert_eq!(nodata.rcode, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities.len(), 1);

    // The apex: SOA and NS; A there is NODATA.
    let soa = snap
        .answer(&lower("corp.local."), RecordType::SOA, rng)
        .unwrap();
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
    let ns = snap
        .answer(&lower("corp.local."), RecordType::NS, rng)
        .unwrap();
    assert_eq!(ns.answers[0].record_type(), RecordType::NS);
    let apex_a = snap
        .answer(&lower("corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(apex_a.rcode, ResponseCode::NoError);
    assert!(apex_a.answers.is_empty());

    // Not Berth's.
    assert!(snap
        .answer(&lower("example.com."), RecordType::A, rng)
        .is_none());
    assert!(snap.answer(&lower("local."), RecordType::A, rng).is_none());
}

#[tokio::test]
async fn empty_non_terminals_exist_and_deletes_remove_them() {
    let store = corp().await;
    let mut srv = set(
        "_http._tcp.web.corp.local",
        RT::Srv,
        &["1 1 80 api.corp.local"],
    );
    srv.routing = Routing::Multivalue;
    put_set(&store, "Z1", "i-1", &srv).await;
    let snap = snapshot(&store);
    let rng = &mut rand::thread_rng();
    let ent = snap
        .answer(&lower("_tcp.web.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(ent.rcode, ResponseCode::NoError);

    // SRV: the targets' addresses in the additional section.
    let srv_answer = snap
        .answer(&lower("_http._tcp.web.corp.local."), RecordType::SRV, rng)
        .unwrap();
    assert_eq!(srv_answer.answers.len(), 1);
    assert_eq!(
        addresses(&srv_answer.additionals),
        ["10.0.0.1", "10.0.0.2", "fd00::1"]
    );

    store
        .delete(&dns_registry::record_key(
            "Z1",
            "_http._tcp.web.corp.local",
            RT::Srv,
            "i-1",
        ))
        .await
        .unwrap();
    let snap = snapshot(&store);
    let gone = snap
        .answer(&lower("_tcp.web.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(gone.rcode, ResponseCode::NXDomain);
}

#[tokio::test]
async fn multivalue_answers_at_most_eight_healthy_sets() {
    let store = MemoryStore::new();
    put_zone(&store, &zone("Z1", "corp.local", 15)).await;
    for i in 0..12 {
        let mut s = set("api.corp.local", RT::A, &[&format!("10.0.0.{i}")]);
        s.routing = Routing::Multivalue;
        s.healthy = i != 3;
        put_set(&store, "Z1", &format!("i-{i}"), &s).await;
    }
    let snap = snapshot(&store);
    let rng = &mut rand::thread_rng();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let a = snap
            .answer(&lower("api.corp.local."), RecordType::A, rng)
            .unwrap();
        assert_eq!(a.answers.len(), MULTIVALUE_MAX);
        let got = addresses(&a.answers);
        assert!(!got.contains(&"10.0.0.3".to_string()), "unhealthy answered");
        seen.extend(got);
    }
    assert_eq!(seen.len(), 11, "every healthy set is answered some time");

    // None healthy: every set answers (fail open), still at most 8.
    let store = MemoryStore::new();
    put_zone(&store, &zone("Z1", "corp.local", 15)).await;
    for i in 0..3 {
        let mut s = set("api.corp.local", RT::A, &[&format!("10.0.0.{i}")]);
        s.routing = Routing::Multivalue;
        s.healthy = false;
        put_set(&store, "Z1", &format!("i-{i}"), &s).await;
    }
    let snap = snapshot(&store);
    let a = snap
        .answer(&lower("api.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(addresses(&a.answers), ["10.0.0.0", "10.0.0.1", "10.0.0.2"]);
}

#[tokio::test]
async fn weighted_answers_one_set_by_weight() {
    let store = MemoryStore::new();
    put_zone(&store, &zone("Z1", "corp.local", 15)).await;
    for (i, weight, healthy) in [(1, 3, true), (2, 1, true), (3, 0, true), (4, 100, false)] {
        let mut s = set("w.corp.local", RT::A, &[&format!("10.0.0.{i}")]);
        s.routing = Routing::Weighted;
        s.weight = Some(weight);
        s.healthy = healthy;
        put_set(&store, "Z1", &format!("i-{i}"), &s).await;
    }
    let snap = snapshot(&store);
    let rng = &mut rand::thread_rng();
    let mut counts = std::collections::HashMap::new();
    for _ in 0..4000 {
        let a = snap
            .answer(&lower("w.corp.local."), RecordType::A, rng)
            .unwrap();
        assert_eq!(a.answers.len(), 1);
        *counts.entry(addresses(&a.answers)[0].clone()).or_insert(0) += 1;
    }
    assert!(
        !counts.contains_key("10.0.0.3"),
        "weight 0 chosen: {counts:?}"
    );
    assert!(
        !counts.contains_key("10.0.0.4"),
        "unhealthy chosen: {counts:?}"
    );
    let heavy = counts["10.0.0.1"] as f64 / 4000.0;
    assert!((0.68..0.82).contains(&heavy), "{counts:?}");
}

#[tokio::test]
async fn cnames_are_chased_within_berth_zones() {
    let store = corp().await;
    put_zone(&store, &zone("Z2", "other.internal", 30)).await;
    put_set(
        &store,
        "Z2",
        "c",
        &set("www.other.internal", RT::Cname, &["alias.corp.local"]),
    )
    .await;
    put_set(
        &store,
        "Z1",
        "c",
        &set("alias.corp.local", RT::Cname, &["api.corp.local."]),
    )
    .await;
    put_set(
        &store,
        "Z1",
        "d",
        &set("dangling.corp.local", RT::Cname, &["gone.corp.local"]),
    )
    .await;
    put_set(
        &store,
        "Z1",
        "e",
        &set("ext.corp.local", RT::Cname, &["example.com"]),
    )
    .await;
    let snap = snapshot(&store);
    let rng = &mut rand::thread_rng();

    let a = snap
        .answer(&lower("www.other.internal."), RecordType::A, rng)
        .unwrap();
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert_eq!(a.answers.len(), 4, "{:?}", a.answers);
    assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(a.answers[1].record_type(), RecordType::CNAME);
    assert_eq!(addresses(&a.answers), ["10.0.0.1", "10.0.0.2"]);

    let cname = snap
        .answer(&lower("www.other.internal."), RecordType::CNAME, rng)
        .unwrap();
    assert_eq!(cname.answers.len(), 1);

    let dangling = snap
        .answer(&lower("dangling.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(dangling.rcode, ResponseCode::NXDomain);
    assert_eq!(dangling.answers.len(), 1);

    let ext = snap
        .answer(&lower("ext.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(ext.answers.len(), 1);
    assert_eq!(
        ext.outside_target,
        Some(Name::from_str("example.com.").unwrap())
    );
}

#[tokio::test]
async fn invalid_values_are_left_out_and_the_closest_zone_wins() {
    let store = corp().await;
    put_zone(&store, &zone("Z3", "sub.corp.local", 60)).await;
    put_set(
        &store,
        "Z1",
        "x",
        &set("bad.corp.local", RT::A, &["10.0.0.300", "10.0.0.9"]),
    )
    .await;
    put_set(
        &store,
        "Z1",
        "y",
        &set("worse.corp.local", RT::Srv, &["1 1 http x"]),
    )
    .await;
    let snap = snapshot(&store);
    let rng = &mut rand::thread_rng();
    let a = snap
        .answer(&lower("bad.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(addresses(&a.answers), ["10.0.0.9"]);
    let nx = snap
        .answer(&lower("x.sub.corp.local."), RecordType::A, rng)
        .unwrap();
    assert_eq!(nx.authorities[0].ttl, 60);
}

// ---- the server on real sockets ------------------------------------------------

async fn ask(server: SocketAddr, name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut message = Message::query();
    message.metadata.id = rand::random();
    message.metadata.recursion_desired = true;
    message.add_query(hickory_proto::op::Query::query(
        Name::from_str(name).unwrap(),
        qtype,
    ));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        message.set_edns(e);
    }
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    socket
        .send_to(&message.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let answer = Message::from_vec(&buffer[..n]).unwrap();
    assert_eq!(answer.metadata.id, message.metadata.id);
    answer
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut message = Message::query();
    message.metadata.id = 7;
    message.add_query(hickory_proto::op::Query::query(
        Name::from_str(name).unwrap(),
        qtype,
    ));
    let bytes = message.to_vec().unwrap();
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let n = stream.read_u16().await.unwrap();
    let mut buffer = vec![0u8; n as usize];
    stream.read_exact(&mut buffer).await.unwrap();
    Message::from_vec(&buffer).unwrap()
}

async fn start(store: &MemoryStore, upstreams: Vec<SocketAddr>) -> DnsServer {
    let mut config = DnsConfig::new("127.0.0.1:0".parse().unwrap());
    config.upstreams = upstreams;
    config.upstream_timeout = Duration::from_millis(300);
    DnsServer::start(config, Arc::new(store.clone()) as Arc<dyn Store>)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_follows_the_store_within_a_second() {
    let store = corp().await;
    let server = start(&store, vec![]).await;
    let addr = server.local_addr();

    let a = ask(addr, "api.corp.local.", RecordType::A, true).await;
    assert!(a.metadata.authoritative);
    assert_eq!(a.answers.len(), 2);
    assert!(a.edns.is_some(), "EDNS answered with EDNS");

    put_set(
        &store,
        "Z1",
        "i-9",
        &set("new.corp.local", RT::A, &["10.0.0.9"]),
    )
    .await;
    let started = Instant::now();
    loop {
        let a = ask(addr, "new.corp.local.", RecordType::A, false).await;
        if a.answers.len() == 1 {
            break;
        }
        assert_eq!(a.metadata.response_code, ResponseCode::NXDomain);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not visible within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store
        .delete(&dns_registry::record_key(
            "Z1",
            "new.corp.local",
            RT::A,
            "i-9",
        ))
        .await
        .unwrap();
    let started = Instant::now();
    while ask(addr, "new.corp.local.", RecordType::A, false)
        .await
        .metadata
        .response_code
        != ResponseCode::NXDomain
    {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "delete not visible within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A new zone too.
    put_zone(&store, &zone("Z5", "late.test", 15)).await;
    let started = Instant::now();
    while ask(addr, "x.late.test.", RecordType::A, false)
        .await
        .metadata
        .response_code
        != ResponseCode::NXDomain
    {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "zone not visible within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Without upstreams, other names are refused at once.
    let started = Instant::now();
    let other = ask(addr, "example.com.", RecordType::A, false).await;
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let store = corp().await;
    let values: Vec<String> = (0..100).map(|i| format!("10.1.0.{i}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    put_set(&store, "Z1", "big", &set("big.corp.local", RT::A, &values)).await;
    let server = start(&store, vec![]).await;
    let udp = ask(server.local_addr(), "big.corp.local.", RecordType::A, false).await;
    assert!(udp.metadata.truncation, "512-byte UDP answer is truncated");
    let tcp = ask_tcp(server.local_addr(), "big.corp.local.", RecordType::A).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_forwarded_and_a_dead_upstream_is_servfail_quickly() {
    // The upstream: another Berth DNS authoritative for example.test.
    let upstream_store = MemoryStore::new();
    put_zone(&upstream_store, &zone("U", "example.test", 15)).await;
    put_set(
        &upstream_store,
        "U",
        "1",
        &set("www.example.test", RT::A, &["192.0.2.7"]),
    )
    .await;
    let upstream = start(&upstream_store, vec![]).await;

    let store = corp().await;
    put_set(
        &store,
        "Z1",
        "e",
        &set("ext.corp.local", RT::Cname, &["www.example.test"]),
    )
    .await;
    let server = start(&store, vec![upstream.local_addr()]).await;
    let a = ask(
        server.local_addr(),
        "www.example.test.",
        RecordType::A,
        true,
    )
    .await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        addresses(&a.answers.iter().collect::<Vec<_>>()),
        ["192.0.2.7"]
    );
    assert!(a.metadata.recursion_available);
    let tcp = ask_tcp(server.local_addr(), "www.example.test.", RecordType::A).await;
    assert_eq!(tcp.answers.len(), 1);
    let nx = ask(
        server.local_addr(),
        "nope.example.test.",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

    // A Berth CNAME to an outside name: the chain completed upstream.
    let chained = ask(server.local_addr(), "ext.corp.local.", RecordType::A, false).await;
    assert_eq!(chained.answers.len(), 2, "{chained:?}");
    assert_eq!(
        addresses(&chained.answers.iter().collect::<Vec<_>>()),
        ["192.0.2.7"]
    );

    // An upstream that never answers: SERVFAIL after the timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = start(&store, vec![silent.local_addr().unwrap()]).await;
    let started = Instant::now();
    let fail = ask(dead.local_addr(), "www.example.test.", RecordType::A, false).await;
    assert_eq!(fail.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Berth's own names still answer.
    let own = ask(dead.local_addr(), "api.corp.local.", RecordType::A, false).await;
    assert_eq!(own.answers.len(), 2);
}
