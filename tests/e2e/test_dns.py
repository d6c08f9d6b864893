"""Berth's DNS server, queried with dig: Cloud Map names appear within a
second of the API call, unknown names under a Berth zone are NXDOMAIN,
interface names (ip-…ec2.internal) answer an awsvpc task's address, and
other names are forwarded to an upstream (a dnsmasq the test starts) or
refused at once when there is none."""
import shutil
import subprocess
import time

import pytest

from berth_harness import Berth, free_dns_port, wait_for

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) missing")


def dig(port, name, qtype="A", *options):
    """(status, answer records, authority records, additional records), each
    record as (name, ttl, type, value)."""
    proc = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=3", "+tries=1", "+noall", "+comments",
         "+answer", "+authority", "+additional", *options, name, qtype],
        capture_output=True, text=True, timeout=20)
    status = None
    sections = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    current = None
    for line in proc.stdout.splitlines():
        if "status:" in line:
            status = line.split("status:")[1].split(",")[0].strip()
        elif line.startswith(";; ") and " SECTION:" in line:
            current = line[3:].split(" SECTION:")[0]
        elif line and not line.startswith(";") and current in sections:
            parts = line.split(None, 4)
            if len(parts) == 5:
                sections[current].append((parts[0], int(parts[1]), parts[3], parts[4]))
    assert status is not None, f"dig got no answer: {proc.stdout} {proc.stderr}"
    return status, sections["ANSWER"], sections["AUTHORITY"], sections["ADDITIONAL"]


def values(records, qtype="A"):
    return sorted(r[3] for r in records if r[2] == qtype)


def wait_operation(sd, operation_id, timeout=30.0):
    def done():
        op = sd.get_operation(OperationId=operation_id)["Operation"]
        assert op["Status"] != "FAIL", op
        return op if op["Status"] == "SUCCESS" else None
    return wait_for(done, timeout, interval=0.05, what=f"operation {operation_id}")


def default_vpc(berth):
    ec2 = berth.client("ec2")
    return next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault"))


def corp_namespace(berth, name="corp.local"):
    sd = berth.client("servicediscovery")
    op = sd.create_private_dns_namespace(Name=name, Vpc=default_vpc(berth))["OperationId"]
    namespace_id = wait_operation(sd, op)["Targets"]["NAMESPACE"]
    return sd, namespace_id


def until_answered(port, name, qtype, predicate, timeout):
    """Polls dig until predicate(result) holds; returns the seconds it took."""
    started = time.monotonic()
    while True:
        result = dig(port, name, qtype)
        if predicate(result):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{name} {qtype}: still {result}"
        time.sleep(0.02)


def test_cloud_map_names_follow_the_api_within_a_second(berth):
    sd, namespace_id = corp_namespace(berth)
    port = berth.dns_port

    # The zone exists at once: SOA at the apex, NXDOMAIN under it with the SOA.
    status, answer, _, _ = dig(port, "corp.local", "SOA")
    assert status == "NOERROR" and answer[0][2] == "SOA"
    status, answer, authority, _ = dig(port, "nope.corp.local", "A")
    assert status == "NXDOMAIN" and answer == []
    assert authority and authority[0][2] == "SOA"

    service = sd.create_service(
        Name="api", NamespaceId=namespace_id,
        DnsConfig={"RoutingPolicy": "MULTIVALUE",
                   "DnsRecords": [{"Type": "A", "TTL": 5}, {"Type": "SRV", "TTL": 5}]},
    )["Service"]
    for i in (1, 2):
        sd.register_instance(ServiceId=service["Id"], InstanceId=f"task-{i}", Attributes={
            "AWS_INSTANCE_IPV4": f"10.9.0.{i}", "AWS_INSTANCE_PORT": "8080"})
    took = until_answered(port, "api.corp.local", "A",
                          lambda r: values(r[1]) == ["10.9.0.1", "10.9.0.2"], timeout=1.0)
    assert took < 1.0
    status, answer, _, _ = dig(port, "api.corp.local", "A")
    assert status == "NOERROR" and all(r[1] == 5 for r in answer)

    # SRV: port 8080 on each instance's name, whose address is in the
    # additional section.
    status, answer, _, additional = dig(port, "api.corp.local", "SRV")
    assert status == "NOERROR" and len(answer) == 2
    assert all(r[3].split()[2] == "8080" for r in answer)
    assert values(additional) == ["10.9.0.1", "10.9.0.2"]

    # A known name without the asked type: NODATA (NOERROR, SOA, no answer).
    status, answer, authority, _ = dig(port, "api.corp.local", "AAAA")
    assert status == "NOERROR" and answer == [] and authority[0][2] == "SOA"

    # Over TCP too.
    status, answer, _, _ = dig(port, "api.corp.local", "A", "+tcp")
    assert status == "NOERROR" and values(answer) == ["10.9.0.1", "10.9.0.2"]

    # Deregistering takes the address out within a second.
    sd.deregister_instance(ServiceId=service["Id"], InstanceId="task-1")
    took = until_answered(port, "api.corp.local", "A",
                          lambda r: values(r[1]) == ["10.9.0.2"], timeout=1.0)
    assert took < 1.0


