"""IAM, STS and enforcement, driven with the real aws CLI and boto3."""
import datetime
import json
import subprocess
import time

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from berth_harness import create_task_role

ACCOUNT = "000000000000"


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def user_with_key(server, name, *policy_arns):
    server.aws("iam", "create-user", "--user-name", name)
    for arn in policy_arns:
        server.aws("iam", "attach-user-policy", "--user-name", name, "--policy-arn", arn)
    _, out, _ = server.aws("iam", "create-access-key", "--user-name", name)
    key = out["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def cli_error(server, env, *args):
    code, _, err = server.aws(*args, check=False, env=env)
    assert code != 0, f"aws {' '.join(args)} should fail"
    return err


def test_user_limited_to_one_cluster_by_policy(berth):
    ecs = berth.client("ecs")
    ecs.create_cluster(clusterName="allowed")
    ecs.create_cluster(clusterName="other")
    cluster_arn = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/allowed"
    _, out, _ = berth.aws("iam", "create-policy", "--policy-name", "one-cluster", "--policy-document",
                          policy({"Effect": "Allow", "Action": ["ecs:Describe*", "ecs:List*"],
                                  "Resource": cluster_arn}))
    policy_arn = out["Policy"]["Arn"]
    assert policy_arn == f"arn:aws:iam::{ACCOUNT}:policy/one-cluster"
    key, secret = user_with_key(berth, "alice", policy_arn)
    env = berth.cli_env(key, secret)

    _, who, _ = berth.aws("sts", "get-caller-identity", env=env)
    assert who["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/alice" and who["Account"] == ACCOUNT

    _, out, _ = berth.aws("ecs", "describe-clusters", "--clusters", "allowed", env=env)
    assert [c["clusterName"] for c in out["clusters"]] == ["allowed"]
    _, out, _ = berth.aws("ecs", "list-container-instances", "--cluster", "allowed", env=env)
    assert out["containerInstanceArns"] == []

    err = cli_error(berth, env, "ecs", "create-cluster", "--cluster-name", "mine")
    assert "AccessDeniedException" in err
    assert (f"User: arn:aws:iam::{ACCOUNT}:user/alice is not authorized to perform: "
            f"ecs:CreateCluster on resource: arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/mine") in err
    err = cli_error(berth, env, "ecs", "describe-clusters", "--clusters", "other")
    assert "AccessDeniedException" in err
    assert (f"is not authorized to perform: ecs:DescribeClusters on resource: "
            f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/other") in err
    # Nothing was created by the refused call; root sees everything.
    names = sorted(a.rsplit("/", 1)[1] for a in ecs.list_clusters()["clusterArns"])
    assert names == ["allowed", "other"]

    # Query protocol errors for IAM itself: the user may not call IAM at all.
    err = cli_error(berth, env, "iam", "list-users")
    assert "AccessDenied" in err and "iam:ListUsers" in err

    # An explicit Deny wins over the Allow.
    berth.aws("iam", "put-user-policy", "--user-name", "alice", "--policy-name", "no-describe",
              "--policy-document", policy({"Effect": "Deny", "Action": "ecs:DescribeClusters",
                                           "Resource": "*"}))
    err = cli_error(berth, env, "ecs", "describe-clusters", "--clusters", "allowed")
    assert "with an explicit deny" in err

    # A deactivated key no longer signs anything.
    berth.aws("iam", "update-access-key", "--user-name", "alice", "--access-key-id", key,
              "--status", "Inactive")
    err = cli_error(berth, env, "sts", "get-caller-identity")
    assert "InvalidClientTokenId" in err or "UnrecognizedClient" in err


def test_iam_bad_input_gets_aws_errors_and_changes_nothing(berth):
    iam = berth.client("iam")
    iam.create_user(UserName="bob")
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName="bob")
    assert e.value.response["Error"]["Code"] == "EntityAlreadyExists"
    with pytest.raises(ClientError) as e:
        iam.get_user(UserName="nobody")
    assert e.value.response["Error"]["Code"] == "NoSuchEntity"
    with pytest.raises(ClientError) as e:
        iam.create_policy(PolicyName="bad", PolicyDocument='{"Statement": [{"Action": "*"}]}')
    assert e.value.response["Error"]["Code"] == "MalformedPolicyDocument"
    with pytest.raises(ClientError) as e:
        iam.create_role(RoleName="r", AssumeRolePolicyDocument="not json")
    assert e.value.response["Error"]["Code"] == "MalformedPolicyDocument"
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName="bad name!")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert [u["UserName"] for u in iam.list_users()["Users"]] == ["bob"]
    assert [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]] == []
    assert iam.list_roles()["Roles"] == [] or all(r["RoleName"] != "r" for r in iam.list_roles()["Roles"])


