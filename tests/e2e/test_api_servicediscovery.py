"""AWS Cloud Map (`servicediscovery`) through boto3 and the aws CLI: namespaces,
services and instances, operations, tags, discovery; bad input answered with
AWS's error codes and changing nothing; state kept across a restart. Every
answer is checked against the botocore model."""
import json

import botocore.config
import boto3
import pytest
from botocore.exceptions import ClientError

from berth_harness import ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY, Berth, check_output, load_model

MODEL = load_model("servicediscovery", "2017-03-14")
TARGET = "Route53AutoNaming_v20170314"


def client(berth, validate=True):
    # DiscoverInstances carries the host prefix `data-`, which botocore would
    # put before 127.0.0.1: as for any address endpoint, it is turned off.
    return boto3.client(
        "servicediscovery", endpoint_url=berth.endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(retries={"max_attempts": 1}, inject_host_prefix=False,
                                      parameter_validation=validate))


def raw(berth, operation, payload):
    """A signed call; its body checked against the model when it succeeds."""
    status, body, _ = berth.raw("servicediscovery", TARGET, operation, payload)
    if status == 200:
        check_output(MODEL, operation, body)
    return status, body


def ok(berth, operation, payload):
    status, body = raw(berth, operation, payload)
    assert status == 200, (operation, body)
    return body


def default_vpc(berth):
    ec2 = berth.client("ec2")
    return next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault"))


def operation_target(berth, operation_id, kind="NAMESPACE"):
    op = ok(berth, "GetOperation", {"OperationId": operation_id})["Operation"]
    assert op["Status"] == "SUCCESS", op
    return op["Targets"][kind]


def state(berth):
    """Everything a caller can see of Cloud Map."""
    out = {"namespaces": ok(berth, "ListNamespaces", {})["Namespaces"],
           "services": ok(berth, "ListServices", {})["Services"],
           "operations": sorted(o["Id"] for o in ok(berth, "ListOperations", {})["Operations"])}
    out["instances"] = {
        s["Id"]: ok(berth, "ListInstances", {"ServiceId": s["Id"]})["Instances"]
        for s in out["services"]}
    out["tags"] = {
        n["Arn"]: ok(berth, "ListTagsForResource", {"ResourceARN": n["Arn"]})["Tags"]
        for n in out["namespaces"]}
    return out


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    server = Berth(tmp_path_factory.mktemp("berth") / "data").start()
    yield server
    server.stop()


