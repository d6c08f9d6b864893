"""CloudWatch Logs and the awslogs driver: the Logs API through the real aws
CLI and boto3, tasks whose output is shipped by the agent, exactly-once
delivery across kill -9 of the agent and of the server, and AWS's answers to
bad input."""
import json
import os
import queue
import shutil
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from berth_harness import (wait_for, AgentProcess, Berth, REGION, check_output, load_model,
                           remove_task_containers)
from conftest import instance_ids

MODEL = load_model("logs", "2014-03-28")
LOGS = "Logs_20140328"
DAY_MS = 86_400_000


def now_ms():
    return int(time.time() * 1000)


def raw_checked(server, operation, payload):
    status, body, _ = server.raw("logs", LOGS, operation, payload)
    assert status == 200, body
    check_output(MODEL, operation, body)
    return body


def raw_error(server, operation, payload):
    status, body, _ = server.raw("logs", LOGS, operation, payload)
    assert status == 400, body
    return body["__type"].split("#")[-1], body.get("message", "")


def all_events(logs, group, stream):
    """Every event of a stream via GetLogEvents, paging forward until the
    same token comes back, as AWS documents."""
    events, token = [], None
    while True:
        kwargs = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        page = logs.get_log_events(**kwargs)
        events.extend(page["events"])
        if page["nextForwardToken"] == token:
            return events
        token = page["nextForwardToken"]


def test_groups_streams_events_and_filters(shared_berth):
    server = shared_berth
    server.aws("logs", "create-log-group", "--log-group-name", "/app/web", "--tags", "team=core")
    server.aws("logs", "create-log-stream", "--log-group-name", "/app/web", "--log-stream-name", "a")
    server.aws("logs", "create-log-stream", "--log-group-name", "/app/web", "--log-stream-name", "b")
    t = now_ms() - 60_000
    lines_a = ["INFO start", "ERROR disk full", "ERROR timeout talking to db", "WARN slow",
               json.dumps({"level": "error", "latency": 250}), json.dumps({"level": "info", "latency": 5})]
    events = [{"timestamp": t + i * 10, "message": m} for i, m in enumerate(lines_a)]
    _, out, _ = server.aws("logs", "put-log-events", "--log-group-name", "/app/web",
                           "--log-stream-name", "a", "--log-events", json.dumps(events))
    assert "rejectedLogEventsInfo" not in out
    server.aws("logs", "put-log-events", "--log-group-name", "/app/web", "--log-stream-name", "b",
               "--log-events", json.dumps([{"timestamp": t + 15, "message": "ERROR in b"}]))

    out = raw_checked(server, "DescribeLogGroups", {"logGroupNamePrefix": "/app/"})
    group = out["logGroups"][0]
    assert group["logGroupName"] == "/app/web" and group["arn"].endswith(":log-group:/app/web:*")
    _, tags, _ = server.aws("logs", "list-tags-log-group", "--log-group-name", "/app/web")
    assert tags["tags"] == {"team": "core"}

    out = raw_checked(server, "DescribeLogStreams", {"logGroupName": "/app/web"})
    streams = {s["logStreamName"]: s for s in out["logStreams"]}
    assert streams["a"]["firstEventTimestamp"] == t
    assert streams["a"]["lastEventTimestamp"] == t + 50
    out = raw_checked(server, "DescribeLogStreams", {"logGroupName": "/app/web", "orderBy": "LastEventTime",
                                                     "descending": True})
    assert [s["logStreamName"] for s in out["logStreams"]] == ["a", "b"]

    _, out, _ = server.aws("logs", "get-log-events", "--log-group-name", "/app/web",
                           "--log-stream-name", "a", "--start-from-head")
    assert [e["message"] for e in out["events"]] == lines_a
    assert out["nextForwardToken"].startswith("f/") and out["nextBackwardToken"].startswith("b/")

    def filtered(pattern, **extra):
        args = ["logs", "filter-log-events", "--log-group-name", "/app/web", "--filter-pattern", pattern]
        for k, v in extra.items():
            args += [f"--{k}", v]
        _, out, _ = server.aws(*args)
        return [(e["logStreamName"], e["message"]) for e in out["events"]]

    assert filtered('"ERROR" -timeout') == [("a", "ERROR disk full"), ("b", "ERROR in b")]
    assert filtered('{ $.level = "error" }') == [("a", lines_a[4])]
    assert filtered("{ $.latency > 100 }") == [("a", lines_a[4])]
    assert filtered("?WARN ?INFO") == [("a", "INFO start"), ("a", "WARN slow")]
    assert filtered("ERROR", **{"log-stream-names": "b"}) == [("b", "ERROR in b")]


