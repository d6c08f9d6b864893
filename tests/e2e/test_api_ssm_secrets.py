"""SSM Parameter Store and Secrets Manager breadth (issue 19) through boto3
and the aws CLI. Parameter Store: service settings, parameter resource
policies, DescribeParameters' filters (ParameterFilters and the legacy
Filters), AllowedPattern, parameter Policies (an Expiration deletes the
parameter when its time comes), DataType validation, one-level names with
or without their leading `/`. Secrets Manager: ListSecrets' filters,
resource policies (a Deny in one refuses a user its identity policy
allows), replication to another Region of Berth, RotateSecret and
CancelRotateSecret. Bad input answers each service's codes and changes
nothing; new records survive a restart. Answers are checked against the
botocore models."""
import base64
import datetime
import json
import time

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from berth_harness import (ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY, check_output, load_model,
                           wait_for)

SSM = load_model("ssm", "2014-11-06")
SM = load_model("secretsmanager", "2017-10-17")
OTHER_REGION = "us-west-2"


# --- helpers -------------------------------------------------------------------
def wire(model, shape_name, value):
    """boto3's parsed output in the wire form check_output reads."""
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
    if kind == "blob" and isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return value


def checked(model, operation, response):
    body = {k: v for k, v in (response or {}).items() if k != "ResponseMetadata"}
    out = model["operations"][operation].get("output")
    if out:
        check_output(model, operation, wire(model, out["shape"], body))
    return response


def cli(server, model, operation, *args, env=None):
    """`aws …` (its JSON has epoch-number timestamps for JSON services)."""
    _, out, _ = server.aws(*args, env=env)
    check_output(model, operation, out or {})
    return out


def client(server, service, region=REGION, key=ACCESS_KEY, secret=SECRET_KEY, validate=True):
    return boto3.client(service, endpoint_url=server.endpoint, region_name=region,
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"max_attempts": 1},
                                                      parameter_validation=validate))


def code_of(call, *args, **kwargs):
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    return e.value.response["Error"]["Code"]


def gone(ssm, name):
    """Whether the parameter is no more (for event-driven waits)."""
    try:
        ssm.get_parameter(Name=name)
        return False
    except ClientError as e:
        return e.response["Error"]["Code"] == "ParameterNotFound"


def run_cases(cases):
    """(bound call, kwargs, expected code) → list of mismatches."""
    failures = []
    for call, kwargs, expected in cases:
        try:
            call(**kwargs)
            failures.append(f"{call.__name__} {str(kwargs)[:110]}: succeeded (expected {expected})")
        except ClientError as e:
            got = e.response["Error"]["Code"]
            if got != expected:
                failures.append(f"{call.__name__} {str(kwargs)[:110]}: {got} "
                                f"({e.response['Error']['Message'][:160]}), expected {expected}")
    return failures


def param_arn(name, region=REGION):
    return f"arn:aws:ssm:{region}:{ACCOUNT}:parameter/{name.lstrip('/')}"


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def user_with_key(server, name, *statements):
    iam = server.client("iam")
    iam.create_user(UserName=name)
    if statements:
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy(*statements))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def ssm_state(ssm):
    """Every parameter with its history, tags and resource policies, and the
    service settings: what the bad-input cases could change."""
    out = {}
    for page in ssm.get_paginator("describe_parameters").paginate():
        for p in page["Parameters"]:
            name = p["Name"]
            hist = ssm.get_parameter_history(Name=name, WithDecryption=True)["Parameters"]
            tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
            try:
                rp = ssm.get_resource_policies(ResourceArn=param_arn(name))["Policies"]
            except ClientError as e:
                rp = e.response["Error"]["Code"]
            out[name] = (p, [(h["Version"], h["Value"], h.get("Labels"), h.get("Policies"))
                             for h in hist], tags, rp)
    for setting in ("/ssm/parameter-store/default-parameter-tier",
                    "/ssm/parameter-store/high-throughput-enabled"):
        s = ssm.get_service_setting(SettingId=f"arn:aws:ssm:{REGION}:{ACCOUNT}:servicesetting{setting}")
        out[setting] = s["ServiceSetting"]
    return out


def sm_state(server):
    out = {}
    for region in (REGION, OTHER_REGION):
        sm = client(server, "secretsmanager", region)
        for page in sm.get_paginator("list_secrets").paginate(IncludePlannedDeletion=True):
            for s in page["SecretList"]:
                versions = sm.list_secret_version_ids(SecretId=s["ARN"], IncludeDeprecated=True)["Versions"]
                values = {v["VersionId"]: sorted(v["VersionStages"]) for v in versions}
                rp = sm.get_resource_policy(SecretId=s["ARN"]).get("ResourcePolicy")
                described = sm.describe_secret(SecretId=s["ARN"])
                described.pop("ResponseMetadata")
                out[(region, s["Name"])] = (described, values, rp)
    return out


@pytest.fixture(scope="module")
def server(shared_berth):
    return shared_berth


