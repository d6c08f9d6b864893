"""Elastic Load Balancing v2 (`elbv2`) through boto3 and the aws CLI: load
balancers, target groups, listeners, rules, targets, tags and attributes;
bad input answered with AWS's error codes and changing nothing. Every
answer is checked against the botocore model."""
import datetime

import pytest
from botocore.exceptions import ClientError

from berth_harness import Berth, check_output, load_model

MODEL = load_model("elbv2", "2015-12-01")


def plain(value):
    """boto3's parsed answer as the model's raw JSON (timestamps as numbers)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return value


class Checked:
    """An elbv2 client whose every answer is checked against the model."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        method = getattr(self.client, name)
        operation = self.client.meta.method_to_api_mapping.get(name)

        def call(**kwargs):
            out = method(**kwargs)
            if operation:
                check_output(MODEL, operation, plain(out))
            return out
        return call


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    server = Berth(tmp_path_factory.mktemp("berth") / "data").start()
    yield server
    server.stop()


# The load balancers of these tests serve on the host, like everyone's: a
# VPC block of their own keeps their addresses apart from the default VPC's,
# which the load balancer tests that run beside them use.
VPC_BLOCK = "10.77.0.0/16"


def network(berth):
    ec2 = berth.client("ec2")
    vpcs = [v["VpcId"] for v in ec2.describe_vpcs(
        Filters=[{"Name": "cidr", "Values": [VPC_BLOCK]}])["Vpcs"]]
    if vpcs:
        vpc = vpcs[0]
    else:
        vpc = ec2.create_vpc(CidrBlock=VPC_BLOCK)["Vpc"]["VpcId"]
        for i, zone in enumerate(["us-east-1a", "us-east-1b", "us-east-1c"]):
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.77.{i * 16}.0/20", AvailabilityZone=zone)
    subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"] if s["VpcId"] == vpc)
    return vpc, subnets


def state(elb):
    lbs = elb.describe_load_balancers()["LoadBalancers"]
    tgs = elb.describe_target_groups()["TargetGroups"]
    out = {"lbs": lbs, "tgs": tgs, "listeners": {}, "rules": {}, "attrs": {}, "health": {}}
    for lb in lbs:
        arn = lb["LoadBalancerArn"]
        out["attrs"][arn] = elb.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]
        listeners = elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]
        out["listeners"][arn] = listeners
        for listener in listeners:
            out["rules"][listener["ListenerArn"]] = elb.describe_rules(
                ListenerArn=listener["ListenerArn"])["Rules"]
    for tg in tgs:
        arn = tg["TargetGroupArn"]
        out["attrs"][arn] = elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
        # Targets, not their health: the data plane reports health meanwhile.
        out["health"][arn] = [d["Target"] for d in elb.describe_target_health(
            TargetGroupArn=arn)["TargetHealthDescriptions"]]
    arns = [lb["LoadBalancerArn"] for lb in lbs] + [t["TargetGroupArn"] for t in tgs]
    if arns:
        out["tags"] = elb.describe_tags(ResourceArns=arns[:20])["TagDescriptions"]
    return plain(out)


