"""Issue 18 acceptance: several `berth server`s over a real three-member etcd
and a shared directory. The server leading the controllers is killed (-9)
in the middle of a rolling deployment and over ten rounds of writes by eight
clients; an agent's server is killed under it; an etcd member stops and comes
back; images and log events outlive the server that took them.

One installation (three servers, two agents with real Docker) serves the
whole module; each test leaves every server running."""
import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from berth_harness import AgentProcess, BerthServer, docker, remove_task_containers, wait_for

pytestmark = pytest.mark.xdist_group("ha")

TTL = 3
CLUSTER = "ha"
LOOP = "trap 'exit 0' TERM; while true; do sleep 1; done"
TASK_ARN = "com.amazonaws.ecs.task-arn"
FAMILY = "com.amazonaws.ecs.task-definition-family"


class Installation:
    """Three servers on one etcd cluster and one shared directory, and the
    agents that joined them."""

    def __init__(self, etcd, base: Path):
        self.etcd = etcd
        self.base = base
        shared = base / "shared"
        self.servers = [BerthServer(shared, etcd.endpoints, f"s{i}", leader_ttl=TTL) for i in range(3)]
        self.agents = []
        self._clients = {}

    def start(self):
        # All at once: they race to create the shared directory's keys.
        for s in self.servers:
            s.start(wait=False)
        for s in self.servers:
            s.wait_healthy()
        return self

    @property
    def urls(self):
        return ",".join(s.endpoint for s in self.servers)

    def client(self, server, service):
        """A cached boto3 client of `server` (made in the calling thread)."""
        key = (server.server_id, service)
        if key not in self._clients:
            self._clients[key] = server.client(service)
        return self._clients[key]

    def call(self, service, operation, /, **kwargs):
        """`operation` through the first running server that answers."""
        last = None
        for s in self.servers:
            if not s.alive():
                continue
            try:
                return getattr(self.client(s, service), operation)(**kwargs)
            except BotoCoreError as e:  # the server died under the call
                last = e
        raise AssertionError(f"no server answered {operation}: {last!r}")

    def leaders(self):
        return [s for s in self.servers if s.leads()]

    def wait_leader(self, timeout=4 * TTL):
        return wait_for(lambda: (lambda ls: ls[0] if len(ls) == 1 else None)(self.leaders()),
                        timeout, interval=0.05, what="exactly one leading server")

    def kill_leader(self):
        """Kills the leader (-9); returns it, its successor and the seconds
        until the successor's log said it leads."""
        leader = self.wait_leader()
        leader.kill9()
        killed = time.time()
        successor = wait_for(lambda: (self.leaders() or [None])[0], 6 * TTL, interval=0.05,
                             what="a new leader")
        return leader, successor, time.time() - killed

    def heal(self):
        """Restarts any server a failed test left dead."""
        for s in self.servers:
            if not s.alive():
                s.start()
        self.wait_leader()

    def presence(self):
        """Which server each agent's container instance is connected to,
        as the servers' shared presence entries in etcd say."""
        prefix = "/berth#agents/"
        lines = self.etcd.etcdctl("get", "--prefix", prefix).stdout.splitlines()
        return {k[len(prefix):]: v for k, v in zip(lines[0::2], lines[1::2])}

    def server(self, server_id):
        return next(s for s in self.servers if s.server_id == server_id)


def connected(ha, count):
    arns = ha.call("ecs", "list_container_instances", cluster=CLUSTER)["containerInstanceArns"]
    if len(arns) != count:
        return None
    described = ha.call("ecs", "describe_container_instances", cluster=CLUSTER,
                        containerInstances=arns)["containerInstances"]
    return described if all(i["agentConnected"] for i in described) else None


