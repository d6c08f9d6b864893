"""IAM and STS breadth (issue 19) through boto3 and the aws CLI: groups and
group policies, instance profiles, OpenID Connect providers, login
profiles and the password policy, tags and their use in conditions,
Update*, ListEntitiesForPolicy, GetAccountAuthorizationDetails, the policy
simulator, server certificates, access-key last used; STS GetSessionToken,
GetAccessKeyInfo, GetFederationToken, DecodeAuthorizationMessage and
AssumeRoleWithWebIdentity (unsigned, with a JWT signed by a key this test
makes and serves as the provider's JWKS). Bad input answers IAM's and
STS's codes and changes nothing; new records survive a restart. Every
answer is checked against the botocore model."""
import base64
import datetime
import hashlib
import http.server
import json
import secrets
import subprocess
import threading
import time

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from berth_harness import ACCOUNT, REGION, check_output, load_model, wait_for

IAM = load_model("iam", "2010-05-08")
STS = load_model("sts", "2011-06-15")


# --- helpers -------------------------------------------------------------------
def wire(model, shape_name, value):
    """boto3's parsed output in the wire form check_output reads (datetimes
    as epoch numbers, locationNames)."""
    shape = model["shapes"][shape_name]
    kind = shape["type"]
    if kind == "structure":
        members = shape.get("members", {})
        out = {}
        for key, item in value.items():
            member = members.get(key)
            assert member is not None, f"{key} is not a member of {shape_name}"
            out[member.get("locationName", key)] = wire(model, member["shape"], item)
        return out
    if kind == "list":
        return [wire(model, shape["member"]["shape"], item) for item in value]
    if kind == "map":
        return {k: wire(model, shape["value"]["shape"], v) for k, v in value.items()}
    if kind == "timestamp" and isinstance(value, datetime.datetime):
        return value.timestamp()
    if kind == "string" and isinstance(value, (dict, list)):
        return json.dumps(value)  # a policy document boto3 decoded
    if kind == "blob" and isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return value


def checked(model, operation, response):
    """Checks a boto3 (or CLI) answer against the model; answers it."""
    body = {k: v for k, v in (response or {}).items() if k != "ResponseMetadata"}
    out = model["operations"][operation].get("output")
    if out:
        check_output(model, operation, wire(model, out["shape"], body))
    else:
        assert body == {}, (operation, body)
    return response


def cli(server, model, operation, *args, env=None):
    """`aws <service> <command> …`, its output checked against the model."""
    _, out, _ = server.aws(*args, env=env)
    if out is not None:
        checked(model, operation, _cli_timestamps(model, operation, out))
    return out


def _cli_timestamps(model, operation, out):
    """The CLI prints timestamps as ISO strings: parse them back."""
    def walk(shape_name, value):
        shape = model["shapes"][shape_name]
        kind = shape["type"]
        if kind == "structure" and isinstance(value, dict):
            members = shape.get("members", {})
            return {k: walk(members[k]["shape"], v) if k in members else v for k, v in value.items()}
        if kind == "list" and isinstance(value, list):
            return [walk(shape["member"]["shape"], v) for v in value]
        if kind == "timestamp" and isinstance(value, str):
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return value
    return walk(model["operations"][operation]["output"]["shape"], out)


def code_of(call, *args, **kwargs):
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    return e.value.response["Error"]["Code"]


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource="*", **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def loose(server, service, key=None, secret=None, token=None):
    """A client that leaves validation to Berth."""
    kwargs = {}
    if key:
        kwargs = {"aws_access_key_id": key, "aws_secret_access_key": secret,
                  "aws_session_token": token}
    else:
        from berth_harness import ACCESS_KEY, SECRET_KEY
        kwargs = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}
    return boto3.client(service, endpoint_url=server.endpoint, region_name=REGION,
                        config=botocore.config.Config(retries={"max_attempts": 1},
                                                      parameter_validation=False), **kwargs)


def user_with_key(server, name, tags=()):
    iam = server.client("iam")
    iam.create_user(UserName=name, Tags=list(tags))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def as_user(server, service, key):
    return server.client(service, key[0], key[1])


def iam_state(iam):
    """Everything the bad-input cases could change."""
    details = iam.get_account_authorization_details()
    for k in ("ResponseMetadata", "IsTruncated"):
        details.pop(k, None)
    out = {"details": details,
           "oidc": iam.list_open_id_connect_providers()["OpenIDConnectProviderList"],
           "certs": iam.list_server_certificates()["ServerCertificateMetadataList"],
           "profiles": iam.list_instance_profiles()["InstanceProfiles"]}
    for p in out["oidc"]:
        got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=p["Arn"])
        got.pop("ResponseMetadata")
        out[p["Arn"]] = got
    try:
        out["password_policy"] = iam.get_account_password_policy()["PasswordPolicy"]
    except ClientError as e:
        out["password_policy"] = e.response["Error"]["Code"]
    for u in details["UserDetailList"]:
        try:
            out["login:" + u["UserName"]] = iam.get_login_profile(UserName=u["UserName"])["LoginProfile"]
        except ClientError as e:
            out["login:" + u["UserName"]] = e.response["Error"]["Code"]
        out["keys:" + u["UserName"]] = iam.list_access_keys(UserName=u["UserName"])["AccessKeyMetadata"]
    return out


def self_signed(tmp_path, cn="berth.test"):
    """A self-signed RSA certificate and its key (PEM), made with openssl."""
    key, cert = tmp_path / f"{cn}.key", tmp_path / f"{cn}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "30", "-subj", f"/CN={cn}"],
                   check=True, capture_output=True)
    return cert.read_text(), key.read_text()


@pytest.fixture(scope="module")
def server(shared_berth):
    return shared_berth


