"""What the Python benchmarks share: a free loopback port, the local busybox
test image, a `berth up` on a temporary data directory, and percentiles."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

IMAGE = "berth-test/busybox:latest"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_image(workdir: Path):
    """`FROM scratch` + the host's static busybox, with no registry."""
    (workdir / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (workdir / "busybox").chmod(0o755)
    (workdir / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
    subprocess.run(["docker", "build", "-q", "-t", IMAGE, str(workdir)], check=True,
                   capture_output=True)


def start_berth(berth, work: Path, key, secret):
    """`berth up` on a free port with root keys `key`/`secret`; answers the
    process and its endpoint once it is healthy."""
    port = free_port()
    env = dict(os.environ, BERTH_ROOT_ACCESS_KEY_ID=key, BERTH_ROOT_SECRET_ACCESS_KEY=secret)
    server = subprocess.Popen([berth, "up", "--listen", f"127.0.0.1:{port}",
                               "--dns-listen", f"127.0.0.1:{free_port()}",
                               "--data-dir", str(work / "data"), "--log", "warn"],
                              stdout=subprocess.DEVNULL, stderr=open(work / "berth.log", "wb"), env=env)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint + "/_berth/health", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    return server, endpoint


def percentiles(samples):
    """p50 and p95 of `samples` (nearest rank)."""
    ordered = sorted(samples)
    pick = lambda p: ordered[min(len(ordered) - 1, round((len(ordered) - 1) * p))]
    return pick(0.50), pick(0.95)


def time_to_running(ecs, run_args):
    """RunTask with `run_args`, then DescribeTasks every 2 ms until RUNNING:
    the milliseconds it took and the task's ARN (exits when it stops or
    takes over 60 s)."""
    started = time.perf_counter()
    out = ecs.run_task(**run_args)
    if not out["tasks"]:
        sys.exit(f"RunTask placed nothing: {out['failures']}")
    arn = out["tasks"][0]["taskArn"]
    deadline = started + 60
    while True:
        task = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        if task["lastStatus"] == "RUNNING":
            return (time.perf_counter() - started) * 1000, arn
        if task["lastStatus"] == "STOPPED" or time.perf_counter() > deadline:
            sys.exit(f"{run_args['taskDefinition']} task did not reach RUNNING: "
                     f"{task['lastStatus']} {task.get('stoppedReason')} "
                     f"{[(c['name'], c['lastStatus'], c.get('reason')) for c in task['containers']]} "
                     f"{task.get('attachments')}")
        time.sleep(0.002)