@pytest.fixture(scope="module")
def ha(etcd_cluster, tmp_path_factory, test_image):
    base = tmp_path_factory.mktemp("ha")
    inst = Installation(etcd_cluster, base).start()
    ids = []
    try:
        inst.call("ecs", "create_cluster", clusterName=CLUSTER)
        for i in range(2):
            inst.agents.append(AgentProcess(
                inst.servers[0], f"ha-{i}", CLUSTER, base / f"agent-{i}",
                args=["--memory", "2048", "--cpu", "2048"], server=inst.urls).start())
        described = wait_for(lambda: connected(inst, 2), 30, interval=0.1, what="2 agents")
        ids = [i["containerInstanceArn"].rsplit("/", 1)[1] for i in described]
        yield inst
    finally:
        for a in inst.agents:
            a.stop()
        for s in inst.servers:
            s.stop()
        remove_task_containers(ids)


def register(ha, family, version, command=LOOP):
    return ha.call("ecs", "register_task_definition", family=family, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 32, "cpu": 16,
        "command": ["sh", "-c", command], "environment": [{"name": "VERSION", "value": str(version)}],
    }])["taskDefinition"]


def steady(ha, name, count, task_definition):
    s = ha.call("ecs", "describe_services", cluster=CLUSTER, services=[name])["services"][0]
    ok = (len(s["deployments"]) == 1 and s["deployments"][0]["rolloutState"] == "COMPLETED"
          and s["runningCount"] == count and s["pendingCount"] == 0
          and s["taskDefinition"].endswith(task_definition))
    return s if ok else None


def containers(label, value):
    """{task ARN: {container ids}} and the running ids, of containers with label=value."""
    out = docker("ps", "-a", "--no-trunc", "--filter", f"label={label}={value}",
                 "--format", '{{.ID}}\t{{.Label "%s"}}\t{{.State}}' % TASK_ARN)
    by_task, running = {}, []
    for line in out.splitlines():
        cid, task, state = line.split("\t")
        by_task.setdefault(task, set()).add(cid)
        if state == "running":
            running.append(cid)
    return by_task, running


class Writers:
    """Eight clients putting SSM parameters of distinct names, each through
    its own server, moving to the next when its server cannot be reached."""

    def __init__(self, ha, count=8):
        self.servers = ha.servers
        # One client per (writer, server), made here: boto3 builds clients
        # unsafely from several threads.
        self.clients = [[s.client("ssm") for s in ha.servers] for _ in range(count)]
        self.round = 0
        self.acked = []          # (name, value, index of the server that acknowledged it)
        self.unreachable = 0
        self.refused = []        # errors a running server answered
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(count)]

    def run(self, i):
        server, n = i % len(self.servers), 0
        while not self.stopping.is_set():
            name, value = f"/ha/w{i}/r{self.round}/{n}", f"{i}.{self.round}.{n}"
            try:
                self.clients[i][server].put_parameter(Name=name, Value=value, Type="String")
                self.acked.append((name, value, server))
            except BotoCoreError:
                self.unreachable += 1
                server = (server + 1) % len(self.servers)
            except ClientError as e:
                self.refused.append((name, self.servers[server].server_id, str(e)))
                server = (server + 1) % len(self.servers)
            n += 1
            time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=30)

    def missing(self):
        """Acknowledged writes not read back (each through a server other
        than the one that acknowledged it), or read with another value."""
        wrong, checked = [], []
        by_server = {}
        for name, value, server in self.acked:
            by_server.setdefault(server, []).append((name, value))

        # Readers made here, not in the threads (see above).
        readers = [s.client("ssm") for s in self.servers]

        def check(server, items):
            reader = readers[(server + 1) % len(self.servers)]
            for k in range(0, len(items), 10):
                batch = dict(items[k:k + 10])
                got = reader.get_parameters(Names=list(batch))
                found = {p["Name"]: p["Value"] for p in got["Parameters"]}
                wrong.extend((n, v, found.get(n)) for n, v in batch.items() if found.get(n) != v)
                checked.extend(batch)

        threads = [threading.Thread(target=check, args=item) for item in by_server.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(checked) == len(self.acked), "reading the writes back did not finish"
        return wrong


class DeploymentSampler:
    """Samples a service's tasks through the API (any running server) and
    its containers through Docker every 200 ms."""

    def __init__(self, ha, service, family):
        self.ha, self.service, self.family = ha, service, family
        # Clients for the sampling thread, made in this one.
        self.ecs = [s.client("ecs") for s in ha.servers]
        self.not_stopped = []    # tasks whose lastStatus is not STOPPED, per API sample
        self.healthy = []        # tasks desired and last RUNNING, per API sample
        self.running = []        # running containers, per Docker sample
        self.task_definitions = {}  # every task seen: its task definition
        self.container_ids = {}  # every task seen in Docker: every container id it had
        self.refused = []        # errors a running server answered
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample_api(self):
        for server, ecs in zip(self.ha.servers, self.ecs):
            if not server.alive():
                continue
            try:
                arns = set()
                for desired in ("RUNNING", "STOPPED"):
                    arns.update(ecs.list_tasks(cluster=CLUSTER, serviceName=self.service,
                                               desiredStatus=desired)["taskArns"])
                tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=sorted(arns))["tasks"] if arns else []
            except BotoCoreError:  # the server died under the call
                continue
            except ClientError as e:
                self.refused.append(str(e))
                continue
            for t in tasks:
                self.task_definitions[t["taskArn"]] = t["taskDefinitionArn"]
            self.not_stopped.append(sum(t["lastStatus"] != "STOPPED" for t in tasks))
            self.healthy.append(sum(t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING"
                                    for t in tasks))
            return

    def sample_docker(self):
        by_task, running = containers(FAMILY, self.family)
        for task, ids in by_task.items():
            self.container_ids.setdefault(task, set()).update(ids)
        self.running.append(len(running))

    def run(self):
        while not self.stopping.is_set():
            self.sample_docker()
            self.sample_api()
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=30)


