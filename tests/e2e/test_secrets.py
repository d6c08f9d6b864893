"""Issue 8 acceptance (server side): Secrets Manager and SSM Parameter Store
through the real aws CLI and boto3, model conformance of the answers, and no
plaintext in the store file."""
import pytest
from botocore.exceptions import ClientError

from berth_harness import (ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY, Berth, check_output, create_task_role,
                           load_model)

SM = "secretsmanager"
SM_MODEL = load_model("secretsmanager", "2017-10-17")
SSM_MODEL = load_model("ssm", "2014-11-06")

PLAINTEXT = "correct-horse-battery-staple-8d1f"
SECURE_PARAM = "ssm-secure-value-51c2"


def test_secret_lifecycle(berth):
    _, created, _ = berth.aws(SM, "create-secret", "--name", "prod/db", "--secret-string", PLAINTEXT,
                              "--description", "database password")
    arn = created["ARN"]
    assert arn.startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod/db-")
    assert len(arn.rsplit("-", 1)[1]) == 6
    first = created["VersionId"]

    # By name, full ARN and partial ARN.
    for secret_id in ("prod/db", arn, arn[:-7]):
        _, got, _ = berth.aws(SM, "get-secret-value", "--secret-id", secret_id)
        assert got["SecretString"] == PLAINTEXT
        assert got["VersionStages"] == ["AWSCURRENT"]
        assert got["ARN"] == arn

    rc, _, err = berth.aws(SM, "create-secret", "--name", "prod/db", "--secret-string", "x", check=False)
    assert rc != 0 and "ResourceExistsException" in err

    _, put, _ = berth.aws(SM, "put-secret-value", "--secret-id", "prod/db", "--secret-string", "second-value")
    second = put["VersionId"]
    _, described, _ = berth.aws(SM, "describe-secret", "--secret-id", arn)
    assert described["VersionIdsToStages"] == {first: ["AWSPREVIOUS"], second: ["AWSCURRENT"]}
    assert described["Description"] == "database password"
    _, prev, _ = berth.aws(SM, "get-secret-value", "--secret-id", "prod/db", "--version-stage", "AWSPREVIOUS")
    assert prev["SecretString"] == PLAINTEXT
    _, cur, _ = berth.aws(SM, "get-secret-value", "--secret-id", "prod/db")
    assert cur["SecretString"] == "second-value" and cur["VersionId"] == second

    _, deleted, _ = berth.aws(SM, "delete-secret", "--secret-id", "prod/db", "--recovery-window-in-days", "7")
    assert deleted["ARN"] == arn and "DeletionDate" in deleted
    rc, _, err = berth.aws(SM, "get-secret-value", "--secret-id", "prod/db", check=False)
    assert rc != 0
    assert "InvalidRequestException" in err
    assert "You can't perform this operation on the secret because it was marked for deletion." in err
    _, described, _ = berth.aws(SM, "describe-secret", "--secret-id", "prod/db")
    assert "DeletedDate" in described

    berth.aws(SM, "restore-secret", "--secret-id", "prod/db")
    _, got, _ = berth.aws(SM, "get-secret-value", "--secret-id", "prod/db")
    assert got["SecretString"] == "second-value"

    rc, _, err = berth.aws(SM, "delete-secret", "--secret-id", "prod/db", "--recovery-window-in-days", "3",
                           check=False)
    assert rc != 0 and "InvalidParameterException" in err
    berth.aws(SM, "delete-secret", "--secret-id", "prod/db", "--force-delete-without-recovery")
    rc, _, err = berth.aws(SM, "get-secret-value", "--secret-id", "prod/db", check=False)
    assert rc != 0 and "ResourceNotFoundException" in err
    assert "Secrets Manager can't find the specified secret." in err


