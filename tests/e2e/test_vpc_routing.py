"""VPC routing on one host: the subnets of a VPC route to each other (the
VPC's local route) subject to security groups, and VPCs stay apart, even
one created with the same CIDR block as the default VPC. Driven with boto3
and the aws CLI against the real binary and Docker."""
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from berth_harness import wait_for

# awsvpc tasks of every test server share the default VPC's host route:
# these tests run one at a time, on one xdist worker.
pytestmark = pytest.mark.xdist_group("awsvpc")

IMAGE = "berth-test/busybox:latest"


def describe(ecs, arns):
    return ecs.describe_tasks(tasks=arns)["tasks"]


def wait_running(ecs, arns, timeout=90.0):
    def done():
        tasks = describe(ecs, arns)
        stopped = [t for t in tasks if t["lastStatus"] == "STOPPED"]
        assert not stopped, f"task stopped: {stopped[0].get('stoppedReason')}"
        return tasks if all(t["lastStatus"] == "RUNNING" for t in tasks) else None
    return wait_for(done, timeout, what="tasks RUNNING")


def address(task):
    [attachment] = [a for a in task["attachments"] if a["type"] == "ElasticNetworkInterface"]
    return {d["name"]: d["value"] for d in attachment["details"]}["privateIPv4Address"]


def fetch(ip, timeout=3.0):
    """The page at ip:80 from the host, or None when it cannot be had."""
    try:
        with urllib.request.urlopen(f"http://{ip}:80/", timeout=timeout) as r:
            return r.read().decode().strip()
    except (socket.timeout, TimeoutError, ConnectionError, OSError, urllib.error.URLError):
        return None


def run(ecs, subnet, group, command):
    """One awsvpc task of `net` in `subnet` with `group`, running `command`."""
    out = ecs.run_task(taskDefinition="net", networkConfiguration={"awsvpcConfiguration": {
        "subnets": [subnet], "securityGroups": [group]}}, overrides={"containerOverrides": [
            {"name": "app", "command": ["sh", "-c", command]}]})
    assert out["failures"] == [], out["failures"]
    return out["tasks"][0]["taskArn"]


def serve(page):
    return f"mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p 80 -h /www"


# Static busybox's wget crashes resolving the default port (no NSS) and
# with -T: URLs name port 80, `timeout` bounds each attempt.
def probe(targets):
    lines = [f'out=$(timeout 5 wget -q -O - http://{ip}:80/ 2>/dev/null) || out=FAILED; '
             f'echo "@@{name}=$out"' for name, ip in targets]
    return "; ".join(lines) + "; echo @@END; sleep 600"


def probe_results(task, timeout=60):
    container = task["containers"][0]["runtimeId"]
    out = ""
    deadline = time.time() + timeout
    while "@@END" not in out and time.time() < deadline:
        out = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
        time.sleep(0.3)
    assert "@@END" in out, out
    return dict(line[2:].split("=", 1) for line in out.splitlines() if line.startswith("@@") and "=" in line)


def group(ec2, vpc, name, port_cidr=None):
    gid = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
    if port_cidr:
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": port_cidr}]}])
    return gid


