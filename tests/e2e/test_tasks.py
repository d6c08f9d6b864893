"""Tasks that run real containers: RunTask/StopTask/DescribeTasks through the
real aws CLI and boto3, the agent driving real Docker, and recovery after
kill -9 of the agent and of the server."""
import json
import time
import urllib.request

import pytest

from berth_harness import (wait_for, ACCOUNT, AgentProcess, Berth, check_output, docker, load_model,
                           remove_task_containers)
from conftest import instance_ids

MODEL = load_model("ecs", "2014-11-13")
ECS = "AmazonEC2ContainerServiceV20141113"


def raw_checked(server, operation, payload):
    """A raw signed call whose JSON answer is validated against the model."""
    status, body, _ = server.raw("ecs", ECS, operation, payload)
    assert status == 200, body
    check_output(MODEL, operation, body)
    return body


def describe(ecs, arns, cluster="default"):
    return ecs.describe_tasks(cluster=cluster, tasks=arns, include=["TAGS"])["tasks"]


def wait_status(ecs, arns, status, cluster="default", timeout=60.0):
    def done():
        tasks = describe(ecs, arns, cluster)
        return tasks if all(t["lastStatus"] == status for t in tasks) else None
    return wait_for(done, timeout, what=f"tasks {status}")


def register(ecs, family, containers, **extra):
    for c in containers:
        c.setdefault("image", "berth-test/busybox:latest")
        c.setdefault("memory", 32)
    return ecs.register_task_definition(family=family, containerDefinitions=containers,
                                        **extra)["taskDefinition"]


def docker_ps(label):
    out = docker("ps", "--format", "{{.ID}}", "--filter", f"label={label}")
    return out.split()


def inspect(container_id):
    return json.loads(docker("inspect", container_id))[0]


TERM_TRAP = ("trap 'echo term > /data/term-$(hostname); exit 0' TERM; "
             "while true; do sleep 1; done")


