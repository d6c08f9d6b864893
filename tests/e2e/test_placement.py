"""Placement strategies and constraints through the real aws CLI, on three
agents with zone attributes a, b and c."""
import time

import pytest

from berth_harness import AgentProcess, Berth, remove_task_containers
from conftest import instance_ids


def wait_for(predicate, timeout=60.0, interval=0.2, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def zoned(tmp_path, test_image):
    server = Berth(tmp_path / "data").start()
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="zoned")
    agents = [AgentProcess(server, f"zone-{z}", "zoned", tmp_path / f"agent-{z}",
                           ["--attribute", f"zone={z}", "--memory", "4096",
                            "--instance-type", f"m5.{'large' if z != 'c' else 'xlarge'}"]).start()
              for z in "abc"]

    def connected():
        arns = ecs.list_container_instances(cluster="zoned")["containerInstanceArns"]
        if len(arns) != 3:
            return None
        described = ecs.describe_container_instances(cluster="zoned", containerInstances=arns)
        instances = described["containerInstances"]
        return instances if all(i["agentConnected"] for i in instances) else None

    instances = wait_for(connected, 30, what="3 agents")
    zone_of = {i["containerInstanceArn"]: next(a["value"] for a in i["attributes"] if a["name"] == "zone")
               for i in instances}
    ecs.register_task_definition(family="placed", containerDefinitions=[
        {"name": "c", "image": "berth-test/busybox:latest", "memory": 16, "command": ["sleep", "600"]}])
    yield server, zone_of
    try:
        ids = instance_ids(server)
    finally:
        for a in agents:
            a.stop()
        server.stop()
    remove_task_containers(ids)


def zones(zone_of, tasks):
    counts = {}
    for t in tasks:
        z = zone_of[t["containerInstanceArn"]]
        counts[z] = counts.get(z, 0) + 1
    return counts


def test_spread_by_zone_places_two_per_agent(zoned):
    server, zone_of = zoned
    _, out, _ = server.aws("ecs", "run-task", "--cluster", "zoned", "--task-definition", "placed",
                           "--count", "6", "--placement-strategy", "type=spread,field=attribute:zone")
    assert out["failures"] == []
    assert zones(zone_of, out["tasks"]) == {"a": 2, "b": 2, "c": 2}


def test_member_of_never_uses_zone_c(zoned):
    server, zone_of = zoned
    for _ in range(3):
        _, out, _ = server.aws("ecs", "run-task", "--cluster", "zoned", "--task-definition", "placed",
                               "--count", "4", "--placement-constraints",
                               'type=memberOf,expression="attribute:zone in [a, b]"')
        assert out["failures"] == [] and len(out["tasks"]) == 4
        assert "c" not in zones(zone_of, out["tasks"])
    # Binpack on memory fills one instance before the next.
    _, out, _ = server.aws("ecs", "run-task", "--cluster", "zoned", "--task-definition", "placed",
                           "--count", "3", "--placement-strategy", "type=binpack,field=memory",
                           "--placement-constraints", "type=memberOf,expression=attribute:ecs.instance-type =~ m5.xlarge")
    assert zones(zone_of, out["tasks"]) == {"c": 3}
    # distinctInstance: at most one task of the group per instance.
    ecs = server.client("ecs")
    out = ecs.run_task(cluster="zoned", taskDefinition="placed", count=4, group="solo",
                       placementConstraints=[{"type": "distinctInstance"}])
    assert len(out["tasks"]) == 3
    assert {f["reason"] for f in out["failures"]} == {"DistinctInstance placement constraint unsatisfied."}


def test_query_language_errors_and_filters(zoned):
    server, zone_of = zoned
    ecs = server.client("ecs")
    with pytest.raises(ecs.exceptions.InvalidParameterException) as e:
        ecs.run_task(cluster="zoned", taskDefinition="placed",
                     placementConstraints=[{"type": "memberOf", "expression": "attribute:zone in [a, b"}])
    assert "character" in str(e.value)
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.run_task(cluster="zoned", taskDefinition="placed",
                     placementStrategy=[{"type": "binpack", "field": "disk"}])
    listed = ecs.list_container_instances(cluster="zoned", filter="attribute:zone != a and not (attribute:zone == c)")
    assert [zone_of[a] for a in listed["containerInstanceArns"]] == ["b"]
    listed = ecs.list_container_instances(cluster="zoned", filter="attribute:ecs.instance-type =~ m5.large")
    assert sorted(zone_of[a] for a in listed["containerInstanceArns"]) == ["a", "b"]
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.list_container_instances(cluster="zoned", filter="attribute:zone ==")
    # A service's tasks spread over zones and honour its constraint.
    ecs.create_service(cluster="zoned", serviceName="ab", taskDefinition="placed", desiredCount=4,
                       placementConstraints=[{"type": "memberOf", "expression": "attribute:zone in [a, b]"}],
                       placementStrategy=[{"type": "spread", "field": "attribute:zone"}])

    def placed():
        arns = ecs.list_tasks(cluster="zoned", serviceName="ab")["taskArns"]
        tasks = ecs.describe_tasks(cluster="zoned", tasks=arns)["tasks"] if arns else []
        return tasks if len(tasks) == 4 else None
    tasks = wait_for(placed, 30, what="service tasks")
    assert zones(zone_of, tasks) == {"a": 2, "b": 2}