def test_secrets_manager_boto3_and_model(berth):
    sm = berth.client("secretsmanager")
    created = sm.create_secret(Name="api", SecretBinary=b"\x00\x01\x02", Tags=[{"Key": "team", "Value": "a"}])
    assert sm.get_secret_value(SecretId="api")["SecretBinary"] == b"\x00\x01\x02"
    sm.tag_resource(SecretId=created["ARN"], Tags=[{"Key": "env", "Value": "prod"}])
    sm.untag_resource(SecretId="api", TagKeys=["team"])
    sm.update_secret(SecretId="api", Description="d", SecretString="now-a-string")
    d = sm.describe_secret(SecretId="api")
    assert d["Tags"] == [{"Key": "env", "Value": "prod"}] and d["Description"] == "d"
    for i in range(5):
        sm.create_secret(Name=f"page-{i}", SecretString="v")
    names = [s["Name"] for page in sm.get_paginator("list_secrets").paginate(PaginationConfig={"PageSize": 2})
             for s in page["SecretList"]]
    assert sorted(names) == ["api"] + [f"page-{i}" for i in range(5)]
    pw = sm.get_random_password(PasswordLength=24, ExcludePunctuation=True)["RandomPassword"]
    assert len(pw) == 24 and pw.isalnum()

    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId="missing")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        sm.rotate_secret(SecretId="api")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # No Lambda to run a rotation function: Secrets Manager's own error for a
    # secret without one, and how to rotate by hand.
    assert e.value.response["Error"]["Code"] == "InvalidRequestException"
    assert "Berth has no Lambda" in e.value.response["Error"]["Message"]

    for operation, payload in [
        ("DescribeSecret", {"SecretId": "api"}),
        ("GetSecretValue", {"SecretId": "api"}),
        ("ListSecrets", {}),
        ("PutSecretValue", {"SecretId": "api", "SecretString": "v3"}),
        ("GetRandomPassword", {}),
    ]:
        status, body, _ = berth.raw("secretsmanager", "secretsmanager", operation, payload)
        assert status == 200, body
        check_output(SM_MODEL, operation, body)


def test_parameters(berth):
    ssm = berth.client("ssm")
    assert ssm.put_parameter(Name="/app/db/host", Value="db1", Type="String")["Version"] == 1
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name="/app/db/host", Value="db2", Type="String")
    assert e.value.response["Error"]["Code"] == "ParameterAlreadyExists"
    assert ssm.put_parameter(Name="/app/db/host", Value="db2", Type="String", Overwrite=True)["Version"] == 2
    ssm.put_parameter(Name="/app/db/password", Value=SECURE_PARAM, Type="SecureString")
    ssm.put_parameter(Name="/app/hosts", Value="a,b,c", Type="StringList")
    ssm.put_parameter(Name="/other/x", Value="x", Type="String")

    assert ssm.get_parameter(Name="/app/db/host")["Parameter"]["Value"] == "db2"
    assert ssm.get_parameter(Name="/app/db/host:1")["Parameter"]["Value"] == "db1"
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name="/app/nope")
    assert e.value.response["Error"]["Code"] == "ParameterNotFound"

    # SecureString: opaque without decryption, plaintext with it (CLI and boto3).
    _, hidden, _ = berth.aws("ssm", "get-parameter", "--name", "/app/db/password")
    assert hidden["Parameter"]["Type"] == "SecureString"
    assert hidden["Parameter"]["Value"] != SECURE_PARAM and SECURE_PARAM not in hidden["Parameter"]["Value"]
    _, shown, _ = berth.aws("ssm", "get-parameter", "--name", "/app/db/password", "--with-decryption")
    assert shown["Parameter"]["Value"] == SECURE_PARAM
    got = ssm.get_parameters(Names=["/app/db/password", "/app/missing"], WithDecryption=True)
    assert [p["Value"] for p in got["Parameters"]] == [SECURE_PARAM]
    assert got["InvalidParameters"] == ["/app/missing"]

    one_level = ssm.get_parameters_by_path(Path="/app")["Parameters"]
    assert [p["Name"] for p in one_level] == ["/app/hosts"]
    recursive = [p for page in ssm.get_paginator("get_parameters_by_path").paginate(
        Path="/app", Recursive=True, WithDecryption=True, PaginationConfig={"PageSize": 1})
        for p in page["Parameters"]]
    assert {p["Name"]: p["Value"] for p in recursive} == {
        "/app/db/host": "db2", "/app/db/password": SECURE_PARAM, "/app/hosts": "a,b,c"}
    _, cli_path, _ = berth.aws("ssm", "get-parameters-by-path", "--path", "/app", "--recursive")
    assert len(cli_path["Parameters"]) == 3

    described = ssm.describe_parameters()["Parameters"]
    assert {p["Name"] for p in described} == {"/app/db/host", "/app/db/password", "/app/hosts", "/other/x"}

    for operation, payload in [
        ("GetParameter", {"Name": "/app/db/password"}),
        ("GetParametersByPath", {"Path": "/", "Recursive": True}),
        ("DescribeParameters", {}),
    ]:
        status, body, _ = berth.raw("ssm", "AmazonSSM", operation, payload)
        assert status == 200, body
        check_output(SSM_MODEL, operation, body)

    ssm.delete_parameter(Name="/other/x")
    with pytest.raises(ClientError) as e:
        ssm.delete_parameter(Name="/other/x")
    assert e.value.response["Error"]["Code"] == "ParameterNotFound"
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name="awsbad", Value="v", Type="String")
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_store_holds_no_plaintext(berth):
    berth.aws(SM, "create-secret", "--name", "grep-me", "--secret-string", PLAINTEXT)
    berth.aws(SM, "put-secret-value", "--secret-id", "grep-me", "--secret-string", PLAINTEXT + "-v2")
    berth.client("ssm").put_parameter(Name="/grep/me", Value=SECURE_PARAM, Type="SecureString")
    _, got, _ = berth.aws(SM, "get-secret-value", "--secret-id", "grep-me")
    assert got["SecretString"] == PLAINTEXT + "-v2"

    files = [p for p in berth.data_dir.iterdir() if p.name.startswith("store.db")]
    assert files, list(berth.data_dir.iterdir())
    data = b"".join(p.read_bytes() for p in files)
    assert b"grep-me" in data  # the records are there ...
    assert PLAINTEXT.encode() not in data  # ... but not the values
    assert SECURE_PARAM.encode() not in data

    key = berth.data_dir / "secrets" / "master.key"
    assert key.stat().st_size == 32
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert PLAINTEXT not in berth.logs()