def test_leader_killed_mid_deployment_and_over_ten_rounds_of_writes(ha):
    ha.heal()
    family = "ha-web"
    register(ha, family, 1)
    ha.call("ecs", "create_service", cluster=CLUSTER, serviceName="web", taskDefinition=family,
            desiredCount=4,
            deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 150})
    wait_for(lambda: steady(ha, "web", 4, f"{family}:1"), 60, what="v1 steady")
    register(ha, family, 2)
    takeovers = []
    with Writers(ha) as writers:
        # Round 0: the leader dies while the service rolls to revision 2.
        with DeploymentSampler(ha, "web", family) as sampler:
            started = time.time()
            ha.call("ecs", "update_service", cluster=CLUSTER, service="web",
                    taskDefinition=f"{family}:2")
            wait_for(lambda: any(d.endswith(f"{family}:2") for d in sampler.task_definitions.values()),
                     30, interval=0.05, what="the first revision-2 task")
            assert steady(ha, "web", 4, f"{family}:2") is None, "the deployment ended before the kill"
            leader, successor, took = ha.kill_leader()
            takeovers.append(took)
            leader.start()
            wait_for(lambda: steady(ha, "web", 4, f"{family}:2"), 90, interval=0.2,
                     what="the deployment to complete under the new leader")
            deployed = time.time() - started
            # Old containers stop shortly after the service turned steady.
            wait_for(lambda: len(containers(FAMILY, family)[1]) == 4, 30, what="4 running containers")
            time.sleep(0.5)
        assert successor is not leader
        assert took <= 2 * TTL, f"no new leader within 2 x TTL: {took:.1f}s"
        assert sampler.not_stopped and sampler.running and not sampler.refused, sampler.refused[:5]
        assert max(sampler.not_stopped) <= 6, sampler.not_stopped
        assert max(sampler.running) <= 6, sampler.running
        assert min(sampler.healthy) >= 2, sampler.healthy
        twice = {t: ids for t, ids in sampler.container_ids.items() if len(ids) > 1}
        assert not twice, f"tasks with two containers: {twice}"
        by_revision = {}
        for task, td in sampler.task_definitions.items():
            by_revision.setdefault(td.rsplit(":", 1)[1], []).append(task)
        assert sorted(by_revision) == ["1", "2"] and len(by_revision["1"]) == 4, by_revision
        assert len(by_revision["2"]) == 4, f"duplicate tasks started: {by_revision['2']}"
        for task in by_revision["2"]:
            ids = docker("ps", "-aq", "--filter", f"label={TASK_ARN}={task}").split()
            assert len(ids) == 1, (task, ids)

        # Rounds 1-9: the leader dies again while the clients write.
        for r in range(1, 10):
            writers.round = r
            time.sleep(0.3)
            leader, successor, took = ha.kill_leader()
            takeovers.append(took)
            leader.start()
        time.sleep(0.3)
    print(f"\ndeployment with a leader kill: {deployed:.1f}s; takeovers: "
          + ", ".join(f"{t:.2f}" for t in takeovers)
          + f"; writes acknowledged: {len(writers.acked)}, unreachable: {writers.unreachable}"
          + f"; samples: {len(sampler.not_stopped)} (max not STOPPED {max(sampler.not_stopped)}, "
          f"max running containers {max(sampler.running)}, min healthy {min(sampler.healthy)})")
    assert max(takeovers) <= 2 * TTL, takeovers
    assert not writers.refused, writers.refused[:5]
    rounds = {name.split("/")[3] for name, _, _ in writers.acked}
    assert rounds == {f"r{r}" for r in range(10)}, rounds
    writers_seen = {name.split("/")[2] for name, _, _ in writers.acked}
    assert len(writers_seen) == 8, writers_seen
    wrong = writers.missing()
    assert not wrong, f"{len(wrong)} acknowledged writes lost, e.g. {wrong[:5]}"
    ha.wait_leader()

    ha.call("ecs", "update_service", cluster=CLUSTER, service="web", desiredCount=0)
    ha.call("ecs", "delete_service", cluster=CLUSTER, service="web")


