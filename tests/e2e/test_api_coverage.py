"""Every operation of the AWS models Berth serves is either implemented or
on the documented list `berth not-implemented` prints, each with its
reason: the test calls each one (with empty input, through botocore, as a
tool would) and fails on a generic "not implemented" answer for any
operation not on the list, and on a listed one that answers anything but
an error naming its reason. It prints the counts per service and the list."""
import json
import subprocess

import boto3
import botocore.config
import botocore.exceptions
import botocore.session

from berth_harness import ACCESS_KEY, REGION, SECRET_KEY, berth_binary

SERVICES = ["ecs", "ecr", "iam", "sts", "ec2", "logs", "ssm", "secretsmanager",
            "servicediscovery", "elbv2", "acm"]

# What an operation nobody wrote looks like: the router's "no such
# operation", or a message admitting it is missing.
GENERIC_CODES = {"UnknownOperationException", "InvalidAction", "UnknownOperation"}
GENERIC_WORDS = ("not implemented", "does not implement", "not yet implemented",
                 "unsupported operation")


def not_implemented():
    out = subprocess.run([berth_binary(), "not-implemented"], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def operations(service):
    session = botocore.session.get_session()
    model = session.get_service_model(service)
    return model, sorted(model.operation_names)


def answer(client, operation):
    """(code, message) of the call's error, or (None, None) on success."""
    try:
        client._make_api_call(operation, {})
        return None, None
    except botocore.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        return err.get("Code") or "", err.get("Message") or ""
    except (botocore.exceptions.ReadTimeoutError, botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ResponseStreamingError) as e:
        # An event stream held open, or a stream that ends early: it
        # answered something other than "not implemented".
        return "Stream", str(e)
    except (TypeError, KeyError, ValueError) as e:
        # botocore's own handlers cannot build this request from empty
        # input (e.g. EC2's presigned CopySnapshot): nothing was sent.
        return "NotSent", str(e)


def generic(code, message):
    lowered = (message or "").lower()
    return code in GENERIC_CODES or any(w in lowered for w in GENERIC_WORDS)


def test_every_model_operation_is_implemented_or_listed_with_its_reason(berth):
    listed = not_implemented()
    config = botocore.config.Config(parameter_validation=False, inject_host_prefix=False,
                                    retries={"max_attempts": 1}, read_timeout=5,
                                    connect_timeout=5)
    failures = []
    summary = []
    unsent = []
    for service in SERVICES:
        _, ops = operations(service)
        client = boto3.client(service, endpoint_url=berth.endpoint, region_name=REGION,
                              aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                              config=config)
        reasons = listed.get(service, {})
        unknown = sorted(set(reasons) - set(ops))
        if unknown:
            failures.append(f"{service}: listed operations not in the model: {unknown}")
        for op in ops:
            code, message = answer(client, op)
            if code == "NotSent":
                unsent.append(f"{service}:{op}")
                continue
            if op in reasons:
                if code is None:
                    failures.append(f"{service}:{op} is listed as not implemented but succeeded")
                elif reasons[op][:40] not in message and generic(code, message):
                    # A listed operation may refuse bad input first; what it
                    # must not do is answer without its reason.
                    failures.append(f"{service}:{op} is listed but its answer does not give the "
                                    f"reason: {code}: {message[:200]}")
            elif code is not None and generic(code, message):
                failures.append(f"{service}:{op} answers a generic not-implemented: "
                                f"{code}: {message[:200]}")
        summary.append((service, len(ops), len(ops) - len(reasons), len(reasons)))

    print("\nservice            operations  implemented  not implemented (listed)")
    for service, total, done, left in summary:
        print(f"{service:<18} {total:>10}  {done:>11}  {left:>8}")
    print(f"\nbotocore could not build from empty input (not sent): {unsent}")
    assert len(unsent) <= 10, unsent
    print("\nNot implemented, with reasons:")
    for service in SERVICES:
        for op, reason in sorted(listed.get(service, {}).items()):
            print(f"  {service}:{op}: {reason}")
    assert not failures, "\n".join(failures)
