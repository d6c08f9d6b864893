"""Issue 16 item 5: the agent protocol. Registering an agent needs the IAM
permission berth:RegisterAgent (which ecs:* does not grant) and the
operator's agent registration token; a registered instance can be registered
again only by its own agent; role credentials go only to the agent running
the task. Driven with raw signed calls, the aws CLI and real `berth agent`
processes."""
import json
import os
import stat
import time

import pytest

from berth_harness import (ACCESS_KEY, ACCOUNT, SECRET_KEY, AgentProcess, Berth,
                           remove_task_containers, wait_for)
from conftest import instance_ids

AGENT = "BerthAgentV1"
DEFAULT_ARN = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/default"


def policy(*actions):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": list(actions), "Resource": "*"}]})


def user(server, name, *actions):
    server.aws("iam", "create-user", "--user-name", name)
    server.aws("iam", "put-user-policy", "--user-name", name, "--policy-name", "p",
               "--policy-document", policy(*actions))
    _, out, _ = server.aws("iam", "create-access-key", "--user-name", name)
    return out["AccessKey"]["AccessKeyId"], out["AccessKey"]["SecretAccessKey"]


def register(server, key, secret, name, token, cluster="default"):
    """A raw BerthAgentV1.RegisterAgent call; (status, body)."""
    payload = {"cluster": cluster, "name": name, "totalResources": [], "attributes": [],
               "versionInfo": {}}
    if token is not None:
        payload["registrationToken"] = token
    status, body, _ = server.raw("ecs", AGENT, "RegisterAgent", payload, access_key=key,
                                 secret_key=secret)
    return status, body


def refused(status, body):
    assert status == 400, (status, body)
    assert body["__type"].rsplit("#", 1)[-1] == "AccessDeniedException", body
    return body["message"]


