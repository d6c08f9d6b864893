"""CloudWatch Logs breadth (issue 19) through boto3 and the aws CLI: Logs
Insights (StartQuery, GetQueryResults, StopQuery, DescribeQueries, query
definitions) checked against counts made here over events put at chosen
timestamps, StartLiveTail's event stream (a line put with PutLogEvents
shows within a second), metric and subscription filters, resource and data
protection policies. Bad input answers CloudWatch Logs' codes and changes
nothing; the new records survive a restart. Every answer is checked
against the botocore model."""
import collections
import datetime
import json
import queue
import threading
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from berth_harness import ACCOUNT, REGION, check_output, check_shape, load_model, wait_for

MODEL = load_model("logs", "2014-03-28")
LOGS = "Logs_20140328"
MIN = 60_000


def now_ms():
    return int(time.time() * 1000)


def call(server, operation, payload):
    """A signed JSON call; the answer checked against the model."""
    status, body, _ = server.raw("logs", LOGS, operation, payload)
    assert status == 200, (operation, body)
    check_output(MODEL, operation, body)
    return body


def error(server, operation, payload):
    status, body, _ = server.raw("logs", LOGS, operation, payload)
    assert status == 400, (operation, status, body)
    return body["__type"].split("#")[-1], body.get("message", "")


def cli(server, operation, *args):
    _, out, _ = server.aws("logs", *args)
    check_output(MODEL, operation, out or {})
    return out


def group_arn(name):
    return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"


def wait_query(server, query_id, timeout=20):
    def done():
        out = call(server, "GetQueryResults", {"queryId": query_id})
        return out if out["status"] in ("Complete", "Failed", "Cancelled", "Timeout") else None
    return wait_for(done, timeout, interval=0.05, what=f"query {query_id}")


def rows(result):
    return [{f["field"]: f["value"] for f in row} for row in result["results"]]


def insights_time(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc) \
        .strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def state(server, groups):
    """What the bad-input cases could change."""
    out = {"groups": call(server, "DescribeLogGroups", {})["logGroups"],
           "definitions": call(server, "DescribeQueryDefinitions", {})["queryDefinitions"],
           "resource_policies": call(server, "DescribeResourcePolicies", {})["resourcePolicies"],
           "queries": sorted(q["queryId"] for q in call(server, "DescribeQueries", {})["queries"])}
    for g in groups:
        out[g] = {
            "streams": call(server, "DescribeLogStreams", {"logGroupName": g})["logStreams"],
            "metric": call(server, "DescribeMetricFilters", {"logGroupName": g})["metricFilters"],
            "subs": call(server, "DescribeSubscriptionFilters", {"logGroupName": g})["subscriptionFilters"],
            "dp": call(server, "GetDataProtectionPolicy", {"logGroupIdentifier": g}),
            "tags": call(server, "ListTagsForResource", {"resourceArn": group_arn(g)})["tags"],
        }
    return out


@pytest.fixture(scope="module")
def server(shared_berth):
    return shared_berth


