"""CodeDeploy blue/green deployments of an ECS service with the CODE_DEPLOY
deployment controller, end to end: a deployment group names the service,
its two target groups and the production and test listeners; a deployment
with an AppSpec moves the service to a new revision (the test listener
first, then production: all at once with no failed request, or a canary
share), and StopDeployment rolls it back. Driven with boto3 and the aws
CLI (`aws deploy`, `aws ecs deploy`) against the real binary; the server
runs with `--deployment-minute-seconds 1` so CodeDeploy's minutes are
seconds."""
import json
import os
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from berth_harness import wait_for
from test_elb_bluegreen import berth_fast, get  # noqa: F401 - berth_fast is a fixture
from test_elb_ecs import (HTTPD, IMAGE, definition, load_balancer, open_group, own_subnets,
                          resolve, target_group, wait_healthy)

SERVICE_ROLE = "arn:aws:iam::000000000000:role/CodeDeployServiceRoleForECS"


def appspec(task_definition_arn, yaml=True):
    if not yaml:
        return json.dumps({"version": 0.0, "Resources": [{"TargetService": {
            "Type": "AWS::ECS::Service", "Properties": {
                "TaskDefinition": task_definition_arn,
                "LoadBalancerInfo": {"ContainerName": "web", "ContainerPort": 8080}}}}]})
    return f"""version: 0.0
Resources:
  - TargetService:
      Type: AWS::ECS::Service
      Properties:
        TaskDefinition: "{task_definition_arn}"
        LoadBalancerInfo:
          ContainerName: "web"
          ContainerPort: 8080
"""


def setup(berth, name, config_name="CodeDeployDefault.ECSAllAtOnce", wait_minutes=0,
          ready_wait=None):
    """An ALB whose production (80) and test (8080) listeners forward to
    the blue group, a CODE_DEPLOY service of revision v1 behind it, and a
    CodeDeploy application and deployment group for it (`ready_wait`:
    minutes production waits for ContinueDeployment, STOP_DEPLOYMENT)."""
    ecs, elb, cd = berth.client("ecs"), berth.client("elbv2"), berth.client("codedeploy")
    subnets, vpc = own_subnets(berth)
    lb = load_balancer(berth, name, subnets, [open_group(berth, vpc, 80),
                                              open_group(berth, vpc, 8080)])
    blue, green = target_group(berth, f"{name}-b", vpc), target_group(berth, f"{name}-g", vpc)
    listeners = {}
    for port in (80, 8080):
        listeners[port] = elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": blue}]
        )["Listeners"][0]["ListenerArn"]
    definition(ecs, name, body="v1")
    service = ecs.create_service(
        serviceName=name, taskDefinition=name, desiredCount=2,
        deploymentController={"type": "CODE_DEPLOY"},
        loadBalancers=[{"targetGroupArn": blue, "containerName": "web",
                        "containerPort": 8080}])["service"]
    assert service["deploymentController"] == {"type": "CODE_DEPLOY"}
    wait_healthy(elb, blue, 2)
    wait_for(lambda: [d["rolloutState"] for d in ecs.describe_services(services=[name])[
        "services"][0]["deployments"]] == ["COMPLETED"], 60, interval=0.5,
        what="the first deployment to complete")
    [address, _] = resolve(berth, lb["DNSName"])
    wait_for(lambda: get(address, 80) == (200, "v1"), 30, interval=0.5, what="production")
    cd.create_application(applicationName=name, computePlatform="ECS")
    cd.create_deployment_group(
        applicationName=name, deploymentGroupName=f"{name}-dg",
        serviceRoleArn=SERVICE_ROLE, deploymentConfigName=config_name,
        deploymentStyle={"deploymentType": "BLUE_GREEN",
                         "deploymentOption": "WITH_TRAFFIC_CONTROL"},
        blueGreenDeploymentConfiguration={
            "terminateBlueInstancesOnDeploymentSuccess": {
                "action": "TERMINATE", "terminationWaitTimeInMinutes": wait_minutes},
            "deploymentReadyOption": (
                {"actionOnTimeout": "CONTINUE_DEPLOYMENT"} if ready_wait is None else
                {"actionOnTimeout": "STOP_DEPLOYMENT", "waitTimeInMinutes": ready_wait})},
        ecsServices=[{"serviceName": name, "clusterName": "default"}],
        loadBalancerInfo={"targetGroupPairInfoList": [{
            "targetGroups": [{"name": f"{name}-b"}, {"name": f"{name}-g"}],
            "prodTrafficRoute": {"listenerArns": [listeners[80]]},
            "testTrafficRoute": {"listenerArns": [listeners[8080]]}}]})
    return address, blue, green, vpc


def deploy(berth, name, yaml=True):
    ecs, cd = berth.client("ecs"), berth.client("codedeploy")
    definition(ecs, name, body="v2")
    arn = ecs.describe_task_definition(taskDefinition=name)["taskDefinition"]["taskDefinitionArn"]
    return cd.create_deployment(
        applicationName=name, deploymentGroupName=f"{name}-dg",
        revision={"revisionType": "AppSpecContent",
                  "appSpecContent": {"content": appspec(arn, yaml)}})["deploymentId"]


