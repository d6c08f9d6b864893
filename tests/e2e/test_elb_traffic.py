"""Load balancers' traffic end to end: HTTPS with imported and Berth-issued
certificates (HTTP/2 by ALPN, HTTP to HTTPS redirects, certificates in use
kept), an NLB's TCP pass-through to an echo task, health checks that take a
sick target out (ECS replaces its task; an ALB whose targets are all
unhealthy still forwards), a kill -9 of the server while a client sends
requests, and the load balancer's security groups."""
import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from berth_harness import Berth, berth_binary, remove_task_containers, wait_for
from conftest import instance_ids
from test_elb_ecs import (own_subnets, definition, get, healthy_targets,
                          load_balancer, open_group, resolve, running, target_group,
                          wait_healthy)

# Load balancers take addresses of the default VPC on the host.

IMAGE = "berth-test/busybox:latest"


def group_for(berth, vpc, ports, cidr="0.0.0.0/0"):
    """A security group letting `cidr` reach each of `ports` (TCP)."""
    ec2 = berth.client("ec2")
    group = ec2.create_security_group(GroupName=f"lb-{time.time_ns()}", Description="lb",
                                      VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": cidr}]}
        for p in ports])
    return group


def curl(*args, timeout=10):
    proc = subprocess.run(["curl", "-sS", "--max-time", str(timeout - 2), *args],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def self_signed(tmp_path, name):
    cert, key = tmp_path / "self.crt", tmp_path / "self.key"
    proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", str(key), "-out", str(cert), "-days", "2",
                           "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return cert, key


def test_https_with_imported_and_issued_certificates_http2_and_redirect(berth, tmp_path):
    elb, acm = berth.client("elbv2"), berth.client("acm")
    subnets, vpc = own_subnets(berth)
    lb = load_balancer(berth, "tls", subnets, [group_for(berth, vpc, [80, 443, 8443])])
    dns = lb["DNSName"]
    cert, key = self_signed(tmp_path, dns)
    imported = acm.import_certificate(Certificate=cert.read_bytes(),
                                      PrivateKey=key.read_bytes())["CertificateArn"]
    issued = acm.request_certificate(DomainName=dns, ValidationMethod="DNS")["CertificateArn"]
    assert acm.describe_certificate(CertificateArn=issued)["Certificate"]["Status"] == "ISSUED"
    ca = subprocess.run([berth_binary(), "ca-certificate", "--endpoint", berth.endpoint],
                        capture_output=True, text=True, timeout=30)
    assert ca.returncode == 0 and "BEGIN CERTIFICATE" in ca.stdout, ca.stderr
    (tmp_path / "ca.pem").write_text(ca.stdout)

    fixed = lambda body: [{"Type": "fixed-response", "FixedResponseConfig": {  # noqa: E731
        "StatusCode": "200", "ContentType": "text/plain", "MessageBody": body}}]
    listeners = {}
    for port, arn, body in ((443, imported, "imported"), (8443, issued, "issued")):
        listeners[port] = elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTPS", Port=port,
            Certificates=[{"CertificateArn": arn}], SslPolicy="ELBSecurityPolicy-2016-08",
            DefaultActions=fixed(body))["Listeners"][0]["ListenerArn"]
        # In use from the moment the listener exists.
        with pytest.raises(ClientError) as e:
            acm.delete_certificate(CertificateArn=arn)
        assert e.value.response["Error"]["Code"] == "ResourceInUseException"
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "redirect", "RedirectConfig": {
                            "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}])
    [address, _] = resolve(berth, dns)

    def https(port, cacert):
        code, out, err = curl("--http2", "--cacert", str(cacert), "--resolve",
                              f"{dns}:{port}:{address}", "-w", " %{http_version}",
                              f"https://{dns}:{port}/")
        return (out if code == 0 else None), err

    # Listeners serve once the data plane applied them; both verify.
    out, _ = wait_for(lambda: (lambda r: r if r[0] else None)(https(443, cert)), 20,
                      interval=0.3, what="the HTTPS listener to answer")
    assert out == "imported 2", out
    out, err = wait_for(lambda: (lambda r: r if r[0] else None)(https(8443, tmp_path / "ca.pem")),
                        20, interval=0.3, what="the second HTTPS listener")
    assert out == "issued 2", (out, err)
    # The imported certificate is not signed by Berth's CA and the other way round.
    assert https(443, tmp_path / "ca.pem")[0] is None
    assert https(8443, cert)[0] is None
    # HTTP/1.1 when the client asks for it only.
    code, out, _ = curl("--http1.1", "--cacert", str(cert), "--resolve", f"{dns}:443:{address}",
                        "-w", " %{http_version}", f"https://{dns}/")
    assert (code, out) == (0, "imported 1.1")

    # routing.http2.enabled=false: ALPN offers HTTP/1.1 only.
    elb.modify_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"], Attributes=[
        {"Key": "routing.http2.enabled", "Value": "false"}])
    wait_for(lambda: https(443, cert)[0] == "imported 1.1", 20, interval=0.3,
             what="HTTP/1.1 once HTTP/2 is off")
    elb.modify_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"], Attributes=[
        {"Key": "routing.http2.enabled", "Value": "true"}])
    wait_for(lambda: https(443, cert)[0] == "imported 2", 20, interval=0.3,
             what="HTTP/2 again")

    # The HTTP listener redirects to HTTPS, same host, path and query.
    code, out, _ = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve",
                        f"{dns}:80:{address}", f"http://{dns}/a/b.html?x=1&y=two")
    status, location = out.split(" ", 1)
    assert status == "301", out
    url = urlsplit(location)
    assert (url.scheme, url.hostname, url.port in (None, 443), url.path, url.query) == \
        ("https", dns, True, "/a/b.html", "x=1&y=two"), location
    # Followed, it lands on the HTTPS listener.
    code, out, _ = curl("-L", "--cacert", str(cert), "--resolve", f"{dns}:80:{address}",
                        "--resolve", f"{dns}:443:{address}", f"http://{dns}/x")
    assert (code, out) == (0, "imported")

    # A certificate a listener uses cannot be deleted.
    for arn in (imported, issued):
        wait_for(lambda: acm.describe_certificate(CertificateArn=arn)["Certificate"]["InUseBy"],
                 20, interval=0.3, what="the certificate in use")
        assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["InUseBy"] == \
            [lb["LoadBalancerArn"]]
        with pytest.raises(ClientError) as e:
            acm.delete_certificate(CertificateArn=arn)
        assert e.value.response["Error"]["Code"] == "ResourceInUseException"
        assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["Status"] == "ISSUED"
    # Once the listener is gone, it can.
    elb.delete_listener(ListenerArn=listeners[8443])
    wait_for(lambda: not acm.describe_certificate(CertificateArn=issued)["Certificate"]["InUseBy"],
             20, interval=0.3, what="the certificate no longer in use")
    acm.delete_certificate(CertificateArn=issued)


