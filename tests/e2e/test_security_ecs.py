"""ECS under IAM (issue 16, items 1, 6 and 12): iam:PassRole on the roles a
call hands to ECS, resources authorized by their canonical ARN whatever form
names them, and tag conditions. Users are made by root through boto3's IAM
client; their calls go through the real aws CLI and boto3."""
import json

import pytest
from botocore.exceptions import ClientError

from berth_harness import TEST_IMAGE, create_task_role, wait_for

ACCOUNT = "000000000000"
REGION = "us-east-1"


def arn(resource):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:{resource}"


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def user(server, name, *statements):
    """A user with an inline policy of `statements`; returns (boto3 ECS
    client, CLI environment, user ARN)."""
    iam = server.client("iam")
    iam.create_user(UserName=name)
    if statements:
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy(*statements))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    ecs = server.client("ecs", key["AccessKeyId"], key["SecretAccessKey"])
    env = server.cli_env(key["AccessKeyId"], key["SecretAccessKey"])
    return ecs, env, f"arn:aws:iam::{ACCOUNT}:user/{name}"


def refused(call, **kwargs):
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    error = e.value.response["Error"]
    assert error["Code"] == "AccessDeniedException", error
    return error["Message"]


CONTAINERS = [{"name": "app", "image": TEST_IMAGE, "memory": 32,
               "command": ["sleep", "300"]}]


