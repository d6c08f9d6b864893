"""ECS's native BLUE_GREEN and CANARY deployments behind an application
load balancer, end to end: the new revision starts in the alternate target
group, the test listener reaches it while production still answers with the
old one, production shifts by the listener rule's weights (at once, or a
canary share during its bake), and a revision failing its health checks is
rolled back without production ever serving it. The server runs with
`--deployment-minute-seconds 1` so bake times are seconds."""
import http.client
import threading
import time
from collections import Counter

import pytest

from berth_harness import Berth, remove_task_containers, wait_for
from conftest import instance_ids
from test_elb_ecs import (definition, own_subnets, load_balancer, open_group, resolve,
                          target_group, wait_healthy)


ROLE = "arn:aws:iam::000000000000:role/ecsInfrastructureRole"


@pytest.fixture
def berth_fast(tmp_path, test_image):
    server = Berth(tmp_path / "data", agent=True,
                   extra_args=["--deployment-minute-seconds", "1"]).start()
    yield server
    try:
        ids = instance_ids(server)
    finally:
        server.stop()
    remove_task_containers(ids)


def get(address, port, timeout=5):
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        return r.status, r.read().decode().strip()
    finally:
        conn.close()


def setup(berth, name, config, desired=2):
    """An ALB with a production listener (80) and a test listener (8080),
    each with a rule forwarding to the blue group (the green one at weight
    0), and a service of revision `v1` deployed by `config`."""
    ecs, elb = berth.client("ecs"), berth.client("elbv2")
    subnets, vpc = own_subnets(berth)
    lb = load_balancer(berth, name, subnets, [open_group(berth, vpc, 80),
                                              open_group(berth, vpc, 8080)])
    blue, green = target_group(berth, f"{name}-b", vpc), target_group(berth, f"{name}-g", vpc)
    rules = {}
    for port in (80, 8080):
        listener = elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
            DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
                "StatusCode": "404", "ContentType": "text/plain", "MessageBody": "none"}}]
        )["Listeners"][0]["ListenerArn"]
        rules[port] = elb.create_rule(
            ListenerArn=listener, Priority=10,
            Conditions=[{"Field": "path-pattern", "Values": ["/*"]}],
            Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
                {"TargetGroupArn": blue, "Weight": 100},
                {"TargetGroupArn": green, "Weight": 0}]}}])["Rules"][0]["RuleArn"]
    definition(ecs, name, body="v1")
    ecs.create_service(
        serviceName=name, taskDefinition=name, desiredCount=desired,
        deploymentConfiguration=config,
        loadBalancers=[{"targetGroupArn": blue, "containerName": "web", "containerPort": 8080,
                        "advancedConfiguration": {
                            "alternateTargetGroupArn": green,
                            "productionListenerRule": rules[80],
                            "testListenerRule": rules[8080], "roleArn": ROLE}}])
    wait_healthy(elb, blue, desired)
    wait_for(lambda: completed(ecs, name), 60, interval=0.5, what="the first deployment")
    [address, _] = resolve(berth, lb["DNSName"])
    wait_for(lambda: get(address, 80) == (200, "v1"), 30, interval=0.5, what="production")
    return address, blue, green


def completed(ecs, name):
    service = ecs.describe_services(services=[name])["services"][0]
    return len(service["deployments"]) == 1 and \
        service["deployments"][0]["rolloutState"] == "COMPLETED"


