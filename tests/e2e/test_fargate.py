"""The Fargate launch type: awsvpc tasks with their own address in a VPC
subnet, security groups enforced in the data path, Fargate task sizes
enforced by cgroups, capacity provider strategies and FARGATE_SPOT
interruption, driven with the real aws CLI and boto3 and real Docker."""
import ipaddress
import json
import math
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from berth_harness import AgentProcess, Berth, berth_binary, check_output, docker, load_model, wait_for

# awsvpc tasks of every test server share the default VPC's host route:
# these tests run one at a time, on one xdist worker.
pytestmark = pytest.mark.xdist_group("awsvpc")

MODEL = load_model("ecs", "2014-11-13")
ECS = "AmazonEC2ContainerServiceV20141113"
IMAGE = "berth-test/busybox:latest"
PAGE = "<html><h1>Amazon ECS Sample App</h1></html>"


def describe(ecs, arns, cluster="default"):
    return ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]


def wait_status(ecs, arns, status, cluster="default", timeout=90.0):
    def done():
        tasks = describe(ecs, arns, cluster)
        bad = [t for t in tasks if t["lastStatus"] == "STOPPED" and status != "STOPPED"]
        assert not bad, f"task stopped: {bad[0].get('stoppedReason')} {bad[0].get('containers')}"
        return tasks if all(t["lastStatus"] == status for t in tasks) else None
    return wait_for(done, timeout, what=f"tasks {status}")


