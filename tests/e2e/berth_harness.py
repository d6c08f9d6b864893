"""Starts the real `berth` binary and gives tests the aws CLI, boto3 and raw
signed HTTP against it. Everything runs on loopback with a temp data dir."""
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import botocore
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY = "AKIABERTHTESTROOT001"
SECRET_KEY = "berth-test-secret-key/0123456789abcdefXYZ"
REGION = "us-east-1"
ACCOUNT = "000000000000"


# Terminal colours in the server's log.
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def berth_binary() -> str:
    explicit = os.environ.get("BERTH_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    for profile in ("debug", "release"):
        candidate = Path(target) / profile / "berth"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("berth binary not found: build it (cargo build) or set BERTH_BIN")


# Ports the tests' servers listen on come from below the kernel's ephemeral
# range (net.ipv4.ip_local_port_range, 32768-60999 by default). A server
# restarted on its port must find it free, and a port of that range can be
# the source port of any outgoing connection or UDP socket on the host
# meanwhile: a `berth server` killed and started again in test_ha once
# exited with "binding the DNS listener 127.0.0.1:33052: Address already in
# use". Below the range only listeners take ports, and each xdist worker
# walks its own slice, so two workers never hand out the same port.
_LISTEN_LOW = 10000


def _listen_slice() -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            high = min(int(f.read().split()[0]), 32768)
    except (OSError, ValueError, IndexError):
        high = 32768
    if high - _LISTEN_LOW < 1000:
        raise RuntimeError(f"the ephemeral port range starts at {high}: no room below it for listeners")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    width = (high - _LISTEN_LOW) // count
    start = _LISTEN_LOW + index * width
    return range(start, start + width)


_LISTEN_PORTS = _listen_slice()
_next_port = 0


def _free_listen_port(kinds) -> int:
    """The next port of this worker's slice that every socket type of
    `kinds` can bind on loopback now."""
    global _next_port
    for _ in range(len(_LISTEN_PORTS)):
        port = _LISTEN_PORTS[_next_port % len(_LISTEN_PORTS)]
        _next_port += 1
        sockets = [socket.socket(socket.AF_INET, kind) for kind in kinds]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no free port in {_LISTEN_PORTS}")


def free_port() -> int:
    """A loopback TCP port nothing listens on, outside the ephemeral range."""
    return _free_listen_port([socket.SOCK_STREAM])


def free_dns_port() -> int:
    """A loopback port free for both UDP and TCP (a DNS server takes both)."""
    return _free_listen_port([socket.SOCK_DGRAM, socket.SOCK_STREAM])


def dns_args(berth, extra_args) -> list:
    """`--dns-listen` on the berth's own port unless the test chose one."""
    if any(str(a).startswith("--dns-listen") for a in extra_args):
        return []
    return ["--dns-listen", f"127.0.0.1:{berth.dns_port}"]


class Berth:
    """One running `berth up` process."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_args=(), env=None,
                 agent: bool = False):
        self.data_dir = Path(data_dir)
        self.agent = agent
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        # Berth's DNS server: its own port, kept across restarts.
        self.dns_port = free_dns_port()
        self.env_overrides = env
        # Runs in the child before exec (e.g. to lower its descriptor limit).
        self.preexec_fn = None
        self.proc = None
        self.stdout_path = self.data_dir.parent / f"berth-{self.port}.stdout"
        self.stderr_path = self.data_dir.parent / f"berth-{self.port}.stderr"

    def start(self, wait=True):
        env = dict(os.environ)
        if self.env_overrides is None:
            env["BERTH_ROOT_ACCESS_KEY_ID"] = ACCESS_KEY
            env["BERTH_ROOT_SECRET_ACCESS_KEY"] = SECRET_KEY
        else:
            env.pop("BERTH_ROOT_ACCESS_KEY_ID", None)
            env.pop("BERTH_ROOT_SECRET_ACCESS_KEY", None)
            env.update(self.env_overrides)
        env.setdefault("RUST_LOG", "info")
        # Where this run's output starts (a restarted server appends).
        self.log_offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        self.proc = subprocess.Popen(
            self.command(),
            stdout=open(self.stdout_path, "ab"),
            stderr=open(self.stderr_path, "ab"),
            env=env,
            preexec_fn=self.preexec_fn,
        )
        if wait:
            self.wait_healthy()
            if self.agent:
                self.wait_agent_registered()
        return self

    def command(self):
        return [berth_binary(), "up", "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", str(self.data_dir), *([] if self.agent else ["--no-agent"]),
                *dns_args(self, self.extra_args), *self.extra_args]

    def wait_agent_registered(self, timeout=30.0):
        """Waits until the in-process agent's container instance is listed
        and the agent has saved the identity it was answered (it registers
        just after the server starts serving, and writes the identity file
        only after the answer arrives: the instance can be listed first)."""
        ecs = self.client("ecs")
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if (ecs.list_container_instances(cluster="default")["containerInstanceArns"]
                        and any(self.data_dir.rglob("agent-identity.json"))):
                    return
            except ClientError as e:
                if e.response["Error"]["Code"] != "ClusterNotFoundException":
                    raise
            time.sleep(0.05)
        raise RuntimeError(f"the in-process agent did not register: {self.logs()}")

    def wait_healthy(self, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"berth exited with {self.proc.returncode}: {self.logs()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/_berth/health", timeout=1) as r:
                    if r.status == 200:
                        return json.loads(r.read())
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"berth did not become healthy: {self.logs()}")

    @property
    def agent_token_path(self) -> Path:
        """The agent registration token `berth up` generated."""
        return self.data_dir / "agent-token"

    def agent_token(self) -> str:
        return self.agent_token_path.read_text().strip()

    def logs(self) -> str:
        out = self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""
        err = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return f"--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}"

    def warnings(self, count=40, width=400) -> str:
        """The last `count` WARN and ERROR lines of this run's log."""
        if not self.stderr_path.exists():
            return ""
        with open(self.stderr_path, errors="replace") as f:
            f.seek(getattr(self, "log_offset", 0))
            plain = (ANSI.sub("", line) for line in f)
            # Failed requests are the test's own to see.
            lines = [line.rstrip()[:width] for line in plain
                     if (" WARN " in line or " ERROR " in line)
                     and "request failed" not in line]
        return "\n".join(lines[-count:])

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.stop(sig=signal.SIGKILL)

    # --- clients -------------------------------------------------------
    def cli_env(self, access_key=ACCESS_KEY, secret_key=SECRET_KEY):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("AWS_"):
                del env[k]
        env.update({
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_PAGER": "",
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        })
        return env

    def aws(self, *args, check=True, env=None, input=None):
        """Runs the real aws CLI; returns (returncode, parsed JSON or None, stderr)."""
        cli = str(Path(os.environ.get("BERTH_VENV", ROOT / ".venv")) / "bin" / "aws")
        proc = subprocess.run(
            [cli, *args, "--output", "json"], capture_output=True, text=True,
            env=env or self.cli_env(), input=input, timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        return proc.returncode, out, proc.stderr

    def client(self, service, access_key=ACCESS_KEY, secret_key=SECRET_KEY, session_token=None):
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            # Cloud Map's DiscoverInstances has the host prefix `data-`, which
            # an address endpoint (127.0.0.1) cannot take.
            config=botocore.config.Config(retries={"max_attempts": 1}, inject_host_prefix=False),
        )

    def raw(self, service, target_prefix, operation, payload, access_key=ACCESS_KEY,
            secret_key=SECRET_KEY, sign=True, timestamp=None):
        """A signed JSON 1.1 call; returns (status, parsed body, headers)."""
        body = json.dumps(payload).encode()
        request = AWSRequest(method="POST", url=self.endpoint + "/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"{target_prefix}.{operation}",
        })
        if sign:
            auth = SigV4Auth(Credentials(access_key, secret_key), service, REGION)
            if timestamp is not None:
                _sign_at(auth, request, timestamp)
            else:
                auth.add_auth(request)
        prepared = request.prepare()
        req = urllib.request.Request(prepared.url, data=body, method="POST",
                                     headers=dict(prepared.headers))
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}"), dict(r.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = {"raw": raw.decode(errors="replace")}
            return e.code, parsed, dict(e.headers)


    def presigned(self, service, target_prefix, operation, expires, secret_key=SECRET_KEY,
                  timestamp=None):
        """A call authenticated by a presigned query string (botocore's
        SigV4QueryAuth moves the body into the query, so none is sent)."""
        request = AWSRequest(method="POST", url=self.endpoint + "/", data=b"", headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"{target_prefix}.{operation}",
        })
        auth = SigV4QueryAuth(Credentials(ACCESS_KEY, secret_key), service, REGION, expires=expires)
        if timestamp is not None:
            _sign_at(auth, request, timestamp)
        else:
            auth.add_auth(request)
        prepared = request.prepare()
        req = urllib.request.Request(prepared.url, data=b"", method="POST",
                                     headers=dict(prepared.headers))
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


