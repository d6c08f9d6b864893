"""Every task uses Berth's DNS server: bridge-mode containers through the
host's DNS relay (169.254.170.2:53), awsvpc tasks through their VPC's
resolver address (VPC block base + 2, as AmazonProvidedDNS), which their
VPC's router sends to the same relay. The relay sends each query to the
DNS server of the agent that runs the asking task. Driven with boto3,
docker and busybox's nslookup inside the tasks, against the real binary."""
import os
import shutil
import subprocess
import time

import pytest

from berth_harness import AgentProcess, Berth, free_dns_port, remove_task_containers, wait_for

IMAGE = "berth-test/busybox:latest"


def wait_running(ecs, arn, timeout=90.0):
    def done():
        [task] = ecs.describe_tasks(tasks=[arn])["tasks"]
        assert task["lastStatus"] != "STOPPED", task.get("stoppedReason")
        return task if task["lastStatus"] == "RUNNING" else None
    return wait_for(done, timeout, what="the task RUNNING")


def in_task(task, *command):
    """Runs `command` inside the task's (first) container."""
    container = task["containers"][0]["runtimeId"]
    return subprocess.run(["docker", "exec", container, *command],
                          capture_output=True, text=True, timeout=30)


def resolve(task, name, timeout=30.0):
    """The addresses busybox's nslookup finds for `name` inside the task
    (retried: the task's first queries may race its registration)."""
    def attempt():
        out = in_task(task, "nslookup", name).stdout
        answers = out.split("Name:", 1)[1] if "Name:" in out else ""
        found = sorted(line.split()[-1] for line in answers.splitlines()
                       if line.strip().startswith("Address"))
        return found or None
    return wait_for(attempt, timeout, interval=0.5, what=f"{name} to resolve in the task")


def eni_address(task):
    [attachment] = [a for a in task["attachments"] if a["type"] == "ElasticNetworkInterface"]
    return {d["name"]: d["value"] for d in attachment["details"]}["privateIPv4Address"]


def resolv_conf(task):
    return in_task(task, "cat", "/etc/resolv.conf").stdout


@pytest.mark.xdist_group("awsvpc")
def test_awsvpc_and_bridge_tasks_resolve_through_berths_dns(berth_agent):
    """An awsvpc task asks its VPC's resolver (172.31.0.2) and finds its
    own interface's name; a bridge task asks the host's relay and finds the
    same name; an unknown name of Berth's zone is NXDOMAIN."""
    ecs = berth_agent.client("ecs")
    ec2 = berth_agent.client("ec2")
    ecs.register_task_definition(
        family="dns-vpc", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[{
            "name": "app", "image": IMAGE, "stopTimeout": 1, "command": ["sleep", "600"]}])
    ecs.register_task_definition(
        family="dns-bridge", containerDefinitions=[{
            "name": "app", "image": IMAGE, "memory": 64, "stopTimeout": 1,
            "command": ["sleep", "600"]}])
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1a"]}])
    out = ecs.run_task(taskDefinition="dns-vpc", launchType="FARGATE", networkConfiguration={
        "awsvpcConfiguration": {"subnets": [subnet["Subnets"][0]["SubnetId"]]}})
    assert out["failures"] == [], out["failures"]
    vpc_task = wait_running(ecs, out["tasks"][0]["taskArn"])
    out = ecs.run_task(taskDefinition="dns-bridge")
    assert out["failures"] == [], out["failures"]
    bridge_task = wait_running(ecs, out["tasks"][0]["taskArn"])

    # Fargate's resolv.conf: the VPC's resolver only, the region's domain.
    conf = resolv_conf(vpc_task)
    nameservers = [line.split()[1] for line in conf.splitlines() if line.startswith("nameserver")]
    assert nameservers == ["172.31.0.2"], conf
    assert "search ec2.internal" in conf, conf
    # Bridge: the host's relay.
    conf = resolv_conf(bridge_task)
    assert [line.split()[1] for line in conf.splitlines()
            if line.startswith("nameserver")] == ["169.254.170.2"], conf

    ip = eni_address(vpc_task)
    name = "ip-" + ip.replace(".", "-") + ".ec2.internal"
    assert resolve(vpc_task, name) == [ip]
    # The search domain completes the short name, as on EC2.
    assert resolve(vpc_task, "ip-" + ip.replace(".", "-")) == [ip]
    assert resolve(bridge_task, name) == [ip]
    # A name of Berth's zone that nothing publishes.
    # Asked again while no answer comes at all: the host's relay moves
    # between agents when another test's agent (holding it) ends.
    def nxdomain():
        result = in_task(vpc_task, "nslookup", "ip-10-254-254-254.ec2.internal")
        text = result.stdout + result.stderr
        return text if "NXDOMAIN" in text or "Address" in text.split("Name:", 1)[-1] else None
    text = wait_for(nxdomain, 30, interval=0.5, what="an answer for an unpublished name")
    assert "NXDOMAIN" in text, text
    for task in (vpc_task, bridge_task):
        ecs.stop_task(task=task["taskArn"])


