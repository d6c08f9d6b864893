"""Issue 16, items 7, 8, 9 and 13: the HTTP front holds against clients who
never authenticate (idle floods, slowloris, slow and huge bodies, descriptor
exhaustion), signatures cover what selects the operation, and Berth's own
endpoints are signed."""
import json
import resource
import socket
import statistics
import time
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from berth_harness import ACCESS_KEY, REGION, SECRET_KEY, Berth

ECS = "AmazonEC2ContainerServiceV20141113"


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def raise_own_fd_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def describe_latency(server, rounds=5):
    """Seconds per signed DescribeClusters on a fresh connection each."""
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        status, body, _ = server.raw("ecs", ECS, "DescribeClusters", {})
        times.append(time.monotonic() - started)
        assert status == 200, body
    return statistics.median(times)


def connect(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return s


def slow_body_headers(content_length, authorization=None):
    lines = [
        "POST / HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/x-amz-json-1.1",
        f"X-Amz-Target: {ECS}.CreateCluster",
        f"Content-Length: {content_length}",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
        lines.append(f"X-Amz-Date: {time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(sock):
    """The status code of the response on `sock`, or None if it closed."""
    sock.settimeout(5)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
    return int(data.split(b" ", 2)[1])


def test_floods_of_idle_and_slow_unauthenticated_connections(berth):
    raise_own_fd_limit(4096)
    # Warm up, then take the baseline.
    describe_latency(berth)
    before = rss_mb(berth.proc.pid)
    socks = []
    try:
        for _ in range(200):
            socks.append(connect(berth))
        day = time.strftime("%Y%m%d", time.gmtime())
        # Unauthenticated bodies: no signature, a garbage one, and one that
        # names a real access key but cannot be verified until the body is read.
        forms = [
            None,
            "AWS4-HMAC-SHA256 Credential=AKIANOSUCHKEY0000000/%s/us-east-1/ecs/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00" % day,
            "AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/ecs/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00"
            % (ACCESS_KEY, day),
        ]
        refused_early = []
        for i in range(200):
            form = forms[i % 3]
            s = connect(berth)
            # 16 MB declared for the first two forms; just under the
            # operation's cap for the one that reaches the body.
            length = 1_000_000 if form and ACCESS_KEY in form else 16_000_000
            s.sendall(slow_body_headers(length, form) + b"{")
            socks.append(s)
            if form is None or ACCESS_KEY not in form:
                refused_early.append(s)
        # Trickle one more byte into every slow body.
        for s in socks[200:]:
            try:
                s.sendall(b" ")
            except OSError:
                pass
        # The ones that cannot be authentic were answered without reading.
        statuses = [status_of(s) for s in refused_early[:20]]
        assert all(code in (403, None) for code in statuses), statuses
        assert any(code == 403 for code in statuses), statuses
        latency = describe_latency(berth)
        assert latency < 0.1, f"DescribeClusters took {latency * 1000:.0f} ms under the flood"
        peak = rss_mb(berth.proc.pid)
        assert peak < 300, f"server RSS {peak:.0f} MB under the flood"
    finally:
        for s in socks:
            s.close()
    # Memory returns once they are gone.
    deadline = time.time() + 10
    after = rss_mb(berth.proc.pid)
    while after > before * 1.2 and time.time() < deadline:
        time.sleep(0.5)
        after = rss_mb(berth.proc.pid)
    print(f"rss before {before:.1f} MB, peak {peak:.1f} MB, after {after:.1f} MB, "
          f"latency under flood {latency * 1000:.1f} ms")
    assert after <= before * 1.2, (before, peak, after)


def test_descriptor_exhaustion_leaves_room_for_signed_calls(tmp_path):
    """With a 1,024 descriptor limit, 1,100 idle sockets used to stop the
    API; the listener now evicts the quietest idle connection."""
    raise_own_fd_limit(4096)

    def limit_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    server = Berth(tmp_path / "data")
    server.preexec_fn = limit_fds
    server.start()
    socks = []
    try:
        for _ in range(1100):
            try:
                socks.append(connect(server))
            except OSError:
                break
        assert len(socks) >= 1000
        latency = describe_latency(server, rounds=3)
        assert latency < 1.0, latency
        with urllib.request.urlopen(server.endpoint + "/_berth/health", timeout=5) as r:
            assert r.status == 200
    finally:
        for s in socks:
            s.close()
        server.stop()


def test_partial_headers_are_closed_after_the_header_timeout(tmp_path):
    server = Berth(tmp_path / "data", extra_args=["--header-timeout", "2"]).start()
    try:
        s = connect(server)
        s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        s.settimeout(10)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started
        # Closed (or answered 408) within the timeout plus slack.
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
        assert 1.5 <= elapsed < 6, elapsed
        s.close()
        # An idle keep-alive connection is closed the same way.
        idle = connect(server)
        idle.settimeout(10)
        started = time.monotonic()
        assert idle.recv(4096) == b""
        assert time.monotonic() - started < 6
        idle.close()
    finally:
        server.stop()


def test_oversized_bodies_are_refused_before_they_are_read(berth):
    # Signed with the root key (precheck passes); 5 MB declared for an
    # operation that accepts 1 MB: 413 at once, only the head was sent.
    day = time.strftime("%Y%m%d", time.gmtime())
    auth = ("AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/ecs/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00" % (ACCESS_KEY, day))
    s = connect(berth)
    s.sendall(slow_body_headers(5_000_000, auth))
    started = time.monotonic()
    assert status_of(s) == 413
    assert time.monotonic() - started < 2
    s.close()


def send(server, method, url, headers, body):
    # The body sent is `body`, whatever length was signed.
    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_a_signature_for_one_operation_cannot_run_another(berth):
    ecs = berth.client("ecs")
    ecs.create_cluster(clusterName="keep-me")
    creds = Credentials(ACCESS_KEY, SECRET_KEY)

    # A presigned URL whose signature covers only Host (as an attacker
    # would make one, or find one), replayed with DeleteCluster.
    request = AWSRequest(method="POST", url=berth.endpoint + "/", data=b"",
                         headers={})
    SigV4QueryAuth(creds, "ecs", REGION, expires=60).add_auth(request)
    prepared = request.prepare()
    status, body = send(berth, "POST", prepared.url, {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"{ECS}.DeleteCluster",
    }, b'{"cluster":"keep-me"}')
    assert status == 403, body
    assert body["__type"] == "InvalidSignatureException"
    assert "'X-Amz-Target' must be a 'SignedHeader'" in body["message"]

    # A presigned ListServices (target signed) cannot carry another body:
    # the body is always covered.
    request = AWSRequest(method="POST", url=berth.endpoint + "/", data=b"", headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"{ECS}.DescribeClusters",
    })
    SigV4QueryAuth(creds, "ecs", REGION, expires=60).add_auth(request)
    prepared = request.prepare()
    status, body = send(berth, "POST", prepared.url, dict(prepared.headers), b"")
    assert status == 200, body
    status, body = send(berth, "POST", prepared.url, dict(prepared.headers),
                        b'{"clusters":["keep-me"]}')
    assert status == 403 and body["__type"] == "InvalidSignatureException", body

    # UNSIGNED-PAYLOAD is refused outside the registry.
    request = AWSRequest(method="POST", url=berth.endpoint + "/", data=b"{}", headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"{ECS}.DeleteCluster",
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
    })
    SigV4Auth(creds, "ecs", REGION).add_auth(request)
    prepared = request.prepare()
    status, body = send(berth, "POST", prepared.url, dict(prepared.headers),
                        b'{"cluster":"keep-me"}')
    assert status == 403, body
    assert "UNSIGNED-PAYLOAD" in body["message"]

    clusters = ecs.describe_clusters(clusters=["keep-me"])["clusters"]
    assert clusters and clusters[0]["status"] == "ACTIVE"


def test_controller_activity_is_signed(berth):
    try:
        urllib.request.urlopen(berth.endpoint + "/_berth/controllers", timeout=5)
        raise AssertionError("unsigned /_berth/controllers answered")
    except urllib.error.HTTPError as e:
        assert e.code == 403
        assert json.loads(e.read())["__type"] == "MissingAuthenticationTokenException"
    request = AWSRequest(method="GET", url=berth.endpoint + "/_berth/controllers")
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "ecs", REGION).add_auth(request)
    prepared = request.prepare()
    with urllib.request.urlopen(urllib.request.Request(
            prepared.url, headers=dict(prepared.headers)), timeout=5) as r:
        assert "services" in json.loads(r.read())
    # A user without berth:DescribeControllers is refused.
    iam = berth.client("iam")
    iam.create_user(UserName="nosy")
    key = iam.create_access_key(UserName="nosy")["AccessKey"]
    request = AWSRequest(method="GET", url=berth.endpoint + "/_berth/controllers")
    SigV4Auth(Credentials(key["AccessKeyId"], key["SecretAccessKey"]), "ecs", REGION).add_auth(request)
    prepared = request.prepare()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(
            prepared.url, headers=dict(prepared.headers)), timeout=5)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["__type"] == "AccessDeniedException"