def echo_definition(ecs, family):
    ecs.register_task_definition(family=family, containerDefinitions=[{
        "name": "echo", "image": IMAGE, "memory": 64, "essential": True,
        "portMappings": [{"containerPort": 7, "hostPort": 0, "protocol": "tcp"}],
        "entryPoint": ["nc"], "command": ["-ll", "-p", "7", "-e", "cat"]}])


def echo(address, port, payload, timeout=5):
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_nlb_tcp_listener_passes_bytes_to_an_echo_task(berth_agent):
    berth = berth_agent
    ecs, elb = berth.client("ecs"), berth.client("elbv2")
    subnets, vpc = own_subnets(berth)
    lb = elb.create_load_balancer(Name="echo", Type="network", Subnets=subnets)["LoadBalancers"][0]
    tg = elb.create_target_group(
        Name="echo", Protocol="TCP", Port=7, VpcId=vpc, HealthCheckProtocol="TCP",
        HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2,
        UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(TargetGroupArn=tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "3"}])
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=7000,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    # A TLS listener terminates TLS with a Berth-issued certificate.
    acm = berth.client("acm")
    cert = acm.request_certificate(DomainName=lb["DNSName"])["CertificateArn"]
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TLS", Port=7443,
                        Certificates=[{"CertificateArn": cert}],
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    echo_definition(ecs, "echo")
    ecs.create_service(serviceName="echo", taskDefinition="echo", desiredCount=1,
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "echo",
                                       "containerPort": 7}])
    wait_healthy(elb, tg, 1, timeout=60)
    addresses = resolve(berth, lb["DNSName"])
    assert len(addresses) == 2
    for address in addresses:
        payload = b"hello through the NLB\n" + bytes(range(256)) * 64
        assert echo(address, 7000, payload) == payload
    # Many connections, each its own stream.
    for i in range(20):
        payload = f"line {i}\n".encode()
        assert echo(addresses[i % 2], 7000, payload) == payload
    # Through TLS, verified against Berth's CA for the load balancer's name.
    context = ssl.create_default_context(cadata=acm.get_certificate(
        CertificateArn=cert)["CertificateChain"])
    with socket.create_connection((addresses[0], 7443), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=lb["DNSName"]) as s:
            payload = b"secret echo\n" * 100
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            assert got == payload


