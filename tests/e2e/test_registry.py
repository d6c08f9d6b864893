"""Issue 7 acceptance: the image registry. docker push/pull with ECR tokens,
skopeo round trips, the distribution API's chunked uploads, mounts, ranges,
tags and referrers, ECR's API (layer uploads, images, policies, lifecycle
rules), and a kill -9 in the middle of a 500 MiB push."""
import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from berth_harness import ACCOUNT, Berth, check_output, load_model

MODEL = load_model("ecr", "2015-09-21")
ECR = "AmazonEC2ContainerRegistry_V20150921"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def raw_ecr(server, operation, payload):
    """A signed ECR call whose answer is validated against the model."""
    status, body, _ = server.raw("ecr", ECR, operation, payload)
    if status == 200:
        check_output(MODEL, operation, body)
    return status, body


def ecr_ok(server, operation, payload):
    status, body = raw_ecr(server, operation, payload)
    assert status == 200, body
    return body


def login_token(server):
    data = ecr_ok(server, "GetAuthorizationToken", {})["authorizationData"][0]
    user, token = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    assert user == "AWS"
    assert abs(data["expiresAt"] - (time.time() + 12 * 3600)) < 120
    return token


def host(server):
    return f"127.0.0.1:{server.port}"


class Oci:
    """Raw distribution-API calls with the ECR token as Basic auth."""

    def __init__(self, server, token=None):
        self.server = server
        self.auth = None
        if token is not None:
            self.auth = "Basic " + base64.b64encode(f"AWS:{token}".encode()).decode()

    def request(self, method, path, body=b"", headers=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        h = dict(headers or {})
        if self.auth:
            h.setdefault("Authorization", self.auth)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def push_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, h, body = self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data,
                                       {"Content-Type": "application/octet-stream"})
        assert status == 201, body
        assert h["docker-content-digest"] == digest
        return digest

    def push_image(self, repo, tag, layer, media_type=OCI_MANIFEST, extra=None):
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}, "x": tag}).encode()
        config_digest = self.push_blob(repo, config)
        layer_digest = self.push_blob(repo, layer)
        docker = media_type == DOCKER_MANIFEST
        manifest = {
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json" if docker
                       else "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker
                        else "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": len(layer)}],
        }
        manifest.update(extra or {})
        raw = json.dumps(manifest).encode()
        status, h, body = self.request("PUT", f"/v2/{repo}/manifests/{tag}", raw,
                                       {"Content-Type": media_type})
        assert status == 201, body
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        assert h["docker-content-digest"] == digest
        return digest, raw


def run(cmd, env=None, input=None, timeout=180, check=True):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    return proc


@pytest.fixture
def docker_env(tmp_path):
    """Docker CLI with its own config dir, so logins stay in this test."""
    env = dict(os.environ)
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    return env


def test_v2_requires_an_ecr_token(berth):
    oci = Oci(berth)
    status, h, body = oci.request("GET", "/v2/")
    assert status == 401
    assert h["www-authenticate"].startswith("Basic realm=")
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert h["docker-distribution-api-version"] == "registry/2.0"
    # A forged token and a wrong user are refused too.
    token = login_token(berth)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert Oci(berth, forged).request("GET", "/v2/")[0] == 401
    bad_user = "Basic " + base64.b64encode(f"bob:{token}".encode()).decode()
    assert oci.request("GET", "/v2/", headers={"Authorization": bad_user})[0] == 401
    # An access key id and its secret are not registry credentials.
    keys = "Basic " + base64.b64encode(b"AKIABERTHTESTROOT001:secret").decode()
    assert oci.request("GET", "/v2/", headers={"Authorization": keys})[0] == 401
    status, _, body = Oci(berth, token).request("GET", "/v2/")
    assert status == 200 and json.loads(body) == {}


