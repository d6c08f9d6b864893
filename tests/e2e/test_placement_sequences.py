"""Placement across sequences of separate calls, end to end on three agents:
`berth up`'s own agent (zone us-east-1a, the host's resources) and two
stand-alone `berth agent`s (zones us-east-1b and us-east-1c, small
`--cpu`/`--memory`, a `role=worker` attribute), running real busybox tasks.

The same invariants as the handler-level property test
(crates/berth-ecs/src/placement_sequences.rs), read back from DescribeTasks
and DescribeContainerInstances after every step: no instance holds two live
tasks of a distinctInstance group, a spread call goes to the emptiest value
with room, `task:group` expressions see every live task, and no instance's
CPU or memory is overcommitted. (Agents advertise no GPUs, so GPU
overcommit is covered by the property test only.)
"""
import pytest

from berth_harness import AgentProcess, Berth, remove_task_containers, wait_for
from conftest import instance_ids

SMALL = {"cpu": 32, "memory": 32}
HOG = {"cpu": 32, "memory": 160}
DISTINCT_GROUPS = ("solo", "service:steps")


@pytest.fixture(scope="module")
def three(tmp_path_factory, test_image):
    tmp = tmp_path_factory.mktemp("placement-sequences")
    server = Berth(tmp / "data", agent=True).start()
    ecs = server.client("ecs")
    agents = [
        AgentProcess(server, "seq-b", "default", tmp / "agent-b",
                     ["--availability-zone", "us-east-1b", "--attribute", "role=worker",
                      "--cpu", "512", "--memory", "384"]).start(),
        AgentProcess(server, "seq-c", "default", tmp / "agent-c",
                     ["--availability-zone", "us-east-1c", "--attribute", "role=worker",
                      "--cpu", "1024", "--memory", "512"]).start(),
    ]

    def connected():
        arns = ecs.list_container_instances(cluster="default")["containerInstanceArns"]
        if len(arns) != 3:
            return None
        found = ecs.describe_container_instances(cluster="default", containerInstances=arns)
        instances = found["containerInstances"]
        return instances if all(i["agentConnected"] for i in instances) else None

    try:
        instances = wait_for(connected, 60, what="three connected agents")
    except AssertionError:
        for a in agents:
            print(a.logs())
        raise
    zone = {i["containerInstanceArn"]: attribute(i, "ecs.availability-zone") for i in instances}
    for family, size in (("seq", SMALL), ("hog", HOG)):
        ecs.register_task_definition(family=family, containerDefinitions=[
            {"name": "c", "image": test_image, "essential": True, **size,
             # Exits at once on SIGTERM (a bare `sleep` as PID 1 ignores it).
             "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]}])
    yield server, ecs, zone
    try:
        ids = instance_ids(server)
    finally:
        for a in agents:
            a.stop()
        server.stop()
    remove_task_containers(ids)


def attribute(instance, name):
    return next((a.get("value") for a in instance["attributes"] if a["name"] == name), None)


def all_tasks(ecs):
    arns = []
    for status in ("RUNNING", "STOPPED"):
        for page in ecs.get_paginator("list_tasks").paginate(cluster="default", desiredStatus=status):
            arns += page["taskArns"]
    tasks = []
    for i in range(0, len(arns), 100):
        tasks += ecs.describe_tasks(cluster="default", tasks=arns[i:i + 100])["tasks"]
    return tasks


def live(ecs):
    return [t for t in all_tasks(ecs) if t["lastStatus"] != "STOPPED"]


def count(tasks, group):
    counts = {}
    for t in tasks:
        if t["group"] == group:
            counts[t["containerInstanceArn"]] = counts.get(t["containerInstanceArn"], 0) + 1
    return counts


def remaining(ecs):
    """Each instance's remaining CPU and memory, as ECS reports them."""
    arns = ecs.list_container_instances(cluster="default")["containerInstanceArns"]
    out = {}
    for i in ecs.describe_container_instances(cluster="default", containerInstances=arns)["containerInstances"]:
        left = {r["name"]: r.get("integerValue") for r in i["remainingResources"]}
        registered = {r["name"]: r.get("integerValue") for r in i["registeredResources"]}
        out[i["containerInstanceArn"]] = (left["CPU"], left["MEMORY"], registered["CPU"], registered["MEMORY"])
    return out


def check_invariants(ecs):
    tasks = live(ecs)
    for group in DISTINCT_GROUPS:
        assert all(n <= 1 for n in count(tasks, group).values()), (group, count(tasks, group))
    for arn, (cpu, memory, cpu_total, memory_total) in remaining(ecs).items():
        used_cpu = sum(int(t["cpu"]) for t in tasks if t["containerInstanceArn"] == arn)
        used_memory = sum(int(t["memory"]) for t in tasks if t["containerInstanceArn"] == arn)
        assert cpu >= 0 and memory >= 0, (arn, cpu, memory)
        assert used_cpu <= cpu_total and used_memory <= memory_total, (arn, used_cpu, used_memory)
        assert (cpu, memory) == (cpu_total - used_cpu, memory_total - used_memory), arn
    return tasks


def run(ecs, family="seq", **kwargs):
    out = ecs.run_task(cluster="default", taskDefinition=family, **kwargs)
    check_invariants(ecs)
    return out


def stop(ecs, arns):
    for arn in arns:
        ecs.stop_task(cluster="default", task=arn, reason="sequence step")

    def stopped():
        found = ecs.describe_tasks(cluster="default", tasks=arns)["tasks"]
        return all(t["lastStatus"] == "STOPPED" for t in found)
    wait_for(stopped, 60, what="tasks STOPPED")
    check_invariants(ecs)


def all_running(ecs):
    def running():
        tasks = live(ecs)
        return tasks if all(t["lastStatus"] == "RUNNING" for t in tasks) else None
    return wait_for(running, 120, interval=0.5, what="every live task RUNNING")


def test_separate_run_task_calls_keep_every_invariant(three):
    server, ecs, zone = three
    instances = sorted(zone)

    # distinctInstance across separate calls: one per instance, then none.
    solo = []
    for _ in range(3):
        out = run(ecs, group="solo", placementConstraints=[{"type": "distinctInstance"}])
        assert out["failures"] == [], out["failures"]
        solo += out["tasks"]
    assert sorted(t["containerInstanceArn"] for t in solo) == instances
    out = run(ecs, group="solo", placementConstraints=[{"type": "distinctInstance"}])
    assert out["tasks"] == []
    assert {f["reason"] for f in out["failures"]} == {"DistinctInstance placement constraint unsatisfied."}
    assert sorted(f["arn"] for f in out["failures"]) == instances

    # spread over instances, one call at a time: always the emptiest.
    for _ in range(6):
        before = count(live(ecs), "sp")
        out = run(ecs, group="sp", placementStrategy=[{"type": "spread", "field": "instanceId"}])
        [task] = out["tasks"]
        least = min(before.get(i, 0) for i in instances)
        assert before.get(task["containerInstanceArn"], 0) == least, (before, task["containerInstanceArn"])
    assert sorted(count(live(ecs), "sp").values()) == [2, 2, 2]
    # Two stopped on one instance: the next two calls refill it.
    victim = instances[1]
    stop(ecs, [t["taskArn"] for t in live(ecs) if t["group"] == "sp" and t["containerInstanceArn"] == victim])
    for _ in range(2):
        [task] = run(ecs, group="sp", placementStrategy=[{"type": "spread", "field": "instanceId"}])["tasks"]
        assert task["containerInstanceArn"] == victim
    assert sorted(count(live(ecs), "sp").values()) == [2, 2, 2]

    # spread over zones across calls (each zone is one instance here).
    for n in range(3):
        out = run(ecs, group="zones", count=1,
                  placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}])
        assert out["failures"] == []
    assert sorted(count(live(ecs), "zones").values()) == [1, 1, 1]

    # task:group sees tasks placed by earlier calls, whoever placed them.
    cache_host = next(i for i in instances if zone[i] == "us-east-1c")
    cache = ecs.start_task(cluster="default", taskDefinition="seq", group="cache",
                           containerInstances=[cache_host])["tasks"]
    check_invariants(ecs)
    for _ in range(2):
        [near] = run(ecs, group="near", placementConstraints=[
            {"type": "memberOf", "expression": "task:group == cache"}])["tasks"]
        assert near["containerInstanceArn"] == cache_host
        [away] = run(ecs, group="away", placementConstraints=[
            {"type": "memberOf", "expression": "not(task:group == cache)"}])["tasks"]
        assert away["containerInstanceArn"] != cache_host
    stop(ecs, [cache[0]["taskArn"]])
    out = run(ecs, group="near", placementConstraints=[
        {"type": "memberOf", "expression": "task:group == cache"}])
    assert out["tasks"] == []
    assert {f["reason"] for f in out["failures"]} == {"MemberOf placement constraint unsatisfied."}

    # Memory: the small agent takes hogs until it is full, never more.
    small = next(i for i in instances if zone[i] == "us-east-1b")
    _, memory_left, _, _ = remaining(ecs)[small]
    fits = memory_left // HOG["memory"]
    pin = [{"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1b"}]
    placed = 0
    for _ in range(fits + 1):
        out = run(ecs, family="hog", group="hog", placementConstraints=pin)
        placed += len(out["tasks"])
        if not out["tasks"]:
            reasons = {f["arn"]: f["reason"] for f in out["failures"]}
            assert reasons.pop(small) == "RESOURCE:MEMORY", out["failures"]
            assert set(reasons.values()) == {"MemberOf placement constraint unsatisfied."}
    assert placed == fits
    assert remaining(ecs)[small][1] == memory_left - fits * HOG["memory"]

    # Every task placed runs for real.
    tasks = all_running(ecs)
    assert {t["containerInstanceArn"] for t in tasks} == set(instances)
    check_invariants(ecs)
    stop(ecs, [t["taskArn"] for t in tasks if t["group"] == "hog"])


def test_a_service_scaled_in_steps_keeps_one_task_per_instance(three):
    server, ecs, zone = three
    instances = sorted(zone)
    ecs.create_service(cluster="default", serviceName="steps", taskDefinition="seq", desiredCount=1,
                       placementConstraints=[{"type": "distinctInstance"}])

    def placed(n):
        def check():
            tasks = [t for t in live(ecs) if t["group"] == "service:steps"]
            return tasks if len(tasks) == n else None
        return wait_for(check, 60, what=f"{n} service tasks")

    placed(1)
    check_invariants(ecs)
    for desired in (2, 3):
        ecs.update_service(cluster="default", service="steps", desiredCount=desired)
        tasks = placed(desired)
        check_invariants(ecs)
    assert sorted(t["containerInstanceArn"] for t in tasks) == instances
    # A fourth has nowhere to go: the service says why, and places nothing.
    ecs.update_service(cluster="default", service="steps", desiredCount=4)

    def event():
        s = ecs.describe_services(cluster="default", services=["steps"])["services"][0]
        return next((e["message"] for e in s["events"]
                     if "DistinctInstance placement constraint unsatisfied" in e["message"]), None)
    wait_for(event, 30, what="the placement failure event")
    assert len(placed(3)) == 3
    # A RunTask of the service's group on no instance at all.
    out = ecs.run_task(cluster="default", taskDefinition="seq", group="service:steps",
                       placementConstraints=[{"type": "distinctInstance"}])
    assert out["tasks"] == []
    check_invariants(ecs)
    # Scaled back in steps, then up again: still one per instance.
    ecs.update_service(cluster="default", service="steps", desiredCount=1)
    placed(1)
    ecs.update_service(cluster="default", service="steps", desiredCount=3)
    tasks = placed(3)
    check_invariants(ecs)
    assert sorted(t["containerInstanceArn"] for t in tasks) == instances

    def steady():
        s = ecs.describe_services(cluster="default", services=["steps"])["services"][0]
        return s["runningCount"] == 3 and s
    wait_for(steady, 120, interval=0.5, what="three running service tasks")
    ecs.update_service(cluster="default", service="steps", desiredCount=0)
    ecs.delete_service(cluster="default", service="steps")