# --- groups --------------------------------------------------------------------
def test_groups_group_policies_and_entities_through_boto3(server):
    iam = server.client("iam")
    group = checked(IAM, "CreateGroup", iam.create_group(GroupName="devs", Path="/eng/"))["Group"]
    assert group["Arn"] == f"arn:aws:iam::{ACCOUNT}:group/eng/devs"
    assert group["GroupId"].startswith("AGPA")
    iam.create_user(UserName="g-ann")
    iam.create_user(UserName="g-bob")
    for u in ("g-ann", "g-bob"):
        checked(IAM, "AddUserToGroup", iam.add_user_to_group(GroupName="devs", UserName=u))
    got = checked(IAM, "GetGroup", iam.get_group(GroupName="devs"))
    assert sorted(u["UserName"] for u in got["Users"]) == ["g-ann", "g-bob"]
    assert [g["GroupName"] for g in checked(
        IAM, "ListGroupsForUser", iam.list_groups_for_user(UserName="g-ann"))["Groups"]] == ["devs"]
    doc = policy(allow("ecs:List*"))
    iam.put_group_policy(GroupName="devs", PolicyName="inline", PolicyDocument=doc)
    got = checked(IAM, "GetGroupPolicy", iam.get_group_policy(GroupName="devs", PolicyName="inline"))
    assert got["PolicyDocument"] == json.loads(doc)
    assert checked(IAM, "ListGroupPolicies", iam.list_group_policies(GroupName="devs"))["PolicyNames"] \
        == ["inline"]
    managed = iam.create_policy(PolicyName="g-read", PolicyDocument=policy(allow("ecs:Describe*")),
                                Tags=[{"Key": "scope", "Value": "read"}])["Policy"]["Arn"]
    iam.attach_group_policy(GroupName="devs", PolicyArn=managed)
    iam.attach_user_policy(UserName="g-bob", PolicyArn=managed)
    attached = checked(IAM, "ListAttachedGroupPolicies",
                       iam.list_attached_group_policies(GroupName="devs"))["AttachedPolicies"]
    assert attached == [{"PolicyName": "g-read", "PolicyArn": managed}]
    entities = checked(IAM, "ListEntitiesForPolicy", iam.list_entities_for_policy(PolicyArn=managed))
    assert [g["GroupName"] for g in entities["PolicyGroups"]] == ["devs"]
    assert [u["UserName"] for u in entities["PolicyUsers"]] == ["g-bob"]
    assert entities["PolicyRoles"] == []
    only_users = iam.list_entities_for_policy(PolicyArn=managed, EntityFilter="User")
    assert only_users["PolicyGroups"] == [] and len(only_users["PolicyUsers"]) == 1
    assert iam.get_policy(PolicyArn=managed)["Policy"]["AttachmentCount"] == 2

    details = checked(IAM, "GetAccountAuthorizationDetails",
                      iam.get_account_authorization_details(Filter=["Group", "LocalManagedPolicy"]))
    [devs] = [g for g in details["GroupDetailList"] if g["GroupName"] == "devs"]
    assert devs["GroupPolicyList"][0]["PolicyName"] == "inline"
    assert devs["AttachedManagedPolicies"] == [{"PolicyName": "g-read", "PolicyArn": managed}]
    assert details["UserDetailList"] == [] and details["RoleDetailList"] == []
    [pol] = [p for p in details["Policies"] if p["Arn"] == managed]
    assert pol["PolicyVersionList"][0]["IsDefaultVersion"]

    checked(IAM, "UpdateGroup", iam.update_group(GroupName="devs", NewGroupName="developers",
                                                 NewPath="/"))
    assert code_of(iam.get_group, GroupName="devs") == "NoSuchEntity"
    assert iam.list_groups_for_user(UserName="g-bob")["Groups"][0]["Arn"] \
        == f"arn:aws:iam::{ACCOUNT}:group/developers"
    assert [g["GroupName"] for g in checked(IAM, "ListGroups", iam.list_groups())["Groups"]] \
        == ["developers"] or "developers" in [g["GroupName"] for g in iam.list_groups()["Groups"]]
    # A group with members, policies or attachments cannot be deleted.
    assert code_of(iam.delete_group, GroupName="developers") == "DeleteConflict"
    for u in ("g-ann", "g-bob"):
        iam.remove_user_from_group(GroupName="developers", UserName=u)
    iam.delete_group_policy(GroupName="developers", PolicyName="inline")
    iam.detach_group_policy(GroupName="developers", PolicyArn=managed)
    checked(IAM, "DeleteGroup", iam.delete_group(GroupName="developers"))
    assert iam.list_groups_for_user(UserName="g-ann")["Groups"] == []


def test_a_group_policy_grants_a_call_until_the_user_leaves_the_group(server):
    iam = server.client("iam")
    key = user_with_key(server, "grp-carol")
    env = server.cli_env(*key)
    ecs = as_user(server, "ecs", key)
    cli(server, IAM, "CreateGroup", "iam", "create-group", "--group-name", "listers")
    iam.put_group_policy(GroupName="listers", PolicyName="list",
                         PolicyDocument=policy(allow("ecs:ListClusters")))
    # Not yet a member: refused.
    with pytest.raises(ClientError) as e:
        ecs.list_clusters()
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert (f"User: arn:aws:iam::{ACCOUNT}:user/grp-carol is not authorized to perform: "
            "ecs:ListClusters") in e.value.response["Error"]["Message"]
    server.aws("iam", "add-user-to-group", "--group-name", "listers", "--user-name", "grp-carol")
    assert [u["UserName"] for u in iam.get_group(GroupName="listers")["Users"]] == ["grp-carol"]
    _, out, _ = server.aws("ecs", "list-clusters", env=env)
    assert ecs.list_clusters()["clusterArns"] == out["clusterArns"]
    # Only what the group allows.
    assert code_of(ecs.create_cluster, clusterName="nope") == "AccessDeniedException"
    server.aws("iam", "remove-user-from-group", "--group-name", "listers", "--user-name", "grp-carol")
    code, _, err = server.aws("ecs", "list-clusters", env=env, check=False)
    assert code != 0 and "AccessDeniedException" in err
    assert code_of(ecs.list_clusters) == "AccessDeniedException"
    assert iam.list_groups_for_user(UserName="grp-carol")["Groups"] == []
    # A managed policy attached to the group grants as well.
    iam.add_user_to_group(GroupName="listers", UserName="grp-carol")
    iam.delete_group_policy(GroupName="listers", PolicyName="list")
    assert code_of(ecs.list_clusters) == "AccessDeniedException"
    arn = iam.create_policy(PolicyName="grp-list", PolicyDocument=policy(allow("ecs:ListClusters")))[
        "Policy"]["Arn"]
    iam.attach_group_policy(GroupName="listers", PolicyArn=arn)
    ecs.list_clusters()
    iam.detach_group_policy(GroupName="listers", PolicyArn=arn)
    assert code_of(ecs.list_clusters) == "AccessDeniedException"