def test_docker_push_describe_pull(berth, test_image, docker_env):
    _, out, _ = berth.aws("ecr", "create-repository", "--repository-name", "team/app",
                          "--image-scanning-configuration", "scanOnPush=true")
    check_output(MODEL, "CreateRepository", out)
    repo = out["repository"]
    uri = repo["repositoryUri"]
    assert uri == f"{host(berth)}/team/app"
    assert repo["repositoryArn"] == f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/app"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "MUTABLE"

    # The documented login: aws ecr get-login-password | docker login ...
    aws = str(Path(os.environ.get("BERTH_VENV", ".venv")) / "bin" / "aws")
    cli_env = berth.cli_env()
    password = run([aws, "ecr", "get-login-password"], env=cli_env).stdout.strip()
    run(["docker", "login", "--username", "AWS", "--password-stdin", host(berth)],
        env=docker_env, input=password)
    try:
        run(["docker", "tag", test_image, f"{uri}:v1"], env=docker_env)
        pushed = run(["docker", "push", f"{uri}:v1"], env=docker_env).stdout
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed).group(1)

        _, images, _ = berth.aws("ecr", "describe-images", "--repository-name", "team/app")
        check_output(MODEL, "DescribeImages", images)
        [detail] = images["imageDetails"]
        assert detail["imageDigest"] == digest
        assert detail["imageTags"] == ["v1"]
        assert detail["imageManifestMediaType"] == DOCKER_MANIFEST
        manifest = json.loads(ecr_ok(berth, "BatchGetImage", {
            "repositoryName": "team/app", "imageIds": [{"imageTag": "v1"}]})["images"][0]["imageManifest"])
        assert detail["imageSizeInBytes"] == sum(layer["size"] for layer in manifest["layers"])
        assert abs(detail["imagePushedAt"] - time.time()) < 120

        run(["docker", "rmi", f"{uri}:v1"], env=docker_env)
        pulled = run(["docker", "pull", f"{uri}:v1"], env=docker_env).stdout
        assert f"Digest: {digest}" in pulled
        repo_digests = run(["docker", "inspect", "--format", "{{json .RepoDigests}}", f"{uri}:v1"],
                           env=docker_env).stdout
        assert f"{uri}@{digest}" in repo_digests
    finally:
        run(["docker", "logout", host(berth)], env=docker_env, check=False)
        run(["docker", "rmi", f"{uri}:v1"], env=docker_env, check=False)


def test_skopeo_round_trip_is_byte_identical(berth, test_image, tmp_path):
    ecr_ok(berth, "CreateRepository", {"repositoryName": "skopeo/app"})
    token = login_token(berth)
    src = tmp_path / "src"
    back = tmp_path / "back"
    run(["skopeo", "copy", f"docker-daemon:{test_image}", f"oci:{src}:v1"])
    dest = f"docker://{host(berth)}/skopeo/app:v1"
    run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false",
         "--dest-creds", f"AWS:{token}", f"oci:{src}:v1", dest])
    run(["skopeo", "copy", "--preserve-digests", "--src-tls-verify=false",
         "--src-creds", f"AWS:{token}", dest, f"oci:{back}:v1"])

    def layout(root):
        index = json.loads((root / "index.json").read_text())
        [entry] = index["manifests"]
        blobs = {p.name: p.read_bytes() for p in (root / "blobs" / "sha256").iterdir()}
        return entry["digest"], blobs

    src_digest, src_blobs = layout(src)
    back_digest, back_blobs = layout(back)
    assert back_digest == src_digest
    assert back_blobs == src_blobs
    # Every blob is its own digest: nothing was rewritten on the way.
    for name, data in back_blobs.items():
        assert hashlib.sha256(data).hexdigest() == name

    _, out, _ = berth.aws("ecr", "describe-images", "--repository-name", "skopeo/app")
    assert out["imageDetails"][0]["imageDigest"] == src_digest
    assert out["imageDetails"][0]["imageManifestMediaType"] == OCI_MANIFEST


