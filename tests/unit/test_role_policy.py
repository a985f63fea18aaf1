"""The Lambda role in .chalice/policy-*.json: covers every AWS call the handlers make, nothing more."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from tests.helpers import REPO

POLICIES = sorted((REPO / ".chalice").glob("policy-*.json"))
#: Modules that run with an operator's credentials, never in Lambda.
OPERATOR_MODULES = {"bootstrap.py", "cli.py"}
LAMBDA_MODULES = sorted(p.name for p in (REPO / "chalicelib").glob("*.py") if p.name not in OPERATOR_MODULES)
RECEIVERS = {
    "self._iam": "iam",
    "self._ddb": "dynamodb",
    'self.client("secretsmanager")': "secretsmanager",
    'self.client("sts")': "sts",
    "self._events": "events",
    "self._cloudtrail": "cloudtrail",
    "self._org": "organizations",
    "self._sqs": "sqs",
    "self._hub": "securityhub",
}
#: Used by Lambda itself with the function's role, not by our code: logs, and the on-failure
#: destination of asynchronous invocations (infra/resources.yaml's dead-letter queue).
#: The SQS event source mapping of `sweep_worker` polls and deletes with the function's role.
USED_BY_LAMBDA = {"sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
#: Made only with GuardrailRemediationRole's credentials in member accounts (silence.py's checks):
#: infra/member-account.yaml grants them (tests/unit/test_infra.py), the Lambda role does not.
MEMBER_ONLY = {"iam:TagPolicy", "events:DescribeRule", "cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus"}
#: Allowed for every principal; no policy can grant or deny it.
ALWAYS_ALLOWED = {"sts:GetCallerIdentity"}
#: IAM actions that support no resource-level permissions: "*" is the narrowest resource.
ACCOUNT_WIDE = {
    "iam:GetAccountAuthorizationDetails",
    "iam:GenerateCredentialReport",
    "iam:GetCredentialReport",
    "organizations:ListAccounts",
}
#: The calls that keep the quarantine policy deny-all: on that one policy only.
POLICY_VERSION_ACTIONS = {
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:ListPolicyVersions",
    "iam:CreatePolicyVersion",
    "iam:DeletePolicyVersion",
}
#: A transaction is authorised per item action.
EXPANDS = {
    "dynamodb:TransactWriteItems": ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
    "sqs:SendMessageBatch": ["sqs:SendMessage"],
}


def operations(service: str) -> dict[str, str]:
    """boto3's method names for a service mapped to the API operation (the IAM action name)."""
    client = boto3.session.Session(region_name="us-east-1").client(
        service, aws_access_key_id="x", aws_secret_access_key="x"
    )
    return dict(client.meta.method_to_api_mapping)


def actions_used() -> set[str]:
    used: set[str] = set()
    for module in LAMBDA_MODULES:
        source = (REPO / "chalicelib" / module).read_text()
        for receiver, service in RECEIVERS.items():
            mapping = operations(service)
            escaped = re.escape(receiver)
            names = re.findall(escaped + r"\.(\w+)", source)
            names += re.findall(escaped + r'\.get_paginator\("(\w+)"\)', source)
            used.update(f"{service}:{mapping[name]}" for name in names if name in mapping)
    # The credential table names its calls as data (one rule for every credential kind).
    from chalicelib.iam import CREDENTIAL_APIS

    mapping = operations("iam")
    for api in CREDENTIAL_APIS.values():
        used.update(f"iam:{mapping[name]}" for name in (api.list_call, api.update_call))
    expanded = set()
    for action in used:
        expanded.update(EXPANDS.get(action, [action]))
    return expanded


def allowed(policy: dict) -> set[str]:
    actions: set[str] = set()
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow":
            listed = statement["Action"]
            actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_scanner_finds_the_calls() -> None:
    used = actions_used()
    assert {"iam:AttachUserPolicy", "iam:TagUser", "dynamodb:BatchGetItem", "secretsmanager:GetSecretValue"} <= used
    assert MEMBER_ONLY | {"organizations:ListAccounts", "sqs:GetQueueUrl", "sqs:SendMessage"} <= used
    assert {"securityhub:BatchImportFindings", "securityhub:GetFindings"} <= used
    assert used >= POLICY_VERSION_ACTIONS


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_role_covers_every_call_and_nothing_broader(path) -> None:
    policy = json.loads(path.read_text())
    granted = allowed(policy)
    used = actions_used() - ALWAYS_ALLOWED - MEMBER_ONLY
    missing = used - granted
    assert not missing, f"{path.name} lacks {sorted(missing)}"
    unused = {a for a in granted - used - USED_BY_LAMBDA if not a.startswith("logs:")}
    assert not unused, f"{path.name} grants actions no handler calls: {sorted(unused)}"
    assert not any(a.endswith(":*") or a == "*" for a in granted)
    assert "iam:PutUserPolicy" not in granted
    for statement in policy["Statement"]:
        actions = statement["Action"]
        if statement["Effect"] == "Allow" and statement["Resource"] == "*":
            assert set(actions) <= ACCOUNT_WIDE, statement["Sid"]
        if "iam:AttachUserPolicy" in actions:
            assert statement["Condition"]["ArnEquals"]["iam:PolicyARN"].endswith(
                ":policy/iam-user-guardrail-quarantine"
            )
        if POLICY_VERSION_ACTIONS & set(actions):
            assert set(actions) == POLICY_VERSION_ACTIONS, statement["Sid"]
            assert statement["Resource"] == "arn:aws:iam::*:policy/iam-user-guardrail-quarantine"
        if "iam:TagUser" in actions:
            assert statement["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"] == ["guardrail:*"]
        if any(a.startswith("sqs:") for a in ([actions] if isinstance(actions, str) else actions)):
            assert statement["Resource"].startswith("arn:aws:sqs:us-east-1:*:iam-user-guardrail-")


def test_stage_settings_name_the_stage_resources() -> None:
    config = json.loads((REPO / ".chalice" / "config.json").read_text())
    assert config["autogen_policy"] is False
    for stage, settings in config["stages"].items():
        policy = json.loads((REPO / ".chalice" / settings["iam_policy_file"]).read_text())
        text = json.dumps(policy)
        env = settings["environment_variables"]
        assert f"table/{env['GUARDRAIL_TABLE']}" in text
        assert f"secret:{env['GUARDRAIL_SLACK_SECRET_ID']}-*" in text
        assert f"policy/{env['GUARDRAIL_QUARANTINE_POLICY_NAME']}" in text
        # Chalice names one role per function when the policy is written by hand
        names = env["GUARDRAIL_OWN_ROLE_NAMES"].split(",")
        functions = ("on_iam_event", "sweep", "sweep_worker", "api_handler")  # flush_alerts never touches IAM
        assert names == [f"iam-user-guardrail-{stage}-{f}" for f in functions]
        # the override takes exact ARNs only; the stages need none
        assert "GUARDRAIL_OWN_ROLE_ARNS" not in env


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_audit_partition_is_append_only_for_the_role(path) -> None:
    policy = json.loads(path.read_text())
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert set(deny["Action"]) >= {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
    assert deny["Condition"] == {"ForAnyValue:StringEquals": {"dynamodb:LeadingKeys": ["AUDIT"]}}