def docker_state(container_id):
    out = json.loads(docker("inspect", container_id))[0]
    return out["State"]["Running"], out["State"]["StartedAt"], out["RestartCount"]


def test_agent_moves_when_its_server_is_killed(ha):
    ha.heal()
    described = wait_for(lambda: connected(ha, 2), 30, what="2 agents connected")
    instance = described[0]["containerInstanceArn"]
    agent = next(a for a in ha.agents if a.name == described[0]["ec2InstanceId"])
    home = ha.server(wait_for(lambda: ha.presence().get(instance), 10, what="the agent's presence"))
    register(ha, "ha-stay", 1)

    def start_task():
        out = ha.call("ecs", "start_task", cluster=CLUSTER, taskDefinition="ha-stay",
                      containerInstances=[instance])
        assert not out["failures"], out["failures"]
        return out["tasks"][0]["taskArn"]

    def running(arns):
        tasks = ha.call("ecs", "describe_tasks", cluster=CLUSTER, tasks=arns)["tasks"]
        return tasks if all(t["lastStatus"] == "RUNNING" for t in tasks) else None

    tasks = [start_task(), start_task()]
    wait_for(lambda: running(tasks), 30, what="2 tasks running")
    before = {}
    for task in tasks:
        [cid] = docker("ps", "-aq", "--no-trunc", "--filter", f"label={TASK_ARN}={task}").split()
        before[task] = (cid, docker_state(cid))

    log_offset = agent.log_path.stat().st_size
    home.kill9()
    killed = time.time()
    others = {s.server_id for s in ha.servers if s is not home}
    moved_to = wait_for(lambda: (lambda at: at if at in others else None)(ha.presence().get(instance)),
                        4 * TTL, interval=0.1, what="the agent to move to another server")
    moved_in = time.time() - killed
    with open(agent.log_path, "rb") as f:
        f.seek(log_offset)
        said = f.read().decode(errors="replace")
    assert f"127.0.0.1:{home.port}" in said and "trying the next" in said, said[-2000:]
    wait_for(lambda: all(i["agentConnected"] for i in ha.call(
        "ecs", "describe_container_instances", cluster=CLUSTER,
        containerInstances=[instance])["containerInstances"]), 10, what="agentConnected")

    # A task placed on it now starts there.
    third = start_task()
    started = time.time()
    wait_for(lambda: running([third]), 30, interval=0.1, what="a new task running on the moved agent")
    print(f"\nagent moved from {home.server_id} to {moved_to} in {moved_in:.2f}s; "
          f"a new task ran in {time.time() - started:.1f}s")

    # Its tasks kept running in the same containers, none started again.
    assert running(tasks), "a task stopped while its agent changed servers"
    for task, (cid, state) in before.items():
        ids = docker("ps", "-aq", "--no-trunc", "--filter", f"label={TASK_ARN}={task}").split()
        assert ids == [cid], (task, ids, cid)
        assert docker_state(cid) == state == (True, state[1], 0), (docker_state(cid), state)
    ids = docker("ps", "-aq", "--filter", f"label={TASK_ARN}={third}").split()
    assert len(ids) == 1, ids
    home.start()
    for task in [*tasks, third]:
        ha.call("ecs", "stop_task", cluster=CLUSTER, task=task)