def test_names_outside_berth_without_an_upstream_are_refused_at_once(tmp_path):
    server = Berth(tmp_path / "data", extra_args=["--dns-upstream", "none"]).start()
    try:
        started = time.monotonic()
        status, answer, _, _ = dig(server.dns_port, "example.com", "A")
        assert status == "REFUSED" and answer == []
        assert time.monotonic() - started < 2.0
        # Berth's own zones still answer.
        status, _, _, _ = dig(server.dns_port, "nothing.ec2.internal", "A")
        assert status in ("NXDOMAIN", "REFUSED")
    finally:
        server.stop()


@pytest.fixture
def upstream_dnsmasq(tmp_path):
    """A dnsmasq on a free loopback port that knows one name."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq missing")
    port = free_dns_port()
    proc = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-daemon",
         "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={port}",
         "--user=root", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
         "--address=/upstream.test/192.0.2.55"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def answering():
        try:
            return dig(port, "www.upstream.test")[1] or None
        except AssertionError:
            return None
    wait_for(answering, 10, what="dnsmasq answering")
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_names_outside_berth_are_forwarded_to_the_upstream(tmp_path, upstream_dnsmasq):
    server = Berth(tmp_path / "data",
                   extra_args=["--dns-upstream", f"127.0.0.1:{upstream_dnsmasq}"]).start()
    try:
        status, answer, _, _ = dig(server.dns_port, "www.upstream.test", "A")
        assert status == "NOERROR" and values(answer) == ["192.0.2.55"]
        status, answer, _, _ = dig(server.dns_port, "www.upstream.test", "A", "+tcp")
        assert status == "NOERROR" and values(answer) == ["192.0.2.55"]
    finally:
        server.stop()

    # An upstream that does not answer: SERVFAIL within a bounded time.
    dead = free_dns_port()
    server = Berth(tmp_path / "data2", extra_args=["--dns-upstream", f"127.0.0.1:{dead}"]).start()
    try:
        started = time.monotonic()
        status, _, _, _ = dig(server.dns_port, "www.upstream.test", "A")
        assert status == "SERVFAIL"
        assert time.monotonic() - started < 3.0
    finally:
        server.stop()


def test_dns_listen_off_starts_no_dns_server(tmp_path):
    port = free_dns_port()
    server = Berth(tmp_path / "data", extra_args=["--dns-listen", "off"]).start()
    try:
        proc = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=1", "+tries=1",
                               "example.com"], capture_output=True, text=True, timeout=10)
        assert "status:" not in proc.stdout
    finally:
        server.stop()


@pytest.mark.xdist_group("awsvpc")
def test_interface_names_answer_the_task_address(berth_agent):
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone",
                                            "Values": ["us-east-1a"]}])["Subnets"][0]
    ecs.register_task_definition(
        family="dns-eni", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512",
        containerDefinitions=[{"name": "app", "image": "berth-test/busybox:latest",
                               "essential": True, "stopTimeout": 1,
                               "command": ["sleep", "300"]}])
    [task] = ecs.run_task(
        launchType="FARGATE", taskDefinition="dns-eni",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet["SubnetId"]]}},
    )["tasks"]

    def eni():
        [t] = ecs.describe_tasks(tasks=[task["taskArn"]])["tasks"]
        assert t["lastStatus"] != "STOPPED", t.get("stoppedReason")
        for a in t.get("attachments", []):
            details = {d["name"]: d["value"] for d in a.get("details", [])}
            if a["type"] == "ElasticNetworkInterface" and "privateIPv4Address" in details:
                return details
        return None
    details = wait_for(eni, 90, what="the task's interface")
    ip = details["privateIPv4Address"]
    [described] = ec2.describe_network_interfaces(
        NetworkInterfaceIds=[details["networkInterfaceId"]])["NetworkInterfaces"]
    name = described["PrivateDnsName"]
    assert name == "ip-" + ip.replace(".", "-") + ".ec2.internal"

    status, answer, _, _ = dig(berth_agent.dns_port, name, "A")
    assert status == "NOERROR" and values(answer) == [ip]
    # Another address of the zone is NXDOMAIN.
    status, _, authority, _ = dig(berth_agent.dns_port, "ip-172-31-255-254.ec2.internal", "A")
    assert status == "NXDOMAIN" and authority[0][2] == "SOA"

    ecs.stop_task(task=task["taskArn"])
    until_answered(berth_agent.dns_port, name, "A", lambda r: r[0] == "NXDOMAIN", timeout=60)
