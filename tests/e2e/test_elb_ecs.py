"""Application load balancers in front of ECS services, end to end: the
load balancer's DNS name resolves through Berth's DNS to its addresses, its
listener spreads requests over real busybox httpd tasks, rules route by
path, host and weight, health checks take a sick target out (and ECS
replaces its task), and a rolling deployment drops no request."""
import http.client
import subprocess
import threading
import time
from collections import Counter

import pytest

from berth_harness import wait_for
from conftest import vpc_block

IMAGE = "berth-test/busybox:latest"

# An httpd on 8080 answering its own container's hostname (so each task
# answers differently) on /, /api/, /static/ and /split/, a health page that fails once /www/sick exists,
# and /cgi-bin/sick to create it.
HTTPD = (
    "mkdir -p /www/cgi-bin && echo {body} > /www/index.html && "
    "for d in api static split; do mkdir -p /www/$d && echo {body} > /www/$d/index.html; done && "
    "printf '#!/bin/sh\\nif [ -e /www/sick ]; then echo Status: 500 Sick; echo; echo sick; "
    "else echo Content-Type: text/plain; echo; echo ok; fi\\n' > /www/cgi-bin/health && "
    "printf '#!/bin/sh\\ntouch /www/sick\\necho Content-Type: text/plain\\necho\\necho now sick\\n' "
    "> /www/cgi-bin/sick && chmod +x /www/cgi-bin/* && exec httpd -f -p 8080 -h /www"
)


def definition(ecs, family, body="$(hostname)", env=None):
    ecs.register_task_definition(family=family, containerDefinitions=[{
        "name": "web", "image": IMAGE, "memory": 64, "essential": True,
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        "environment": [{"name": "REVISION", "value": env or "1"}],
        "entryPoint": ["sh", "-c"], "command": [HTTPD.format(body=body)]}])


def own_subnets(berth):
    """Two subnets of a VPC of the test's own: load balancer addresses live
    on the host, so tests whose targets are bridge tasks put their load
    balancers in VPCs with blocks no other test holds (`vpc_block`) and run
    beside each other (the default VPC's are shared with awsvpc tests)."""
    ec2 = berth.client("ec2")
    octet = vpc_block()
    vpc = ec2.create_vpc(CidrBlock=f"10.{octet}.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.{octet}.{i * 16}.0/20",
                                 AvailabilityZone=zone)["Subnet"]["SubnetId"]
               for i, zone in enumerate(["us-east-1a", "us-east-1b"])]
    return subnets, vpc


def default_subnets(berth):
    ec2 = berth.client("ec2")
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    return [s["SubnetId"] for s in subnets["Subnets"]][:2], subnets["Subnets"][0]["VpcId"]


def open_group(berth, vpc, port=80):
    ec2 = berth.client("ec2")
    group = ec2.create_security_group(GroupName=f"alb-{port}-{time.time_ns()}",
                                      Description="alb", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": port, "ToPort": port,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    return group


def load_balancer(berth, name, subnets, groups):
    elb = berth.client("elbv2")
    out = elb.create_load_balancer(Name=name, Subnets=subnets, SecurityGroups=groups)
    return out["LoadBalancers"][0]


def target_group(berth, name, vpc, target_type="instance", path="/cgi-bin/health"):
    elb = berth.client("elbv2")
    tg = elb.create_target_group(
        Name=name, Protocol="HTTP", Port=8080, VpcId=vpc, TargetType=target_type,
        HealthCheckPath=path, HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
        HealthyThresholdCount=2, UnhealthyThresholdCount=2)["TargetGroups"][0]
    elb.modify_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"], Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "3"}])
    return tg["TargetGroupArn"]


def resolve(berth, name):
    """The load balancer's addresses, as Berth's DNS answers its name."""
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(berth.dns_port), "+short", "+time=2",
                          "+tries=1", name, "A"], capture_output=True, text=True, timeout=10)
    return sorted(line for line in out.stdout.split("\n") if line and not line.startswith(";"))


def get(address, path="/", host=None, timeout=5):
    conn = http.client.HTTPConnection(address, 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host or address})
        r = conn.getresponse()
        return r.status, r.read().decode().strip()
    finally:
        conn.close()


def healthy_targets(elb, tg):
    health = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
    return [h for h in health if h["TargetHealth"]["State"] == "healthy"]


def wait_healthy(elb, tg, count, timeout=90):
    def done():
        healthy = healthy_targets(elb, tg)
        return healthy if len(healthy) == count else None
    return wait_for(done, timeout, interval=0.5, what=f"{count} healthy targets")


