"""EC2 API breadth (issue 19): what infrastructure tools describe around a
VPC — tags, zones, regions, account attributes, security group rules,
VPC/subnet attributes and blocks, internet gateways, route tables, NAT
gateways and elastic IPs — through boto3 and the aws CLI, outputs checked
against the botocore ec2 model, bad input refused with EC2's codes and
changing nothing, and state surviving a restart."""
import datetime

import pytest
from botocore.exceptions import ClientError

from berth_harness import check_output, load_model

MODEL = load_model("ec2", "2016-11-15")


def wire(shape_name, value):
    """boto3's parsed output (member names, datetimes) in the wire form
    check_output reads (EC2's locationNames, epoch numbers)."""
    shape = MODEL["shapes"][shape_name]
    kind = shape["type"]
    if kind == "structure":
        members = shape.get("members", {})
        out = {}
        for key, item in value.items():
            member = members.get(key)
            assert member is not None, f"{key} is not a member of {shape_name}"
            out[member.get("locationName", key)] = wire(member["shape"], item)
        return out
    if kind == "list":
        return [wire(shape["member"]["shape"], item) for item in value]
    if kind == "timestamp" and isinstance(value, datetime.datetime):
        return value.timestamp()
    return value


def checked(operation, response):
    """Checks a boto3 response against the model; answers it."""
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    out = MODEL["operations"][operation].get("output")
    check_output(MODEL, operation, wire(out["shape"], body) if out else body)
    return response


def code_of(call, *args, **kwargs):
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    return e.value.response["Error"]["Code"]


def snapshot(ec2):
    """Everything the bad-input cases could change."""
    return {
        "vpcs": ec2.describe_vpcs()["Vpcs"],
        "subnets": ec2.describe_subnets()["Subnets"],
        "rules": ec2.describe_security_group_rules()["SecurityGroupRules"],
        "igws": ec2.describe_internet_gateways()["InternetGateways"],
        "tables": ec2.describe_route_tables()["RouteTables"],
        "nats": ec2.describe_nat_gateways()["NatGateways"],
        "addresses": ec2.describe_addresses()["Addresses"],
        "tags": ec2.describe_tags()["Tags"],
    }


def test_region_zones_and_account(shared_berth):
    ec2 = shared_berth.client("ec2")
    zones = checked("DescribeAvailabilityZones", ec2.describe_availability_zones())
    assert [(z["ZoneName"], z["ZoneId"], z["State"]) for z in zones["AvailabilityZones"]] == [
        ("us-east-1a", "use1-az1", "available"),
        ("us-east-1b", "use1-az2", "available"),
        ("us-east-1c", "use1-az3", "available")]
    z = zones["AvailabilityZones"][0]
    assert (z["RegionName"], z["ZoneType"], z["OptInStatus"], z["GroupName"], z["NetworkBorderGroup"]) \
        == ("us-east-1", "availability-zone", "opt-in-not-required", "us-east-1", "us-east-1")
    regions = checked("DescribeRegions", ec2.describe_regions())["Regions"]
    assert {"RegionName": "us-east-1", "Endpoint": "ec2.us-east-1.amazonaws.com",
            "OptInStatus": "opt-in-not-required"} in regions
    attrs = checked("DescribeAccountAttributes", ec2.describe_account_attributes())
    values = {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
              for a in attrs["AccountAttributes"]}
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    assert values["supported-platforms"] == ["VPC"] and values["default-vpc"] == [default_vpc]
    assert values["vpc-max-security-groups-per-interface"] == ["5"] and values["vpc-max-elastic-ips"] == ["5"]
    # The CLI reads the same.
    _, out, _ = shared_berth.aws("ec2", "describe-availability-zones", "--zone-ids", "use1-az2")
    assert [z["ZoneName"] for z in out["AvailabilityZones"]] == ["us-east-1b"]
    # The default VPC as AWS makes it: an internet gateway and a main table
    # routing 0.0.0.0/0 to it.
    [igw] = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [default_vpc]}])["InternetGateways"]
    [main] = checked("DescribeRouteTables", ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [default_vpc]},
        {"Name": "association.main", "Values": ["true"]}]))["RouteTables"]
    routes = {r["DestinationCidrBlock"]: r["GatewayId"] for r in main["Routes"]}
    assert routes == {"172.31.0.0/16": "local", "0.0.0.0/0": igw["InternetGatewayId"]}
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [default_vpc]}])["Subnets"]
    assert sorted(s["AvailabilityZoneId"] for s in subnets) == ["use1-az1", "use1-az2", "use1-az3"]


