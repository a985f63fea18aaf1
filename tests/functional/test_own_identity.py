"""The guardrail's own identity, pinned (issue 9): a role that merely carries one of its names, in
the wrong account, with another session name or another role id, is not the guardrail, and what
it undoes is reverted and alerted. The guardrail's own release is not."""

from __future__ import annotations

import json

import boto3
import pytest

from chalicelib import runtime
from chalicelib.bootstrap import ensure_quarantine_policy
from chalicelib.constants import REMEDIATION_SESSION_NAME
from devtools.synth import cloudtrail_record, role_identity
from tests.functional.approval_helpers import api
from tests.functional.conftest import TRUST_ACCOUNT, Aws
from tests.functional.test_accounts import member_iam
from tests.helpers import ACCOUNT, MALLORY, OTHER_ACCOUNT, record

POLICY = "iam-user-guardrail-quarantine"
REMEDIATION = "GuardrailRemediationRole"


def session(account: str, role: str, name: str, role_id: str = "") -> dict:
    identity = role_identity(account, role, name)
    if role_id:
        identity["sessionContext"]["sessionIssuer"]["principalId"] = role_id
    return identity


def detach_event(account: str, user: str, identity: dict) -> dict:
    raw = cloudtrail_record("DetachUserPolicy", user=user, identity=identity, account=account)
    raw["requestParameters"] = {"userName": user, "policyArn": f"arn:aws:iam::{account}:policy/{POLICY}"}
    raw["responseElements"] = None
    return raw