def sick(address, port):
    """Makes the httpd at address:port fail its health checks."""
    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", "/cgi-bin/sick")
        return conn.getresponse().read()
    finally:
        conn.close()


def host_port(task):
    return [b["hostPort"] for b in task["containers"][0]["networkBindings"]
            if ":" not in b["bindIP"]][0]


def test_a_target_answering_500_turns_unhealthy_and_ecs_replaces_its_task(berth_agent):
    berth = berth_agent
    ecs, elb = berth.client("ecs"), berth.client("elbv2")
    subnets, vpc = own_subnets(berth)
    lb = load_balancer(berth, "sick", subnets, [open_group(berth, vpc)])
    tg = target_group(berth, "sick", vpc)
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    definition(ecs, "sick")
    ecs.create_service(serviceName="sick", taskDefinition="sick", desiredCount=1,
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "web",
                                       "containerPort": 8080}])
    [target] = wait_healthy(elb, tg, 1)
    [task] = running(ecs, "sick")
    assert host_port(task) == target["Target"]["Port"]
    [address, _] = resolve(berth, lb["DNSName"])
    status, body = get(address, "/cgi-bin/sick")
    assert (status, body) == (200, "now sick")
    made_sick = time.time()

    instance, port = target["Target"]["Id"], target["Target"]["Port"]
    said = (f"(service sick) (instance {instance}) (port {port}) is unhealthy in (target-group {tg}) "
            f"due to (reason Health checks failed with these codes: [500]).")

    def unhealthy():
        """When the target turned unhealthy, as ELB shows it, or as ECS
        said it: ECS deregisters the target the moment ELB reports it
        unhealthy, so the unhealthy state itself may last milliseconds
        (the fail-open test below sees it stay)."""
        for h in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]:
            if h["Target"] == target["Target"] and h["TargetHealth"]["State"] == "unhealthy":
                assert h["TargetHealth"]["Reason"] == "Target.ResponseCodeMismatch", h
                assert h["TargetHealth"]["Description"] == (
                    "Health checks failed with these codes: [500]"), h
                return time.time()
        for e in ecs.describe_services(services=["sick"])["services"][0]["events"]:
            if e["message"] == said:
                return e["createdAt"].timestamp()
        return None
    took = wait_for(unhealthy, 30, interval=0.2, what="the target unhealthy") - made_sick
    # Unhealthy threshold 2 × interval 5 s (the next check may be up to one interval away).
    assert 4 <= took <= 17, took

    # ECS stops the task and starts another, which becomes the healthy target.
    def stopped():
        arns = ecs.list_tasks(serviceName="sick", desiredStatus="STOPPED")["taskArns"]
        tasks = ecs.describe_tasks(tasks=arns)["tasks"] if arns else []
        return [t for t in tasks if t["taskArn"] == task["taskArn"]]
    [old] = wait_for(stopped, 30, interval=0.5, what="the sick task stopped")
    assert old["stoppedReason"] == f"Task failed ELB health checks in (target-group {tg})", old

    def replaced():
        tasks = running(ecs, "sick")
        healthy = healthy_targets(elb, tg)
        new = [t for t in tasks if t["taskArn"] != task["taskArn"]]
        if len(new) == 1 and len(healthy) == 1 and healthy[0]["Target"]["Port"] == host_port(new[0]):
            return new[0]
        return None
    wait_for(replaced, 60, interval=0.5, what="a healthy replacement task")
    events = [e["message"] for e in ecs.describe_services(services=["sick"])["services"][0]["events"]]
    assert said in events, events
    task_id = task["taskArn"].rsplit("/", 1)[1]
    assert any(m.startswith("(service sick) has stopped 1 running tasks:") and task_id in m
               for m in events), events
    assert f"(service sick) deregistered 1 targets in (target-group {tg})" in events, events
    status, body = get(address, "/")
    assert status == 200