def test_subnets_of_a_vpc_reach_each_other_and_other_vpcs_stay_apart(berth_agent):
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    ecs.register_task_definition(
        family="net", networkMode="awsvpc", requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "app", "image": IMAGE, "memory": 16, "stopTimeout": 2,
                               "command": ["sh", "-c", "sleep 600"]}])
    subnets = {s["AvailabilityZone"]: s for s in ec2.describe_subnets()["Subnets"]}
    default_vpc = subnets["us-east-1a"]["VpcId"]
    sub_a, sub_b = subnets["us-east-1a"]["SubnetId"], subnets["us-east-1b"]["SubnetId"]
    assert subnets["us-east-1a"]["CidrBlock"] == "172.31.0.0/20"
    assert subnets["us-east-1b"]["CidrBlock"] == "172.31.16.0/20"

    # A second VPC with the default VPC's block, created with the aws CLI.
    _, out, _ = berth_agent.aws("ec2", "create-vpc", "--cidr-block", "172.31.0.0/16")
    other_vpc = out["Vpc"]["VpcId"]
    _, out, _ = berth_agent.aws("ec2", "create-subnet", "--vpc-id", other_vpc, "--cidr-block",
                                "172.31.0.0/20", "--availability-zone", "us-east-1a")
    other_same = out["Subnet"]["SubnetId"]
    _, out, _ = berth_agent.aws("ec2", "create-subnet", "--vpc-id", other_vpc, "--cidr-block",
                                "172.31.240.0/20", "--availability-zone", "us-east-1a")
    other_far = out["Subnet"]["SubnetId"]
    _, out, _ = berth_agent.aws("ec2", "create-security-group", "--group-name", "web2",
                                "--description", "web", "--vpc-id", other_vpc)
    web2 = out["GroupId"]
    berth_agent.aws("ec2", "authorize-security-group-ingress", "--group-id", web2,
                    "--protocol", "tcp", "--port", "80", "--cidr", "0.0.0.0/0")

    # Port 80 open to all; port 80 open to subnet a only; nothing open.
    web = group(ec2, default_vpc, "web", "0.0.0.0/0")
    near = group(ec2, default_vpc, "near", "172.31.0.0/20")
    closed = group(ec2, default_vpc, "closed")

    # The first task of subnet a takes its first address, 172.31.0.4.
    first = run(ecs, sub_a, web, serve("vpc1-open"))
    wait_running(ecs, [first])
    servers = {
        "open": first,
        "near": run(ecs, sub_a, near, serve("vpc1-near")),
        "closed": run(ecs, sub_a, closed, serve("vpc1-closed")),
    }
    others = {
        "same": run(ecs, other_same, web2, serve("vpc2-same")),
        "far": run(ecs, other_far, web2, serve("vpc2-far")),
    }
    tasks = wait_running(ecs, list(servers.values()) + list(others.values()))
    ips = {name: address(t) for name, t in zip(list(servers) + list(others), tasks)}
    # Both VPCs hand out the same first address of 172.31.0.0/20.
    assert ips["open"] == ips["same"] == "172.31.0.4", ips

    # From subnet b of the default VPC.
    client = run(ecs, sub_b, closed, probe([
        ("open", ips["open"]), ("near", ips["near"]), ("closed", ips["closed"]),
        ("far", ips["far"])]))
    # From the other VPC's far subnet: its own subnet 172.31.0.0/20.
    client2 = run(ecs, other_far, web2, probe([("same", ips["same"])]))
    [client, client2] = wait_running(ecs, [client, client2])
    results = probe_results(client)
    # Another subnet of the VPC, allowed by its group.
    assert results["open"] == "vpc1-open", results
    # Another subnet of the VPC, its group admits only subnet a: refused.
    assert results["near"] == "FAILED", results
    assert results["closed"] == "FAILED", results
    # A task of another VPC (with an address the default VPC does not use)
    # is out of reach, though its group admits everyone.
    assert results["far"] == "FAILED", results
    # The other VPC routes between its own subnets, to its own task at
    # 172.31.0.4, not the default VPC's.
    assert probe_results(client2) == {"same": "vpc2-same"}

    # The host reaches the default VPC's 172.31.0.4 (the first VPC routed
    # there) and the other VPC's subnet that overlaps nothing on the host.
    assert wait_for(lambda: fetch(ips["open"]), 20, what="the host reaching 172.31.0.4") == "vpc1-open"
    assert wait_for(lambda: fetch(ips["far"]), 20, what="the host reaching the other VPC") == "vpc2-far"
    assert fetch(ips["closed"], timeout=2) is None

    all_tasks = list(servers.values()) + list(others.values()) + [client["taskArn"], client2["taskArn"]]
    for arn in all_tasks:
        ecs.stop_task(task=arn)
    wait_for(lambda: all(t["lastStatus"] == "STOPPED" for t in describe(ecs, all_tasks)), 90,
             what="tasks STOPPED")
    # Their routers and host routes go with them.
    def routers():
        return subprocess.run(["docker", "ps", "-a", "--filter", "label=berth.vpc-router",
                               "--format", "{{.Label \"berth.vpc-router\"}}"],
                              capture_output=True, text=True).stdout.split()
    wait_for(lambda: default_vpc not in routers() and other_vpc not in routers(), 30,
             what="the VPC routers removed")
    routes = subprocess.run(["ip", "route", "show", "proto", "190"], capture_output=True,
                            text=True).stdout
    assert "172.31.240.0/20" not in routes, routes


def test_an_awsvpc_task_gets_its_role_through_its_vpc_router(berth_agent):
    """The task endpoint is on the host: an awsvpc task reaches it through
    its VPC's router with its own address, and gets its own role."""
    import json

    from berth_harness import create_task_role
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    role = create_task_role(berth_agent, "vpc-role", ["sts:GetCallerIdentity"])
    fetch_creds = ("wget -qO- http://169.254.170.2:80$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; echo; "
                   "echo @@META@@; wget -qO- ${ECS_CONTAINER_METADATA_URI_V4/170.2/170.2:80}/task; "
                   "echo; echo @@END@@; sleep 600")
    ecs.register_task_definition(
        family="vpc-role", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", taskRoleArn=role, containerDefinitions=[{
            "name": "app", "image": IMAGE, "stopTimeout": 2, "command": ["sh", "-c", fetch_creds]}])
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1b"]}])
    out = ecs.run_task(taskDefinition="vpc-role", launchType="FARGATE", networkConfiguration={
        "awsvpcConfiguration": {"subnets": [subnet["Subnets"][0]["SubnetId"]]}})
    [task] = wait_running(ecs, [out["tasks"][0]["taskArn"]])
    container = task["containers"][0]["runtimeId"]
    logs = wait_for(lambda: (lambda o: o if "@@END@@" in o else None)(subprocess.run(
        ["docker", "logs", container], capture_output=True, text=True).stdout), 30,
        what="the task's answers")
    creds_line, rest = logs.split("@@META@@", 1)
    creds = json.loads(creds_line.strip())
    assert creds["RoleArn"] == role and creds["AccessKeyId"].startswith("ASIA")
    metadata = json.loads(rest.split("@@END@@", 1)[0].strip())
    assert metadata["TaskARN"] == task["taskArn"]
    network = metadata["Containers"][0]["Networks"][0]
    assert network["NetworkMode"] == "awsvpc"
    assert network["IPv4Addresses"] == [address(task)]
    ecs.stop_task(task=task["taskArn"])