def test_master_key_from_environment(tmp_path):
    env = {"BERTH_MASTER_KEY": "ab" * 32, "BERTH_ROOT_ACCESS_KEY_ID": ACCESS_KEY,
           "BERTH_ROOT_SECRET_ACCESS_KEY": SECRET_KEY}
    server = Berth(tmp_path / "data", env=env).start()
    try:
        server.aws(SM, "create-secret", "--name", "env-key", "--secret-string", "v")
        assert not (server.data_dir / "secrets" / "master.key").exists()
    finally:
        server.stop()
    # The same data with the same key still opens.
    server = Berth(tmp_path / "data", port=server.port, env=env).start()
    try:
        _, got, _ = server.aws(SM, "get-secret-value", "--secret-id", "env-key")
        assert got["SecretString"] == "v"
    finally:
        server.stop()


def _code(err):
    """The exception name the aws CLI printed: 'An error occurred (X) when ...'."""
    return err.split("An error occurred (", 1)[1].split(")", 1)[0] if "An error occurred (" in err else err


def test_ssm_labels_selectors_history_and_tags_cli(berth):
    for value in ("v1", "v2", "v3"):
        berth.aws("ssm", "put-parameter", "--name", "/lab/p", "--value", value, "--type", "String",
                  "--overwrite")
    _, out, _ = berth.aws("ssm", "label-parameter-version", "--name", "/lab/p", "--labels", "prod", "Beta",
                          "1st", "awsy", "SSMz")
    assert out["ParameterVersion"] == 3
    assert out["InvalidLabels"] == ["1st", "awsy", "SSMz"]
    _, out, _ = berth.aws("ssm", "label-parameter-version", "--name", "/lab/p", "--parameter-version", "1",
                          "--labels", "prod")
    assert out == {"InvalidLabels": [], "ParameterVersion": 1}
    _, got, _ = berth.aws("ssm", "get-parameter", "--name", "/lab/p:prod")
    assert got["Parameter"]["Value"] == "v1" and got["Parameter"]["Selector"] == ":prod"
    _, got, _ = berth.aws("ssm", "get-parameter", "--name", "/lab/p:Beta")
    assert got["Parameter"]["Value"] == "v3" and got["Parameter"]["Version"] == 3
    _, got, _ = berth.aws("ssm", "get-parameters", "--names", "/lab/p:prod", "/lab/p:2", "/lab/p:nope")
    assert [p["Value"] for p in got["Parameters"]] == ["v1", "v2"]
    assert got["InvalidParameters"] == ["/lab/p:nope"]
    rc, _, err = berth.aws("ssm", "get-parameter", "--name", "/lab/p:nope", check=False)
    assert rc != 0 and _code(err) == "ParameterVersionNotFound"

    # History through the CLI's paginator, one version a page.
    _, hist, _ = berth.aws("ssm", "get-parameter-history", "--name", "/lab/p", "--page-size", "1")
    assert [(p["Version"], p["Value"], p["Labels"]) for p in hist["Parameters"]] == [
        (1, "v1", ["prod"]), (2, "v2", []), (3, "v3", ["Beta"])]
    status, body, _ = berth.raw("ssm", "AmazonSSM", "GetParameterHistory", {"Name": "/lab/p", "MaxResults": 2})
    assert status == 200 and len(body["Parameters"]) == 2 and "NextToken" in body
    check_output(SSM_MODEL, "GetParameterHistory", body)

    berth.aws("ssm", "put-parameter", "--name", "/lab/secure", "--value", SECURE_PARAM, "--type", "SecureString")
    _, hist, _ = berth.aws("ssm", "get-parameter-history", "--name", "/lab/secure")
    assert SECURE_PARAM not in str(hist)
    _, hist, _ = berth.aws("ssm", "get-parameter-history", "--name", "/lab/secure", "--with-decryption")
    assert hist["Parameters"][0]["Value"] == SECURE_PARAM

    _, out, _ = berth.aws("ssm", "unlabel-parameter-version", "--name", "/lab/p", "--parameter-version", "3",
                          "--labels", "Beta", "prod")
    assert out == {"RemovedLabels": ["Beta"], "InvalidLabels": ["prod"]}

    # Tags: PutParameter, then Add/List/Remove.
    berth.aws("ssm", "put-parameter", "--name", "/lab/tagged", "--value", "t", "--type", "String",
              "--tags", "Key=team,Value=a")
    berth.aws("ssm", "add-tags-to-resource", "--resource-type", "Parameter", "--resource-id", "/lab/tagged",
              "--tags", "Key=env,Value=prod", "Key=team,Value=b")
    _, tags, _ = berth.aws("ssm", "list-tags-for-resource", "--resource-type", "Parameter",
                           "--resource-id", "/lab/tagged")
    assert tags["TagList"] == [{"Key": "team", "Value": "b"}, {"Key": "env", "Value": "prod"}]
    berth.aws("ssm", "remove-tags-from-resource", "--resource-type", "Parameter", "--resource-id",
              "/lab/tagged", "--tag-keys", "team")
    status, body, _ = berth.raw("ssm", "AmazonSSM", "ListTagsForResource",
                                {"ResourceType": "Parameter", "ResourceId": "/lab/tagged"})
    assert status == 200 and body == {"TagList": [{"Key": "env", "Value": "prod"}]}
    check_output(SSM_MODEL, "ListTagsForResource", body)
    status, body, _ = berth.raw("ssm", "AmazonSSM", "LabelParameterVersion", {"Name": "/lab/p", "Labels": ["x"]})
    assert status == 200
    check_output(SSM_MODEL, "LabelParameterVersion", body)