def test_retention_compaction_removes_old_events(tmp_path):
    server = Berth(tmp_path / "data", extra_args=["--log-compaction-interval", "1"]).start()
    try:
        logs = server.client("logs")
        logs.create_log_group(logGroupName="old")
        logs.create_log_stream(logGroupName="old", logStreamName="s")
        t = now_ms()
        # One batch may span at most 24 hours, so the old events go in apart.
        for events in ([{"timestamp": t - 3 * DAY_MS, "message": "three days"},
                        {"timestamp": t - 2 * DAY_MS, "message": "two days"}],
                       [{"timestamp": t - 1000, "message": "fresh"}]):
            out = logs.put_log_events(logGroupName="old", logStreamName="s", logEvents=events)
            assert "rejectedLogEventsInfo" not in out
        assert len(all_events(logs, "old", "s")) == 3
        server.aws("logs", "put-retention-policy", "--log-group-name", "old", "--retention-in-days", "1")
        assert logs.describe_log_groups(logGroupNamePrefix="old")["logGroups"][0]["retentionInDays"] == 1
        wait_for(lambda: [e["message"] for e in all_events(logs, "old", "s")] == ["fresh"],
                 timeout=20, what="compaction")
        # Now that the group keeps one day, older events are rejected on the way in.
        out = logs.put_log_events(logGroupName="old", logStreamName="s",
                                  logEvents=[{"timestamp": t - DAY_MS - 60_000, "message": "late"},
                                             {"timestamp": t - DAY_MS + 3_600_000, "message": "in time"}])
        assert out["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 0}
    finally:
        server.stop()


def test_bad_input_gets_aws_answers(shared_berth):
    server = shared_berth
    logs = server.client("logs")
    logs.create_log_group(logGroupName="bad")
    logs.create_log_stream(logGroupName="bad", logStreamName="s")
    t = now_ms()
    put = {"logGroupName": "bad", "logStreamName": "s"}

    code, message = raw_error(server, "PutLogEvents", {**put, "logEvents": [
        {"timestamp": t, "message": "later"}, {"timestamp": t - 1000, "message": "earlier"}]})
    assert code == "InvalidParameterException" and "chronological" in message
    code, message = raw_error(server, "PutLogEvents", {**put, "logEvents": [
        {"timestamp": t - i, "message": "x"} for i in range(10_001, 0, -1)]})
    assert code == "InvalidParameterException"
    code, _ = raw_error(server, "PutLogEvents", {**put, "logEvents": [
        {"timestamp": t, "message": "y" * 200_000} for _ in range(6)]})
    assert code == "InvalidParameterException"
    code, message = raw_error(server, "PutLogEvents", {**put, "logEvents": [
        {"timestamp": t - 2 * DAY_MS, "message": "a"}, {"timestamp": t, "message": "b"}]})
    assert code == "InvalidParameterException" and "24 hours" in message
    code, _ = raw_error(server, "PutLogEvents", {**put, "logEvents": []})
    assert code == "InvalidParameterException"
    code, _ = raw_error(server, "PutLogEvents", {"logGroupName": "bad", "logStreamName": "nope",
                                                 "logEvents": [{"timestamp": t, "message": "m"}]})
    assert code == "ResourceNotFoundException"
    assert all_events(logs, "bad", "s") == []  # nothing of the refused batches was stored

    # The age rules reject single events; a batch still spans at most 24 h.
    out = raw_checked(server, "PutLogEvents", {**put, "logEvents": [
        {"timestamp": t - 15 * DAY_MS, "message": "too old"},
        {"timestamp": t - 15 * DAY_MS + 1000, "message": "too old too"}]})
    assert out["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1}
    out = raw_checked(server, "PutLogEvents", {**put, "logEvents": [
        {"timestamp": t, "message": "kept"},
        {"timestamp": t + 3 * 3_600_000, "message": "too new"}]})
    assert out["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 1}
    assert [e["message"] for e in all_events(logs, "bad", "s")] == ["kept"]

    with pytest.raises(ClientError) as e:
        logs.create_log_group(logGroupName="bad")
    assert e.value.response["Error"]["Code"] == "ResourceAlreadyExistsException"
    with pytest.raises(ClientError) as e:
        logs.create_log_group(logGroupName="has space")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        logs.put_retention_policy(logGroupName="bad", retentionInDays=2)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        logs.filter_log_events(logGroupName="bad", filterPattern='{ $.a = ')
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"


# --- the awslogs driver --------------------------------------------------------

def register(ecs, family, command, options, essential=True):
    return ecs.register_task_definition(family=family, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 64, "essential": essential,
        "command": ["sh", "-c", command],
        "logConfiguration": {"logDriver": "awslogs", "options": options}}])["taskDefinition"]


def describe(ecs, arn, cluster="default"):
    return ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]