# --- instance profiles, OIDC providers, login profiles, password policy --------
def test_profiles_providers_logins_and_password_policy(server):
    iam = server.client("iam")
    trust = policy({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                    "Action": "sts:AssumeRole"})
    iam.create_role(RoleName="ip-role", AssumeRolePolicyDocument=trust)
    out = cli(server, IAM, "CreateInstanceProfile", "iam", "create-instance-profile",
              "--instance-profile-name", "web-ip", "--path", "/web/", "--tags", "Key=t,Value=1")
    assert out["InstanceProfile"]["Arn"] == f"arn:aws:iam::{ACCOUNT}:instance-profile/web/web-ip"
    assert out["InstanceProfile"]["InstanceProfileId"].startswith("AIPA")
    checked(IAM, "AddRoleToInstanceProfile", iam.add_role_to_instance_profile(
        InstanceProfileName="web-ip", RoleName="ip-role"))
    out = checked(IAM, "GetInstanceProfile", iam.get_instance_profile(InstanceProfileName="web-ip"))
    assert [r["RoleName"] for r in out["InstanceProfile"]["Roles"]] == ["ip-role"]
    out = checked(IAM, "ListInstanceProfilesForRole", iam.list_instance_profiles_for_role(RoleName="ip-role"))
    assert [p["InstanceProfileName"] for p in out["InstanceProfiles"]] == ["web-ip"]
    out = checked(IAM, "ListInstanceProfiles", iam.list_instance_profiles(PathPrefix="/web/"))
    assert [p["InstanceProfileName"] for p in out["InstanceProfiles"]] == ["web-ip"]
    iam.tag_instance_profile(InstanceProfileName="web-ip", Tags=[{"Key": "u", "Value": "2"}])
    iam.untag_instance_profile(InstanceProfileName="web-ip", TagKeys=["t"])
    out = checked(IAM, "ListInstanceProfileTags", iam.list_instance_profile_tags(InstanceProfileName="web-ip"))
    assert out["Tags"] == [{"Key": "u", "Value": "2"}]
    # The role is in a profile: not deletable.
    assert code_of(iam.delete_role, RoleName="ip-role") == "DeleteConflict"
    iam.remove_role_from_instance_profile(InstanceProfileName="web-ip", RoleName="ip-role")
    checked(IAM, "DeleteInstanceProfile", iam.delete_instance_profile(InstanceProfileName="web-ip"))
    assert code_of(iam.get_instance_profile, InstanceProfileName="web-ip") == "NoSuchEntity"

    # OpenID Connect providers.
    out = cli(server, IAM, "CreateOpenIDConnectProvider", "iam", "create-open-id-connect-provider",
              "--url", "https://token.example.com", "--client-id-list", "app-1",
              "--thumbprint-list", "a" * 40, "--tags", "Key=idp,Value=x")
    arn = out["OpenIDConnectProviderArn"]
    assert arn == f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.example.com"
    iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=arn, ClientID="app-2")
    iam.remove_client_id_from_open_id_connect_provider(OpenIDConnectProviderArn=arn, ClientID="app-1")
    iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=arn,
                                                   ThumbprintList=["b" * 40, "c" * 40])
    out = checked(IAM, "GetOpenIDConnectProvider", iam.get_open_id_connect_provider(
        OpenIDConnectProviderArn=arn))
    assert out["Url"] == "token.example.com" and out["ClientIDList"] == ["app-2"]
    assert out["ThumbprintList"] == ["b" * 40, "c" * 40]
    assert out["Tags"] == [{"Key": "idp", "Value": "x"}]
    iam.tag_open_id_connect_provider(OpenIDConnectProviderArn=arn, Tags=[{"Key": "more", "Value": "y"}])
    out = checked(IAM, "ListOpenIDConnectProviderTags",
                  iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=arn))
    assert {t["Key"] for t in out["Tags"]} == {"idp", "more"}
    iam.untag_open_id_connect_provider(OpenIDConnectProviderArn=arn, TagKeys=["idp"])
    out = checked(IAM, "ListOpenIDConnectProviders", iam.list_open_id_connect_providers())
    assert {"Arn": arn} in out["OpenIDConnectProviderList"]
    iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=arn)
    assert {"Arn": arn} not in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]

    # The password policy and login profiles.
    server.aws("iam", "update-account-password-policy", "--minimum-password-length", "12",
               "--require-numbers", "--password-reuse-prevention", "2", "--allow-users-to-change-password")
    pp = checked(IAM, "GetAccountPasswordPolicy", iam.get_account_password_policy())["PasswordPolicy"]
    assert pp["MinimumPasswordLength"] == 12 and pp["RequireNumbers"] and pp["PasswordReusePrevention"] == 2
    assert pp["AllowUsersToChangePassword"] and not pp["RequireSymbols"]
    iam.create_user(UserName="login-dan")
    assert code_of(iam.create_login_profile, UserName="login-dan", Password="short1") \
        == "PasswordPolicyViolation"
    out = cli(server, IAM, "CreateLoginProfile", "iam", "create-login-profile", "--user-name",
              "login-dan", "--password", "correct-horse-42", "--password-reset-required")
    assert out["LoginProfile"]["UserName"] == "login-dan" and out["LoginProfile"]["PasswordResetRequired"]
    got = checked(IAM, "GetLoginProfile", iam.get_login_profile(UserName="login-dan"))
    assert got["LoginProfile"]["PasswordResetRequired"]
    checked(IAM, "UpdateLoginProfile", iam.update_login_profile(
        UserName="login-dan", Password="battery-staple-77", PasswordResetRequired=False))
    assert not iam.get_login_profile(UserName="login-dan")["LoginProfile"]["PasswordResetRequired"]
    # ChangePassword: the user's own call, with the old password.
    key = iam.create_access_key(UserName="login-dan")["AccessKey"]
    mine = server.client("iam", key["AccessKeyId"], key["SecretAccessKey"])
    assert code_of(mine.change_password, OldPassword="wrong-password-1",
                   NewPassword="another-pass-99") in ("InvalidUserType", "AccessDenied", "InvalidInput")
    server.aws("iam", "change-password", "--old-password", "battery-staple-77",
               "--new-password", "another-pass-99",
               env=server.cli_env(key["AccessKeyId"], key["SecretAccessKey"]))
    # Reuse prevention: the last two passwords are refused.
    assert code_of(iam.update_login_profile, UserName="login-dan", Password="battery-staple-77") \
        == "PasswordPolicyViolation"
    checked(IAM, "DeleteLoginProfile", iam.delete_login_profile(UserName="login-dan"))
    assert code_of(iam.get_login_profile, UserName="login-dan") == "NoSuchEntity"
    checked(IAM, "DeleteAccountPasswordPolicy", iam.delete_account_password_policy())
    assert code_of(iam.get_account_password_policy) == "NoSuchEntity"