def _ssm_state(berth):
    ssm = berth.client("ssm")
    names = sorted(p["Name"] for page in ssm.get_paginator("describe_parameters").paginate()
                   for p in page["Parameters"])
    state = {}
    for name in names:
        hist = ssm.get_parameter_history(Name=name, WithDecryption=True)["Parameters"]
        tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
        state[name] = ([(h["Version"], h["Value"], h["Labels"]) for h in hist], tags)
    return state


def test_ssm_bad_requests_change_nothing(berth):
    ssm = berth.client("ssm")
    ssm.put_parameter(Name="/bad/p", Value="one", Type="String", Tags=[{"Key": "k", "Value": "v"}])
    ssm.put_parameter(Name="/bad/p", Value="two", Type="String", Overwrite=True)
    ssm.label_parameter_version(Name="/bad/p", ParameterVersion=1, Labels=[f"l{i}" for i in range(10)])
    before = _ssm_state(berth)
    cases = [
        # (CLI args, AWS exception)
        (["put-parameter", "--name", "/bad/p", "--value", "x", "--type", "String"], "ParameterAlreadyExists"),
        (["put-parameter", "--name", "/bad/p", "--value", "x", "--overwrite", "--tags", "Key=a,Value=b"],
         "ValidationException"),
        (["put-parameter", "--name", "/bad/big", "--value", "x" * 4097, "--type", "String"], "ValidationException"),
        (["put-parameter", "--name", "/bad/big", "--value", "x" * 8193, "--type", "String", "--tier", "Advanced"],
         "ValidationException"),
        (["put-parameter", "--name", "/bad/has space", "--value", "x", "--type", "String"], "ValidationException"),
        # Parameter Store refuses the reserved /aws/ path as an access matter.
        (["put-parameter", "--name", "/aws/reserved", "--value", "x", "--type", "String"], "AccessDeniedException"),
        (["put-parameter", "--name", "SSM-reserved", "--value", "x", "--type", "String"], "ValidationException"),
        (["put-parameter", "--name", "no/leading/slash", "--value", "x", "--type", "String"], "ValidationException"),
        (["put-parameter", "--name", "/" + "/".join("abcdefghijklmnop"), "--value", "x", "--type", "String"],
         "HierarchyLevelLimitExceededException"),
        (["label-parameter-version", "--name", "/bad/p", "--parameter-version", "1", "--labels", "eleventh"],
         "ParameterVersionLabelLimitExceeded"),
        (["label-parameter-version", "--name", "/bad/p", "--parameter-version", "7", "--labels", "x"],
         "ParameterVersionNotFound"),
        (["label-parameter-version", "--name", "/bad/none", "--labels", "x"], "ParameterNotFound"),
        (["label-parameter-version", "--name", "/bad/p", "--labels", "x" * 101], "ValidationException"),
        (["get-parameter-history", "--name", "/bad/none"], "ParameterNotFound"),
        (["get-parameter", "--name", "/bad/none"], "ParameterNotFound"),
        (["add-tags-to-resource", "--resource-type", "Parameter", "--resource-id", "/bad/none",
          "--tags", "Key=a,Value=b"], "InvalidResourceId"),
        (["list-tags-for-resource", "--resource-type", "Parameter", "--resource-id", "/bad/none"],
         "InvalidResourceId"),
        (["add-tags-to-resource", "--resource-type", "Document", "--resource-id", "/bad/p",
          "--tags", "Key=a,Value=b"], "InvalidResourceType"),
        (["add-tags-to-resource", "--resource-type", "Parameter", "--resource-id", "/bad/p", "--tags",
          *[f"Key=t{i},Value=v" for i in range(50)]], "TooManyTagsError"),
    ]
    for args, code in cases:
        rc, _, err = berth.aws("ssm", *args, check=False)
        assert rc != 0 and _code(err) == code, (args[:3], err)
    with pytest.raises(ClientError) as e:
        ssm.get_parameter_history(Name="/bad/p", MaxResults=51)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert _ssm_state(berth) == before