def status(berth, deployment):
    return berth.client("codedeploy").get_deployment(
        deploymentId=deployment)["deploymentInfo"]["status"]


def test_all_at_once_tests_the_new_revision_then_switches_without_a_failed_request(berth_fast):
    """STOP_DEPLOYMENT: the test listener serves the new revision while
    production stays on the old one until ContinueDeployment (READY_WAIT);
    then production switches at once without a failed request, and
    ContinueDeployment (TERMINATION_WAIT) ends a ten-hour termination wait
    (minutes are seconds here)."""
    berth = berth_fast
    cd = berth.client("codedeploy")
    address, blue, green, _ = setup(berth, "cdall", wait_minutes=600, ready_wait=600)
    failures, answered, stop = [], Counter(), threading.Event()

    def client():
        while not stop.is_set():
            try:
                code, body = get(address, 80, timeout=10)
                if code != 200:
                    failures.append((code, body))
                answered[body] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        deployment = deploy(berth, "cdall")
        assert status(berth, deployment) in ("Created", "Queued", "InProgress")
        # Not waiting yet: refused.
        with pytest.raises(cd.exceptions.DeploymentIsNotInReadyStateException):
            cd.continue_deployment(deploymentId=deployment, deploymentWaitType="TERMINATION_WAIT")
        wait_for(lambda: status(berth, deployment) == "Ready", 180, interval=0.5,
                 what=f"the deployment to be Ready: {cd.get_deployment(deploymentId=deployment)}")
        # Test traffic reaches v2, production stays on v1 for as long as
        # nobody continues.
        wait_for(lambda: get(address, 8080)[1] == "v2", 30, interval=0.2,
                 what="the test listener on v2")
        for _ in range(20):
            assert (get(address, 8080)[1], get(address, 80)[1]) == ("v2", "v1")
        assert answered["v2"] == 0, answered
        berth.aws("deploy", "continue-deployment", "--deployment-id", deployment,
                  "--deployment-wait-type", "READY_WAIT")
        wait_for(lambda: get(address, 80)[1] == "v2", 60, interval=0.2, what="production on v2")
        # Production moved; the v1 tasks wait out the termination wait.
        wait_for(lambda: "Amazon ECS deployment stage: BAKE_TIME" in cd.get_deployment(
            deploymentId=deployment)["deploymentInfo"]["deploymentStatusMessages"], 60,
            interval=0.5, what="the termination wait")
        assert len(elb_targets(berth, blue)) == 2
        cd.continue_deployment(deploymentId=deployment, deploymentWaitType="TERMINATION_WAIT")
        wait_for(lambda: status(berth, deployment) == "Succeeded", 120, interval=1,
                 what="the deployment to succeed")
    finally:
        stop.set()
        thread.join(timeout=20)
    assert failures == [], failures[:5]
    assert answered["v1"] > 0 and answered["v2"] > 0, answered
    info = cd.get_deployment(deploymentId=deployment)["deploymentInfo"]
    assert info["computePlatform"] == "ECS"
    assert info["deploymentConfigName"] == "CodeDeployDefault.ECSAllAtOnce"
    assert info["applicationName"] == "cdall" and info["deploymentGroupName"] == "cdall-dg"
    # Production and test listeners forward to green; the v1 tasks are gone.
    elb = berth.client("elbv2")
    wait_healthy(elb, green, 2)
    wait_for(lambda: not elb_targets(berth, blue), 60, what="blue to be empty")
    # The CLI reads it back.
    _, out, _ = berth.aws("deploy", "list-deployments", "--application-name", "cdall",
                          "--deployment-group-name", "cdall-dg")
    assert out["deployments"] == [deployment], out
    _, out, _ = berth.aws("deploy", "get-deployment", "--deployment-id", deployment)
    assert out["deploymentInfo"]["status"] == "Succeeded", out


def elb_targets(berth, group):
    return berth.client("elbv2").describe_target_health(TargetGroupArn=group)[
        "TargetHealthDescriptions"]


