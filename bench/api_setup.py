"""Creates, on one server (Berth or moto_server), what bench/api's read and
write operations of the services other than ECS act on, through boto3, and
prints `name=value` lines for the shell: the account, the default VPC, the
role to assume and the Cloud Map service ids.

    api_setup.py ENDPOINT CLIENTS    # CLIENTS: the most clients a run uses
"""
import json
import sys

import boto3

endpoint, clients = sys.argv[1], int(sys.argv[2])


def client(service):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


account = client("sts").get_caller_identity()["Account"]

client("ecr").create_repository(repositoryName="bench")

iam = client("iam")
iam.create_user(UserName="bench")
trust = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
    "Action": "sts:AssumeRole"}]}
role_arn = iam.create_role(RoleName="bench", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]

ec2 = client("ec2")
vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
if not vpcs:
    sys.exit(f"{endpoint} has no default VPC")
vpc = vpcs[0]["VpcId"]

logs = client("logs")
logs.create_log_group(logGroupName="bench")
for n in range(clients):
    logs.create_log_stream(logGroupName="bench", logStreamName=f"s-{n}")

client("ssm").put_parameter(Name="/bench/param", Value="p" * 64, Type="String")
client("secretsmanager").create_secret(Name="bench/secret", SecretString="s" * 64)

sd = client("servicediscovery")
operation = sd.create_http_namespace(Name="bench")["OperationId"]
namespace = sd.get_operation(OperationId=operation)["Operation"]["Targets"]["NAMESPACE"]
read_service = sd.create_service(Name="read", NamespaceId=namespace)["Service"]["Id"]
write_service = sd.create_service(Name="write", NamespaceId=namespace)["Service"]["Id"]
for n in range(3):
    sd.register_instance(ServiceId=read_service, InstanceId=f"i-{n}",
                         Attributes={"AWS_INSTANCE_IPV4": f"10.0.0.{n + 1}", "AWS_INSTANCE_PORT": "80"})

for name, value in (("account", account), ("vpc", vpc), ("role_arn", role_arn),
                    ("write_service", write_service)):
    print(f"{name}={value}")
