"""Several agents on one host share the task endpoint (169.254.170.2:80):
the first serves it, the others register their tasks with it, so every
agent offers task roles and each task gets its own role's credentials;
when the serving agent goes away another takes over. Driven with boto3 and
the aws CLI against the real binary, `berth agent` processes and Docker."""
import json
import subprocess
import time

from berth_harness import (ACCOUNT, AgentProcess, Berth, create_task_role,
                           remove_task_containers, wait_for)

IMAGE = "berth-test/busybox:latest"
TASK_ROLE_CAPABILITY = "com.amazonaws.ecs.capability.task-iam-role"
# Static busybox's wget crashes resolving the default port (no NSS): the
# URL names port 80. One line a second: the credentials, or FAILED.
FETCH = ("while true; do out=$(wget -qO- http://169.254.170.2:80$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI "
         "2>/dev/null) || out=FAILED; echo \"@@$out\"; sleep 1; done")


def instances(ecs, count):
    def listed():
        arns = ecs.list_container_instances(cluster="default")["containerInstanceArns"]
        if len(arns) < count:
            return None
        return ecs.describe_container_instances(cluster="default", containerInstances=arns)[
            "containerInstances"]
    return wait_for(listed, 60, what=f"{count} container instances")


def offers_task_roles(instance):
    return any(a["name"] == TASK_ROLE_CAPABILITY for a in instance.get("attributes", []))


def start_on(ecs, family, instance_arn):
    out = ecs.start_task(cluster="default", taskDefinition=family, containerInstances=[instance_arn])
    assert out["failures"] == [], out["failures"]
    return out["tasks"][0]["taskArn"]


def wait_running(ecs, arn):
    def running():
        [task] = ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"]
        assert task["lastStatus"] != "STOPPED", task.get("stoppedReason")
        return task if task["lastStatus"] == "RUNNING" else None
    return wait_for(running, 90, what="the task RUNNING")


def answers(task, skip=0):
    """What the task's container got from the endpoint, line by line
    (after its first `skip` lines)."""
    container = task["containers"][0]["runtimeId"]
    out = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
    lines = [line[2:] for line in out.splitlines() if line.startswith("@@")]
    return lines[skip:]


def credentials_of(task, skip=0, timeout=30):
    """The first credentials the task's container got (after `skip` lines)."""
    def got():
        for line in answers(task, skip):
            if line.startswith("{"):
                return json.loads(line)
        return None
    return wait_for(got, timeout, what="the task's credentials")


def register_role_task(server, ecs, name):
    role = create_task_role(server, name, ["sts:GetCallerIdentity"])
    ecs.register_task_definition(family=name, taskRoleArn=role, containerDefinitions=[{
        "name": "app", "image": IMAGE, "memory": 16, "stopTimeout": 2,
        "command": ["sh", "-c", FETCH]}])
    return role


def check_identity(server, task, creds, role_name):
    env = server.cli_env(creds["AccessKeyId"], creds["SecretAccessKey"])
    env["AWS_SESSION_TOKEN"] = creds["Token"]
    _, who, _ = server.aws("sts", "get-caller-identity", env=env)
    task_id = task["taskArn"].rsplit("/", 1)[1]
    assert who["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{task_id}", who


def test_two_agents_on_one_host_both_run_tasks_with_task_roles(tmp_path, test_image):
    server = Berth(tmp_path / "data", agent=True).start()
    agent = AgentProcess(server, "host-2", "default", tmp_path / "agent-2")
    ids = []
    try:
        agent.start()
        ecs = server.client("ecs")
        found = instances(ecs, 2)
        ids = [i["containerInstanceArn"].rsplit("/", 1)[1] for i in found]
        # The second agent cannot bind 169.254.170.2:80, and offers task
        # roles all the same.
        for instance in found:
            assert offers_task_roles(instance), (instance["ec2InstanceId"], agent.logs())
        in_process = next(i for i in found if i["ec2InstanceId"] != "host-2")
        standalone = next(i for i in found if i["ec2InstanceId"] == "host-2")

        role_a = register_role_task(server, ecs, "role-a")
        role_b = register_role_task(server, ecs, "role-b")
        task_a = wait_running(ecs, start_on(ecs, "role-a", in_process["containerInstanceArn"]))
        task_b = wait_running(ecs, start_on(ecs, "role-b", standalone["containerInstanceArn"]))
        assert task_b["containerInstanceArn"] == standalone["containerInstanceArn"]

        creds_a, creds_b = credentials_of(task_a), credentials_of(task_b)
        assert creds_a["RoleArn"] == role_a and creds_b["RoleArn"] == role_b
        assert creds_a["AccessKeyId"] != creds_b["AccessKeyId"]
        check_identity(server, task_a, creds_a, "role-a")
        check_identity(server, task_b, creds_b, "role-b")
        for task in (task_a, task_b):
            ecs.stop_task(cluster="default", task=task["taskArn"])
    finally:
        agent.stop()
        server.stop()
        remove_task_containers(ids)


def test_when_the_serving_agent_goes_another_takes_over(tmp_path, test_image):
    server = Berth(tmp_path / "data").start()
    first = AgentProcess(server, "host-1", "default", tmp_path / "agent-1")
    second = AgentProcess(server, "host-2", "default", tmp_path / "agent-2")
    ids = []
    try:
        ecs = server.client("ecs")
        ecs.create_cluster(clusterName="default")
        first.start()
        instances(ecs, 1)
        second.start()
        found = instances(ecs, 2)
        ids = [i["containerInstanceArn"].rsplit("/", 1)[1] for i in found]
        assert all(offers_task_roles(i) for i in found), (first.logs(), second.logs())
        by_name = {i["ec2InstanceId"]: i["containerInstanceArn"] for i in found}

        register_role_task(server, ecs, "role-one")
        register_role_task(server, ecs, "role-two")
        task_one = wait_running(ecs, start_on(ecs, "role-one", by_name["host-1"]))
        task_two = wait_running(ecs, start_on(ecs, "role-two", by_name["host-2"]))
        assert credentials_of(task_one)["RoleArn"].endswith(":role/role-one")
        assert credentials_of(task_two)["RoleArn"].endswith(":role/role-two")

        # The first agent (the one serving, unless another agent of this
        # host already did) dies: the second's task is served on.
        first.kill9()
        seen_two = len(answers(task_two))
        time.sleep(3)
        fresh = answers(task_two, seen_two)
        assert fresh and all(line.startswith("{") for line in fresh[1:]), fresh
        assert credentials_of(task_two, seen_two)["RoleArn"].endswith(":role/role-two")
        # The dead agent's task is served no more ...
        seen_one = len(answers(task_one))
        wait_for(lambda: "FAILED" in answers(task_one, seen_one), 15,
                 what="the dead agent's task refused")
        # ... until its agent comes back and registers it again.
        first.start()
        seen_one = len(answers(task_one))
        creds = credentials_of(task_one, seen_one, timeout=60)
        assert creds["RoleArn"].endswith(":role/role-one")
        check_identity(server, task_one, creds, "role-one")
        for task in (task_one, task_two):
            ecs.stop_task(cluster="default", task=task["taskArn"])
    finally:
        first.stop()
        second.stop()
        server.stop()
        remove_task_containers(ids)
