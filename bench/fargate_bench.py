"""RunTask -> RUNNING for awsvpc (FARGATE) tasks against bridge-mode (EC2)
tasks in the same run (see bench/fargate)."""
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
KEY, SECRET = "AKIABERTHBENCHFARGAT", "bench-fargate-secret"


def wait_all_stopped(ecs, arns):
    for _ in range(600):
        tasks = [t for i in range(0, len(arns), 100)
                 for t in ecs.describe_tasks(tasks=arns[i:i + 100])["tasks"]]
        if all(t["lastStatus"] == "STOPPED" for t in tasks):
            return
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--berth", required=True)
    parser.add_argument("--tasks", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    build_image(work)
    server, endpoint = start_berth(args.berth, work, KEY, SECRET)
    families = ("bench-bridge", "bench-awsvpc")
    try:
        session = dict(endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                       config=botocore.config.Config(retries={"max_attempts": 1}))
        ecs = boto3.client("ecs", **session)
        ec2 = boto3.client("ec2", **session)
        for _ in range(200):
            if ecs.list_container_instances(cluster="default")["containerInstanceArns"]:
                break
            time.sleep(0.1)
        subnet = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[0]
        container = {"name": "app", "image": IMAGE, "command": COMMAND, "stopTimeout": 5}
        ecs.register_task_definition(family="bench-bridge", containerDefinitions=[
            dict(container, memory=16)])
        ecs.register_task_definition(
            family="bench-awsvpc", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
            cpu="256", memory="512", containerDefinitions=[container])
        runs = {
            "bridge (EC2 launch type)": dict(taskDefinition="bench-bridge"),
            "awsvpc (FARGATE)": dict(
                taskDefinition="bench-awsvpc", launchType="FARGATE",
                networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet["SubnetId"]]}}),
        }
        results = {name: [] for name in runs}
        # Interleaved in rounds so both modes see the same machine state; the
        # tasks of a round stop before the next, so no mode runs beside more
        # tasks than the other.
        for _ in range(args.tasks):
            arns = []
            for name, run_args in runs.items():
                ms, arn = time_to_running(ecs, run_args)
                results[name].append(ms)
                arns.append(arn)
            for arn in arns:
                ecs.stop_task(task=arn)
            wait_all_stopped(ecs, arns)
        print(f"{'RunTask -> RUNNING':<30}{'p50 ms':>9}{'p95 ms':>9}")
        for name, samples in results.items():
            p50, p95 = percentiles(samples)
            print(f"{name:<30}{p50:>9.1f}{p95:>9.1f}")
        b50, _ = percentiles(results["bridge (EC2 launch type)"])
        a50, _ = percentiles(results["awsvpc (FARGATE)"])
        print(f"awsvpc p50 / bridge p50: {a50 / b50:.2f}x over {args.tasks} tasks of each")
    finally:
        server.terminate()
        server.wait(timeout=30)
        for family in families:
            leftovers = subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.task-definition-family={family}"],
                capture_output=True, text=True).stdout.split()
            if leftovers:
                subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
