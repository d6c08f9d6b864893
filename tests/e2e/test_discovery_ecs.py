"""ECS services with `serviceRegistries`: tasks register with AWS Cloud Map
when they run, leave before their containers get SIGTERM, follow their
container health, and Berth's DNS answers their names to other tasks —
driven with boto3 and the aws CLI against real containers."""
import re
import subprocess
import time

import pytest

from berth_harness import (Berth, check_output, create_task_role, fetch_from_host, load_model,
                           remove_task_containers, wait_for)

# awsvpc tasks of every test server share the default VPC's host route.
pytestmark = pytest.mark.xdist_group("awsvpc")

IMAGE = "berth-test/busybox:latest"
SD_MODEL = load_model("servicediscovery", "2017-03-14")

# An httpd on 8080 answering "ok" and, on /cgi-bin/sick, making its own
# health check fail. On SIGTERM it records what the name resolves to at
# that moment, then stops.
HTTPD = (
    "mkdir -p /www/cgi-bin && echo ok > /www/index.html && touch /www/healthy && "
    "printf '#!/bin/sh\\nrm -f /www/healthy\\necho Content-Type: text/plain\\necho\\necho sick\\n' "
    "> /www/cgi-bin/sick && chmod +x /www/cgi-bin/sick && "
    "(httpd -f -p 8080 -h /www & pid=$!; "
    "trap 'echo SIGTERM-DNS-BEGIN; for i in 1 2 3; do nslookup {name} 2>&1 && break; done; "
    "echo SIGTERM-DNS-END; kill $pid; exit 0' TERM; "
    "wait $pid)"
)


def instance_ids(server):
    ecs = server.client("ecs")
    return [arn.rsplit("/", 1)[1]
            for arn in ecs.list_container_instances(cluster="default")["containerInstanceArns"]]


def dig(berth, name, rtype="A"):
    """Berth's DNS answer for `name` (the +short lines)."""
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(berth.dns_port), "+short", "+time=2",
                          "+tries=1", name, rtype], capture_output=True, text=True, timeout=10)
    return sorted(line for line in out.stdout.split("\n") if line and not line.startswith(";"))


def dig_status(berth, name):
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(berth.dns_port), "+time=2", "+tries=1",
                          name, "A"], capture_output=True, text=True, timeout=10).stdout
    return re.search(r"status: (\w+)", out).group(1)


def wait_operation(sd, operation_id):
    def done():
        op = sd.get_operation(OperationId=operation_id)["Operation"]
        assert op["Status"] != "FAIL", op
        return op if op["Status"] == "SUCCESS" else None
    return wait_for(done, 30, what="Cloud Map operation")


def namespace(berth, name):
    sd, ec2 = berth.client("servicediscovery"), berth.client("ec2")
    vpc = ec2.describe_subnets()["Subnets"][0]["VpcId"]
    op = sd.create_private_dns_namespace(Name=name, Vpc=vpc)
    done = wait_operation(sd, op["OperationId"])
    return done["Targets"]["NAMESPACE"]


def cloud_map_service(berth, namespace_id, name, records, health=True):
    sd = berth.client("servicediscovery")
    kwargs = dict(Name=name, NamespaceId=namespace_id,
                  DnsConfig={"RoutingPolicy": "MULTIVALUE", "DnsRecords": records})
    if health:
        kwargs["HealthCheckCustomConfig"] = {"FailureThreshold": 1}
    return sd.create_service(**kwargs)["Service"]


def subnets(berth):
    ec2 = berth.client("ec2")
    return [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "availability-zone", "Values": ["us-east-1a"]}])["Subnets"]]