def test_secret_versions_stages_and_batch_get(berth):
    _, created, _ = berth.aws(SM, "create-secret", "--name", "rot/db", "--secret-string", "first")
    v1 = created["VersionId"]
    _, pending, _ = berth.aws(SM, "put-secret-value", "--secret-id", "rot/db", "--secret-string", "second",
                              "--version-stages", "AWSPENDING")
    v2 = pending["VersionId"]
    assert pending["VersionStages"] == ["AWSPENDING"]
    # ClientRequestToken makes PutSecretValue idempotent.
    token = "11111111-2222-3333-4444-555555555555"
    for _ in range(2):
        _, again, _ = berth.aws(SM, "put-secret-value", "--secret-id", "rot/db", "--secret-string", "third",
                                "--client-request-token", token, "--version-stages", "TEST")
        assert again["VersionId"] == token
    rc, _, err = berth.aws(SM, "put-secret-value", "--secret-id", "rot/db", "--secret-string", "changed",
                           "--client-request-token", token, check=False)
    assert rc != 0 and _code(err) == "ResourceExistsException"

    rc, _, err = berth.aws(SM, "update-secret-version-stage", "--secret-id", "rot/db", "--version-stage",
                           "AWSCURRENT", "--move-to-version-id", v2, check=False)
    assert rc != 0 and _code(err) == "InvalidParameterException"
    assert f"Staging label AWSCURRENT is currently attached to version {v1}" in err
    _, moved, _ = berth.aws(SM, "update-secret-version-stage", "--secret-id", "rot/db", "--version-stage",
                            "AWSCURRENT", "--move-to-version-id", v2, "--remove-from-version-id", v1)
    assert moved["Name"] == "rot/db" and moved["ARN"] == created["ARN"]
    _, d, _ = berth.aws(SM, "describe-secret", "--secret-id", "rot/db")
    assert sorted(d["VersionIdsToStages"][v2]) == ["AWSCURRENT", "AWSPENDING"]
    assert d["VersionIdsToStages"][v1] == ["AWSPREVIOUS"]
    _, cur, _ = berth.aws(SM, "get-secret-value", "--secret-id", "rot/db")
    assert cur["SecretString"] == "second"
    berth.aws(SM, "update-secret-version-stage", "--secret-id", "rot/db", "--version-stage", "TEST",
              "--remove-from-version-id", token)

    _, listed, _ = berth.aws(SM, "list-secret-version-ids", "--secret-id", "rot/db")
    assert {v["VersionId"] for v in listed["Versions"]} == {v1, v2}
    assert listed["Name"] == "rot/db" and listed["ARN"] == created["ARN"]
    seen, next_args = [], []
    while True:
        _, page, _ = berth.aws(SM, "list-secret-version-ids", "--secret-id", "rot/db", "--include-deprecated",
                               "--max-results", "1", *next_args)
        assert len(page["Versions"]) == 1
        seen += page["Versions"]
        if "NextToken" not in page:
            break
        next_args = ["--next-token", page["NextToken"]]
    assert sorted(v["VersionId"] for v in seen) == sorted([v1, v2, token])
    assert [v["VersionStages"] for v in seen if v["VersionId"] == token] == [[]]
    status, body, _ = berth.raw(SM, SM, "ListSecretVersionIds",
                                {"SecretId": "rot/db", "IncludeDeprecated": True, "MaxResults": 2})
    assert status == 200 and len(body["Versions"]) == 2 and body["NextToken"]
    check_output(SM_MODEL, "ListSecretVersionIds", body)

    # BatchGetSecretValue by id list (CLI) and by filters, paged (boto3).
    berth.aws(SM, "create-secret", "--name", "rot/other", "--secret-string", "other-value")
    _, batch, _ = berth.aws(SM, "batch-get-secret-value", "--secret-id-list", "rot/db", "rot/other", "rot/missing")
    assert [(v["Name"], v["SecretString"]) for v in batch["SecretValues"]] == [
        ("rot/db", "second"), ("rot/other", "other-value")]
    assert batch["Errors"] == [{"SecretId": "rot/missing", "ErrorCode": "ResourceNotFoundException",
                                "Message": "Secrets Manager can't find the specified secret."}]
    sm = berth.client(SM)
    pages, kwargs = [], {}
    while True:
        page = sm.batch_get_secret_value(Filters=[{"Key": "name", "Values": ["rot/"]}], MaxResults=1, **kwargs)
        pages.append(page)
        if not page.get("NextToken"):
            break
        kwargs = {"NextToken": page["NextToken"]}
    assert len(pages) == 2 and all(p["Errors"] == [] for p in pages)
    assert sorted(v["Name"] for p in pages for v in p["SecretValues"]) == ["rot/db", "rot/other"]
    status, body, _ = berth.raw(SM, SM, "BatchGetSecretValue", {"SecretIdList": ["rot/db", "nope"]})
    assert status == 200
    check_output(SM_MODEL, "BatchGetSecretValue", body)
    for kwargs in ({}, {"SecretIdList": ["rot/db"], "Filters": [{"Key": "name", "Values": ["rot"]}]},
                   {"SecretIdList": ["rot/db"], "MaxResults": 2}):
        with pytest.raises(ClientError) as e:
            sm.batch_get_secret_value(**kwargs)
        assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        sm.batch_get_secret_value(SecretIdList=[f"s{i}" for i in range(21)])
    assert e.value.response["Error"]["Code"] == "ValidationException"


