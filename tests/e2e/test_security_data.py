"""Issue 16 item 11: the data directory. `berth up` keeps it 0700 and every
file in it 0600 whatever the caller's umask (the store and its WAL, the log
database, the master key, the registry's key and uploads, the root
credentials), tightens a directory an older version left open, and never
writes an IAM user's or a role session's secret access key in plaintext."""
import json
import os
import stat
from pathlib import Path

from berth_harness import ACCOUNT, Berth


def root_keys(data_dir: Path):
    """The root keys `berth up` generated into <data-dir>/credentials."""
    values = {}
    for line in (data_dir / "credentials").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            values[k.strip()] = v.strip()
    return values["aws_access_key_id"], values["aws_secret_access_key"]


def open_umask():
    os.umask(0o022)


def start(data_dir: Path) -> Berth:
    # No root keys in the environment: the server generates the credentials
    # file; the caller's umask lets everyone read what it creates.
    server = Berth(data_dir, env={"RUST_LOG": "info"})
    server.preexec_fn = open_umask
    return server.start()


def modes(data_dir: Path):
    """(path, mode) of the data directory and everything under it."""
    out = [(data_dir, stat.S_IMODE(data_dir.lstat().st_mode))]
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            p = Path(root) / name
            out.append((p, stat.S_IMODE(p.lstat().st_mode)))
    return out


def assert_private(data_dir: Path):
    found = modes(data_dir)
    wrong = [(str(p), oct(m)) for p, m in found
             if m != (0o700 if p.is_dir() else 0o600)]
    assert not wrong, f"not private: {wrong}"
    return {p.relative_to(data_dir).as_posix() for p, _ in found if p != data_dir}


def use_everything(server: Berth, key, secret):
    """Writes to every part of the data directory cheaply: users, a role
    session, a secret, log events, an ECR repository and a blob upload."""
    iam = server.client("iam", key, secret)
    iam.create_user(UserName="alice")
    created = iam.create_access_key(UserName="alice")["AccessKey"]
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "sts:AssumeRole"}]}))
    session = server.client("sts", key, secret).assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/r", RoleSessionName="s1")["Credentials"]
    server.client("secretsmanager", key, secret).create_secret(
        Name="db", SecretString="hunter2-" + "x" * 16)
    logs = server.client("logs", key, secret)
    logs.create_log_group(logGroupName="g")
    logs.create_log_stream(logGroupName="g", logStreamName="s")
    logs.put_log_events(logGroupName="g", logStreamName="s",
                        logEvents=[{"timestamp": 1_700_000_000_000, "message": "hello"}])
    server.client("ecr", key, secret).create_repository(repositoryName="app")
    # The new user's key works (it is stored sealed, and opened to verify).
    who = server.client("sts", created["AccessKeyId"], created["SecretAccessKey"])
    assert who.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/alice"
    return created["SecretAccessKey"], session["SecretAccessKey"]


def raw_bytes(data_dir: Path):
    """Every file under the data directory: name → bytes."""
    out = {}
    for root, _, files in os.walk(data_dir):
        for name in files:
            p = Path(root) / name
            out[p.relative_to(data_dir).as_posix()] = p.read_bytes()
    return out


def test_the_data_directory_is_private_and_holds_no_plaintext_keys(tmp_path):
    data_dir = tmp_path / "data"
    server = start(data_dir)
    try:
        key, secret = root_keys(data_dir)
        user_secret, session_secret = use_everything(server, key, secret)
        running = assert_private(data_dir)
        for expected in ("store.db", "store.db-wal", "credentials", "secrets/master.key",
                         "logs/logs.db", "logs/logs.db-wal", "registry/token.key"):
            assert expected in running, sorted(running)
        # While the server runs, the WAL holds the latest writes.
        for name, data in raw_bytes(data_dir).items():
            assert user_secret.encode() not in data, f"{name} holds the user's secret key"
            assert session_secret.encode() not in data, f"{name} holds the session's secret key"
        assert b"hunter2-" not in b"".join(raw_bytes(data_dir).values())
    finally:
        server.stop()
    assert_private(data_dir)
    for name, data in raw_bytes(data_dir).items():
        assert user_secret.encode() not in data, f"{name} holds the user's secret key"
        assert session_secret.encode() not in data, f"{name} holds the session's secret key"


def test_an_open_data_directory_is_tightened_at_start(tmp_path):
    data_dir = tmp_path / "data"
    server = start(data_dir)
    key, secret = root_keys(data_dir)
    use_everything(server, key, secret)
    server.stop()
    # As an older Berth left it: 0755 directories, 0644 files.
    for p, _ in modes(data_dir):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    # A file that is not Berth's is left alone.
    (data_dir / "NOTES").write_text("mine")
    os.chmod(data_dir / "NOTES", 0o644)
    server = start(data_dir)
    try:
        # The old root keys still work, the store still opens.
        assert server.client("iam", key, secret).get_user(UserName="alice")["User"]["UserName"] == "alice"
        for p, m in modes(data_dir):
            if p.name == "NOTES":
                assert m == 0o644
            else:
                assert m == (0o700 if p.is_dir() else 0o600), (str(p), oct(m))
    finally:
        server.stop()
