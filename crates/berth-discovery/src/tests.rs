//! Service-level tests over the in-memory store: the operations as a client
//! calls them (JSON in, JSON out), the DNS registry entries they write, and
//! the Rust API ECS uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_model::dns_registry::{self, HostedZone, RecordSet, RecordType, Routing};
use berth_model::{AwsError, JsonService, Principal, PrincipalKind, RequestContext};
use berth_store::{MemoryStore, Store, StoreExt};
use serde_json::{json, Value};

use crate::DiscoveryService;

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";
const VPC: &str = "vpc-0123456789abcdef0";

struct Fixture {
    store: Arc<dyn Store>,
    sd: DiscoveryService,
    ctx: RequestContext,
}

async fn fixture() -> Fixture {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // A VPC as berth-ec2 stores it.
    store
        .put(
            &format!("ec2/{ACCOUNT}/{REGION}/vpc/{VPC}"),
            serde_json::to_vec(&json!({"id": VPC, "cidr": "172.31.0.0/16"}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    Fixture {
        sd: DiscoveryService::new(store.clone()),
        store,
        ctx: RequestContext::for_principal(
            Principal {
                kind: PrincipalKind::Root,
                arn: format!("arn:aws:iam::{ACCOUNT}:root"),
                user_id: ACCOUNT.into(),
                account_id: ACCOUNT.into(),
                access_key_id: "AKIAROOT".into(),
            },
            REGION,
        ),
    }
}

impl Fixture {
    async fn call(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        self.sd
            .handle(&self.ctx, op, body.to_string().as_bytes())
            .await
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    async fn ok(&self, op: &str, body: Value) -> Value {
        self.call(op, body)
            .await
            .unwrap_or_else(|e| panic!("{op}: {e:?}"))
    }

    async fn err(&self, op: &str, body: Value) -> AwsError {
        match self.call(op, body).await {
            Ok(v) => panic!("{op} succeeded: {v}"),
            Err(e) => e,
        }
    }

    /// Every key Cloud Map and the DNS registry hold, with values.
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for prefix in ["servicediscovery/", dns_registry::PREFIX] {
            out.extend(
                self.store
                    .range(prefix, None, usize::MAX)
                    .into_iter()
                    .map(|kv| (kv.key, kv.value.to_vec())),
            );
        }
        out
    }

    fn records(&self) -> Vec<RecordSet> {
        self.store
            .range(dns_registry::RECORDS_PREFIX, None, usize::MAX)
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect()
    }

    /// A private namespace `corp.local`; its id.
    async fn private_namespace(&self) -> String {
        let op = self
            .ok(
                "CreatePrivateDnsNamespace",
                json!({"Name": "corp.local", "Vpc": VPC}),
            )
            .await;
        let op = self
            .ok("GetOperation", json!({"OperationId": op["OperationId"]}))
            .await;
        op["Operation"]["Targets"]["NAMESPACE"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn service(&self, ns: &str, name: &str, records: Value, custom: bool) -> String {
        let mut body = json!({
            "Name": name,
            "NamespaceId": ns,
            "DnsConfig": {"RoutingPolicy": "MULTIVALUE", "DnsRecords": records},
        });
        if custom {
            body["HealthCheckCustomConfig"] = json!({"FailureThreshold": 1});
        }
        let out = self.ok("CreateService", body).await;
        out["Service"]["Id"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn private_namespace_publishes_a_zone_and_reports_its_operation() {
    let f = fixture().await;
    let out = f
        .ok(
            "CreatePrivateDnsNamespace",
            json!({"Name": "corp.local", "Vpc": VPC, "CreatorRequestId": "r1",
                   "Properties": {"DnsProperties": {"SOA": {"TTL": 60}}}}),
        )
        .await;
    let op_id = out["OperationId"].as_str().unwrap().to_string();
    let op = f.ok("GetOperation", json!({"OperationId": op_id})).await;
    let op = &op["Operation"];
    assert_eq!(op["Status"], "SUCCESS");
    assert_eq!(op["Type"], "CREATE_NAMESPACE");
    let ns_id = op["Targets"]["NAMESPACE"].as_str().unwrap();
    assert!(ns_id.starts_with("ns-") && ns_id.len() == 19, "{ns_id}");

    let ns = f.ok("GetNamespace", json!({"Id": ns_id})).await;
    let ns = &ns["Namespace"];
    assert_eq!(ns["Type"], "DNS_PRIVATE");
    assert_eq!(
        ns["Arn"],
        format!("arn:aws:servicediscovery:{REGION}:{ACCOUNT}:namespace/{ns_id}")
    );
    assert_eq!(ns["Properties"]["HttpProperties"]["HttpName"], "corp.local");
    assert_eq!(ns["Properties"]["DnsProperties"]["SOA"]["TTL"], 60);
    let zone_id = ns["Properties"]["DnsProperties"]["HostedZoneId"]
        .as_str()
        .unwrap();
    assert!(zone_id.starts_with('Z'));
    let zone: HostedZone =
        serde_json::from_slice(&f.store.get(&dns_registry::zone_key(zone_id)).unwrap().value)
            .unwrap();
    assert_eq!(zone.name, "corp.local");
    assert_eq!(zone.vpc_ids, vec![VPC.to_string()]);
    assert_eq!(zone.negative_ttl, 60);

    // The same request again is a retry: the same operation, nothing new.
    let before = f.snapshot();
    let again = f
        .ok(
            "CreatePrivateDnsNamespace",
            json!({"Name": "corp.local", "Vpc": VPC, "CreatorRequestId": "r1",
                   "Properties": {"DnsProperties": {"SOA": {"TTL": 60}}}}),
        )
        .await;
    assert_eq!(again["OperationId"], op_id.as_str());
    assert_eq!(f.snapshot(), before);
    // The id reused for another request.
    let e = f
        .err(
            "CreateHttpNamespace",
            json!({"Name": "other", "CreatorRequestId": "r1"}),
        )
        .await;
    assert_eq!(e.code, "DuplicateRequest");
    // The same name in the same VPC.
    let e = f
        .err(
            "CreatePrivateDnsNamespace",
            json!({"Name": "CORP.local", "Vpc": VPC}),
        )
        .await;
    assert_eq!(e.code, "NamespaceAlreadyExists");
    assert_eq!(f.snapshot(), before);
}

#[tokio::test]
async fn bad_namespaces_change_nothing() {
    let f = fixture().await;
    let before = f.snapshot();
    let cases = [
        (
            "CreatePrivateDnsNamespace",
            json!({"Name": "corp.local", "Vpc": "vpc-doesnotexist"}),
            "InvalidInput",
        ),
        (
            "CreatePrivateDnsNamespace",
            json!({"Name": "bad name", "Vpc": VPC}),
            "InvalidInput",
        ),
        (
            "CreatePrivateDnsNamespace",
            json!({"Name": "a..b", "Vpc": VPC}),
            "InvalidInput",
        ),
        (
            "CreatePrivateDnsNamespace",
            json!({"Name": "corp.local", "Vpc": VPC,
                   "Properties": {"DnsProperties": {"SOA": {"TTL": -1}}}}),
            "InvalidInput",
        ),
        (
            "CreateHttpNamespace",
            json!({"Name": "arn:aws:thing"}),
            "InvalidInput",
        ),
        ("CreateHttpNamespace", json!({}), "InvalidInput"),
        (
            "CreatePublicDnsNamespace",
            json!({"Name": "example.com"}),
            "InvalidInput",
        ),
        (
            "CreateHttpNamespace",
            json!({"Name": "x", "Tags": (0..51).map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect::<Vec<_>>()}),
            "TooManyTagsException",
        ),
        (
            "CreateHttpNamespace",
            json!({"Name": "x", "Tags": [{"Key": "aws:x", "Value": "v"}]}),
            "InvalidInput",
        ),
        (
            "GetNamespace",
            json!({"Id": "ns-nothere00000000"}),
            "NamespaceNotFound",
        ),
        (
            "DeleteNamespace",
            json!({"Id": "ns-nothere00000000"}),
            "NamespaceNotFound",
        ),
        (
            "GetOperation",
            json!({"OperationId": "nope"}),
            "OperationNotFound",
        ),
        (
            "ListNamespaces",
            json!({"Filters": [{"Name": "TYPE", "Values": ["HTTP", "DNS_PRIVATE"], "Condition": "EQ"}]}),
            "InvalidInput",
        ),
        ("ListNamespaces", json!({"MaxResults": 101}), "InvalidInput"),
    ];
    for (op, body, code) in cases {
        let e = f.err(op, body.clone()).await;
        assert_eq!(e.code, code, "{op} {body}: {e:?}");
    }
    assert_eq!(f.snapshot(), before);
}

#[tokio::test]
async fn instances_publish_record_sets_and_follow_their_health() {
    let f = fixture().await;
    let ns = f.private_namespace().await;
    let srv = f
        .service(
            &ns,
            "api",
            json!([{"Type": "A", "TTL": 5}, {"Type": "SRV", "TTL": 10}]),
            true,
        )
        .await;
    assert!(srv.starts_with("srv-") && srv.len() == 20);
    let out = f
        .ok(
            "RegisterInstance",
            json!({"ServiceId": srv, "InstanceId": "task1",
                   "Attributes": {"AWS_INSTANCE_IPV4": "172.31.0.5", "AWS_INSTANCE_PORT": "8080", "v": "1"}}),
        )
        .await;
    let op = f
        .ok("GetOperation", json!({"OperationId": out["OperationId"]}))
        .await;
    assert_eq!(op["Operation"]["Type"], "REGISTER_INSTANCE");
    assert_eq!(op["Operation"]["Targets"]["INSTANCE"], "task1");

    let mut sets = f.records();
    sets.sort_by(|a, b| (&a.name, a.record_type).cmp(&(&b.name, b.record_type)));
    assert_eq!(sets.len(), 3, "{sets:?}");
    assert_eq!(sets[0].name, "api.corp.local");
    assert_eq!(sets[0].record_type, RecordType::A);
    assert_eq!(sets[0].values, vec!["172.31.0.5"]);
    assert_eq!(sets[0].ttl, 5);
    assert_eq!(sets[0].routing, Routing::Multivalue);
    assert_eq!(sets[1].record_type, RecordType::Srv);
    assert_eq!(sets[1].values, vec!["1 1 8080 task1.api.corp.local"]);
    assert_eq!(sets[1].ttl, 10);
    assert_eq!(sets[2].name, "task1.api.corp.local");
    assert_eq!(sets[2].values, vec!["172.31.0.5"]);
    assert!(sets.iter().all(|s| s.healthy));
    // The set id is the instance id.
    let keys: Vec<String> = f
        .store
        .range(dns_registry::RECORDS_PREFIX, None, usize::MAX)
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert!(keys.iter().all(|k| k.ends_with("/task1")), "{keys:?}");

    f.ok(
        "UpdateInstanceCustomHealthStatus",
        json!({"ServiceId": srv, "InstanceId": "task1", "Status": "UNHEALTHY"}),
    )
    .await;
    assert!(f.records().iter().all(|s| !s.healthy));
    let health = f
        .ok("GetInstancesHealthStatus", json!({"ServiceId": srv}))
        .await;
    assert_eq!(health["Status"]["task1"], "UNHEALTHY");
    let found = f
        .ok(
            "DiscoverInstances",
            json!({"NamespaceName": "corp.local", "ServiceName": "api", "HealthStatus": "HEALTHY"}),
        )
        .await;
    assert_eq!(found["Instances"], json!([]));
    let found = f
        .ok(
            "DiscoverInstances",
            json!({"NamespaceName": "corp.local", "ServiceName": "api", "HealthStatus": "HEALTHY_OR_ELSE_ALL"}),
        )
        .await;
    assert_eq!(found["Instances"][0]["HealthStatus"], "UNHEALTHY");

    // TTL changes reach the record sets; record types cannot change.
    f.ok(
        "UpdateService",
        json!({"Id": srv, "Service": {"DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 30}, {"Type": "SRV", "TTL": 30}]}}}),
    )
    .await;
    assert!(f.records().iter().all(|s| s.ttl == 30));
    let before = f.snapshot();
    let e = f
        .err(
            "UpdateService",
            json!({"Id": srv, "Service": {"DnsConfig": {"DnsRecords": [{"Type": "AAAA", "TTL": 30}]}}}),
        )
        .await;
    assert_eq!(e.code, "InvalidInput");

    // In use: neither the service nor the namespace can go.
    assert_eq!(
        f.err("DeleteService", json!({"Id": srv})).await.code,
        "ResourceInUse"
    );
    assert_eq!(
        f.err("DeleteNamespace", json!({"Id": ns})).await.code,
        "ResourceInUse"
    );
    assert_eq!(f.snapshot(), before);

    f.ok(
        "DeregisterInstance",
        json!({"ServiceId": srv, "InstanceId": "task1"}),
    )
    .await;
    assert!(f.records().is_empty());
    assert_eq!(
        f.err(
            "DeregisterInstance",
            json!({"ServiceId": srv, "InstanceId": "task1"})
        )
        .await
        .code,
        "InstanceNotFound"
    );
    f.ok("DeleteService", json!({"Id": srv})).await;
    f.ok("DeleteNamespace", json!({"Id": ns})).await;
    assert!(f
        .store
        .range(dns_registry::PREFIX, None, usize::MAX)
        .is_empty());
}

#[tokio::test]
async fn registrations_that_do_not_fit_the_service_change_nothing() {
    let f = fixture().await;
    let ns = f.private_namespace().await;
    let srv = f
        .service(&ns, "db", json!([{"Type": "SRV", "TTL": 10}]), false)
        .await;
    let before = f.snapshot();
    let cases = [
        json!({"ServiceId": srv, "InstanceId": "i1", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.1"}}),
        json!({"ServiceId": srv, "InstanceId": "i1", "Attributes": {"AWS_INSTANCE_PORT": "80"}}),
        json!({"ServiceId": srv, "InstanceId": "i1", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.300", "AWS_INSTANCE_PORT": "80"}}),
        json!({"ServiceId": srv, "InstanceId": "i1", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "70000"}}),
        json!({"ServiceId": srv, "InstanceId": "bad id!", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "80"}}),
        json!({"ServiceId": srv, "InstanceId": "i1"}),
    ];
    for body in cases {
        let e = f.err("RegisterInstance", body.clone()).await;
        assert_eq!(e.code, "InvalidInput", "{body}: {e:?}");
    }
    let e = f
        .err(
            "RegisterInstance",
            json!({"ServiceId": "srv-nothere00000000", "InstanceId": "i1", "Attributes": {"a": "b"}}),
        )
        .await;
    assert_eq!(e.code, "ServiceNotFound");
    // Services that cannot be.
    let bad_services = [
        (
            json!({"Name": "x", "NamespaceId": ns, "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": -5}]}}),
            "InvalidInput",
        ),
        (
            json!({"Name": "x", "NamespaceId": ns, "DnsConfig": {"DnsRecords": [{"Type": "CNAME", "TTL": 5}]}}),
            "InvalidInput",
        ),
        (
            json!({"Name": "x", "NamespaceId": ns, "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 5}, {"Type": "A", "TTL": 6}]}}),
            "InvalidInput",
        ),
        (
            json!({"Name": "x", "NamespaceId": ns, "DnsConfig": {"DnsRecords": [{"Type": "MX", "TTL": 5}]}}),
            "InvalidInput",
        ),
        (json!({"Name": "-x", "NamespaceId": ns}), "InvalidInput"),
        (
            json!({"Name": "DB", "NamespaceId": ns}),
            "ServiceAlreadyExists",
        ),
        (
            json!({"Name": "x", "NamespaceId": "ns-nothere00000000"}),
            "NamespaceNotFound",
        ),
        (
            json!({"Name": "x", "NamespaceId": ns, "HealthCheckConfig": {"Type": "HTTP"}}),
            "InvalidInput",
        ),
    ];
    for (body, code) in bad_services {
        let e = f.err("CreateService", body.clone()).await;
        assert_eq!(e.code, code, "{body}: {e:?}");
    }
    assert_eq!(f.snapshot(), before);
}

#[tokio::test]
async fn http_namespaces_discover_with_filters_and_pages() {
    let f = fixture().await;
    f.ok("CreateHttpNamespace", json!({"Name": "apps"})).await;
    // A second namespace of the same name in DNS gets a suffixed HttpName.
    f.ok(
        "CreatePrivateDnsNamespace",
        json!({"Name": "apps", "Vpc": VPC}),
    )
    .await;
    let list = f
        .ok(
            "ListNamespaces",
            json!({"Filters": [{"Name": "TYPE", "Values": ["HTTP"], "Condition": "EQ"}]}),
        )
        .await;
    let nss = list["Namespaces"].as_array().unwrap();
    assert_eq!(nss.len(), 1);
    let ns = nss[0]["Id"].as_str().unwrap().to_string();
    let all = f
        .ok(
            "ListNamespaces",
            json!({"Filters": [{"Name": "HTTP_NAME", "Values": ["apps"], "Condition": "BEGINS_WITH"}]}),
        )
        .await;
    let names: Vec<&str> = all["Namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["Properties"]["HttpProperties"]["HttpName"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"apps") && names.iter().any(|n| n.starts_with("apps-")));

    let srv = f
        .ok("CreateService", json!({"Name": "web", "NamespaceId": ns}))
        .await["Service"]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..5 {
        f.ok(
            "RegisterInstance",
            json!({"ServiceId": srv, "InstanceId": format!("i{i}"),
                   "Attributes": {"stage": if i < 3 { "prod" } else { "beta" }, "az": format!("a{}", i % 2)}}),
        )
        .await;
    }
    // Pages of two cover every instance once.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"ServiceId": srv, "MaxResults": 2});
        if let Some(t) = &token {
            body["NextToken"] = json!(t);
        }
        let page = f.ok("ListInstances", body).await;
        for i in page["Instances"].as_array().unwrap() {
            seen.push(i["Id"].as_str().unwrap().to_string());
        }
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, vec!["i0", "i1", "i2", "i3", "i4"]);

    let discover = |q: Value| {
        let mut body = json!({"NamespaceName": "apps", "ServiceName": "web"});
        for (k, v) in q.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["Instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["InstanceId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let out = f
        .ok(
            "DiscoverInstances",
            discover(json!({"QueryParameters": {"stage": "prod"}})),
        )
        .await;
    assert_eq!(ids(&out), vec!["i0", "i1", "i2"]);
    assert_eq!(out["InstancesRevision"], 5);
    assert_eq!(out["Instances"][0]["HealthStatus"], "UNKNOWN");
    let out = f
        .ok(
            "DiscoverInstances",
            discover(
                json!({"QueryParameters": {"stage": "prod"}, "OptionalParameters": {"az": "a1"}}),
            ),
        )
        .await;
    assert_eq!(ids(&out), vec!["i1"]);
    let out = f
        .ok(
            "DiscoverInstances",
            discover(
                json!({"QueryParameters": {"stage": "prod"}, "OptionalParameters": {"az": "zz"}}),
            ),
        )
        .await;
    assert_eq!(ids(&out), vec!["i0", "i1", "i2"]);
    let out = f
        .ok("DiscoverInstances", discover(json!({"MaxResults": 2})))
        .await;
    assert_eq!(out["Instances"].as_array().unwrap().len(), 2);
    let e = f
        .err(
            "DiscoverInstances",
            json!({"NamespaceName": "nope", "ServiceName": "web"}),
        )
        .await;
    assert_eq!(e.code, "NamespaceNotFound");
    let e = f
        .err(
            "DiscoverInstances",
            json!({"NamespaceName": "apps", "ServiceName": "nope"}),
        )
        .await;
    assert_eq!(e.code, "ServiceNotFound");
    let rev = f
        .ok(
            "DiscoverInstancesRevision",
            json!({"NamespaceName": "apps", "ServiceName": "web"}),
        )
        .await;
    assert_eq!(rev["InstancesRevision"], 5);
    // No custom health check: UpdateInstanceCustomHealthStatus has none to set.
    let e = f
        .err(
            "UpdateInstanceCustomHealthStatus",
            json!({"ServiceId": srv, "InstanceId": "i0", "Status": "HEALTHY"}),
        )
        .await;
    assert_eq!(e.code, "CustomHealthNotFound");
    // HTTP namespaces publish nothing in DNS.
    assert!(f.records().is_empty());

    let ops = f
        .ok(
            "ListOperations",
            json!({"Filters": [{"Name": "TYPE", "Values": ["REGISTER_INSTANCE"], "Condition": "IN"}]}),
        )
        .await;
    assert_eq!(ops["Operations"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn tags_and_service_attributes() {
    let f = fixture().await;
    f.ok(
        "CreateHttpNamespace",
        json!({"Name": "apps", "Tags": [{"Key": "team", "Value": "a"}]}),
    )
    .await;
    let ns = f.ok("ListNamespaces", json!({})).await["Namespaces"][0].clone();
    let arn = ns["Arn"].as_str().unwrap().to_string();
    let tags = f
        .ok("ListTagsForResource", json!({"ResourceARN": arn}))
        .await;
    assert_eq!(tags["Tags"], json!([{"Key": "team", "Value": "a"}]));
    f.ok(
        "TagResource",
        json!({"ResourceARN": arn, "Tags": [{"Key": "env", "Value": "prod"}]}),
    )
    .await;
    f.ok(
        "UntagResource",
        json!({"ResourceARN": arn, "TagKeys": ["team"]}),
    )
    .await;
    let tags = f
        .ok("ListTagsForResource", json!({"ResourceARN": arn}))
        .await;
    assert_eq!(tags["Tags"], json!([{"Key": "env", "Value": "prod"}]));
    let many: Vec<Value> = (0..50)
        .map(|i| json!({"Key": format!("k{i}"), "Value": "v"}))
        .collect();
    let e = f
        .err("TagResource", json!({"ResourceARN": arn, "Tags": many}))
        .await;
    assert_eq!(e.code, "TooManyTagsException");
    let e = f
        .err(
            "ListTagsForResource",
            json!({"ResourceARN": format!("arn:aws:servicediscovery:{REGION}:{ACCOUNT}:service/srv-nothere00000000")}),
        )
        .await;
    assert_eq!(e.code, "ResourceNotFoundException");

    let srv = f
        .ok(
            "CreateService",
            json!({"Name": "web", "NamespaceId": ns["Id"]}),
        )
        .await["Service"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    f.ok(
        "UpdateServiceAttributes",
        json!({"ServiceId": srv, "Attributes": {"a": "1", "b": "2"}}),
    )
    .await;
    f.ok(
        "DeleteServiceAttributes",
        json!({"ServiceId": srv, "Attributes": ["a"]}),
    )
    .await;
    let attrs = f
        .ok("GetServiceAttributes", json!({"ServiceId": srv}))
        .await;
    assert_eq!(attrs["ServiceAttributes"]["Attributes"], json!({"b": "2"}));
    let too_many: BTreeMap<String, String> = (0..30)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let e = f
        .err(
            "UpdateServiceAttributes",
            json!({"ServiceId": srv, "Attributes": too_many}),
        )
        .await;
    assert_eq!(e.code, "ServiceAttributesLimitExceededException");
}

#[tokio::test]
async fn the_rust_api_registers_like_the_http_api() {
    let f = fixture().await;
    let ns = f.private_namespace().await;
    let srv_id = f
        .service(&ns, "api", json!([{"Type": "A", "TTL": 5}]), true)
        .await;
    let arn = format!("arn:aws:servicediscovery:{REGION}:{ACCOUNT}:service/{srv_id}");
    let info = f.sd.service_info(ACCOUNT, REGION, &arn).unwrap();
    assert_eq!(info.record_types, vec!["A"]);
    assert!(info.custom_health);
    assert_eq!(info.namespace_name, "corp.local");
    let attrs: BTreeMap<String, String> = [
        ("AWS_INSTANCE_IPV4".to_string(), "172.31.0.9".to_string()),
        ("ECS_CLUSTER_NAME".to_string(), "default".to_string()),
    ]
    .into();
    let op =
        f.sd.register_instance(ACCOUNT, REGION, &arn, "t1", attrs.clone())
            .await
            .unwrap();
    assert!(!op.is_empty());
    let listed = f.sd.list_instances(ACCOUNT, REGION, &arn).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attributes, attrs);
    assert_eq!(listed[0].health_status, "HEALTHY");
    f.sd.set_custom_health(ACCOUNT, REGION, &arn, "t1", false)
        .await
        .unwrap();
    assert!(!f.records()[0].healthy);
    // Missing the A record's address.
    let e =
        f.sd.register_instance(ACCOUNT, REGION, &arn, "t2", BTreeMap::new())
            .await
            .unwrap_err();
    assert_eq!(e.code, "InvalidInput");
    assert!(f
        .sd
        .deregister_instance(ACCOUNT, REGION, &arn, "t1")
        .await
        .unwrap()
        .is_some());
    assert!(f
        .sd
        .deregister_instance(ACCOUNT, REGION, &arn, "t1")
        .await
        .unwrap()
        .is_none());
    assert!(f.records().is_empty());
    let got = f.ok("GetService", json!({"Id": arn})).await;
    assert_eq!(got["Service"]["InstanceCount"], 0);
}