def test_full_sequence_and_bad_input(cloud):
    elb = Checked(cloud.client("elbv2"))
    vpc, subnets = network(cloud)
    assert len(subnets) >= 2
    lb = elb.create_load_balancer(Name="web", Subnets=subnets[:2],
                                  Tags=[{"Key": "team", "Value": "blue"}])["LoadBalancers"][0]
    lb_arn = lb["LoadBalancerArn"]
    assert lb_arn.startswith("arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/")
    assert lb["DNSName"].startswith("web-") and lb["DNSName"].endswith(".us-east-1.elb.amazonaws.com")
    assert lb["Type"] == "application" and lb["Scheme"] == "internet-facing"
    assert lb["VpcId"] == vpc and lb["State"]["Code"] == "active"
    addresses = [a["PrivateIPv4Address"] for z in lb["AvailabilityZones"]
                 for a in z["LoadBalancerAddresses"]]
    assert len(addresses) == 2
    # The interfaces are EC2 records.
    enis = cloud.client("ec2").describe_network_interfaces()["NetworkInterfaces"]
    assert set(addresses) <= {e["PrivateIpAddress"] for e in enis}

    tg = elb.create_target_group(Name="api", Protocol="HTTP", Port=8080, VpcId=vpc,
                                 TargetType="ip")["TargetGroups"][0]
    tg_arn = tg["TargetGroupArn"]
    assert tg["HealthCheckPath"] == "/" and tg["HealthCheckIntervalSeconds"] == 30
    assert tg["HealthyThresholdCount"] == 5 and tg["UnhealthyThresholdCount"] == 2
    assert tg["Matcher"] == {"HttpCode": "200"}
    other_tg = elb.create_target_group(Name="static", Protocol="HTTP", Port=80, VpcId=vpc,
                                       TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    net_tg = elb.create_target_group(Name="tcp", Protocol="TCP", Port=7, VpcId=vpc,
                                     TargetType="ip")["TargetGroups"][0]
    assert net_tg["HealthCheckProtocol"] == "TCP" and net_tg["HealthCheckTimeoutSeconds"] == 10

    listener = elb.create_listener(
        LoadBalancerArn=lb_arn, Protocol="HTTP", Port=80,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "404", "ContentType": "text/plain", "MessageBody": "no route"}}],
    )["Listeners"][0]
    l_arn = listener["ListenerArn"]
    assert "/listener/app/web/" in l_arn.replace(":listener/", "/listener/")
    rule = elb.create_rule(
        ListenerArn=l_arn, Priority=10,
        Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}],
        Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": tg_arn, "Weight": 80}, {"TargetGroupArn": other_tg, "Weight": 20}],
            "TargetGroupStickinessConfig": {"Enabled": False}}}])["Rules"][0]
    rule_arn = rule["RuleArn"]
    elb.create_rule(ListenerArn=l_arn, Priority=20,
                    Conditions=[{"Field": "host-header", "HostHeaderConfig": {"Values": ["a.example.com"]}}],
                    Actions=[{"Type": "forward", "TargetGroupArn": other_tg}])
    rules = elb.describe_rules(ListenerArn=l_arn)["Rules"]
    assert [r["Priority"] for r in rules] == ["10", "20", "default"]
    elb.set_rule_priorities(RulePriorities=[{"RuleArn": rule_arn, "Priority": 5}])
    elb.modify_rule(RuleArn=rule_arn, Conditions=[{"Field": "path-pattern", "Values": ["/v2/*"]}])
    elb.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": addresses[0], "Port": 8080}])
    health = elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    # Before the data plane's first report, or while it checks.
    assert health[0]["TargetHealth"]["State"] in ("initial", "unhealthy")
    assert health[0]["Target"] == {"Id": addresses[0], "Port": 8080}
    elb.modify_target_group_attributes(TargetGroupArn=tg_arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "30"},
        {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"}])
    elb.modify_load_balancer_attributes(LoadBalancerArn=lb_arn, Attributes=[
        {"Key": "idle_timeout.timeout_seconds", "Value": "120"}])
    elb.modify_target_group(TargetGroupArn=tg_arn, HealthCheckIntervalSeconds=5,
                            HealthCheckTimeoutSeconds=2, Matcher={"HttpCode": "200-299"})
    elb.describe_ssl_policies()
    limits = {x["Name"]: x["Max"] for x in elb.describe_account_limits()["Limits"]}
    assert limits["application-load-balancers"] == "50" and limits["target-groups"] == "3000"
    elb.describe_listener_attributes(ListenerArn=l_arn)
    elb.add_tags(ResourceArns=[tg_arn, l_arn], Tags=[{"Key": "env", "Value": "prod"}])
    # The aws CLI too.
    _, out, _ = cloud.aws("elbv2", "describe-load-balancers", "--names", "web")
    assert out["LoadBalancers"][0]["LoadBalancerArn"] == lb_arn
    _, out, _ = cloud.aws("elbv2", "describe-target-health", "--target-group-arn", tg_arn)
    assert out["TargetHealthDescriptions"][0]["Target"]["Id"] == addresses[0]
    code, _, err = cloud.aws("elbv2", "delete-target-group", "--target-group-arn", tg_arn, check=False)
    assert code != 0 and "ResourceInUse" in err, err

    before = state(elb)
    client = elb.client
    https = dict(LoadBalancerArn=lb_arn, Protocol="HTTPS", Port=443,
                 DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    six = [{"Field": "host-header", "HostHeaderConfig": {"Values": [f"h{i}.example.com" for i in range(6)]}}]
    fwd = [{"Type": "forward", "TargetGroupArn": tg_arn}]
    cases = [
        ("PriorityInUse", client.create_rule, dict(ListenerArn=l_arn, Priority=20, Conditions=[
            {"Field": "path-pattern", "Values": ["/x"]}], Actions=fwd)),
        ("DuplicateListener", client.create_listener, dict(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=80,
                                                           DefaultActions=fwd)),
        ("CertificateNotFound", client.create_listener, dict(https, Certificates=[
            {"CertificateArn": "arn:aws:acm:us-east-1:000000000000:certificate/none"}])),
        ("CertificateNotFound", client.create_listener, https),
        ("ValidationError", client.create_rule, dict(ListenerArn=l_arn, Priority=30, Conditions=six, Actions=fwd)),
        ("ResourceInUse", client.delete_target_group, dict(TargetGroupArn=tg_arn)),
        ("InvalidTarget", client.register_targets, dict(TargetGroupArn=tg_arn, Targets=[{"Id": "10.200.0.1"}])),
        ("InvalidTarget", client.register_targets, dict(TargetGroupArn=tg_arn, Targets=[{"Id": "not-an-ip"}])),
        ("ValidationError", client.modify_target_group, dict(TargetGroupArn=tg_arn, HealthCheckTimeoutSeconds=5)),
        ("ValidationError", client.modify_target_group, dict(TargetGroupArn=tg_arn, Matcher={"HttpCode": "600"})),
        ("ValidationError", client.modify_target_group, dict(TargetGroupArn=tg_arn, HealthCheckPath="health")),
        ("ValidationError", client.create_load_balancer, dict(Name="x" * 33, Subnets=subnets[:2])),
        ("ValidationError", client.create_load_balancer, dict(Name="bad_name", Subnets=subnets[:2])),
        ("ValidationError", client.create_load_balancer, dict(Name="-bad", Subnets=subnets[:2])),
        ("ValidationError", client.create_load_balancer, dict(Name="internal-x", Subnets=subnets[:2])),
        ("ValidationError", client.create_load_balancer, dict(Name="one", Subnets=subnets[:1])),
        ("ValidationError", client.create_load_balancer, dict(Name="dual", Subnets=subnets[:2],
                                                              IpAddressType="dualstack")),
        ("SubnetNotFound", client.create_load_balancer, dict(Name="nosub", Subnets=[subnets[0], "subnet-00000000"])),
        ("InvalidSecurityGroup", client.create_load_balancer, dict(Name="nosg", Subnets=subnets[:2],
                                                                   SecurityGroups=["sg-00000000"])),
        ("DuplicateLoadBalancerName", client.create_load_balancer, dict(Name="web", Subnets=subnets[:2],
                                                                        Scheme="internal")),
        ("DuplicateTargetGroupName", client.create_target_group, dict(Name="api", Protocol="HTTP", Port=9,
                                                                      VpcId=vpc)),
        ("ValidationError", client.create_target_group, dict(Name="lam", TargetType="lambda")),
        ("ValidationError", client.create_target_group, dict(Name="novpc", Protocol="HTTP", Port=80,
                                                             VpcId="vpc-00000000")),
        ("UnsupportedProtocol", client.create_target_group, dict(Name="udp", Protocol="UDP", Port=53, VpcId=vpc)),
        ("IncompatibleProtocols", client.create_listener, dict(LoadBalancerArn=lb_arn, Protocol="TCP", Port=81,
                                                               DefaultActions=fwd)),
        ("UnsupportedProtocol", client.create_listener, dict(LoadBalancerArn=lb_arn, Protocol="UDP", Port=82,
                                                             DefaultActions=fwd)),
        ("TargetGroupNotFound", client.create_listener, dict(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=83,
                                                             DefaultActions=[{"Type": "forward", "TargetGroupArn":
                                                                              tg_arn[:-4] + "0000"}])),
        ("IncompatibleProtocols", client.create_listener, dict(
            LoadBalancerArn=lb_arn, Protocol="HTTP", Port=84,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": net_tg["TargetGroupArn"]}])),
        ("InvalidLoadBalancerAction", client.create_rule, dict(
            ListenerArn=l_arn, Priority=31, Conditions=[{"Field": "path-pattern", "Values": ["/r"]}],
            Actions=[{"Type": "redirect", "RedirectConfig": {"StatusCode": "HTTP_301"}}])),
        ("InvalidLoadBalancerAction", client.create_rule, dict(
            ListenerArn=l_arn, Priority=32, Conditions=[{"Field": "path-pattern", "Values": ["/r"]}],
            Actions=[{"Type": "redirect", "RedirectConfig": {"StatusCode": "HTTP_301", "Host": "#{nope}"}}])),
        ("ValidationError", client.create_rule, dict(
            ListenerArn=l_arn, Priority=33, Conditions=[{"Field": "cookie", "Values": ["a"]}], Actions=fwd)),
        ("ValidationError", client.create_rule, dict(
            ListenerArn=l_arn, Priority=34, Conditions=[{"Field": "source-ip",
                                                         "SourceIpConfig": {"Values": ["not-a-cidr"]}}],
            Actions=fwd)),
        ("OperationNotPermitted", client.delete_rule, dict(RuleArn=rules[-1]["RuleArn"])),
        ("RuleNotFound", client.delete_rule, dict(RuleArn=rule_arn[:-4] + "0000")),
        ("InvalidConfigurationRequest", client.modify_load_balancer_attributes, dict(
            LoadBalancerArn=lb_arn, Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": "4001"}])),
        ("ValidationError", client.modify_load_balancer_attributes, dict(
            LoadBalancerArn=lb_arn, Attributes=[{"Key": "no.such.key", "Value": "1"}])),
        ("InvalidConfigurationRequest", client.modify_target_group_attributes, dict(
            TargetGroupArn=tg_arn, Attributes=[{"Key": "slow_start.duration_seconds", "Value": "10"}])),
        ("InvalidConfigurationRequest", client.modify_target_group_attributes, dict(
            TargetGroupArn=tg_arn, Attributes=[{"Key": "load_balancing.algorithm.type", "Value": "random"}])),
        ("LoadBalancerNotFound", client.describe_load_balancers, dict(Names=["nope"])),
        ("DuplicateTagKeys", client.add_tags, dict(ResourceArns=[lb_arn], Tags=[
            {"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])),
        ("SSLPolicyNotFound", client.describe_ssl_policies, dict(Names=["ELBSecurityPolicy-Nope"])),
        ("OperationNotPermitted", client.create_trust_store, dict(
            Name="ts", CaCertificatesBundleS3Bucket="b", CaCertificatesBundleS3Key="k")),
    ]
    for code, call, kwargs in cases:
        with pytest.raises(ClientError) as e:
            call(**kwargs)
        assert e.value.response["Error"]["Code"] == code, (code, call.__name__, kwargs, e.value.response["Error"])
    assert len(cases) >= 30
    assert state(elb) == before

    # Deletion protection, then the teardown.
    elb.modify_load_balancer_attributes(LoadBalancerArn=lb_arn, Attributes=[
        {"Key": "deletion_protection.enabled", "Value": "true"}])
    with pytest.raises(ClientError) as e:
        client.delete_load_balancer(LoadBalancerArn=lb_arn)
    assert e.value.response["Error"]["Code"] == "OperationNotPermitted"
    elb.modify_load_balancer_attributes(LoadBalancerArn=lb_arn, Attributes=[
        {"Key": "deletion_protection.enabled", "Value": "false"}])
    elb.deregister_targets(TargetGroupArn=tg_arn, Targets=[{"Id": addresses[0], "Port": 8080}])
    health = elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    assert health[0]["TargetHealth"]["State"] == "draining"
    elb.delete_listener(ListenerArn=l_arn)
    elb.delete_load_balancer(LoadBalancerArn=lb_arn)
    for arn in (tg_arn, other_tg, net_tg["TargetGroupArn"]):
        elb.delete_target_group(TargetGroupArn=arn)
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    enis = cloud.client("ec2").describe_network_interfaces()["NetworkInterfaces"]
    assert not set(addresses) & {e["PrivateIpAddress"] for e in enis}


def test_network_load_balancer(cloud):
    elb = Checked(cloud.client("elbv2"))
    vpc, subnets = network(cloud)
    lb = elb.create_load_balancer(Name="echo", Type="network", Scheme="internal",
                                  Subnets=subnets[:1])["LoadBalancers"][0]
    assert lb["DNSName"].startswith("internal-echo-") and ".elb.us-east-1.amazonaws.com" in lb["DNSName"]
    assert lb["CanonicalHostedZoneId"] == "Z26RNL4JYFTOTI"
    tg = elb.create_target_group(Name="echo", Protocol="TCP", Port=7, VpcId=vpc,
                                 TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=7,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    attrs = {a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(
        LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
    assert attrs["load_balancing.cross_zone.enabled"] == "false"
    with pytest.raises(ClientError) as e:
        elb.client.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                                   DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    assert e.value.response["Error"]["Code"] == "IncompatibleProtocols"
    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    elb.delete_target_group(TargetGroupArn=tg)