def test_an_ecs_user_cannot_register_or_take_over_an_agent(berth_agent):
    server = berth_agent
    ecs = server.client("ecs")
    [local_arn] = ecs.list_container_instances()["containerInstanceArns"]
    local = ecs.describe_container_instances(containerInstances=[local_arn])["containerInstances"][0]
    host = local["ec2InstanceId"]
    token = server.agent_token()
    assert stat.S_IMODE(os.stat(server.agent_token_path).st_mode) == 0o600
    assert len(token) >= 32

    # ecs:* does not grant berth:RegisterAgent, whatever the token.
    key, secret = user(server, "ecs-admin", "ecs:*")
    for t in (None, "wrong", token):
        message = refused(*register(server, key, secret, "intruder", t))
        assert message == (
            f"User: arn:aws:iam::{ACCOUNT}:user/ecs-admin is not authorized to perform: "
            f"berth:RegisterAgent on resource: {DEFAULT_ARN} because no identity-based policy "
            "allows the berth:RegisterAgent action"), message

    # With berth:RegisterAgent: the token is required ...
    key, secret = user(server, "operator", "ecs:*", "berth:RegisterAgent")
    message = refused(*register(server, key, secret, host, None))
    assert message.startswith("RegisterAgent needs the agent registration token"), message
    assert "agent-token" in message and "--registration-token-file" in message
    message = refused(*register(server, key, secret, host, "not-the-token"))
    assert message.startswith("The agent registration token is wrong"), message
    # ... and even with it, the in-process agent's live instance is not
    # taken over by naming it: the operator must deregister it first.
    message = refused(*register(server, key, secret, host, token))
    assert local_arn in message
    assert (f"aws ecs deregister-container-instance --cluster default "
            f"--container-instance {local_arn} --force") in message
    # Root's keys do not take it over either.
    refused(*register(server, ACCESS_KEY, SECRET_KEY, host, token))

    # The permission and the token do register a new host (in its own
    # cluster, so tasks of `default` stay on the in-process agent) ...
    ecs.create_cluster(clusterName="side")
    status, side = register(server, key, secret, "side-host", token, cluster="side")
    assert status == 200, side
    assert side["accessKeyId"].startswith("ABIA")
    # ... whose credential registers nothing but its own instance.
    message = refused(*register(server, side["accessKeyId"], side["secretAccessKey"], host,
                                token, cluster="side"))
    assert message.startswith("An agent credential can register only its own container "
                              f"instance {side['containerInstanceArn']} again"), message
    message = refused(*register(server, side["accessKeyId"], side["secretAccessKey"], host, token))
    assert "not in this cluster" in message, message

    # The in-process agent kept its instance and still runs tasks.
    ecs.register_task_definition(family="tiny", containerDefinitions=[
        {"name": "c", "image": "berth-test/busybox:latest", "memory": 32,
         "command": ["sleep", "600"]}])
    task = ecs.run_task(taskDefinition="tiny")["tasks"][0]
    assert task["containerInstanceArn"] == local_arn

    def running():
        t = ecs.describe_tasks(tasks=[task["taskArn"]])["tasks"][0]
        return t if t["lastStatus"] == "RUNNING" else None
    wait_for(running, 60, what="task RUNNING on the in-process agent")
    described = ecs.describe_container_instances(containerInstances=[local_arn])["containerInstances"][0]
    assert described["status"] == "ACTIVE" and described["agentConnected"]

    # The other host's agent credential gets no role credentials, secrets or
    # logs of a task it does not run, and PollTasks lists none of them.
    for operation, payload in [
        ("GetTaskRoleCredentials", {"taskArn": task["taskArn"], "which": "task"}),
        ("GetTaskRoleCredentials", {"taskArn": task["taskArn"], "which": "execution"}),
        ("ResolveSecrets", {"taskArn": task["taskArn"]}),
        ("GetNetworkPolicy", {"taskArn": task["taskArn"]}),
        ("OpenLogStream", {"taskArn": task["taskArn"], "region": "us-east-1",
                           "logGroupName": "g", "logStreamName": "s"}),
        ("SubmitTaskState", {"taskArn": task["taskArn"], "lastStatus": "STOPPED",
                             "containers": []}),
    ]:
        status, body, _ = server.raw("ecs", AGENT, operation, payload,
                                     access_key=side["accessKeyId"],
                                     secret_key=side["secretAccessKey"])
        message = refused(status, body)
        assert message == "The task does not run on this agent's container instance.", (operation, message)
    status, polled, _ = server.raw("ecs", AGENT, "PollTasks", {"sinceRevision": 0, "waitSeconds": 0},
                                   access_key=side["accessKeyId"], secret_key=side["secretAccessKey"])
    assert status == 200 and polled["tasks"] == [], polled
    # Users are refused the agent operations outright.
    status, body, _ = server.raw("ecs", AGENT, "GetTaskRoleCredentials",
                                 {"taskArn": task["taskArn"], "which": "task"},
                                 access_key=key, secret_key=secret)
    refused(status, body)
    assert running()


@pytest.fixture
def remote(tmp_path, test_image):
    """A server without an in-process agent, and the agents a test starts."""
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


def exits_with(agent, timeout=60):
    """Starts an agent that must fail; waits for it to exit and answers what
    it printed."""
    before = agent.log_path.stat().st_size if agent.log_path.exists() else 0
    agent.start()
    try:
        code = agent.proc.wait(timeout=timeout)
    except Exception:
        agent.stop()
        raise AssertionError(f"the agent did not exit: {agent.logs()}")
    log = agent.log_path.read_bytes()[before:].decode(errors="replace")
    assert code != 0, log
    return log


