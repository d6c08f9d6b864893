"""Issue 16 items 6 and 12 for IAM, STS and EC2: every call is authorized on
the canonical ARN of what it names (a user's ARN carries its path, a
security group named by its name is its id), tag conditions are filled in,
and refusals read as AWS's. Driven with the real aws CLI and boto3."""
import json

import pytest
from botocore.exceptions import ClientError

from berth_harness import ACCOUNT, REGION


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def user(server, name, *statements, path=None):
    """An IAM user with an inline policy of `statements`; its access key."""
    args = ["iam", "create-user", "--user-name", name]
    if path:
        args += ["--path", path]
    server.aws(*args)
    if statements:
        server.aws("iam", "put-user-policy", "--user-name", name, "--policy-name", "p",
                   "--policy-document", policy(*statements))
    _, out, _ = server.aws("iam", "create-access-key", "--user-name", name)
    key = out["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def iam_arn(rest):
    return f"arn:aws:iam::{ACCOUNT}:{rest}"


def cli_error(server, env, *args):
    code, _, err = server.aws(*args, check=False, env=env)
    assert code != 0, f"aws {' '.join(args)} should fail"
    return err


def test_a_deny_on_a_user_path_is_not_bypassed_by_the_name(berth):
    berth.aws("iam", "create-user", "--user-name", "bob", "--path", "/division/")
    berth.aws("iam", "create-user", "--user-name", "carol")
    key, secret = user(
        berth, "admin",
        {"Effect": "Allow", "Action": "iam:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:*", "Resource": iam_arn("user/division/*")},
    )
    env = berth.cli_env(key, secret)
    bob = iam_arn("user/division/bob")
    # Named by name alone (in any case): the Deny on the path holds.
    for name in ("bob", "BOB"):
        for action, args in [
            ("GetUser", ["get-user", "--user-name", name]),
            ("CreateAccessKey", ["create-access-key", "--user-name", name]),
            ("AttachUserPolicy", ["attach-user-policy", "--user-name", name, "--policy-arn",
                                  "arn:aws:iam::aws:policy/AdministratorAccess"]),
            ("PutUserPolicy", ["put-user-policy", "--user-name", name, "--policy-name", "x",
                               "--policy-document",
                               policy({"Effect": "Allow", "Action": "*", "Resource": "*"})]),
            ("DeleteUser", ["delete-user", "--user-name", name]),
        ]:
            err = cli_error(berth, env, "iam", *args)
            assert "AccessDenied" in err, err
            assert (f"User: {iam_arn('user/admin')} is not authorized to perform: iam:{action} "
                    f"on resource: {bob} with an explicit deny in an identity-based policy") in err
    err = cli_error(berth, env, "iam", "list-users", "--path-prefix", "/division/")
    assert f"iam:ListUsers on resource: {iam_arn('user/division/')} with an explicit deny" in err
    # bob is untouched, and everything else is allowed.
    _, out, _ = berth.aws("iam", "list-attached-user-policies", "--user-name", "bob")
    assert out["AttachedPolicies"] == []
    _, out, _ = berth.aws("iam", "list-access-keys", "--user-name", "bob")
    assert out["AccessKeyMetadata"] == []
    _, out, _ = berth.aws("iam", "get-user", "--user-name", "carol", env=env)
    assert out["User"]["Arn"] == iam_arn("user/carol")
    _, out, _ = berth.aws("iam", "list-users", env=env)
    assert {u["UserName"] for u in out["Users"]} >= {"bob", "carol", "admin"}

    # An Allow that names the user without its path does not match.
    key, secret = user(berth, "reader",
                       {"Effect": "Allow", "Action": "iam:GetUser",
                        "Resource": iam_arn("user/bob")})
    iam = berth.client("iam", key, secret)
    with pytest.raises(ClientError) as e:
        iam.get_user(UserName="bob")
    err = e.value.response["Error"]
    assert (e.value.response["ResponseMetadata"]["HTTPStatusCode"], err["Code"]) == (403, "AccessDenied")
    assert err["Message"].endswith(
        f"on resource: {bob} because no identity-based policy allows the iam:GetUser action")


def test_attachments_and_tags_are_conditions_iam_checks(berth):
    berth.aws("iam", "create-role", "--role-name", "blue", "--path", "/svc/",
              "--assume-role-policy-document", policy({
                  "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                  "Action": "sts:AssumeRole"}),
              "--tags", "Key=team,Value=blue")
    berth.aws("iam", "create-role", "--role-name", "red",
              "--assume-role-policy-document", policy({
                  "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                  "Action": "sts:AssumeRole"}),
              "--tags", "Key=team,Value=red")
    key, secret = user(
        berth, "dana",
        {"Effect": "Allow", "Action": "iam:AttachRolePolicy", "Resource": "*",
         "Condition": {"ArnEquals": {"iam:PolicyARN":
                                     "arn:aws:iam::aws:policy/AmazonSSMReadOnlyAccess"}}},
        {"Effect": "Allow", "Action": ["iam:GetRole", "sts:AssumeRole"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}},
        {"Effect": "Allow", "Action": "iam:CreateUser", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"}}},
    )
    iam = berth.client("iam", key, secret)
    sts = berth.client("sts", key, secret)
    iam.attach_role_policy(RoleName="blue",
                           PolicyArn="arn:aws:iam::aws:policy/AmazonSSMReadOnlyAccess")
    with pytest.raises(ClientError) as e:
        iam.attach_role_policy(RoleName="blue",
                               PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert iam.get_role(RoleName="blue")["Role"]["Arn"] == iam_arn("role/svc/blue")
    with pytest.raises(ClientError) as e:
        iam.get_role(RoleName="red")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    creds = sts.assume_role(RoleArn=iam_arn("role/svc/blue"), RoleSessionName="s1")
    assert creds["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/blue/s1"
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=iam_arn("role/red"), RoleSessionName="s1")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    iam.create_user(UserName="tagged", Tags=[{"Key": "team", "Value": "blue"}])
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName="untagged")
    assert e.value.response["Error"]["Code"] == "AccessDenied"


def test_get_caller_identity_answers_under_an_explicit_deny(berth):
    key, secret = user(berth, "locked", {"Effect": "Deny", "Action": "*", "Resource": "*"})
    env = berth.cli_env(key, secret)
    _, who, _ = berth.aws("sts", "get-caller-identity", env=env)
    assert who["Arn"] == iam_arn("user/locked")
    err = cli_error(berth, env, "iam", "get-user")
    assert f"iam:GetUser on resource: {iam_arn('user/locked')} with an explicit deny" in err


def test_ec2_describe_is_refused_as_unauthorized_operation(berth):
    key, secret = user(berth, "ecsonly", {"Effect": "Allow", "Action": "ecs:*", "Resource": "*"})
    ec2 = berth.client("ec2", key, secret)
    for call in (ec2.describe_vpcs, ec2.describe_subnets, ec2.describe_security_groups,
                 ec2.describe_network_interfaces):
        with pytest.raises(ClientError) as e:
            call()
        err = e.value.response["Error"]
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert err["Code"] == "UnauthorizedOperation", err
        assert err["Message"].startswith("You are not authorized to perform this operation. ")
        assert f"User: {iam_arn('user/ecsonly')} is not authorized to perform: ec2:Describe" in err["Message"]
        assert "on resource: * because no identity-based policy allows" in err["Message"]
    err = cli_error(berth, berth.cli_env(key, secret), "ec2", "describe-vpcs")
    assert "UnauthorizedOperation" in err
    # A dry run says whether the call would be allowed.
    with pytest.raises(ClientError) as e:
        ec2.describe_vpcs(DryRun=True)
    assert e.value.response["Error"]["Code"] == "UnauthorizedOperation"
    berth.aws("iam", "put-user-policy", "--user-name", "ecsonly", "--policy-name", "ec2",
              "--policy-document", policy({"Effect": "Allow", "Action": "ec2:DescribeVpcs",
                                           "Resource": "*"}))
    with pytest.raises(ClientError) as e:
        ec2.describe_vpcs(DryRun=True)
    assert e.value.response["Error"]["Code"] == "DryRunOperation"
    assert len(ec2.describe_vpcs()["Vpcs"]) == 1


def test_a_deny_on_a_security_group_is_not_bypassed_by_its_name(berth):
    root = berth.client("ec2")
    group = root.create_security_group(GroupName="web", Description="web")["GroupId"]
    key, secret = user(
        berth, "netops",
        {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["ec2:DeleteSecurityGroup",
                                      "ec2:AuthorizeSecurityGroupIngress"],
         "Resource": f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{group}"},
    )
    ec2 = berth.client("ec2", key, secret)
    for kwargs in ({"GroupName": "web"}, {"GroupId": group}):
        with pytest.raises(ClientError) as e:
            ec2.delete_security_group(**kwargs)
        err = e.value.response["Error"]
        assert err["Code"] == "UnauthorizedOperation"
        assert f"security-group/{group} with an explicit deny" in err["Message"]
        with pytest.raises(ClientError) as e:
            ec2.authorize_security_group_ingress(
                **kwargs, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                                          "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        assert e.value.response["Error"]["Code"] == "UnauthorizedOperation"
    groups = root.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert groups[0]["IpPermissions"] == []
    # Other groups are the user's to manage.
    other = ec2.create_security_group(GroupName="other", Description="o")["GroupId"]
    ec2.delete_security_group(GroupName="other")
    assert other not in [g["GroupId"] for g in root.describe_security_groups()["SecurityGroups"]]
