"""Issue 3 acceptance: the aws CLI quickstart, SigV4 rejections, task definition
validation, durability across kill -9, pagination and model conformance."""
import concurrent.futures
import copy
import datetime
import json
import threading

import pytest
from botocore.exceptions import ClientError

from berth_harness import ACCOUNT, REGION, Berth, check_output, load_model

ECS = "AmazonEC2ContainerServiceV20141113"
MODEL = load_model("ecs", "2014-11-13")

# The Fargate sample of the ECS developer guide ("Creating an Amazon ECS Linux
# task for the Fargate launch type with the AWS CLI").
FARGATE_SAMPLE = {
    "family": "sample-fargate",
    "networkMode": "awsvpc",
    "containerDefinitions": [
        {
            "name": "fargate-app",
            "image": "public.ecr.aws/docker/library/httpd:latest",
            "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}],
            "essential": True,
            "entryPoint": ["sh", "-c"],
            "command": [
                "/bin/sh -c \"echo '<html> <head> <title>Amazon ECS Sample App</title> <style>body {margin-top: 40px; background-color: #333;} </style> </head><body> <div style=color:white;text-align:center> <h1>Amazon ECS Sample App</h1> <h2>Congratulations!</h2> <p>Your application is now running on a container in Amazon ECS.</p> </div></body></html>' >  /usr/local/apache2/htdocs/index.html && httpd-foreground\""
            ],
        }
    ],
    "requiresCompatibilities": ["FARGATE"],
    "cpu": "256",
    "memory": "512",
}

# An EC2 task definition with several containers and most container features.
EC2_MULTI = {
    "family": "web",
    "networkMode": "bridge",
    "taskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/web-task",
    "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/ecsTaskExecutionRole",
    "volumes": [{"name": "shared", "host": {"sourcePath": "/srv/shared"}}, {"name": "scratch"}],
    "containerDefinitions": [
        {
            "name": "app",
            "image": "busybox:latest",
            "cpu": 256,
            "memory": 256,
            "memoryReservation": 128,
            "essential": True,
            "command": ["httpd", "-f", "-p", "8080"],
            "portMappings": [{"containerPort": 8080}, {"containerPort": 8443, "hostPort": 8443}],
            "environment": [{"name": "MODE", "value": "prod"}],
            "secrets": [{"name": "DB_PASSWORD",
                         "valueFrom": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-AbCdEf"}],
            "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data", "readOnly": True}],
            "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}],
            "healthCheck": {"command": ["CMD-SHELL", "wget -q -O- localhost:8080 || exit 1"],
                            "interval": 10, "timeout": 3, "retries": 3, "startPeriod": 5},
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/ecs/web", "awslogs-region": REGION, "awslogs-stream-prefix": "web"}},
            "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
            "stopTimeout": 20,
            "user": "1000",
            "workingDirectory": "/srv",
            "dockerLabels": {"team": "web"},
            "linuxParameters": {"initProcessEnabled": True},
        },
        {
            "name": "init",
            "image": "busybox:latest",
            "memory": 32,
            "essential": False,
            "command": ["sh", "-c", "echo ready"],
        },
        {
            "name": "sidecar",
            "image": "busybox:latest",
            "memoryReservation": 64,
            "essential": False,
            "entryPoint": ["sh", "-c"],
            "command": ["sleep 3600"],
            "volumesFrom": [{"sourceContainer": "app", "readOnly": True}],
            "links": ["app:app"],
        },
    ],
    "tags": [{"key": "team", "value": "web"}],
}