def test_api_answers_writes_while_an_etcd_member_is_down_and_it_catches_up(ha):
    ha.heal()
    etcd = ha.etcd
    # The member every server's etcd client starts with, made raft leader:
    # the servers move to another member and etcd to another leader.
    victim = 0
    others = [i for i in range(len(etcd.members)) if i != victim]
    etcd.move_leader(victim)
    etcd.stop_member(victim)
    stopped_at = max(etcd.revisions(others).values())
    latencies = []
    for k in range(30):
        server = ha.servers[k % 3]
        begun = time.time()
        server.client("ssm").put_parameter(Name=f"/ha/etcd-down/{k}", Value=str(k), Type="String")
        latencies.append(time.time() - begun)
    ha.call("ecs", "tag_resource", resourceArn=f"arn:aws:ecs:us-east-1:000000000000:cluster/{CLUSTER}",
            tags=[{"key": "etcd", "value": "one-member-down"}])
    written = max(etcd.revisions(others).values())
    assert written > stopped_at
    print(f"\nwrites with a member down: max {max(latencies) * 1000:.0f} ms")

    etcd.start_member(victim)
    restarted = time.time()
    wait_for(lambda: etcd.healthy(victim), 20, interval=0.1, what="the member healthy again")
    target = max(etcd.revisions(others).values())
    wait_for(lambda: etcd.revisions([victim]).get(victim, 0) >= target, 20, interval=0.1,
             what="the restarted member's revision to reach the others'")
    print(f"member caught up in {time.time() - restarted:.1f}s")
    # Its own copy (a serializable read answered by it alone) has what was
    # written while it was down.
    local = etcd.etcdctl("get", "--consistency=s", "--prefix", "--keys-only", "/berth/",
                         endpoints=[etcd.endpoints[victim]]).stdout.split()
    assert all(any(key.endswith(f"/ha/etcd-down/{k}") for key in local) for k in range(30)), local
    got = ha.servers[1].client("ssm").get_parameters(Names=[f"/ha/etcd-down/{k}" for k in range(20, 30)])
    assert len(got["Parameters"]) == 10
    ha.servers[2].client("ssm").put_parameter(Name="/ha/etcd-back", Value="1", Type="String")


def ecr_token(server):
    data = server.client("ecr").get_authorization_token()["authorizationData"][0]
    return base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]


def get_blob(server, repo, digest, token):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    auth = "Basic " + base64.b64encode(f"AWS:{token}".encode()).decode()
    conn.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Authorization": auth})
    r = conn.getresponse()
    if r.status in (301, 302, 303, 307, 308):
        # A redirect to a scoped download URL on the same server.
        location = r.getheader("Location")
        r.read()
        conn.request("GET", location)
        r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200, (r.status, body[:200])
    return "sha256:" + hashlib.sha256(body).hexdigest()


