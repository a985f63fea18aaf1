"""Infrastructure as code: cfn-lint on every template, parliament on every policy document, and the
template, bootstrap, the Lambda role and the member-account role agreeing with each other."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode
from parliament import analyze_policy_string

from app import IAM_EVENT_PATTERN
from chalicelib.bootstrap import TABLE_ATTRIBUTES, TABLE_KEY_SCHEMA, TTL_ATTRIBUTE
from chalicelib.constants import DEFAULT_QUARANTINE_POLICY_NAME, QUARANTINE_POLICY_DOCUMENT, SWEEP_WORKER_CONCURRENCY
from chalicelib.settings import Settings
from tests.helpers import REPO

CFN_LINT = Path(sys.executable).parent / "cfn-lint"
RESOURCES = REPO / "infra" / "resources.yaml"
MEMBER = REPO / "infra" / "member-account.yaml"
CONFIG = json.loads((REPO / ".chalice" / "config.json").read_text())
ROLE_POLICIES = sorted((REPO / ".chalice").glob("policy-*.json"))
SAMPLE = {
    "AWS::Partition": "aws",
    "AWS::AccountId": "111122223333",
    "AWS::Region": "us-east-1",
    "Stage": "prod",
    "SecurityAccountId": "999988887777",
}


def template(path: Path) -> dict[str, Any]:
    loaded, problems = decode(str(path))
    assert not problems, problems
    return json.loads(json.dumps(loaded))


def lint(path: Path, *ignore: str) -> subprocess.CompletedProcess[str]:
    argv = [str(CFN_LINT), str(path)] + ([f"--ignore-checks={','.join(ignore)}"] if ignore else [])
    return subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - our venv's tool


def resolve(value: Any, refs: dict[str, Any]) -> Any:
    """Replace Ref / Fn::Sub with sample values so that parliament reads plain policies."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return refs.get(value["Ref"], SAMPLE.get(value["Ref"], value["Ref"]))
        if set(value) == {"Fn::GetAtt"}:
            return refs.get(".".join(value["Fn::GetAtt"]), value)
        if set(value) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(SAMPLE.get(m.group(1), m.group(1))), value["Fn::Sub"])
        return {k: resolve(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    return value


def template_policies(path: Path) -> dict[str, dict[str, Any]]:
    """Every IAM policy document a template declares, resolved."""
    resources = template(path)["Resources"]
    refs = {
        "QuarantinePolicy": f"arn:aws:iam::111122223333:policy/{DEFAULT_QUARANTINE_POLICY_NAME}",
        "GuardrailRoleArns": ["arn:aws:iam::999988887777:role/iam-user-guardrail-prod-on_iam_event"],
        "ExternalId": "example-external-id",
        "ForwardIamEventsRule.Arn": "arn:aws:events:us-east-1:111122223333:rule/iam-user-guardrail-forward",
    }
    found = {}
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            found[name] = resolve(props["PolicyDocument"], refs)
        for policy in props.get("Policies", []):
            found[f"{name}/{policy['PolicyName']}"] = resolve(policy["PolicyDocument"], refs)
    return found


# -- cfn-lint ----------------------------------------------------------------------------------


def test_member_account_template_lints_clean() -> None:
    done = lint(MEMBER)
    assert done.returncode == 0, done.stdout + done.stderr


def test_resources_fragment_lints_clean_but_for_references_to_chalices_resources(tmp_path: Path) -> None:
    # E1020/E6101/E1019: Ref/GetAtt/Sub of OnIamEvent, Sweep, OnIamEventRole, which `chalice package`
    # adds (the merged package below is linted with every check).
    # SweepWorker is an overlay of Chalice's function (FunctionResponseTypes): alone it is not a
    # whole resource, so it is linted where it belongs, in the merged package below.
    text = RESOURCES.read_text()
    start, end = text.index("  # Merged into the function"), text.index("  OnIamEventInvokeConfig:")
    fragment = tmp_path / "resources.yaml"
    fragment.write_text(text[:start] + text[end:])
    assert "SweepWorker:" not in fragment.read_text().split("Resources:")[1].split("SweepWorkerErrorsAlarm")[0]
    done = lint(fragment, "E1020", "E6101", "E1019")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "prod"
    chalice = Path(sys.executable).parent / "chalice"
    done = subprocess.run(  # noqa: S603 - our venv's chalice
        [str(chalice), "package", "--stage", "prod", "--merge-template", str(RESOURCES), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "sam.yaml"


def test_the_lambda_package_holds_no_development_tooling(packaged: Path) -> None:
    """deployment.zip: the app and chalicelib/ with their requirements, no demo, dev servers,
    synthetic data, benchmarks or tests (issue 11: a lean package)."""
    with zipfile.ZipFile(packaged.parent / "deployment.zip") as archive:
        names = archive.namelist()
    ours = sorted(n for n in names if n == "app.py" or n.startswith("chalicelib/"))
    assert "app.py" in ours and "chalicelib/guardrail.py" in ours
    assert not [n for n in names if n.split("/")[0] in ("devtools", "benchmarks", "tests", "docs", "infra")]
    assert not [n for n in ours if n.rsplit("/", 1)[-1] in ("demo.py", "devserver.py", "synth.py")]
    assert not [n for n in names if n.startswith(("moto/", "hypothesis/", "pytest/", "chalice/cli/"))]


def test_merged_package_lints_clean_warnings_included(packaged: Path) -> None:
    done = lint(packaged)
    assert done.returncode == 0, done.stdout + done.stderr


def test_merged_package_wires_the_failure_path(packaged: Path) -> None:
    resources = template(packaged)["Resources"]
    invoke = resources["OnIamEventInvokeConfig"]["Properties"]
    assert invoke["FunctionName"] == {"Ref": "OnIamEvent"}
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert resources["OnIamEvent"]["Type"] == "AWS::Serverless::Function"
    pattern = resources["OnIamEvent"]["Properties"]["Events"]["OnIamEventEvent"]["Properties"]["Pattern"]
    assert pattern == json.loads(json.dumps(IAM_EVENT_PATTERN))
    for role in ("OnIamEventRole", "SweepRole", "SweepWorkerRole", "FlushAlertsRole", "ApiHandlerRole"):
        [policy] = resources[role]["Properties"]["Policies"]
        assert policy["PolicyDocument"] == json.loads((REPO / ".chalice" / "policy-prod.json").read_text())


def test_merged_package_fans_the_sweep_out_through_sqs(packaged: Path) -> None:
    resources = template(packaged)["Resources"]
    queue, dlq = resources["SweepQueue"]["Properties"], resources["SweepDeadLetterQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["SweepDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 3,
    }
    assert dlq["MessageRetentionPeriod"] == 1209600
    worker = resources["SweepWorker"]
    assert worker["Type"] == "AWS::Serverless::Function" and worker["Properties"]["Handler"] == "app.sweep_worker"
    assert queue["VisibilityTimeout"] >= 6 * worker["Properties"]["Timeout"]
    assert (
        worker["Properties"]["Timeout"]
        == CONFIG["stages"]["prod"]["lambda_functions"]["sweep_worker"]["lambda_timeout"]
    )
    [source] = worker["Properties"]["Events"].values()
    assert source["Type"] == "SQS"
    props = source["Properties"]
    assert 1 <= props["BatchSize"] <= 5 and props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"] == {"MaximumConcurrency": SWEEP_WORKER_CONCURRENCY}  # the bench's projection
    # Chalice's Fn::Sub names the stage's queue through the Stage parameter
    arn = props["Queue"]["Fn::Sub"]
    assert arn.endswith(":" + queue["QueueName"]["Fn::Sub"]) and worker["DependsOn"] == ["SweepQueue"]
    assert resources["SweepWorkerErrorsAlarm"]["Properties"]["Dimensions"][0]["Value"] == {"Ref": "SweepWorker"}
    depth = resources["SweepDeadLetterQueueDepthAlarm"]["Properties"]
    assert depth["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["SweepDeadLetterQueue", "QueueName"]}
    assert depth["MetricName"] == "ApproximateNumberOfMessagesVisible"
    env = worker["Properties"]["Environment"]["Variables"]
    assert env["GUARDRAIL_SWEEP_QUEUE"] == "iam-user-guardrail-prod-sweep"
    assert "Rate(1 minute)" in json.dumps(resources["FlushAlerts"]) or "rate(1 minute)" in json.dumps(
        resources["FlushAlerts"]
    )


# -- parliament ----------------------------------------------------------------------------------


def findings(document: dict[str, Any]) -> list[str]:
    policy = analyze_policy_string(json.dumps(document))
    return [f"{f.issue}: {f.detail} {f.location}" for f in policy.findings]


def test_parliament_does_find_problems() -> None:
    """So that 'no findings' below means something."""
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]}
    assert findings(bad)


POLICY_DOCUMENTS = {
    **{p.name: json.loads(p.read_text()) for p in ROLE_POLICIES},
    "constants.QUARANTINE_POLICY_DOCUMENT": QUARANTINE_POLICY_DOCUMENT,
    **{f"resources.yaml:{k}": v for k, v in template_policies(RESOURCES).items()},
    **{f"member-account.yaml:{k}": v for k, v in template_policies(MEMBER).items()},
}


@pytest.mark.parametrize("name", sorted(POLICY_DOCUMENTS))
def test_every_policy_document_passes_parliament(name: str) -> None:
    assert findings(POLICY_DOCUMENTS[name]) == []


# -- the same resources and permissions everywhere -------------------------------------------------


def test_bootstrap_and_template_create_the_same_table_and_policy() -> None:
    resources = template(RESOURCES)["Resources"]
    table = resources["GuardrailTable"]["Properties"]
    assert table["KeySchema"] == TABLE_KEY_SCHEMA
    assert table["AttributeDefinitions"] == TABLE_ATTRIBUTES
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True
    for path in (RESOURCES, MEMBER):
        policy = template(path)["Resources"]["QuarantinePolicy"]["Properties"]
        assert policy["ManagedPolicyName"] == DEFAULT_QUARANTINE_POLICY_NAME
        assert policy["PolicyDocument"] == QUARANTINE_POLICY_DOCUMENT


@pytest.mark.parametrize("stage", sorted(CONFIG["stages"]))
def test_template_names_match_each_stages_settings(stage: str) -> None:
    env = CONFIG["stages"][stage]["environment_variables"]
    resources = template(RESOURCES)["Resources"]
    sample = {**SAMPLE, "Stage": stage}
    name = resolve(resources["GuardrailTable"]["Properties"]["TableName"], {})
    assert re.sub("prod", stage, name) == env["GUARDRAIL_TABLE"]
    secret = resources["SlackSecret"]["Properties"]["Name"]["Fn::Sub"].replace("${Stage}", sample["Stage"])
    assert secret == env["GUARDRAIL_SLACK_SECRET_ID"]
    queue = resources["DeadLetterQueue"]["Properties"]["QueueName"]["Fn::Sub"].replace("${Stage}", stage)
    role_policy = json.loads((REPO / ".chalice" / CONFIG["stages"][stage]["iam_policy_file"]).read_text())
    assert any(
        s["Resource"].endswith(f":{queue}") for s in role_policy["Statement"] if s["Action"] == "sqs:SendMessage"
    )
    sweep_queue = resources["SweepQueue"]["Properties"]["QueueName"]["Fn::Sub"].replace("${Stage}", stage)
    assert env["GUARDRAIL_SWEEP_QUEUE"] == sweep_queue
    [statement] = [s for s in role_policy["Statement"] if s["Sid"] == "SweepQueue"]
    assert statement["Resource"].endswith(f":{sweep_queue}")
    assert env["GUARDRAIL_QUARANTINE_POLICY_NAME"] == DEFAULT_QUARANTINE_POLICY_NAME


def iam_statements(document: dict[str, Any]) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Sid -> (IAM actions, condition keys): what must match between the two roles."""
    result = {}
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if statement["Effect"] == "Allow" and all(a.startswith("iam:") for a in actions):
            keys = {k for block in statement.get("Condition", {}).values() for k in block}
            result[statement["Sid"]] = (frozenset(actions), frozenset(keys))
    return result


def test_member_remediation_role_has_the_lambda_roles_iam_permissions_and_no_more() -> None:
    member = template_policies(MEMBER)["GuardrailRemediationRole/iam-user-guardrail-remediation"]
    lambda_role = json.loads((REPO / ".chalice" / "policy-prod.json").read_text())
    # plus the silence checks, made only in member accounts with this role's credentials
    heartbeat = {"HeartbeatTagOnTheQuarantinePolicy": (frozenset({"iam:TagPolicy"}), frozenset({"aws:TagKeys"}))}
    assert iam_statements(member) == {**iam_statements(lambda_role), **heartbeat}
    silence = {"CheckForwardingRule", "CheckTrailsWithoutResourceLevelPermissions", "CheckTrailStatus"}
    assert {s["Sid"] for s in member["Statement"]} == set(iam_statements(lambda_role)) | set(heartbeat) | silence
    [tag] = [s for s in member["Statement"] if s["Sid"] in heartbeat]
    assert tag["Resource"] == f"arn:aws:iam::111122223333:policy/{DEFAULT_QUARANTINE_POLICY_NAME}"
    assert tag["Condition"]["ForAllValues:StringEquals"] == {"aws:TagKeys": ["guardrail:heartbeat"]}
    role = template(MEMBER)["Resources"]["GuardrailRemediationRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    [versions] = [s for s in role["Statement"] if "iam:CreatePolicyVersion" in s["Action"]]
    assert versions["Resource"] == {"Ref": "QuarantinePolicy"}  # that account's quarantine policy, nothing else


def test_member_role_trusts_only_the_guardrail_with_an_external_id() -> None:
    role = template(MEMBER)["Resources"]["GuardrailRemediationRole"]["Properties"]
    assert role["RoleName"] == "GuardrailRemediationRole"
    [statement] = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"AWS": {"Ref": "GuardrailRoleArns"}}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    # the guardrail recognises its own sessions by this role name and its own session name only
    assert role["RoleName"] == Settings.from_env({}).remediation_role
    assert "Path" not in role


def test_member_role_checks_silence_with_exactly_three_more_actions() -> None:
    member = template_policies(MEMBER)["GuardrailRemediationRole/iam-user-guardrail-remediation"]
    others = {
        a
        for s in member["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        if not a.startswith("iam:")
    }
    assert others == {"events:DescribeRule", "cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus"}
    [rule] = [s for s in member["Statement"] if s["Action"] == "events:DescribeRule"]
    assert rule["Resource"] == "arn:aws:events:us-east-1:111122223333:rule/iam-user-guardrail-forward"


def test_member_account_forwards_exactly_the_events_the_app_subscribes_to() -> None:
    rule = template(MEMBER)["Resources"]["ForwardIamEventsRule"]["Properties"]
    assert rule["EventPattern"] == json.loads(json.dumps(IAM_EVENT_PATTERN))
    assert rule["Targets"][0]["Arn"]["Fn::Sub"].endswith(":event-bus/default")


def test_central_bus_accepts_events_from_the_organization_only() -> None:
    bus = template(RESOURCES)["Resources"]["OrganizationEventBusPolicy"]
    assert bus["Condition"] == "ForwardFromOrganization"
    statement = bus["Properties"]["Statement"]
    assert statement["Action"] == "events:PutEvents"
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}


def test_alarms_and_dashboard_address_the_metrics_the_code_publishes() -> None:
    from chalicelib import observability

    resources = template(RESOURCES)["Resources"]
    for name, metric in (
        ("AlertQueuedAlarm", observability.ALERT_QUEUED),
        ("AccountUnreachableAlarm", observability.ACCOUNT_UNREACHABLE),
    ):
        alarm = resources[name]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"]) == (observability.NAMESPACE, metric)
        assert alarm["Dimensions"] == [{"Name": "service", "Value": observability.SERVICE}]
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    sample = re.sub(r"\$\{[^}]+\}", "x", body)
    widgets = json.loads(sample)["widgets"]
    shown = {
        m[1]
        for w in widgets
        if w["type"] == "metric"
        for m in w["properties"]["metrics"]
        if m[0] == observability.NAMESPACE or m[0] == "."
    }
    assert shown == set(observability.METRICS)
