"""`berth exec`: a command run in a real busybox task's container, signed with
the user's AWS credentials, authorized as ecs:ExecuteCommand, refused as ECS's
ExecuteCommand is, and relayed by the server to the agent running the task."""
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time

import pytest
from botocore.exceptions import ClientError

from berth_harness import berth_binary, wait_for

ECS_ERROR = "An error occurred ({}) when calling the ExecuteCommand operation"


def start_task(ecs, enable=True, family="exec"):
    ecs.register_task_definition(family=family, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 32,
        "command": ["sleep", "3600"], "essential": True,
    }])
    arn = ecs.run_task(taskDefinition=family, enableExecuteCommand=enable)["tasks"][0]["taskArn"]

    def running():
        task = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        return task if task["lastStatus"] == "RUNNING" else None
    task = wait_for(running, 60, what="task RUNNING")
    assert task["enableExecuteCommand"] is enable
    return arn


def berth_exec(server, task, *command, env=None, flags=(), container="app", input=None, timeout=60):
    args = [berth_binary(), "exec", "--cluster", "default", "--task", task]
    if container:
        args += ["--container", container]
    args += [*flags, "--", *command]
    return subprocess.run(args, env=env or server.cli_env(), capture_output=True, input=input,
                          timeout=timeout)


def test_exec_carries_stdout_stderr_exit_code_and_input(berth_agent):
    ecs = berth_agent.client("ecs")
    arn = start_task(ecs)
    task_id = arn.rsplit("/", 1)[1]

    done = berth_exec(berth_agent, arn, "sh", "-c", "echo hi; echo err >&2; exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout == b"hi\n"
    assert done.stderr == b"err\n"

    # By task id, without naming the only container.
    done = berth_exec(berth_agent, task_id, "sh", "-c", "echo ok", container=None)
    assert (done.returncode, done.stdout) == (0, b"ok\n"), done.stderr

    # -i: standard input reaches the command, and its end closes it.
    data = os.urandom(300_000)
    done = berth_exec(berth_agent, arn, "sh", "-c", "wc -c; echo closed", flags=["-i"], input=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [b"300000", b"closed"]
    done = berth_exec(berth_agent, arn, "sh", "-c", "read x; echo got $x", flags=["-i"],
                      input=b"hello\n")
    assert done.stdout == b"got hello\n"

    # A command that does not exist: Docker's 126/127 as the exit code.
    done = berth_exec(berth_agent, arn, "no-such-command")
    assert done.returncode != 0

    # Errors as ECS's ExecuteCommand names them.
    done = berth_exec(berth_agent, arn, "true", container="nope")
    assert done.returncode == 255
    assert ECS_ERROR.format("InvalidParameterException") in done.stderr.decode()
    bad = [berth_binary(), "exec", "--cluster", "missing", "--task", task_id, "--", "true"]
    done = subprocess.run(bad, env=berth_agent.cli_env(), capture_output=True, timeout=60)
    assert done.returncode == 255
    assert ECS_ERROR.format("ClusterNotFoundException") in done.stderr.decode()

    # ECS's ExecuteCommand (the aws CLI looks for Session Manager's plugin
    # before calling, so boto3 calls it) points at berth exec.
    with pytest.raises(ClientError) as e:
        ecs.execute_command(task=arn, container="app", command="ls", interactive=True)
    assert e.value.response["Error"]["Code"] == "TargetNotConnectedException"
    assert "berth exec" in e.value.response["Error"]["Message"]


def test_exec_refused_without_enable_execute_command(berth_agent):
    ecs = berth_agent.client("ecs")
    arn = start_task(ecs, enable=False, family="noexec")
    done = berth_exec(berth_agent, arn, "sh", "-c", "echo hi")
    assert done.returncode == 255
    err = done.stderr.decode()
    assert ECS_ERROR.format("InvalidParameterException") in err
    assert "execute command was not enabled when the task was run" in err
    assert done.stdout == b""
    # The same refusal as ECS's own ExecuteCommand.
    with pytest.raises(ClientError) as e:
        ecs.execute_command(task=arn, container="app", command="ls", interactive=True)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert e.value.response["Error"]["Message"] in err


def test_exec_needs_ecs_execute_command(berth_agent):
    ecs = berth_agent.client("ecs")
    arn = start_task(ecs)
    iam = berth_agent.client("iam")
    iam.create_user(UserName="exec-dev")
    key = iam.create_access_key(UserName="exec-dev")["AccessKey"]
    env = berth_agent.cli_env(key["AccessKeyId"], key["SecretAccessKey"])

    def attempt():
        return berth_exec(berth_agent, arn, "sh", "-c", "echo hi", env=env)

    # IAM access keys take a moment to be usable in some setups: retry briefly.
    done = wait_for(lambda: (lambda d: d if b"UnrecognizedClient" not in d.stderr else None)(attempt()),
                    10, what="the new key")
    assert done.returncode == 255
    err = done.stderr.decode()
    assert ECS_ERROR.format("AccessDeniedException") in err
    assert (f"User: arn:aws:iam::000000000000:user/exec-dev is not authorized to perform: "
            f"ecs:ExecuteCommand on resource: {arn}") in err

    # Allowed on the task for another container only: still refused.
    def allow(container):
        iam.put_user_policy(UserName="exec-dev", PolicyName="exec", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "ecs:ExecuteCommand", "Resource": arn,
                           "Condition": {"StringEquals": {"ecs:container-name": container}}}],
        }))
    allow("other")
    done = attempt()
    assert done.returncode == 255 and b"AccessDeniedException" in done.stderr
    allow("app")
    done = attempt()
    assert (done.returncode, done.stdout) == (0, b"hi\n"), done.stderr
    # Another user cannot drive the first one's session: every call after
    # the start is bound to the principal that started it (checked in the
    # crate's harness tests); here the user simply gets its own output.


def read_until_exit(proc, fd, timeout=30):
    out = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            out += chunk
        if proc.poll() is not None and not ready:
            break
    return out


def test_exec_interactive_with_a_terminal(berth_agent):
    ecs = berth_agent.client("ecs")
    arn = start_task(ecs)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 31, 101, 0, 0))
    proc = subprocess.Popen(
        [berth_binary(), "exec", "--cluster", "default", "--task", arn, "--container", "app",
         "-i", "-t", "--", "sh"],
        stdin=slave, stdout=slave, stderr=slave, env=berth_agent.cli_env(), start_new_session=True,
    )
    os.close(slave)
    try:
        time.sleep(1.0)
        # The local terminal is raw: keys (even ^C) go to the remote terminal.
        os.write(master, b"stty size; tty; echo $((6*7))\r")
        time.sleep(1.0)
        os.write(master, b"sleep 30\r")
        time.sleep(0.5)
        os.write(master, b"\x03")
        time.sleep(0.5)
        os.write(master, b"exit 7\r")
        out = read_until_exit(proc, master)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 7, text
    assert "31 101" in text, text
    assert "/dev/pts/" in text, text
    assert "42" in text, text