def test_run_three_then_stop_one_with_sigterm(berth_agent, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ecs = berth_agent.client("ecs")
    register(ecs, "sleeper", [{"name": "sleeper", "command": ["sh", "-c", TERM_TRAP],
                               "mountPoints": [{"sourceVolume": "marks", "containerPath": "/data"}],
                               "stopTimeout": 20}],
             volumes=[{"name": "marks", "host": {"sourcePath": str(marks)}}])
    _, out, _ = berth_agent.aws("ecs", "run-task", "--task-definition", "sleeper", "--count", "3")
    check_output(MODEL, "RunTask", out)
    assert out["failures"] == []
    arns = [t["taskArn"] for t in out["tasks"]]
    assert len(arns) == 3 and all(t["lastStatus"] == "PROVISIONING" for t in out["tasks"])
    berth_agent.aws("ecs", "wait", "tasks-running", "--tasks", *arns)

    tasks = describe(ecs, arns)
    for t in tasks:
        assert t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING"
        assert t["startedAt"] >= t["createdAt"] and "pullStartedAt" in t and "pullStoppedAt" in t
        assert t["containers"][0]["lastStatus"] == "RUNNING"
    running = docker_ps(f"com.amazonaws.ecs.task-arn={arns[0]}")
    assert len(running) == 1
    labels = inspect(running[0])["Config"]["Labels"]
    assert labels["com.amazonaws.ecs.cluster"] == "default"
    assert labels["com.amazonaws.ecs.container-name"] == "sleeper"
    assert labels["com.amazonaws.ecs.task-definition-family"] == "sleeper"
    assert sum(len(docker_ps(f"com.amazonaws.ecs.task-arn={a}")) for a in arns) == 3
    hostname = inspect(running[0])["Config"]["Hostname"]

    _, stopped, _ = berth_agent.aws("ecs", "stop-task", "--task", arns[0], "--reason", "enough")
    check_output(MODEL, "StopTask", stopped)
    assert stopped["task"]["desiredStatus"] == "STOPPED"
    berth_agent.aws("ecs", "wait", "tasks-stopped", "--tasks", arns[0])
    assert docker_ps(f"com.amazonaws.ecs.task-arn={arns[0]}") == []
    assert (marks / f"term-{hostname}").read_text().strip() == "term"
    raw_checked(berth_agent, "DescribeTasks", {"tasks": arns, "include": ["TAGS"]})
    task = describe(ecs, [arns[0]])[0]
    assert task["stopCode"] == "UserInitiated" and task["stoppedReason"] == "enough"
    assert task["containers"][0]["exitCode"] == 0
    assert task["stoppedAt"] >= task["stoppingAt"] >= task["startedAt"]
    # The other two still run; ListTasks shows them, and the stopped one under STOPPED.
    listed = ecs.list_tasks(cluster="default")["taskArns"]
    assert sorted(listed) == sorted(arns[1:])
    assert ecs.list_tasks(cluster="default", desiredStatus="STOPPED")["taskArns"] == [arns[0]]
    assert sorted(ecs.list_tasks(family="sleeper")["taskArns"]) == sorted(arns[1:])


def test_essential_exit_and_non_essential_exit(berth_agent):
    ecs = berth_agent.client("ecs")
    register(ecs, "exiter", [{"name": "main", "command": ["sh", "-c", "exit 3"]}])
    arn = ecs.run_task(taskDefinition="exiter")["tasks"][0]["taskArn"]
    task = wait_status(ecs, [arn], "STOPPED")[0]
    assert task["stopCode"] == "EssentialContainerExited"
    assert task["stoppedReason"] == "Essential container in task exited"
    assert task["containers"][0]["exitCode"] == 3
    assert task["desiredStatus"] == "STOPPED"

    register(ecs, "sidecar", [
        {"name": "main", "command": ["sleep", "600"]},
        {"name": "helper", "essential": False, "command": ["sh", "-c", "exit 5"]},
    ])
    arn = ecs.run_task(taskDefinition="sidecar")["tasks"][0]["taskArn"]
    wait_for(lambda: next((c for c in describe(ecs, [arn])[0]["containers"]
                           if c["name"] == "helper" and c.get("exitCode") == 5), None),
             what="non-essential container exit")
    time.sleep(1.5)
    task = describe(ecs, [arn])[0]
    assert task["lastStatus"] == "RUNNING" and task["desiredStatus"] == "RUNNING"
    ecs.stop_task(task=arn)


def test_depends_on_complete_and_healthy(berth_agent):
    ecs = berth_agent.client("ecs")
    register(ecs, "ordered", [
        {"name": "init", "essential": False,
         "command": ["sh", "-c", "sleep 1; echo ready > /shared/init"],
         "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}]},
        {"name": "app", "dependsOn": [{"containerName": "init", "condition": "COMPLETE"}],
         "command": ["sh", "-c", "cat /shared/init > /shared/app-saw; sleep 600"],
         "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}]},
    ], volumes=[{"name": "shared"}])
    arn = ecs.run_task(taskDefinition="ordered")["tasks"][0]["taskArn"]
    task = wait_status(ecs, [arn], "RUNNING")[0]
    by_name = {c["name"]: c for c in task["containers"]}
    assert by_name["init"]["lastStatus"] == "STOPPED" and by_name["init"]["exitCode"] == 0
    init = inspect(by_name["init"]["runtimeId"])
    app = inspect(by_name["app"]["runtimeId"])
    assert app["State"]["StartedAt"] > init["State"]["FinishedAt"]
    out = docker("exec", by_name["app"]["runtimeId"], "cat", "/shared/app-saw")
    assert out.strip() == "ready"

    register(ecs, "healthy-first", [
        {"name": "db", "command": ["sh", "-c", "sleep 2; touch /ready; sleep 600"],
         "healthCheck": {"command": ["CMD-SHELL", "test -f /ready"], "interval": 5,
                         "timeout": 2, "retries": 3, "startPeriod": 0}},
        {"name": "web", "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}],
         "command": ["sleep", "600"]},
    ])
    arn = ecs.run_task(taskDefinition="healthy-first")["tasks"][0]["taskArn"]
    task = wait_status(ecs, [arn], "RUNNING", timeout=90)[0]
    by_name = {c["name"]: c for c in task["containers"]}
    assert by_name["db"]["healthStatus"] == "HEALTHY"
    assert task["healthStatus"] == "HEALTHY"
    db = inspect(by_name["db"]["runtimeId"])
    web = inspect(by_name["web"]["runtimeId"])
    healthy_at = min(log["End"] for log in db["State"]["Health"]["Log"] if log["ExitCode"] == 0)
    assert web["State"]["StartedAt"] > healthy_at


def test_dynamic_host_ports(berth_agent):
    ecs = berth_agent.client("ecs")
    register(ecs, "web", [{
        "name": "httpd",
        "command": ["sh", "-c", "mkdir -p /www && echo hello-$(hostname) > /www/index.html "
                                "&& exec httpd -f -p 8080 -h /www"],
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
    }])
    out = ecs.run_task(taskDefinition="web", count=2)
    arns = [t["taskArn"] for t in out["tasks"]]
    tasks = wait_status(ecs, arns, "RUNNING")
    ports = []
    for t in tasks:
        bindings = [b for b in t["containers"][0]["networkBindings"] if b["bindIP"] == "0.0.0.0"]
        assert len(bindings) == 1 and bindings[0]["containerPort"] == 8080
        assert bindings[0]["protocol"] == "tcp"
        ports.append(bindings[0]["hostPort"])
    assert ports[0] != ports[1]
    bodies = set()
    for port in ports:
        def fetch(port=port):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    return r.read().decode().strip()
            except OSError:
                return None
        bodies.add(wait_for(fetch, 20, what=f"httpd on port {port}"))
    assert len(bodies) == 2 and all(b.startswith("hello-") for b in bodies)


def test_pull_failure_stops_the_task(berth_agent):
    ecs = berth_agent.client("ecs")
    register(ecs, "unpullable", [{"name": "c", "image": "127.0.0.1:1/berth-missing:latest"}])
    arn = ecs.run_task(taskDefinition="unpullable")["tasks"][0]["taskArn"]
    task = wait_status(ecs, [arn], "STOPPED")[0]
    assert task["stopCode"] == "TaskFailedToStart"
    assert task["containers"][0]["reason"].startswith("CannotPullContainerError")
    assert task["stoppedReason"].startswith("CannotPullContainerError")


def agent(server, tmp_path, name, cluster, *args):
    return AgentProcess(server, name, cluster, tmp_path / f"agent-{name}", args).start()


def wait_instances(server, cluster, count):
    ecs = server.client("ecs")

    def ready():
        arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
        if len(arns) < count:
            return None
        described = raw_checked(server, "DescribeContainerInstances",
                                {"cluster": cluster, "containerInstances": arns, "include": ["TAGS"]})
        instances = described["containerInstances"]
        return instances if all(i["agentConnected"] for i in instances) else None
    return wait_for(ready, 30, what=f"{count} connected instances in {cluster}")


@pytest.fixture
def cluster_server(tmp_path, test_image):
    server = Berth(tmp_path / "data").start()
    agents = []
    yield server, agents
    try:
        ids = instance_ids(server)
    finally:
        for a in agents:
            a.stop()
        server.stop()
    remove_task_containers(ids)


def test_resources_memory_limit_and_cpu_shares(cluster_server, tmp_path):
    server, agents = cluster_server
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="tight")
    agents.append(agent(server, tmp_path, "tight-1", "tight", "--memory", "1000", "--cpu", "2048"))
    instance = wait_instances(server, "tight", 1)[0]
    resources = {r["name"]: r for r in instance["registeredResources"]}
    assert resources["MEMORY"]["integerValue"] == 1000 and resources["CPU"]["integerValue"] == 2048
    register(ecs, "fat", [{"name": "c", "memory": 300, "cpu": 128, "command": ["sleep", "600"]}])
    out = ecs.run_task(cluster="tight", taskDefinition="fat", count=3)
    assert len(out["tasks"]) == 3 and out["failures"] == []
    fourth = ecs.run_task(cluster="tight", taskDefinition="fat")
    assert fourth["tasks"] == []
    assert fourth["failures"] == [{"arn": instance["containerInstanceArn"], "reason": "RESOURCE:MEMORY"}]
    tasks = wait_status(ecs, [t["taskArn"] for t in out["tasks"]], "RUNNING", cluster="tight")
    host = inspect(tasks[0]["containers"][0]["runtimeId"])["HostConfig"]
    assert host["Memory"] == 300 * 1024 * 1024 and host["CpuShares"] == 128
    described = ecs.describe_container_instances(
        cluster="tight", containerInstances=[instance["containerInstanceArn"]])["containerInstances"][0]
    remaining = {r["name"]: r for r in described["remainingResources"]}
    assert remaining["MEMORY"]["integerValue"] == 100 and remaining["CPU"]["integerValue"] == 2048 - 384
    assert described["runningTasksCount"] == 3


def test_two_agents_with_attributes(cluster_server, tmp_path):
    server, agents = cluster_server
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="multi")
    agents.append(agent(server, tmp_path, "host-a", "multi", "--attribute", "zone=a", "--memory", "2048"))
    agents.append(agent(server, tmp_path, "host-b", "multi", "--attribute", "zone=b", "--memory", "2048"))
    instances = wait_instances(server, "multi", 2)
    by_name = {i["ec2InstanceId"]: i for i in instances}
    assert set(by_name) == {"host-a", "host-b"}
    for name, zone in (("host-a", "a"), ("host-b", "b")):
        attrs = {a["name"]: a.get("value") for a in by_name[name]["attributes"]}
        assert attrs["zone"] == zone and attrs["ecs.os-type"] == "linux"
        resources = {r["name"]: r for r in by_name[name]["registeredResources"]}
        assert resources["MEMORY"]["integerValue"] == 2048
        assert set(resources["PORTS"]["stringSetValue"]) >= {"22", "2375", "2376", "51678", "51679"}
    filtered = ecs.list_container_instances(cluster="multi", filter="attribute:zone == b")
    assert filtered["containerInstanceArns"] == [by_name["host-b"]["containerInstanceArn"]]
    listed = ecs.list_attributes(cluster="multi", targetType="container-instance", attributeName="zone")
    assert sorted(a["value"] for a in listed["attributes"]) == ["a", "b"]

    register(ecs, "spread", [{"name": "c", "command": ["sleep", "600"]}])
    out = ecs.run_task(cluster="multi", taskDefinition="spread", count=4)
    tasks = wait_status(ecs, [t["taskArn"] for t in out["tasks"]], "RUNNING", cluster="multi")
    placed = {}
    for t in tasks:
        placed.setdefault(t["containerInstanceArn"], 0)
        placed[t["containerInstanceArn"]] += 1
    assert sorted(placed.values()) == [2, 2]
    for name in ("host-a", "host-b"):
        instance_id = by_name[name]["containerInstanceArn"].rsplit("/", 1)[1]
        assert len(docker_ps(f"berth.container-instance={instance_id}")) == 2

    # Draining stops placement on an instance; StartTask targets one directly.
    ecs.update_container_instances_state(
        cluster="multi", containerInstances=[by_name["host-a"]["containerInstanceArn"]], status="DRAINING")
    out = ecs.run_task(cluster="multi", taskDefinition="spread", count=2)
    assert {t["containerInstanceArn"] for t in out["tasks"]} == {by_name["host-b"]["containerInstanceArn"]}
    out = raw_checked(server, "StartTask", {"cluster": "multi", "taskDefinition": "spread",
                                            "containerInstances": [by_name["host-b"]["containerInstanceArn"]]})
    assert len(out["tasks"]) == 1


def test_kill9_agent_then_server_keeps_tasks(cluster_server, tmp_path):
    server, agents = cluster_server
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="durable")
    a = agent(server, tmp_path, "sturdy", "durable", "--memory", "4096")
    agents.append(a)
    instance = wait_instances(server, "durable", 1)[0]
    instance_id = instance["containerInstanceArn"].rsplit("/", 1)[1]
    register(ecs, "steady", [{"name": "c", "command": ["sleep", "600"]}])
    out = ecs.run_task(cluster="durable", taskDefinition="steady", count=5)
    arns = [t["taskArn"] for t in out["tasks"]]
    wait_status(ecs, arns, "RUNNING", cluster="durable")
    before = sorted(docker_ps(f"berth.container-instance={instance_id}"))
    assert len(before) == 5

    a.kill9()
    a.start()
    wait_instances(server, "durable", 1)
    time.sleep(3)
    assert sorted(docker_ps(f"berth.container-instance={instance_id}")) == before
    assert all(t["lastStatus"] == "RUNNING" for t in describe(ecs, arns, "durable"))
    again = ecs.describe_container_instances(cluster="durable", containerInstances=[instance_id])
    assert again["containerInstances"][0]["containerInstanceArn"] == instance["containerInstanceArn"]

    server.kill9()
    server.start()
    ecs = server.client("ecs")
    wait_instances(server, "durable", 1)
    time.sleep(3)
    assert sorted(docker_ps(f"berth.container-instance={instance_id}")) == before
    tasks = describe(ecs, arns, "durable")
    assert all(t["lastStatus"] == "RUNNING" for t in tasks)
    # A task stopped while its agent is down is stopped once the agent is back.
    a.kill9()
    ecs.stop_task(cluster="durable", task=arns[0])
    a.start()
    wait_status(ecs, [arns[0]], "STOPPED", cluster="durable", timeout=60)
    assert len(docker_ps(f"berth.container-instance={instance_id}")) == 4