def running(ecs, service):
    arns = ecs.list_tasks(serviceName=service, desiredStatus="RUNNING")["taskArns"]
    if not arns:
        return []
    return [t for t in ecs.describe_tasks(tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"]


def test_a_service_behind_an_alb_spreads_and_deploys_without_a_failed_request(berth_agent):
    berth = berth_agent
    ecs, elb = berth.client("ecs"), berth.client("elbv2")
    subnets, vpc = own_subnets(berth)
    lb = load_balancer(berth, "web", subnets, [open_group(berth, vpc)])
    tg = target_group(berth, "web", vpc)
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    definition(ecs, "web")
    ecs.create_service(serviceName="web", taskDefinition="web", desiredCount=3,
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "web",
                                       "containerPort": 8080}],
                       deploymentConfiguration={"minimumHealthyPercent": 100,
                                                "maximumPercent": 200})
    wait_healthy(elb, tg, 3)
    health = elb.describe_target_health(TargetGroupArn=tg)
    instance = ecs.describe_container_instances(containerInstances=ecs.list_container_instances()[
        "containerInstanceArns"])["containerInstances"][0]["ec2InstanceId"]
    assert {h["Target"]["Id"] for h in health["TargetHealthDescriptions"]} == {instance}
    # The IPv4 binding (Docker may publish IPv6 on another port).
    ports = sorted(b["hostPort"] for t in running(ecs, "web")
                   for b in t["containers"][0]["networkBindings"] if ":" not in b["bindIP"])
    assert sorted(h["Target"]["Port"] for h in health["TargetHealthDescriptions"]) == ports

    addresses = resolve(berth, lb["DNSName"])
    # One address in each of the load balancer's subnets, each an interface
    # EC2 describes as the load balancer's.
    enis = berth.client("ec2").describe_network_interfaces(Filters=[
        {"Name": "description", "Values": [f"ELB app/web/{lb['LoadBalancerArn'].rsplit('/', 1)[1]}"]}
    ])["NetworkInterfaces"]
    assert sorted(e["PrivateIpAddress"] for e in enis) == addresses
    assert len(addresses) == 2
    counts = Counter()
    for i in range(300):
        status, body = get(addresses[i % 2], host=lb["DNSName"])
        assert status == 200, (status, body)
        counts[body] += 1
    assert len(counts) == 3, counts
    for body, n in counts.items():
        assert 85 <= n <= 115, counts

    events = [e["message"] for e in ecs.describe_services(services=["web"])["services"][0]["events"]]
    assert any("registered 1 targets in (target-group" in m for m in events), events

    # A rolling deployment while a client sends requests without pause.
    failures, answered, stop = [], Counter(), threading.Event()

    def client():
        i = 0
        while not stop.is_set():
            try:
                status, body = get(addresses[i % 2], host=lb["DNSName"], timeout=10)
                if status != 200:
                    failures.append((status, body))
                answered[body] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))
            i += 1
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        old = {t["taskArn"] for t in running(ecs, "web")}
        definition(ecs, "web", env="2")
        ecs.update_service(service="web", taskDefinition="web")

        def rolled():
            tasks = running(ecs, "web")
            service = ecs.describe_services(services=["web"])["services"][0]
            new = [t for t in tasks if t["taskArn"] not in old]
            return (len(service["deployments"]) == 1 and len(tasks) == 3 and len(new) == 3
                    and len(healthy_targets(elb, tg)) == 3)
        wait_for(rolled, 240, interval=1, what="the deployment to finish")
    finally:
        stop.set()
        thread.join(timeout=20)
    assert sum(answered.values()) > 50, answered
    assert failures == [], failures[:5]
    assert len(answered) == 6, answered  # 3 old tasks and 3 new ones answered


def test_rules_route_by_path_host_and_weight(berth_agent):
    berth = berth_agent
    ecs, elb = berth.client("ecs"), berth.client("elbv2")
    subnets, vpc = own_subnets(berth)
    lb = load_balancer(berth, "rules", subnets, [open_group(berth, vpc)])
    groups = {name: target_group(berth, name, vpc) for name in ("api", "static")}
    listener = elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "404", "ContentType": "text/plain", "MessageBody": "no route"}}]
    )["Listeners"][0]["ListenerArn"]
    forward = lambda name: [{"Type": "forward", "TargetGroupArn": groups[name]}]  # noqa: E731
    elb.create_rule(ListenerArn=listener, Priority=10, Actions=forward("api"),
                    Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}])
    elb.create_rule(ListenerArn=listener, Priority=20, Actions=forward("static"),
                    Conditions=[{"Field": "path-pattern", "Values": ["/static/*"]}])
    elb.create_rule(ListenerArn=listener, Priority=30, Actions=forward("static"),
                    Conditions=[{"Field": "host-header", "Values": ["static.example.com"]}])
    weighted = elb.create_rule(
        ListenerArn=listener, Priority=40,
        Conditions=[{"Field": "path-pattern", "Values": ["/split*"]}],
        Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": groups["api"], "Weight": 80},
            {"TargetGroupArn": groups["static"], "Weight": 20}]}}])
    # ECS takes only target groups a load balancer uses.
    for name in groups:
        definition(ecs, name, body=name)
        ecs.create_service(serviceName=name, taskDefinition=name, desiredCount=1,
                           loadBalancers=[{"targetGroupArn": groups[name], "containerName": "web",
                                           "containerPort": 8080}])
    for name in groups:
        wait_healthy(elb, groups[name], 1)
    [address, _] = resolve(berth, lb["DNSName"])
    assert get(address, "/nothing") == (404, "no route")
    assert get(address, "/api/") == (200, "api")
    assert get(address, "/static/") == (200, "static")
    assert get(address, "/", host="static.example.com") == (200, "static")
    assert get(address, "/", host="other.example.com") == (404, "no route")
    counts = Counter()
    for _ in range(2000):
        status, body = get(address, "/split/")
        assert status == 200, (status, body)
        counts[body] += 1
    assert 0.75 <= counts["api"] / 2000 <= 0.85, counts
    assert 0.15 <= counts["static"] / 2000 <= 0.25, counts