# --- Parameter Store -------------------------------------------------------------
def test_service_settings(server):
    ssm = server.client("ssm")
    tier_id = "/ssm/parameter-store/default-parameter-tier"
    out = cli(server, SSM, "GetServiceSetting", "ssm", "get-service-setting", "--setting-id", tier_id)
    assert out["ServiceSetting"]["SettingValue"] == "Standard"
    assert out["ServiceSetting"]["Status"] == "Default"
    assert out["ServiceSetting"]["ARN"] == f"arn:aws:ssm:{REGION}:{ACCOUNT}:servicesetting{tier_id}"
    cli(server, SSM, "UpdateServiceSetting", "ssm", "update-service-setting", "--setting-id", tier_id,
        "--setting-value", "Advanced")
    got = checked(SSM, "GetServiceSetting", ssm.get_service_setting(SettingId=tier_id))["ServiceSetting"]
    assert got["SettingValue"] == "Advanced" and got["Status"] == "Customized"
    assert got["LastModifiedUser"] == f"arn:aws:iam::{ACCOUNT}:root"
    # PutParameter without a tier now makes an advanced parameter.
    ssm.put_parameter(Name="/settings/p", Value="v", Type="String")
    [p] = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": ["/settings/p"]}])["Parameters"]
    assert p["Tier"] == "Advanced"
    out = checked(SSM, "ResetServiceSetting", ssm.reset_service_setting(SettingId=tier_id))
    assert out["ServiceSetting"]["SettingValue"] == "Standard" and out["ServiceSetting"]["Status"] == "Default"
    ssm.put_parameter(Name="/settings/q", Value="v", Type="String")
    [q] = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": ["/settings/q"]}])["Parameters"]
    assert q["Tier"] == "Standard"
    ht = "/ssm/parameter-store/high-throughput-enabled"
    checked(SSM, "UpdateServiceSetting", ssm.update_service_setting(SettingId=ht, SettingValue="true"))
    assert ssm.get_service_setting(SettingId=ht)["ServiceSetting"]["SettingValue"] == "true"
    ssm.reset_service_setting(SettingId=ht)
    assert ssm.get_service_setting(SettingId=ht)["ServiceSetting"]["SettingValue"] == "false"


def test_parameter_resource_policies_and_their_effect(server):
    ssm = server.client("ssm")
    ssm.put_parameter(Name="/shared/db-host", Value="db.internal", Type="String", Tier="Advanced")
    arn = param_arn("/shared/db-host")
    reader = user_with_key(server, "ssm-reader", {"Effect": "Allow", "Action": "ssm:GetParameter",
                                                  "Resource": "*"})
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/ssm-reader"
    mine = client(server, "ssm", key=reader[0], secret=reader[1])
    assert mine.get_parameter(Name="/shared/db-host")["Parameter"]["Value"] == "db.internal"
    deny = policy({"Sid": "NoReader", "Effect": "Deny", "Principal": {"AWS": user_arn},
                   "Action": "ssm:GetParameter", "Resource": arn})
    out = checked(SSM, "PutResourcePolicy", ssm.put_resource_policy(ResourceArn=arn, Policy=deny))
    policy_id, policy_hash = out["PolicyId"], out["PolicyHash"]
    got = checked(SSM, "GetResourcePolicies", ssm.get_resource_policies(ResourceArn=arn))["Policies"]
    assert [(p["PolicyId"], p["PolicyHash"]) for p in got] == [(policy_id, policy_hash)]
    assert json.loads(got[0]["Policy"]) == json.loads(deny)
    # The policy's Deny refuses what the identity policy allows.
    with pytest.raises(ClientError) as e:
        mine.get_parameter(Name="/shared/db-host")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "explicit deny in a resource-based policy" in e.value.response["Error"]["Message"]
    # Updating needs the current hash.
    allow_all = policy({"Sid": "Share", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                        "Action": "ssm:GetParameter", "Resource": arn})
    assert code_of(ssm.put_resource_policy, ResourceArn=arn, Policy=allow_all, PolicyId=policy_id,
                   PolicyHash="0" * 64) == "ResourcePolicyConflictException"
    out = cli(server, SSM, "PutResourcePolicy", "ssm", "put-resource-policy", "--resource-arn", arn,
              "--policy", allow_all, "--policy-id", policy_id, "--policy-hash", policy_hash)
    assert out["PolicyId"] == policy_id and out["PolicyHash"] != policy_hash
    assert mine.get_parameter(Name="/shared/db-host")["Parameter"]["Value"] == "db.internal"
    out2 = cli(server, SSM, "GetResourcePolicies", "ssm", "get-resource-policies", "--resource-arn", arn)
    assert json.loads(out2["Policies"][0]["Policy"]) == json.loads(allow_all)
    checked(SSM, "DeleteResourcePolicy", ssm.delete_resource_policy(
        ResourceArn=arn, PolicyId=policy_id, PolicyHash=out["PolicyHash"]))
    assert ssm.get_resource_policies(ResourceArn=arn)["Policies"] == []
    # Standard parameters cannot carry one.
    ssm.put_parameter(Name="/shared/standard", Value="v", Type="String", Tier="Standard")
    assert code_of(ssm.put_resource_policy, ResourceArn=param_arn("/shared/standard"),
                   Policy=allow_all) == "ResourcePolicyInvalidParameterException"