def test_cli_quickstart(berth, tmp_path):
    _, out, _ = berth.aws("ecs", "create-cluster", "--cluster-name", "demo")
    assert out["cluster"]["clusterArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo"
    assert out["cluster"]["status"] == "ACTIVE"
    _, out, _ = berth.aws("ecs", "list-clusters")
    assert out["clusterArns"] == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo"]

    fargate = tmp_path / "fargate.json"
    fargate.write_text(json.dumps(FARGATE_SAMPLE))
    _, out, _ = berth.aws("ecs", "register-task-definition", "--cli-input-json", f"file://{fargate}")
    td = out["taskDefinition"]
    assert td["taskDefinitionArn"].endswith(":task-definition/sample-fargate:1")
    assert td["revision"] == 1 and td["status"] == "ACTIVE"
    assert set(td["compatibilities"]) >= {"EC2", "FARGATE"}
    assert td["containerDefinitions"][0]["portMappings"][0]["hostPort"] == 80

    ec2 = tmp_path / "ec2.json"
    ec2.write_text(json.dumps(EC2_MULTI))
    for expected in (1, 2):
        _, out, _ = berth.aws("ecs", "register-task-definition", "--cli-input-json", f"file://{ec2}")
        assert out["taskDefinition"]["revision"] == expected
    _, out, _ = berth.aws("ecs", "describe-task-definition", "--task-definition", "web:2",
                          "--include", "TAGS")
    td = out["taskDefinition"]
    assert td["family"] == "web" and td["revision"] == 2
    assert [c["name"] for c in td["containerDefinitions"]] == ["app", "init", "sidecar"]
    assert out["tags"] == [{"key": "team", "value": "web"}]
    sidecar = td["containerDefinitions"][2]
    assert sidecar["essential"] is False and sidecar["cpu"] == 0
    app = td["containerDefinitions"][0]
    assert app["portMappings"][0] == {"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}

    # The same calls, raw, validate against the botocore output shapes.
    for operation, payload in [
        ("CreateCluster", {"clusterName": "demo"}),
        ("ListClusters", {}),
        ("DescribeClusters", {"clusters": ["demo", "missing"], "include": ["TAGS", "SETTINGS", "STATISTICS"]}),
        ("RegisterTaskDefinition", FARGATE_SAMPLE),
        ("RegisterTaskDefinition", EC2_MULTI),
        ("DescribeTaskDefinition", {"taskDefinition": "web:2", "include": ["TAGS"]}),
        ("DescribeTaskDefinition", {"taskDefinition": "sample-fargate"}),
        ("ListTaskDefinitions", {}),
        ("ListTaskDefinitionFamilies", {}),
    ]:
        status, body, _ = berth.raw("ecs", ECS, operation, payload)
        assert status == 200, (operation, body)
        check_output(MODEL, operation, body)


def test_signature_rejections(berth):
    payload = {"clusters": ["default"]}
    status, body, _ = berth.raw("ecs", ECS, "DescribeClusters", payload, sign=False)
    assert status == 403 and body["__type"] == "MissingAuthenticationTokenException"

    status, body, _ = berth.raw("ecs", ECS, "DescribeClusters", payload, secret_key="wrong-secret")
    assert status == 403 and body["__type"] == "InvalidSignatureException"

    status, body, _ = berth.raw("ecs", ECS, "DescribeClusters", payload, access_key="AKIAUNKNOWNKEY000000")
    assert status == 403 and body["__type"] == "UnrecognizedClientException"

    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    status, body, _ = berth.raw("ecs", ECS, "DescribeClusters", payload, timestamp=past)
    assert status == 403 and body["__type"] == "InvalidSignatureException"
    assert "Signature expired" in body["message"]

    recent = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    status, body, _ = berth.raw("ecs", ECS, "DescribeClusters", payload, timestamp=recent)
    assert status == 200, body

    # Query-string (presigned) authentication, as botocore builds it.
    status, body = berth.presigned("ecs", ECS, "ListClusters", expires=60)
    assert status == 200 and "clusterArns" in body, body
    status, body = berth.presigned("ecs", ECS, "ListClusters", expires=60, secret_key="wrong-secret")
    assert status == 403 and body["__type"] == "InvalidSignatureException"
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=3)
    status, body = berth.presigned("ecs", ECS, "ListClusters", expires=60, timestamp=old)
    assert status == 403 and "Signature expired" in body["message"], body

    # The CLI reports the same errors.
    code, _, err = berth.aws("ecs", "list-clusters", check=False,
                             env=berth.cli_env(secret_key="wrong-secret"))
    assert code != 0 and "InvalidSignatureException" in err


def td(**overrides):
    base = {
        "family": "bad",
        "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 128}],
    }
    base.update(overrides)
    return base


def container(**fields):
    c = {"name": "c", "image": "busybox", "memory": 128}
    c.update(fields)
    return c


FARGATE_BASE = dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512")

BAD_TASK_DEFINITIONS = [
    ("family with spaces", td(family="bad family"), "ClientException", "Family"),
    ("family too long", td(family="f" * 256), "ClientException", "Family"),
    ("empty family", td(family=""), "ClientException", "Family"),
    ("no containers", td(containerDefinitions=[]), "ClientException", "Container list cannot be empty"),
    ("eleven containers", td(containerDefinitions=[container(name=f"c{i}") for i in range(11)]),
     "ClientException", "at most 10 containers"),
    ("duplicate container names", td(containerDefinitions=[container(), container()]),
     "ClientException", "Duplicate container name"),
    ("container without name", td(containerDefinitions=[{"image": "busybox", "memory": 128}]),
     "ClientException", "name"),
    ("container without image", td(containerDefinitions=[{"name": "c", "memory": 128}]),
     "ClientException", "image"),
    ("container name with dots", td(containerDefinitions=[container(name="a.b")]),
     "ClientException", "Container name"),
    ("unknown network mode", td(networkMode="overlay"), "ClientException", "networkMode"),
    ("fargate needs awsvpc", td(**{**FARGATE_BASE, "networkMode": "bridge"}),
     "ClientException", "awsvpc"),
    ("fargate needs task cpu", td(**{k: v for k, v in FARGATE_BASE.items() if k != "cpu"}),
     "ClientException", "cpu"),
    ("fargate invalid combination", td(**{**FARGATE_BASE, "cpu": "256", "memory": "4096"}),
     "ClientException", "No Fargate configuration exists"),
    ("fargate 1 vCPU with 1 GB", td(**{**FARGATE_BASE, "cpu": "1 vCPU", "memory": "1 GB"}),
     "ClientException", "No Fargate configuration exists"),
    ("unparseable task cpu", td(cpu="lots"), "ClientException", "cpu"),
    ("container memory above task memory", td(memory="512", containerDefinitions=[container(memory=1024)]),
     "ClientException", "memory"),
    ("no memory anywhere", td(containerDefinitions=[{"name": "c", "image": "busybox"}]),
     "ClientException", "memoryReservation"),
    ("reservation above hard limit", td(containerDefinitions=[container(memory=128, memoryReservation=256)]),
     "ClientException", "memoryReservation"),
    ("memory below docker minimum", td(containerDefinitions=[container(memory=4)]),
     "ClientException", "memory"),
    ("same container port twice", td(containerDefinitions=[container(portMappings=[
        {"containerPort": 80}, {"containerPort": 80}])]), "ClientException", "port"),
    ("awsvpc host port differs", td(networkMode="awsvpc", containerDefinitions=[container(portMappings=[
        {"containerPort": 80, "hostPort": 8080}])]), "ClientException", "host ports"),
    ("host port used twice", td(containerDefinitions=[
        container(name="a", portMappings=[{"containerPort": 80, "hostPort": 9000}]),
        container(name="b", portMappings=[{"containerPort": 81, "hostPort": 9000}])]),
     "ClientException", "Host port"),
    ("port out of range", td(containerDefinitions=[container(portMappings=[{"containerPort": 70000}])]),
     "InvalidParameterException", "containerPort"),
    ("dependsOn unknown container", td(containerDefinitions=[container(dependsOn=[
        {"containerName": "ghost", "condition": "START"}])]), "ClientException", "dependsOn"),
    ("dependsOn bad condition", td(containerDefinitions=[
        container(name="a", dependsOn=[{"containerName": "b", "condition": "READY"}]),
        container(name="b")]), "ClientException", "condition"),
    ("no essential container", td(containerDefinitions=[container(essential=False)]),
     "ClientException", "essential"),
    ("health check interval too short", td(containerDefinitions=[container(healthCheck={
        "command": ["CMD", "true"], "interval": 1})]), "ClientException", "healthCheck"),
    ("mount of undefined volume", td(containerDefinitions=[container(mountPoints=[
        {"sourceVolume": "nope", "containerPath": "/x"}])]), "ClientException", "mountPoints"),
    ("volumesFrom unknown container", td(containerDefinitions=[container(volumesFrom=[
        {"sourceContainer": "ghost"}])]), "ClientException", "volumesFrom"),
    ("links with awsvpc", td(networkMode="awsvpc", containerDefinitions=[
        container(name="a", links=["b"]), container(name="b")]), "ClientException", "Links"),
    ("ephemeral storage too small", td(ephemeralStorage={"sizeInGiB": 10}),
     "ClientException", "ephemeral storage"),
    ("invalid ulimit", td(containerDefinitions=[container(ulimits=[
        {"name": "files", "softLimit": 1, "hardLimit": 2}])]), "ClientException", "ulimit"),
    ("unknown log driver", td(containerDefinitions=[container(logConfiguration={"logDriver": "loki"})]),
     "ClientException", "logDriver"),
    ("secret without valueFrom", td(executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/x",
                                    containerDefinitions=[container(secrets=[{"name": "S", "valueFrom": ""}])]),
     "ClientException", "valueFrom"),
    ("tag with aws: prefix", td(tags=[{"key": "aws:owner", "value": "me"}]),
     "InvalidParameterException", "aws:"),
]


def test_bad_task_definitions_leave_no_trace(berth):
    assert len(BAD_TASK_DEFINITIONS) >= 30
    ecs = berth.client("ecs")
    for name, payload, code, needle in BAD_TASK_DEFINITIONS:
        status, body, _ = berth.raw("ecs", ECS, "RegisterTaskDefinition", payload)
        assert status == 400, (name, status, body)
        assert body["__type"] == code, (name, body)
        assert needle.lower() in body["message"].lower(), (name, body["message"])
    for status_filter in ("ACTIVE", "INACTIVE"):
        assert ecs.list_task_definitions(status=status_filter)["taskDefinitionArns"] == []
    assert ecs.list_task_definition_families(status="ALL")["families"] == []


def test_kill9_after_1000_acknowledged_registrations(tmp_path):
    server = Berth(tmp_path / "data").start()
    acknowledged = []
    lock = threading.Lock()

    def worker(index):
        ecs = server.client("ecs")
        mine = []
        for n in range(125):
            family = f"durable-{(index + n) % 4}"
            out = ecs.register_task_definition(
                family=family,
                containerDefinitions=[{"name": "c", "image": "busybox", "memory": 32,
                                       "environment": [{"name": "N", "value": f"{index}-{n}"}]}],
            )["taskDefinition"]
            mine.append((family, out["revision"], f"{index}-{n}"))
        with lock:
            acknowledged.extend(mine)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert len(acknowledged) == 1000
    server.kill9()

    server = Berth(tmp_path / "data", port=server.port).start()
    try:
        ecs = server.client("ecs")
        arns = []
        for page in ecs.get_paginator("list_task_definitions").paginate(PaginationConfig={"PageSize": 100}):
            arns.extend(page["taskDefinitionArns"])
        assert len(arns) == 1000 and len(set(arns)) == 1000
        by_family = {}
        for family, revision, _ in acknowledged:
            by_family.setdefault(family, []).append(revision)
        for family, revisions in by_family.items():
            assert sorted(revisions) == list(range(1, len(revisions) + 1)), family
        # Each acknowledged revision holds the content its caller sent.
        for family, revision, marker in acknowledged[::37]:
            got = ecs.describe_task_definition(taskDefinition=f"{family}:{revision}")["taskDefinition"]
            assert got["containerDefinitions"][0]["environment"] == [{"name": "N", "value": marker}]
    finally:
        server.stop()


def test_pagination_visits_each_once(berth):
    ecs = berth.client("ecs")
    expected = set()
    for i in range(250):
        out = ecs.register_task_definition(
            family=f"page-{i % 5}",
            containerDefinitions=[{"name": "c", "image": "busybox", "memory": 32}],
        )
        expected.add(out["taskDefinition"]["taskDefinitionArn"])

    # The CLI's own pagination with --max-items 7.
    seen = []
    token = None
    for _ in range(100):
        args = ["ecs", "list-task-definitions", "--max-items", "7"]
        if token:
            args += ["--starting-token", token]
        _, out, _ = berth.aws(*args)
        seen.extend(out["taskDefinitionArns"])
        token = out.get("NextToken")
        if not token:
            break
    assert len(seen) == 250 and set(seen) == expected

    # Server-side pages of 7, both directions.
    for order in ("ASC", "DESC"):
        pages = ecs.get_paginator("list_task_definitions").paginate(
            sort=order, PaginationConfig={"PageSize": 7})
        seen = [arn for page in pages for arn in page["taskDefinitionArns"]]
        assert len(seen) == 250 and set(seen) == expected
        assert seen == (sorted(seen, key=_arn_order) if order == "ASC"
                        else sorted(seen, key=_arn_order, reverse=True))


def _arn_order(arn):
    family, revision = arn.rsplit("/", 1)[1].rsplit(":", 1)
    return family, int(revision)


def test_cluster_lifecycle_and_errors(berth):
    ecs = berth.client("ecs")
    created = ecs.create_cluster(
        clusterName="life", tags=[{"key": "env", "value": "test"}],
        settings=[{"name": "containerInsights", "value": "enabled"}],
        capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1, "base": 1}],
    )["cluster"]
    assert created["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    # Creating it again answers with the same cluster.
    again = ecs.create_cluster(clusterName="life")["cluster"]
    assert again["clusterArn"] == created["clusterArn"]

    described = ecs.describe_clusters(clusters=["life", "nope"], include=["TAGS", "SETTINGS"])
    assert described["clusters"][0]["tags"] == [{"key": "env", "value": "test"}]
    assert described["clusters"][0]["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    assert described["failures"] == [{"arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/nope", "reason": "MISSING"}]

    updated = ecs.update_cluster_settings(
        cluster="life", settings=[{"name": "containerInsights", "value": "disabled"}])["cluster"]
    assert updated["settings"] == [{"name": "containerInsights", "value": "disabled"}]

    arn = created["clusterArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "owner", "value": "me"}])
    ecs.untag_resource(resourceArn=arn, tagKeys=["env"])
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "owner", "value": "me"}]
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn=arn, tags=[{"key": f"k{i}", "value": "v"} for i in range(50)])
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"

    with pytest.raises(ClientError) as e:
        ecs.create_cluster(clusterName="bad name!")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.update_cluster_settings(cluster="ghost", settings=[{"name": "containerInsights", "value": "enabled"}])
    assert e.value.response["Error"]["Code"] == "ClusterNotFoundException"

    deleted = ecs.delete_cluster(cluster="life")["cluster"]
    assert deleted["status"] == "INACTIVE"
    assert ecs.list_clusters()["clusterArns"] == []
    assert ecs.describe_clusters(clusters=["life"])["clusters"][0]["status"] == "INACTIVE"
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster="life")
    assert e.value.response["Error"]["Code"] == "ClusterNotFoundException"


