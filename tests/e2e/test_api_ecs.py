"""ECS API breadth (issue 19): capacity providers, task protection (blocking
a real scale-in), service deployments and revisions, the agent and exec calls
and the precise refusals of the families Berth does not run, through boto3
and the aws CLI, outputs checked against the botocore model."""
import json

import botocore.exceptions
import pytest

from berth_harness import check_output, load_model, wait_for

MODEL = load_model("ecs", "2014-11-13")
LOOP = "trap 'exit 0' TERM; while true; do sleep 1; done"
ASG = ("arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:"
       "1b2c3d4e-0000-4000-8000-000000000001:autoScalingGroupName/asg-1")


ECS = "AmazonEC2ContainerServiceV20141113"


def code(call, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kwargs)
    return e.value.response["Error"]["Code"]


def raw_code(berth, operation, payload):
    """The error code of a call boto3 would refuse to send (out of the model's range)."""
    status, body, _ = berth.raw("ecs", ECS, operation, payload)
    assert status == 400, (status, body)
    return body["__type"].split("#")[-1]


def providers(ecs):
    out = ecs.describe_capacity_providers(include=["TAGS"])
    check_output(MODEL, "DescribeCapacityProviders", strip(out))
    return {p["name"]: p for p in out["capacityProviders"]}


def strip(out):
    """A boto3 answer as the wire had it (no ResponseMetadata, dates as epoch)."""
    return json.loads(json.dumps({k: v for k, v in out.items() if k != "ResponseMetadata"},
                                 default=lambda d: d.timestamp()))


def test_capacity_providers_bad_input_and_restart(berth):
    ecs = berth.client("ecs")
    out = ecs.create_capacity_provider(
        name="cp1", autoScalingGroupProvider={"autoScalingGroupArn": ASG,
                                              "managedScaling": {"status": "ENABLED", "targetCapacity": 90}},
        tags=[{"key": "team", "value": "blue"}])
    check_output(MODEL, "CreateCapacityProvider", strip(out))
    assert out["capacityProvider"]["autoScalingGroupProvider"]["managedScaling"]["targetCapacity"] == 90
    ecs.create_cluster(clusterName="c")
    before = providers(ecs)

    bad = [
        (ecs.create_capacity_provider, dict(name="cp1", autoScalingGroupProvider={"autoScalingGroupArn": "g2"}),
         "ClientException"),
        (ecs.create_capacity_provider, dict(name="ecs-x", autoScalingGroupProvider={"autoScalingGroupArn": "g2"}),
         "ClientException"),
        (ecs.create_capacity_provider, dict(name="bad/name", autoScalingGroupProvider={"autoScalingGroupArn": "g2"}),
         "InvalidParameterException"),
        (ecs.create_capacity_provider, dict(name="cp2", autoScalingGroupProvider={"autoScalingGroupArn": ASG}),
         "ClientException"),
        (ecs.create_capacity_provider, dict(name="cp2", autoScalingGroupProvider={
            "autoScalingGroupArn": "g2", "managedScaling": {"minimumScalingStepSize": 9, "maximumScalingStepSize": 3}}),
         "InvalidParameterException"),
        (ecs.create_capacity_provider, dict(name="cp2", autoScalingGroupProvider={
            "autoScalingGroupArn": "g2", "managedTerminationProtection": "ENABLED",
            "managedScaling": {"status": "DISABLED"}}), "InvalidParameterException"),
        (ecs.update_capacity_provider, dict(name="FARGATE", autoScalingGroupProvider={}), "ClientException"),
        (ecs.update_capacity_provider, dict(name="nope", autoScalingGroupProvider={}), "ClientException"),
        (ecs.delete_capacity_provider, dict(capacityProvider="FARGATE_SPOT"), "ClientException"),
        (ecs.describe_capacity_providers, dict(maxResults=11), "InvalidParameterException"),
        (ecs.put_cluster_capacity_providers, dict(cluster="nope", capacityProviders=["cp1"],
                                                  defaultCapacityProviderStrategy=[]), "ClusterNotFoundException"),
        (ecs.put_cluster_capacity_providers, dict(
            cluster="c", capacityProviders=["cp1", "FARGATE"],
            defaultCapacityProviderStrategy=[{"capacityProvider": "cp1", "weight": 1},
                                             {"capacityProvider": "FARGATE", "weight": 1}]),
         "InvalidParameterException"),
        (ecs.put_cluster_capacity_providers, dict(cluster="c", capacityProviders=["missing"],
                                                  defaultCapacityProviderStrategy=[]), "InvalidParameterException"),
    ]
    for call, kwargs, want in bad:
        assert code(call, **kwargs) == want, (call, kwargs)
    assert raw_code(berth, "CreateCapacityProvider", {
        "name": "cp2", "autoScalingGroupProvider": {"autoScalingGroupArn": "g2",
                                                    "managedScaling": {"targetCapacity": 0}}}) == "InvalidParameterException"
    # Nothing changed.
    assert providers(ecs) == before
    assert ecs.describe_clusters(clusters=["c"])["clusters"][0]["capacityProviders"] == []

    out = ecs.put_cluster_capacity_providers(
        cluster="c", capacityProviders=["cp1"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "cp1", "weight": 1, "base": 1}])
    check_output(MODEL, "PutClusterCapacityProviders", strip(out))
    ecs.register_task_definition(family="web", containerDefinitions=[
        {"name": "app", "image": "berth-test/busybox:latest", "memory": 32}])
    ecs.create_service(cluster="c", serviceName="s", taskDefinition="web", desiredCount=0,
                       capacityProviderStrategy=[{"capacityProvider": "cp1", "weight": 1}])
    assert code(ecs.put_cluster_capacity_providers, cluster="c", capacityProviders=[],
                defaultCapacityProviderStrategy=[]) == "ResourceInUseException"
    assert code(ecs.delete_capacity_provider, capacityProvider="cp1") == "ClientException"

    # The CLI sees the same, and the records survive a restart.
    _, cli, _ = berth.aws("ecs", "describe-capacity-providers", "--capacity-providers", "cp1",
                          "--include", "TAGS")
    assert cli["capacityProviders"][0]["tags"] == [{"key": "team", "value": "blue"}]
    berth.stop()
    berth.start()
    ecs = berth.client("ecs")
    assert providers(ecs)["cp1"]["autoScalingGroupProvider"]["managedScaling"]["targetCapacity"] == 90
    assert ecs.describe_clusters(clusters=["c"])["clusters"][0]["capacityProviders"] == ["cp1"]