def test_chunked_upload_with_wrong_digest_stores_nothing(berth):
    ecr_ok(berth, "CreateRepository", {"repositoryName": "chunks"})
    oci = Oci(berth, login_token(berth))
    data = os.urandom(3 * 1024 * 1024 + 17)
    right = "sha256:" + hashlib.sha256(data).hexdigest()
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()

    def chunked(digest):
        status, h, _ = oci.request("POST", "/v2/chunks/blobs/uploads/")
        assert status == 202
        location = h["location"]
        assert h["range"] == "0-0"
        offset = 0
        for size in (1024 * 1024, 1024 * 1024, len(data) - 2 * 1024 * 1024):
            part = data[offset:offset + size]
            status, h, body = oci.request("PATCH", location, part, {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(part) - 1}"})
            assert status == 202, body
            offset += len(part)
            assert h["range"] == f"0-{offset - 1}"
        status, h, _ = oci.request("GET", location)
        assert status == 204 and h["range"] == f"0-{len(data) - 1}"
        return location, oci.request("PUT", f"{location}?digest={digest}")

    location, (status, _, body) = chunked(wrong)
    assert status == 400
    assert json.loads(body)["errors"][0]["code"] == "DIGEST_INVALID"
    for digest in (wrong, right):
        assert oci.request("HEAD", f"/v2/chunks/blobs/{digest}")[0] == 404
    assert oci.request("GET", location)[0] == 404  # the upload is gone
    blob_files = [p for p in (berth.data_dir / "registry" / "blobs").rglob("*") if p.is_file()]
    assert blob_files == []
    assert list((berth.data_dir / "registry" / "uploads").iterdir()) == []
    # ECR's CompleteLayerUpload refuses a wrong digest the same way.
    upload_id = ecr_ok(berth, "InitiateLayerUpload", {"repositoryName": "chunks"})["uploadId"]
    ecr_ok(berth, "UploadLayerPart", {
        "repositoryName": "chunks", "uploadId": upload_id, "partFirstByte": 0,
        "partLastByte": 9, "layerPartBlob": base64.b64encode(data[:10]).decode()})
    status, body = raw_ecr(berth, "CompleteLayerUpload", {
        "repositoryName": "chunks", "uploadId": upload_id, "layerDigests": [wrong]})
    assert status == 400 and body["__type"] == "InvalidLayerException"
    status, body = raw_ecr(berth, "BatchCheckLayerAvailability", {
        "repositoryName": "chunks", "layerDigests": [wrong]})
    assert body["failures"][0]["failureCode"] == "MissingLayerDigest"

    # The right digest stores the blob, and ranges read it back.
    _, (status, h, _) = chunked(right)
    assert status == 201 and h["docker-content-digest"] == right
    status, h, _ = oci.request("HEAD", f"/v2/chunks/blobs/{right}")
    assert status == 200 and int(h["content-length"]) == len(data)
    status, h, body = oci.request("GET", f"/v2/chunks/blobs/{right}",
                                  headers={"Range": "bytes=1000-1999"})
    assert status == 206 and body == data[1000:2000]
    assert h["content-range"] == f"bytes 1000-1999/{len(data)}"
    status, _, body = oci.request("GET", f"/v2/chunks/blobs/{right}")
    assert status == 200 and body == data
    assert oci.request("GET", f"/v2/chunks/blobs/{right}",
                       headers={"Range": f"bytes={len(data)}-"})[0] == 416
    # An out-of-order chunk is refused with where the upload stands.
    status, h, _ = oci.request("POST", "/v2/chunks/blobs/uploads/")
    status, h, _ = oci.request("PATCH", h["location"], b"abc", {"Content-Range": "5-7"})
    assert status == 416 and h["range"] == "0-0"


def test_distribution_api_workflows(berth):
    for name in ("dist/a", "dist/b"):
        ecr_ok(berth, "CreateRepository", {"repositoryName": name})
    oci = Oci(berth, login_token(berth))
    digest, raw = oci.push_image("dist/a", "v1", b"layer-one")
    layer_digest = json.loads(raw)["layers"][0]["digest"]

    # Manifests by tag and by digest, GET and HEAD.
    status, h, body = oci.request("GET", "/v2/dist/a/manifests/v1",
                                  headers={"Accept": OCI_MANIFEST})
    assert status == 200 and body == raw and h["content-type"] == OCI_MANIFEST
    status, h, body = oci.request("HEAD", f"/v2/dist/a/manifests/{digest}")
    assert status == 200 and body == b"" and int(h["content-length"]) == len(raw)
    assert oci.request("GET", "/v2/dist/a/manifests/nope")[0] == 404
    assert oci.request("GET", "/v2/missing/manifests/v1")[0] == 404

    # Cross-repository mount: no bytes move, the blob becomes b's.
    assert oci.request("HEAD", f"/v2/dist/b/blobs/{layer_digest}")[0] == 404
    status, h, _ = oci.request("POST", f"/v2/dist/b/blobs/uploads/?mount={layer_digest}&from=dist/a")
    assert status == 201 and h["location"] == f"/v2/dist/b/blobs/{layer_digest}"
    assert oci.request("HEAD", f"/v2/dist/b/blobs/{layer_digest}")[0] == 200
    # Mounting what the source lacks falls back to an upload session.
    unknown = "sha256:" + "0" * 64
    status, h, _ = oci.request("POST", f"/v2/dist/b/blobs/uploads/?mount={unknown}&from=dist/a")
    assert status == 202 and "/blobs/uploads/" in h["location"]
    assert oci.request("DELETE", h["location"])[0] == 204

    # An index over the image, a referrer (artifact with a subject).
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw),
                                       "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    status, h, body = oci.request("PUT", "/v2/dist/a/manifests/multi", index,
                                  {"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert status == 201, body
    sig_digest, _ = oci.push_image("dist/a", "sig", b"signature", extra={
        "artifactType": "application/vnd.example.sig",
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw)}})
    status, h, body = oci.request("GET", f"/v2/dist/a/referrers/{digest}")
    assert status == 200 and h["content-type"] == "application/vnd.oci.image.index.v1+json"
    refs = json.loads(body)["manifests"]
    assert [(r["digest"], r["artifactType"]) for r in refs] == [(sig_digest, "application/vnd.example.sig")]
    status, h, body = oci.request("GET", f"/v2/dist/a/referrers/{digest}?artifactType=other/type")
    assert json.loads(body)["manifests"] == [] and h["oci-filters-applied"] == "artifactType"

    # Tags list with pagination.
    for t in ("a1", "a2", "a3"):
        status, _, _ = oci.request("PUT", f"/v2/dist/a/manifests/{t}", raw, {"Content-Type": OCI_MANIFEST})
        assert status == 201
    status, h, body = oci.request("GET", "/v2/dist/a/tags/list")
    assert json.loads(body) == {"name": "dist/a", "tags": ["a1", "a2", "a3", "multi", "sig", "v1"]}
    status, h, body = oci.request("GET", "/v2/dist/a/tags/list?n=2")
    assert json.loads(body)["tags"] == ["a1", "a2"]
    assert h["link"] == '</v2/dist/a/tags/list?n=2&last=a2>; rel="next"'
    status, h, body = oci.request("GET", "/v2/dist/a/tags/list?n=2&last=a2")
    assert json.loads(body)["tags"] == ["a3", "multi"]
    status, h, body = oci.request("GET", "/v2/dist/a/tags/list?n=10&last=multi")
    assert json.loads(body)["tags"] == ["sig", "v1"] and "link" not in h

    # A manifest naming a blob the repository lacks is refused.
    bad = json.loads(raw)
    bad["layers"][0]["digest"] = unknown
    status, _, body = oci.request("PUT", "/v2/dist/b/manifests/bad", json.dumps(bad).encode(),
                                  {"Content-Type": OCI_MANIFEST})
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    # A digest reference that does not match the body is refused.
    status, _, body = oci.request("PUT", f"/v2/dist/a/manifests/{unknown}", raw,
                                  {"Content-Type": OCI_MANIFEST})
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "DIGEST_INVALID"

    # Deletes: a tag, a manifest (with its tags), a blob.
    assert oci.request("DELETE", "/v2/dist/a/manifests/a3")[0] == 202
    assert oci.request("GET", "/v2/dist/a/manifests/a3")[0] == 404
    assert oci.request("DELETE", f"/v2/dist/a/manifests/{sig_digest}")[0] == 202
    assert oci.request("GET", "/v2/dist/a/manifests/sig")[0] == 404
    assert json.loads(oci.request("GET", f"/v2/dist/a/referrers/{digest}")[2])["manifests"] == []
    assert oci.request("DELETE", f"/v2/dist/b/blobs/{layer_digest}")[0] == 202
    assert oci.request("HEAD", f"/v2/dist/b/blobs/{layer_digest}")[0] == 404
    assert oci.request("HEAD", f"/v2/dist/a/blobs/{layer_digest}")[0] == 200

    # sha512 digests are verified too.
    data = b"sha512 content"
    d512 = "sha512:" + hashlib.sha512(data).hexdigest()
    status, _, _ = oci.request("POST", f"/v2/dist/a/blobs/uploads/?digest={d512}", data)
    assert status == 201
    assert oci.request("GET", f"/v2/dist/a/blobs/{d512}")[2] == data
    status, _, _ = oci.request("POST", f"/v2/dist/a/blobs/uploads/?digest={d512[:-1]}0", b"x")
    assert status == 400

    status, _, body = oci.request("GET", "/v2/_catalog")
    assert json.loads(body)["repositories"] == ["dist/a", "dist/b"]