def test_blue_green_tests_the_new_revision_then_switches_without_a_failed_request(berth_fast):
    berth = berth_fast
    ecs = berth.client("ecs")
    address, blue, green = setup(berth, "bg", {"strategy": "BLUE_GREEN",
                                               "bakeTimeInMinutes": 5})
    failures, answered, stop = [], Counter(), threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, body = get(address, 80, timeout=10)
                if status != 200:
                    failures.append((status, body))
                answered[body] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        definition(ecs, "bg", body="v2")
        ecs.update_service(service="bg", taskDefinition="bg")
        seen = []

        def tested():
            test, production = get(address, 8080)[1], get(address, 80)[1]
            seen.append((test, production))
            return test == "v2"
        # With no lifecycle hook, production follows the test listener one
        # engine pass later (milliseconds), which polling may not catch:
        # what is checked is that production never reached v2 before the
        # test listener did, and ECS's stages in order (the CodeDeploy
        # test holds the window open with STOP_DEPLOYMENT and sees it).
        wait_for(tested, 180, interval=0.01, what="the test listener to answer v2 first")
        assert all(p == "v1" for t, p in seen if t != "v2"), seen[-5:]
        # Events come newest first.
        events = [e["message"] for e in reversed(ecs.describe_services(
            services=["bg"])["services"][0]["events"])]
        stages = [m for m in events if "traffic" in m and "(deployment" in m]
        assert any("test traffic shifting to the new revision" in m for m in stages), stages
        test_at = next(i for i, m in enumerate(stages) if "test traffic shifting" in m)
        assert not any("production traffic" in m for m in stages[:test_at]), stages
        wait_for(lambda: get(address, 80)[1] == "v2", 60, interval=0.2, what="production on v2")
        wait_for(lambda: completed(ecs, "bg"), 120, interval=1, what="the deployment to complete")
    finally:
        stop.set()
        thread.join(timeout=20)
    assert failures == [], failures[:5]
    assert answered["v1"] > 0 and answered["v2"] > 0, answered
    arns = [d["serviceDeploymentArn"] for d in ecs.list_service_deployments(
        service="bg")["serviceDeployments"]]
    described = ecs.describe_service_deployments(serviceDeploymentArns=arns)["serviceDeployments"]
    assert any(d["status"] == "SUCCESSFUL" and d.get("lifecycleStage") == "CLEAN_UP"
               for d in described), described


def test_canary_sends_its_share_during_the_bake(berth_fast):
    berth = berth_fast
    ecs = berth.client("ecs")
    address, _, _ = setup(berth, "canary", {
        "strategy": "CANARY", "bakeTimeInMinutes": 1,
        "canaryConfiguration": {"canaryPercent": 10.0, "canaryBakeTimeInMinutes": 600}})
    definition(ecs, "canary", body="v2")
    ecs.update_service(service="canary", taskDefinition="canary")
    # The canary share is on once the test listener answers v2 and
    # production answers v2 at all.
    wait_for(lambda: get(address, 8080)[1] == "v2", 180, interval=0.5, what="test traffic")
    wait_for(lambda: any(get(address, 80)[1] == "v2" for _ in range(50)), 60, interval=0.2,
             what="the canary share")
    time.sleep(1)
    counts = Counter(get(address, 80) for _ in range(2000))
    assert set(counts) <= {(200, "v1"), (200, "v2")}, counts
    assert 0.07 <= counts[(200, "v2")] / 2000 <= 0.13, counts


def test_a_failing_revision_is_rolled_back_before_production_serves_it(berth_fast):
    berth = berth_fast
    ecs = berth.client("ecs")
    address, blue, green = setup(berth, "fail", {
        "strategy": "BLUE_GREEN", "bakeTimeInMinutes": 1,
        "deploymentCircuitBreaker": {"enable": True, "rollback": True}}, desired=3)
    # The new revision's health page answers 500.
    ecs.register_task_definition(family="fail", containerDefinitions=[{
        "name": "web", "image": "berth-test/busybox:latest", "memory": 64, "essential": True,
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        "entryPoint": ["sh", "-c"],
        "command": ["mkdir -p /www && echo v2 > /www/index.html && exec httpd -f -p 8080 -h /www"]}])
    ecs.update_service(service="fail", taskDefinition="fail")
    answers = Counter()

    def rolled_back():
        for _ in range(20):
            answers[get(address, 80)] += 1
        arns = [d["serviceDeploymentArn"] for d in ecs.list_service_deployments(
            service="fail")["serviceDeployments"]]
        described = ecs.describe_service_deployments(
            serviceDeploymentArns=arns)["serviceDeployments"]
        return any(d["status"] == "ROLLBACK_SUCCESSFUL" for d in described)
    try:
        wait_for(rolled_back, 300, interval=1, what="the rollback")
    except AssertionError:
        service = ecs.describe_services(services=["fail"])["services"][0]
        raise AssertionError((service["deployments"],
                              [e["message"] for e in service["events"]][:30]))
    assert set(answers) == {(200, "v1")}, answers
    assert get(address, 8080) == (200, "v1")
    events = [e["message"] for e in ecs.describe_services(services=["fail"])["services"][0]["events"]]
    assert any("deployment failed" in m for m in events), events[:10]