def test_describe_parameters_filters(server):
    ssm = server.client("ssm")
    ssm.put_parameter(Name="/f/app/one", Value="1", Type="String", Tags=[{"Key": "team", "Value": "blue"}])
    ssm.put_parameter(Name="/f/app/deep/two", Value="2", Type="SecureString", Tier="Advanced")
    ssm.put_parameter(Name="/f/app/list", Value="a,b", Type="StringList",
                      Tags=[{"Key": "team", "Value": "red"}])
    ssm.put_parameter(Name="/f/ami", Value="ami-0123456789abcdef0", Type="String", DataType="aws:ec2:image")
    ssm.label_parameter_version(Name="/f/app/one", Labels=["prod"])

    def names(**kwargs):
        out = checked(SSM, "DescribeParameters", ssm.describe_parameters(**kwargs))
        return sorted(p["Name"] for p in out["Parameters"])

    def pf(key, values, option=None):
        f = {"Key": key, "Values": values}
        if option:
            f["Option"] = option
        return f
    assert names(ParameterFilters=[pf("Path", ["/f/app"])]) == ["/f/app/list", "/f/app/one"]
    assert names(ParameterFilters=[pf("Path", ["/f/app"], "Recursive")]) \
        == ["/f/app/deep/two", "/f/app/list", "/f/app/one"]
    assert names(ParameterFilters=[pf("Path", ["/f"], "Recursive"), pf("Type", ["SecureString"])]) \
        == ["/f/app/deep/two"]
    assert names(ParameterFilters=[pf("Path", ["/f"], "Recursive"), pf("Tier", ["Advanced"])]) \
        == ["/f/app/deep/two"]
    assert names(ParameterFilters=[pf("KeyId", ["alias/aws/ssm"])]) == ["/f/app/deep/two"]
    assert names(ParameterFilters=[pf("DataType", ["aws:ec2:image"])]) == ["/f/ami"]
    assert names(ParameterFilters=[pf("tag:team", ["blue", "red"])]) == ["/f/app/list", "/f/app/one"]
    assert names(ParameterFilters=[pf("tag:team", ["blue"])]) == ["/f/app/one"]
    assert names(ParameterFilters=[pf("Name", ["/f/app/l"], "BeginsWith")]) == ["/f/app/list"]
    assert names(ParameterFilters=[pf("Name", ["app"], "Contains"), pf("Path", ["/f"], "Recursive")]) \
        == ["/f/app/deep/two", "/f/app/list", "/f/app/one"]
    # The legacy Filters: Name (begins with), Type, KeyId.
    assert names(Filters=[{"Key": "Name", "Values": ["/f/app/o"]}]) == ["/f/app/one"]
    assert names(Filters=[{"Key": "Type", "Values": ["StringList"]}]) == ["/f/app/list"]
    assert names(Filters=[{"Key": "KeyId", "Values": ["alias/aws/ssm"]}]) == ["/f/app/deep/two"]
    # Label is a GetParametersByPath filter.
    out = checked(SSM, "GetParametersByPath", ssm.get_parameters_by_path(
        Path="/f/app", ParameterFilters=[pf("Label", ["prod"])]))
    assert [p["Name"] for p in out["Parameters"]] == ["/f/app/one"]
    # The CLI, with its shorthand.
    out = cli(server, SSM, "DescribeParameters", "ssm", "describe-parameters", "--parameter-filters",
              "Key=Path,Option=Recursive,Values=/f", "Key=Type,Values=String")
    assert sorted(p["Name"] for p in out["Parameters"]) == ["/f/ami", "/f/app/one"]
    assert [p for p in out["Parameters"] if p["Name"] == "/f/ami"][0]["DataType"] == "aws:ec2:image"
    out = cli(server, SSM, "DescribeParameters", "ssm", "describe-parameters", "--filters",
              "Key=Name,Values=/f/app/l")
    assert [p["Name"] for p in out["Parameters"]] == ["/f/app/list"]