def test_an_alb_whose_targets_are_all_unhealthy_still_forwards(berth_agent, tmp_path):
    berth = berth_agent
    ecs, elb = berth.client("ecs"), berth.client("elbv2")
    subnets, vpc = own_subnets(berth)
    lb = load_balancer(berth, "open", subnets, [group_for(berth, vpc, [80, 443])])
    tg = target_group(berth, "open", vpc)
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    definition(ecs, "alone")
    arns = [t["taskArn"] for t in ecs.run_task(taskDefinition="alone", count=2)["tasks"]]

    def both_running():
        tasks = ecs.describe_tasks(tasks=arns)["tasks"]
        return tasks if all(t["lastStatus"] == "RUNNING" for t in tasks) else None
    tasks = wait_for(both_running, 60, interval=0.5, what="two tasks running")
    instance = ecs.describe_container_instances(containerInstances=[
        tasks[0]["containerInstanceArn"]])["containerInstances"][0]["ec2InstanceId"]
    ports = [host_port(t) for t in tasks]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance, "Port": p} for p in ports])
    wait_healthy(elb, tg, 2)
    [address, _] = resolve(berth, lb["DNSName"])
    bodies = Counter(get(address, "/")[1] for _ in range(20))
    assert len(bodies) == 2, bodies
    # HTTP/2 from the client (HTTPS, ALPN), HTTP/1.1 to the targets.
    acm = berth.client("acm")
    dns = lb["DNSName"]
    cert = acm.request_certificate(DomainName=dns)["CertificateArn"]
    (tmp_path / "ca.pem").write_text(acm.get_certificate(CertificateArn=cert)["CertificateChain"])
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTPS", Port=443,
                        Certificates=[{"CertificateArn": cert}],
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])

    def over_h2():
        code, out, _ = curl("--http2", "--cacert", str(tmp_path / "ca.pem"), "--resolve",
                            f"{dns}:443:{address}", "-w", " %{http_version}\n",
                            f"https://{dns}/", f"https://{dns}/")
        return out if code == 0 else None
    out = wait_for(over_h2, 20, interval=0.3, what="the HTTPS listener")
    answers_h2 = out.split()
    assert answers_h2[1] == "2" and answers_h2[3] == "2", out
    assert {answers_h2[0], answers_h2[2]} <= set(bodies), out
    made_sick = time.time()
    for p in ports:
        assert sick("127.0.0.1", p).strip() == b"now sick"

    def all_unhealthy():
        health = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
        if len(health) == 2 and all(h["TargetHealth"]["State"] == "unhealthy" for h in health):
            return health
        return None
    health = wait_for(all_unhealthy, 30, interval=0.3, what="every target unhealthy")
    # Unhealthy threshold 2 × interval 5 s (the next check may be up to one interval away).
    assert 4 <= time.time() - made_sick <= 17.5, time.time() - made_sick
    for h in health:
        assert h["TargetHealth"]["Reason"] == "Target.ResponseCodeMismatch", h
        assert h["TargetHealth"]["Description"] == "Health checks failed with these codes: [500]", h
    # Fail-open: both unhealthy targets still get requests.
    answers = Counter()
    for _ in range(20):
        status, body = get(address, "/")
        assert status == 200, (status, body)
        answers[body] += 1
    assert answers == bodies, answers
    # RunTask tasks are not replaced for their targets' health.
    assert all(t["lastStatus"] == "RUNNING" for t in ecs.describe_tasks(tasks=arns)["tasks"])
    for arn in arns:
        ecs.stop_task(task=arn)


def task_hostnames(ecs, tasks):
    """Each task's httpd answers its container's hostname (the container id's first 12)."""
    return {t["containers"][0]["runtimeId"][:12]: t["taskArn"] for t in tasks}