def test_private_namespace_service_instances_through_boto3(cloud):
    sd = client(cloud)
    vpc = default_vpc(cloud)
    op = sd.create_private_dns_namespace(Name="corp.local", Vpc=vpc, CreatorRequestId="corp-1",
                                         Tags=[{"Key": "team", "Value": "blue"}])
    got = sd.get_operation(OperationId=op["OperationId"])["Operation"]
    assert got["Status"] == "SUCCESS" and got["Type"] == "CREATE_NAMESPACE"
    ns_id = got["Targets"]["NAMESPACE"]
    assert ns_id.startswith("ns-") and len(ns_id) == 19
    # A retry with the same CreatorRequestId is the same operation.
    again = sd.create_private_dns_namespace(Name="corp.local", Vpc=vpc, CreatorRequestId="corp-1",
                                            Tags=[{"Key": "team", "Value": "blue"}])
    assert again["OperationId"] == op["OperationId"]

    ns = ok(cloud, "GetNamespace", {"Id": ns_id})["Namespace"]
    assert ns["Arn"] == f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}:namespace/{ns_id}"
    assert ns["Type"] == "DNS_PRIVATE" and ns["Name"] == "corp.local"
    assert ns["Properties"]["DnsProperties"]["HostedZoneId"].startswith("Z")
    assert ns["Properties"]["HttpProperties"]["HttpName"] == "corp.local"

    svc = sd.create_service(
        Name="api", NamespaceId=ns_id,
        DnsConfig={"RoutingPolicy": "MULTIVALUE",
                   "DnsRecords": [{"Type": "A", "TTL": 5}, {"Type": "SRV", "TTL": 5}]},
        HealthCheckCustomConfig={"FailureThreshold": 1})["Service"]
    assert svc["Id"].startswith("srv-") and len(svc["Id"]) == 20
    assert svc["Arn"] == f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}:service/{svc['Id']}"
    assert svc["Type"] == "DNS_HTTP"
    ok(cloud, "GetService", {"Id": svc["Arn"]})

    for i in range(3):
        op = sd.register_instance(ServiceId=svc["Id"], InstanceId=f"task-{i}", Attributes={
            "AWS_INSTANCE_IPV4": f"172.31.0.{10 + i}", "AWS_INSTANCE_PORT": "8080",
            "version": "v1" if i < 2 else "v2"})
        assert operation_target(cloud, op["OperationId"], "INSTANCE") == f"task-{i}"
    sd.update_instance_custom_health_status(ServiceId=svc["Id"], InstanceId="task-2",
                                            Status="UNHEALTHY")

    found = ok(cloud, "DiscoverInstances", {"NamespaceName": "corp.local", "ServiceName": "api",
                                            "HealthStatus": "HEALTHY"})
    assert sorted(i["InstanceId"] for i in found["Instances"]) == ["task-0", "task-1"]
    assert found["Instances"][0]["Attributes"]["AWS_INSTANCE_PORT"] == "8080"
    # boto3's own DiscoverInstances (with the host prefix turned off).
    found = sd.discover_instances(NamespaceName="corp.local", ServiceName="api",
                                  HealthStatus="ALL", QueryParameters={"version": "v2"})
    assert [i["InstanceId"] for i in found["Instances"]] == ["task-2"]
    assert found["Instances"][0]["HealthStatus"] == "UNHEALTHY"
    found = sd.discover_instances(NamespaceName="corp.local", ServiceName="api",
                                  OptionalParameters={"version": "v3"}, MaxResults=2)
    assert len(found["Instances"]) == 2
    revision = sd.discover_instances_revision(NamespaceName="corp.local",
                                              ServiceName="api")["InstancesRevision"]
    assert revision == found["InstancesRevision"] >= 4
    health = ok(cloud, "GetInstancesHealthStatus", {"ServiceId": svc["Id"]})["Status"]
    assert health == {"task-0": "HEALTHY", "task-1": "HEALTHY", "task-2": "UNHEALTHY"}
    inst = ok(cloud, "GetInstance", {"ServiceId": svc["Id"], "InstanceId": "task-0"})["Instance"]
    assert inst["Attributes"]["AWS_INSTANCE_IPV4"] == "172.31.0.10"

    pages, token = [], None
    while True:
        page = ok(cloud, "ListInstances", {"ServiceId": svc["Id"], "MaxResults": 2,
                                           **({"NextToken": token} if token else {})})
        pages.append([i["Id"] for i in page["Instances"]])
        token = page.get("NextToken")
        if not token:
            break
    assert pages == [["task-0", "task-1"], ["task-2"]]

    # TTL updates are an UPDATE_SERVICE operation.
    op = sd.update_service(Id=svc["Id"], Service={"DnsConfig": {"DnsRecords": [
        {"Type": "A", "TTL": 30}, {"Type": "SRV", "TTL": 30}]}})
    assert operation_target(cloud, op["OperationId"], "SERVICE") == svc["Id"]
    ttls = [r["TTL"] for r in sd.get_service(Id=svc["Id"])["Service"]["DnsConfig"]["DnsRecords"]]
    assert ttls == [30, 30]

    sd.update_private_dns_namespace(Id=ns_id, Namespace={
        "Description": "corp", "Properties": {"DnsProperties": {"SOA": {"TTL": 60}}}})
    ns = sd.get_namespace(Id=ns_id)["Namespace"]
    assert ns["Description"] == "corp"
    assert ns["Properties"]["DnsProperties"]["SOA"]["TTL"] == 60
    assert ns["ServiceCount"] == 1

    ops = ok(cloud, "ListOperations", {"Filters": [
        {"Name": "TYPE", "Values": ["REGISTER_INSTANCE"], "Condition": "IN"}]})["Operations"]
    assert len(ops) == 3 and all(o["Status"] == "SUCCESS" for o in ops)

    # Tear down in order.
    for i in range(3):
        sd.deregister_instance(ServiceId=svc["Id"], InstanceId=f"task-{i}")
    sd.delete_service(Id=svc["Id"])
    op = sd.delete_namespace(Id=ns_id)
    assert ok(cloud, "GetOperation", {"OperationId": op["OperationId"]})["Operation"]["Type"] \
        == "DELETE_NAMESPACE"
    with pytest.raises(ClientError) as e:
        sd.get_namespace(Id=ns_id)
    assert e.value.response["Error"]["Code"] == "NamespaceNotFound"


