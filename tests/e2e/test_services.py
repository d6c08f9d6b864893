"""Services: desired count kept with real containers, rolling deployments,
the circuit breaker with rollback, daemons, draining and a server kill -9 in
the middle of a deployment."""
import threading
import time

import pytest

from berth_harness import wait_for, AgentProcess, Berth, check_output, docker, load_model, remove_task_containers
from conftest import instance_ids

MODEL = load_model("ecs", "2014-11-13")
ECS = "AmazonEC2ContainerServiceV20141113"
LOOP = "trap 'exit 0' TERM; while true; do sleep 1; done"


def register(ecs, family, version, command=LOOP, **container):
    c = {"name": "app", "image": "berth-test/busybox:latest", "memory": 32,
         "command": ["sh", "-c", command], "environment": [{"name": "VERSION", "value": str(version)}]}
    c.update(container)
    return ecs.register_task_definition(family=family, containerDefinitions=[c])["taskDefinition"]


def service(ecs, name, cluster="default"):
    return ecs.describe_services(cluster=cluster, services=[name])["services"][0]


def steady(ecs, name, cluster="default", count=None):
    s = service(ecs, name, cluster)
    primary = s["deployments"][0]
    ok = (len(s["deployments"]) == 1 and primary["rolloutState"] == "COMPLETED"
          and s["runningCount"] == s["desiredCount"] and s["pendingCount"] == 0
          and (count is None or s["runningCount"] == count))
    return s if ok else None


def running_containers(family, instances):
    """Running containers of `family` on the given container instances (other
    tests' servers run tasks of the same families at the same time)."""
    found = []
    for instance in instances:
        found += docker("ps", "-q", "--filter", f"label=com.amazonaws.ecs.task-definition-family={family}",
                        "--filter", f"label=berth.container-instance={instance}").split()
    return found


class Sampler:
    """Samples DescribeServices every 200 ms in the background."""

    def __init__(self, server, name, cluster="default"):
        self.ecs = server.client("ecs")
        self.name, self.cluster = name, cluster
        self.samples, self.errors = [], []
        self.instances = instance_ids(server)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                s = service(self.ecs, self.name, self.cluster)
                self.samples.append((s["runningCount"], s["pendingCount"],
                                     len(running_containers(self.family, self.instances)) if self.family else None))
            except Exception as e:  # the server may be restarting
                self.errors.append(repr(e))
            time.sleep(0.2)

    def __enter__(self):
        self.family = getattr(self, "family", None)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)