def test_kill9_while_traffic_flows_brings_back_listeners_targets_and_health(tmp_path, test_image):
    berth = Berth(tmp_path / "data", agent=True).start()
    ids = []
    stop = threading.Event()
    answers, failures = [], []
    thread = None
    try:
        ecs, elb = berth.client("ecs"), berth.client("elbv2")
        subnets, vpc = own_subnets(berth)
        lb = load_balancer(berth, "crash", subnets, [open_group(berth, vpc)])
        tg = target_group(berth, "crash", vpc)
        listener = elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])["Listeners"][0]
        definition(ecs, "crash")
        ecs.create_service(serviceName="crash", taskDefinition="crash", desiredCount=3,
                           loadBalancers=[{"targetGroupArn": tg, "containerName": "web",
                                           "containerPort": 8080}])
        wait_healthy(elb, tg, 3)
        addresses = resolve(berth, lb["DNSName"])

        def client():
            i = 0
            while not stop.is_set():
                try:
                    status, body = get(addresses[i % 2], host=lb["DNSName"], timeout=3)
                    answers.append((time.time(), status, body))
                except Exception as e:  # noqa: BLE001 - the server is down for a while
                    failures.append((time.time(), repr(e)))
                    time.sleep(0.05)
                i += 1
        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        wait_for(lambda: len(answers) > 20, 20, what="traffic through the load balancer")
        # ECS stops two tasks, and the server dies while it does.
        ecs.update_service(service="crash", desiredCount=1)
        time.sleep(0.5)
        berth.kill9()
        killed = time.time()
        berth.start()
        ecs, elb = berth.client("ecs"), berth.client("elbv2")

        def settled():
            tasks = running(ecs, "crash")
            health = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
            healthy = [h for h in health if h["TargetHealth"]["State"] == "healthy"]
            if len(tasks) == 1 and len(health) == 1 and len(healthy) == 1 and \
                    healthy[0]["Target"]["Port"] == host_port(tasks[0]):
                return tasks
            return None
        tasks = wait_for(settled, 60, interval=0.5, what="one running task, its target healthy")
        # The records came back as they were.
        assert elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"] == [listener]
        assert resolve(berth, lb["DNSName"]) == addresses
        alive = task_hostnames(ecs, tasks)
        # From now on only the running task answers, and every request does.
        mark = time.time()
        wait_for(lambda: len([a for a in answers if a[0] > mark]) >= 100, 30,
                 what="100 answers after the restart settled")
        after = [a for a in answers if a[0] > mark]
        assert {(s, b) for _, s, b in after} == {(200, b) for b in alive}, Counter(
            (s, b) for _, s, b in after)
        assert not [f for f in failures if f[0] > mark], failures[-3:]
        # Once the restarted server answered, every request was answered, and
        # never by a target the data plane could not reach (a stopped task).
        back = min(t for t, _, _ in answers if t > killed)
        assert not [f for f in failures if f[0] > back], failures[-3:]
        assert [a for a in answers if a[0] > killed and a[1] != 200] == []
        # Before the kill, answers came from three tasks.
        assert len({b for t, s, b in answers if t < killed and s == 200}) == 3
    finally:
        stop.set()
        if thread:
            thread.join(timeout=10)
        try:
            ids = instance_ids(berth)
            berth.client("ecs").update_service(service="crash", desiredCount=0)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
        berth.stop()
        remove_task_containers(ids)


def test_the_load_balancers_security_group_decides_who_reaches_a_listener(berth):
    elb, ec2 = berth.client("elbv2"), berth.client("ec2")
    subnets, vpc = own_subnets(berth)
    group = group_for(berth, vpc, [80], cidr="10.9.9.9/32")
    lb = load_balancer(berth, "guarded", subnets, [group])
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
                            "StatusCode": "200", "ContentType": "text/plain",
                            "MessageBody": "guarded"}}])
    [address, _] = resolve(berth, lb["DNSName"])

    def answer(timeout=3):
        try:
            return get(address, "/", timeout=timeout)
        except OSError:
            return None
    # Give the data plane time to bind, then no answer within 3 s.
    def bound():
        try:
            socket.create_connection((address, 80), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(bound, 20, interval=0.2, what="the listener bound")
    started = time.time()
    assert answer() is None
    assert time.time() - started >= 2.5
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert wait_for(lambda: answer(timeout=2), 20, interval=0.2,
                    what="an answer once the group allows everyone") == (200, "guarded")
    # And taken away again.
    ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    wait_for(lambda: answer(timeout=2) is None, 20, interval=0.2,
             what="no answer once the group no longer allows the client")
    # SetSecurityGroups: another group that lets everyone in.
    elb.set_security_groups(LoadBalancerArn=lb["LoadBalancerArn"],
                            SecurityGroups=[group_for(berth, vpc, [80])])
    assert wait_for(lambda: answer(timeout=2), 20, interval=0.2,
                    what="an answer with the open group") == (200, "guarded")