def policies(iam: boto3.client, user: str) -> list[str]:
    return [p["PolicyName"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]


@pytest.fixture
def member(aws: Aws) -> tuple[boto3.client, str]:
    """A member account with the StackSet's quarantine policy and remediation role, and dana
    quarantined there by the guardrail (which so learns the remediation role's id)."""
    iam = member_iam()
    ensure_quarantine_policy(iam, OTHER_ACCOUNT, POLICY)
    role_id = iam.create_role(RoleName=REMEDIATION, AssumeRolePolicyDocument=TRUST_ACCOUNT)["Role"]["RoleId"]
    dana_id = iam.create_user(UserName="dana")["User"]["UserId"]
    developer = role_identity(OTHER_ACCOUNT, "AWSReservedSSO_Developer_1", "dev@example.com")
    raw = record("CreateUser", "dana", developer, account=OTHER_ACCOUNT, user_id=dana_id)
    assert aws.invoke(raw)["verdict"] == "quarantine"
    assert policies(iam, "dana") == [POLICY]
    aws.slack.clear()
    return iam, role_id


def assert_reverted(aws: Aws, iam: boto3.client, user: str, result: dict) -> None:
    assert (result["verdict"], result["severity"]) == ("alert", "critical"), result["reason"]
    assert result["reason"].startswith("tamper: the quarantine policy was detached")
    assert policies(iam, user) == [POLICY]
    [message] = aws.slack.messages
    assert "tamper" in json.dumps(message).lower()


@pytest.mark.parametrize(
    ("role", "session_name", "same_id"),
    [
        # the guardrail's Lambda role names, created in a member account
        ("iam-user-guardrail-dev-sweep", "iam-user-guardrail-dev-sweep", False),
        ("iam-user-guardrail-prod-sweep", "iam-user-guardrail-prod-sweep", False),
        # the remediation role itself, in a session the guardrail did not open
        (REMEDIATION, "mallory", True),
        # the remediation role deleted and re-created by someone else: the name and session fit, the id does not
        (REMEDIATION, REMEDIATION_SESSION_NAME, False),
    ],
)
def test_member_lookalikes_detaching_the_quarantine_policy_are_reverted(
    aws: Aws, member: tuple[boto3.client, str], role: str, session_name: str, same_id: bool
) -> None:
    iam, role_id = member
    iam.detach_user_policy(UserName="dana", PolicyArn=f"arn:aws:iam::{OTHER_ACCOUNT}:policy/{POLICY}")
    identity = session(OTHER_ACCOUNT, role, session_name, role_id if same_id else "AROARECREATED0000001")
    assert_reverted(aws, iam, "dana", aws.invoke(detach_event(OTHER_ACCOUNT, "dana", identity)))


def test_a_security_account_role_named_like_the_remediation_role_is_reverted(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    assert aws.invoke(record("CreateUser", "bob", MALLORY))["verdict"] == "quarantine"
    aws.slack.clear()
    role_id = aws.iam.create_role(RoleName=REMEDIATION, AssumeRolePolicyDocument=TRUST_ACCOUNT)["Role"]["RoleId"]
    aws.iam.detach_user_policy(UserName="bob", PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}")
    identity = session(ACCOUNT, REMEDIATION, REMEDIATION_SESSION_NAME, role_id)
    assert_reverted(aws, aws.iam, "bob", aws.invoke(detach_event(ACCOUNT, "bob", identity)))


def test_control_the_guardrails_own_release_in_a_member_account_is_not_reverted(
    aws: Aws, member: tuple[boto3.client, str]
) -> None:
    iam, role_id = member
    status, granted = api(
        "POST", "/exceptions", body={"account": OTHER_ACCOUNT, "user": "dana", "days": 1, "reason": "r"}
    )
    assert status == 201, granted
    assert policies(iam, "dana") == []
    # what CloudTrail records for that detach: the remediation role, the guardrail's session, the role's id
    own = session(OTHER_ACCOUNT, REMEDIATION, REMEDIATION_SESSION_NAME, role_id)
    result = aws.invoke(detach_event(OTHER_ACCOUNT, "dana", own))
    assert (result["verdict"], result["reason"]) == ("ignore", "DetachUserPolicy was made by the guardrail's own role")
    assert policies(iam, "dana") == [] and aws.slack.messages == []


def test_control_the_guardrails_own_release_at_home_is_not_reverted(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    assert aws.invoke(record("CreateUser", "bob", MALLORY))["verdict"] == "quarantine"
    aws.slack.clear()
    assert api("POST", "/exceptions", body={"account": ACCOUNT, "user": "bob", "days": 1, "reason": "r"})[0] == 201
    handler = "iam-user-guardrail-dev-api_handler"
    result = aws.invoke(detach_event(ACCOUNT, "bob", session(ACCOUNT, handler, handler)))
    assert (result["verdict"], result["reason"]) == ("ignore", "DetachUserPolicy was made by the guardrail's own role")
    assert policies(aws.iam, "bob") == [] and aws.slack.messages == []


@pytest.fixture
def running_as_the_lambda_role(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> str:
    """The runtime holds the on_iam_event role's credentials, as in Lambda; returns the role id."""
    name = "iam-user-guardrail-dev-on_iam_event"
    role_id = aws.iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST_ACCOUNT)["Role"]["RoleId"]
    credentials = boto3.client("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}", RoleSessionName=name)[
        "Credentials"
    ]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    runtime.reset()
    aws.iam.create_user(UserName="bob")
    assert aws.invoke(record("CreateUser", "bob", MALLORY))["verdict"] == "quarantine"
    aws.slack.clear()
    aws.iam.detach_user_policy(UserName="bob", PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}")
    return role_id


def test_a_recreated_lambda_role_at_home_is_not_the_guardrail(aws: Aws, running_as_the_lambda_role: str) -> None:
    name = "iam-user-guardrail-dev-on_iam_event"
    identity = session(ACCOUNT, name, name, "AROARECREATED0000002")
    assert_reverted(aws, aws.iam, "bob", aws.invoke(detach_event(ACCOUNT, "bob", identity)))
    assert aws.calls["sts.GetCallerIdentity"] == 1


def test_control_the_lambda_roles_own_id_is_the_guardrail(aws: Aws, running_as_the_lambda_role: str) -> None:
    name = "iam-user-guardrail-dev-on_iam_event"
    result = aws.invoke(detach_event(ACCOUNT, "bob", session(ACCOUNT, name, name, running_as_the_lambda_role)))
    assert result["verdict"] == "ignore" and policies(aws.iam, "bob") == []