def test_desired_count_replacement_rolling_update_and_rollback(berth_agent):
    ecs = berth_agent.client("ecs")
    register(ecs, "web", 1)
    _, out, _ = berth_agent.aws("ecs", "create-service", "--service-name", "web", "--task-definition", "web",
                                "--desired-count", "3")
    check_output(MODEL, "CreateService", out)
    assert out["service"]["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    berth_agent.aws("ecs", "wait", "services-stable", "--services", "web")
    s = wait_for(lambda: steady(ecs, "web", count=3), what="steady service")
    assert any("has reached a steady state" in e["message"] for e in s["events"])
    tasks = ecs.list_tasks(serviceName="web")["taskArns"]
    assert len(tasks) == 3
    described = ecs.describe_tasks(tasks=tasks)["tasks"]
    assert all(t["group"] == "service:web" and t["startedBy"].startswith("ecs-svc/") for t in described)
    status, raw, _ = berth_agent.raw("ecs", ECS, "DescribeServices", {"services": ["web"], "include": ["TAGS"]})
    assert status == 200
    check_output(MODEL, "DescribeServices", raw)

    # A container killed behind ECS's back is replaced within 10 s.
    instances = instance_ids(berth_agent)
    victim = running_containers("web", instances)[0]
    killed_at = time.time()
    docker("rm", "-f", victim)
    wait_for(lambda: steady(ecs, "web", count=3) if victim not in running_containers("web", instances) and
             len(running_containers("web", instances)) == 3 else None, timeout=10, what="replacement")
    assert time.time() - killed_at < 10
    events = [e["message"] for e in service(ecs, "web")["events"]]
    assert any("has started 1 tasks" in m for m in events[:3]), events[:5]

    # Rolling update 100/200: never fewer than 3 running, never more than 6.
    register(ecs, "web", 2)
    sampler = Sampler(berth_agent, "web")
    sampler.family = "web"
    with sampler:
        ecs.update_service(service="web", taskDefinition="web:2",
                           deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200})
        s = wait_for(lambda: steady(ecs, "web", count=3), timeout=60, what="v2 steady")
    assert s["taskDefinition"].endswith("web:2")
    assert sampler.samples and not sampler.errors
    assert min(r for r, _, _ in sampler.samples) >= 3, sampler.samples
    assert max(c for _, _, c in sampler.samples) <= 6, sampler.samples
    v2 = ecs.describe_tasks(tasks=ecs.list_tasks(serviceName="web")["taskArns"])["tasks"]
    assert len(v2) == 3 and all(t["taskDefinitionArn"].endswith("web:2") for t in v2)

    # v3 exits at once: the circuit breaker fails it and rolls back to v2.
    register(ecs, "web", 3, command="exit 1")
    ecs.update_service(service="web", taskDefinition="web:3", deploymentConfiguration={
        "deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    s = wait_for(lambda: steady(ecs, "web", count=3) if service(ecs, "web")["taskDefinition"].endswith("web:2")
                 else None, timeout=90, what="rollback to v2")
    events = [e["message"] for e in s["events"]]
    assert any("deployment failed: tasks failed to start" in m for m in events), events
    assert any("rolling back to task definition" in m and "web:2" in m for m in events), events
    tasks = ecs.describe_tasks(tasks=ecs.list_tasks(serviceName="web")["taskArns"])["tasks"]
    assert len(tasks) == 3 and all(t["taskDefinitionArn"].endswith("web:2") for t in tasks)

    # Scale to 0 and delete.
    with pytest.raises(ecs.exceptions.ClientError):
        ecs.delete_service(service="web")
    ecs.update_service(service="web", desiredCount=0)
    out = ecs.delete_service(service="web")
    assert out["service"]["status"] == "DRAINING"
    wait_for(lambda: service(ecs, "web")["status"] == "INACTIVE", what="INACTIVE")
    assert ecs.list_services()["serviceArns"] == []
    wait_for(lambda: running_containers("web", instances) == [], 30, what="containers gone")


def agent(server, tmp_path, name, cluster, *args):
    return AgentProcess(server, name, cluster, tmp_path / f"agent-{name}", args).start()


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


def connected(ecs, cluster, count):
    arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    if len(arns) != count:
        return None
    described = ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"]
    return described if all(i["agentConnected"] for i in described) else None


def test_daemon_follows_instances(cluster_server, tmp_path):
    server, agents = cluster_server
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="daemons")
    for i in range(3):
        agents.append(agent(server, tmp_path, f"d{i}", "daemons", "--memory", "1024"))
    wait_for(lambda: connected(ecs, "daemons", 3), 30, what="3 agents")
    register(ecs, "logger", 1)
    out = ecs.create_service(cluster="daemons", serviceName="logger", taskDefinition="logger",
                             schedulingStrategy="DAEMON")
    assert out["service"]["schedulingStrategy"] == "DAEMON"

    def per_instance(n):
        arns = ecs.list_tasks(cluster="daemons", serviceName="logger")["taskArns"]
        if len(arns) != n:
            return None
        tasks = ecs.describe_tasks(cluster="daemons", tasks=arns)["tasks"]
        instances = {t["containerInstanceArn"] for t in tasks}
        running = all(t["lastStatus"] == "RUNNING" for t in tasks)
        return tasks if running and len(instances) == n else None

    wait_for(lambda: per_instance(3), 60, what="3 daemon tasks")
    agents.append(agent(server, tmp_path, "d3", "daemons", "--memory", "1024"))
    wait_for(lambda: per_instance(4), 60, what="4 daemon tasks")
    assert service(ecs, "logger", "daemons")["desiredCount"] == 4
    gone = [i for i in ecs.describe_container_instances(
        cluster="daemons", containerInstances=ecs.list_container_instances(cluster="daemons")["containerInstanceArns"]
    )["containerInstances"] if i["ec2InstanceId"] == "d1"][0]
    ecs.deregister_container_instance(cluster="daemons", containerInstance=gone["containerInstanceArn"], force=True)
    tasks = wait_for(lambda: per_instance(3), 60, what="3 daemon tasks after deregistration")
    assert gone["containerInstanceArn"] not in {t["containerInstanceArn"] for t in tasks}


def test_draining_moves_tasks_and_keeps_minimum_healthy(cluster_server, tmp_path):
    server, agents = cluster_server
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="drain")
    agents.append(agent(server, tmp_path, "a", "drain", "--memory", "2048"))
    agents.append(agent(server, tmp_path, "b", "drain", "--memory", "2048"))
    instances = wait_for(lambda: connected(ecs, "drain", 2), 30, what="2 agents")
    register(ecs, "api", 1)
    ecs.create_service(cluster="drain", serviceName="api", taskDefinition="api", desiredCount=4,
                       deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 100})
    wait_for(lambda: steady(ecs, "api", "drain", count=4), 60, what="api steady")
    target = instances[0]["containerInstanceArn"]
    sampler = Sampler(server, "api", "drain")
    sampler.family = None
    with sampler:
        ecs.update_container_instances_state(cluster="drain", containerInstances=[target], status="DRAINING")

        def moved():
            tasks = ecs.describe_tasks(cluster="drain", tasks=ecs.list_tasks(
                cluster="drain", serviceName="api")["taskArns"])["tasks"]
            on_target = [t for t in tasks if t["containerInstanceArn"] == target]
            return tasks if not on_target and len(tasks) == 4 and all(
                t["lastStatus"] == "RUNNING" for t in tasks) else None
        wait_for(moved, 90, what="tasks moved off the draining instance")
    assert min(r for r, _, _ in sampler.samples) >= 2, sampler.samples
    assert max(r + p for r, p, _ in sampler.samples) <= 4, sampler.samples
    drained = ecs.describe_container_instances(cluster="drain", containerInstances=[target])["containerInstances"][0]
    assert drained["status"] == "DRAINING" and drained["runningTasksCount"] == 0