def test_allowed_pattern_data_types_and_root_level_names(server):
    ssm = server.client("ssm")
    ssm.put_parameter(Name="/pat/port", Value="8080", Type="String", AllowedPattern=r"^\d+$")
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name="/pat/port", Value="http", Type="String", Overwrite=True)
    assert e.value.response["Error"]["Code"] == "ParameterPatternMismatchException"
    assert ssm.get_parameter(Name="/pat/port")["Parameter"]["Value"] == "8080"
    assert code_of(ssm.put_parameter, Name="/pat/new", Value="abc", Type="String",
                   AllowedPattern=r"^\d+$") == "ParameterPatternMismatchException"
    assert code_of(ssm.get_parameter, Name="/pat/new") == "ParameterNotFound"
    [p] = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": ["/pat/port"]}])["Parameters"]
    assert p["AllowedPattern"] == r"^\d+$"
    code, _, err = server.aws("ssm", "put-parameter", "--name", "/pat/port", "--value", "x1",
                              "--overwrite", check=False)
    assert code != 0 and "ParameterPatternMismatchException" in err

    # Data types.
    ssm.put_parameter(Name="/dt/ami", Value="ami-12345678", Type="String", DataType="aws:ec2:image")
    got = checked(SSM, "GetParameter", ssm.get_parameter(Name="/dt/ami"))["Parameter"]
    assert got["DataType"] == "aws:ec2:image"
    assert code_of(ssm.put_parameter, Name="/dt/bad-ami", Value="image-1", Type="String",
                   DataType="aws:ec2:image") == "ValidationException"
    assert code_of(ssm.put_parameter, Name="/dt/bad-ami", Value="ami-12345678", Type="StringList",
                   DataType="aws:ec2:image") == "ValidationException"
    assert code_of(ssm.put_parameter, Name="/dt/x", Value="v", Type="String",
                   DataType="aws:unknown") == "ValidationException"
    assert ssm.put_parameter(Name="/dt/text", Value="anything", Type="String")["Version"] == 1
    assert ssm.get_parameter(Name="/dt/text")["Parameter"]["DataType"] == "text"

    # One-level names: with or without the leading `/`, one parameter.
    out = cli(server, SSM, "PutParameter", "ssm", "put-parameter", "--name", "rootparam",
              "--value", "r1", "--type", "String")
    assert out["Version"] == 1
    got = ssm.get_parameter(Name="/rootparam")["Parameter"]
    assert got["Value"] == "r1" and got["Name"] == "rootparam"
    assert got["ARN"] == param_arn("rootparam")
    assert code_of(ssm.put_parameter, Name="/rootparam", Value="r2", Type="String") == "ParameterAlreadyExists"
    assert ssm.put_parameter(Name="/rootparam", Value="r2", Type="String", Overwrite=True)["Version"] == 2
    assert ssm.get_parameter(Name="rootparam")["Parameter"]["Value"] == "r2"
    ssm.delete_parameter(Name="/rootparam")
    assert code_of(ssm.get_parameter, Name="rootparam") == "ParameterNotFound"


def test_parameter_policies_and_expiration(server):
    ssm = server.client("ssm")
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
    stamp = soon.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    policies = json.dumps([
        {"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": stamp}},
        {"Type": "ExpirationNotification", "Version": "1.0", "Attributes": {"Before": "1", "Unit": "Days"}},
        {"Type": "NoChangeNotification", "Version": "1.0", "Attributes": {"After": "2", "Unit": "Hours"}}])
    out = checked(SSM, "PutParameter", ssm.put_parameter(
        Name="/exp/token", Value="t", Type="SecureString", Tier="Advanced", Policies=policies))
    assert out["Tier"] == "Advanced"
    [p] = checked(SSM, "DescribeParameters", ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": ["/exp/token"]}]))["Parameters"]
    assert [pol["PolicyType"] for pol in p["Policies"]] == \
        ["Expiration", "ExpirationNotification", "NoChangeNotification"]
    assert all(pol["PolicyStatus"] == "Pending" for pol in p["Policies"])
    assert json.loads(p["Policies"][0]["PolicyText"])["Attributes"]["Timestamp"] == stamp
    hist = ssm.get_parameter_history(Name="/exp/token")["Parameters"]
    assert [pol["PolicyType"] for pol in hist[0]["Policies"]][0] == "Expiration"
    # A parameter without an Expiration stays.
    ssm.put_parameter(Name="/exp/stay", Value="s", Type="String", Tier="Advanced", Policies=json.dumps([
        {"Type": "NoChangeNotification", "Version": "1.0", "Attributes": {"After": "5", "Unit": "Days"}}]))
    # The Expiration deletes the parameter at its time (event-driven wait).
    started = time.monotonic()
    wait_for(lambda: gone(ssm, "/exp/token"),
             timeout=15, interval=0.2, what="the expired parameter to go")
    assert time.monotonic() - started < 10
    assert ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": ["/exp/token"]}])[
        "Parameters"] == []
    assert ssm.get_parameter(Name="/exp/stay")["Parameter"]["Value"] == "s"
    # Standard parameters take no policies; `[]` removes them.
    assert code_of(ssm.put_parameter, Name="/exp/std", Value="v", Type="String", Tier="Standard",
                   Policies=policies) == "InvalidPolicyAttributeException"
    ssm.put_parameter(Name="/exp/stay", Value="s2", Type="String", Overwrite=True, Policies="[]")
    [p] = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": ["/exp/stay"]}])["Parameters"]
    assert not p.get("Policies")
    # The CLI writes policies as well.
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    cli(server, SSM, "PutParameter", "ssm", "put-parameter", "--name", "/exp/cli", "--value", "c",
        "--type", "String", "--tier", "Advanced", "--policies",
        json.dumps([{"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": later}}]))
    [p] = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": ["/exp/cli"]}])["Parameters"]
    assert p["Policies"][0]["PolicyType"] == "Expiration"