def test_task_definition_lifecycle(berth):
    ecs = berth.client("ecs")
    for _ in range(3):
        ecs.register_task_definition(**copy.deepcopy(EC2_MULTI))
    ecs.deregister_task_definition(taskDefinition="web:3")
    # The family's latest ACTIVE revision is now 2; revision 3 stays describable.
    assert ecs.describe_task_definition(taskDefinition="web")["taskDefinition"]["revision"] == 2
    inactive = ecs.describe_task_definition(taskDefinition="web:3")["taskDefinition"]
    assert inactive["status"] == "INACTIVE" and "deregisteredAt" in inactive

    out = ecs.delete_task_definitions(taskDefinitions=["web:3", "web:1"])
    assert [t["revision"] for t in out["taskDefinitions"]] == [3]
    assert out["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS"
    assert out["failures"][0]["arn"] == "web:1"
    assert "ACTIVE" in out["failures"][0]["reason"]

    # Revisions keep growing after deregistration and deletion.
    assert ecs.register_task_definition(**copy.deepcopy(EC2_MULTI))["taskDefinition"]["revision"] == 4
    assert ecs.list_task_definitions(familyPrefix="web", status="DELETE_IN_PROGRESS")["taskDefinitionArns"] == [
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web:3"]
    assert ecs.list_task_definition_families(status="ACTIVE")["families"] == ["web"]

    with pytest.raises(ClientError) as e:
        ecs.describe_task_definition(taskDefinition="nothing:1")
    assert e.value.response["Error"]["Code"] == "ClientException"

    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web:2"
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "stage", "value": "blue"}])
    tags = ecs.list_tags_for_resource(resourceArn=arn)["tags"]
    assert {"key": "stage", "value": "blue"} in tags and {"key": "team", "value": "web"} in tags