def test_a_standalone_agent_needs_the_token_and_restarts_as_itself(remote, tmp_path):
    server, agents = remote
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="remote")

    # A wrong token: the agent stops at once, saying why.
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    log = exits_with(AgentProcess(server, "r1", "remote", tmp_path / "agent-bad",
                                  token_file=wrong))
    assert "AccessDeniedException: The agent registration token is wrong" in log, log
    # No token at all.
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    log = exits_with(AgentProcess(server, "r1", "remote", tmp_path / "agent-bad",
                                  token_file=empty))
    assert "is empty" in log, log
    # An IAM user allowed ecs:* but not berth:RegisterAgent.
    key, secret = user(server, "ecs-only", "ecs:*")
    log = exits_with(AgentProcess(server, "r1", "remote", tmp_path / "agent-bad",
                                  access_key=key, secret_key=secret))
    assert "not authorized to perform: berth:RegisterAgent" in log, log
    assert ecs.list_container_instances(cluster="remote")["containerInstanceArns"] == []

    # The right token (copied from <data-dir>/agent-token) and an operator.
    key, secret = user(server, "operator", "berth:RegisterAgent")
    first = AgentProcess(server, "r1", "remote", tmp_path / "agent-r1",
                         access_key=key, secret_key=secret).start()
    agents.append(first)

    def connected():
        arns = ecs.list_container_instances(cluster="remote")["containerInstanceArns"]
        if len(arns) != 1:
            return None
        [i] = ecs.describe_container_instances(cluster="remote", containerInstances=arns)["containerInstances"]
        return i if i["agentConnected"] else None
    instance = wait_for(connected, 30, what="the agent's instance")
    assert instance["ec2InstanceId"] == "r1"
    identity_path = tmp_path / "agent-r1" / "agent-identity.json"
    assert stat.S_IMODE(os.stat(identity_path).st_mode) == 0o600
    key_before = json.loads(identity_path.read_text())["accessKeyId"]

    ecs.register_task_definition(family="remote-tiny", containerDefinitions=[
        {"name": "c", "image": "berth-test/busybox:latest", "memory": 32,
         "command": ["sleep", "600"]}])
    task = ecs.run_task(cluster="remote", taskDefinition="remote-tiny")["tasks"][0]

    def status(want):
        t = ecs.describe_tasks(cluster="remote", tasks=[task["taskArn"]])["tasks"][0]
        return t if t["lastStatus"] == want else None
    running = wait_for(lambda: status("RUNNING"), 60, what="task RUNNING on the stand-alone agent")
    container = running["containers"][0]["runtimeId"]

    # Another `berth agent` under the same name (its own data dir, root's
    # keys, the right token) is refused and told how to proceed.
    log = exits_with(AgentProcess(server, "r1", "remote", tmp_path / "agent-r1-copy"))
    assert "deregister-container-instance" in log and "--force" in log, log
    assert instance["containerInstanceArn"] in log

    # Restarted, the agent registers again with its own credential (the
    # account keys it is given now are not even valid): the same instance,
    # and it adopts its running task.
    first.stop()
    agents.remove(first)
    again = AgentProcess(server, "r1", "remote", tmp_path / "agent-r1",
                         access_key="AKIANOTAVALIDKEY0000", secret_key="nope").start()
    agents.append(again)
    wait_for(lambda: again.log_path.read_text(errors="replace").count(
        "registered container instance") == 2, 30, what="re-registration")
    # It kept its credential (a lost answer would have cost nothing).
    assert json.loads(identity_path.read_text())["accessKeyId"] == key_before
    same = wait_for(connected, 30, what="the instance after the restart")
    assert same["containerInstanceArn"] == instance["containerInstanceArn"]
    assert ecs.list_container_instances(cluster="remote")["containerInstanceArns"] == [
        instance["containerInstanceArn"]]
    time.sleep(2)
    kept = status("RUNNING")
    assert kept and kept["containers"][0]["runtimeId"] == container, kept

    # Once the operator deregisters the instance, its agent stops; started
    # again, its saved credential registers nothing, so it registers anew
    # with the account credentials: a new instance under the same name.
    server.aws("ecs", "deregister-container-instance", "--cluster", "remote",
               "--container-instance", instance["containerInstanceArn"], "--force")
    assert again.proc.wait(timeout=40) == 0, again.logs()
    before = again.log_path.stat().st_size
    reborn = AgentProcess(server, "r1", "remote", tmp_path / "agent-r1").start()
    agents.append(reborn)
    fresh = wait_for(connected, 30, what="the re-registered agent's instance")
    assert fresh["containerInstanceArn"] != instance["containerInstanceArn"]
    assert fresh["ec2InstanceId"] == "r1"
    log = reborn.log_path.read_bytes()[before:].decode(errors="replace")
    assert "registering with the account credentials" in log, log