def test_narrow_user_cannot_pass_an_admin_role(berth):
    admin = create_task_role(berth, "admin")
    berth.client("iam").attach_role_policy(
        RoleName="admin", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    root = berth.client("ecs")
    root.create_cluster(clusterName="default")
    root.register_task_definition(family="admin-job", taskRoleArn=admin,
                                  containerDefinitions=CONTAINERS)
    ecs, env, me = user(berth, "narrow", {
        "Effect": "Allow", "Action": ["ecs:RegisterTaskDefinition", "ecs:RunTask"],
        "Resource": "*"})

    # The attack: register a definition that hands the admin role to a task.
    message = refused(ecs.register_task_definition, family="evil", taskRoleArn=admin,
                      containerDefinitions=CONTAINERS)
    assert message == (f"User: {me} is not authorized to perform: iam:PassRole on resource: "
                       f"{admin} because no identity-based policy allows the iam:PassRole action")
    # Naming the role by its name is the same role.
    message = refused(ecs.register_task_definition, family="evil", taskRoleArn="admin",
                      containerDefinitions=CONTAINERS)
    assert f"iam:PassRole on resource: {admin}" in message
    # The stock CLI reads the same refusal.
    code, _, err = berth.aws("ecs", "register-task-definition", "--family", "evil",
                             "--execution-role-arn", admin, "--container-definitions",
                             json.dumps(CONTAINERS), check=False, env=env)
    assert code != 0 and "AccessDeniedException" in err and "iam:PassRole" in err
    # Nothing was written.
    assert root.list_task_definition_families(familyPrefix="evil")["families"] == []

    # Running the existing admin-role definition passes the role too.
    message = refused(ecs.run_task, taskDefinition="admin-job")
    assert f"iam:PassRole on resource: {admin}" in message
    message = refused(ecs.run_task, taskDefinition=arn("task-definition/admin-job:1"))
    assert f"iam:PassRole on resource: {admin}" in message
    # ... and so does an override naming the role.
    root.register_task_definition(family="plain", containerDefinitions=CONTAINERS)
    message = refused(ecs.run_task, taskDefinition="plain", overrides={"taskRoleArn": admin})
    assert f"iam:PassRole on resource: {admin}" in message
    assert root.list_tasks()["taskArns"] == []
    # A definition without roles runs as far as placement (no instances here).
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition="plain")
    assert e.value.response["Error"]["Code"] != "AccessDeniedException"

    # With iam:PassRole on that role, passed to ECS tasks, registering works.
    berth.client("iam").put_user_policy(UserName="narrow", PolicyName="pass", PolicyDocument=policy({
        "Effect": "Allow", "Action": "iam:PassRole", "Resource": admin,
        "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}}))
    out = ecs.register_task_definition(family="evil", taskRoleArn=admin,
                                       containerDefinitions=CONTAINERS)
    assert out["taskDefinition"]["taskRoleArn"] == admin
    # PassRole to ECS tasks does not cover another role.
    other = create_task_role(berth, "other")
    message = refused(ecs.register_task_definition, family="evil", executionRoleArn=other,
                      containerDefinitions=CONTAINERS)
    assert f"iam:PassRole on resource: {other}" in message


def test_deny_on_default_tasks_holds_for_every_task_name(berth_agent):
    root = berth_agent.client("ecs")
    root.register_task_definition(family="sleeper", containerDefinitions=CONTAINERS)
    task_arn = root.run_task(taskDefinition="sleeper")["tasks"][0]["taskArn"]
    task_id = task_arn.rsplit("/", 1)[1]
    assert task_arn == arn(f"task/default/{task_id}")
    ecs, env, me = user(berth_agent, "fenced",
                        {"Effect": "Allow", "Action": "ecs:*", "Resource": "*"},
                        {"Effect": "Deny", "Action": "ecs:*",
                         "Resource": "arn:aws:ecs:*:*:task/default/*"})
    old_format = arn(f"task/{task_id}")
    for name in (task_id, old_format, task_arn):
        message = refused(ecs.describe_tasks, tasks=[name])
        assert message == (f"User: {me} is not authorized to perform: ecs:DescribeTasks on "
                           f"resource: {task_arn} with an explicit deny in an identity-based policy")
        message = refused(ecs.stop_task, task=name)
        assert f"ecs:StopTask on resource: {task_arn} with an explicit deny" in message
        message = refused(ecs.stop_task, cluster=arn("cluster/default"), task=name)
        assert f"on resource: {task_arn} with an explicit deny" in message
    message = refused(ecs.tag_resource, resourceArn=old_format, tags=[{"key": "k", "value": "v"}])
    assert f"ecs:TagResource on resource: {task_arn}" in message
    code, _, err = berth_agent.aws("ecs", "stop-task", "--task", old_format, check=False, env=env)
    assert code != 0 and "AccessDeniedException" in err and task_arn in err
    # The task still runs; the same user may still act outside task/default/*.
    assert root.describe_tasks(tasks=[task_arn])["tasks"][0]["desiredStatus"] == "RUNNING"
    assert ecs.describe_clusters(clusters=["default"])["clusters"][0]["clusterName"] == "default"
    root.stop_task(task=task_arn)
    wait_for(lambda: root.describe_tasks(tasks=[task_arn])["tasks"][0]["lastStatus"] == "STOPPED",
             what="the task to stop")


def test_tag_conditions_on_clusters(berth):
    root = berth.client("ecs")
    ecs, _, me = user(berth, "tagger", {
        "Effect": "Allow", "Action": ["ecs:CreateCluster", "ecs:TagResource"], "Resource": "*",
        "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"}}})
    # aws:RequestTag: only tagged creates.
    message = refused(ecs.create_cluster, clusterName="untagged")
    assert message == (f"User: {me} is not authorized to perform: ecs:CreateCluster on resource: "
                       f"{arn('cluster/untagged')} because no identity-based policy allows the "
                       f"ecs:CreateCluster action")
    refused(ecs.create_cluster, clusterName="red", tags=[{"key": "team", "value": "red"}])
    out = ecs.create_cluster(clusterName="blue", tags=[{"key": "team", "value": "blue"}])
    assert out["cluster"]["clusterName"] == "blue"
    names = sorted(a.rsplit("/", 1)[1] for a in root.list_clusters()["clusterArns"])
    assert names == ["blue"]

    # aws:ResourceTag: describe and delete only the blue team's clusters.
    root.create_cluster(clusterName="red", tags=[{"key": "team", "value": "red"}])
    root.create_cluster(clusterName="blue2", tags=[{"key": "team", "value": "blue"}])
    ops, _, _ = user(berth, "blue-ops", {
        "Effect": "Allow", "Action": ["ecs:DescribeClusters", "ecs:DeleteCluster"], "Resource": "*",
        "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}})
    out = ops.describe_clusters(clusters=["blue", arn("cluster/blue2")])
    assert sorted(c["clusterName"] for c in out["clusters"]) == ["blue", "blue2"]
    message = refused(ops.describe_clusters, clusters=["red"])
    assert f"ecs:DescribeClusters on resource: {arn('cluster/red')}" in message
    refused(ops.describe_clusters, clusters=[arn("cluster/red")])
    refused(ops.delete_cluster, cluster="red")
    assert root.describe_clusters(clusters=["red"])["clusters"][0]["status"] == "ACTIVE"
    assert ops.delete_cluster(cluster=arn("cluster/blue2"))["cluster"]["status"] == "INACTIVE"
    # Tags changed by root change what the user may do.
    root.tag_resource(resourceArn=arn("cluster/red"), tags=[{"key": "team", "value": "blue"}])
    assert ops.delete_cluster(cluster="red")["cluster"]["status"] == "INACTIVE"