def test_vpc_network_records_and_bad_input(berth):
    ec2 = berth.client("ec2")
    vpc = checked("CreateVpc", ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "main"}]}]))["Vpc"]
    vpc_id = vpc["VpcId"]
    assert vpc["Tags"] == [{"Key": "Name", "Value": "main"}]
    # Attributes and a second block.
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    out = checked("DescribeVpcAttribute",
                  ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames"))
    assert out["EnableDnsHostnames"] == {"Value": True}
    assoc = checked("AssociateVpcCidrBlock", ec2.associate_vpc_cidr_block(
        VpcId=vpc_id, CidrBlock="10.1.0.0/16"))["CidrBlockAssociation"]
    [described] = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    assert [b["CidrBlock"] for b in described["CidrBlockAssociationSet"]] == ["10.0.0.0/16", "10.1.0.0/16"]
    subnet = checked("CreateSubnet", ec2.create_subnet(
        VpcId=vpc_id, CidrBlock="10.1.1.0/24", AvailabilityZone="us-east-1b",
        TagSpecifications=[{"ResourceType": "subnet", "Tags": [{"Key": "tier", "Value": "public"}]}]))["Subnet"]
    subnet_id = subnet["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": True})
    ec2.modify_subnet_attribute(SubnetId=subnet_id, PrivateDnsHostnameTypeOnLaunch="resource-name")
    [s] = checked("DescribeSubnets", ec2.describe_subnets(
        Filters=[{"Name": "tag:tier", "Values": ["public"]}]))["Subnets"]
    assert s["MapPublicIpOnLaunch"] is True
    assert s["PrivateDnsNameOptionsOnLaunch"]["HostnameType"] == "resource-name"
    # Security group rules.
    sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc_id)["GroupId"]
    added = checked("AuthorizeSecurityGroupIngress", ec2.authorize_security_group_ingress(
        GroupId=sg, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
        TagSpecifications=[{"ResourceType": "security-group-rule",
                            "Tags": [{"Key": "why", "Value": "http"}]}]))
    rule_id = added["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    rules = checked("DescribeSecurityGroupRules", ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [sg]}]))["SecurityGroupRules"]
    assert {r["SecurityGroupRuleId"] for r in rules} >= {rule_id}
    ec2.modify_security_group_rules(GroupId=sg, SecurityGroupRules=[{
        "SecurityGroupRuleId": rule_id, "SecurityGroupRule": {
            "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIpv4": "10.0.0.0/8",
            "Description": "tls"}}])
    [rule] = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])["SecurityGroupRules"]
    assert (rule["FromPort"], rule["CidrIpv4"], rule["Description"]) == (443, "10.0.0.0/8", "tls")
    assert rule["Tags"] == [{"Key": "why", "Value": "http"}]
    ec2.update_security_group_rule_descriptions_ingress(GroupId=sg, SecurityGroupRuleDescriptions=[
        {"SecurityGroupRuleId": rule_id, "Description": "tls in"}])
    [group] = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"]
    assert group["IpPermissions"][0]["IpRanges"] == [{"CidrIp": "10.0.0.0/8", "Description": "tls in"}]
    # Gateways, tables, routes.
    igw = checked("CreateInternetGateway", ec2.create_internet_gateway())["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    table = checked("CreateRouteTable", ec2.create_route_table(VpcId=vpc_id))["RouteTable"]["RouteTableId"]
    checked("CreateRoute", ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0",
                                            GatewayId=igw))
    association = checked("AssociateRouteTable", ec2.associate_route_table(
        RouteTableId=table, SubnetId=subnet_id))["AssociationId"]
    [t] = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["RouteTables"]
    assert t["RouteTableId"] == table
    assert {r["DestinationCidrBlock"]: r.get("GatewayId") for r in t["Routes"]} == {
        "10.0.0.0/16": "local", "10.1.0.0/16": "local", "0.0.0.0/0": igw}
    # Elastic IPs and a NAT gateway.
    eip = checked("AllocateAddress", ec2.allocate_address(Domain="vpc"))
    assert eip["AllocationId"].startswith("eipalloc-") and eip["PublicIp"].startswith("198.51.100.")
    nat = checked("CreateNatGateway", ec2.create_nat_gateway(
        SubnetId=subnet_id, AllocationId=eip["AllocationId"],
        TagSpecifications=[{"ResourceType": "natgateway", "Tags": [{"Key": "Name", "Value": "egress"}]}]))
    assert nat["NatGateway"]["State"] == "pending"
    nat_id = nat["NatGateway"]["NatGatewayId"]
    [n] = checked("DescribeNatGateways", ec2.describe_nat_gateways(NatGatewayIds=[nat_id]))["NatGateways"]
    assert n["State"] == "available" and n["NatGatewayAddresses"][0]["PublicIp"] == eip["PublicIp"]
    addresses = checked("DescribeAddresses", ec2.describe_addresses())["Addresses"]
    assert addresses[0]["NetworkInterfaceId"] == n["NatGatewayAddresses"][0]["NetworkInterfaceId"]
    checked("DescribeTags", ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [nat_id]}]))

    before = snapshot(ec2)
    missing_vpc = "vpc-0123456789abcdef0"
    cases = [
        (ec2.describe_vpcs, {"VpcIds": [missing_vpc]}, "InvalidVpcID.NotFound"),
        (ec2.associate_vpc_cidr_block, {"VpcId": vpc_id, "CidrBlock": "10.0.128.0/17"}, "InvalidVpc.Range"),
        (ec2.associate_vpc_cidr_block, {"VpcId": vpc_id, "CidrBlock": "192.168.0.0/16"}, "InvalidVpc.Range"),
        (ec2.delete_vpc, {"VpcId": vpc_id}, "DependencyViolation"),
        (ec2.delete_subnet, {"SubnetId": subnet_id}, "DependencyViolation"),
        (ec2.delete_internet_gateway, {"InternetGatewayId": igw}, "DependencyViolation"),
        (ec2.attach_internet_gateway, {"InternetGatewayId": igw, "VpcId": missing_vpc}, "InvalidVpcID.NotFound"),
        (ec2.create_route, {"RouteTableId": table, "DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw},
         "RouteAlreadyExists"),
        (ec2.replace_route, {"RouteTableId": table, "DestinationCidrBlock": "8.8.8.0/24", "GatewayId": igw},
         "InvalidRoute.NotFound"),
        (ec2.associate_route_table, {"RouteTableId": table, "SubnetId": subnet_id}, "Resource.AlreadyAssociated"),
        (ec2.release_address, {"AllocationId": eip["AllocationId"]}, "InvalidIPAddress.InUse"),
        (ec2.release_address, {"AllocationId": "eipalloc-0123456789abcdef0"}, "InvalidAllocationID.NotFound"),
        (ec2.create_tags, {"Resources": [vpc_id], "Tags": [{"Key": "aws:reserved", "Value": "x"}]},
         "InvalidParameterValue"),
        (ec2.modify_vpc_attribute, {"VpcId": missing_vpc, "EnableDnsSupport": {"Value": False}},
         "InvalidVpcID.NotFound"),
        (ec2.describe_security_group_rules, {"SecurityGroupRuleIds": ["sgr-0123456789abcdef0"]},
         "InvalidSecurityGroupRuleId.NotFound"),
        (ec2.delete_nat_gateway, {"NatGatewayId": "nat-0123456789abcdef0"}, "InvalidNatGatewayID.NotFound"),
        (ec2.disassociate_route_table, {"AssociationId": "rtbassoc-0123456789abcdef0"},
         "InvalidAssociationID.NotFound"),
    ]
    for call, kwargs, expected in cases:
        assert code_of(call, **kwargs) == expected, (call.__name__, kwargs)
    # 60 inbound rules per group at most.
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
        for p in range(2000, 2059)])
    rules_before = ec2.describe_security_group_rules()
    assert code_of(ec2.authorize_security_group_ingress, GroupId=sg, IpPermissions=[
        {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]) \
        == "RulesPerSecurityGroupLimitExceeded"
    after = snapshot(ec2)
    assert after["rules"] == rules_before["SecurityGroupRules"]
    after.pop("rules")
    before.pop("rules")
    assert after == before, "refused calls changed state"
    # Pagination: every rule once.
    seen, token = [], None
    while True:
        kwargs = {"Filters": [{"Name": "group-id", "Values": [sg]}], "MaxResults": 25}
        if token:
            kwargs["NextToken"] = token
        page = ec2.describe_security_group_rules(**kwargs)
        seen += [r["SecurityGroupRuleId"] for r in page["SecurityGroupRules"]]
        token = page.get("NextToken")
        if not token:
            break
    assert len(seen) == len(set(seen)) == 61

    # Teardown in AWS's order.
    ec2.delete_nat_gateway(NatGatewayId=nat_id)
    [n] = ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"]
    assert n["State"] == "deleted"
    ec2.release_address(AllocationId=eip["AllocationId"])
    ec2.disassociate_route_table(AssociationId=association)
    ec2.delete_route_table(RouteTableId=table)
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    ec2.delete_internet_gateway(InternetGatewayId=igw)
    ec2.delete_subnet(SubnetId=subnet_id)
    ec2.disassociate_vpc_cidr_block(AssociationId=assoc["AssociationId"])
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_vpc(VpcId=vpc_id)
    assert code_of(ec2.describe_vpcs, VpcIds=[vpc_id]) == "InvalidVpcID.NotFound"
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc_id]}])["Tags"] == []


