"""Issue 16 items 2, 3 and 10: the registry (/v2/) applies IAM to every
request as the ECR action it is, for the principal its token was issued to,
with repository policies taking part; a GetDownloadUrlForLayer URL allows
its one layer and nothing else; garbage paths answer 4xx, never a dropped
connection."""
import base64
import hashlib
import http.client
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from berth_harness import ACCOUNT, wait_for

REGION = "us-east-1"


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def repo_arn(name):
    return f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}"


def user(server, name, *statements):
    """An IAM user with an inline policy of `statements`; its CLI env."""
    server.aws("iam", "create-user", "--user-name", name)
    if statements:
        server.aws("iam", "put-user-policy", "--user-name", name, "--policy-name", "p",
                   "--policy-document", policy(*statements))
    _, out, _ = server.aws("iam", "create-access-key", "--user-name", name)
    key = out["AccessKey"]
    return server.cli_env(key["AccessKeyId"], key["SecretAccessKey"])


def login_only():
    return {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}


def host(server):
    return f"127.0.0.1:{server.port}"


def run(cmd, env=None, input=None, timeout=180, check=True):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    return proc


def password(server, env):
    aws = str(Path(os.environ.get("BERTH_VENV", ".venv")) / "bin" / "aws")
    return run([aws, "ecr", "get-login-password"], env=env).stdout.strip()


class Docker:
    """The docker CLI with its own config dir (its own login)."""

    def __init__(self, tmp_path, name):
        self.env = dict(os.environ)
        self.env["DOCKER_CONFIG"] = str(tmp_path / f"docker-{name}")
        self.hosts = []

    def login(self, server, aws_env):
        run(["docker", "login", "--username", "AWS", "--password-stdin", host(server)],
            env=self.env, input=password(server, aws_env))
        self.hosts.append(host(server))

    def __call__(self, *args, check=True):
        return run(["docker", *args], env=self.env, check=check)

    def logout(self):
        for h in self.hosts:
            self("logout", h, check=False)


def basic(token):
    return "Basic " + base64.b64encode(f"AWS:{token}".encode()).decode()