def test_unimplemented_families_and_agent_calls(berth):
    ecs = berth.client("ecs")
    out = ecs.discover_poll_endpoint()
    check_output(MODEL, "DiscoverPollEndpoint", strip(out))
    assert out["endpoint"].startswith("http://127.0.0.1:")
    for call, kwargs, needle in [
        (ecs.list_daemons, dict(), "Managed Instances"),
        (ecs.describe_express_gateway_service, dict(serviceArn="x"), "Application Auto Scaling"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call(**kwargs)
        assert e.value.response["Error"]["Code"] == "UnsupportedFeatureException"
        assert needle in e.value.response["Error"]["Message"]
    rc, out, _ = berth.aws("ecs", "list-services-by-namespace", "--namespace", "nope")
    assert rc == 0 and out["serviceArns"] == []
    rc, _, err = berth.aws("ecs", "update-task-protection", "--cluster", "nope", "--tasks", "t",
                           "--protection-enabled", check=False)
    assert rc != 0 and "ClusterNotFoundException" in err


def test_task_protection_blocks_a_scale_in_and_deployments_roll_back(berth_agent):
    ecs = berth_agent.client("ecs")
    td = ecs.register_task_definition(family="prot", containerDefinitions=[
        {"name": "app", "image": "berth-test/busybox:latest", "memory": 32,
         "command": ["sh", "-c", LOOP]}])["taskDefinition"]
    ecs.create_service(serviceName="prot", taskDefinition="prot", desiredCount=2)

    def running():
        arns = ecs.list_tasks(serviceName="prot", desiredStatus="RUNNING")["taskArns"]
        if not arns:
            return []
        tasks = ecs.describe_tasks(tasks=arns)["tasks"]
        return sorted(t["taskArn"] for t in tasks if t["lastStatus"] == "RUNNING")

    tasks = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(running()), 90, what="two running tasks")
    # Bad input changes nothing.
    for kwargs, want in [
        (dict(cluster="nope", tasks=tasks, protectionEnabled=True), "ClusterNotFoundException"),
        (dict(cluster="default", tasks=tasks, protectionEnabled=True, expiresInMinutes=2881),
         "InvalidParameterException"),
        (dict(cluster="default", tasks=tasks, protectionEnabled=True, expiresInMinutes=0),
         "InvalidParameterException"),
        (dict(cluster="default", tasks=[], protectionEnabled=True), "InvalidParameterException"),
    ]:
        assert code(ecs.update_task_protection, **kwargs) == want, kwargs
    got = ecs.get_task_protection(cluster="default", tasks=tasks)
    check_output(MODEL, "GetTaskProtection", strip(got))
    assert all(not p["protectionEnabled"] for p in got["protectedTasks"])

    out = ecs.update_task_protection(cluster="default", tasks=[tasks[0]], protectionEnabled=True)
    check_output(MODEL, "UpdateTaskProtection", strip(out))
    assert out["protectedTasks"][0]["protectionEnabled"] is True
    ecs.update_service(service="prot", desiredCount=0)
    wait_for(lambda: running() == [tasks[0]], 60, what="the unprotected task stopped")
    # The protected one keeps running while protected.
    import time
    time.sleep(3)
    assert running() == [tasks[0]]
    ecs.update_task_protection(cluster="default", tasks=[tasks[0]], protectionEnabled=False)
    wait_for(lambda: running() == [], 60, what="the task stopped once unprotected")

    # Deployments: listed, described, revisions, with the model's shapes.
    listed = ecs.list_service_deployments(service="prot")
    check_output(MODEL, "ListServiceDeployments", strip(listed))
    arn = listed["serviceDeployments"][0]["serviceDeploymentArn"]
    assert ":service-deployment/default/prot/" in arn
    described = ecs.describe_service_deployments(serviceDeploymentArns=[arn])
    check_output(MODEL, "DescribeServiceDeployments", strip(described))
    revision = described["serviceDeployments"][0]["targetServiceRevision"]["arn"]
    revisions = ecs.describe_service_revisions(serviceRevisionArns=[revision])
    check_output(MODEL, "DescribeServiceRevisions", strip(revisions))
    assert revisions["serviceRevisions"][0]["taskDefinition"] == td["taskDefinitionArn"]
    assert code(ecs.stop_service_deployment, serviceDeploymentArn=arn) == "ConflictException"
    assert code(ecs.list_service_deployments, service="nope") == "ServiceNotFoundException"

    # ExecuteCommand answers as ECS does without execute command.
    ecs.update_service(service="prot", desiredCount=1)
    task = wait_for(lambda: (lambda r: r[0] if r else None)(running()), 60, what="a task")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.execute_command(task=task, command="ls", interactive=True)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "execute command was not enabled" in e.value.response["Error"]["Message"]

    # Protection survives a restart.
    ecs.update_task_protection(cluster="default", tasks=[task], protectionEnabled=True, expiresInMinutes=30)
    berth_agent.stop()
    berth_agent.start()
    ecs = berth_agent.client("ecs")
    got = ecs.get_task_protection(cluster="default", tasks=[task])
    assert got["protectedTasks"][0]["protectionEnabled"] is True
    ecs.update_service(service="prot", desiredCount=0)
    ecs.update_task_protection(cluster="default", tasks=[task], protectionEnabled=False)
    ecs.delete_service(service="prot", force=True)


def test_public_agent_state_change_calls(berth_agent):
    """SubmitTaskStateChange / SubmitContainerStateChange /
    SubmitAttachmentStateChanges move a real task through the state machine
    Berth's agents report through: a task reported STOPPED is stopped."""
    ecs = berth_agent.client("ecs")
    ecs.register_task_definition(family="sub", containerDefinitions=[
        {"name": "app", "image": "berth-test/busybox:latest", "memory": 32,
         "command": ["sh", "-c", LOOP]}])
    task = ecs.run_task(taskDefinition="sub")["tasks"][0]["taskArn"]
    task_id = task.rsplit("/", 1)[1]

    def status():
        return ecs.describe_tasks(tasks=[task])["tasks"][0]
    wait_for(lambda: status()["lastStatus"] == "RUNNING", 60, what="task RUNNING")

    iam = berth_agent.client("iam")
    iam.create_user(UserName="submitter")
    key = iam.create_access_key(UserName="submitter")["AccessKey"]
    nobody = berth_agent.client("ecs", key["AccessKeyId"], key["SecretAccessKey"])
    bad = [
        (nobody.submit_task_state_change, dict(task=task, status="STOPPED"), "AccessDeniedException"),
        (nobody.submit_container_state_change, dict(task=task, containerName="app", status="STOPPED"),
         "AccessDeniedException"),
        (ecs.submit_task_state_change, dict(task="0" * 32, status="STOPPED"), "InvalidParameterException"),
        (ecs.submit_task_state_change, dict(task=task, status="EXPLODED"), "InvalidParameterException"),
        (ecs.submit_task_state_change, dict(cluster="nope", task=task_id, status="STOPPED"),
         "ClusterNotFoundException"),
        (ecs.submit_task_state_change, dict(status="STOPPED"), "InvalidParameterException"),
        (ecs.submit_container_state_change, dict(task=task, containerName="nope", status="STOPPED"),
         "InvalidParameterException"),
        (ecs.submit_container_state_change, dict(task=task, containerName="app", status="MELTED"),
         "InvalidParameterException"),
        (ecs.submit_attachment_state_changes, dict(attachments=[
            {"attachmentArn": "arn:aws:ecs:us-east-1:000000000000:attachment/nope", "status": "ATTACHED"}]),
         "InvalidParameterException"),
        (ecs.submit_attachment_state_changes, dict(cluster="nope", attachments=[
            {"attachmentArn": "a", "status": "ATTACHED"}]), "ClusterNotFoundException"),
    ]
    for call, kwargs, want in bad:
        assert code(call, **kwargs) == want, (call, kwargs)
    assert status()["lastStatus"] == "RUNNING"  # nothing changed

    out = ecs.submit_container_state_change(task=task, containerName="app", status="RUNNING",
                                            runtimeId="whatever-runtime-id")
    check_output(MODEL, "SubmitContainerStateChange", strip(out))
    assert out["acknowledgment"] == "ACK"
    assert status()["containers"][0]["runtimeId"] == "whatever-runtime-id"
    rc, cli, _ = berth_agent.aws("ecs", "submit-task-state-change", "--task", task, "--status", "STOPPED",
                                 "--reason", "reported by the test")
    assert rc == 0 and cli["acknowledgment"] == "ACK"
    check_output(MODEL, "SubmitTaskStateChange", cli)
    t = status()
    assert (t["lastStatus"], t["desiredStatus"], t["stoppedReason"]) == ("STOPPED", "STOPPED",
                                                                         "reported by the test")


def test_task_sets_of_an_external_service(berth_agent):
    """CreateService with the EXTERNAL deployment controller runs nothing until
    task sets exist; each task set runs its scale's share of the desired count
    (rounded up) as real containers, reports STEADY_STATE once they run, and
    drains when deleted."""
    ecs = berth_agent.client("ecs")
    for family in ("ts-a", "ts-b"):
        ecs.register_task_definition(family=family, containerDefinitions=[
            {"name": "app", "image": "berth-test/busybox:latest", "memory": 16,
             "command": ["sh", "-c", LOOP]}])
    ecs.create_service(serviceName="plain", taskDefinition="ts-a", desiredCount=0)
    out = ecs.create_service(serviceName="ext", desiredCount=3,
                             deploymentController={"type": "EXTERNAL"})
    check_output(MODEL, "CreateService", strip(out))
    assert out["service"]["deploymentController"]["type"] == "EXTERNAL"

    bad = [
        (ecs.create_task_set, dict(service="plain", cluster="default", taskDefinition="ts-a"),
         "InvalidParameterException"),
        (ecs.create_task_set, dict(service="nope", cluster="default", taskDefinition="ts-a"),
         "ServiceNotFoundException"),
        (ecs.create_task_set, dict(service="ext", cluster="nope", taskDefinition="ts-a"),
         "ClusterNotFoundException"),
        (ecs.create_task_set, dict(service="ext", cluster="default", taskDefinition="missing:3"),
         "InvalidParameterException"),
        (ecs.create_task_set, dict(service="ext", cluster="default", taskDefinition="ts-a",
                                   scale={"value": 101.0, "unit": "PERCENT"}), "InvalidParameterException"),
        (ecs.update_task_set, dict(service="ext", cluster="default", taskSet="ecs-svc/123",
                                   scale={"value": 10.0, "unit": "PERCENT"}), "TaskSetNotFoundException"),
        (ecs.delete_task_set, dict(service="ext", cluster="default", taskSet="ecs-svc/123"),
         "TaskSetNotFoundException"),
        (ecs.update_service_primary_task_set, dict(service="ext", cluster="default",
                                                   primaryTaskSet="ecs-svc/123"), "TaskSetNotFoundException"),
        (ecs.describe_task_sets, dict(service="plain", cluster="default"), "InvalidParameterException"),
        (ecs.update_service, dict(service="ext", taskDefinition="ts-a"), "InvalidParameterException"),
        (ecs.create_service, dict(serviceName="cd", desiredCount=1,
                                  deploymentController={"type": "CODE_DEPLOY"}), "InvalidParameterException"),
    ]
    for call, kwargs, want in bad:
        assert code(call, **kwargs) == want, (call, kwargs)
    assert ecs.describe_task_sets(service="ext", cluster="default")["taskSets"] == []
    assert ecs.list_tasks(serviceName="ext")["taskArns"] == []

    one = ecs.create_task_set(service="ext", cluster="default", taskDefinition="ts-a", externalId="blue",
                              scale={"value": 50.0, "unit": "PERCENT"}, tags=[{"key": "k", "value": "v"}])
    check_output(MODEL, "CreateTaskSet", strip(one))
    one = one["taskSet"]
    assert one["computedDesiredCount"] == 2  # 50% of 3, rounded up
    assert one["taskSetArn"].endswith(f":task-set/default/ext/{one['id']}")

    def the_set(set_id):
        _, out, _ = berth_agent.aws("ecs", "describe-task-sets", "--cluster", "default", "--service", "ext",
                                    "--task-sets", set_id)
        check_output(MODEL, "DescribeTaskSets", out)
        return out["taskSets"][0] if out["taskSets"] else None

    wait_for(lambda: (the_set(one["id"]) or {}).get("stabilityStatus") == "STEADY_STATE", 60,
             what="the task set steady")
    got = the_set(one["id"])
    assert (got["runningCount"], got["pendingCount"]) == (2, 0)
    tasks = ecs.describe_tasks(tasks=ecs.list_tasks(serviceName="ext")["taskArns"])["tasks"]
    assert sorted(t["startedBy"] for t in tasks) == [one["id"]] * 2
    assert all(t["lastStatus"] == "RUNNING" for t in tasks)

    two = ecs.create_task_set(service="ext", cluster="default", taskDefinition="ts-b",
                              scale={"value": 10.0, "unit": "PERCENT"})["taskSet"]
    out = ecs.update_service_primary_task_set(service="ext", cluster="default", primaryTaskSet=two["id"])
    check_output(MODEL, "UpdateServicePrimaryTaskSet", strip(out))
    assert code(ecs.delete_task_set, service="ext", cluster="default", taskSet=two["id"]) == \
        "InvalidParameterException"
    out = ecs.update_task_set(service="ext", cluster="default", taskSet=one["id"],
                              scale={"value": 100.0, "unit": "PERCENT"})
    check_output(MODEL, "UpdateTaskSet", strip(out))
    assert out["taskSet"]["computedDesiredCount"] == 3

    def running_by_set():
        arns = ecs.list_tasks(serviceName="ext", desiredStatus="RUNNING")["taskArns"]
        tasks = ecs.describe_tasks(tasks=arns)["tasks"] if arns else []
        counts = {}
        for t in tasks:
            if t["lastStatus"] == "RUNNING":
                counts[t["startedBy"]] = counts.get(t["startedBy"], 0) + 1
        return counts
    wait_for(lambda: running_by_set() == {one["id"]: 3, two["id"]: 1}, 60, what="3 + 1 tasks")
    # The service's counts follow its tasks on the controller's next pass.
    service = wait_for(lambda: (lambda s: s if s["runningCount"] == 4 else None)(
        ecs.describe_services(services=["ext"])["services"][0]), 20, what="runningCount 4")
    check_output(MODEL, "DescribeServices", strip({"services": [service], "failures": []}))
    assert service["taskDefinition"].endswith("ts-b:1")

    out = ecs.delete_task_set(service="ext", cluster="default", taskSet=one["id"])
    check_output(MODEL, "DeleteTaskSet", strip(out))
    assert out["taskSet"]["status"] == "DRAINING"
    wait_for(lambda: running_by_set() == {two["id"]: 1}, 60, what="the deleted set's tasks stopped")
    wait_for(lambda: [s["id"] for s in ecs.describe_task_sets(service="ext", cluster="default")["taskSets"]]
             == [two["id"]], 30, what="the deleted set gone")


def minimal_input(shapes, name):
    """The smallest input of shape `name` the model accepts: its required
    members, recursively, with placeholder values."""
    shape = shapes[name]
    kind = shape["type"]
    if kind == "structure":
        return {m: minimal_input(shapes, shape["members"][m]["shape"])
                for m in shape.get("required", [])}
    if kind == "list":
        return [minimal_input(shapes, shape["member"]["shape"])]
    if kind == "string":
        return shape.get("enum", ["x"])[0]
    return {"integer": 1, "long": 1, "boolean": True, "double": 1.0, "float": 1.0,
            "timestamp": 1, "map": {}}.get(kind, "x")


# What the placeholder input lacks for the call to reach its cluster.
REACH_THE_CLUSTER = {
    "CreateService": {"taskDefinition": "web", "serviceName": "web", "desiredCount": 1},
    "DeleteAttributes": {"attributes": [{"name": "a", "targetId": (
        "arn:aws:ecs:us-east-1:000000000000:container-instance/no-such-cluster/"
        "0123456789abcdef0123456789abcdef")}]},
    "PutAttributes": {"attributes": [{"name": "a", "targetId": (
        "arn:aws:ecs:us-east-1:000000000000:container-instance/no-such-cluster/"
        "0123456789abcdef0123456789abcdef")}]},
    "GetTaskProtection": {"tasks": ["0123456789abcdef0123456789abcdef"]},
    "UpdateTaskProtection": {"tasks": ["0123456789abcdef0123456789abcdef"]},
    "SubmitAttachmentStateChanges": {"attachments": [{
        "attachmentArn": "arn:aws:ecs:us-east-1:000000000000:attachment/0123",
        "status": "ATTACHED"}]},
    "SubmitContainerStateChange": {"task": "0123456789abcdef0123456789abcdef",
                                   "containerName": "app", "status": "RUNNING"},
    "SubmitTaskStateChange": {"task": "0123456789abcdef0123456789abcdef", "status": "RUNNING"},
    "UpdateClusterSettings": {"settings": [{"name": "containerInsights", "value": "enabled"}]},
}

# Operations with a `cluster` member that answer something else for an
# unknown cluster, as ECS does, and why.
OTHER_ANSWERS = {
    "DiscoverPollEndpoint": "agents ask before their cluster exists; ECS answers the endpoint",
    "CreateCapacityProvider": "cluster is only for Managed Instances providers (refused first)",
    "UpdateCapacityProvider": "cluster is only for Managed Instances providers (refused first)",
    "DeleteCapacityProvider": "the capacity provider is looked up first",
    "ListGatewayClusterAssociations": "cluster filters the list (ECS names no cluster error)",
    "ListGatewayRoutes": "cluster filters the list (ECS names no cluster error)",
}


def test_every_operation_with_a_cluster_answers_cluster_not_found(berth):
    """Error parity: every ECS operation whose input names a cluster
    answers ClusterNotFoundException for one that does not exist (the
    families Berth does not run answer their UnsupportedFeatureException)."""
    from test_api_coverage import not_implemented
    shapes = MODEL["shapes"]
    not_run = set(not_implemented()["ecs"])
    seen, wrong = 0, []
    for operation, spec in sorted(MODEL["operations"].items()):
        shape = spec.get("input", {}).get("shape")
        if not shape or "cluster" not in shapes[shape].get("members", {}):
            continue
        payload = minimal_input(shapes, shape)
        payload.update(REACH_THE_CLUSTER.get(operation, {}))
        payload["cluster"] = "no-such-cluster"
        status, body, _ = berth.raw("ecs", ECS, operation, payload)
        kind = body.get("__type", "").split("#")[-1] if isinstance(body, dict) else ""
        seen += 1
        if operation in OTHER_ANSWERS:
            continue
        if kind == "UnsupportedFeatureException" and operation in not_run:
            continue
        if (status, kind) != (400, "ClusterNotFoundException"):
            wrong.append((operation, status, body))
    assert seen >= 30, seen
    assert wrong == [], wrong