def test_account_settings(berth):
    ecs = berth.client("ecs")
    effective = ecs.list_account_settings(effectiveSettings=True, name="containerInsights")["settings"]
    assert effective[0]["value"] == "disabled"
    put = ecs.put_account_setting_default(name="containerInsights", value="enabled")["setting"]
    assert put["principalArn"] == f"arn:aws:iam::{ACCOUNT}:root"
    # New clusters pick up the account default.
    cluster = ecs.create_cluster(clusterName="insights")["cluster"]
    assert cluster["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    user = f"arn:aws:iam::{ACCOUNT}:user/alice"
    ecs.put_account_setting(name="awsvpcTrunking", value="enabled", principalArn=user)
    mine = ecs.list_account_settings(principalArn=user)["settings"]
    assert [(s["name"], s["value"]) for s in mine] == [("awsvpcTrunking", "enabled")]
    ecs.delete_account_setting(name="awsvpcTrunking", principalArn=user)
    assert ecs.list_account_settings(principalArn=user)["settings"] == []
    with pytest.raises(ClientError) as e:
        ecs.put_account_setting(name="containerInsights", value="maybe")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    # The long ARN formats can no longer be turned off, as on ECS today;
    # turning them on is accepted and changes nothing.
    for name in ("serviceLongArnFormat", "taskLongArnFormat", "containerInstanceLongArnFormat"):
        for put in (ecs.put_account_setting, ecs.put_account_setting_default):
            with pytest.raises(ClientError) as e:
                put(name=name, value="disabled")
            assert e.value.response["Error"] == {
                "Code": "InvalidParameterException",
                "Message": "You can no longer disable Long Arn settings."}, name
        assert ecs.put_account_setting(name=name, value="enabled")["setting"]["value"] == "enabled"
        [effective] = ecs.list_account_settings(effectiveSettings=True, name=name)["settings"]
        assert effective["value"] == "enabled"


def test_unimplemented_and_unknown_operations(berth):
    # An operation Berth leaves out answers why (`berth not-implemented`).
    status, body, _ = berth.raw("ecs", ECS, "CreateDaemon", {"daemonName": "x"})
    assert status == 400 and body["__type"] == "UnsupportedFeatureException"
    assert "CreateDaemon" in body["message"]
    status, body, _ = berth.raw("ecs", ECS, "LaunchRockets", {})
    assert status == 400 and body["__type"] == "UnknownOperationException"
    status, body, _ = berth.raw("ecs", "NoSuchService_20200101", "Anything", {})
    assert status == 400 and body["__type"] == "UnknownOperationException"


def test_malformed_body_is_a_client_error(berth):
    status, body, _ = berth.raw("ecs", ECS, "RegisterTaskDefinition", {"family": 5})
    assert status == 400 and body["__type"] == "SerializationException"


def test_health(berth):
    health = berth.wait_healthy()
    assert health["status"] == "ok" and health["store"]["backend"] == "sqlite"
    assert "version" in health and "uptimeSeconds" in health