def open_group(berth):
    """A security group of the default VPC open on 8080 (for the host)."""
    ec2 = berth.client("ec2")
    vpc = ec2.describe_subnets()["Subnets"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="open-8080", Description="8080",
                                      VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    return group


def task_ip(task):
    for a in task.get("attachments", []):
        for d in a.get("details", []):
            if d["name"] == "privateIPv4Address":
                return d["value"]
    return None


def running_tasks(ecs, service):
    arns = ecs.list_tasks(serviceName=service, desiredStatus="RUNNING")["taskArns"]
    if not arns:
        return []
    return [t for t in ecs.describe_tasks(tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"]


def wait_running(ecs, service, count, timeout=120):
    def done():
        tasks = running_tasks(ecs, service)
        return tasks if len(tasks) == count else None
    return wait_for(done, timeout, what=f"{count} tasks of {service} running")


def execution_role(berth):
    """A role the tasks' awslogs driver ships logs with (created once)."""
    iam = berth.client("iam")
    try:
        return iam.get_role(RoleName="discovery-exec")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        return create_task_role(berth, "discovery-exec", ["logs:*"])


def awsvpc_definition(berth, ecs, family, name, health=False):
    container = {
        "name": "web", "image": IMAGE, "essential": True, "stopTimeout": 10,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "entryPoint": ["sh", "-c"], "command": [HTTPD.replace("{name}", name)],
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": f"/ecs/{family}", "awslogs-region": "us-east-1",
            "awslogs-stream-prefix": family, "awslogs-create-group": "true"}},
    }
    if health:
        container["healthCheck"] = {"command": ["CMD-SHELL", "test -f /www/healthy"],
                                    "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0}
    ecs.register_task_definition(family=family, networkMode="awsvpc",
                                 requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                                 executionRoleArn=execution_role(berth),
                                 containerDefinitions=[container])


def log_text(berth, group, task_id):
    logs = berth.client("logs")
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    [stream] = [s["logStreamName"] for s in streams if s["logStreamName"].endswith(task_id)]
    events = logs.get_log_events(logGroupName=group, logStreamName=stream,
                                 startFromHead=True)["events"]
    return "\n".join(e["message"] for e in events)


def test_tasks_find_each_other_by_name_and_leave_dns_before_sigterm(berth_agent):
    berth = berth_agent
    ecs, sd = berth.client("ecs"), berth.client("servicediscovery")
    ns = namespace(berth, "corp.local")
    registry = cloud_map_service(berth, ns, "api", [{"Type": "A", "TTL": 5}])
    awsvpc_definition(berth, ecs, "api", "api.corp.local")
    network = {"awsvpcConfiguration": {"subnets": subnets(berth)}}
    ecs.create_service(serviceName="api", taskDefinition="api", desiredCount=3,
                       launchType="FARGATE", networkConfiguration=network,
                       serviceRegistries=[{"registryArn": registry["Arn"]}])
    tasks = wait_running(ecs, "api", 3)
    ips = sorted(task_ip(t) for t in tasks)
    assert all(ips)
    wait_for(lambda: dig(berth, "api.corp.local") == ips, 10, what="3 task addresses in DNS")

    # Cloud Map has them, with the attributes ECS sets.
    out = sd.discover_instances(NamespaceName="corp.local", ServiceName="api")
    check_output(SD_MODEL, "DiscoverInstances",
                 {k: v for k, v in out.items() if k != "ResponseMetadata"})
    assert sorted(i["Attributes"]["AWS_INSTANCE_IPV4"] for i in out["Instances"]) == ips
    for i in out["Instances"]:
        a = i["Attributes"]
        assert a["ECS_CLUSTER_NAME"] == "default" and a["ECS_SERVICE_NAME"] == "api"
        assert a["ECS_TASK_DEFINITION_FAMILY"] == "api" and a["REGION"] == "us-east-1"
        assert a["AVAILABILITY_ZONE"] == "us-east-1a"
        assert i["HealthStatus"] == "HEALTHY"

    # Another awsvpc task finds them through the VPC's resolver.
    ecs.register_task_definition(
        family="client", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256",
        memory="512", executionRoleArn=execution_role(berth), containerDefinitions=[{
            "name": "client", "image": IMAGE, "essential": True, "entryPoint": ["sh", "-c"],
            # Resolvers retry; so does this one (in the tests, the host's
            # relay moves between the agents of the servers other tests
            # start and stop).
            "command": ["cat /etc/resolv.conf; "
                        "for i in 1 2 3 4 5; do nslookup api.corp.local && break; sleep 1; done; "
                        "wget -q -O - http://api.corp.local:8080/ && echo FETCHED"],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/ecs/client", "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "client", "awslogs-create-group": "true"}}}])
    [client] = ecs.run_task(taskDefinition="client", launchType="FARGATE",
                            networkConfiguration=network)["tasks"]
    client_id = client["taskArn"].rsplit("/", 1)[1]

    def client_done():
        [t] = ecs.describe_tasks(tasks=[client["taskArn"]])["tasks"]
        return t if t["lastStatus"] == "STOPPED" else None
    stopped = wait_for(client_done, 90, what="client task done")
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline and "FETCHED" not in text:
        try:
            text = log_text(berth, "/ecs/client", client_id)
        except ValueError:
            pass  # its stream is not there yet
        time.sleep(0.2)
    assert "FETCHED" in text, (stopped, text)
    assert stopped["containers"][0].get("exitCode") == 0, text
    assert "nameserver 172.31.0.2" in text, text
    answered = set(re.findall(r"Name:\s*api\.corp\.local\s*\nAddress(?: \d+)?:\s*(\S+)", text))
    assert answered == set(ips), text

    # Scale to 1: within TTL + 2 s the name answers one address, and the
    # stopped tasks had left DNS when their SIGTERM arrived.
    started = time.monotonic()
    ecs.update_service(service="api", desiredCount=1)
    wait_for(lambda: len(dig(berth, "api.corp.local")) == 1, 7, interval=0.1,
             what="one address left")
    assert time.monotonic() - started <= 7
    [kept] = wait_running(ecs, "api", 1)
    gone = [t for t in tasks if t["taskArn"] != kept["taskArn"]]
    assert dig(berth, "api.corp.local") == [task_ip(kept)]
    for t in gone:
        task_id = t["taskArn"].rsplit("/", 1)[1]
        text = wait_for(lambda: (lambda x: x if "SIGTERM-DNS-END" in x else None)(
            log_text(berth, "/ecs/api", task_id)), 60, what="SIGTERM record")
        answer = text.split("SIGTERM-DNS-BEGIN", 1)[1].split("SIGTERM-DNS-END", 1)[0]
        assert task_ip(t) not in answer, answer
        assert task_ip(kept) in answer, answer
    out = sd.discover_instances(NamespaceName="corp.local", ServiceName="api")
    assert [i["Attributes"]["AWS_INSTANCE_IPV4"] for i in out["Instances"]] == [task_ip(kept)]

    # An unknown name under Berth's zone is NXDOMAIN; a task's interface
    # name answers its address.
    assert dig_status(berth, "nothing.corp.local") == "NXDOMAIN"
    ip = task_ip(kept)
    assert dig(berth, f"ip-{ip.replace('.', '-')}.ec2.internal") == [ip]