def oci(server, method, path, auth=None, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    h = dict(headers or {})
    if auth:
        h["Authorization"] = auth
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def token_of(server, env):
    """The raw registry token of the CLI identity `env` (the login password)."""
    return password(server, env)


def refusal(user_name, action, repo):
    return (f"User: arn:aws:iam::{ACCOUNT}:user/{user_name} is not authorized to perform: "
            f"{action} on resource: {repo_arn(repo)}")


@pytest.fixture
def pushed(berth, test_image, tmp_path):
    """Repositories `app` and `other`, each with the test image as :v1,
    pushed by root."""
    root = Docker(tmp_path, "root")
    root.login(berth, berth.cli_env())
    for name in ("app", "other"):
        berth.aws("ecr", "create-repository", "--repository-name", name)
        uri = f"{host(berth)}/{name}:v1"
        root("tag", test_image, uri)
        root("push", uri)
        root("rmi", uri)
    yield
    root.logout()


def test_a_login_alone_neither_pushes_nor_pulls_nor_lists(berth, pushed, test_image, tmp_path):
    env = user(berth, "narrow", login_only())
    docker = Docker(tmp_path, "narrow")
    docker.login(berth, env)  # GetAuthorizationToken is all it may do ...
    try:
        uri = f"{host(berth)}/app"
        docker("tag", test_image, f"{uri}:evil")
        out = docker("push", f"{uri}:evil", check=False)
        assert out.returncode != 0
        assert "denied" in (out.stderr + out.stdout).lower()
        out = docker("pull", f"{uri}:v1", check=False)
        assert out.returncode != 0
        assert "denied" in (out.stderr + out.stdout).lower()
    finally:
        docker("rmi", f"{host(berth)}/app:evil", check=False)
        docker.logout()
    # ... nothing was pushed, and the raw API says why in AWS's words.
    _, out, _ = berth.aws("ecr", "list-images", "--repository-name", "app")
    assert [i.get("imageTag") for i in out["imageIds"]] == ["v1"]
    auth = basic(token_of(berth, env))
    status, body = oci(berth, "GET", "/v2/app/manifests/v1", auth)
    assert status == 403
    error = json.loads(body)["errors"][0]
    assert error["code"] == "DENIED"
    assert error["message"].startswith(refusal("narrow", "ecr:BatchGetImage", "app"))
    status, body = oci(berth, "POST", "/v2/app/blobs/uploads/", auth)
    assert status == 403
    assert refusal("narrow", "ecr:InitiateLayerUpload", "app") in json.loads(body)["errors"][0]["message"]
    status, body = oci(berth, "GET", "/v2/app/tags/list", auth)
    assert status == 403
    status, body = oci(berth, "GET", "/v2/_catalog", auth)
    assert status == 200 and json.loads(body) == {"repositories": []}
    # Root's token sees both.
    status, body = oci(berth, "GET", "/v2/_catalog", basic(token_of(berth, berth.cli_env())))
    assert json.loads(body) == {"repositories": ["app", "other"]}


PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
PUSH = ["ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
        "ecr:PutImage", "ecr:BatchCheckLayerAvailability"]


def test_pull_rights_on_one_repository_and_a_repository_policy_for_push(
        berth, pushed, test_image, tmp_path):
    env = user(berth, "puller", login_only(),
               {"Effect": "Allow", "Action": PULL + ["ecr:DescribeRepositories"],
                "Resource": repo_arn("app")})
    docker = Docker(tmp_path, "puller")
    docker.login(berth, env)
    mine = f"{host(berth)}/app:mine"
    try:
        docker("pull", f"{host(berth)}/app:v1")
        out = docker("pull", f"{host(berth)}/other:v1", check=False)
        assert out.returncode != 0 and "denied" in (out.stderr + out.stdout).lower()
        status, body = oci(berth, "GET", "/v2/_catalog", basic(token_of(berth, env)))
        assert json.loads(body) == {"repositories": ["app"]}

        docker("tag", test_image, mine)
        out = docker("push", mine, check=False)
        assert out.returncode != 0 and "denied" in (out.stderr + out.stdout).lower()
        _, out, _ = berth.aws("ecr", "list-images", "--repository-name", "app")
        assert sorted(i.get("imageTag") for i in out["imageIds"]) == ["v1"]

        # The repository's own policy grants the push.
        berth.aws("ecr", "set-repository-policy", "--repository-name", "app", "--policy-text",
                  policy({"Sid": "push", "Effect": "Allow",
                          "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/puller"},
                          "Action": PUSH}))
        docker("push", mine)
        _, out, _ = berth.aws("ecr", "list-images", "--repository-name", "app")
        assert sorted(i.get("imageTag") for i in out["imageIds"]) == ["mine", "v1"]
        # Still not other.
        other = f"{host(berth)}/other:mine"
        docker("tag", test_image, other)
        out = docker("push", other, check=False)
        assert out.returncode != 0
        docker("rmi", other, check=False)
        # An explicit Deny in the repository policy wins over the user's Allow.
        berth.aws("ecr", "set-repository-policy", "--repository-name", "app", "--policy-text",
                  policy({"Sid": "nopull", "Effect": "Deny",
                          "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/puller"},
                          "Action": "ecr:BatchGetImage"}))
        status, body = oci(berth, "GET", "/v2/app/manifests/v1", basic(token_of(berth, env)))
        assert status == 403
        assert "explicit deny in a resource-based policy" in json.loads(body)["errors"][0]["message"]
    finally:
        docker("rmi", mine, check=False)
        docker("rmi", f"{host(berth)}/app:v1", check=False)
        docker.logout()