def test_server_kill9_mid_deployment(cluster_server, tmp_path):
    server, agents = cluster_server
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="crash")
    agents.append(agent(server, tmp_path, "c", "crash", "--memory", "4096"))
    wait_for(lambda: connected(ecs, "crash", 1), 30, what="agent")
    register(ecs, "svc", 1)
    ecs.create_service(cluster="crash", serviceName="svc", taskDefinition="svc", desiredCount=3)
    wait_for(lambda: steady(ecs, "svc", "crash", count=3), 60, what="steady")
    register(ecs, "svc", 2)
    instances = instance_ids(server)
    counts = []
    stop = threading.Event()

    def watch_docker():
        while not stop.is_set():
            counts.append(len(running_containers("svc", instances)))
            time.sleep(0.2)
    watcher = threading.Thread(target=watch_docker, daemon=True)
    watcher.start()
    try:
        ecs.update_service(cluster="crash", service="svc", taskDefinition="svc:2")
        wait_for(lambda: len(running_containers("svc", instances)) > 3, 30, interval=0.05, what="deployment under way")
        server.kill9()
        server.start()
        ecs = server.client("ecs")
        s = wait_for(lambda: steady(ecs, "svc", "crash", count=3), 120, what="deployment finished after restart")
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert s["taskDefinition"].endswith("svc:2")
    tasks = ecs.describe_tasks(cluster="crash", tasks=ecs.list_tasks(cluster="crash", serviceName="svc")["taskArns"])
    assert len(tasks["tasks"]) == 3 and all(t["taskDefinitionArn"].endswith("svc:2") for t in tasks["tasks"])
    assert max(counts) <= 6, counts
    wait_for(lambda: len(running_containers("svc", instances)) == 3, 60, what="old containers gone")


def test_service_api_errors(berth):
    ecs = berth.client("ecs")
    ecs.create_cluster(clusterName="default")
    ecs.register_task_definition(family="t", containerDefinitions=[
        {"name": "c", "image": "berth-test/busybox:latest", "memory": 32}])
    bad = [
        dict(serviceName="bad name", taskDefinition="t", desiredCount=1),
        dict(serviceName="s", taskDefinition="t"),
        dict(serviceName="s", taskDefinition="t", desiredCount=1, schedulingStrategy="DAEMON"),
        dict(serviceName="s", taskDefinition="t", desiredCount=1,
             deploymentConfiguration={"maximumPercent": 50}),
        dict(serviceName="s", taskDefinition="t", desiredCount=1,
             placementStrategy=[{"type": "binpack", "field": "disk"}]),
        dict(serviceName="s", taskDefinition="missing", desiredCount=1),
        dict(serviceName="s", taskDefinition="t", desiredCount=1, launchType="FARGATE"),
    ]
    for kwargs in bad:
        with pytest.raises(ecs.exceptions.ClientError) as e:
            ecs.create_service(**kwargs)
        assert e.value.response["Error"]["Code"] in ("InvalidParameterException", "ClientException"), kwargs
    assert ecs.list_services()["serviceArns"] == []
    ecs.create_service(serviceName="s", taskDefinition="t", desiredCount=0, clientToken="tok")
    again = ecs.create_service(serviceName="s", taskDefinition="t", desiredCount=0, clientToken="tok")
    assert again["service"]["serviceName"] == "s"
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.create_service(serviceName="s", taskDefinition="t", desiredCount=0)
    with pytest.raises(ecs.exceptions.ServiceNotFoundException):
        ecs.update_service(service="ghost", desiredCount=1)
    missing = ecs.describe_services(services=["ghost"])
    assert missing["services"] == [] and missing["failures"][0]["reason"] == "MISSING"
    arn = ecs.list_services()["serviceArns"][0]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "tier", "value": "web"}])
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "tier", "value": "web"}]
    with pytest.raises(ecs.exceptions.ClientError) as e:
        ecs.delete_cluster(cluster="default")
    assert e.value.response["Error"]["Code"] == "ClusterContainsServicesException"