def test_unhealthy_tasks_leave_the_healthy_answer(berth_agent):
    berth = berth_agent
    ecs, sd = berth.client("ecs"), berth.client("servicediscovery")
    ns = namespace(berth, "health.local")
    registry = cloud_map_service(berth, ns, "web", [{"Type": "A", "TTL": 5}])
    awsvpc_definition(berth, ecs, "web", "web.health.local", health=True)
    ecs.create_service(serviceName="web", taskDefinition="web", desiredCount=2,
                       launchType="FARGATE", healthCheckGracePeriodSeconds=600,
                       networkConfiguration={"awsvpcConfiguration": {
                           "subnets": subnets(berth), "securityGroups": [open_group(berth)]}},
                       serviceRegistries=[{"registryArn": registry["Arn"]}])
    tasks = wait_running(ecs, "web", 2)
    ips = sorted(task_ip(t) for t in tasks)

    def healthy():
        out = sd.discover_instances(NamespaceName="health.local", ServiceName="web",
                                    HealthStatus="HEALTHY")
        return sorted(i["Attributes"]["AWS_INSTANCE_IPV4"] for i in out["Instances"])
    wait_for(lambda: healthy() == ips, 60, what="both tasks registered healthy")

    sick = ips[0]
    assert b"sick" in fetch_from_host(f"http://{sick}:8080/cgi-bin/sick")
    wait_for(lambda: healthy() == [ips[1]], 40, what="the sick task leaves the HEALTHY answer")
    everything = sd.discover_instances(NamespaceName="health.local", ServiceName="web",
                                       HealthStatus="ALL")["Instances"]
    by_ip = {i["Attributes"]["AWS_INSTANCE_IPV4"]: i["HealthStatus"] for i in everything}
    assert by_ip.get(ips[1]) == "HEALTHY"
    # Still registered (the grace period keeps ECS from replacing it) but
    # unhealthy; DNS answers only the healthy one.
    assert by_ip.get(sick) in ("UNHEALTHY", None)
    assert dig(berth, "web.health.local") == [ips[1]]


