"""The minimal EC2 VPC API (what awsvpc network configurations refer to),
driven with the real aws CLI and boto3."""
import json

import pytest
from botocore.exceptions import ClientError


def code_of(call, *args, **kwargs):
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    return e.value.response["Error"]["Code"]


def test_default_vpc_subnets_and_security_groups(berth):
    _, out, _ = berth.aws("ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true")
    [vpc] = out["Vpcs"]
    assert vpc["CidrBlock"] == "172.31.0.0/16" and vpc["IsDefault"] is True
    _, out, _ = berth.aws("ec2", "describe-subnets", "--filters", f"Name=vpc-id,Values={vpc['VpcId']}")
    subnets = sorted(out["Subnets"], key=lambda s: s["AvailabilityZone"])
    assert [s["AvailabilityZone"] for s in subnets] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert all(s["DefaultForAz"] and s["SubnetId"].startswith("subnet-") for s in subnets)
    _, out, _ = berth.aws("ec2", "describe-security-groups", "--filters", "Name=group-name,Values=default")
    assert [g["VpcId"] for g in out["SecurityGroups"]] == [vpc["VpcId"]]


def test_vpc_lifecycle_and_bad_input(berth):
    ec2 = berth.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1b")["Subnet"]
    assert subnet["AvailableIpAddressCount"] == 251 and subnet["AvailabilityZone"] == "us-east-1b"
    assert code_of(ec2.create_subnet, VpcId=vpc, CidrBlock="10.0.1.128/25") == "InvalidSubnet.Conflict"
    assert code_of(ec2.create_subnet, VpcId=vpc, CidrBlock="192.168.0.0/24") == "InvalidSubnet.Range"
    assert code_of(ec2.create_vpc, CidrBlock="10.0.0.0/8") == "InvalidVpc.Range"
    assert code_of(ec2.create_subnet, VpcId="vpc-0123456789abcdef0", CidrBlock="10.0.2.0/24") \
        == "InvalidVpcID.NotFound"

    web = ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vpc)["GroupId"]
    db = ec2.create_security_group(GroupName="db", Description="db tier", VpcId=vpc)["GroupId"]
    assert code_of(ec2.create_security_group, GroupName="web", Description="again", VpcId=vpc) \
        == "InvalidGroup.Duplicate"
    berth.aws("ec2", "authorize-security-group-ingress", "--group-id", web,
              "--protocol", "tcp", "--port", "80", "--cidr", "0.0.0.0/0")
    ec2.authorize_security_group_ingress(GroupId=db, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": web}]}])
    assert code_of(ec2.authorize_security_group_ingress, GroupId=web, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) \
        == "InvalidPermission.Duplicate"
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=[web, db])["SecurityGroups"]}
    assert groups[web]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] == "0.0.0.0/0"
    assert groups[db]["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == web
    assert groups[web]["IpPermissionsEgress"][0]["IpProtocol"] == "-1"
    assert code_of(ec2.revoke_security_group_ingress, GroupId=web, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 81, "ToPort": 81, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) \
        == "InvalidPermission.NotFound"

    assert code_of(ec2.delete_vpc, VpcId=vpc) == "DependencyViolation"
    ec2.delete_security_group(GroupId=db)
    ec2.delete_security_group(GroupId=web)
    ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    ec2.delete_vpc(VpcId=vpc)
    assert code_of(ec2.describe_vpcs, VpcIds=[vpc]) == "InvalidVpcID.NotFound"

    # What Berth does not serve says so, in EC2's shape.
    assert code_of(ec2.describe_instances) == "UnsupportedOperation"


def test_ec2_calls_need_permission(berth):
    berth.aws("iam", "create-user", "--user-name", "eve")
    _, out, _ = berth.aws("iam", "create-access-key", "--user-name", "eve")
    key = out["AccessKey"]
    ec2 = berth.client("ec2", key["AccessKeyId"], key["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        ec2.create_vpc(CidrBlock="10.1.0.0/16")
    assert e.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert "is not authorized to perform: ec2:CreateVpc" in e.value.response["Error"]["Message"]
    berth.aws("iam", "put-user-policy", "--user-name", "eve", "--policy-name", "read",
              "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
                  {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]}))
    assert len(ec2.describe_vpcs()["Vpcs"]) == 1