def test_a_canary_sends_its_share_and_stop_deployment_rolls_back(berth_fast):
    berth = berth_fast
    cd = berth.client("codedeploy")
    cd.create_deployment_config(
        deploymentConfigName="canary-20", computePlatform="ECS",
        trafficRoutingConfig={"type": "TimeBasedCanary", "timeBasedCanary": {
            "canaryPercentage": 20, "canaryInterval": 600}})
    address, _, _, _ = setup(berth, "cdcanary", config_name="canary-20")
    deployment = deploy(berth, "cdcanary", yaml=False)
    wait_for(lambda: get(address, 80)[1] == "v2", 180, interval=0.05,
             what="the canary share to reach v2")
    answered = Counter(get(address, 80)[1] for _ in range(1000))
    share = answered["v2"] / 1000
    assert 0.15 <= share <= 0.25, answered
    assert status(berth, deployment) == "InProgress"
    cd.stop_deployment(deploymentId=deployment, autoRollbackEnabled=True)
    wait_for(lambda: status(berth, deployment) == "Stopped", 120, interval=1,
             what=f"the deployment to stop: {cd.get_deployment(deploymentId=deployment)}")
    info = cd.get_deployment(deploymentId=deployment)["deploymentInfo"]
    assert not info.get("deploymentStatusMessages"), info
    wait_for(lambda: all(get(address, 80)[1] == "v1" for _ in range(50)), 60, interval=0.5,
             what="production back on v1")
    assert info["status"] == "Stopped"
    # A new deployment can start once it stopped.
    again = deploy(berth, "cdcanary")
    assert again != deployment


def test_bad_deployment_groups_and_deployments_are_refused(berth_fast):
    berth = berth_fast
    cd, ecs = berth.client("codedeploy"), berth.client("ecs")
    address, _, _, _ = setup(berth, "cdbad")
    definition(ecs, "plain", body="p")
    ecs.create_service(serviceName="plain", taskDefinition="plain", desiredCount=0)

    def code(call, **kwargs):
        with pytest.raises(cd.exceptions.ClientError) as e:
            call(**kwargs)
        return e.value.response["Error"]["Code"]
    group = cd.get_deployment_group(applicationName="cdbad", deploymentGroupName="cdbad-dg")[
        "deploymentGroupInfo"]
    assert code(cd.create_application, applicationName="cdbad",
                computePlatform="ECS") == "ApplicationAlreadyExistsException"
    assert code(cd.get_application, applicationName="nope") == "ApplicationDoesNotExistException"
    revision = {"revisionType": "AppSpecContent", "appSpecContent": {"content": appspec(
        "arn:aws:ecs:us-east-1:000000000000:task-definition/cdbad:1")}}
    assert code(cd.create_deployment, applicationName="cdbad", deploymentGroupName="nope",
                revision=revision) == "DeploymentGroupDoesNotExistException"
    assert code(cd.create_deployment, applicationName="cdbad",
                deploymentGroupName="cdbad-dg") == "RevisionRequiredException"
    # The service of an ECS-controlled service cannot be deployed by CodeDeploy.
    assert code(cd.create_deployment_group, applicationName="cdbad",
                deploymentGroupName="plain-dg", serviceRoleArn=SERVICE_ROLE,
                deploymentStyle=group["deploymentStyle"],
                blueGreenDeploymentConfiguration=group["blueGreenDeploymentConfiguration"],
                ecsServices=[{"serviceName": "plain", "clusterName": "default"}],
                loadBalancerInfo=group["loadBalancerInfo"]) != ""
    # ECS refuses a new task definition for a CODE_DEPLOY service.
    with pytest.raises(ecs.exceptions.ClientError) as e:
        ecs.update_service(service="cdbad", taskDefinition="cdbad", forceNewDeployment=True)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "CodeDeploy" in e.value.response["Error"]["Message"]
    # Nothing was deployed.
    assert cd.list_deployments(applicationName="cdbad",
                               deploymentGroupName="cdbad-dg")["deployments"] == []
    assert get(address, 80) == (200, "v1")


def test_aws_ecs_deploy_registers_and_deploys_through_codedeploy(berth_fast, tmp_path):
    """The aws CLI's `ecs deploy`: registers the task definition file, puts
    its ARN in the AppSpec, creates the CodeDeploy deployment and waits
    for it to succeed."""
    berth = berth_fast
    address, _, green, _ = setup(berth, "cdcli")
    definition_file = tmp_path / "task-definition.json"
    definition_file.write_text(json.dumps({"family": "cdcli", "containerDefinitions": [{
        "name": "web", "image": IMAGE, "memory": 64, "essential": True,
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        "entryPoint": ["sh", "-c"], "command": [HTTPD.format(body="cli")]}]}))
    appspec_file = tmp_path / "appspec.yaml"
    appspec_file.write_text(appspec("placeholder"))
    cli = Path(os.environ.get("BERTH_VENV", ".venv")) / "bin" / "aws"
    # It prints its progress, not JSON.
    done = subprocess.run(
        [str(cli), "ecs", "deploy", "--cluster", "default", "--service", "cdcli",
         "--task-definition", str(definition_file), "--codedeploy-appspec", str(appspec_file),
         "--codedeploy-application", "cdcli", "--codedeploy-deployment-group", "cdcli-dg"],
        env=berth.cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully deployed" in done.stdout, done.stdout
    assert get(address, 80) == (200, "cli")
    [deployment] = berth.client("codedeploy").list_deployments(
        applicationName="cdcli", deploymentGroupName="cdcli-dg")["deployments"]
    assert status(berth, deployment) == "Succeeded"
    wait_healthy(berth.client("elbv2"), green, 2)