def test_raw_garbage_on_the_socket_never_stops_the_server(berth):
    """A bounded fuzz of the HTTP front over a real socket."""
    import random
    rng = random.Random(16)
    pieces = [b"GET ", b"POST ", b"/v2/", b"/_berth/", b"%", b"%a", b"\xc3\xa9", b"\r\n",
              b"Host: x\r\n", b"Content-Length: ", b"99999999999999999999", b"-1",
              b"Transfer-Encoding: chunked\r\n", b"X-Amz-Target: ", b"\x00", b"\xff",
              b"Authorization: AWS4-HMAC-SHA256 Credential=", b"HTTP/1.1", b"HTTP/9.9",
              b" ", b"\n", b"0\r\n\r\n"]
    for _ in range(300):
        payload = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        s = connect(berth)
        try:
            s.sendall(payload + b"\r\n\r\n")
            s.settimeout(2)
            s.recv(1024)
        except OSError:
            pass
        finally:
            s.close()
    assert describe_latency(berth, rounds=1) < 1.0


def test_source_ip_is_the_callers_address(berth):
    """Issue 16 item 12: aws:SourceIp is the address the request came from
    (loopback here), for the API and for the registry's /v2/."""
    import hashlib
    import http.client

    from botocore.exceptions import ClientError

    iam = berth.client("iam")

    def user(name, *statements):
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": list(statements)}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def list_from(cidr):
        return {"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": cidr}}}

    def refusal(client_call):
        with pytest.raises(ClientError) as e:
            client_call()
        return e.value.response["Error"]

    berth.client("ecs").create_cluster(clusterName="seen")
    local = user("local-lister", list_from("127.0.0.0/8"))
    remote = user("remote-lister", list_from("10.0.0.0/8"))
    not_denied = user("not-denied",
                      {"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"},
                      {"Effect": "Deny", "Action": "ecs:ListClusters", "Resource": "*",
                       "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.1/32"}}})
    denied = user("denied",
                  {"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"},
                  {"Effect": "Deny", "Action": "ecs:ListClusters", "Resource": "*",
                   "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}})
    cluster = f"arn:aws:ecs:{REGION}:000000000000:cluster/seen"

    assert berth.client("ecs", *local).list_clusters()["clusterArns"] == [cluster]
    error = refusal(berth.client("ecs", *remote).list_clusters)
    assert error["Code"] == "AccessDeniedException", error
    assert error["Message"] == (
        "User: arn:aws:iam::000000000000:user/remote-lister is not authorized to perform: "
        "ecs:ListClusters on resource: * because no identity-based policy allows the "
        "ecs:ListClusters action"), error
    # A Deny unless the caller is 127.0.0.1 does not refuse a loopback caller
    # (were aws:SourceIp missing, NotIpAddress would match and deny) ...
    assert berth.client("ecs", *not_denied).list_clusters()["clusterArns"] == [cluster]
    # ... and a Deny for loopback callers does refuse one.
    error = refusal(berth.client("ecs", *denied).list_clusters)
    assert error["Code"] == "AccessDeniedException"
    assert "with an explicit deny in an identity-based policy" in error["Message"], error

    # The registry: an image pushed by root over raw /v2/.
    ecr = berth.client("ecr")
    ecr.create_repository(repositoryName="ip/app")
    repo = f"arn:aws:ecr:{REGION}:000000000000:repository/ip/app"

    def v2(method, path, auth, body=b"", headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", berth.port, timeout=30)
        conn.request(method, path, body=body, headers={"Authorization": auth, **(headers or {})})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def login(ecr_client):
        token = ecr_client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        return "Basic " + token

    root_auth = login(ecr)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = b"a layer only loopback callers may pull"
    digests = []
    for blob in (config, layer):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        status, body = v2("POST", f"/v2/ip/app/blobs/uploads/?digest={digest}", root_auth, blob)
        assert status == 201, body
        digests.append(digest)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digests[0], "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digests[1], "size": len(layer)}],
    }).encode()
    status, body = v2("PUT", "/v2/ip/app/manifests/v1", root_auth, manifest,
                      {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 201, body

    def puller(name, cidr):
        return user(name,
                    {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                    {"Effect": "Allow", "Resource": repo,
                     "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                "ecr:BatchCheckLayerAvailability"],
                     "Condition": {"IpAddress": {"aws:SourceIp": cidr}}})

    local_auth = login(berth.client("ecr", *puller("local-puller", "127.0.0.0/8")))
    status, body = v2("GET", "/v2/ip/app/manifests/v1", local_auth, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200, body
    assert json.loads(body)["layers"][0]["digest"] == digests[1]
    status, body = v2("GET", f"/v2/ip/app/blobs/{digests[1]}", local_auth)
    assert (status, body) == (200, layer)
    status, _ = v2("HEAD", f"/v2/ip/app/blobs/{digests[1]}", local_auth)
    assert status == 200

    remote_auth = login(berth.client("ecr", *puller("remote-puller", "10.0.0.0/8")))
    status, body = v2("GET", "/v2/ip/app/manifests/v1", remote_auth)
    assert status == 403, body
    error = json.loads(body)["errors"][0]
    assert error["code"] == "DENIED"
    assert error["message"] == (
        "User: arn:aws:iam::000000000000:user/remote-puller is not authorized to perform: "
        f"ecr:BatchGetImage on resource: {repo} because no identity-based policy allows the "
        "ecr:BatchGetImage action"), error
    status, body = v2("GET", f"/v2/ip/app/blobs/{digests[1]}", remote_auth)
    assert status == 403, body