def test_a_download_url_fetches_its_layer_and_nothing_else(berth, pushed):
    env = user(berth, "fetcher", login_only(),
               {"Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": repo_arn("app")})
    ecr = berth.client("ecr", env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    manifest = json.loads(ecr.batch_get_image(
        repositoryName="app", imageIds=[{"imageTag": "v1"}])["images"][0]["imageManifest"])
    layer = manifest["layers"][0]["digest"]
    config = manifest["config"]["digest"]
    url = ecr.get_download_url_for_layer(repositoryName="app", layerDigest=layer)["downloadUrl"]
    with urllib.request.urlopen(url, timeout=30) as r:
        data = r.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer
    # Another repository's layer needs its own permission.
    with pytest.raises(Exception) as e:
        ecr.get_download_url_for_layer(repositoryName="other", layerDigest=layer)
    assert "AccessDeniedException" in str(e.value)

    query = url.split("?", 1)[1]
    token = query.split("berth-token=", 1)[1]
    for path in (f"/v2/app/blobs/{config}?{query}",        # another blob
                 f"/v2/other/blobs/{layer}?{query}",       # another repository
                 f"/v2/app/manifests/v1?{query}",          # a manifest
                 f"/v2/_catalog?{query}",                  # the catalog
                 f"/v2/?{query}"):
        status, _ = oci(berth, "GET", path)
        assert status == 401, path
    assert oci(berth, "DELETE", f"/v2/app/blobs/{layer}?{query}")[0] == 401
    # Nor is it a Basic password, not even for its own layer.
    for path in ("/v2/", "/v2/_catalog", "/v2/app/manifests/v1", f"/v2/app/blobs/{layer}"):
        assert oci(berth, "GET", path, basic(token))[0] == 401, path
    # It is short-lived (AWS's are minutes): its claims expire within 10 minutes.
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert claims["e"] - time.time() <= 600 + 5


def raw_request(server, request: bytes) -> bytes:
    """Sends raw bytes; returns the whole answer (empty if the connection dropped)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if len(rest) >= length:
                    break
        return b"".join(chunks)


def test_garbage_paths_answer_4xx_and_never_drop_the_connection(berth):
    berth.aws("ecr", "create-repository", "--repository-name", "app")
    token = token_of(berth, berth.cli_env())
    auth = basic(token).encode()
    paths = [
        b"/v2/%a\xc3\xa9",
        b"/v2/%a%C3%A9",
        b"/v2/%a\xc3\xa9/tags/list",
        b"/v2/app/manifests/%a\xc3\xa9",
        b"/v2/app/manifests/%C3%A9",
        b"/v2/app/blobs/sha256:%ZZ",
        b"/v2/app/blobs/%FF%FE",
        b"/v2/_catalog?n=%a\xc3\xa9&last=%",
        b"/v2/app/tags/list?n=-1",
        b"/v2/app/blobs/uploads/%a\xc3\xa9",
        b"/v2/%00/manifests/v1",
        b"/v2/app/blobs/uploads/?mount=%a\xc3\xa9&from=%",
    ]
    for path in paths:
        for headers in (b"", b"Authorization: " + auth + b"\r\n"):
            for method in (b"GET", b"HEAD", b"POST", b"DELETE"):
                request = (method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers
                           + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                answer = raw_request(berth, request)
                assert answer, f"{method} {path!r}: the connection dropped"
                status = int(answer.split(b" ", 2)[1])
                assert 400 <= status < 500, f"{method} {path!r} answered {status}"
    # The server is well and logged no panic.
    assert berth.proc.poll() is None
    assert "panicked" not in berth.logs()
    status, body = oci(berth, "GET", "/v2/_catalog", basic(token))
    assert status == 200 and json.loads(body) == {"repositories": ["app"]}


def test_agents_pull_task_images_with_their_own_token(berth_agent, test_image, tmp_path):
    """The agent's registry token (GetAuthorizationToken with its own
    credential) pulls the task's image; it could not push."""
    root = Docker(tmp_path, "root")
    root.login(berth_agent, berth_agent.cli_env())
    berth_agent.aws("ecr", "create-repository", "--repository-name", "task/app")
    image = f"{host(berth_agent)}/task/app:v1"
    try:
        root("tag", test_image, image)
        root("push", image)
        root("rmi", image)
    finally:
        root.logout()
    ecs = berth_agent.client("ecs")
    ecs.register_task_definition(family="from-registry", containerDefinitions=[{
        "name": "c", "image": image, "memory": 32, "command": ["sleep", "60"]}])
    arn = ecs.run_task(taskDefinition="from-registry")["tasks"][0]["taskArn"]

    def running():
        [task] = ecs.describe_tasks(cluster="default", tasks=[arn])["tasks"]
        if task["lastStatus"] == "STOPPED":
            raise AssertionError(f"the task stopped: {task.get('stoppedReason')}")
        return task if task["lastStatus"] == "RUNNING" else None

    wait_for(running, 90, what="the task RUNNING")
    ecs.stop_task(cluster="default", task=arn)
    subprocess.run(["docker", "rmi", image], capture_output=True)
