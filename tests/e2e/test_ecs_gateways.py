"""ECS gateways: CreateGateway and its family keep gateways and their
cluster associations; a service's gatewayConnectors make the gateway
provision an Application Load Balancer, HTTPS listener and certificate,
and a target group and host rule per route, acting with the gateway's
infrastructure role. The route's serviceUrl answers over HTTPS (verified
against Berth's CA, its host name in Berth's DNS) from the service's
tasks; dropping the connector removes the route, and deleting the gateway
removes what it made."""
import json
import subprocess

import pytest
from botocore.exceptions import ClientError

from berth_harness import berth_binary, wait_for
from test_elb_ecs import HTTPD, resolve

pytestmark = pytest.mark.xdist_group("awsvpc")

IMAGE = "berth-test/busybox:latest"
ACCOUNT = "000000000000"


def code_of(call, **kwargs):
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def infrastructure_role(berth, name="gateway-infra", allow=True):
    iam = berth.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ecs.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    if allow:
        iam.put_role_policy(RoleName=name, PolicyName="infra", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:*", "ec2:*", "acm:*"],
                "Resource": "*"}]}))
    return arn


def test_gateway_calls_keep_records_and_refuse_bad_input(berth):
    ecs = berth.client("ecs")
    role = infrastructure_role(berth)
    config = {"hostSharedAlb": {}}
    bad = [
        (dict(name="bad name!", infrastructureRoleArn=role, configuration=config),
         "InvalidParameterException"),
        (dict(name="g", infrastructureRoleArn="not-an-arn", configuration=config),
         "InvalidParameterException"),
        (dict(name="g", infrastructureRoleArn=role,
              configuration={"hostSharedAlb": {"port": 80}}), "InvalidParameterException"),
        (dict(name="g", infrastructureRoleArn=role,
              configuration={"hostSharedAlb": {"protocol": "HTTP"}}), "InvalidParameterException"),
        (dict(name="g", infrastructureRoleArn=role,
              configuration={"hostSharedAlb": {"scheme": "sideways"}}),
         "InvalidParameterException"),
        (dict(name="g", infrastructureRoleArn=role,
              configuration={"hostSharedAlb": {"maxAlbCount": 0}}), "InvalidParameterException"),
        (dict(name="g", infrastructureRoleArn=role, configuration={"hostSharedAlb": {
            "networkConfiguration": {"ipAddressType": "dualstack"}}}),
         "InvalidParameterException"),
        (dict(name="g", infrastructureRoleArn=role, configuration={"hostSharedAlb": {
            "webACLArn": "arn:aws:wafv2:us-east-1:000000000000:regional/webacl/x/1"}}),
         "InvalidParameterException"),
        (dict(name="g", infrastructureRoleArn=role, configuration={"hostSharedAlb": {
            "networkConfiguration": {"subnets": ["subnet-00000000000000000"]}}}),
         None),
        (dict(name="g", infrastructureRoleArn=role, configuration={"hostSharedAlb": {
            "testTrafficRules": {"header": {"name": "bad header", "values": ["x"]}}}}),
         "InvalidParameterException"),
    ]
    for kwargs, expected in bad:
        code, message = code_of(ecs.create_gateway, **kwargs)
        if expected:
            assert code == expected, (kwargs, code, message)
        assert message, kwargs
    assert ecs.list_gateways()["gateways"] == []

    created = ecs.create_gateway(name="edge", infrastructureRoleArn=role, configuration=config,
                                 clientToken="tok-1", tags=[{"key": "team", "value": "web"}])
    assert created["status"] == "ACTIVE"
    arn = created["gatewayArn"]
    assert arn == f"arn:aws:ecs:us-east-1:{ACCOUNT}:gateway/edge"
    # The same call with the same token is the same gateway; another is refused.
    again = ecs.create_gateway(name="edge", infrastructureRoleArn=role, configuration=config,
                               clientToken="tok-1", tags=[{"key": "team", "value": "web"}])
    assert again["gatewayArn"] == arn
    assert code_of(ecs.create_gateway, name="edge", infrastructureRoleArn=role,
                   configuration=config)[0] == "InvalidParameterException"
    g = ecs.describe_gateway(gateway=arn)["gateway"]
    alb = g["configuration"]["hostSharedAlb"]
    assert (g["deletionProtection"], g["accessType"], g["propagateTags"]) == (True, "PUBLIC",
                                                                           "GATEWAY")
    assert (alb["port"], alb["protocol"], alb["maxAlbCount"], alb["currentAlbCount"],
            alb["httpDesync"], alb["scheme"]) == (443, "HTTPS", 10, 0, "defensive",
                                                  "internet-facing")
    assert g["tags"] == [{"key": "team", "value": "web"}]
    assert code_of(ecs.describe_gateway, gateway="nope")[0] == "GatewayNotFoundException"
    assert code_of(ecs.describe_gateway, gateway="arn:aws:ecs:us-east-1:000000000000:cluster/x"
                   )[0] == "InvalidParameterException"

    for i in range(3):
        ecs.create_gateway(name=f"more-{i}", infrastructureRoleArn=role,
                           configuration={"hostSharedAlb": {"scheme": "internal"}},
                           deletionProtection=False)
    assert ecs.describe_gateway(gateway="more-0")["gateway"]["accessType"] == "PRIVATE"
    page = ecs.list_gateways(maxResults=2)
    rest = ecs.list_gateways(maxResults=2, nextToken=page["nextToken"])
    names = [x["name"] for x in page["gateways"] + rest["gateways"]]
    assert sorted(names) == ["edge", "more-0", "more-1", "more-2"]
    assert [x["name"] for x in ecs.list_gateways(names=["more-1"])["gateways"]] == ["more-1"]
    assert code_of(ecs.list_gateways, status=["SOMETIMES"])[0] == "InvalidParameterException"

    # Updates: mutable fields only, validated; UPDATE_COMPLETE with nothing provisioned.
    up = ecs.update_gateway(gateway="edge", configuration={"hostSharedAlb": {
        "httpDesync": "strictest", "maxAlbCount": 3}})
    assert up["status"] == "UPDATE_COMPLETE"
    alb = ecs.describe_gateway(gateway="edge")["gateway"]["configuration"]["hostSharedAlb"]
    assert (alb["httpDesync"], alb["maxAlbCount"]) == ("strictest", 3)
    assert code_of(ecs.update_gateway, gateway="edge", configuration={"hostSharedAlb": {
        "httpDesync": "lax"}})[0] == "InvalidParameterException"

    # Associations: clusters must exist; at most 5 gateways per cluster.
    assert code_of(ecs.associate_gateway_with_cluster, gateway="edge",
                   cluster="missing")[0] == "ClusterNotFoundException"
    ecs.create_cluster(clusterName="apps")
    out = ecs.associate_gateway_with_cluster(gateway="edge", cluster="apps")
    assert out["status"] == "ACTIVE"
    assert ecs.associate_gateway_with_cluster(gateway="edge", cluster="apps")["status"] == "ACTIVE"
    listed = ecs.list_gateway_cluster_associations(cluster="apps")["gatewayClusterAssociations"]
    assert [(a["gatewayArn"], a["status"]) for a in listed] == [(arn, "ACTIVE")]
    assert code_of(ecs.disassociate_gateway_from_cluster, gateway="more-0",
                   cluster="apps")[0] == "ResourceNotFoundException"
    # Deletion: protection first, then associations.
    assert code_of(ecs.delete_gateway, gateway="edge")[0] == "ClientException"
    ecs.update_gateway(gateway="edge", deletionProtection=False)
    assert code_of(ecs.delete_gateway, gateway="edge")[0] == "ClientException"
    assert ecs.disassociate_gateway_from_cluster(gateway="edge", cluster="apps")["status"] == \
        "DISASSOCIATING"
    assert ecs.list_gateway_cluster_associations(gateway="edge")["gatewayClusterAssociations"] == []
    assert ecs.delete_gateway(gateway="edge")["status"] == "DELETED"
    assert code_of(ecs.describe_gateway, gateway="edge")[0] == "GatewayNotFoundException"

    # Connectors need an associated gateway, awsvpc and a named port.
    ecs.register_task_definition(family="bridge-web", containerDefinitions=[{
        "name": "web", "image": IMAGE, "memory": 64,
        "portMappings": [{"containerPort": 8080, "name": "http"}]}])
    ecs.register_task_definition(family="vpc-web", networkMode="awsvpc", containerDefinitions=[{
        "name": "web", "image": IMAGE, "memory": 64,
        "portMappings": [{"containerPort": 8080, "name": "http"}]}])
    subnets = [s["SubnetId"] for s in berth.client("ec2").describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]][:1]
    network = {"awsvpcConfiguration": {"subnets": subnets}}
    for kwargs in [
        dict(taskDefinition="vpc-web", networkConfiguration=network,
             gatewayConnectors=[{"portName": "http"}]),  # no association
        dict(taskDefinition="bridge-web", gatewayConnectors=[{"portName": "http"}]),
    ]:
        code, message = code_of(ecs.create_service, cluster="apps", serviceName="s",
                                desiredCount=0, **kwargs)
        assert code == "InvalidParameterException", message
    ecs.associate_gateway_with_cluster(gateway="more-1", cluster="apps")
    for connector in [{"portName": "https"}, {"portName": ""},
                      {"portName": "http", "healthCheck": {"healthCheckIntervalSeconds": 1}},
                      {"portName": "http", "healthCheck": {"matcher": {"httpCode": "600"}}},
                      {"portName": "http", "deregistrationDelay": {"timeoutSeconds": 4000}},
                      {"portName": "http", "filters": {"accessTypes": ["SECRET"]}}]:
        code, message = code_of(ecs.create_service, cluster="apps", serviceName="s",
                                desiredCount=0, taskDefinition="vpc-web",
                                networkConfiguration=network, gatewayConnectors=[connector])
        assert code == "InvalidParameterException", (connector, message)
    assert ecs.list_services(cluster="apps")["serviceArns"] == []
    assert ecs.list_gateway_routes()["gatewayRoutes"] == []
    assert code_of(ecs.describe_gateway_route, gatewayRouteArn=(
        f"arn:aws:ecs:us-east-1:{ACCOUNT}:gateway-route/apps/s/0123456789abcdef"
    ))[0] == "ResourceNotFoundException"

    # Records survive a restart.
    berth.stop()
    berth.start()
    ecs = berth.client("ecs")
    assert sorted(x["name"] for x in ecs.list_gateways()["gateways"]) == [
        "more-0", "more-1", "more-2"]
    assert [a["status"] for a in ecs.list_gateway_cluster_associations(
        cluster="apps")["gatewayClusterAssociations"]] == ["ACTIVE"]