def test_ssm_bad_input_gets_ssm_errors_and_changes_nothing(server):
    ssm = server.client("ssm")
    bad = client(server, "ssm", validate=False)
    ssm.put_parameter(Name="/pbad/p", Value="42", Type="String", AllowedPattern=r"^\d+$",
                      Tags=[{"Key": "k", "Value": "v"}])
    ssm.put_parameter(Name="/pbad/adv", Value="x", Type="String", Tier="Advanced")
    out = ssm.put_resource_policy(ResourceArn=param_arn("/pbad/adv"), Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "ssm:GetParameter", "Resource": param_arn("/pbad/adv")}))
    past = "2001-01-01T00:00:00.000Z"

    def exp(ts):
        return json.dumps([{"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": ts}}])
    tier_id = "/ssm/parameter-store/default-parameter-tier"
    cases = [
        (bad.get_service_setting, {"SettingId": "/ssm/nothing/here"}, "ServiceSettingNotFound"),
        (bad.update_service_setting, {"SettingId": tier_id, "SettingValue": "Premium"}, "ValidationException"),
        (bad.update_service_setting, {"SettingId": "/ssm/parameter-store/high-throughput-enabled",
                                      "SettingValue": "maybe"}, "ValidationException"),
        (bad.reset_service_setting, {"SettingId": "/ssm/nothing/here"}, "ServiceSettingNotFound"),
        (bad.put_parameter, {"Name": "/pbad/p", "Value": "abc", "Type": "String", "Overwrite": True},
         "ParameterPatternMismatchException"),
        (bad.put_parameter, {"Name": "/pbad/q", "Value": "1", "Type": "String", "AllowedPattern": "("},
         "InvalidAllowedPatternException"),
        (bad.put_parameter, {"Name": "/pbad/q", "Value": "1", "Type": "String", "Tier": "Advanced",
                             "Policies": exp(past)}, "InvalidPolicyAttributeException"),
        (bad.put_parameter, {"Name": "/pbad/q", "Value": "1", "Type": "String", "Tier": "Advanced",
                             "Policies": json.dumps([{"Type": "Bogus", "Version": "1.0", "Attributes": {}}])},
         "InvalidPolicyTypeException"),
        (bad.put_parameter, {"Name": "/pbad/q", "Value": "1", "Type": "String", "Tier": "Advanced",
                             "Policies": json.dumps([{"Type": "NoChangeNotification", "Version": "1.0",
                                                      "Attributes": {"After": "x", "Unit": "Days"}}])},
         "InvalidPolicyAttributeException"),
        (bad.put_parameter, {"Name": "/pbad/q", "Value": "1", "Type": "String", "Tier": "Advanced",
                             "Policies": "not json"}, "InvalidPolicyAttributeException"),
        (bad.put_parameter, {"Name": "/pbad/q", "Value": "ami-zz", "Type": "String",
                             "DataType": "aws:ec2:image"}, "ValidationException"),
        (bad.put_parameter, {"Name": "/pbad/q", "Value": "1", "Type": "String", "DataType": "nope"},
         "ValidationException"),
        (bad.put_parameter, {"Name": "/pbad/q", "Value": "1", "Type": "String", "Tier": "Gold"},
         "ValidationException"),
        (bad.describe_parameters, {"ParameterFilters": [{"Key": "Label", "Values": ["x"]}]},
         "InvalidFilterKey"),
        (bad.describe_parameters, {"ParameterFilters": [{"Key": "Path", "Values": ["/a"],
                                                         "Option": "BeginsWith"}]}, "InvalidFilterOption"),
        (bad.describe_parameters, {"ParameterFilters": [{"Key": "Type", "Values": ["Integer"]}]},
         "InvalidFilterValue"),
        (bad.describe_parameters, {"ParameterFilters": [{"Key": "Bogus", "Values": ["x"]}]},
         "ValidationException"),
        (bad.describe_parameters, {"Filters": [{"Key": "Path", "Values": ["/a"]}]}, "ValidationException"),
        (bad.describe_parameters, {"Filters": [{"Key": "Name", "Values": ["/a"]}],
                                   "ParameterFilters": [{"Key": "Name", "Values": ["/a"]}]},
         "ValidationException"),
        (bad.put_resource_policy, {"ResourceArn": param_arn("/pbad/p"), "Policy": "{}"},
         "MalformedResourcePolicyDocumentException"),
        (bad.put_resource_policy, {"ResourceArn": param_arn("/pbad/p"), "Policy": policy(
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
             "Action": "ssm:GetParameter", "Resource": param_arn("/pbad/p")})},
         "ResourcePolicyInvalidParameterException"),
        (bad.put_resource_policy, {"ResourceArn": param_arn("/pbad/adv"), "Policy": "not json"},
         "MalformedResourcePolicyDocumentException"),
        (bad.put_resource_policy, {"ResourceArn": param_arn("/pbad/adv"), "Policy": policy(
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "ssm:GetParameter",
             "Resource": param_arn("/pbad/adv")}), "PolicyId": out["PolicyId"],
          "PolicyHash": "0" * 64}, "ResourcePolicyConflictException"),
        (bad.delete_resource_policy, {"ResourceArn": param_arn("/pbad/adv"), "PolicyId": "nope",
                                      "PolicyHash": out["PolicyHash"]}, "ResourcePolicyNotFoundException"),
        (bad.get_resource_policies, {"ResourceArn": param_arn("/pbad/none")}, "ResourceNotFoundException"),
    ]
    before = ssm_state(ssm)
    failures = run_cases(cases)
    assert not failures, "\n".join(failures)
    assert ssm_state(ssm) == before
    code, _, err = server.aws("ssm", "update-service-setting", "--setting-id", tier_id,
                              "--setting-value", "Premium", check=False)
    assert code != 0 and "ValidationException" in err
    assert ssm_state(ssm) == before