def test_immutable_tags_refuse_overwrite(berth):
    out = ecr_ok(berth, "CreateRepository", {"repositoryName": "frozen", "imageTagMutability": "IMMUTABLE"})
    assert out["repository"]["imageTagMutability"] == "IMMUTABLE"
    oci = Oci(berth, login_token(berth))
    first, raw = oci.push_image("frozen", "v1", b"first")
    # The same image again under the same tag is fine for docker push.
    status, _, _ = oci.request("PUT", "/v2/frozen/manifests/v1", raw, {"Content-Type": OCI_MANIFEST})
    assert status == 201
    with pytest.raises(AssertionError):
        oci.push_image("frozen", "v1", b"second")
    second, raw2 = oci.push_image("frozen", "v2", b"second")
    status, _, body = oci.request("PUT", "/v2/frozen/manifests/v1", raw2, {"Content-Type": OCI_MANIFEST})
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "TAG_INVALID"
    ecr = berth.client("ecr")
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName="frozen", imageManifest=raw2.decode(), imageTag="v1")
    assert e.value.response["Error"]["Code"] == "ImageTagAlreadyExistsException"
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName="frozen", imageManifest=raw.decode(), imageTag="v1")
    assert e.value.response["Error"]["Code"] == "ImageAlreadyExistsException"
    images = ecr.batch_get_image(repositoryName="frozen", imageIds=[{"imageTag": "v1"}])["images"]
    assert images[0]["imageId"]["imageDigest"] == first
    # Turning mutability back on lets the tag move.
    out = ecr_ok(berth, "PutImageTagMutability", {"repositoryName": "frozen", "imageTagMutability": "MUTABLE"})
    assert out["imageTagMutability"] == "MUTABLE"
    ecr.put_image(repositoryName="frozen", imageManifest=raw2.decode(), imageTag="v1")
    images = ecr.batch_get_image(repositoryName="frozen", imageIds=[{"imageTag": "v1"}])["images"]
    assert images[0]["imageId"]["imageDigest"] == second