def _sm_state(berth):
    sm = berth.client(SM)
    state = {}
    for page in sm.get_paginator("list_secrets").paginate(IncludePlannedDeletion=True):
        for s in page["SecretList"]:
            versions = sm.list_secret_version_ids(SecretId=s["ARN"], IncludeDeprecated=True)["Versions"]
            values = {v["VersionId"]: (sorted(v["VersionStages"]),
                                       sm.get_secret_value(SecretId=s["ARN"], VersionId=v["VersionId"])["SecretString"])
                      for v in versions}
            state[s["Name"]] = (s.get("Description"), s.get("Tags"), values)
    return state


def test_secrets_manager_bad_requests_change_nothing(berth):
    sm = berth.client(SM)
    sm.create_secret(Name="stay", SecretString="stay-value", Description="d")
    v2 = sm.put_secret_value(SecretId="stay", SecretString="pending", VersionStages=["AWSPENDING"])["VersionId"]
    before = _sm_state(berth)
    big = "y" * 65537
    cases = [
        (["create-secret", "--name", "has space", "--secret-string", "v"], "InvalidParameterException"),
        (["create-secret", "--name", "n" * 513, "--secret-string", "v"], "ValidationException"),
        (["create-secret", "--name", "stay", "--secret-string", "v"], "ResourceExistsException"),
        (["create-secret", "--name", "big", "--secret-string", big], "ValidationException"),
        (["put-secret-value", "--secret-id", "stay", "--secret-string", big], "ValidationException"),
        (["put-secret-value", "--secret-id", "missing", "--secret-string", "v"], "ResourceNotFoundException"),
        (["get-secret-value", "--secret-id", "missing"], "ResourceNotFoundException"),
        (["describe-secret", "--secret-id", "missing"], "ResourceNotFoundException"),
        (["list-secret-version-ids", "--secret-id", "missing"], "ResourceNotFoundException"),
        (["update-secret-version-stage", "--secret-id", "missing", "--version-stage", "AWSCURRENT",
          "--move-to-version-id", v2], "ResourceNotFoundException"),
        (["update-secret-version-stage", "--secret-id", "stay", "--version-stage", "AWSCURRENT",
          "--move-to-version-id", v2], "InvalidParameterException"),
        (["update-secret-version-stage", "--secret-id", "stay", "--version-stage", "AWSCURRENT",
          "--remove-from-version-id", v2, "--move-to-version-id", v2], "InvalidParameterException"),
        (["update-secret-version-stage", "--secret-id", "stay", "--version-stage", "AWSPENDING",
          "--move-to-version-id", "f" * 32, "--remove-from-version-id", v2], "InvalidParameterException"),
        (["delete-secret", "--secret-id", "stay", "--recovery-window-in-days", "3"], "InvalidParameterException"),
    ]
    for args, code in cases:
        rc, _, err = berth.aws(SM, *args, check=False)
        assert rc != 0 and _code(err) == code, (args[:3], err[:300])
        assert "y" * 64 not in err and "stay-value" not in err
    # A secret scheduled for deletion refuses changes to its stages.
    sm.create_secret(Name="doomed", SecretString="d1")
    doomed_v2 = sm.put_secret_value(SecretId="doomed", SecretString="d2", VersionStages=["X"])["VersionId"]
    sm.delete_secret(SecretId="doomed", RecoveryWindowInDays=7)
    with pytest.raises(ClientError) as e:
        sm.update_secret_version_stage(SecretId="doomed", VersionStage="Y", MoveToVersionId=doomed_v2)
    assert e.value.response["Error"]["Code"] == "InvalidRequestException"
    sm.restore_secret(SecretId="doomed")
    after = _sm_state(berth)
    assert after.pop("doomed")[2][doomed_v2] == (["X"], "d2")
    assert after == before
    assert "stay-value" not in berth.logs() and big not in berth.logs()