def test_assume_role_checks_the_trust_policy(berth):
    alice = user_with_key(berth, "alice")
    bob = user_with_key(berth, "bob")
    trust = policy({"Effect": "Allow", "Action": "sts:AssumeRole",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/alice"}})
    _, out, _ = berth.aws("iam", "create-role", "--role-name", "deployer",
                          "--assume-role-policy-document", trust)
    role_arn = out["Role"]["Arn"]
    berth.aws("iam", "attach-role-policy", "--role-name", "deployer", "--policy-arn",
              "arn:aws:iam::aws:policy/AdministratorAccess")
    # The users themselves may assume roles (identity side of the same-account check).
    for name in ("alice", "bob"):
        berth.aws("iam", "put-user-policy", "--user-name", name, "--policy-name", "assume",
                  "--policy-document", policy({"Effect": "Allow", "Action": "sts:AssumeRole",
                                               "Resource": "*"}))

    err = cli_error(berth, berth.cli_env(*bob), "sts", "assume-role", "--role-arn", role_arn,
                    "--role-session-name", "s1")
    assert "AccessDenied" in err
    assert (f"User: arn:aws:iam::{ACCOUNT}:user/bob is not authorized to perform: "
            f"sts:AssumeRole on resource: {role_arn}") in err

    # The CLI refuses 100 s itself; without its check the server answers.
    unchecked = boto3.client("sts", endpoint_url=berth.endpoint, region_name="us-east-1",
                             aws_access_key_id=alice[0], aws_secret_access_key=alice[1],
                             config=botocore.config.Config(parameter_validation=False,
                                                           retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        unchecked.assume_role(RoleArn=role_arn, RoleSessionName="s1", DurationSeconds=100)
    assert e.value.response["Error"]["Code"] == "ValidationError"

    _, out, _ = berth.aws("sts", "assume-role", "--role-arn", role_arn, "--role-session-name",
                          "deploy-1", "--duration-seconds", "900", env=berth.cli_env(*alice))
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    expires = datetime.datetime.fromisoformat(creds["Expiration"].replace("Z", "+00:00"))
    left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 800 < left <= 900, left
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/deploy-1"

    session = berth.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    assert session.get_caller_identity()["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/deploy-1"
    ecs = berth.client("ecs", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    ecs.create_cluster(clusterName="from-role")
    # Without its session token the key is refused.
    bare = berth.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"])
    with pytest.raises(ClientError):
        bare.get_caller_identity()


# --- roles for tasks -------------------------------------------------------------

def _wait_task(ecs, arn, statuses, timeout=90):
    deadline = time.time() + timeout
    while True:
        task = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        if task["lastStatus"] in statuses or time.time() > deadline:
            return task
        time.sleep(0.2)


def _run(ecs, family):
    """RunTask once the in-process agent has registered its instance."""
    deadline = time.time() + 30
    while True:
        out = ecs.run_task(taskDefinition=family)
        if out["tasks"] or time.time() > deadline:
            assert out["tasks"], out["failures"]
            return out["tasks"][0]["taskArn"]
        time.sleep(0.2)


def _container_output(task, marker, timeout=20):
    container = task["containers"][0]["runtimeId"]
    deadline = time.time() + timeout
    out = ""
    while marker not in out and time.time() < deadline:
        out = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
        time.sleep(0.2)
    return out


# Static busybox's wget crashes resolving the default port's service name
# (no NSS in a scratch image), so URLs name port 80.
FETCH = ("wget -qO- http://169.254.170.2:80$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; echo; "
         "echo @@META@@; wget -qO- ${ECS_CONTAINER_METADATA_URI_V4/170.2/170.2:80}/task; echo; echo @@END@@; "
         "sleep 600")


def test_task_role_credentials_and_metadata_reach_only_their_task(berth_agent):
    ecs = berth_agent.client("ecs")
    role = create_task_role(berth_agent, "app-role", ["ecs:ListClusters"])
    ecs.register_task_definition(family="with-role", taskRoleArn=role, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 16,
        "command": ["sh", "-c", FETCH]}])
    arn = _run(ecs, "with-role")
    task = _wait_task(ecs, arn, ("RUNNING", "STOPPED"))
    assert task["lastStatus"] == "RUNNING", task.get("stoppedReason")
    # Markers no JSON answer contains ("PENDING" holds "END").
    out = _container_output(task, "@@END@@")
    creds_line, rest = out.split("@@META@@", 1)
    assert creds_line.strip(), out
    creds = json.loads(creds_line.strip())
    assert creds["RoleArn"] == role and creds["AccessKeyId"].startswith("ASIA")
    metadata = json.loads(rest.split("@@END@@", 1)[0].strip())
    assert metadata["TaskARN"] == arn and metadata["Family"] == "with-role"
    assert metadata["Containers"][0]["Name"] == "app"

    # The credentials work from the host and are the role's session named for the task.
    task_id = arn.rsplit("/", 1)[1]
    env = berth_agent.cli_env(creds["AccessKeyId"], creds["SecretAccessKey"])
    env["AWS_SESSION_TOKEN"] = creds["Token"]
    _, who, _ = berth_agent.aws("sts", "get-caller-identity", env=env)
    assert who["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/app-role/{task_id}"
    _, out, _ = berth_agent.aws("ecs", "list-clusters", env=env)
    assert out["clusterArns"]
    code, _, err = berth_agent.aws("ecs", "create-cluster", "--cluster-name", "x", env=env, check=False)
    assert code != 0 and "AccessDeniedException" in err

    # Another task, knowing the first one's URI, is refused.
    uri = json.loads(subprocess.run(
        ["docker", "inspect", task["containers"][0]["runtimeId"]], capture_output=True, text=True,
        check=True).stdout)[0]["Config"]["Env"]
    uri = next(e.split("=", 1)[1] for e in uri if e.startswith("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI="))
    ecs.register_task_definition(family="thief", containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 16,
        "command": ["sh", "-c", f"wget -qO- http://169.254.170.2:80{uri} 2>&1; echo; echo @@END@@; sleep 600"]}])
    thief = _wait_task(ecs, _run(ecs, "thief"), ("RUNNING", "STOPPED"))
    stolen = _container_output(thief, "@@END@@")
    assert "AccessKeyId" not in stolen and creds["SecretAccessKey"] not in stolen, stolen
    for a in (arn, thief["taskArn"]):
        ecs.stop_task(task=a)


def test_execution_role_must_allow_the_secrets(berth_agent):
    ecs, sm = berth_agent.client("ecs"), berth_agent.client("secretsmanager")
    secret = sm.create_secret(Name="db/password", SecretString="s3cr3t-value")["ARN"]
    role = create_task_role(berth_agent, "exec-role", ["ecr:GetAuthorizationToken"])
    ecs.register_task_definition(family="needs-secret", executionRoleArn=role, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 16,
        "command": ["sh", "-c", "echo PW=$PW; sleep 600"],
        "secrets": [{"name": "PW", "valueFrom": secret}]}])
    arn = _run(ecs, "needs-secret")
    task = _wait_task(ecs, arn, ("STOPPED",))
    assert task["stopCode"] == "TaskFailedToStart"
    reason = task["stoppedReason"]
    assert reason.startswith("ResourceInitializationError: unable to pull secrets or registry auth"), reason
    assert (f"arn:aws:sts::{ACCOUNT}:assumed-role/exec-role/{arn.rsplit('/', 1)[1]} is not authorized to "
            f"perform: secretsmanager:GetSecretValue on resource: {secret}") in reason
    assert "s3cr3t-value" not in reason and "runtimeId" not in task["containers"][0]

    berth_agent.client("iam").put_role_policy(
        RoleName="exec-role", PolicyName="secrets", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret}]}))
    arn = _run(ecs, "needs-secret")
    task = _wait_task(ecs, arn, ("RUNNING", "STOPPED"))
    assert task["lastStatus"] == "RUNNING", task.get("stoppedReason")
    assert "PW=s3cr3t-value" in _container_output(task, "PW=")
    ecs.stop_task(task=arn)