def test_http_namespace_through_the_aws_cli(cloud):
    _, op, _ = cloud.aws("servicediscovery", "create-http-namespace", "--name", "apps",
                         "--tags", "Key=env,Value=prod")
    check_output(MODEL, "CreateHttpNamespace", op)
    ns_id = operation_target(cloud, op["OperationId"])
    _, listed, _ = cloud.aws("servicediscovery", "list-namespaces", "--filters",
                             "Name=TYPE,Values=HTTP,Condition=EQ")
    check_output(MODEL, "ListNamespaces", listed)
    assert [n["Id"] for n in listed["Namespaces"]] == [ns_id]
    _, listed, _ = cloud.aws("servicediscovery", "list-namespaces", "--filters",
                             "Name=NAME,Values=ap,Condition=BEGINS_WITH")
    assert [n["Name"] for n in listed["Namespaces"]] == ["apps"]
    _, svc, _ = cloud.aws("servicediscovery", "create-service", "--name", "worker",
                          "--namespace-id", ns_id)
    check_output(MODEL, "CreateService", svc)
    assert svc["Service"]["Type"] == "HTTP"
    srv = svc["Service"]["Id"]
    _, reg, _ = cloud.aws("servicediscovery", "register-instance", "--service-id", srv,
                          "--instance-id", "w1", "--attributes", "AWS_INSTANCE_IPV4=10.0.0.5,color=red")
    check_output(MODEL, "RegisterInstance", reg)
    _, found, _ = cloud.aws("servicediscovery", "discover-instances", "--namespace-name", "apps",
                            "--service-name", "worker")
    check_output(MODEL, "DiscoverInstances", found)
    assert found["Instances"][0]["Attributes"] == {"AWS_INSTANCE_IPV4": "10.0.0.5", "color": "red"}
    assert found["Instances"][0]["HealthStatus"] == "UNKNOWN"
    _, listed, _ = cloud.aws("servicediscovery", "list-services", "--filters",
                             f"Name=NAMESPACE_ID,Values={ns_id},Condition=EQ")
    check_output(MODEL, "ListServices", listed)
    assert [s["Id"] for s in listed["Services"]] == [srv]
    cloud.aws("servicediscovery", "update-http-namespace", "--id", ns_id,
              "--namespace", "Description=workers")
    cloud.aws("servicediscovery", "update-service-attributes", "--service-id", srv,
              "--attributes", "tier=backend")
    _, attrs, _ = cloud.aws("servicediscovery", "get-service-attributes", "--service-id", srv)
    check_output(MODEL, "GetServiceAttributes", attrs)
    assert attrs["ServiceAttributes"]["Attributes"] == {"tier": "backend"}
    arn = f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}:namespace/{ns_id}"
    cloud.aws("servicediscovery", "tag-resource", "--resource-arn", arn, "--tags", "Key=a,Value=b")
    cloud.aws("servicediscovery", "untag-resource", "--resource-arn", arn, "--tag-keys", "env")
    _, tags, _ = cloud.aws("servicediscovery", "list-tags-for-resource", "--resource-arn", arn)
    check_output(MODEL, "ListTagsForResource", tags)
    assert tags["Tags"] == [{"Key": "a", "Value": "b"}]
    code, _, err = cloud.aws("servicediscovery", "delete-namespace", "--id", ns_id, check=False)
    assert code != 0 and "ResourceInUse" in err
    cloud.aws("servicediscovery", "deregister-instance", "--service-id", srv, "--instance-id", "w1")
    cloud.aws("servicediscovery", "delete-service", "--id", srv)
    cloud.aws("servicediscovery", "delete-namespace", "--id", ns_id)