def _wait_task(ecs, arn, statuses, timeout=60):
    import time
    deadline = time.time() + timeout
    while True:
        task = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        if task["lastStatus"] in statuses or time.time() > deadline:
            return task
        time.sleep(0.2)


def test_task_secrets_are_injected_and_never_stored(berth_agent):
    """secrets[] from Secrets Manager (whole and a JSON key) and an SSM
    SecureString reach the container's environment; nothing else holds them."""
    import json as _json
    import subprocess
    sm = berth_agent.client("secretsmanager")
    ssm = berth_agent.client("ssm")
    whole = sm.create_secret(Name="app/token", SecretString="tok-4b1d-plain")["ARN"]
    creds = sm.create_secret(Name="app/db", SecretString=_json.dumps(
        {"username": "admin", "password": "pw-9f3e-plain"}))["ARN"]
    ssm.put_parameter(Name="/app/api-key", Value="key-77aa-plain", Type="SecureString")
    ecs = berth_agent.client("ecs")
    # As on ECS, the execution role must allow reading the secrets.
    execution_role = create_task_role(berth_agent, "ecsTaskExecutionRole",
                                      ["secretsmanager:GetSecretValue", "ssm:GetParameters"])
    ecs.register_task_definition(family="with-secrets", executionRoleArn=execution_role, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 16,
        "command": ["sh", "-c", "echo TOKEN=$TOKEN DB=$DB_PASSWORD KEY=$API_KEY; sleep 600"],
        "secrets": [
            {"name": "TOKEN", "valueFrom": whole},
            {"name": "DB_PASSWORD", "valueFrom": f"{creds}:password::"},
            {"name": "API_KEY", "valueFrom": "/app/api-key"},
        ]}])
    arn = ecs.run_task(taskDefinition="with-secrets")["tasks"][0]["taskArn"]
    task = _wait_task(ecs, arn, ("RUNNING", "STOPPED"))
    assert task["lastStatus"] == "RUNNING", task.get("stoppedReason")
    container = task["containers"][0]["runtimeId"]
    import time
    deadline = time.time() + 10
    logs = ""
    while "TOKEN=" not in logs and time.time() < deadline:
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
        time.sleep(0.2)
    assert "TOKEN=tok-4b1d-plain DB=pw-9f3e-plain KEY=key-77aa-plain" in logs
    # The task as ECS shows it holds references, not values.
    described = _json.dumps(ecs.describe_tasks(tasks=[arn]), default=str)
    for value in ("tok-4b1d-plain", "pw-9f3e-plain", "key-77aa-plain"):
        assert value not in described
    ecs.stop_task(task=arn)
    # Neither the store nor the agent's state holds them.
    for path in berth_agent.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in (b"tok-4b1d-plain", b"pw-9f3e-plain", b"key-77aa-plain"):
                assert value not in data, path

    # A missing secret stops the task before any container exists.
    ecs.register_task_definition(family="missing-secret", executionRoleArn=execution_role, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 16, "command": ["sleep", "600"],
        "secrets": [{"name": "NOPE", "valueFrom":
                     f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:does-not-exist-AbCdEf"}]}])
    arn = ecs.run_task(taskDefinition="missing-secret")["tasks"][0]["taskArn"]
    task = _wait_task(ecs, arn, ("STOPPED",))
    assert task["lastStatus"] == "STOPPED"
    assert task["stopCode"] == "TaskFailedToStart"
    assert task["stoppedReason"].startswith("ResourceInitializationError: unable to pull secrets or registry auth")
    assert "runtimeId" not in task["containers"][0]
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.task-arn={arn}"],
                         capture_output=True, text=True).stdout.split()
    assert ids == []

    # So does a JSON key the secret does not have; the reason names no value.
    ecs.register_task_definition(family="bad-json-key", executionRoleArn=execution_role, containerDefinitions=[{
        "name": "app", "image": "berth-test/busybox:latest", "memory": 16, "command": ["sleep", "600"],
        "secrets": [{"name": "NOPE", "valueFrom": f"{creds}:no-such-key::"}]}])
    arn = ecs.run_task(taskDefinition="bad-json-key")["tasks"][0]["taskArn"]
    task = _wait_task(ecs, arn, ("STOPPED",))
    assert task["lastStatus"] == "STOPPED" and task["stopCode"] == "TaskFailedToStart"
    assert task["stoppedReason"].startswith("ResourceInitializationError: unable to pull secrets or registry auth")
    assert "pw-9f3e-plain" not in task["stoppedReason"] and "admin" not in task["stoppedReason"]
    assert "runtimeId" not in task["containers"][0]