# --- Insights --------------------------------------------------------------------
def test_insights_stats_by_bin_match_a_count_made_here(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="/ins/app")
    for s in ("web", "worker"):
        logs.create_log_stream(logGroupName="/ins/app", logStreamName=s)
    # Events at chosen times over six minutes, a few per minute, some ERRORs.
    base = (now_ms() // MIN - 30) * MIN
    offsets = [0, 1, 59_999, MIN + 5, 3 * MIN, 3 * MIN + 1, 3 * MIN + 2, 3 * MIN + 59_000,
               5 * MIN + 10, 5 * MIN + 20_000]
    events = {"web": [], "worker": []}
    for i, off in enumerate(offsets):
        stream = "web" if i % 3 else "worker"
        level = "ERROR" if i % 4 == 0 else "INFO"
        events[stream].append({"timestamp": base + off,
                               "message": f"{level} request id={i} latency={10 * i} path=/p{i % 2}"})
    for stream, batch in events.items():
        logs.put_log_events(logGroupName="/ins/app", logStreamName=stream, logEvents=batch)
    start, end = base // 1000 - 60, (base + 10 * MIN) // 1000

    expected = collections.Counter(insights_time(base + (off // MIN) * MIN) for off in offsets)
    q = logs.start_query(logGroupName="/ins/app", startTime=start, endTime=end,
                         queryString="stats count(*) by bin(1m)")
    result = wait_query(server, q["queryId"])
    assert result["status"] == "Complete", result
    got = {r["bin(1m)"]: int(r["count(*)"]) for r in rows(result)}
    assert got == dict(expected)
    assert result["statistics"]["recordsMatched"] == len(offsets)
    assert result["statistics"]["recordsScanned"] == len(offsets)

    # filter, parse, sort, limit, fields — through the CLI.
    out = cli(server, "StartQuery", "start-query", "--log-group-names", "/ins/app",
              "--start-time", str(start), "--end-time", str(end), "--query-string",
              "fields @timestamp, @message, @logStream | filter @message like /ERROR/ "
              "| parse @message 'latency=* ' as latency | sort @timestamp desc | limit 2")
    result = wait_query(server, out["queryId"])
    got = rows(result)
    errors = sorted([(base + off, i) for i, off in enumerate(offsets) if i % 4 == 0], reverse=True)[:2]
    assert [r["@timestamp"] for r in got] == [insights_time(t) for t, _ in errors]
    assert [r["latency"] for r in got] == [str(10 * i) for _, i in errors]
    assert all("@ptr" in r for r in got)
    # A result's @ptr reads the whole record back.
    record = call(server, "GetLogRecord", {"logRecordPointer": got[0]["@ptr"]})["logRecord"]
    assert record["@message"].startswith("ERROR request id=")

    out = cli(server, "GetQueryResults", "get-query-results", "--query-id", out["queryId"])
    assert out["status"] == "Complete" and len(out["results"]) == 2

    # stats … by a field, and avg.
    q = logs.start_query(logGroupIdentifiers=[group_arn("/ins/app")], startTime=start, endTime=end,
                         queryString="parse @message 'path=*' as path | stats count(*) as n, "
                                     "avg(latency) as lat by path | sort path")
    # latency was only parsed in the previous query: avg of a missing field.
    result = wait_query(server, q["queryId"])
    by_path = {r["path"]: int(r["n"]) for r in rows(result)}
    assert by_path == {"/p0": sum(1 for i in range(len(offsets)) if i % 2 == 0),
                       "/p1": sum(1 for i in range(len(offsets)) if i % 2 == 1)}

    # DescribeQueries lists them, by status and group.
    out = call(server, "DescribeQueries", {"logGroupName": "/ins/app", "status": "Complete"})
    assert {q["queryId"] for q in out["queries"]} >= {q["queryId"]}
    assert all(d["status"] == "Complete" and d["logGroupName"] == "/ins/app" for d in out["queries"])
    out = cli(server, "DescribeQueries", "describe-queries", "--status", "Running")
    assert all(d["status"] == "Running" for d in out["queries"])

    # StopQuery: a running query stops; a finished one cannot be stopped.
    q = logs.start_query(logGroupName="/ins/app", startTime=start, endTime=end,
                         queryString="fields @message | filter @message like /id=9/")
    try:
        stopped = logs.stop_query(queryId=q["queryId"])
        assert stopped["success"] is True
        assert wait_query(server, q["queryId"])["status"] == "Cancelled"
    except ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidParameterException"
        assert wait_query(server, q["queryId"])["status"] == "Complete"
    code, message = error(server, "StopQuery", {"queryId": q["queryId"]})
    assert code == "InvalidParameterException" and "not running" in message

    # GetLogGroupFields samples the 15 minutes before `time` (default: now).
    assert call(server, "GetLogGroupFields", {"logGroupName": "/ins/app"})["logGroupFields"] == []
    fields = call(server, "GetLogGroupFields", {"logGroupName": "/ins/app",
                                                "time": (base + 6 * MIN) // 1000})["logGroupFields"]
    assert {"@message", "@timestamp", "@logStream"} <= {f["name"] for f in fields}
    assert all(0 < f["percent"] <= 100 for f in fields)


def test_query_definitions(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="/defs/app")
    out = cli(server, "PutQueryDefinition", "put-query-definition", "--name", "team/errors",
              "--query-string", "fields @message | filter @message like /ERROR/",
              "--log-group-names", "/defs/app")
    def_id = out["queryDefinitionId"]
    out = call(server, "DescribeQueryDefinitions", {"queryDefinitionNamePrefix": "team/"})
    [d] = out["queryDefinitions"]
    assert d["queryDefinitionId"] == def_id and d["logGroupNames"] == ["/defs/app"]
    assert d["queryString"] == "fields @message | filter @message like /ERROR/"
    # Updating by id keeps the id.
    again = logs.put_query_definition(name="team/errors", queryDefinitionId=def_id,
                                      queryString="stats count(*) by bin(5m)")
    assert again["queryDefinitionId"] == def_id
    second = logs.put_query_definition(name="team/latency", queryString="stats avg(latency)")
    out = cli(server, "DescribeQueryDefinitions", "describe-query-definitions",
              "--query-definition-name-prefix", "team/")
    assert {d["name"]: d["queryString"] for d in out["queryDefinitions"]} == {
        "team/errors": "stats count(*) by bin(5m)", "team/latency": "stats avg(latency)"}
    assert logs.delete_query_definition(queryDefinitionId=second["queryDefinitionId"])["success"]
    assert [d["name"] for d in logs.describe_query_definitions(
        queryDefinitionNamePrefix="team/")["queryDefinitions"]] == ["team/errors"]


# --- live tail -------------------------------------------------------------------
def test_live_tail_delivers_a_put_line_within_a_second(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="/tail/app")
    logs.create_log_stream(logGroupName="/tail/app", logStreamName="s1")
    logs.create_log_stream(logGroupName="/tail/app", logStreamName="other")
    response = logs.start_live_tail(logGroupIdentifiers=[group_arn("/tail/app")],
                                    logStreamNamePrefixes=["s"], logEventFilterPattern="tail")
    stream = response["responseStream"]
    received = queue.Queue()

    def read():
        try:
            for event in stream:
                received.put((time.monotonic(), event))
        except Exception as e:  # noqa: BLE001 - ends with the stream
            received.put((time.monotonic(), {"error": repr(e)}))
    threading.Thread(target=read, daemon=True).start()
    _, first = received.get(timeout=5)
    start = first["sessionStart"]
    check_shape(MODEL, "LiveTailSessionStart", start)
    assert start["logGroupIdentifiers"] == [group_arn("/tail/app")]
    assert start["logStreamNamePrefixes"] == ["s"] and start["sessionId"]

    try:
        delays = []
        for n in range(3):
            marker = f"tail line {uuid.uuid4()}"
            sent = time.monotonic()
            # Not matched (pattern, stream) then matched.
            logs.put_log_events(logGroupName="/tail/app", logStreamName="s1",
                                logEvents=[{"timestamp": now_ms(), "message": "unrelated"}])
            logs.put_log_events(logGroupName="/tail/app", logStreamName="other",
                                logEvents=[{"timestamp": now_ms(), "message": f"other {marker}"}])
            logs.put_log_events(logGroupName="/tail/app", logStreamName="s1",
                                logEvents=[{"timestamp": now_ms(), "message": marker}])
            while True:
                at, event = received.get(timeout=3)
                assert "error" not in event, event
                update = event["sessionUpdate"]
                check_shape(MODEL, "LiveTailSessionUpdate", update)
                results = update["sessionResults"]
                assert all(r["logStreamName"] == "s1" and "tail" in r["message"] for r in results), results
                if any(r["message"] == marker for r in results):
                    [hit] = [r for r in results if r["message"] == marker]
                    assert hit["logGroupIdentifier"] == group_arn("/tail/app")
                    delays.append(at - sent)
                    break
        # Measured: from before the PutLogEvents calls to the update's arrival.
        print(f"live tail delays (s): {[round(d, 3) for d in delays]}")
        assert max(delays) < 1.0, delays
    finally:
        stream.close()
    # Empty updates keep coming at least once a second (the session is alive):
    # checked through a new session that sees nothing.
    response = logs.start_live_tail(logGroupIdentifiers=[group_arn("/tail/app")],
                                    logEventFilterPattern="nothing-matches-this")
    events = iter(response["responseStream"])
    assert "sessionStart" in next(events)
    t0 = time.monotonic()
    update = next(events)["sessionUpdate"]
    assert update["sessionResults"] == [] and time.monotonic() - t0 < 1.5
    response["responseStream"].close()


# --- metric and subscription filters, policies ----------------------------------
DP_POLICY = json.dumps({
    "Name": "data-protection", "Version": "2021-06-01",
    "Statement": [
        {"Sid": "audit", "DataIdentifier": ["arn:aws:dataprotection::aws:data-identifier/EmailAddress"],
         "Operation": {"Audit": {"FindingsDestination": {}}}},
        {"Sid": "redact", "DataIdentifier": ["arn:aws:dataprotection::aws:data-identifier/EmailAddress"],
         "Operation": {"Deidentify": {"MaskConfig": {}}}}]})

RESOURCE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Sid": "Route53", "Effect": "Allow", "Principal": {"Service": "route53.amazonaws.com"},
    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
    "Resource": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/route53/*"}]})


def test_metric_and_subscription_filters_and_policies(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="/mf/app")
    out = cli(server, "PutMetricFilter", "put-metric-filter", "--log-group-name", "/mf/app",
              "--filter-name", "errors", "--filter-pattern", "ERROR",
              "--metric-transformations",
              "metricName=Errors,metricNamespace=App,metricValue=1,defaultValue=0,unit=Count")
    assert out is None or out == {}
    logs.put_metric_filter(logGroupName="/mf/app", filterName="latency",
                           filterPattern="{ $.latency > 0 }", metricTransformations=[{
                               "metricName": "Latency", "metricNamespace": "App",
                               "metricValue": "$.latency", "unit": "Milliseconds",
                               "dimensions": {"Path": "$.path"}}])
    out = call(server, "DescribeMetricFilters", {"logGroupName": "/mf/app"})
    assert [f["filterName"] for f in out["metricFilters"]] == ["errors", "latency"]
    assert out["metricFilters"][1]["metricTransformations"][0]["dimensions"] == {"Path": "$.path"}
    out = call(server, "DescribeMetricFilters", {"metricName": "Errors", "metricNamespace": "App"})
    assert [f["filterName"] for f in out["metricFilters"]] == ["errors"]
    out = cli(server, "TestMetricFilter", "test-metric-filter", "--filter-pattern", "[ip, user, status=5*]",
              "--log-event-messages", "1.2.3.4 bob 500", "1.2.3.4 bob 200", "5.6.7.8 ann 503")
    assert [(m["eventNumber"], m["extractedValues"]["$status"]) for m in out["matches"]] \
        == [(1, "500"), (3, "503")]
    logs.delete_metric_filter(logGroupName="/mf/app", filterName="errors")
    assert [f["filterName"] for f in logs.describe_metric_filters(logGroupName="/mf/app")["metricFilters"]] \
        == ["latency"]

    # Subscription filters need a target service Berth lacks: refused, naming it.
    with pytest.raises(ClientError) as e:
        logs.put_subscription_filter(
            logGroupName="/mf/app", filterName="ship", filterPattern="",
            destinationArn=f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/logs",
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/cwl")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "Kinesis" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        logs.put_subscription_filter(
            logGroupName="/mf/app", filterName="fn", filterPattern="",
            destinationArn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f")
    assert "Lambda" in e.value.response["Error"]["Message"]
    out = cli(server, "DescribeSubscriptionFilters", "describe-subscription-filters",
              "--log-group-name", "/mf/app")
    assert out["subscriptionFilters"] == []
    assert call(server, "DescribeDestinations", {})["destinations"] == []

    # Resource policies (account level).
    out = cli(server, "PutResourcePolicy", "put-resource-policy", "--policy-name", "route53",
              "--policy-document", RESOURCE_POLICY)
    assert out["resourcePolicy"]["policyName"] == "route53"
    assert json.loads(out["resourcePolicy"]["policyDocument"]) == json.loads(RESOURCE_POLICY)
    out = call(server, "DescribeResourcePolicies", {})
    assert [p["policyName"] for p in out["resourcePolicies"]] == ["route53"]
    logs.delete_resource_policy(policyName="route53")
    assert logs.describe_resource_policies()["resourcePolicies"] == []

    # Data protection policies.
    out = cli(server, "PutDataProtectionPolicy", "put-data-protection-policy",
              "--log-group-identifier", "/mf/app", "--policy-document", DP_POLICY)
    assert out["logGroupIdentifier"] == "/mf/app"
    assert json.loads(out["policyDocument"]) == json.loads(DP_POLICY)
    out = call(server, "GetDataProtectionPolicy", {"logGroupIdentifier": group_arn("/mf/app")})
    assert json.loads(out["policyDocument"]) == json.loads(DP_POLICY)
    [g] = logs.describe_log_groups(logGroupNamePrefix="/mf/app")["logGroups"]
    assert g.get("dataProtectionStatus") in ("ACTIVATED", None)
    logs.delete_data_protection_policy(logGroupIdentifier="/mf/app")
    out = call(server, "GetDataProtectionPolicy", {"logGroupIdentifier": "/mf/app"})
    assert "policyDocument" not in out or not out["policyDocument"]

    # Export tasks need S3: a precise refusal.
    with pytest.raises(ClientError) as e:
        logs.create_export_task(logGroupName="/mf/app", fromTime=0, to=now_ms(), destination="bucket")
    assert e.value.response["Error"]["Code"] in ("InvalidParameterException", "InvalidOperationException")
    assert "S3" in e.value.response["Error"]["Message"]


# --- bad input ---------------------------------------------------------------------
def test_bad_input_gets_logs_errors_and_changes_nothing(server):
    logs = server.client("logs")
    logs.create_log_group(logGroupName="/bad/app")
    logs.create_log_stream(logGroupName="/bad/app", logStreamName="s")
    logs.put_log_events(logGroupName="/bad/app", logStreamName="s",
                        logEvents=[{"timestamp": now_ms(), "message": "hello"}])
    logs.put_metric_filter(logGroupName="/bad/app", filterName="keep", filterPattern="hello",
                           metricTransformations=[{"metricName": "H", "metricNamespace": "N",
                                                   "metricValue": "1"}])
    def_id = logs.put_query_definition(name="bad/def", queryString="fields @message")["queryDefinitionId"]
    done = logs.start_query(logGroupName="/bad/app", startTime=0, endTime=int(time.time()) + 60,
                            queryString="fields @message")["queryId"]
    wait_query(server, done)
    t = int(time.time())
    mt = [{"metricName": "M", "metricNamespace": "N", "metricValue": "1"}]
    cases = [
        ("StartQuery", {"logGroupName": "/bad/app", "startTime": t - 60, "endTime": t,
                        "queryString": "stats count(* by"}, "MalformedQueryException"),
        ("StartQuery", {"logGroupName": "/bad/app", "startTime": t - 60, "endTime": t,
                        "queryString": "frobnicate @message"}, "MalformedQueryException"),
        ("StartQuery", {"logGroupName": "/bad/none", "startTime": t - 60, "endTime": t,
                        "queryString": "fields @message"}, "ResourceNotFoundException"),
        ("StartQuery", {"logGroupName": "/bad/app", "startTime": t, "endTime": t - 60,
                        "queryString": "fields @message"}, "InvalidParameterException"),
        ("StartQuery", {"startTime": t - 60, "endTime": t, "queryString": "fields @message"},
         "InvalidParameterException"),
        ("StartQuery", {"logGroupName": "/bad/app", "logGroupNames": ["/bad/app"], "startTime": t - 60,
                        "endTime": t, "queryString": "fields @message"}, "InvalidParameterException"),
        ("GetQueryResults", {"queryId": "00000000-0000-0000-0000-000000000000"}, "ResourceNotFoundException"),
        ("StopQuery", {"queryId": done}, "InvalidParameterException"),
        ("DescribeQueries", {"status": "Bogus"}, "InvalidParameterException"),
        ("PutQueryDefinition", {"name": "x", "queryString": "fields @message",
                                "queryDefinitionId": "00000000-0000-0000-0000-000000000000"},
         "ResourceNotFoundException"),
        ("PutQueryDefinition", {"name": "", "queryString": "fields @message"}, "InvalidParameterException"),
        ("DeleteQueryDefinition", {"queryDefinitionId": "00000000-0000-0000-0000-000000000000"},
         "ResourceNotFoundException"),
        ("PutMetricFilter", {"logGroupName": "/bad/app", "filterName": "f", "filterPattern": "{ $.a = ",
                             "metricTransformations": mt}, "InvalidParameterException"),
        ("PutMetricFilter", {"logGroupName": "/bad/none", "filterName": "f", "filterPattern": "x",
                             "metricTransformations": mt}, "ResourceNotFoundException"),
        ("PutMetricFilter", {"logGroupName": "/bad/app", "filterName": "f", "filterPattern": "x",
                             "metricTransformations": [{**mt[0], "unit": "Parsecs"}]},
         "InvalidParameterException"),
        ("PutMetricFilter", {"logGroupName": "/bad/app", "filterName": "a:b", "filterPattern": "x",
                             "metricTransformations": mt}, "InvalidParameterException"),
        ("DeleteMetricFilter", {"logGroupName": "/bad/app", "filterName": "none"}, "ResourceNotFoundException"),
        ("TestMetricFilter", {"filterPattern": "{ $.a = ", "logEventMessages": ["x"]},
         "InvalidParameterException"),
        ("PutSubscriptionFilter", {"logGroupName": "/bad/app", "filterName": "s", "filterPattern": "",
                                   "destinationArn": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/x"},
         "InvalidParameterException"),
        ("PutSubscriptionFilter", {"logGroupName": "/bad/none", "filterName": "s", "filterPattern": "",
                                   "destinationArn": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/x"},
         "ResourceNotFoundException"),
        ("DeleteSubscriptionFilter", {"logGroupName": "/bad/app", "filterName": "none"},
         "ResourceNotFoundException"),
        ("PutResourcePolicy", {"policyName": "p", "policyDocument": "not json"}, "InvalidParameterException"),
        ("DeleteResourcePolicy", {"policyName": "none"}, "ResourceNotFoundException"),
        ("PutDataProtectionPolicy", {"logGroupIdentifier": "/bad/app", "policyDocument": "{}"},
         "InvalidParameterException"),
        ("PutDataProtectionPolicy", {"logGroupIdentifier": "/bad/none", "policyDocument": DP_POLICY},
         "ResourceNotFoundException"),
        ("GetDataProtectionPolicy", {"logGroupIdentifier": "/bad/none"}, "ResourceNotFoundException"),
        ("StartLiveTail", {"logGroupIdentifiers": [group_arn("/bad/app") + ":*"]}, "InvalidParameterException"),
        ("StartLiveTail", {"logGroupIdentifiers": [group_arn("/bad/none")]}, "ResourceNotFoundException"),
        ("StartLiveTail", {"logGroupIdentifiers": [group_arn("/bad/app")], "logStreamNames": ["s"],
                           "logStreamNamePrefixes": ["s"]}, "InvalidParameterException"),
        ("StartLiveTail", {"logGroupIdentifiers": [group_arn("/bad/app")],
                           "logEventFilterPattern": "{ $.a = "}, "InvalidParameterException"),
        ("CreateExportTask", {"logGroupName": "/bad/app", "fromTime": 10, "to": 5, "destination": "b"},
         "InvalidParameterException"),
    ]
    before = state(server, ["/bad/app"])
    failures = []
    for operation, payload, expected in cases:
        status, body, _ = server.raw("logs", LOGS, operation, payload)
        got = body.get("__type", "").split("#")[-1]
        if status != 400 or got != expected:
            failures.append(f"{operation} {json.dumps(payload)[:110]}: {status} {got} "
                            f"{body.get('message', body)} (expected {expected})")
    assert not failures, "\n".join(failures)
    after = state(server, ["/bad/app"])
    assert after == before
    # The stored ones are unchanged.
    assert [d["queryDefinitionId"] for d in logs.describe_query_definitions(
        queryDefinitionNamePrefix="bad/")["queryDefinitions"]] == [def_id]
    # Through the CLI as well.
    code, _, err = server.aws("logs", "start-query", "--log-group-name", "/bad/app", "--start-time",
                              str(t - 60), "--end-time", str(t), "--query-string", "stats count(* by",
                              check=False)
    assert code != 0 and "MalformedQueryException" in err
    assert state(server, ["/bad/app"]) == before


# --- restart -----------------------------------------------------------------------
def test_new_records_survive_a_restart(berth):
    logs = berth.client("logs")
    logs.create_log_group(logGroupName="/keep/app")
    logs.put_metric_filter(logGroupName="/keep/app", filterName="f", filterPattern="ERROR",
                           metricTransformations=[{"metricName": "E", "metricNamespace": "N",
                                                   "metricValue": "1"}])
    logs.put_query_definition(name="keep", queryString="fields @message", logGroupNames=["/keep/app"])
    logs.put_resource_policy(policyName="keep", policyDocument=RESOURCE_POLICY)
    logs.put_data_protection_policy(logGroupIdentifier="/keep/app", policyDocument=DP_POLICY)
    before = state(berth, ["/keep/app"])
    before.pop("queries")
    berth.stop()
    berth.start()
    after = state(berth, ["/keep/app"])
    after.pop("queries")
    assert after == before