LEADING = "leading: controllers and the log store run here"
LEADERSHIP_LOST = "leadership lost"


class BerthServer(Berth):
    """One `berth server` of a multi-server installation: its state is in
    the etcd cluster and in `shared_dir` (its `data_dir`, which every server
    of the installation names: root credentials, agent-token, blobs, logs)."""

    def __init__(self, shared_dir: Path, etcd_endpoints, server_id: str, port: int | None = None,
                 leader_ttl: int = 3, extra_args=()):
        super().__init__(shared_dir, port=port, extra_args=extra_args)
        self.etcd_endpoints = list(etcd_endpoints)
        self.server_id = server_id
        self.leader_ttl = leader_ttl
        self.stdout_path = self.data_dir.parent / f"server-{server_id}.stdout"
        self.stderr_path = self.data_dir.parent / f"server-{server_id}.stderr"

    def command(self):
        return [berth_binary(), "server", "--listen", f"127.0.0.1:{self.port}",
                "--etcd", ",".join(self.etcd_endpoints), "--shared-dir", str(self.data_dir),
                "--server-id", self.server_id, "--leader-ttl", str(self.leader_ttl),
                *dns_args(self, self.extra_args), *self.extra_args]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def leads(self) -> bool:
        """Whether this server runs and its log (this run's) last said it leads."""
        if not self.alive():
            return False
        with open(self.stderr_path, "rb") as f:
            f.seek(self.log_offset)
            text = f.read().decode(errors="replace")
        return text.rfind(LEADING) > text.rfind(LEADERSHIP_LOST)