def test_bad_input_gets_aws_errors_and_changes_nothing(cloud):
    sd = client(cloud)
    vpc = default_vpc(cloud)
    ns_id = operation_target(cloud, sd.create_private_dns_namespace(
        Name="bad.local", Vpc=vpc, CreatorRequestId="bad-ns")["OperationId"])
    srv = sd.create_service(Name="db", NamespaceId=ns_id, DnsConfig={
        "DnsRecords": [{"Type": "SRV", "TTL": 10}]})["Service"]["Id"]
    sd.register_instance(ServiceId=srv, InstanceId="db-1", Attributes={
        "AWS_INSTANCE_IPV4": "172.31.0.50", "AWS_INSTANCE_PORT": "5432"})
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    cases = [
        # (operation, payload, error code)
        ("CreatePrivateDnsNamespace", {"Name": "bad.local", "Vpc": vpc}, "NamespaceAlreadyExists"),
        ("CreatePrivateDnsNamespace", {"Name": "x.local", "Vpc": "vpc-0000000000000000f"},
         "InvalidInput"),
        ("CreatePrivateDnsNamespace", {"Name": "bad name.local", "Vpc": vpc}, "InvalidInput"),
        ("CreatePrivateDnsNamespace", {"Name": "y.local", "Vpc": vpc, "CreatorRequestId": "bad-ns"},
         "DuplicateRequest"),
        ("CreatePrivateDnsNamespace", {"Name": "z.local", "Vpc": vpc, "Properties": {
            "DnsProperties": {"SOA": {"TTL": -1}}}}, "InvalidInput"),
        ("CreatePublicDnsNamespace", {"Name": "example.com"}, "InvalidInput"),
        ("CreateHttpNamespace", {"Name": "t", "Tags": too_many}, "TooManyTagsException"),
        ("DeleteNamespace", {"Id": ns_id}, "ResourceInUse"),
        ("GetNamespace", {"Id": "ns-aaaaaaaaaaaaaaaa"}, "NamespaceNotFound"),
        ("CreateService", {"Name": "db", "NamespaceId": ns_id}, "ServiceAlreadyExists"),
        ("CreateService", {"Name": "web", "NamespaceId": ns_id, "DnsConfig": {
            "DnsRecords": [{"Type": "A", "TTL": -5}]}}, "InvalidInput"),
        ("CreateService", {"Name": "web", "NamespaceId": ns_id, "DnsConfig": {
            "DnsRecords": [{"Type": "A", "TTL": 2147483648}]}}, "InvalidInput"),
        ("CreateService", {"Name": "web", "NamespaceId": ns_id, "DnsConfig": {
            "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "CNAME", "TTL": 5}]}},
         "InvalidInput"),
        ("CreateService", {"Name": "-web", "NamespaceId": ns_id}, "InvalidInput"),
        ("CreateService", {"Name": "web", "NamespaceId": "ns-aaaaaaaaaaaaaaaa"}, "NamespaceNotFound"),
        ("DeleteService", {"Id": srv}, "ResourceInUse"),
        ("GetService", {"Id": "srv-aaaaaaaaaaaaaaaa"}, "ServiceNotFound"),
        ("RegisterInstance", {"ServiceId": srv, "InstanceId": "db-2",
                              "Attributes": {"AWS_INSTANCE_IPV4": "172.31.0.51"}}, "InvalidInput"),
        ("RegisterInstance", {"ServiceId": srv, "InstanceId": "db-2",
                              "Attributes": {"AWS_INSTANCE_PORT": "5432"}}, "InvalidInput"),
        ("RegisterInstance", {"ServiceId": srv, "InstanceId": "db 2",
                              "Attributes": {"AWS_INSTANCE_IPV4": "172.31.0.51",
                                             "AWS_INSTANCE_PORT": "5432"}}, "InvalidInput"),
        ("RegisterInstance", {"ServiceId": "srv-aaaaaaaaaaaaaaaa", "InstanceId": "x",
                              "Attributes": {"a": "b"}}, "ServiceNotFound"),
        ("GetInstance", {"ServiceId": srv, "InstanceId": "nope"}, "InstanceNotFound"),
        ("DeregisterInstance", {"ServiceId": srv, "InstanceId": "nope"}, "InstanceNotFound"),
        ("UpdateInstanceCustomHealthStatus", {"ServiceId": srv, "InstanceId": "db-1",
                                              "Status": "UNHEALTHY"}, "CustomHealthNotFound"),
        ("UpdateService", {"Id": srv, "Service": {"DnsConfig": {
            "DnsRecords": [{"Type": "A", "TTL": 10}]}}}, "InvalidInput"),
        ("GetOperation", {"OperationId": "nope"}, "OperationNotFound"),
        ("DiscoverInstances", {"NamespaceName": "nope.local", "ServiceName": "db"},
         "NamespaceNotFound"),
        ("DiscoverInstances", {"NamespaceName": "bad.local", "ServiceName": "nope"},
         "ServiceNotFound"),
        ("ListNamespaces", {"Filters": [{"Name": "TYPE", "Values": ["HTTP", "DNS_PRIVATE"],
                                         "Condition": "EQ"}]}, "InvalidInput"),
        ("ListTagsForResource", {"ResourceARN": f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}"
                                 ":namespace/ns-aaaaaaaaaaaaaaaa"}, "ResourceNotFoundException"),
        ("TagResource", {"ResourceARN": f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}"
                         f":namespace/{ns_id}", "Tags": too_many}, "TooManyTagsException"),
    ]
    before = state(cloud)
    failures = []
    for operation, payload, code in cases:
        status, body = raw(cloud, operation, payload)
        if status != 400 or body.get("__type", "").split("#")[-1] != code:
            failures.append(f"{operation} {json.dumps(payload)[:120]}: {status} {body}")
    assert not failures, "\n".join(failures)
    assert state(cloud) == before

    # The same through boto3 (parameter validation off, so Berth judges).
    loose = client(cloud, validate=False)
    with pytest.raises(ClientError) as e:
        loose.create_service(Name="web", NamespaceId=ns_id,
                             DnsConfig={"DnsRecords": [{"Type": "A", "TTL": -1}]})
    assert e.value.response["Error"]["Code"] == "InvalidInput"
    with pytest.raises(ClientError) as e:
        sd.delete_namespace(Id=ns_id)
    assert e.value.response["Error"]["Code"] == "ResourceInUse"
    assert state(cloud) == before