def numbered(events):
    return [int(e["message"]) for e in events]


def test_hundred_thousand_lines_once_in_order(berth_agent):
    ecs, logs = berth_agent.client("ecs"), berth_agent.client("logs")
    register(ecs, "counter", "seq 1 100000",
             {"awslogs-group": "/ecs/counter", "awslogs-region": REGION,
              "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"})
    arn = ecs.run_task(taskDefinition="counter")["tasks"][0]["taskArn"]
    task_id = arn.rsplit("/", 1)[1]
    wait_for(lambda: describe(ecs, arn)["lastStatus"] == "STOPPED", timeout=120, what="task stopped")
    stream = f"ecs/app/{task_id}"
    expected = list(range(1, 100_001))
    seen = []

    def complete():
        ev = all_events(logs, "/ecs/counter", stream)
        seen[:] = [len(ev)]
        return ev if len(ev) >= 100_000 else None
    # Correctness, not speed: generous for a loaded machine and a debug build.
    try:
        events = wait_for(complete, timeout=180, interval=2, what="all lines")
    except AssertionError as e:
        raise AssertionError(f"{e} (the stream had {seen} events)") from None
    assert numbered(events) == expected
    # The CLI pages the same way.
    _, out, _ = berth_agent.aws("logs", "get-log-events", "--log-group-name", "/ecs/counter",
                                "--log-stream-name", stream, "--start-from-head", "--limit", "1000")
    assert numbered(out["events"]) == expected[:1000]


def test_missing_group_fails_the_start(berth_agent):
    ecs = berth_agent.client("ecs")
    register(ecs, "nogroup", "echo hi", {"awslogs-group": "/does/not/exist",
                                         "awslogs-stream-prefix": "ecs"})
    arn = ecs.run_task(taskDefinition="nogroup")["tasks"][0]["taskArn"]
    task = wait_for(lambda: (lambda t: t if t["lastStatus"] == "STOPPED" else None)(describe(ecs, arn)),
                    timeout=60, what="task stopped")
    assert task["stopCode"] == "TaskFailedToStart"
    reason = task["containers"][0].get("reason", "") + task["stoppedReason"]
    assert "ResourceNotFoundException: The specified log group does not exist." in reason
    assert berth_agent.client("logs").describe_log_groups(logGroupNamePrefix="/does")["logGroups"] == []