@pytest.fixture
def dnsmasq(tmp_path):
    """A dnsmasq on a loopback port answering probe.berth.test, standing in
    for a DNS server the operator names with `berth agent --dns-endpoint`."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(binary):
        pytest.skip("dnsmasq (Debian dnsmasq-base) is not installed")
    port = free_dns_port()
    proc = subprocess.Popen([
        binary, "--keep-in-foreground", "--no-daemon", "--no-resolv", "--no-hosts",
        "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={port}",
        "--address=/probe.berth.test/10.9.8.7", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
        "--user=root", "--log-facility=-"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "dnsmasq.log", "wb"))
    time.sleep(0.3)
    assert proc.poll() is None, (tmp_path / "dnsmasq.log").read_text()
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_an_agent_sends_its_bridge_tasks_dns_where_the_operator_says(tmp_path, test_image, dnsmasq):
    """`berth agent --dns-endpoint` overrides the server's DNS server: the
    agent's bridge task asks the host's relay, which relays to dnsmasq."""
    server = Berth(tmp_path / "data").start()
    agent = AgentProcess(server, "dns-host", "default", tmp_path / "agent",
                         args=["--dns-endpoint", dnsmasq])
    ids = []
    try:
        ecs = server.client("ecs")
        ecs.create_cluster(clusterName="default")
        agent.start()
        wait_for(lambda: ecs.list_container_instances(cluster="default")["containerInstanceArns"],
                 30, what=f"the agent to register: {agent.logs()}")
        ids = [a.rsplit("/", 1)[1] for a in
               ecs.list_container_instances(cluster="default")["containerInstanceArns"]]
        ecs.register_task_definition(
            family="dns-probe", containerDefinitions=[{
                "name": "app", "image": IMAGE, "memory": 64, "stopTimeout": 1,
                "command": ["sleep", "600"]}])
        ecs.register_task_definition(
            family="dns-own", containerDefinitions=[{
                "name": "app", "image": IMAGE, "memory": 64, "stopTimeout": 1,
                "dnsServers": ["10.0.0.53"], "dnsSearchDomains": ["corp.local"],
                "command": ["sleep", "600"]}])
        task = wait_running(ecs, ecs.run_task(taskDefinition="dns-probe")["tasks"][0]["taskArn"])
        assert "nameserver 169.254.170.2" in resolv_conf(task)
        assert resolve(task, "probe.berth.test") == ["10.9.8.7"]
        # A definition's own dnsServers (and search domains) are kept.
        own = wait_running(ecs, ecs.run_task(taskDefinition="dns-own")["tasks"][0]["taskArn"])
        conf = resolv_conf(own)
        assert [line.split()[1] for line in conf.splitlines()
                if line.startswith("nameserver")] == ["10.0.0.53"], conf
        assert "search corp.local" in conf, conf
        for t in (task, own):
            ecs.stop_task(task=t["taskArn"])
    finally:
        agent.stop()
        server.stop()
        remove_task_containers(ids)