# --- Secrets Manager ---------------------------------------------------------------
def test_list_secrets_filters(server):
    sm = server.client("secretsmanager")
    sm.create_secret(Name="lf/prod/db", SecretString="a", Description="Production database password",
                     Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "data"}])
    sm.create_secret(Name="lf/prod/api", SecretString="b", Description="API key",
                     Tags=[{"Key": "env", "Value": "prod"}])
    sm.create_secret(Name="lf/dev/db", SecretString="c", Description="development database",
                     Tags=[{"Key": "env", "Value": "dev"}])

    def names(filters, **kwargs):
        out = checked(SM, "ListSecrets", sm.list_secrets(Filters=filters, **kwargs))
        return sorted(s["Name"] for s in out["SecretList"] if s["Name"].startswith("lf/"))
    assert names([{"Key": "name", "Values": ["lf/prod/"]}]) == ["lf/prod/api", "lf/prod/db"]
    assert names([{"Key": "tag-key", "Values": ["team"]}]) == ["lf/prod/db"]
    assert names([{"Key": "tag-value", "Values": ["dev"]}]) == ["lf/dev/db"]
    assert names([{"Key": "description", "Values": ["database"]}]) == ["lf/dev/db", "lf/prod/db"]
    assert names([{"Key": "all", "Values": ["prod"]}]) == ["lf/prod/api", "lf/prod/db"]
    assert names([{"Key": "name", "Values": ["lf/"]}, {"Key": "tag-value", "Values": ["!prod"]}]) \
        == ["lf/dev/db"]
    assert names([{"Key": "name", "Values": ["lf/prod/db", "lf/dev/"]}]) == ["lf/dev/db", "lf/prod/db"]
    # A secret's primary Region is where it was made.
    assert names([{"Key": "primary-region", "Values": [REGION]}, {"Key": "name", "Values": ["lf/"]}]) \
        == ["lf/dev/db", "lf/prod/api", "lf/prod/db"]
    assert names([{"Key": "primary-region", "Values": [OTHER_REGION]}]) == []
    assert names([{"Key": "owning-service", "Values": ["rds"]}]) == []
    out = sm.list_secrets(Filters=[{"Key": "name", "Values": ["lf/"]}], SortBy="name", SortOrder="desc")
    assert [s["Name"] for s in out["SecretList"]] == ["lf/prod/db", "lf/prod/api", "lf/dev/db"]
    out = cli(server, SM, "ListSecrets", "secretsmanager", "list-secrets", "--filters",
              "Key=description,Values=API", "Key=name,Values=lf/")
    assert [s["Name"] for s in out["SecretList"]] == ["lf/prod/api"]