def test_lifecycle_policy_keeps_the_newest_two(berth):
    ecr_ok(berth, "CreateRepository", {"repositoryName": "rotating"})
    oci = Oci(berth, login_token(berth))
    digests = []
    for n in range(4):
        digests.append(oci.push_image("rotating", f"build-{n}", f"layer {n}".encode())[0])
        time.sleep(0.05)
    policy = {"rules": [
        {"rulePriority": 1, "description": "keep two builds",
         "selection": {"tagStatus": "tagged", "tagPrefixList": ["build-"],
                       "countType": "imageCountMoreThan", "countNumber": 2},
         "action": {"type": "expire"}}]}
    _, out, _ = berth.aws("ecr", "put-lifecycle-policy", "--repository-name", "rotating",
                          "--lifecycle-policy-text", json.dumps(policy))
    check_output(MODEL, "PutLifecyclePolicy", out)
    deadline = time.time() + 20
    while time.time() < deadline:
        _, listed, _ = berth.aws("ecr", "list-images", "--repository-name", "rotating")
        if len(listed["imageIds"]) == 2:
            break
        time.sleep(0.2)
    check_output(MODEL, "ListImages", listed)
    assert sorted(i["imageDigest"] for i in listed["imageIds"]) == sorted(digests[2:])
    got = ecr_ok(berth, "GetLifecyclePolicy", {"repositoryName": "rotating"})
    assert json.loads(got["lifecyclePolicyText"]) == policy
    assert got["lastEvaluatedAt"] > 0
    status, body = raw_ecr(berth, "PutLifecyclePolicy", {
        "repositoryName": "rotating",
        "lifecyclePolicyText": json.dumps({"rules": [{"rulePriority": 1, "selection": {
            "tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1},
            "action": {"type": "expire"}}]})})
    assert status == 400 and body["__type"] == "InvalidParameterException"
    ecr_ok(berth, "DeleteLifecyclePolicy", {"repositoryName": "rotating"})
    status, body = raw_ecr(berth, "GetLifecyclePolicy", {"repositoryName": "rotating"})
    assert status == 400 and body["__type"] == "LifecyclePolicyNotFoundException"


def test_ecr_api(berth):
    ecr = berth.client("ecr")
    status, body = raw_ecr(berth, "CreateRepository", {"repositoryName": "Bad_Name"})
    assert status == 400 and body["__type"] == "InvalidParameterException"
    status, body = raw_ecr(berth, "CreateRepository", {"repositoryName": "x"})
    assert status == 400 and body["__type"] == "InvalidParameterException"
    created = ecr_ok(berth, "CreateRepository", {
        "repositoryName": "api/app", "tags": [{"Key": "team", "Value": "core"}],
        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "alias/berth"}})
    arn = created["repository"]["repositoryArn"]
    assert created["repository"]["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": "alias/berth"}
    status, body = raw_ecr(berth, "CreateRepository", {"repositoryName": "api/app"})
    assert status == 400 and body["__type"] == "RepositoryAlreadyExistsException"
    status, body = raw_ecr(berth, "DescribeRepositories", {"repositoryNames": ["nope/nope"]})
    assert status == 400 and body["__type"] == "RepositoryNotFoundException"
    for n in range(3):
        ecr_ok(berth, "CreateRepository", {"repositoryName": f"api/more-{n}"})
    page = ecr_ok(berth, "DescribeRepositories", {"maxResults": 2})
    assert len(page["repositories"]) == 2 and page["nextToken"]
    rest = ecr_ok(berth, "DescribeRepositories", {"maxResults": 2, "nextToken": page["nextToken"]})
    names = [r["repositoryName"] for r in page["repositories"] + rest["repositories"]]
    assert names == ["api/app", "api/more-0", "api/more-1", "api/more-2"]

    # Push through ECR's own layer API, then PutImage.
    layer = os.urandom(300_000)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    upload = ecr_ok(berth, "InitiateLayerUpload", {"repositoryName": "api/app"})
    assert upload["partSize"] > 0
    first = 0
    for part in (layer[:200_000], layer[200_000:]):
        out = ecr_ok(berth, "UploadLayerPart", {
            "repositoryName": "api/app", "uploadId": upload["uploadId"], "partFirstByte": first,
            "partLastByte": first + len(part) - 1, "layerPartBlob": base64.b64encode(part).decode()})
        first += len(part)
        assert out["lastByteReceived"] == first - 1
    status, body = raw_ecr(berth, "UploadLayerPart", {
        "repositoryName": "api/app", "uploadId": upload["uploadId"], "partFirstByte": 5,
        "partLastByte": 5, "layerPartBlob": "AA=="})
    assert status == 400 and body["__type"] == "InvalidLayerPartException"
    out = ecr_ok(berth, "CompleteLayerUpload", {
        "repositoryName": "api/app", "uploadId": upload["uploadId"], "layerDigests": [layer_digest]})
    assert out["layerDigest"] == layer_digest
    config = b'{"architecture":"amd64","os":"linux"}'
    oci = Oci(berth, login_token(berth))
    config_digest = oci.push_blob("api/app", config)
    avail = ecr_ok(berth, "BatchCheckLayerAvailability", {
        "repositoryName": "api/app", "layerDigests": [layer_digest, "sha256:" + "1" * 64, "nonsense"]})
    assert avail["layers"] == [{"layerDigest": layer_digest, "layerAvailability": "AVAILABLE",
                                "layerSize": len(layer)}]
    assert [f["failureCode"] for f in avail["failures"]] == ["MissingLayerDigest", "InvalidLayerDigest"]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": layer_digest, "size": len(layer)}]})
    put = ecr_ok(berth, "PutImage", {"repositoryName": "api/app", "imageManifest": manifest,
                                     "imageTag": "v1"})
    digest = put["image"]["imageId"]["imageDigest"]
    assert digest == "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    status, body = raw_ecr(berth, "PutImage", {
        "repositoryName": "api/app", "imageManifest": manifest.replace(layer_digest, "sha256:" + "2" * 64)})
    assert status == 400 and body["__type"] == "LayersNotFoundException"
    ecr_ok(berth, "PutImage", {"repositoryName": "api/app", "imageManifest": manifest, "imageTag": "v2"})

    url = ecr_ok(berth, "GetDownloadUrlForLayer", {"repositoryName": "api/app",
                                                    "layerDigest": layer_digest})["downloadUrl"]
    with urllib.request.urlopen(url) as r:
        assert r.read() == layer
    got = ecr_ok(berth, "BatchGetImage", {"repositoryName": "api/app", "imageIds": [
        {"imageTag": "v1"}, {"imageTag": "missing"}, {"imageDigest": digest, "imageTag": "v2"}]})
    assert [i["imageManifest"] for i in got["images"]] == [manifest, manifest]
    assert got["failures"][0]["failureCode"] == "ImageNotFound"
    listed = ecr_ok(berth, "ListImages", {"repositoryName": "api/app", "filter": {"tagStatus": "TAGGED"}})
    assert sorted(i["imageTag"] for i in listed["imageIds"]) == ["v1", "v2"]
    assert ecr_ok(berth, "ListImages", {"repositoryName": "api/app",
                                        "filter": {"tagStatus": "UNTAGGED"}})["imageIds"] == []
    status, body = raw_ecr(berth, "DescribeImages", {"repositoryName": "api/app",
                                                     "imageIds": [{"imageTag": "nope"}]})
    assert status == 400 and body["__type"] == "ImageNotFoundException"

    # Deleting one of two tags keeps the image; deleting the last removes it.
    out = ecr_ok(berth, "BatchDeleteImage", {"repositoryName": "api/app", "imageIds": [{"imageTag": "v1"}]})
    assert out["imageIds"] == [{"imageDigest": digest, "imageTag": "v1"}]
    assert len(ecr_ok(berth, "DescribeImages", {"repositoryName": "api/app"})["imageDetails"]) == 1
    ecr_ok(berth, "BatchDeleteImage", {"repositoryName": "api/app", "imageIds": [{"imageTag": "v2"}]})
    assert ecr_ok(berth, "DescribeImages", {"repositoryName": "api/app"})["imageDetails"] == []

    # Repository policy.
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Sid": "pull", "Effect": "Allow",
                         "Principal": "*", "Action": ["ecr:BatchGetImage"]}]})
    ecr_ok(berth, "SetRepositoryPolicy", {"repositoryName": "api/app", "policyText": policy})
    assert ecr_ok(berth, "GetRepositoryPolicy", {"repositoryName": "api/app"})["policyText"] == policy
    ecr_ok(berth, "DeleteRepositoryPolicy", {"repositoryName": "api/app"})
    status, body = raw_ecr(berth, "GetRepositoryPolicy", {"repositoryName": "api/app"})
    assert body["__type"] == "RepositoryPolicyNotFoundException"
    status, body = raw_ecr(berth, "SetRepositoryPolicy", {"repositoryName": "api/app", "policyText": "nope"})
    assert body["__type"] == "InvalidParameterException"

    # Tags.
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "env", "Value": "prod"}])
    ecr.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "env", "Value": "prod"}]
    with pytest.raises(ClientError) as e:
        ecr.tag_resource(resourceArn=arn, tags=[{"Key": "aws:x", "Value": "1"}])
    assert e.value.response["Error"]["Code"] == "InvalidTagParameterException"

    # Scanning configuration is stored.
    ecr_ok(berth, "PutImageScanningConfiguration", {"repositoryName": "api/app",
                                                    "imageScanningConfiguration": {"scanOnPush": True}})
    repo = ecr_ok(berth, "DescribeRepositories", {"repositoryNames": ["api/app"]})["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}

    # Delete: refused while images exist, unless forced.
    ecr_ok(berth, "PutImage", {"repositoryName": "api/app", "imageManifest": manifest, "imageTag": "v3"})
    status, body = raw_ecr(berth, "DeleteRepository", {"repositoryName": "api/app"})
    assert body["__type"] == "RepositoryNotEmptyException"
    ecr_ok(berth, "DeleteRepository", {"repositoryName": "api/app", "force": True})
    status, body = raw_ecr(berth, "DescribeImages", {"repositoryName": "api/app"})
    assert body["__type"] == "RepositoryNotFoundException"
    assert oci.request("GET", "/v2/api/app/manifests/v3")[0] == 404

    # Operations Berth does not implement say so, and why.
    for op, code in (("GetSigningConfiguration", "ValidationException"),
                     ("StartReplicationBackfill", "ValidationException"),
                     ("UpdateImageStorageClass", "ImageStorageClassUpdateNotSupportedException")):
        status, body = raw_ecr(berth, op, {})
        assert status == 400 and body["__type"] == code, body
        assert f"Berth does not support ECR {op}: " in body["message"]


def test_kill_during_500mib_push_leaves_no_partial_blob(tmp_path):
    server = Berth(tmp_path / "data").start()
    try:
        ecr_ok(server, "CreateRepository", {"repositoryName": "big"})
        token = login_token(server)
        chunk = 50 * 1024 * 1024
        chunks = 10
        block = os.urandom(1024 * 1024)

        def part(i):
            # 50 MiB of distinct bytes per chunk: a random MiB salted with its index.
            salt = i.to_bytes(4, "big")
            return b"".join(salt + block[4:] if j == 0 else block for j in range(chunk // len(block)))

        sha = hashlib.sha256()
        for i in range(chunks):
            sha.update(part(i))
        digest = "sha256:" + sha.hexdigest()
        oci = Oci(server, token)

        def start():
            status, h, _ = oci.request("POST", "/v2/big/blobs/uploads/")
            assert status == 202
            return h["location"]

        def patch(location, i, sock_hook=None):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.putrequest("PATCH", location)
            conn.putheader("Authorization", oci.auth)
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Range", f"{i * chunk}-{(i + 1) * chunk - 1}")
            conn.putheader("Content-Length", str(chunk))
            conn.endheaders()
            data = memoryview(part(i))
            for off in range(0, chunk, 1024 * 1024):
                if sock_hook and off == chunk // 2:
                    sock_hook()
                conn.send(data[off:off + 1024 * 1024])
            r = conn.getresponse()
            r.read()
            conn.close()
            return r.status

        # A blob acknowledged before the crash must survive it.
        kept = oci.push_blob("big", b"acknowledged before the crash")
        location = start()
        for i in range(5):
            assert patch(location, i) == 202
        # Half-way through the sixth chunk (about 275 MiB in), kill -9.
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            patch(location, 5, sock_hook=server.kill9)

        server.start()
        assert oci.request("HEAD", f"/v2/big/blobs/{digest}")[0] == 404
        blob_files = [p for p in (server.data_dir / "registry" / "blobs").rglob("*") if p.is_file()]
        assert [p.name for p in blob_files] == [kept.split(":")[1]]
        assert oci.request("GET", f"/v2/big/blobs/{kept}")[2] == b"acknowledged before the crash"

        # The session is in the store (any server of several could continue
        # it), so it outlives the restart with the five acknowledged chunks;
        # the half-sent sixth does not count.
        status, h, _ = oci.request("GET", location)
        assert status == 204 and h["range"] == f"0-{5 * chunk - 1}"
        assert len(list((server.data_dir / "registry" / "uploads").iterdir())) == 1
        # The killed request's hold on the upload lapses within seconds (an
        # empty PATCH answers 416 until then); then the upload continues
        # where it stood.
        deadline = time.monotonic() + 40
        while (status := oci.request("PATCH", location, b"")[0]) == 416 \
                and time.monotonic() < deadline:
            time.sleep(1)
        assert status == 202
        for i in range(5, chunks):
            assert patch(location, i) == 202
        status, h, body = oci.request("PUT", f"{location}?digest={digest}")
        assert status == 201, body
        status, h, _ = oci.request("HEAD", f"/v2/big/blobs/{digest}")
        assert status == 200 and int(h["content-length"]) == chunk * chunks
        assert list((server.data_dir / "registry" / "uploads").iterdir()) == []
    finally:
        server.stop()


def test_registry_host_names_repository_uris(tmp_path):
    server = Berth(tmp_path / "data", extra_args=["--registry-host", "registry.internal:5000"]).start()
    try:
        out = ecr_ok(server, "CreateRepository", {"repositoryName": "remote/app"})
        assert out["repository"]["repositoryUri"] == "registry.internal:5000/remote/app"
        data = ecr_ok(server, "GetAuthorizationToken", {})["authorizationData"][0]
        assert data["proxyEndpoint"] == "http://registry.internal:5000"
        # Tokens survive a restart: the signing key is kept in the data dir.
        token = login_token(server)
        server.stop()
        server.start()
        assert Oci(server, token).request("GET", "/v2/")[0] == 200
        key = server.data_dir / "registry" / "token.key"
        assert key.stat().st_mode & 0o777 == 0o600
    finally:
        server.stop()


def test_task_pulls_its_image_from_berth_with_an_ecr_token(berth_agent, test_image, docker_env):
    """The agent gets an ECR token itself (no docker login) and the task runs
    the image it pulled from Berth's registry."""
    _, out, _ = berth_agent.aws("ecr", "create-repository", "--repository-name", "run/app")
    uri = out["repository"]["repositoryUri"]
    token = login_token(berth_agent)
    run(["docker", "login", "--username", "AWS", "--password-stdin", host(berth_agent)],
        env=docker_env, input=token)
    try:
        run(["docker", "tag", test_image, f"{uri}:v1"], env=docker_env)
        run(["docker", "push", f"{uri}:v1"], env=docker_env)
    finally:
        run(["docker", "logout", host(berth_agent)], env=docker_env, check=False)
        run(["docker", "rmi", f"{uri}:v1"], env=docker_env, check=False)
    # The daemon has neither the reference nor credentials for it now.
    assert run(["docker", "image", "inspect", f"{uri}:v1"], check=False).returncode != 0
    ecs = berth_agent.client("ecs")
    ecs.register_task_definition(family="from-ecr", containerDefinitions=[
        {"name": "app", "image": f"{uri}:v1", "memory": 16, "command": ["sleep", "600"]}])
    arn = ecs.run_task(taskDefinition="from-ecr")["tasks"][0]["taskArn"]
    deadline = time.time() + 60
    while True:
        task = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        if task["lastStatus"] in ("RUNNING", "STOPPED") or time.time() > deadline:
            break
        time.sleep(0.2)
    assert task["lastStatus"] == "RUNNING", task.get("stoppedReason")
    assert task["containers"][0]["image"] == f"{uri}:v1"
    ecs.stop_task(task=arn)
    run(["docker", "rmi", "-f", f"{uri}:v1"], check=False)