def test_a_connected_service_answers_at_its_gateway_url(berth_agent, tmp_path):
    berth = berth_agent
    ecs, elb, ec2 = berth.client("ecs"), berth.client("elbv2"), berth.client("ec2")
    role = infrastructure_role(berth)
    ecs.create_gateway(name="front", infrastructureRoleArn=role, deletionProtection=False,
                       configuration={"hostSharedAlb": {}})
    ecs.associate_gateway_with_cluster(gateway="front", cluster="default")
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]][:1]
    vpc = ec2.describe_subnets(SubnetIds=subnets)["Subnets"][0]["VpcId"]
    # The tasks' group admits nothing: the gateway adds the load balancer.
    group = ec2.create_security_group(GroupName="web-tasks", Description="tasks",
                                      VpcId=vpc)["GroupId"]
    ecs.register_task_definition(
        family="gw-web", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[{
            "name": "web", "image": IMAGE, "essential": True,
            "portMappings": [{"containerPort": 8080, "protocol": "tcp", "name": "http"}],
            "entryPoint": ["sh", "-c"], "command": [HTTPD.format(body="$(hostname)")]}])
    ecs.create_service(
        serviceName="web", taskDefinition="gw-web", desiredCount=2, launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": subnets,
                                                      "securityGroups": [group]}},
        gatewayConnectors=[{"portName": "http", "healthCheck": {
            "healthCheckPath": "/cgi-bin/health", "healthCheckIntervalSeconds": 5,
            "healthCheckTimeoutSeconds": 2, "healthyThresholdCount": 2},
            "deregistrationDelay": {"timeoutSeconds": 0}}])

    def active_route():
        routes = ecs.list_gateway_routes(gateway="front")["gatewayRoutes"]
        if routes and routes[0]["status"] == "CREATE_FAILED":
            raise AssertionError(ecs.describe_gateway_route(
                gatewayRouteArn=routes[0]["gatewayRouteArn"]))
        return routes[0] if routes and routes[0]["status"] == "ACTIVE" else None
    summary = wait_for(active_route, 60, interval=0.5, what="the gateway route")
    assert summary["serviceContainerPortName"] == "http"
    assert summary["clusterArn"].endswith(":cluster/default")
    route = ecs.describe_gateway_route(gatewayRouteArn=summary["gatewayRouteArn"])["gatewayRoute"]
    url = route["serviceUrl"]
    host = url.removeprefix("https://")
    assert url.startswith("https://web-") and host.endswith(".gateway.ecs.us-east-1.on.aws")
    [res] = route["resources"]["hostSharedAlb"]
    lb = elb.describe_load_balancers(LoadBalancerArns=[res["loadBalancerArn"]])["LoadBalancers"][0]
    assert lb["Scheme"] == "internet-facing"
    [listener] = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (443, "HTTPS")
    assert listener["Certificates"][0]["CertificateArn"] == res["acmCertificateArn"]
    rule = elb.describe_rules(RuleArns=[res["listenerRuleArn"]])["Rules"][0]
    assert rule["Conditions"][0]["HostHeaderConfig"]["Values"] == [host]
    tg = rule["Actions"][0]["TargetGroupArn"]
    resources = ecs.describe_gateway_resources(gateway="front")["gatewayResources"]
    [shared] = resources["resources"]["hostSharedAlb"]
    assert shared["gatewayRouteArns"] == [summary["gatewayRouteArn"]]
    g = ecs.describe_gateway(gateway="front")["gateway"]
    assert g["configuration"]["hostSharedAlb"]["currentAlbCount"] == 1
    assert res["loadBalancerSecurityGroups"][0]["arn"].startswith(
        f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/sg-")
    assert res["serviceSecurityGroupArn"].endswith(f"security-group/{group}")
    events = [e["message"] for e in ecs.describe_services(services=["web"])["services"][0]["events"]]
    assert f"(service web) gateway route (port http) through (gateway front) serves {url}." in events

    # The service's tasks register in the route's target group and pass.
    def healthy():
        health = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
        ok = [h for h in health if h["TargetHealth"]["State"] == "healthy"]
        return ok if len(ok) == 2 else None
    wait_for(healthy, 120, interval=1, what="2 healthy targets in the route's group")

    # The URL: its name in Berth's DNS, its certificate from Berth's CA.
    addresses = wait_for(lambda: resolve(berth, host) or None, 20, interval=0.5,
                         what="the route's host in DNS")
    assert addresses == resolve(berth, lb["DNSName"])
    address = addresses[0]
    ca = subprocess.run([berth_binary(), "ca-certificate", "--endpoint", berth.endpoint],
                        capture_output=True, text=True, timeout=30)
    (tmp_path / "ca.pem").write_text(ca.stdout)

    def curl(name):
        proc = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert",
                               str(tmp_path / "ca.pem"), "--resolve", f"{name}:443:{address}",
                               "-w", " %{http_code}", f"https://{name}/"],
                              capture_output=True, text=True, timeout=10)
        return proc.stdout.strip() if proc.returncode == 0 else proc.stderr
    bodies = set()
    for _ in range(12):
        out = wait_for(lambda: (lambda o: o if o.endswith(" 200") else None)(curl(host)), 20,
                       interval=0.5, what=f"{url} to answer")
        bodies.add(out.split()[0])
    assert len(bodies) == 2, bodies
    # Another host of the gateway's domain has no route: the listener's 404.
    other = "nobody-" + host.split(".", 1)[0][-8:] + "." + host.split(".", 1)[1]
    assert curl(other).endswith(" 404")

    # A changed health check reaches the route's target group.
    ecs.update_service(service="web", gatewayConnectors=[{"portName": "http", "healthCheck": {
        "healthCheckPath": "/cgi-bin/health", "healthCheckIntervalSeconds": 6,
        "healthCheckTimeoutSeconds": 2, "healthyThresholdCount": 2},
        "deregistrationDelay": {"timeoutSeconds": 0}}])
    wait_for(lambda: elb.describe_target_groups(TargetGroupArns=[tg])["TargetGroups"][0][
        "HealthCheckIntervalSeconds"] == 6, 30, interval=0.5,
        what="the route's group to take the new health check")
    assert ecs.list_gateway_routes(service="web")["gatewayRoutes"][0]["gatewayRouteArn"] == \
        summary["gatewayRouteArn"]

    # A service without security groups runs in the VPC's default group,
    # which the gateway opens to the load balancer; both share the ALB.
    ecs.create_service(
        serviceName="api", taskDefinition="gw-web", desiredCount=1, launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": subnets}},
        gatewayConnectors=[{"portName": "http", "healthCheck": {
            "healthCheckPath": "/cgi-bin/health", "healthCheckIntervalSeconds": 5,
            "healthCheckTimeoutSeconds": 2, "healthyThresholdCount": 2}}])

    def api_url():
        routes = ecs.list_gateway_routes(service="api", status=["ACTIVE"])["gatewayRoutes"]
        return routes and ecs.describe_gateway_route(
            gatewayRouteArn=routes[0]["gatewayRouteArn"])["gatewayRoute"]["serviceUrl"]
    api = wait_for(api_url, 60, interval=0.5, what="the second route").removeprefix("https://")
    assert api != host and api.split(".", 1)[1] == host.split(".", 1)[1]
    wait_for(lambda: curl(api).endswith(" 200"), 120, interval=0.5,
             what="the second service's URL to answer")
    assert len(ecs.describe_gateway_resources(gateway="front")["gatewayResources"][
        "resources"]["hostSharedAlb"]) == 1
    ecs.update_service(service="api", desiredCount=0, gatewayConnectors=[])
    ecs.delete_service(service="api")

    # An update reaches the provisioned load balancer, then completes.
    assert ecs.update_gateway(gateway="front", configuration={"hostSharedAlb": {
        "httpDesync": "strictest"}})["status"] == "UPDATE_IN_PROGRESS"
    wait_for(lambda: ecs.describe_gateway(gateway="front")["gateway"]["status"] ==
             "UPDATE_COMPLETE", 30, interval=0.5, what="the gateway update to complete")
    attributes = {a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(
        LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
    assert attributes["routing.http.desync_mitigation_mode"] == "strictest"
    assert attributes["deletion_protection.enabled"] == "false"

    # Dropping the connector removes the route, its rule and its group.
    ecs.update_service(service="web", gatewayConnectors=[])
    wait_for(lambda: ecs.list_gateway_routes(gateway="front")["gatewayRoutes"] == [], 60,
             interval=0.5, what="the route to go")
    assert elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"][-1]["IsDefault"]
    assert len(elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]) == 1
    with pytest.raises(ClientError):
        elb.describe_target_groups(TargetGroupArns=[tg])
    wait_for(lambda: curl(host).endswith(" 404"), 20, interval=0.5, what="the host to be gone")

    # Disassociated and deleted, the gateway's load balancer goes too.
    ecs.disassociate_gateway_from_cluster(gateway="front", cluster="default")
    ecs.delete_gateway(gateway="front")

    def lb_gone():
        try:
            elb.describe_load_balancers(LoadBalancerArns=[lb["LoadBalancerArn"]])
            return False
        except ClientError:
            return True
    wait_for(lb_gone, 60, interval=0.5, what="the gateway's load balancer to be deleted")
    assert ecs.list_gateways()["gateways"] == []
    # Its certificate and security group went too, the ingress it added to
    # the tasks' group first (a group others reference cannot be deleted):
    # the name is free again once the controller is done.
    acm = berth.client("acm")
    wait_for(lambda: not [c for c in acm.list_certificates()["CertificateSummaryList"]
                          if c["DomainName"].endswith(".gateway.ecs.us-east-1.on.aws")],
             30, interval=0.5, what="the gateway's certificate to be deleted")
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"]
    assert [r for r in rules if not r["IsEgress"]] == [], rules

    def created_again():
        try:
            ecs.create_gateway(name="front", infrastructureRoleArn=role,
                               configuration={"hostSharedAlb": {}})
            return True
        except ClientError:
            return False
    wait_for(created_again, 30, interval=0.5, what="the gateway's name to be free")
    assert not [g for g in ec2.describe_security_groups()["SecurityGroups"]
                if g["GroupName"].startswith("ecs-gateway-")], "the gateway's group was left"


def test_a_role_without_permission_fails_the_route_and_makes_nothing(berth_agent):
    berth = berth_agent
    ecs, ec2 = berth.client("ecs"), berth.client("ec2")
    role = infrastructure_role(berth, name="powerless", allow=False)
    ecs.create_gateway(name="weak", infrastructureRoleArn=role,
                       configuration={"hostSharedAlb": {}})
    ecs.associate_gateway_with_cluster(gateway="weak", cluster="default")
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]][:1]
    ecs.register_task_definition(
        family="gw-idle", networkMode="awsvpc", containerDefinitions=[{
            "name": "web", "image": IMAGE, "memory": 64,
            "portMappings": [{"containerPort": 8080, "name": "http"}]}])
    ecs.create_service(serviceName="idle", taskDefinition="gw-idle", desiredCount=0,
                       networkConfiguration={"awsvpcConfiguration": {"subnets": subnets}},
                       gatewayConnectors=[{"portName": "http"}])

    def failed():
        routes = ecs.list_gateway_routes(gateway="weak", status=["CREATE_FAILED"])
        return routes["gatewayRoutes"] or None
    [summary] = wait_for(failed, 60, interval=0.5, what="the route to fail")
    route = ecs.describe_gateway_route(gatewayRouteArn=summary["gatewayRouteArn"])["gatewayRoute"]
    assert "serviceUrl" not in route
    # The service's events say why, in the words of the call refused to the role.
    events = [e["message"] for e in ecs.describe_services(services=["idle"])["services"][0]["events"]]
    assert any("unable to create the gateway route (port http) through (gateway weak)" in m
               and "assumed-role/powerless/" in m for m in events), events
    # Nothing was made with the role's missing permissions.
    assert berth.client("elbv2").describe_load_balancers()["LoadBalancers"] == []