def test_state_survives_a_restart(berth):
    sd = client(berth)
    ns_id = operation_target(berth, sd.create_private_dns_namespace(
        Name="keep.local", Vpc=default_vpc(berth))["OperationId"])
    srv = sd.create_service(Name="api", NamespaceId=ns_id, DnsConfig={
        "DnsRecords": [{"Type": "A", "TTL": 5}]},
        HealthCheckCustomConfig={"FailureThreshold": 1})["Service"]["Id"]
    op = sd.register_instance(ServiceId=srv, InstanceId="t1",
                              Attributes={"AWS_INSTANCE_IPV4": "172.31.0.7"})["OperationId"]
    sd.update_instance_custom_health_status(ServiceId=srv, InstanceId="t1", Status="UNHEALTHY")
    before = state(berth)
    berth.stop()
    berth.start()
    sd = client(berth)
    assert state(berth) == before
    assert sd.get_operation(OperationId=op)["Operation"]["Status"] == "SUCCESS"
    found = sd.discover_instances(NamespaceName="keep.local", ServiceName="api",
                                  HealthStatus="UNHEALTHY")["Instances"]
    assert [i["InstanceId"] for i in found] == ["t1"]


def test_iam_refuses_a_user_without_policies(cloud):
    iam = cloud.client("iam")
    iam.create_user(UserName="sd-nobody")
    key = iam.create_access_key(UserName="sd-nobody")["AccessKey"]
    nobody = boto3.client(
        "servicediscovery", endpoint_url=cloud.endpoint, region_name=REGION,
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
        config=botocore.config.Config(retries={"max_attempts": 1}, inject_host_prefix=False))
    for call in (lambda: nobody.list_namespaces(),
                 lambda: nobody.create_http_namespace(Name="no"),
                 lambda: nobody.discover_instances(NamespaceName="apps", ServiceName="w")):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "is not authorized to perform: servicediscovery:" in \
            e.value.response["Error"]["Message"]