def test_secret_resource_policies_and_a_deny_refusing_an_allowed_user(server):
    sm = server.client("secretsmanager")
    arn = sm.create_secret(Name="rp/db", SecretString="s3cret")["ARN"]
    key = user_with_key(server, "sm-reader", {"Effect": "Allow", "Action": [
        "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], "Resource": "*"})
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/sm-reader"
    mine = client(server, "secretsmanager", key=key[0], secret=key[1])
    assert mine.get_secret_value(SecretId="rp/db")["SecretString"] == "s3cret"
    deny = policy({"Effect": "Deny", "Principal": {"AWS": user_arn},
                   "Action": "secretsmanager:GetSecretValue", "Resource": "*"})
    out = checked(SM, "ValidateResourcePolicy", sm.validate_resource_policy(SecretId=arn, ResourcePolicy=deny))
    assert out["PolicyValidationPassed"] is True
    out = cli(server, SM, "PutResourcePolicy", "secretsmanager", "put-resource-policy", "--secret-id",
              "rp/db", "--resource-policy", deny, "--block-public-policy")
    assert out["ARN"] == arn and out["Name"] == "rp/db"
    got = checked(SM, "GetResourcePolicy", sm.get_resource_policy(SecretId="rp/db"))
    assert json.loads(got["ResourcePolicy"]) == json.loads(deny)
    for secret_id in ("rp/db", arn, arn[:-7]):
        with pytest.raises(ClientError) as e:
            mine.get_secret_value(SecretId=secret_id)
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        assert f"User: {user_arn} is not authorized to perform: secretsmanager:GetSecretValue on " \
               f"resource: {arn}" in e.value.response["Error"]["Message"]
    # Only that action: DescribeSecret is still allowed.
    assert mine.describe_secret(SecretId="rp/db")["Name"] == "rp/db"
    code, _, err = server.aws("secretsmanager", "get-secret-value", "--secret-id", "rp/db",
                              env=server.cli_env(*key), check=False)
    assert code != 0 and "AccessDeniedException" in err
    # A public policy: flagged by validation, refused with BlockPublicPolicy.
    public = policy({"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue",
                     "Resource": "*"})
    out = sm.validate_resource_policy(ResourcePolicy=public)
    assert out["PolicyValidationPassed"] is False and out["ValidationErrors"]
    assert code_of(sm.put_resource_policy, SecretId="rp/db", ResourcePolicy=public,
                   BlockPublicPolicy=True) == "PublicPolicyException"
    checked(SM, "DeleteResourcePolicy", sm.delete_resource_policy(SecretId="rp/db"))
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId="rp/db")
    assert mine.get_secret_value(SecretId="rp/db")["SecretString"] == "s3cret"


def test_replication_to_another_region(server):
    sm = server.client("secretsmanager")
    west = client(server, "secretsmanager", OTHER_REGION)
    created = sm.create_secret(Name="repl/db", SecretString="v1", Tags=[{"Key": "a", "Value": "b"}])
    arn = created["ARN"]
    out = checked(SM, "ReplicateSecretToRegions", sm.replicate_secret_to_regions(
        SecretId="repl/db", AddReplicaRegions=[{"Region": OTHER_REGION}]))
    assert out["ReplicationStatus"][0]["Region"] == OTHER_REGION
    assert out["ReplicationStatus"][0]["Status"] == "InSync"
    replica_arn = arn.replace(f":{REGION}:", f":{OTHER_REGION}:")
    got = checked(SM, "GetSecretValue", west.get_secret_value(SecretId="repl/db"))
    assert got["SecretString"] == "v1" and got["ARN"] == replica_arn
    described = west.describe_secret(SecretId="repl/db")
    assert described["PrimaryRegion"] == REGION and described["Tags"] == [{"Key": "a", "Value": "b"}]
    # The primary's changes reach the replica in the same write.
    sm.put_secret_value(SecretId="repl/db", SecretString="v2")
    assert west.get_secret_value(SecretId="repl/db")["SecretString"] == "v2"
    # The replica refuses writes.
    with pytest.raises(ClientError) as e:
        west.put_secret_value(SecretId="repl/db", SecretString="x")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "replica" in e.value.response["Error"]["Message"]
    primary = sm.describe_secret(SecretId="repl/db")
    assert [r["Region"] for r in primary["ReplicationStatus"]] == [OTHER_REGION]
    # The CLI against the other Region's scope.
    env = server.cli_env()
    env["AWS_DEFAULT_REGION"] = OTHER_REGION
    out = cli(server, SM, "GetSecretValue", "secretsmanager", "get-secret-value", "--secret-id",
              "repl/db", env=env)
    assert out["SecretString"] == "v2"
    # Removing the Region deletes the replica.
    checked(SM, "RemoveRegionsFromReplication", sm.remove_regions_from_replication(
        SecretId="repl/db", RemoveReplicaRegions=[OTHER_REGION]))
    assert code_of(west.get_secret_value, SecretId="repl/db") == "ResourceNotFoundException"
    # StopReplicationToReplica promotes a replica to a standalone secret.
    sm.replicate_secret_to_regions(SecretId="repl/db", AddReplicaRegions=[{"Region": OTHER_REGION}])
    out = checked(SM, "StopReplicationToReplica", west.stop_replication_to_replica(SecretId="repl/db"))
    assert out["ARN"] == replica_arn
    # Standalone now: its primary Region is its own.
    assert west.describe_secret(SecretId="repl/db")["PrimaryRegion"] == OTHER_REGION
    west.put_secret_value(SecretId="repl/db", SecretString="west-only")
    assert sm.get_secret_value(SecretId="repl/db")["SecretString"] == "v2"
    assert not sm.describe_secret(SecretId="repl/db").get("ReplicationStatus")


def test_rotation_answers(server):
    sm = server.client("secretsmanager")
    sm.create_secret(Name="rot2/db", SecretString="v")
    for call in (lambda: sm.rotate_secret(SecretId="rot2/db"),
                 lambda: sm.rotate_secret(SecretId="rot2/db", RotationLambdaARN=
                                          f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:rotate",
                                          RotationRules={"AutomaticallyAfterDays": 30}),
                 lambda: sm.cancel_rotate_secret(SecretId="rot2/db")):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "InvalidRequestException"
        assert "Lambda" in e.value.response["Error"]["Message"]
        assert "PutSecretValue" in e.value.response["Error"]["Message"]
    code, _, err = server.aws("secretsmanager", "rotate-secret", "--secret-id", "rot2/db", check=False)
    assert code != 0 and "InvalidRequestException" in err
    d = sm.describe_secret(SecretId="rot2/db")
    assert not d.get("RotationEnabled") and "RotationLambdaARN" not in d
    assert code_of(sm.rotate_secret, SecretId="rot2/none") == "ResourceNotFoundException"


def test_secrets_manager_bad_input_gets_its_errors_and_changes_nothing(server):
    sm = server.client("secretsmanager")
    bad = client(server, "secretsmanager", validate=False)
    west = client(server, "secretsmanager", OTHER_REGION, validate=False)
    sm.create_secret(Name="smbad/db", SecretString="v", Tags=[{"Key": "k", "Value": "v"}])
    sm.create_secret(Name="smbad/repl", SecretString="r",
                     AddReplicaRegions=[{"Region": OTHER_REGION}])
    sm.create_secret(Name="smbad/gone", SecretString="g")
    sm.delete_secret(SecretId="smbad/gone", RecoveryWindowInDays=7)
    public = policy({"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue",
                     "Resource": "*"})
    cases = [
        (bad.list_secrets, {"Filters": [{"Key": "colour", "Values": ["x"]}]}, "ValidationException"),
        (bad.list_secrets, {"Filters": [{"Key": "name", "Values": []}]}, "ValidationException"),
        (bad.list_secrets, {"SortOrder": "sideways"}, "ValidationException"),
        (bad.list_secrets, {"NextToken": "garbage"}, "InvalidNextTokenException"),
        (bad.put_resource_policy, {"SecretId": "smbad/db", "ResourcePolicy": "not json"},
         "MalformedPolicyDocumentException"),
        (bad.put_resource_policy, {"SecretId": "smbad/db", "ResourcePolicy": public,
                                   "BlockPublicPolicy": True}, "PublicPolicyException"),
        (bad.put_resource_policy, {"SecretId": "smbad/none", "ResourcePolicy": policy(
            {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "*", "Resource": "*"})},
         "ResourceNotFoundException"),
        (bad.put_resource_policy, {"SecretId": "smbad/gone", "ResourcePolicy": policy(
            {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/x"}, "Action": "*",
             "Resource": "*"})}, "InvalidRequestException"),
        (bad.validate_resource_policy, {"ResourcePolicy": "{"}, "MalformedPolicyDocumentException"),
        (bad.get_resource_policy, {"SecretId": "smbad/none"}, "ResourceNotFoundException"),
        (bad.replicate_secret_to_regions, {"SecretId": "smbad/db", "AddReplicaRegions": [{"Region": REGION}]},
         "InvalidParameterException"),
        (bad.replicate_secret_to_regions, {"SecretId": "smbad/db", "AddReplicaRegions": [{"Region": "mars"}]},
         "ValidationException"),
        (bad.replicate_secret_to_regions, {"SecretId": "smbad/db",
                                           "AddReplicaRegions": [{"Region": "xx-nowhere-9"}]},
         "InvalidParameterException"),
        (bad.remove_regions_from_replication, {"SecretId": "smbad/db", "RemoveReplicaRegions": [OTHER_REGION]},
         "InvalidParameterException"),
        (west.put_secret_value, {"SecretId": "smbad/repl", "SecretString": "x"}, "InvalidParameterException"),
        (west.replicate_secret_to_regions, {"SecretId": "smbad/repl",
                                            "AddReplicaRegions": [{"Region": "eu-west-1"}]},
         "InvalidParameterException"),
        (bad.stop_replication_to_replica, {"SecretId": "smbad/repl"}, "InvalidRequestException"),
        (bad.rotate_secret, {"SecretId": "smbad/db"}, "InvalidRequestException"),
        (bad.rotate_secret, {"SecretId": "smbad/db", "RotationRules": {"AutomaticallyAfterDays": 0}},
         "ValidationException"),
        (bad.rotate_secret, {"SecretId": "smbad/gone"}, "InvalidRequestException"),
        (bad.cancel_rotate_secret, {"SecretId": "smbad/db"}, "InvalidRequestException"),
        (bad.cancel_rotate_secret, {"SecretId": "smbad/none"}, "ResourceNotFoundException"),
    ]
    before = sm_state(server)
    failures = run_cases(cases)
    assert not failures, "\n".join(failures)
    assert sm_state(server) == before
    code, _, err = server.aws("secretsmanager", "put-resource-policy", "--secret-id", "smbad/db",
                              "--resource-policy", public, "--block-public-policy", check=False)
    assert code != 0 and "PublicPolicyException" in err
    assert sm_state(server) == before


# --- restart -------------------------------------------------------------------------
def test_new_records_survive_a_restart(berth):
    ssm = berth.client("ssm")
    sm = berth.client("secretsmanager")
    ssm.update_service_setting(SettingId="/ssm/parameter-store/high-throughput-enabled", SettingValue="true")
    ssm.put_parameter(Name="/keep/adv", Value="v", Type="String", Tier="Advanced",
                      AllowedPattern="^v$", DataType="text", Policies=json.dumps([
                          {"Type": "NoChangeNotification", "Version": "1.0",
                           "Attributes": {"After": "3", "Unit": "Days"}}]))
    ssm.put_resource_policy(ResourceArn=param_arn("/keep/adv"), Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "ssm:GetParameter", "Resource": param_arn("/keep/adv")}))
    sm.create_secret(Name="keep/db", SecretString="x", AddReplicaRegions=[{"Region": OTHER_REGION}])
    sm.put_resource_policy(SecretId="keep/db", ResourcePolicy=policy(
        {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/nobody"},
         "Action": "secretsmanager:GetSecretValue", "Resource": "*"}))
    # An Expiration due in a few seconds, while the server is down.
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)) \
        .strftime("%Y-%m-%dT%H:%M:%S.000Z")
    ssm.put_parameter(Name="/keep/short", Value="v", Type="String", Tier="Advanced", Policies=json.dumps([
        {"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": soon}}]))
    ssm_before = {k: v for k, v in ssm_state(ssm).items() if k != "/keep/short"}
    sm_before = sm_state(berth)
    berth.stop()
    time.sleep(0)  # the restart below takes longer than the 2 s left
    berth.start()
    ssm = berth.client("ssm")
    # The expiry controller, started again, deletes what came due meanwhile.
    wait_for(lambda: gone(ssm, "/keep/short"),
             timeout=15, interval=0.2, what="the parameter that expired while the server was down")
    assert ssm_state(ssm) == ssm_before
    assert sm_state(berth) == sm_before