def test_cli_tags_and_unsupported_reasons(shared_berth):
    _, out, _ = shared_berth.aws("ec2", "create-internet-gateway", "--tag-specifications",
                                 "ResourceType=internet-gateway,Tags=[{Key=team,Value=blue}]")
    igw = out["InternetGateway"]["InternetGatewayId"]
    shared_berth.aws("ec2", "create-tags", "--resources", igw, "--tags", "Key=env,Value=test")
    _, out, _ = shared_berth.aws("ec2", "describe-tags", "--filters", f"Name=resource-id,Values={igw}")
    assert sorted((t["Key"], t["Value"], t["ResourceType"]) for t in out["Tags"]) == [
        ("env", "test", "internet-gateway"), ("team", "blue", "internet-gateway")]
    shared_berth.aws("ec2", "delete-tags", "--resources", igw, "--tags", "Key=env")
    _, out, _ = shared_berth.aws("ec2", "describe-internet-gateways", "--filters", "Name=tag:team,Values=blue")
    assert [g["InternetGatewayId"] for g in out["InternetGateways"]] == [igw]
    assert out["InternetGateways"][0]["Tags"] == [{"Key": "team", "Value": "blue"}]
    shared_berth.aws("ec2", "delete-internet-gateway", "--internet-gateway-id", igw)
    # What Berth does not do says why.
    ec2 = shared_berth.client("ec2")
    with pytest.raises(ClientError) as e:
        ec2.describe_instances()
    assert e.value.response["Error"]["Code"] == "UnsupportedOperation"
    assert "Berth runs containers, not virtual machines" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        ec2.create_vpc_peering_connection(VpcId="vpc-0123456789abcdef0")
    assert "Berth has no VPC peering connections" in e.value.response["Error"]["Message"]


def test_state_survives_a_restart(berth):
    ec2 = berth.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.5.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "keep", "Value": "yes"}]}])["Vpc"]["VpcId"]
    ec2.associate_vpc_cidr_block(VpcId=vpc, CidrBlock="10.6.0.0/16")
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    sg = ec2.create_security_group(GroupName="s", Description="s", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    before = snapshot(ec2)
    berth.stop()
    berth.start()
    ec2 = berth.client("ec2")
    after = snapshot(ec2)
    assert after == before
    [v] = ec2.describe_vpcs(Filters=[{"Name": "tag:keep", "Values": ["yes"]}])["Vpcs"]
    assert v["VpcId"] == vpc and len(v["CidrBlockAssociationSet"]) == 2
    assert ec2.describe_addresses(AllocationIds=[eip])["Addresses"][0]["AllocationId"] == eip