def test_bridge_tasks_are_found_through_srv_records(berth_agent):
    berth = berth_agent
    ecs = berth.client("ecs")
    ns = namespace(berth, "bridge.local")
    registry = cloud_map_service(berth, ns, "web", [{"Type": "SRV", "TTL": 5}], health=False)
    ecs.register_task_definition(family="bridge-web", containerDefinitions=[{
        "name": "web", "image": IMAGE, "memory": 64, "essential": True,
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        "entryPoint": ["sh", "-c"],
        "command": ["mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]}])
    ecs.create_service(serviceName="web", taskDefinition="bridge-web", desiredCount=2,
                       serviceRegistries=[{"registryArn": registry["Arn"], "containerName": "web",
                                           "containerPort": 8080}])
    tasks = wait_running(ecs, "web", 2)
    # The IPv4 bindings (Docker may publish IPv6 on other ports).
    ports = sorted(b["hostPort"] for t in tasks for b in t["containers"][0]["networkBindings"]
                   if ":" not in b.get("bindIP", "0.0.0.0"))

    def srv():
        lines = dig(berth, "web.bridge.local", "SRV")
        return lines if len(lines) == 2 else None
    lines = wait_for(srv, 15, what="two SRV records")
    seen_ports = sorted(int(line.split()[2]) for line in lines)
    assert seen_ports == ports
    pages = set()
    for line in lines:
        _, _, port, target = line.split()
        [host] = dig(berth, target)
        pages.add(fetch_from_host(f"http://{host}:{port}/").decode().strip())
    assert len(pages) == 2


def test_registrations_match_running_tasks_after_kill9(tmp_path, test_image):
    berth = Berth(tmp_path / "data", agent=True).start()
    try:
        ecs, sd = berth.client("ecs"), berth.client("servicediscovery")
        ns = namespace(berth, "crash.local")
        registry = cloud_map_service(berth, ns, "api", [{"Type": "A", "TTL": 5}], health=False)
        awsvpc_definition(berth, ecs, "crash", "api.crash.local")
        ecs.create_service(serviceName="api", taskDefinition="crash", desiredCount=3,
                           launchType="FARGATE",
                           networkConfiguration={"awsvpcConfiguration": {"subnets": subnets(berth)}},
                           serviceRegistries=[{"registryArn": registry["Arn"]}])
        wait_running(ecs, "api", 3)
        ecs.update_service(service="api", desiredCount=1)
        time.sleep(0.3)
        berth.kill9()
        berth.start()
        ecs, sd = berth.client("ecs"), berth.client("servicediscovery")

        def settled():
            tasks = running_tasks(ecs, "api")
            ips = sorted(task_ip(t) for t in tasks)
            found = sorted(i["Attributes"]["AWS_INSTANCE_IPV4"] for i in sd.discover_instances(
                NamespaceName="crash.local", ServiceName="api")["Instances"])
            return ips if len(tasks) == 1 and found == ips and dig(berth, "api.crash.local") == ips \
                else None
        wait_for(settled, 90, what="registrations match the running task")
    finally:
        ids = []
        try:
            ecs = berth.client("ecs")
            ids = instance_ids(berth)
            ecs.update_service(service="api", desiredCount=0)

            def all_stopped():
                arns = ecs.list_tasks(serviceName="api", desiredStatus="STOPPED")["taskArns"]
                tasks = ecs.describe_tasks(tasks=arns)["tasks"] if arns else []
                return all(t["lastStatus"] == "STOPPED" for t in tasks) and \
                    not running_tasks(ecs, "api")
            wait_for(all_stopped, 60, what="tasks stopped")
        finally:
            berth.stop()
            remove_task_containers(ids)