class EtcdCluster:
    """A real etcd cluster (Debian's etcd) of `size` members on loopback.
    Members keep their data on tmpfs when there is one: on a disk shared
    with the rest of the suite, etcd's fsyncs take seconds, longer than the
    short lease TTLs the tests use. Their logs go to `base_dir`."""

    def __init__(self, base_dir: Path, size: int = 3):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        shm = Path("/dev/shm")
        self.data_dir = Path(tempfile.mkdtemp(prefix="berth-etcd-", dir=shm if shm.is_dir() else None))
        self.members = [{"name": f"m{i}", "client": free_port(), "peer": free_port(), "proc": None}
                        for i in range(size)]
        self.initial_cluster = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members)

    @property
    def endpoints(self):
        return [f"http://127.0.0.1:{m['client']}" for m in self.members]

    def start_member(self, i: int):
        m = self.members[i]
        client, peer = f"http://127.0.0.1:{m['client']}", f"http://127.0.0.1:{m['peer']}"
        # On a restart the member's data dir wins over the initial-cluster flags.
        m["proc"] = subprocess.Popen(
            ["etcd", "--name", m["name"], "--data-dir", str(self.data_dir / m["name"]),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
             "--initial-cluster-token", f"berth-{self.members[0]['peer']}",
             "--max-txn-ops", "10000", "--max-request-bytes", "16777216"],
            stdout=subprocess.DEVNULL, stderr=open(self.base_dir / f"{m['name']}.log", "ab"))

    def start(self, timeout=30.0):
        for i in range(len(self.members)):
            self.start_member(i)
        wait_for(lambda: all(self.healthy(i) for i in range(len(self.members))), timeout,
                 interval=0.1, what="etcd cluster healthy")
        return self

    def etcdctl(self, *args, endpoints=None, check=True):
        proc = subprocess.run(
            ["etcdctl", "--endpoints", ",".join(endpoints or self.endpoints),
             "--command-timeout", "3s", *args],
            capture_output=True, text=True, timeout=20, env={**os.environ, "ETCDCTL_API": "3"})
        if check and proc.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def healthy(self, i: int) -> bool:
        return self.etcdctl("endpoint", "health", endpoints=[self.endpoints[i]], check=False).returncode == 0

    def revisions(self, members=None) -> dict:
        """Each answering member's store revision, by member index."""
        out = {}
        for i in members if members is not None else range(len(self.members)):
            proc = self.etcdctl("endpoint", "status", "-w", "json", endpoints=[self.endpoints[i]],
                                check=False)
            if proc.returncode == 0:
                out[i] = json.loads(proc.stdout)[0]["Status"]["header"]["revision"]
        return out

    def status(self, i: int) -> dict:
        out = self.etcdctl("endpoint", "status", "-w", "json", endpoints=[self.endpoints[i]]).stdout
        return json.loads(out)[0]["Status"]

    def move_leader(self, i: int):
        """Makes member `i` the raft leader (a no-op when it is)."""
        ids = [self.status(k)["header"]["member_id"] for k in range(len(self.members))]
        if self.status(i)["leader"] != ids[i]:
            self.etcdctl("move-leader", format(ids[i], "x"))
        wait_for(lambda: self.status(i)["leader"] == ids[i], 10, interval=0.1, what="the moved raft leader")

    def stop_member(self, i: int, sig=signal.SIGTERM):
        proc = self.members[i]["proc"]
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self):
        for i in range(len(self.members)):
            self.stop_member(i, signal.SIGKILL)
        shutil.rmtree(self.data_dir, ignore_errors=True)


