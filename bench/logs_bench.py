"""awslogs ingest throughput, visibility latency and CPU (see bench/logs)."""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import botocore.config

from bench_common import IMAGE, build_image, free_port

KEY, SECRET = "AKIABERTHBENCHLOGS00", "bench-logs-secret"
GROUP = "/bench/logs"
# ~100 bytes a line: the number, then padding.
PAD = "x" * 92
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * p))]


def last_message(logs, stream):
    try:
        events = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=1,
                                     startFromHead=False)["events"]
    except logs.exceptions.ResourceNotFoundException:
        return None
    return events[-1]["message"] if events else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--berth", required=True)
    parser.add_argument("--lines", type=int, default=200_000, help="lines per container")
    parser.add_argument("--containers", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    build_image(work)
    port = free_port()
    env = dict(os.environ, BERTH_ROOT_ACCESS_KEY_ID=KEY, BERTH_ROOT_SECRET_ACCESS_KEY=SECRET)
    server = subprocess.Popen([args.berth, "up", "--listen", f"127.0.0.1:{port}",
                               "--dns-listen", f"127.0.0.1:{free_port()}",
                               "--data-dir", str(work / "data"), "--log", "warn"],
                              stdout=subprocess.DEVNULL, stderr=open(work / "berth.log", "wb"), env=env)
    task_arns = []
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(endpoint + "/_berth/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        session = boto3.session.Session(aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                                        region_name="us-east-1")
        config = botocore.config.Config(retries={"max_attempts": 1})
        ecs = session.client("ecs", endpoint_url=endpoint, config=config)
        logs = session.client("logs", endpoint_url=endpoint, config=config)
        for _ in range(100):
            if ecs.list_container_instances()["containerInstanceArns"]:
                break
            time.sleep(0.1)
        options = {"awslogs-group": GROUP, "awslogs-stream-prefix": "b", "awslogs-create-group": "true"}
        writer = f"seq 1 {args.lines} | sed 's/$/ {PAD}/'"
        # At most 10 containers per task definition: writers run in tasks of
        # up to 5, each with an essential keeper that outlives them.
        per_task = 5
        for n in {min(per_task, args.containers - f) for f in range(0, args.containers, per_task)}:
            ecs.register_task_definition(family=f"writers{n}", containerDefinitions=[
                {"name": f"w{i}", "image": IMAGE, "memory": 32, "essential": False,
                 "command": ["sh", "-c", f"sleep 2; {writer}"],
                 "logConfiguration": {"logDriver": "awslogs", "options": options}}
                for i in range(n)] + [
                # ECS wants one essential container; this one outlives the writers.
                {"name": "keeper", "image": IMAGE, "memory": 16, "essential": True,
                 "command": ["sleep", "3600"]}])
        ecs.register_task_definition(family="probe", containerDefinitions=[
            {"name": "probe", "image": IMAGE, "memory": 32,
             "command": ["sh", "-c", "i=0; while true; do echo probe $i; i=$((i+1)); usleep 50000; done"],
             "logConfiguration": {"logDriver": "awslogs", "options": options}}])

        probe = ecs.run_task(taskDefinition="probe")["tasks"][0]["taskArn"]
        task_arns.append(probe)
        probe_stream = f"b/probe/{probe.rsplit('/', 1)[1]}"
        while last_message(logs, probe_stream) is None:
            time.sleep(0.1)

        lags, stop = [], threading.Event()

        def watch_probe():
            token = None
            while not stop.is_set():
                kwargs = {"logGroupName": GROUP, "logStreamName": probe_stream, "startFromHead": True}
                if token:
                    kwargs["nextToken"] = token
                page = logs.get_log_events(**kwargs)
                seen = time.time() * 1000
                if token:
                    lags.extend(seen - e["timestamp"] for e in page["events"])
                token = page["nextForwardToken"]
                time.sleep(0.02)

        watcher = threading.Thread(target=watch_probe, daemon=True)
        watcher.start()
        time.sleep(1)

        streams = []
        for first in range(0, args.containers, per_task):
            n = min(per_task, args.containers - first)
            writers = ecs.run_task(taskDefinition=f"writers{n}")["tasks"][0]["taskArn"]
            task_arns.append(writers)
            task_id = writers.rsplit("/", 1)[1]
            streams += [f"b/w{i}/{task_id}" for i in range(n)]
        cpu_before, wall_before = cpu_seconds(server.pid), time.time()
        done = set()
        deadline = time.time() + 600
        while len(done) < len(streams) and time.time() < deadline:
            for s in streams:
                if s not in done and (last_message(logs, s) or "").split(" ")[0] == str(args.lines):
                    done.add(s)
            time.sleep(0.1)
        wall_after, cpu_after = time.time(), cpu_seconds(server.pid)
        stop.set()
        watcher.join()
        if len(done) < len(streams):
            sys.exit(f"only {len(done)} of {len(streams)} streams complete after 600 s")

        # From the first line printed (Docker's timestamp) to the last one visible.
        first = min(logs.get_log_events(logGroupName=GROUP, logStreamName=s, limit=1,
                                         startFromHead=True)["events"][0]["timestamp"] for s in streams)
        elapsed = wall_after - first / 1000
        lines = args.lines * args.containers
        line_bytes = sum(len(f"{n} {PAD}") for n in range(1, args.lines + 1)) * args.containers
        busy = wall_after - wall_before
        print(f"containers                 {args.containers}")
        print(f"lines                      {lines}")
        print(f"ingest lines/s             {lines / elapsed:,.0f}")
        print(f"ingest MiB/s               {line_bytes / elapsed / 2**20:.1f}")
        print(f"latency p50 ms             {percentile(lags, 0.50):.0f}")
        print(f"latency p99 ms             {percentile(lags, 0.99):.0f}")
        print(f"latency samples            {len(lags)}")
        print(f"berth CPU (1 core = 100%)  {100 * (cpu_after - cpu_before) / busy:.0f}%")
        print(f"berth RSS MiB              {int(Path(f'/proc/{server.pid}/statm').read_text().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20:.1f}")
    finally:
        for arn in task_arns:
            try:
                ecs.stop_task(task=arn)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass
        server.terminate()
        server.wait(timeout=30)
        for arn in task_arns:
            ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.task-arn={arn}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


if __name__ == "__main__":
    main()