# --- tags, updates, and tags in conditions -------------------------------------
def test_tags_updates_and_tag_conditions(server):
    iam = server.client("iam")
    trust = policy({"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                    "Action": "sts:AssumeRole"})
    for name, team in (("t-blue", "blue"), ("t-red", "red")):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        checked(IAM, "TagRole", iam.tag_role(RoleName=name, Tags=[{"Key": "team", "Value": team}]))
    assert checked(IAM, "ListRoleTags", iam.list_role_tags(RoleName="t-blue"))["Tags"] \
        == [{"Key": "team", "Value": "blue"}]
    checked(IAM, "UpdateRole", iam.update_role(RoleName="t-blue", Description="blue team",
                                               MaxSessionDuration=7200))
    role = iam.get_role(RoleName="t-blue")["Role"]
    assert role["Description"] == "blue team" and role["MaxSessionDuration"] == 7200
    out = checked(IAM, "UpdateRoleDescription",
                  iam.update_role_description(RoleName="t-blue", Description="the blue team"))
    assert out["Role"]["Description"] == "the blue team"

    # aws:ResourceTag on a role: the user may read blue roles only.
    reader = user_with_key(server, "tag-reader")
    iam.put_user_policy(UserName="tag-reader", PolicyName="blue", PolicyDocument=policy(
        allow("iam:GetRole", Condition={"StringEquals": {"aws:ResourceTag/team": "blue"}})))
    mine = as_user(server, "iam", reader)
    assert mine.get_role(RoleName="t-blue")["Role"]["RoleName"] == "t-blue"
    with pytest.raises(ClientError) as e:
        mine.get_role(RoleName="t-red")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert f"on resource: arn:aws:iam::{ACCOUNT}:role/t-red" in e.value.response["Error"]["Message"]
    # Retagging the red role blue lets the same call through.
    iam.tag_role(RoleName="t-red", Tags=[{"Key": "team", "Value": "blue"}])
    assert mine.get_role(RoleName="t-red")["Role"]["RoleName"] == "t-red"
    checked(IAM, "UntagRole", iam.untag_role(RoleName="t-red", TagKeys=["team"]))
    assert code_of(mine.get_role, RoleName="t-red") == "AccessDenied"

    # aws:ResourceTag on a user (the CLI).
    iam.create_user(UserName="tag-target", Tags=[{"Key": "team", "Value": "blue"}])
    iam.put_user_policy(UserName="tag-reader", PolicyName="users", PolicyDocument=policy(
        allow("iam:GetUser", Condition={"StringEquals": {"aws:ResourceTag/team": "blue"}})))
    env = server.cli_env(*reader)
    _, out, _ = server.aws("iam", "get-user", "--user-name", "tag-target", env=env)
    assert out["User"]["Tags"] == [{"Key": "team", "Value": "blue"}]
    checked(IAM, "UntagUser", iam.untag_user(UserName="tag-target", TagKeys=["team"]))
    assert code_of(mine.get_user, UserName="tag-target") == "AccessDenied"
    assert checked(IAM, "ListUserTags", iam.list_user_tags(UserName="tag-target"))["Tags"] == []

    # aws:PrincipalTag: the caller's own tags.
    caller = user_with_key(server, "tag-caller", tags=[{"Key": "dept", "Value": "ops"}])
    iam.put_user_policy(UserName="tag-caller", PolicyName="ops", PolicyDocument=policy(
        allow("ecs:ListClusters", Condition={"StringEquals": {"aws:PrincipalTag/dept": "ops"}})))
    ecs = as_user(server, "ecs", caller)
    ecs.list_clusters()
    checked(IAM, "TagUser", iam.tag_user(UserName="tag-caller", Tags=[{"Key": "dept", "Value": "finance"}]))
    assert code_of(ecs.list_clusters) == "AccessDeniedException"
    iam.tag_user(UserName="tag-caller", Tags=[{"Key": "dept", "Value": "ops"}])
    ecs.list_clusters()

    # UpdateUser renames and moves; the old name is gone, keys follow.
    checked(IAM, "UpdateUser", iam.update_user(UserName="tag-caller", NewUserName="tag-caller2",
                                               NewPath="/ops/"))
    assert code_of(iam.get_user, UserName="tag-caller") == "NoSuchEntity"
    user = iam.get_user(UserName="tag-caller2")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/ops/tag-caller2"
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName="tag-caller2")["AccessKeyMetadata"]] \
        == [caller[0]]
    assert as_user(server, "sts", caller).get_caller_identity()["Arn"] == user["Arn"]

    # Policy tags.
    arn = iam.create_policy(PolicyName="tagged-pol", PolicyDocument=policy(allow("ecs:List*")))["Policy"]["Arn"]
    checked(IAM, "TagPolicy", iam.tag_policy(PolicyArn=arn, Tags=[{"Key": "a", "Value": "1"},
                                                                  {"Key": "b", "Value": "2"}]))
    iam.untag_policy(PolicyArn=arn, TagKeys=["a"])
    assert checked(IAM, "ListPolicyTags", iam.list_policy_tags(PolicyArn=arn))["Tags"] \
        == [{"Key": "b", "Value": "2"}]
    out = cli(server, IAM, "UpdateRoleDescription", "iam", "update-role-description",
              "--role-name", "t-red", "--description", "red team")
    assert out["Role"]["Description"] == "red team"