def fetch(ip, port, timeout=3.0):
    """The page at ip:port, or None when the connection times out."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=timeout) as r:
            return r.read().decode()
    except (socket.timeout, TimeoutError):
        return None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            return None
        raise


def default_subnet(ec2, zone="us-east-1a"):
    subnets = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": [zone]}])
    return subnets["Subnets"][0]


def eni_details(task):
    [attachment] = [a for a in task["attachments"] if a["type"] == "ElasticNetworkInterface"]
    return attachment, {d["name"]: d["value"] for d in attachment["details"]}


def sample_fargate_definition(ecs, family="sample-fargate"):
    """The seed guide's Fargate sample, on the local busybox image: an httpd
    serving the sample page on 80, and a sidecar that fetches it over
    localhost and serves its copy on 81."""
    app = {
        "name": "fargate-app", "image": IMAGE, "essential": True, "stopTimeout": 2,
        "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}],
        "entryPoint": ["sh", "-c"],
        "command": [f"mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p 80 -h /www"],
    }
    sidecar = {
        "name": "sidecar", "image": IMAGE, "essential": False, "stopTimeout": 2,
        "portMappings": [{"containerPort": 81, "hostPort": 81, "protocol": "tcp"}],
        "entryPoint": ["sh", "-c"],
        "command": ["mkdir -p /copy; until wget -q -O /copy/index.html http://127.0.0.1:80/; "
                    "do sleep 0.2; done; exec httpd -f -p 81 -h /copy"],
    }
    return ecs.register_task_definition(
        family=family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[app, sidecar])["taskDefinition"]


def test_fargate_task_gets_an_eni_and_its_security_groups_are_enforced(berth_agent):
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    subnet = default_subnet(ec2)
    group = ec2.create_security_group(GroupName="web", Description="web",
                                      VpcId=subnet["VpcId"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    sample_fargate_definition(ecs)

    network = (f"awsvpcConfiguration={{subnets=[{subnet['SubnetId']}],"
               f"securityGroups=[{group}]}}")
    _, out, _ = berth_agent.aws("ecs", "run-task", "--launch-type", "FARGATE",
                                "--task-definition", "sample-fargate",
                                "--network-configuration", network)
    check_output(MODEL, "RunTask", out)
    [task] = out["tasks"]
    assert task["launchType"] == "FARGATE" and "containerInstanceArn" not in task
    attachment, details = eni_details(task)
    assert attachment["status"] == "PRECREATED" and details == {"subnetId": subnet["SubnetId"]}

    [task] = wait_status(ecs, [task["taskArn"]], "RUNNING")
    status, body, _ = berth_agent.raw("ecs", ECS, "DescribeTasks", {"tasks": [task["taskArn"]]})
    assert status == 200, body
    check_output(MODEL, "DescribeTasks", body)
    assert task["platformVersion"] == "1.4.0" and task["capacityProviderName"] == "FARGATE"
    assert task["availabilityZone"] == "us-east-1a" and "containerInstanceArn" not in task
    attachment, details = eni_details(task)
    assert attachment["status"] == "ATTACHED"
    ip = details["privateIPv4Address"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(subnet["CidrBlock"])
    assert details["subnetId"] == subnet["SubnetId"]
    assert details["networkInterfaceId"].startswith("eni-")
    assert len(details["macAddress"].split(":")) == 6
    assert all(c["networkInterfaces"][0]["privateIpv4Address"] == ip for c in task["containers"])
    enis = ec2.describe_network_interfaces(
        NetworkInterfaceIds=[details["networkInterfaceId"]])["NetworkInterfaces"]
    assert enis[0]["PrivateIpAddress"] == ip and enis[0]["Groups"][0]["GroupId"] == group

    # The group allows 80, not 81.
    assert PAGE in wait_for(lambda: fetch(ip, 80), 20, what="port 80 answering")
    assert fetch(ip, 81) is None, "a port the group does not allow must time out"

    # Allowing 81: the sidecar serves what it fetched from the app over
    # localhost (the task's containers share one network namespace).
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 81, "ToPort": 81, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert PAGE in wait_for(lambda: fetch(ip, 81), 20, what="port 81 allowed")

    # Removing the rule for 80 blocks it.
    ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    wait_for(lambda: fetch(ip, 80, timeout=2) is None, 20, what="port 80 blocked")

    # A second task has an address of its own.
    out = ecs.run_task(taskDefinition="sample-fargate", launchType="FARGATE",
                       networkConfiguration={"awsvpcConfiguration": {
                           "subnets": [subnet["SubnetId"]], "securityGroups": [group]}})
    [second] = wait_status(ecs, [out["tasks"][0]["taskArn"]], "RUNNING")
    second_ip = eni_details(second)[1]["privateIPv4Address"]
    assert second_ip != ip

    # Stopped tasks give their interfaces back.
    arns = [task["taskArn"], second["taskArn"]]
    for arn in arns:
        ecs.stop_task(task=arn)
    wait_status(ecs, arns, "STOPPED")
    wait_for(lambda: not ec2.describe_network_interfaces()["NetworkInterfaces"], 30,
             what="ENIs deleted")
    assert all(eni_details(t)[0]["status"] == "DELETED" for t in describe(ecs, arns))


def code_and_message(call, **kwargs):
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_fargate_requests_are_validated_as_ecs_does(berth):
    ecs, ec2 = berth.client("ecs"), berth.client("ec2")
    ecs.create_cluster(clusterName="default")
    container = [{"name": "app", "image": IMAGE}]
    code, message = code_and_message(
        ecs.register_task_definition, family="too-big", networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"], cpu="256", memory="4096",
        containerDefinitions=container)
    assert code == "ClientException"
    assert message == ("No Fargate configuration exists for given values: 256 CPU, 4096 memory. "
                       "See the Amazon ECS documentation for the valid values.")
    ecs.register_task_definition(family="small", networkMode="awsvpc",
                                 requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                                 containerDefinitions=container)
    ecs.register_task_definition(family="bridge", containerDefinitions=[dict(container[0], memory=32)])
    subnet = default_subnet(ec2)["SubnetId"]
    vpc = {"awsvpcConfiguration": {"subnets": [subnet]}}

    cases = [
        (dict(taskDefinition="small", launchType="FARGATE"),
         "Network Configuration must be provided when networkMode 'awsvpc' is specified."),
        (dict(taskDefinition="small", launchType="FARGATE", networkConfiguration=vpc,
              capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}]),
         "Specifying both a launch type and capacity provider strategy is not supported."),
        (dict(taskDefinition="bridge", launchType="FARGATE"),
         "Task definition does not support launch_type FARGATE."),
        (dict(taskDefinition="small", launchType="FARGATE", networkConfiguration={
            "awsvpcConfiguration": {"subnets": ["subnet-0123456789abcdef0"]}}),
         "The subnet ID 'subnet-0123456789abcdef0' does not exist"),
        (dict(taskDefinition="small", launchType="FARGATE", networkConfiguration={
            "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": ["sg-0123456789abcdef0"]}}),
         "The security group 'sg-0123456789abcdef0' does not exist"),
        (dict(taskDefinition="small", launchType="FARGATE", networkConfiguration=vpc,
              overrides={"cpu": "256", "memory": "8192"}),
         "No Fargate configuration exists for given values: 256 CPU, 8192 memory."),
        (dict(taskDefinition="small", networkConfiguration=vpc,
              capacityProviderStrategy=[{"capacityProvider": "MY_ASG", "weight": 1}]),
         "cannot contain a capacity provider that is not associated with the cluster"),
        (dict(taskDefinition="small", networkConfiguration=vpc, capacityProviderStrategy=[
            {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
            {"capacityProvider": "FARGATE_SPOT", "base": 1, "weight": 1}]),
         "Only one capacity provider in a capacity provider strategy can have a base defined."),
        (dict(taskDefinition="small", launchType="FARGATE", networkConfiguration=vpc,
              platformVersion="1.3.0"),
         "platform version (1.3.0) does not exist"),
    ]
    for kwargs, expected in cases:
        code, message = code_and_message(ecs.run_task, **kwargs)
        assert code in ("InvalidParameterException", "ClientException"), (kwargs, code, message)
        assert expected in message, (kwargs, message)
    # Nothing was created by any of them.
    assert ecs.list_tasks()["taskArns"] == []
    assert ec2.describe_network_interfaces()["NetworkInterfaces"] == []


def test_a_task_over_its_memory_is_killed_by_the_oom_killer(berth_agent):
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    subnet = default_subnet(ec2)["SubnetId"]
    ecs.register_task_definition(
        family="hungry", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[{
            "name": "hog", "image": IMAGE, "essential": True,
            # dd's 1 GiB buffer is written in full: twice the task's memory.
            "command": ["sh", "-c", "sleep 1; exec dd if=/dev/zero of=/dev/null bs=1024M count=1"]}])
    out = ecs.run_task(taskDefinition="hungry", launchType="FARGATE", networkConfiguration={
        "awsvpcConfiguration": {"subnets": [subnet]}})
    [task] = wait_status(ecs, [out["tasks"][0]["taskArn"]], "STOPPED", timeout=90)
    assert task["stopCode"] == "EssentialContainerExited", task
    [container] = task["containers"]
    assert container["reason"] == "OutOfMemoryError: Container killed due to memory usage", container
    assert container["exitCode"] == 137


def test_capacity_provider_strategy_splits_and_spot_is_interrupted(berth_agent):
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    subnet = default_subnet(ec2)["SubnetId"]
    ecs.register_task_definition(
        family="svc", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[{
            "name": "app", "image": IMAGE, "essential": True, "stopTimeout": 2,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}])
    vpc = {"awsvpcConfiguration": {"subnets": [subnet]}}
    _, out, _ = berth_agent.aws(
        "ecs", "create-service", "--service-name", "web", "--task-definition", "svc",
        "--desired-count", "8", "--network-configuration",
        f"awsvpcConfiguration={{subnets=[{subnet}]}}",
        "--capacity-provider-strategy", "capacityProvider=FARGATE,base=1,weight=1",
        "capacityProvider=FARGATE_SPOT,weight=3")
    service = out["service"]
    assert "launchType" not in service
    assert [i["capacityProvider"] for i in service["capacityProviderStrategy"]] == ["FARGATE", "FARGATE_SPOT"]

    def service_tasks():
        arns = ecs.list_tasks(serviceName="web")["taskArns"]
        return describe(ecs, arns) if arns else []
    tasks = wait_for(lambda: (lambda t: t if len(t) == 8 else None)(service_tasks()), 60,
                     what="8 service tasks")
    providers = sorted(t["capacityProviderName"] for t in tasks)
    assert providers.count("FARGATE") == 2 and providers.count("FARGATE_SPOT") == 6, providers
    wait_status(ecs, [t["taskArn"] for t in tasks], "RUNNING", timeout=120)

    # Fill what is left of the host with on-demand tasks; the next one
    # reclaims a FARGATE_SPOT task.
    [instance] = ecs.describe_container_instances(
        containerInstances=ecs.list_container_instances()["containerInstanceArns"])["containerInstances"]
    remaining = next(r["integerValue"] for r in instance["remainingResources"] if r["name"] == "CPU")
    filler = []
    while remaining >= 256:
        count = min(10, remaining // 256)
        out = ecs.run_task(taskDefinition="svc", launchType="FARGATE", networkConfiguration=vpc,
                           count=count)
        assert len(out["tasks"]) == count, out["failures"]
        filler += [t["taskArn"] for t in out["tasks"]]
        remaining -= 256 * count
    out = ecs.run_task(taskDefinition="svc", launchType="FARGATE", networkConfiguration=vpc)
    assert out["failures"] == [] and len(out["tasks"]) == 1, out
    interrupted = wait_for(lambda: [t for t in describe(ecs, [t["taskArn"] for t in tasks])
                                    if t.get("stopCode") == "SpotInterruption"], 30,
                           what="a spot task interrupted")
    assert len(interrupted) == 1
    assert interrupted[0]["capacityProviderName"] == "FARGATE_SPOT"
    assert interrupted[0]["stoppedReason"] == "Your Spot Task was interrupted."
    wait_status(ecs, [out["tasks"][0]["taskArn"]], "RUNNING", timeout=90)

    ecs.delete_service(service="web", force=True)
    for arn in filler + [out["tasks"][0]["taskArn"]]:
        ecs.stop_task(task=arn)


def test_berth_usage_meters_a_fargate_task_as_fargate_bills(berth_agent):
    """A task that ran about 90 s at 0.25 vCPU / 0.5 GB: `berth usage` gives
    the vCPU-seconds, GB-seconds and cost of Fargate's formula (per second,
    from the start of the image pull to the stop, one-minute minimum)."""
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    subnet = default_subnet(ec2)["SubnetId"]
    ecs.register_task_definition(
        family="metered", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[{
            "name": "app", "image": IMAGE, "stopTimeout": 2,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}])
    out = ecs.run_task(taskDefinition="metered", launchType="FARGATE", tags=[
        {"key": "team", "value": "web"}], networkConfiguration={
            "awsvpcConfiguration": {"subnets": [subnet]}})
    arn = out["tasks"][0]["taskArn"]
    [task] = wait_status(ecs, [arn], "RUNNING")
    started = task["pullStartedAt"].timestamp()
    time.sleep(max(0.0, started + 90 - time.time()))
    ecs.stop_task(task=arn)
    [task] = wait_status(ecs, [arn], "STOPPED")
    billed = math.ceil(task["stoppedAt"].timestamp() - task["pullStartedAt"].timestamp() - 1e-6)
    assert 90 <= billed <= 100, billed

    def usage(*args):
        done = subprocess.run([berth_binary(), "usage", "--endpoint", berth_agent.endpoint, *args],
                              env=berth_agent.cli_env(), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    report = json.loads(usage("--json", "--tag", "team=web"))
    [line] = report["tasks"]
    assert line["taskArn"] == arn and line["provider"] == "FARGATE"
    assert line["billedSeconds"] == billed
    assert line["vcpuSeconds"] == pytest.approx(0.25 * billed)
    assert line["gbSeconds"] == pytest.approx(0.5 * billed)
    cost = 0.25 * billed / 3600 * 0.04048 + 0.5 * billed / 3600 * 0.004445
    assert line["cost"] == pytest.approx(cost)
    table = usage("--cluster", "default")
    assert f"{0.25 * billed:.2f}" in table and f"{0.5 * billed:.2f}" in table
    assert f"${cost:.8f}" in table, table
    # Another tag matches nothing.
    assert json.loads(usage("--json", "--tag", "team=db"))["tasks"] == []


def test_a_dedicated_fargate_host_serves_every_cluster_and_is_no_container_instance(
        tmp_path, test_image):
    server = Berth(tmp_path / "data").start()
    agent = AgentProcess(server, "fargate-host-1", "default", tmp_path / "agent",
                         args=["--capacity", "fargate"])
    try:
        ecs, ec2 = server.client("ecs"), server.client("ec2")
        ecs.create_cluster(clusterName="default")
        ecs.create_cluster(clusterName="apps")
        agent.start()
        subnet = default_subnet(ec2, "us-east-1b")["SubnetId"]
        ecs.register_task_definition(
            family="tiny", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
            cpu="256", memory="512", containerDefinitions=[{
                "name": "app", "image": IMAGE, "stopTimeout": 2,
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}])
        vpc = {"awsvpcConfiguration": {"subnets": [subnet]}}

        def placed():
            out = ecs.run_task(cluster="apps", taskDefinition="tiny", launchType="FARGATE",
                               networkConfiguration=vpc)
            return out["tasks"] or None
        # Until the host registers, Fargate has no capacity (ECS's failure).
        [task] = wait_for(placed, 30, interval=0.5, what="the Fargate host to register")
        [task] = wait_status(ecs, [task["taskArn"]], "RUNNING", cluster="apps")
        assert task["availabilityZone"] == "us-east-1b" and "containerInstanceArn" not in task
        # The host is no container instance of any cluster, and EC2 tasks
        # cannot use it.
        for cluster in ("default", "apps"):
            assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == []
        ecs.register_task_definition(family="bridge", containerDefinitions=[
            {"name": "app", "image": IMAGE, "memory": 32}])
        with pytest.raises(ClientError) as e:
            ecs.run_task(cluster="default", taskDefinition="bridge")
        assert "No Container Instances were found in your cluster." in str(e.value)
        stats = {s["name"]: s["value"] for s in ecs.describe_clusters(
            clusters=["apps"], include=["STATISTICS"])["clusters"][0]["statistics"]}
        assert stats["runningFargateTasksCount"] == "1" and stats["runningEC2TasksCount"] == "0"
        ecs.stop_task(cluster="apps", task=task["taskArn"])
        wait_status(ecs, [task["taskArn"]], "STOPPED", cluster="apps")
    finally:
        agent.stop()
        server.stop()
        # This test's containers only (other tests run "tiny" tasks at the same time).
        ids = docker("ps", "-aq", "--filter", "label=com.amazonaws.ecs.task-definition-family=tiny",
                     "--filter", "label=com.amazonaws.ecs.cluster=apps").split()
        if ids:
            docker("rm", "-f", *ids, check=False)


def test_awsvpc_tasks_on_the_ec2_launch_type(berth_agent):
    """networkMode awsvpc on a container instance: the task has its own
    interface and address as a Fargate task does, and runs on the instance."""
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    subnet = default_subnet(ec2, "us-east-1c")
    ecs.register_task_definition(
        family="ec2-awsvpc", networkMode="awsvpc", requiresCompatibilities=["EC2"],
        containerDefinitions=[{
            "name": "web", "image": IMAGE, "memory": 32, "stopTimeout": 2,
            "portMappings": [{"containerPort": 8080}],
            "command": ["sh", "-c", f"mkdir -p /w && echo '{PAGE}' > /w/index.html && exec httpd -f -p 8080 -h /w"]}])
    out = ecs.run_task(taskDefinition="ec2-awsvpc", networkConfiguration={
        "awsvpcConfiguration": {"subnets": [subnet["SubnetId"]]}})
    assert out["failures"] == [], out["failures"]
    [task] = wait_status(ecs, [out["tasks"][0]["taskArn"]], "RUNNING")
    assert task["launchType"] == "EC2" and task["containerInstanceArn"]
    assert "capacityProviderName" not in task
    ip = eni_details(task)[1]["privateIPv4Address"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(subnet["CidrBlock"])
    # The VPC's default group admits only its own members: the host is not one.
    assert fetch(ip, 8080, timeout=2) is None
    ecs.stop_task(task=task["taskArn"])
    wait_status(ecs, [task["taskArn"]], "STOPPED")
    # The next task gets the freed address and a new interface, which stays
    # attached while it runs.
    out = ecs.run_task(taskDefinition="ec2-awsvpc", networkConfiguration={
        "awsvpcConfiguration": {"subnets": [subnet["SubnetId"]]}})
    [again] = wait_status(ecs, [out["tasks"][0]["taskArn"]], "RUNNING")
    details = eni_details(again)[1]
    assert details["privateIPv4Address"] == ip
    [eni] = ec2.describe_network_interfaces()["NetworkInterfaces"]
    assert eni["NetworkInterfaceId"] == details["networkInterfaceId"]
    ecs.stop_task(task=again["taskArn"])
    wait_status(ecs, [again["taskArn"]], "STOPPED")


def test_update_service_moves_fargate_tasks_to_a_new_network_and_strategy(berth_agent):
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    a, b = default_subnet(ec2, "us-east-1a"), default_subnet(ec2, "us-east-1b")
    ecs.register_task_definition(
        family="mover", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[{
            "name": "app", "image": IMAGE, "stopTimeout": 2,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}])
    ecs.create_service(serviceName="mover", taskDefinition="mover", desiredCount=1,
                       launchType="FARGATE", networkConfiguration={
                           "awsvpcConfiguration": {"subnets": [a["SubnetId"]]}})

    def running_in(zone, provider):
        arns = ecs.list_tasks(serviceName="mover", desiredStatus="RUNNING")["taskArns"]
        tasks = describe(ecs, arns) if arns else []
        return [t for t in tasks if t["lastStatus"] == "RUNNING" and t["availabilityZone"] == zone
                and t["capacityProviderName"] == provider and len(tasks) == 1] or None
    wait_for(lambda: running_in("us-east-1a", "FARGATE"), 60, what="a task in us-east-1a")

    service = ecs.update_service(
        service="mover",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [b["SubnetId"]]}},
        capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])["service"]
    assert "launchType" not in service
    assert service["deployments"][0]["capacityProviderStrategy"][0]["capacityProvider"] == "FARGATE_SPOT"
    assert service["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [b["SubnetId"]]
    wait_for(lambda: running_in("us-east-1b", "FARGATE_SPOT"), 90, what="the task replaced in us-east-1b")

    # Bad updates change nothing.
    with pytest.raises(ClientError) as e:
        ecs.update_service(service="mover", networkConfiguration={
            "awsvpcConfiguration": {"subnets": ["subnet-0123456789abcdef0"]}})
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    after = ecs.describe_services(services=["mover"])["services"][0]
    assert after["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [b["SubnetId"]]
    assert len(after["deployments"]) <= 2
    ecs.delete_service(service="mover", force=True)


def test_a_task_whose_network_namespace_dies_stops(berth_agent):
    """The pause container holds the task's namespace: when it dies, the
    task stops as when an essential container exits, and its ENI goes."""
    ecs, ec2 = berth_agent.client("ecs"), berth_agent.client("ec2")
    subnet = default_subnet(ec2)["SubnetId"]
    ecs.register_task_definition(
        family="fragile", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[{
            "name": "app", "image": IMAGE, "stopTimeout": 2,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}])
    out = ecs.run_task(taskDefinition="fragile", launchType="FARGATE", networkConfiguration={
        "awsvpcConfiguration": {"subnets": [subnet]}})
    arn = out["tasks"][0]["taskArn"]
    wait_status(ecs, [arn], "RUNNING")
    task_id = arn.rsplit("/", 1)[1]
    [pause] = docker("ps", "-q", "--filter", f"name=internalecspause-{task_id}").split()
    docker("kill", pause)
    [task] = wait_status(ecs, [arn], "STOPPED", timeout=30)
    assert task["stopCode"] == "EssentialContainerExited", task
    wait_for(lambda: not ec2.describe_network_interfaces()["NetworkInterfaces"], 30,
             what="the ENI deleted")