class AgentProcess:
    """One `berth agent` process joined to a cluster of a running server."""

    def __init__(self, berth: "Berth", name: str, cluster: str, data_dir: Path, args=(),
                 access_key=ACCESS_KEY, secret_key=SECRET_KEY, token_file=None, server=None):
        self.berth, self.name, self.cluster = berth, name, cluster
        # `--server`: the server's endpoint unless a test names several.
        self.server = server or berth.endpoint
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.access_key, self.secret_key = access_key, secret_key
        # The server's agent registration token, unless a test gives another.
        self.token_file = token_file
        self.proc = None
        self.log_path = self.data_dir.parent / f"agent-{name}.log"

    def start(self):
        env = dict(os.environ)
        env.pop("BERTH_AGENT_TOKEN", None)
        env.update({"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                    "AWS_DEFAULT_REGION": REGION, "RUST_LOG": env.get("RUST_LOG", "info")})
        token_file = self.token_file or self.berth.agent_token_path
        self.proc = subprocess.Popen(
            [berth_binary(), "agent", "--server", self.server, "--cluster", self.cluster,
             "--name", self.name, "--data-dir", str(self.data_dir),
             "--registration-token-file", str(token_file), *self.args],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, env=env,
        )
        return self

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self):
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def wait_for(predicate, timeout=60.0, interval=0.2, what="condition"):
    """The first truthy value of `predicate()`, polled until `timeout`."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


# --- docker ------------------------------------------------------------------
TEST_IMAGE = "berth-test/busybox:latest"


def docker(*args, check=True):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def host_path(ip: str) -> str:
    """How this host routes to a task address now, in one line for a
    failure's message: the route `ip` takes, Berth's routes to VPC routers
    and the routers on the host, with what each router's namespace makes of
    `ip` (CI shows little more than that line)."""
    def out(*command):
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=30)
        return [l.strip() for l in (proc.stdout or proc.stderr).splitlines() if l.strip()]

    def line(*command):
        return "; ".join(out(*command))

    routers = []
    for router in out("docker", "ps", "-a", "--filter", "label=berth.vpc-router",
                      "--format", "{{.Names}} {{.Status}}"):
        pid = line("docker", "inspect", "-f", "{{.State.Pid}}", router.split()[0])
        if pid.isdigit() and pid != "0":
            inside = ("nsenter", f"--net=/proc/{pid}/ns/net", "ip")
            seen = (f"route get: {line(*inside, 'route', 'get', ip)}, "
                    f"neighbour: {line(*inside, 'neigh', 'show', 'to', ip) or 'none'}")
        else:
            seen = "not running"
        routers.append(f"{router} ({seen})")
    return (f"route get {ip}: {line('ip', 'route', 'get', ip)} | Berth's host routes: "
            f"{line('ip', 'route', 'show', 'proto', '190') or 'none'} | routers: "
            f"{'; '.join(routers) or 'none'}")


def fetch_from_host(url: str, timeout=5.0) -> bytes:
    """The body at `url` (a task's address), fetched from this host; a
    failure says how the host routes there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except OSError as e:
        ip = urllib.parse.urlsplit(url).hostname or ""
        raise AssertionError(f"{url} from the host: {e} | {host_path(ip)}") from e


def build_test_image(workdir: Path):
    """`FROM scratch` + Debian's static busybox, as every task test uses."""
    workdir.mkdir(parents=True, exist_ok=True)
    busybox = Path("/bin/busybox")
    (workdir / "busybox").write_bytes(busybox.read_bytes())
    (workdir / "busybox").chmod(0o755)
    (workdir / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n")
    docker("build", "-q", "-t", TEST_IMAGE, str(workdir))
    return TEST_IMAGE


def remove_task_containers(instance_ids):
    """Removes the containers the given container instances' agents created."""
    for instance_id in instance_ids:
        ids = docker("ps", "-aq", "--filter", f"label=berth.container-instance={instance_id}").split()
        if ids:
            docker("rm", "-f", *ids, check=False)


def _sign_at(auth, request, timestamp):
    """Signs as if at `timestamp` (a datetime in UTC)."""
    import datetime
    from unittest import mock

    class FrozenDatetime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return timestamp.replace(tzinfo=None)

        @classmethod
        def now(cls, tz=None):
            return timestamp if tz else timestamp.replace(tzinfo=None)

    with mock.patch("botocore.auth.datetime.datetime", FrozenDatetime):
        auth.add_auth(request)


# --- botocore model conformance ------------------------------------------
def load_model(service, version):
    root = Path(botocore.__file__).parent / "data" / service / version / "service-2.json.gz"
    with gzip.open(root) as f:
        return json.load(f)


def check_shape(model, shape_name, value, path="$"):
    """Raises AssertionError when `value` (raw JSON) does not fit the model shape:
    unknown members, wrong types, enum values not in the model."""
    shape = model["shapes"][shape_name]
    kind = shape["type"]
    if kind == "structure":
        assert isinstance(value, dict), f"{path}: expected object for {shape_name}, got {type(value).__name__}"
        members = shape.get("members", {})
        wire = {m.get("locationName", name): m for name, m in members.items()}
        for key, item in value.items():
            assert key in wire, f"{path}: member '{key}' is not in {shape_name}"
            check_shape(model, wire[key]["shape"], item, f"{path}.{key}")
    elif kind == "list":
        assert isinstance(value, list), f"{path}: expected list, got {type(value).__name__}"
        for i, item in enumerate(value):
            check_shape(model, shape["member"]["shape"], item, f"{path}[{i}]")
    elif kind == "map":
        assert isinstance(value, dict), f"{path}: expected map"
        for k, item in value.items():
            check_shape(model, shape["value"]["shape"], item, f"{path}.{k}")
    elif kind == "string":
        assert isinstance(value, str), f"{path}: expected string, got {value!r}"
        if "enum" in shape:
            assert value in shape["enum"], f"{path}: '{value}' is not one of {shape['enum']}"
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: expected integer, got {value!r}"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: expected boolean, got {value!r}"
    elif kind in ("double", "float", "timestamp"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path}: expected number, got {value!r}"
    elif kind == "blob":
        assert isinstance(value, str), f"{path}: expected base64 string"
    else:
        raise AssertionError(f"{path}: unhandled shape type {kind}")


def check_output(model, operation, value):
    out = model["operations"][operation].get("output")
    if out is None:
        assert value in ({}, None), f"{operation} has no output shape but returned {value!r}"
        return
    check_shape(model, out["shape"], value)


ECS_TASKS_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
    "Action": "sts:AssumeRole"}]})


def create_task_role(server, name, actions=(), resource="*"):
    """A role ECS tasks may assume, with an inline policy allowing `actions`;
    returns its ARN."""
    iam = server.client("iam")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=ECS_TASKS_TRUST)["Role"]["Arn"]
    if actions:
        iam.put_role_policy(RoleName=name, PolicyName="access", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": resource}]}))
    return arn
