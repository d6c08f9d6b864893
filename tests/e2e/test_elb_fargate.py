"""An ALB in front of a Fargate (awsvpc) service whose security group lets
in only the load balancer's group: the load balancer reaches the tasks at
their own addresses (its traffic and health checks come from its interface
addresses, which the VPC's router sends to the host), and nothing else
does."""
import socket
import time

import pytest

from berth_harness import wait_for
from test_elb_ecs import (HTTPD, default_subnets, get, load_balancer, open_group, resolve,
                          running, target_group, wait_healthy)

pytestmark = pytest.mark.xdist_group("awsvpc")

IMAGE = "berth-test/busybox:latest"


def task_ip(task):
    for a in task.get("attachments", []):
        for d in a.get("details", []):
            if d["name"] == "privateIPv4Address":
                return d["value"]
    return None


def answers(ip, port, timeout=3.0):
    """True when a TCP connection to ip:port is accepted within `timeout`."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def test_fargate_tasks_take_traffic_only_from_the_load_balancers_group(berth_agent):
    berth = berth_agent
    ecs, elb, ec2 = berth.client("ecs"), berth.client("elbv2"), berth.client("ec2")
    subnets, vpc = default_subnets(berth)
    alb_group = open_group(berth, vpc, 80)
    task_group = ec2.create_security_group(GroupName="from-alb", Description="only the ALB",
                                           VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=task_group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
        "UserIdGroupPairs": [{"GroupId": alb_group}]}])
    lb = load_balancer(berth, "fargate", subnets, [alb_group])
    tg = target_group(berth, "fargate", vpc, target_type="ip")
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    ecs.register_task_definition(
        family="fargate-web", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[{
            "name": "web", "image": IMAGE, "essential": True,
            "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
            "entryPoint": ["sh", "-c"], "command": [HTTPD.format(body="$(hostname)")]}])
    ecs.create_service(serviceName="web", taskDefinition="fargate-web", desiredCount=2,
                       launchType="FARGATE",
                       networkConfiguration={"awsvpcConfiguration": {
                           "subnets": subnets[:1], "securityGroups": [task_group]}},
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "web",
                                       "containerPort": 8080}])
    healthy = wait_healthy(elb, tg, 2, timeout=120)
    ips = sorted(task_ip(t) for t in running(ecs, "web"))
    assert sorted(h["Target"]["Id"] for h in healthy) == ips
    assert all(h["Target"]["Port"] == 8080 for h in healthy)

    # Through the load balancer: both tasks answer.
    [address, _] = resolve(berth, lb["DNSName"])
    bodies = set()
    for _ in range(20):
        status, body = get(address, host=lb["DNSName"])
        assert status == 200, (status, body)
        bodies.add(body)
    assert len(bodies) == 2, bodies
    # Directly from the host: the task's group drops it (no answer at all).
    start = time.monotonic()
    assert not answers(ips[0], 8080, timeout=3.0)
    assert time.monotonic() - start >= 2.5, "refused rather than dropped"