def test_container_instance_apis_and_errors(cluster_server, tmp_path):
    server, agents = cluster_server
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="apis")
    agents.append(agent(server, tmp_path, "apis-1", "apis", "--memory", "512"))
    instance = wait_instances(server, "apis", 1)[0]
    arn = instance["containerInstanceArn"]

    raw_checked(server, "PutAttributes", {"cluster": "apis", "attributes": [
        {"name": "stack", "value": "prod", "targetType": "container-instance", "targetId": arn}]})
    attrs = {a["name"]: a.get("value") for a in ecs.describe_container_instances(
        cluster="apis", containerInstances=[arn])["containerInstances"][0]["attributes"]}
    assert attrs["stack"] == "prod"
    ecs.delete_attributes(cluster="apis", attributes=[{"name": "stack", "targetId": arn}])
    assert ecs.list_attributes(cluster="apis", targetType="container-instance",
                               attributeName="stack")["attributes"] == []

    missing = ecs.describe_container_instances(cluster="apis", containerInstances=["0" * 32])
    assert missing["containerInstances"] == [] and missing["failures"][0]["reason"] == "MISSING"
    tasks = ecs.describe_tasks(cluster="apis", tasks=["f" * 32])
    assert tasks["tasks"] == [] and tasks["failures"][0]["reason"] == "MISSING"

    register(ecs, "tiny", [{"name": "c", "command": ["sleep", "600"]}])
    for bad, code in [
        (dict(taskDefinition="tiny", count=11), "InvalidParameterException"),
        (dict(taskDefinition="nope-family"), "ClientException"),
        (dict(taskDefinition="tiny", launchType="FARGATE"), "InvalidParameterException"),
        (dict(taskDefinition="tiny", overrides={"containerOverrides": [{"name": "ghost"}]}),
         "InvalidParameterException"),
    ]:
        with pytest.raises(ecs.exceptions.ClientError) as e:
            ecs.run_task(cluster="apis", **bad)
        assert e.value.response["Error"]["Code"] in (code, "InvalidParameterException", "ClientException"), bad
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.run_task(cluster="no-such-cluster", taskDefinition="tiny")
    # Nothing was created by the refused calls.
    assert ecs.list_tasks(cluster="apis")["taskArns"] == []

    arn_task = ecs.run_task(cluster="apis", taskDefinition="tiny", startedBy="tester",
                            overrides={"containerOverrides": [{"name": "c", "command": ["sleep", "601"]}]},
                            tags=[{"key": "team", "value": "core"}])["tasks"][0]["taskArn"]
    task = wait_status(ecs, [arn_task], "RUNNING", cluster="apis")[0]
    assert task["startedBy"] == "tester" and task["tags"] == [{"key": "team", "value": "core"}]
    assert inspect(task["containers"][0]["runtimeId"])["Config"]["Cmd"] == ["sleep", "601"]
    assert ecs.list_tasks(cluster="apis", startedBy="tester")["taskArns"] == [arn_task]
    for resource in (arn_task, arn):
        ecs.tag_resource(resourceArn=resource, tags=[{"key": "owner", "value": "qa"}])
        tags = ecs.list_tags_for_resource(resourceArn=resource)["tags"]
        assert {"key": "owner", "value": "qa"} in tags
        ecs.untag_resource(resourceArn=resource, tagKeys=["owner"])
        assert {"key": "owner", "value": "qa"} not in ecs.list_tags_for_resource(resourceArn=resource)["tags"]
    with pytest.raises(ecs.exceptions.ClientError) as e:
        ecs.deregister_container_instance(cluster="apis", containerInstance=arn)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ecs.exceptions.ClientError) as e:
        ecs.delete_cluster(cluster="apis")
    assert e.value.response["Error"]["Code"] == "ClusterContainsContainerInstancesException"
    out = raw_checked(server, "DeregisterContainerInstance",
                      {"cluster": "apis", "containerInstance": arn, "force": True})
    assert out["containerInstance"]["status"] == "INACTIVE"
    assert ecs.list_container_instances(cluster="apis")["containerInstanceArns"] == []