def test_tail_follow_shows_live_lines(berth_agent):
    """Lines reach GetLogEvents within 2 s of their print. `aws logs tail
    --follow` (the CLI v2 from Debian) polls FilterLogEvents every 5 s by its
    own design (tail.py `_TIME_TO_SLEEP = 5`), so through it a line shows
    within that poll interval plus Berth's delay."""
    aws2 = shutil.which("aws", path="/usr/bin")
    ecs, logs = berth_agent.client("ecs"), berth_agent.client("logs")
    register(ecs, "ticker", "i=0; while [ $i -lt 300 ]; do echo tick $i; i=$((i+1)); usleep 100000; done",
             {"awslogs-group": "/ecs/ticker", "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"})
    arn = ecs.run_task(taskDefinition="ticker")["tasks"][0]["taskArn"]
    stream = f"ecs/app/{arn.rsplit('/', 1)[1]}"
    wait_for(lambda: describe(ecs, arn)["lastStatus"] == "RUNNING", timeout=60, what="running")

    # Visibility through GetLogEvents: print time (Docker's timestamp) to seen.
    lags, seen = [], set()
    deadline = time.time() + 8
    while time.time() < deadline:
        for e in all_events(logs, "/ecs/ticker", stream):
            if e["message"] not in seen:
                seen.add(e["message"])
                lags.append(time.time() * 1000 - e["timestamp"])
        time.sleep(0.05)
    fresh = lags[len(lags) // 2:]  # lines printed while we watched
    assert fresh and max(fresh) < 2000, sorted(fresh)[-5:]

    if aws2 is None:
        pytest.skip("the aws CLI v2 (Debian's awscli) is not installed")
    env = berth_agent.cli_env()
    # CLI v2 before 2.13 ignores AWS_ENDPOINT_URL, so name the endpoint.
    proc = subprocess.Popen([aws2, "--endpoint-url", berth_agent.endpoint,
                             "logs", "tail", "/ecs/ticker", "--follow", "--format", "short"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put((time.time(), l)) for l in proc.stdout], daemon=True).start()
    try:
        arrived = []
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                at, line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if "tick" in line:
                arrived.append((at, int(line.split("tick ")[1])))
        assert arrived, proc.stderr.read() if proc.poll() is not None else "no lines"
        numbers = [n for _, n in arrived]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        # Lines printed after tail started arrive within its poll period + 2 s.
        start_events = {int(e["message"].split()[1]): e["timestamp"] for e in all_events(logs, "/ecs/ticker", stream)}
        late = [at * 1000 - start_events[n] for at, n in arrived[-20:]]
        assert max(late) < 7000, late
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def split_server(tmp_path, test_image):
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


def test_kill9_agent_then_server_loses_and_repeats_nothing(split_server, tmp_path):
    server, agents = split_server
    ecs, logs = server.client("ecs"), server.client("logs")
    ecs.create_cluster(clusterName="default")
    agent = AgentProcess(server, "shipper", "default", tmp_path / "agent").start()
    agents.append(agent)
    wait_for(lambda: ecs.list_container_instances()["containerInstanceArns"], what="agent registered")
    total = 20_000
    register(ecs, "steady", f"i=1; while [ $i -le {total} ]; do echo $i; i=$((i+1)); usleep 1000; done",
             {"awslogs-group": "/ecs/steady", "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"})
    arn = ecs.run_task(taskDefinition="steady")["tasks"][0]["taskArn"]
    stream = f"ecs/app/{arn.rsplit('/', 1)[1]}"
    wait_for(lambda: describe(ecs, arn)["lastStatus"] == "RUNNING", timeout=60, what="running")
    wait_for(lambda: len(all_events(logs, "/ecs/steady", stream)) > 500, what="first lines shipped")

    agent.kill9()
    time.sleep(2)
    agent.start()
    wait_for(lambda: len(all_events(logs, "/ecs/steady", stream)) > 3000, timeout=60, what="shipping resumed")
    server.kill9()
    time.sleep(2)
    server.start()
    logs = server.client("logs")
    ecs = server.client("ecs")
    before = len(all_events(logs, "/ecs/steady", stream))
    assert before < total, "the task finished before the server was killed; make it longer"

    wait_for(lambda: describe(ecs, arn)["lastStatus"] == "STOPPED", timeout=180, what="task stopped")
    events = wait_for(lambda: (lambda ev: ev if len(ev) >= total else None)(
        all_events(logs, "/ecs/steady", stream)), timeout=60, interval=1, what="every line")
    assert numbered(events) == list(range(1, total + 1))
