"""Measures RunTask -> RUNNING against `docker run -d` (see bench/task-start)."""
import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import boto3
import botocore.config

from bench_common import IMAGE, build_image, percentiles, start_berth, time_to_running

COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
KEY, SECRET = "AKIABERTHBENCHTASKS0", "bench-task-start-secret"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--berth", required=True)
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    build_image(work)
    server, endpoint = start_berth(args.berth, work, KEY, SECRET)
    try:
        ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                           config=botocore.config.Config(retries={"max_attempts": 1}))
        for _ in range(200):
            if ecs.list_container_instances(cluster="default")["containerInstanceArns"]:
                break
            time.sleep(0.1)
        ecs.register_task_definition(family="bench-start", containerDefinitions=[
            {"name": "app", "image": IMAGE, "memory": 16, "command": COMMAND, "stopTimeout": 5}])

        berth_ms, arns = [], []
        for _ in range(args.tasks):
            ms, arn = time_to_running(ecs, dict(taskDefinition="bench-start"))
            berth_ms.append(ms)
            arns.append(arn)
        for arn in arns:
            ecs.stop_task(task=arn)

        docker_ms, ids = [], []
        for _ in range(args.tasks):
            started = time.perf_counter()
            out = subprocess.run(["docker", "run", "-d", "--memory", "16m", IMAGE, *COMMAND],
                                 check=True, capture_output=True, text=True)
            docker_ms.append((time.perf_counter() - started) * 1000)
            ids.append(out.stdout.strip())
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)

        b50, b95 = percentiles(berth_ms)
        d50, d95 = percentiles(docker_ms)
        print(f"{'':<38}{'p50 ms':>9}{'p95 ms':>9}")
        print(f"{'berth RunTask -> RUNNING':<38}{b50:>9.1f}{b95:>9.1f}")
        print(f"{'docker run -d (same image, command)':<38}{d50:>9.1f}{d95:>9.1f}")
        print(f"berth p50 / docker p50: {b50 / d50:.2f}x over {args.tasks} sequential tasks")
        # Let the agent finish stopping before the server goes.
        for _ in range(300):
            if not ecs.list_tasks()["taskArns"]:
                break
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)
        leftovers = subprocess.run(["docker", "ps", "-aq", "--filter", "label=com.amazonaws.ecs.task-definition-family=bench-start"],
                                   capture_output=True, text=True).stdout.split()
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