def test_ecr_repository_policies_allow_and_deny(berth):
    ecr = berth.client("ecr")
    ecr.create_repository(repositoryName="shared")
    ecr.create_repository(repositoryName="private")
    carol = user_with_key(berth, "carol")
    dave = user_with_key(berth, "dave", "arn:aws:iam::aws:policy/AdministratorAccess")
    as_carol = berth.client("ecr", *carol)
    as_dave = berth.client("ecr", *dave)
    with pytest.raises(ClientError) as e:
        as_carol.list_images(repositoryName="shared")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"

    # A repository policy naming carol lets her in without any identity policy.
    ecr.set_repository_policy(repositoryName="shared", policyText=policy(
        {"Sid": "carol", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/carol"},
         "Action": ["ecr:ListImages", "ecr:DescribeImages"]}))
    assert as_carol.list_images(repositoryName="shared")["imageIds"] == []
    with pytest.raises(ClientError) as e:
        as_carol.list_images(repositoryName="private")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"

    # Its Deny beats dave's AdministratorAccess.
    ecr.set_repository_policy(repositoryName="private", policyText=policy(
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/dave"}, "Action": "ecr:*"}))
    with pytest.raises(ClientError) as e:
        as_dave.list_images(repositoryName="private")
    assert "with an explicit deny in a resource-based policy" in e.value.response["Error"]["Message"]
    assert as_dave.list_images(repositoryName="shared")["imageIds"] == []


def test_agent_credentials_serve_only_the_agent(berth_agent):
    """The credential minted for a container instance is like an ECS instance
    role, not an account administrator: it may fetch ECR pull tokens and
    nothing outside the agent protocol."""
    [path] = list(berth_agent.data_dir.rglob("agent-identity.json"))
    identity = json.loads(path.read_text())
    key, secret = identity["accessKeyId"], identity["secretAccessKey"]
    assert berth_agent.client("ecr", key, secret).get_authorization_token()["authorizationData"]
    with pytest.raises(ClientError) as e:
        berth_agent.client("ecs", key, secret).create_cluster(clusterName="from-agent")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        berth_agent.client("secretsmanager", key, secret).list_secrets()
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        berth_agent.client("iam", key, secret).list_users()
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    names = [a.rsplit("/", 1)[1] for a in berth_agent.client("ecs").list_clusters()["clusterArns"]]
    assert "from-agent" not in names