# --- the simulator, authorization details ---------------------------------------
def test_simulator_and_authorization_details(server):
    iam = server.client("iam")
    iam.create_group(GroupName="sim-group")
    iam.put_group_policy(GroupName="sim-group", PolicyName="clusters", PolicyDocument=policy(
        allow("ecs:ListClusters"),
        allow("ecs:DescribeClusters", f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod"),
        {"Effect": "Deny", "Action": "ecs:DeleteCluster", "Resource": "*"}))
    iam.create_user(UserName="sim-user", Tags=[{"Key": "team", "Value": "x"}])
    iam.add_user_to_group(GroupName="sim-group", UserName="sim-user")
    iam.put_user_policy(UserName="sim-user", PolicyName="tagged", PolicyDocument=policy(
        allow("ecs:CreateCluster", Condition={"StringEquals": {"aws:PrincipalTag/team": "x"}})))
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/sim-user"
    out = checked(IAM, "SimulatePrincipalPolicy", iam.simulate_principal_policy(
        PolicySourceArn=user_arn,
        ActionNames=["ecs:ListClusters", "ecs:DescribeClusters", "ecs:DeleteCluster",
                     "ecs:CreateCluster", "ecs:RunTask"],
        ResourceArns=[f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod"]))
    decisions = {r["EvalActionName"]: r["EvalDecision"] for r in out["EvaluationResults"]}
    assert decisions == {"ecs:ListClusters": "allowed", "ecs:DescribeClusters": "allowed",
                         "ecs:DeleteCluster": "explicitDeny", "ecs:CreateCluster": "allowed",
                         "ecs:RunTask": "implicitDeny"}
    [deny] = [r for r in out["EvaluationResults"] if r["EvalActionName"] == "ecs:DeleteCluster"]
    assert deny["MatchedStatements"] and deny["MatchedStatements"][0]["SourcePolicyId"] == "clusters"
    out = iam.simulate_principal_policy(
        PolicySourceArn=user_arn, ActionNames=["ecs:DescribeClusters"],
        ResourceArns=[f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/dev"])
    assert out["EvaluationResults"][0]["EvalDecision"] == "implicitDeny"

    custom = policy(allow("s3:GetObject", "arn:aws:s3:::bucket/*",
                          Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    out = checked(IAM, "SimulateCustomPolicy", iam.simulate_custom_policy(
        PolicyInputList=[custom], ActionNames=["s3:GetObject"],
        ResourceArns=["arn:aws:s3:::bucket/key"],
        ContextEntries=[{"ContextKeyName": "aws:SourceIp", "ContextKeyValues": ["10.1.2.3"],
                         "ContextKeyType": "ip"}]))
    assert out["EvaluationResults"][0]["EvalDecision"] == "allowed"
    out = iam.simulate_custom_policy(
        PolicyInputList=[custom], ActionNames=["s3:GetObject"], ResourceArns=["arn:aws:s3:::bucket/key"],
        ContextEntries=[{"ContextKeyName": "aws:SourceIp", "ContextKeyValues": ["192.168.0.1"],
                         "ContextKeyType": "ip"}])
    assert out["EvaluationResults"][0]["EvalDecision"] == "implicitDeny"
    # Without the key: denied, and reported missing.
    out = iam.simulate_custom_policy(PolicyInputList=[custom], ActionNames=["s3:GetObject"],
                                     ResourceArns=["arn:aws:s3:::bucket/key"])
    assert out["EvaluationResults"][0]["EvalDecision"] == "implicitDeny"
    assert "aws:SourceIp" in out["EvaluationResults"][0].get("MissingContextValues", [])
    # The CLI.
    out = cli(server, IAM, "SimulateCustomPolicy", "iam", "simulate-custom-policy",
              "--policy-input-list", policy(allow("ecs:*")), "--action-names", "ecs:RunTask",
              "iam:PassRole")
    assert {r["EvalActionName"]: r["EvalDecision"] for r in out["EvaluationResults"]} \
        == {"ecs:RunTask": "allowed", "iam:PassRole": "implicitDeny"}
    out = checked(IAM, "GetContextKeysForPrincipalPolicy",
                  iam.get_context_keys_for_principal_policy(PolicySourceArn=user_arn))
    assert "aws:PrincipalTag/team" in out["ContextKeyNames"] or "aws:principaltag/team" in out["ContextKeyNames"]
    out = checked(IAM, "GetContextKeysForCustomPolicy",
                  iam.get_context_keys_for_custom_policy(PolicyInputList=[custom]))
    assert out["ContextKeyNames"] == ["aws:SourceIp"] or out["ContextKeyNames"] == ["aws:sourceip"]

    out = cli(server, IAM, "GetAccountAuthorizationDetails", "iam",
              "get-account-authorization-details", "--filter", "User")
    [user] = [u for u in out["UserDetailList"] if u["UserName"] == "sim-user"]
    assert user["GroupList"] == ["sim-group"]
    assert user["UserPolicyList"][0]["PolicyName"] == "tagged"
    assert user["Tags"] == [{"Key": "team", "Value": "x"}]
    # Paginated.
    page = iam.get_account_authorization_details(MaxItems=1)
    assert page["IsTruncated"] and page["Marker"]


# --- server certificates, access-key last used ----------------------------------
def test_server_certificates_and_access_key_last_used(server, tmp_path):
    iam = server.client("iam")
    cert, key = self_signed(tmp_path)
    out = checked(IAM, "UploadServerCertificate", iam.upload_server_certificate(
        ServerCertificateName="web-cert", CertificateBody=cert, PrivateKey=key, Path="/lb/",
        Tags=[{"Key": "env", "Value": "prod"}]))
    meta = out["ServerCertificateMetadata"]
    assert meta["Arn"] == f"arn:aws:iam::{ACCOUNT}:server-certificate/lb/web-cert"
    assert meta["ServerCertificateId"].startswith("ASCA")
    got = checked(IAM, "GetServerCertificate", iam.get_server_certificate(ServerCertificateName="web-cert"))
    assert got["ServerCertificate"]["CertificateBody"].strip() == cert.strip()
    assert "PrivateKey" not in json.dumps(got, default=str)
    assert got["ServerCertificate"]["Tags"] == [{"Key": "env", "Value": "prod"}]
    # Another key than the certificate's is refused.
    _, other_key = self_signed(tmp_path, "other.test")
    assert code_of(iam.upload_server_certificate, ServerCertificateName="mismatch",
                   CertificateBody=cert, PrivateKey=other_key) == "KeyPairMismatch"
    cli(server, IAM, "UpdateServerCertificate", "iam", "update-server-certificate",
        "--server-certificate-name", "web-cert", "--new-server-certificate-name", "web-cert-2",
        "--new-path", "/")
    out = cli(server, IAM, "ListServerCertificates", "iam", "list-server-certificates")
    assert [m["ServerCertificateName"] for m in out["ServerCertificateMetadataList"]] == ["web-cert-2"]
    iam.tag_server_certificate(ServerCertificateName="web-cert-2", Tags=[{"Key": "tier", "Value": "edge"}])
    iam.untag_server_certificate(ServerCertificateName="web-cert-2", TagKeys=["env"])
    out = checked(IAM, "ListServerCertificateTags",
                  iam.list_server_certificate_tags(ServerCertificateName="web-cert-2"))
    assert out["Tags"] == [{"Key": "tier", "Value": "edge"}]
    checked(IAM, "DeleteServerCertificate", iam.delete_server_certificate(ServerCertificateName="web-cert-2"))
    assert code_of(iam.get_server_certificate, ServerCertificateName="web-cert-2") == "NoSuchEntity"

    # Access-key last used: nothing before the key's first call, then the service and region.
    akey = user_with_key(server, "lastused-eve")
    out = checked(IAM, "GetAccessKeyLastUsed", iam.get_access_key_last_used(AccessKeyId=akey[0]))
    assert out["UserName"] == "lastused-eve"
    assert "LastUsedDate" not in out["AccessKeyLastUsed"]
    assert out["AccessKeyLastUsed"]["ServiceName"] == "N/A"
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)
    as_user(server, "sts", akey).get_caller_identity()
    out = iam.get_access_key_last_used(AccessKeyId=akey[0])["AccessKeyLastUsed"]
    assert out["ServiceName"] == "sts" and out["Region"] == REGION
    assert out["LastUsedDate"] >= before
    out = cli(server, IAM, "GetAccessKeyLastUsed", "iam", "get-access-key-last-used",
              "--access-key-id", akey[0])
    assert out["AccessKeyLastUsed"]["ServiceName"] == "sts"


# --- STS -----------------------------------------------------------------------
def test_session_tokens_federation_key_info_and_decoding(server):
    key = user_with_key(server, "sts-frank")
    iam = server.client("iam")
    iam.put_user_policy(UserName="sts-frank", PolicyName="fed", PolicyDocument=policy(
        allow("sts:GetFederationToken"), allow("sts:GetAccessKeyInfo"),
        allow("ecs:ListClusters"), allow("sts:DecodeAuthorizationMessage")))
    sts = as_user(server, "sts", key)
    out = checked(STS, "GetSessionToken", sts.get_session_token(DurationSeconds=900))
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    left = (creds["Expiration"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 850 < left <= 900
    # The session acts as the user: same identity, same policies.
    session = server.client("sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    assert session.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/sts-frank"
    server.client("ecs", creds["AccessKeyId"], creds["SecretAccessKey"],
                  creds["SessionToken"]).list_clusters()
    # A session cannot mint another.
    assert code_of(session.get_session_token) == "AccessDenied"

    out = checked(STS, "GetAccessKeyInfo", sts.get_access_key_info(AccessKeyId=key[0]))
    assert out["Account"] == ACCOUNT
    out = cli(server, STS, "GetAccessKeyInfo", "sts", "get-access-key-info", "--access-key-id",
              creds["AccessKeyId"])
    assert out["Account"] == ACCOUNT

    # Federation: the session policy bounds what the federated user may do.
    out = checked(STS, "GetFederationToken", sts.get_federation_token(
        Name="fed-bob", DurationSeconds=900, Policy=policy(allow("ecs:ListClusters"))))
    assert out["FederatedUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:federated-user/fed-bob"
    assert out["FederatedUser"]["FederatedUserId"] == f"{ACCOUNT}:fed-bob"
    fc = out["Credentials"]
    fed_ecs = server.client("ecs", fc["AccessKeyId"], fc["SecretAccessKey"], fc["SessionToken"])
    fed_ecs.list_clusters()
    assert server.client("sts", fc["AccessKeyId"], fc["SecretAccessKey"], fc["SessionToken"]) \
        .get_caller_identity()["Arn"] == f"arn:aws:sts::{ACCOUNT}:federated-user/fed-bob"
    with pytest.raises(ClientError) as e:
        fed_ecs.create_cluster(clusterName="fed")
    refusal = e.value.response["Error"]["Message"]
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    # Without a session policy a federated user may do nothing.
    out = cli(server, STS, "GetFederationToken", "sts", "get-federation-token", "--name", "fed-none",
              env=server.cli_env(*key))
    nc = out["Credentials"]
    assert code_of(server.client("ecs", nc["AccessKeyId"], nc["SecretAccessKey"],
                                 nc["SessionToken"]).list_clusters) == "AccessDeniedException"

    # DecodeAuthorizationMessage reads a refusal Berth issued.
    out = checked(STS, "DecodeAuthorizationMessage", sts.decode_authorization_message(
        EncodedMessage=base64.b64encode(refusal.encode()).decode()))
    decoded = json.loads(out["DecodedMessage"])
    assert decoded["allowed"] is False
    assert decoded["context"]["action"] == "ecs:CreateCluster"
    assert decoded["context"]["principal"]["arn"] == f"arn:aws:sts::{ACCOUNT}:federated-user/fed-bob"
    out = cli(server, STS, "DecodeAuthorizationMessage", "sts", "decode-authorization-message",
              "--encoded-message", refusal, env=server.cli_env(*key))
    assert json.loads(out["DecodedMessage"])["context"]["resource"] \
        == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/fed"


# --- web identity --------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def _probable_prime(n: int) -> bool:
    for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(24):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    while True:
        c = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if _probable_prime(c):
            return c


class RsaKey:
    """A 2048-bit RSA key made here; signs RS256 JWTs (PKCS#1 v1.5)."""
    E = 65537

    def __init__(self, kid):
        self.kid = kid
        while True:
            p, q = _prime(1024), _prime(1024)
            phi = (p - 1) * (q - 1)
            if p != q and phi % self.E:
                break
        self.n = p * q
        self.d = pow(self.E, -1, phi)

    def jwk(self):
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                "n": _b64url(_int_bytes(self.n)), "e": _b64url(_int_bytes(self.E))}

    def sign(self, claims, header=None):
        head = {"alg": "RS256", "typ": "JWT", "kid": self.kid, **(header or {})}
        signing_input = f"{_b64url(json.dumps(head).encode())}.{_b64url(json.dumps(claims).encode())}"
        digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + \
            hashlib.sha256(signing_input.encode()).digest()
        k = (self.n.bit_length() + 7) // 8
        em = b"\x00\x01" + b"\xff" * (k - len(digest_info) - 3) + b"\x00" + digest_info
        sig = pow(int.from_bytes(em, "big"), self.d, self.n).to_bytes(k, "big")
        return f"{signing_input}.{_b64url(sig)}"


class Provider:
    """An OpenID Connect provider on loopback: discovery document and JWKS."""

    def __init__(self, keys):
        self.keys = keys
        self.fetches = 0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/keys"}
                elif self.path == "/keys":
                    provider.fetches += 1
                    body = {"keys": [k.jwk() for k in provider.keys]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.issuer = f"http://{self.host}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def oidc():
    key = RsaKey("k1")
    provider = Provider([key])
    yield provider, key
    provider.close()


def unsigned_sts(server, validate=True):
    return boto3.client("sts", endpoint_url=server.endpoint, region_name=REGION,
                        config=botocore.config.Config(retries={"max_attempts": 1},
                                                      signature_version=botocore.UNSIGNED,
                                                      parameter_validation=validate))


def claims(provider, **over):
    now = int(time.time())
    out = {"iss": provider.issuer, "sub": "system:serviceaccount:ns:app", "aud": "berth-client",
           "iat": now, "nbf": now, "exp": now + 600}
    out.update(over)
    return {k: v for k, v in out.items() if v is not None}


def test_assume_role_with_web_identity(server, oidc):
    provider, key = oidc
    iam = server.client("iam")
    provider_arn = iam.create_open_id_connect_provider(
        Url=provider.issuer, ClientIDList=["berth-client"], ThumbprintList=["0" * 40]
    )["OpenIDConnectProviderArn"]
    assert provider_arn == f"arn:aws:iam::{ACCOUNT}:oidc-provider/{provider.host}"
    trust = policy({"Effect": "Allow", "Principal": {"Federated": provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {"StringEquals": {f"{provider.host}:sub": "system:serviceaccount:ns:app"}}})
    role_arn = iam.create_role(RoleName="web-id", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName="web-id", PolicyName="list", PolicyDocument=policy(allow("ecs:ListClusters")))

    token = key.sign(claims(provider))
    sts = unsigned_sts(server)
    out = checked(STS, "AssumeRoleWithWebIdentity", sts.assume_role_with_web_identity(
        RoleArn=role_arn, RoleSessionName="pod-1", WebIdentityToken=token, DurationSeconds=900))
    assert out["SubjectFromWebIdentityToken"] == "system:serviceaccount:ns:app"
    assert out["Audience"] == "berth-client" and out["Provider"] == provider.issuer
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/web-id/pod-1"
    c = out["Credentials"]
    server.client("ecs", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]).list_clusters()
    assert server.client("sts", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]) \
        .get_caller_identity()["Arn"] == out["AssumedRoleUser"]["Arn"]

    # The CLI sends it unsigned too (no credentials in its environment at all).
    env = server.cli_env()
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(k)
    out = cli(server, STS, "AssumeRoleWithWebIdentity", "sts", "assume-role-with-web-identity",
              "--role-arn", role_arn, "--role-session-name", "pod-2", "--web-identity-token",
              token, "--no-sign-request", env=env)
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/web-id/pod-2"

    # Refusals: another subject (trust condition), an audience the provider
    # does not list, a token signed by a key the provider does not publish,
    # an expired token, a tampered payload.
    stranger = RsaKey("k1")
    head, payload, sig = token.split(".")
    forged_claims = claims(provider, sub="system:serviceaccount:ns:admin")
    tampered = f"{head}.{_b64url(json.dumps(forged_claims).encode())}.{sig}"
    cases = [
        (key.sign(claims(provider, sub="system:serviceaccount:ns:other")), "AccessDenied"),
        (key.sign(claims(provider, aud="someone-else")), "InvalidIdentityToken"),
        (stranger.sign(claims(provider)), "InvalidIdentityToken"),
        (key.sign(claims(provider, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200,
                         nbf=int(time.time()) - 7200)), "ExpiredTokenException"),
        (tampered, "InvalidIdentityToken"),
        (key.sign(claims(provider, iss="http://127.0.0.1:1")), "InvalidIdentityToken"),
        (key.sign(claims(provider), header={"kid": "unknown"}), "InvalidIdentityToken"),
        ("not.a.jwt", "InvalidIdentityToken"),
    ]
    sessions_before = iam.list_roles()["Roles"]
    for bad, expected in cases:
        with pytest.raises(ClientError) as e:
            sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="bad", WebIdentityToken=bad)
        assert e.value.response["Error"]["Code"] == expected, (bad[:40], e.value.response["Error"])
    assert iam.list_roles()["Roles"] == sessions_before
    # Removing the provider refuses its tokens.
    iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    assert code_of(sts.assume_role_with_web_identity, RoleArn=role_arn, RoleSessionName="gone",
                   WebIdentityToken=key.sign(claims(provider))) == "InvalidIdentityToken"


# --- bad input -------------------------------------------------------------------
def test_iam_bad_input_gets_iam_errors_and_changes_nothing(server, tmp_path):
    iam = server.client("iam")
    bad = loose(server, "iam")
    iam.create_group(GroupName="bad-group")
    iam.create_user(UserName="bad-user")
    iam.add_user_to_group(GroupName="bad-group", UserName="bad-user")
    iam.create_login_profile(UserName="bad-user", Password="Some-Password-123")
    iam.create_instance_profile(InstanceProfileName="bad-ip")
    iam.create_open_id_connect_provider(Url="https://bad.example.com", ClientIDList=["c"],
                                        ThumbprintList=["d" * 40])
    cert, key = self_signed(tmp_path, "bad.test")
    iam.upload_server_certificate(ServerCertificateName="bad-cert", CertificateBody=cert, PrivateKey=key)
    managed = iam.create_policy(PolicyName="bad-pol", PolicyDocument=policy(allow("ecs:*")))["Policy"]["Arn"]
    oidc_arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/bad.example.com"
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    cases = [
        (bad.create_group, {"GroupName": "bad-group"}, "EntityAlreadyExists"),
        (bad.create_group, {"GroupName": "bad group!"}, "ValidationError"),
        (bad.add_user_to_group, {"GroupName": "bad-group", "UserName": "nobody"}, "NoSuchEntity"),
        (bad.add_user_to_group, {"GroupName": "no-group", "UserName": "bad-user"}, "NoSuchEntity"),
        (bad.put_group_policy, {"GroupName": "bad-group", "PolicyName": "p",
                                "PolicyDocument": '{"Statement": [{"Action": "*"}]}'},
         "MalformedPolicyDocument"),
        (bad.put_group_policy, {"GroupName": "bad-group", "PolicyName": "p",
                                "PolicyDocument": "not json"}, "MalformedPolicyDocument"),
        (bad.delete_group, {"GroupName": "bad-group"}, "DeleteConflict"),
        (bad.get_group_policy, {"GroupName": "bad-group", "PolicyName": "none"}, "NoSuchEntity"),
        (bad.update_group, {"GroupName": "no-group", "NewGroupName": "x"}, "NoSuchEntity"),
        (bad.create_instance_profile, {"InstanceProfileName": "bad-ip"}, "EntityAlreadyExists"),
        (bad.add_role_to_instance_profile, {"InstanceProfileName": "bad-ip", "RoleName": "no-role"},
         "NoSuchEntity"),
        (bad.create_open_id_connect_provider, {"Url": "http://example.com", "ClientIDList": ["c"]},
         "InvalidInput"),
        (bad.create_open_id_connect_provider, {"Url": "https://bad.example.com", "ClientIDList": ["c"],
                                               "ThumbprintList": ["d" * 40]}, "EntityAlreadyExists"),
        (bad.create_open_id_connect_provider, {"Url": "https://x.example.com", "ThumbprintList": ["short"]},
         "ValidationError"),
        (bad.get_open_id_connect_provider,
         {"OpenIDConnectProviderArn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/none.example.com"},
         "NoSuchEntity"),
        (bad.add_client_id_to_open_id_connect_provider,
         {"OpenIDConnectProviderArn": oidc_arn, "ClientID": "x" * 256}, "ValidationError"),
        (bad.create_login_profile, {"UserName": "bad-user", "Password": "Another-Pass-123"},
         "EntityAlreadyExists"),
        (bad.create_login_profile, {"UserName": "nobody", "Password": "Another-Pass-123"}, "NoSuchEntity"),
        (bad.update_account_password_policy, {"MinimumPasswordLength": 5}, "ValidationError"),
        (bad.update_account_password_policy, {"MaxPasswordAge": 2000}, "ValidationError"),
        (bad.tag_user, {"UserName": "bad-user", "Tags": too_many}, "ValidationError"),
        (bad.tag_user, {"UserName": "bad-user", "Tags": [{"Key": "aws:x", "Value": "v"}]}, "InvalidInput"),
        (bad.tag_role, {"RoleName": "no-role", "Tags": [{"Key": "a", "Value": "b"}]}, "NoSuchEntity"),
        (bad.update_user, {"UserName": "nobody", "NewUserName": "x"}, "NoSuchEntity"),
        (bad.update_role, {"RoleName": "no-role", "Description": "x"}, "NoSuchEntity"),
        (bad.update_role, {"RoleName": "AWSServiceRoleForECS", "MaxSessionDuration": 100}, "ValidationError"),
        (bad.update_role_description, {"RoleName": "no-role", "Description": "x"}, "NoSuchEntity"),
        (bad.list_entities_for_policy, {"PolicyArn": f"arn:aws:iam::{ACCOUNT}:policy/none"}, "NoSuchEntity"),
        (bad.list_entities_for_policy, {"PolicyArn": managed, "EntityFilter": "Bogus"}, "ValidationError"),
        (bad.simulate_principal_policy, {"PolicySourceArn": f"arn:aws:iam::{ACCOUNT}:user/nobody",
                                         "ActionNames": ["ecs:ListClusters"]}, "NoSuchEntity"),
        (bad.simulate_custom_policy, {"PolicyInputList": ["not json"], "ActionNames": ["ecs:ListClusters"]},
         "InvalidInput"),
        (bad.simulate_custom_policy, {"PolicyInputList": [policy(allow("ecs:*"))], "ActionNames": [
            "ecs:ListClusters"], "ContextEntries": [{"ContextKeyName": "aws:SourceIp",
                                                    "ContextKeyValues": ["nope"], "ContextKeyType": "ip"}]},
         "InvalidInput"),
        (bad.upload_server_certificate, {"ServerCertificateName": "bad-cert", "CertificateBody": cert,
                                         "PrivateKey": key}, "EntityAlreadyExists"),
        (bad.upload_server_certificate, {"ServerCertificateName": "junk", "CertificateBody": "junk",
                                         "PrivateKey": key}, "MalformedCertificate"),
        (bad.get_server_certificate, {"ServerCertificateName": "none"}, "NoSuchEntity"),
        (bad.get_access_key_last_used, {"AccessKeyId": "AKIAAAAAAAAAAAAAAAAA"}, "NoSuchEntity"),
        (bad.get_account_authorization_details, {"Filter": ["Bogus"]}, "ValidationError"),
        (bad.delete_instance_profile, {"InstanceProfileName": "none"}, "NoSuchEntity"),
    ]
    before = iam_state(iam)
    failures = []
    for call, kwargs, code in cases:
        try:
            call(**kwargs)
            failures.append(f"{call.__name__} {kwargs}: succeeded")
        except ClientError as e:
            got = e.response["Error"]["Code"]
            if got != code:
                failures.append(f"{call.__name__} {str(kwargs)[:100]}: {got} ({e.response['Error']['Message']}), "
                                f"expected {code}")
    assert not failures, "\n".join(failures)
    assert iam_state(iam) == before
    # The same through the CLI.
    code, _, err = server.aws("iam", "delete-group", "--group-name", "bad-group", check=False)
    assert code != 0 and "DeleteConflict" in err
    assert iam_state(iam) == before


def test_sts_bad_input_gets_sts_errors_and_changes_nothing(server, oidc):
    provider, key = oidc
    iam = server.client("iam")
    user = user_with_key(server, "sts-bad")
    sts = loose(server, "sts", *user)
    unsigned = unsigned_sts(server, validate=False)
    role_arn = iam.create_role(RoleName="sts-bad-role", AssumeRolePolicyDocument=policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "sts:AssumeRole"}))["Role"]["Arn"]
    root_sts = loose(server, "sts")
    session = root_sts.get_session_token(DurationSeconds=900)["Credentials"]
    session_sts = loose(server, "sts", session["AccessKeyId"], session["SecretAccessKey"],
                        session["SessionToken"])
    cases = [
        (sts.get_session_token, {"DurationSeconds": 100}, "ValidationError"),
        (sts.get_session_token, {"DurationSeconds": 200000}, "ValidationError"),
        (sts.get_session_token, {"SerialNumber": "arn:aws:iam::000000000000:mfa/x", "TokenCode": "12"},
         "ValidationError"),
        (session_sts.get_session_token, {}, "AccessDenied"),
        (sts.get_access_key_info, {"AccessKeyId": "short"}, "ValidationError"),
        (sts.get_access_key_info, {"AccessKeyId": "AKIA0000000000000000"}, "AccessDenied"),
        (sts.get_federation_token, {"Name": "x"}, "ValidationError"),
        (sts.get_federation_token, {"Name": "ok-name"}, "AccessDenied"),
        (root_sts.get_federation_token, {"Name": "ok-name", "Policy": "not json"}, "MalformedPolicyDocument"),
        (root_sts.get_federation_token, {"Name": "bad name!"}, "ValidationError"),
        (sts.decode_authorization_message, {"EncodedMessage": "garbage"}, "AccessDenied"),
        (root_sts.decode_authorization_message, {"EncodedMessage": "garbage"},
         "InvalidAuthorizationMessageException"),
        (root_sts.assume_role, {"RoleArn": "not-an-arn", "RoleSessionName": "ss"}, "ValidationError"),
        (root_sts.assume_role, {"RoleArn": role_arn, "RoleSessionName": "ss", "DurationSeconds": 99999},
         "ValidationError"),
        (unsigned.assume_role_with_web_identity, {"RoleArn": role_arn, "RoleSessionName": "ss",
                                                  "WebIdentityToken": "abc"}, "ValidationError"),
        (unsigned.assume_role_with_web_identity, {"RoleArn": role_arn, "RoleSessionName": "ss",
                                                  "WebIdentityToken": key.sign(claims(provider)),
                                                  "ProviderId": "www.amazon.com"}, "InvalidIdentityToken"),
        (unsigned.assume_role_with_web_identity, {"RoleArn": role_arn, "RoleSessionName": "ss",
                                                  "WebIdentityToken": key.sign(claims(provider))},
         "InvalidIdentityToken"),
    ]
    before = iam_state(iam)
    failures = []
    for call, kwargs, code in cases:
        try:
            call(**kwargs)
            failures.append(f"{call.__name__} {kwargs}: succeeded")
        except ClientError as e:
            got = e.response["Error"]["Code"]
            if got != code:
                failures.append(f"{call.__name__} {str(kwargs)[:100]}: {got} ({e.response['Error']['Message']}), "
                                f"expected {code}")
    assert not failures, "\n".join(failures)
    assert iam_state(iam) == before
    code, _, err = server.aws("sts", "decode-authorization-message", "--encoded-message", "garbage",
                              check=False)
    assert code != 0 and "InvalidAuthorizationMessageException" in err


# --- restart ---------------------------------------------------------------------
def test_new_records_survive_a_restart(berth, tmp_path):
    iam = berth.client("iam")
    iam.create_group(GroupName="keep-g")
    key = user_with_key(berth, "keep-u", tags=[{"Key": "k", "Value": "v"}])
    iam.add_user_to_group(GroupName="keep-g", UserName="keep-u")
    iam.put_group_policy(GroupName="keep-g", PolicyName="list", PolicyDocument=policy(allow("ecs:ListClusters")))
    iam.create_instance_profile(InstanceProfileName="keep-ip")
    iam.create_open_id_connect_provider(Url="https://keep.example.com", ClientIDList=["c"],
                                        ThumbprintList=["e" * 40])
    iam.create_login_profile(UserName="keep-u", Password="Keep-Password-1")
    iam.update_account_password_policy(MinimumPasswordLength=10)
    cert, pkey = self_signed(tmp_path, "keep.test")
    iam.upload_server_certificate(ServerCertificateName="keep-cert", CertificateBody=cert, PrivateKey=pkey)
    as_user(berth, "ecs", key).list_clusters()
    session = berth.client("sts", *key).get_session_token(DurationSeconds=900)["Credentials"]
    before = iam_state(iam)
    last_used = iam.get_access_key_last_used(AccessKeyId=key[0])["AccessKeyLastUsed"]
    berth.stop()
    berth.start()
    iam = berth.client("iam")
    assert iam_state(iam) == before
    # Uses are written at most once a minute (berth-iam's usage module) and
    # when the server stops: a graceful stop keeps the last one.
    after = iam.get_access_key_last_used(AccessKeyId=key[0])["AccessKeyLastUsed"]
    assert after == last_used
    # The group still grants; the session still works.
    as_user(berth, "ecs", key).list_clusters()
    assert berth.client("sts", session["AccessKeyId"], session["SecretAccessKey"],
                        session["SessionToken"]).get_caller_identity()["Arn"].endswith("user/keep-u")
