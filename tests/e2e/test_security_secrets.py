"""Issue 16 items 4, 6 and 12 for Secrets Manager, SSM Parameter Store and
CloudWatch Logs: BatchGetSecretValue returns only the secrets the caller may
read; an explicit Deny on a secret's suffixed ARN holds whether the caller
names it by name, partial ARN or full ARN; tag conditions (aws:ResourceTag,
aws:RequestTag) are filled in from the resource's stored tags and the
request's tags. Driven with the real aws CLI and boto3."""
import json
import time

import pytest
from botocore.exceptions import ClientError

from berth_harness import ACCOUNT, REGION, create_task_role


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def user(server, name, *statements):
    """An IAM user with an inline policy of `statements`; its access key."""
    server.aws("iam", "create-user", "--user-name", name)
    if statements:
        server.aws("iam", "put-user-policy", "--user-name", name, "--policy-name", "p",
                   "--policy-document", policy(*statements))
    _, out, _ = server.aws("iam", "create-access-key", "--user-name", name)
    key = out["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def user_arn(name):
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def sm_arn(rest):
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{rest}"


def refused(call, *args, **kwargs):
    """The AccessDeniedException `call` raises; its message."""
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    err = e.value.response["Error"]
    assert err["Code"] == "AccessDeniedException", err
    return err["Message"]


def cli_error(server, env, *args):
    code, _, err = server.aws(*args, check=False, env=env)
    assert code != 0, f"aws {' '.join(args)} should fail"
    return err


def create_secret(sm, name, value, **tags):
    out = sm.create_secret(Name=name, SecretString=value,
                           Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return out["ARN"]


def test_batch_get_secret_value_returns_only_what_the_caller_may_read(berth):
    root = berth.client("secretsmanager")
    a = create_secret(root, "team/a", "value-a")
    b = create_secret(root, "team/b", "value-b")
    key = user(berth, "reader",
               {"Effect": "Allow", "Action": ["secretsmanager:BatchGetSecretValue",
                                              "secretsmanager:ListSecrets"], "Resource": "*"},
               {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                "Resource": sm_arn("team/a-??????")})
    sm = berth.client("secretsmanager", *key)

    out = sm.batch_get_secret_value(SecretIdList=["team/a", "team/b"])
    assert [(v["ARN"], v["SecretString"]) for v in out["SecretValues"]] == [(a, "value-a")]
    assert out["Errors"] == [{
        "SecretId": "team/b",
        "ErrorCode": "AccessDeniedException",
        "Message": (f"User: {user_arn('reader')} is not authorized to perform: "
                    f"secretsmanager:GetSecretValue on resource: {b} because no identity-based "
                    f"policy allows the secretsmanager:GetSecretValue action"),
    }]
    assert "value-b" not in json.dumps(out, default=str)

    # The same through the CLI, naming B by its full ARN.
    _, out, _ = berth.aws("secretsmanager", "batch-get-secret-value", "--secret-id-list", a, b,
                          env=berth.cli_env(*key))
    assert [v["Name"] for v in out["SecretValues"]] == ["team/a"]
    assert [(e["SecretId"], e["ErrorCode"]) for e in out["Errors"]] == [(b, "AccessDeniedException")]

    # Filters list only the secrets the caller may read.
    out = sm.batch_get_secret_value(Filters=[{"Key": "name", "Values": ["team/"]}])
    assert [v["Name"] for v in out["SecretValues"]] == ["team/a"]
    assert "team/b" not in json.dumps(out, default=str)

    # GetSecretValue itself agrees.
    assert sm.get_secret_value(SecretId="team/a")["SecretString"] == "value-a"
    refused(sm.get_secret_value, SecretId="team/b")

    # Without secretsmanager:BatchGetSecretValue the call is refused outright.
    only_get = berth.client("secretsmanager", *user(
        berth, "getter", {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                          "Resource": "*"}))
    message = refused(only_get.batch_get_secret_value, SecretIdList=["team/a"])
    assert "secretsmanager:BatchGetSecretValue on resource: *" in message


def test_tag_conditions_on_secrets(berth):
    root = berth.client("secretsmanager")
    blue = create_secret(root, "svc/blue", "blue-value", team="blue")
    red = create_secret(root, "svc/red", "red-value", team="red")
    sm = berth.client("secretsmanager", *user(
        berth, "blueteam",
        {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}}))

    assert sm.describe_secret(SecretId="svc/blue")["ARN"] == blue
    assert sm.get_secret_value(SecretId="svc/blue")["SecretString"] == "blue-value"
    assert sm.get_secret_value(SecretId=sm_arn("svc/blue"))["ARN"] == blue
    for form in ("svc/red", sm_arn("svc/red"), red):
        message = refused(sm.get_secret_value, SecretId=form)
        assert message == (f"User: {user_arn('blueteam')} is not authorized to perform: "
                           f"secretsmanager:GetSecretValue on resource: {red} because no "
                           f"identity-based policy allows the secretsmanager:GetSecretValue action")
        refused(sm.describe_secret, SecretId=form)
    # Re-tagging the red secret blue needs access to the red secret first.
    refused(sm.tag_resource, SecretId="svc/red", Tags=[{"Key": "team", "Value": "blue"}])
    assert root.describe_secret(SecretId="svc/red")["Tags"] == [{"Key": "team", "Value": "red"}]

    # aws:RequestTag on CreateSecret (with TagResource, which tags at
    # creation also need) allows only tagged creates.
    key = user(berth, "creator",
               {"Effect": "Allow",
                "Action": ["secretsmanager:CreateSecret", "secretsmanager:TagResource"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"}}})
    creator = berth.client("secretsmanager", *key)
    arn = create_secret(creator, "svc/new-blue", "v", team="blue")
    assert arn.startswith(sm_arn("svc/new-blue-"))
    refused(creator.create_secret, Name="svc/untagged", SecretString="v")
    refused(creator.create_secret, Name="svc/new-red", SecretString="v",
            Tags=[{"Key": "team", "Value": "red"}])
    env = berth.cli_env(*key)
    err = cli_error(berth, env, "secretsmanager", "create-secret", "--name", "svc/cli",
                    "--secret-string", "v")
    assert "AccessDeniedException" in err and "secretsmanager:CreateSecret" in err
    berth.aws("secretsmanager", "create-secret", "--name", "svc/cli", "--secret-string", "v",
              "--tags", "Key=team,Value=blue", env=env)
    names = sorted(s["Name"] for s in root.list_secrets()["SecretList"])
    assert names == ["svc/blue", "svc/cli", "svc/new-blue", "svc/red"]


def test_deny_on_the_suffixed_arn_holds_for_every_form(berth):
    root = berth.client("secretsmanager")
    db = create_secret(root, "prod/db", "hunter2")
    create_secret(root, "prod/cache", "other")
    key = user(berth, "dev",
               {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"},
               {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue",
                "Resource": sm_arn("prod/db-??????")})
    sm = berth.client("secretsmanager", *key)
    for form in ("prod/db", sm_arn("prod/db"), db):
        message = refused(sm.get_secret_value, SecretId=form)
        assert message == (f"User: {user_arn('dev')} is not authorized to perform: "
                           f"secretsmanager:GetSecretValue on resource: {db} with an explicit "
                           f"deny in an identity-based policy")
    env = berth.cli_env(*key)
    for form in ("prod/db", sm_arn("prod/db")):
        err = cli_error(berth, env, "secretsmanager", "get-secret-value", "--secret-id", form)
        assert "AccessDeniedException" in err and "explicit deny" in err and db in err
    out = sm.batch_get_secret_value(SecretIdList=["prod/db", "prod/cache"])
    assert [v["Name"] for v in out["SecretValues"]] == ["prod/cache"]
    assert out["Errors"][0]["SecretId"] == "prod/db"
    assert "hunter2" not in json.dumps(out, default=str)
    # Everything else stays allowed.
    assert sm.get_secret_value(SecretId="prod/cache")["SecretString"] == "other"
    assert sm.describe_secret(SecretId="prod/db")["ARN"] == db


def test_secret_resource_policy_allows_and_denies(berth):
    root = berth.client("secretsmanager")
    shared = create_secret(root, "shared/key", "s3cret")
    guest = berth.client("secretsmanager", *user(berth, "guest"))
    refused(guest.get_secret_value, SecretId="shared/key")
    root.put_resource_policy(SecretId="shared/key", ResourcePolicy=policy(
        {"Effect": "Allow", "Principal": {"AWS": user_arn("guest")},
         "Action": "secretsmanager:GetSecretValue", "Resource": "*"}))
    assert guest.get_secret_value(SecretId="shared/key")["SecretString"] == "s3cret"
    assert guest.get_secret_value(SecretId=sm_arn("shared/key"))["ARN"] == shared
    refused(guest.describe_secret, SecretId="shared/key")
    root.delete_resource_policy(SecretId="shared/key")
    refused(guest.get_secret_value, SecretId="shared/key")


def test_ssm_resource_tag_condition(berth):
    root = berth.client("ssm")
    for name, env in (("/app/dev/url", "dev"), ("/app/prod/url", "prod")):
        root.put_parameter(Name=name, Value=f"{env}-value", Type="SecureString",
                           Tags=[{"Key": "env", "Value": env}])
    ssm = berth.client("ssm", *user(
        berth, "devs",
        {"Effect": "Allow", "Action": "ssm:GetParameter*", "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/env": "dev"}}}))
    got = ssm.get_parameter(Name="/app/dev/url", WithDecryption=True)["Parameter"]
    assert got["Value"] == "dev-value"
    prod_arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/app/prod/url"
    for form in ("/app/prod/url", "/app/prod/url:1", prod_arn):
        message = refused(ssm.get_parameter, Name=form, WithDecryption=True)
        assert message == (f"User: {user_arn('devs')} is not authorized to perform: "
                           f"ssm:GetParameter on resource: {prod_arn} because no identity-based "
                           f"policy allows the ssm:GetParameter action")
    refused(ssm.get_parameters, Names=["/app/dev/url", "/app/prod/url"])
    assert [p["Name"] for p in ssm.get_parameters(Names=["/app/dev/url"])["Parameters"]] == [
        "/app/dev/url"]
    # Changing the tags is not reading: refused.
    refused(ssm.add_tags_to_resource, ResourceType="Parameter", ResourceId="/app/prod/url",
            Tags=[{"Key": "env", "Value": "dev"}])
    assert root.list_tags_for_resource(ResourceType="Parameter", ResourceId="/app/prod/url")[
        "TagList"] == [{"Key": "env", "Value": "prod"}]


def test_logs_deny_by_group_arn(berth):
    root = berth.client("logs")
    now = int(time.time() * 1000)
    for group in ("/app/web", "/app/audit"):
        root.create_log_group(logGroupName=group)
        root.create_log_stream(logGroupName=group, logStreamName="s1")
        root.put_log_events(logGroupName=group, logStreamName="s1",
                            logEvents=[{"timestamp": now, "message": f"{group} line"}])
    audit = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/app/audit"
    key = user(berth, "ops",
               {"Effect": "Allow", "Action": "logs:*", "Resource": "*"},
               {"Effect": "Deny", "Action": "logs:*", "Resource": [audit, f"{audit}:*"]})
    logs = berth.client("logs", *key)
    events = logs.get_log_events(logGroupName="/app/web", logStreamName="s1",
                                 startFromHead=True)["events"]
    assert [e["message"] for e in events] == ["/app/web line"]

    message = refused(logs.get_log_events, logGroupName="/app/audit", logStreamName="s1")
    assert message == (f"User: {user_arn('ops')} is not authorized to perform: "
                       f"logs:GetLogEvents on resource: {audit}:log-stream:s1 with an explicit "
                       f"deny in an identity-based policy")
    refused(logs.get_log_events, logGroupIdentifier=audit, logStreamName="s1")
    refused(logs.filter_log_events, logGroupIdentifier=f"{audit}:*")
    refused(logs.filter_log_events, logGroupName="/app/audit")
    refused(logs.describe_log_streams, logGroupIdentifier=audit)
    refused(logs.put_log_events, logGroupName="/app/audit", logStreamName="s1",
            logEvents=[{"timestamp": now + 1, "message": "forged"}])
    refused(logs.delete_log_group, logGroupName="/app/audit")
    refused(logs.tag_resource, resourceArn=audit, tags={"x": "y"})
    err = cli_error(berth, berth.cli_env(*key), "logs", "filter-log-events",
                    "--log-group-identifier", audit)
    assert "AccessDeniedException" in err and "explicit deny" in err
    # Nothing of the audit group changed or leaked.
    events = root.get_log_events(logGroupName="/app/audit", logStreamName="s1",
                                 startFromHead=True)["events"]
    assert [e["message"] for e in events] == ["/app/audit line"]
    assert [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]] == [
        "/app/audit", "/app/web"]


def _run_task(ecs, family, timeout=90):
    """Runs `family` once the in-process agent has registered; waits for the
    task to run or stop."""
    deadline = time.time() + 30
    while True:
        out = ecs.run_task(taskDefinition=family)
        if out["tasks"] or time.time() > deadline:
            assert out["tasks"], out["failures"]
            arn = out["tasks"][0]["taskArn"]
            break
        time.sleep(0.2)
    deadline = time.time() + timeout
    while True:
        task = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        if task["lastStatus"] in ("RUNNING", "STOPPED") or time.time() > deadline:
            return task
        time.sleep(0.2)


def test_execution_role_deny_holds_for_a_partial_secret_arn(berth_agent):
    ecs, sm = berth_agent.client("ecs"), berth_agent.client("secretsmanager")
    secret = sm.create_secret(Name="db/pw", SecretString="s3cr3t-value")["ARN"]
    role = create_task_role(berth_agent, "exec-deny", ["ecr:GetAuthorizationToken",
                                                      "secretsmanager:GetSecretValue"])
    berth_agent.client("iam").put_role_policy(
        RoleName="exec-deny", PolicyName="deny", PolicyDocument=policy(
            {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue",
             "Resource": sm_arn("db/pw-??????")}))
    # The partial ARN (no suffix) resolves to the secret; the Deny holds.
    ecs.register_task_definition(family="partial", executionRoleArn=role, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 16,
        "command": ["sh", "-c", "echo PW=$PW; sleep 600"],
        "secrets": [{"name": "PW", "valueFrom": sm_arn("db/pw")}]}])
    task = _run_task(ecs, "partial")
    assert task["lastStatus"] == "STOPPED", task
    reason = task["stoppedReason"]
    assert (f"is not authorized to perform: secretsmanager:GetSecretValue on resource: {secret}"
            in reason), reason
    assert "s3cr3t-value" not in reason