def run(cmd, env, input=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed: {proc.stderr}"
    return proc.stdout


def test_images_and_log_events_outlive_the_server_that_took_them(ha, test_image, tmp_path):
    ha.heal()
    # The first is the leader, which also owns the log store.
    first = ha.wait_leader()
    second, third = [s for s in ha.servers if s is not first]
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    repo = "ha/app"
    uri = {s: f"127.0.0.1:{s.port}/{repo}:v1" for s in ha.servers}
    first.client("ecr").create_repository(repositoryName=repo)
    aws = str(Path(os.environ.get("BERTH_VENV", Path(__file__).resolve().parents[2] / ".venv")) / "bin" / "aws")
    password = subprocess.run([aws, "ecr", "get-login-password"], capture_output=True, text=True,
                              env=first.cli_env(), check=True).stdout.strip()
    logs_group, stream = "/ha/app", "web/1"
    try:
        # The token one server minted opens every server's registry.
        for s in ha.servers:
            run(["docker", "login", "--username", "AWS", "--password-stdin", f"127.0.0.1:{s.port}"],
                env, input=password)
        run(["docker", "tag", test_image, uri[first]], env)
        pushed = run(["docker", "push", uri[first]], env)
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed).group(1)
        run(["docker", "rmi", uri[first]], env)
        pulled = run(["docker", "pull", uri[second]], env)
        assert f"Digest: {digest}" in pulled, pulled
        manifest = json.loads(second.client("ecr").batch_get_image(
            repositoryName=repo, imageIds=[{"imageTag": "v1"}])["images"][0]["imageManifest"])
        blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        token = ecr_token(second)
        assert [get_blob(second, repo, b, token) for b in blobs] == blobs

        # Log events in through the leader and through a follower, out
        # through another.
        first.client("logs").create_log_group(logGroupName=logs_group)
        first.client("logs").create_log_stream(logGroupName=logs_group, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now + i, "message": f"event {i}"} for i in range(20)]
        first.client("logs").put_log_events(logGroupName=logs_group, logStreamName=stream,
                                            logEvents=events[:10])
        second.client("logs").put_log_events(logGroupName=logs_group, logStreamName=stream,
                                             logEvents=events[10:])

        def messages(server):
            out = server.client("logs").get_log_events(logGroupName=logs_group, logStreamName=stream,
                                                       startFromHead=True)
            return [e["message"] for e in out["events"]]

        assert messages(third) == [e["message"] for e in events]

        first.kill9()
        killed = time.time()
        assert messages(third) == [e["message"] for e in events]
        print(f"\nlogs read through {third.server_id} {time.time() - killed:.1f}s after the leader died")
        token = ecr_token(third)
        assert [get_blob(third, repo, b, token) for b in blobs] == blobs
        run(["docker", "rmi", uri[second]], env)
        pulled = run(["docker", "pull", uri[third]], env)
        assert f"Digest: {digest}" in pulled, pulled
    finally:
        for s in ha.servers:
            subprocess.run(["docker", "logout", f"127.0.0.1:{s.port}"], env=env, capture_output=True)
            subprocess.run(["docker", "rmi", uri[s]], capture_output=True)
    first.start()
    ha.wait_leader()


def test_every_server_sees_one_state_of_every_service(ha):
    """Every service's keys live in the installation's namespace, whatever
    their form (berth-ec2's keys have no leading `/`): one default VPC, and
    what one server writes, the others read."""
    ha.heal()
    defaults = [[v["VpcId"] for v in s.client("ec2").describe_vpcs(
        Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]] for s in ha.servers]
    assert len(defaults[0]) == 1 and defaults == [defaults[0]] * 3, defaults
    vpc = ha.servers[0].client("ec2").create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    wait_for(lambda: all(vpc in [v["VpcId"] for v in s.client("ec2").describe_vpcs()["Vpcs"]]
                         for s in ha.servers[1:]), 5, interval=0.05, what="the VPC on every server")
    ha.servers[2].client("ec2").delete_vpc(VpcId=vpc)
