"""The guardrail's own parts on the pure layer: document comparison, policy ARN and role matching,
the decisions for policy-version and role events, and the Slack message for them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from chalicelib.constants import ALERT, CRITICAL, IGNORE, MONITOR, QUARANTINE_POLICY_DOCUMENT, SUBSCRIBED_EVENTS
from chalicelib.events import parse_event
from chalicelib.policy import RESTORE_QUARANTINE_POLICY, after_restore, decide
from chalicelib.selfguard import guarded_roles, is_deny_all, is_quarantine_policy, parse_document, role_change, target
from chalicelib.slack_message import build_alert
from devtools.synth import cloudtrail_record, role_identity
from tests.helpers import ACCOUNT, GUARDRAIL_ROLE, MALLORY, OTHER_ACCOUNT, OWN_IDENTITY, TERRAFORM, allowlist

POLICY = "iam-user-guardrail-quarantine"
POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}"
OWN_ROLES = OWN_IDENTITY
ROLES = guarded_roles("GuardrailRemediationRole", ["arn:aws:iam::*:role/iam-user-guardrail-dev-sweep"])
DENY = QUARANTINE_POLICY_DOCUMENT["Statement"][0]


def document(**statement: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{**DENY, **statement}]}


# -- document comparison ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate",
    [
        QUARANTINE_POLICY_DOCUMENT,
        json.dumps(QUARANTINE_POLICY_DOCUMENT),
        quote(json.dumps(QUARANTINE_POLICY_DOCUMENT)),  # as the IAM API returns it
        document(Action=["*"], Resource=["*"]),
        {"Version": "2012-10-17", "Statement": DENY},  # one statement, not a list
        json.dumps(QUARANTINE_POLICY_DOCUMENT, indent=4),
    ],
    ids=["dict", "json", "url-encoded", "lists", "single-statement", "indented"],
)
def test_deny_all_in_every_spelling_is_recognised(candidate: Any) -> None:
    assert is_deny_all(candidate)


@pytest.mark.parametrize(
    "candidate",
    [
        document(Effect="Allow"),
        document(Action="iam:*"),
        document(Action=["*", "iam:*"]),
        document(Resource="arn:aws:s3:::x"),
        document(Sid="Other"),
        document(Condition={"Bool": {"aws:MultiFactorAuthPresent": "false"}}),
        {**QUARANTINE_POLICY_DOCUMENT, "Version": "2008-10-17"},
        {"Version": "2012-10-17", "Statement": [DENY, {"Effect": "Allow", "Action": "*", "Resource": "*"}]},
        {"Version": "2012-10-17", "Statement": []},
        {"Version": "2012-10-17", "Statement": [{k: v for k, v in DENY.items() if k != "Resource"}]},
        "not json",
        quote("{broken"),
        None,
        42,
        {"Version": "2012-10-17", "Statement": "Deny"},
        {"Version": "2012-10-17", "Statement": ["Deny"]},
    ],
)
def test_anything_else_is_not_deny_all(candidate: Any) -> None:
    assert not is_deny_all(candidate)


def test_parse_document_reads_plain_and_url_encoded_json() -> None:
    assert parse_document('{"a": 1}') == {"a": 1}
    assert parse_document(quote('{"a": "b c"}')) == {"a": "b c"}
    assert parse_document("%%%") is None


# -- which policy, which roles ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        (POLICY_ARN, True),
        (f"arn:aws:iam::{ACCOUNT}:policy/IAM-User-Guardrail-Quarantine", True),  # names are case-insensitive
        (f"arn:aws:iam::{ACCOUNT}:policy/x/{POLICY}", False),
        (f"arn:aws:iam::{ACCOUNT}:policy//{POLICY}", False),
        (f"arn:aws:iam::{OTHER_ACCOUNT}:policy/{POLICY}", False),
        (f"arn:aws-cn:iam::{ACCOUNT}:policy/{POLICY}", False),
        (f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}-2", False),
        (f"arn:aws:iam::{ACCOUNT}:role/{POLICY}", False),
        (f"arn:aws:iam::aws:policy/{POLICY}", False),
        ("", False),
    ],
)
def test_only_the_accounts_own_quarantine_policy_at_root_matches(arn: str, expected: bool) -> None:
    assert is_quarantine_policy(arn, account=ACCOUNT, partition="aws", name=POLICY) is expected


def test_an_event_without_a_valid_account_names_no_quarantine_policy() -> None:
    assert not is_quarantine_policy(f"arn:aws:iam:::policy/{POLICY}", account="", partition="aws", name=POLICY)


def test_guarded_roles_are_the_remediation_role_and_the_named_lambda_roles() -> None:
    roles = guarded_roles(
        "GuardrailRemediationRole",
        ["arn:aws:iam::*:role/iam-user-guardrail-dev-sweep", "arn:aws:iam::*:role/team-*", "not-an-arn"],
    )
    assert roles == {"guardrailremediationrole", "iam-user-guardrail-dev-sweep"}


# -- decisions ----------------------------------------------------------------------------------------


def event(name: str, request: dict[str, Any], identity: dict[str, Any] = MALLORY, **kwargs: Any) -> Any:
    """A record shaped like CloudTrail's for these calls (requestParameters as the API takes them)."""
    raw = cloudtrail_record(name, user="", identity=identity, **kwargs)
    raw["requestParameters"] = request
    raw["responseElements"] = (
        {"policyVersion": {"versionId": "v2", "isDefaultVersion": True, "createDate": "Nov 29, 2026 9:00:00 AM"}}
        if name == "CreatePolicyVersion" and not kwargs.get("error_code")
        else None
    )
    return parse_event(raw)


def own_decision(parsed: Any, **kwargs: Any) -> Any:
    return decide(parsed, allowlist(), own_roles=OWN_ROLES, guarded_roles=ROLES, **kwargs)


ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@pytest.mark.parametrize(
    ("name", "request_parameters"),
    [
        ("CreatePolicyVersion", {"policyArn": POLICY_ARN, "policyDocument": ALLOW_ALL, "setAsDefault": True}),
        ("CreatePolicyVersion", {"policyArn": POLICY_ARN, "policyDocument": ALLOW_ALL, "setAsDefault": False}),
        ("SetDefaultPolicyVersion", {"policyArn": POLICY_ARN, "versionId": "v2"}),
        ("DeletePolicyVersion", {"policyArn": POLICY_ARN, "versionId": "v2"}),
    ],
)
def test_a_version_change_of_the_quarantine_policy_is_critical_and_checked(name: str, request_parameters: dict) -> None:
    for actor in (MALLORY, TERRAFORM):
        decision = own_decision(event(name, request_parameters, actor))
        assert (decision.verdict, decision.severity, decision.notify) == (ALERT, CRITICAL, True)
        assert decision.steps == (RESTORE_QUARANTINE_POLICY,)
        assert decision.rule == "tamper_quarantine_policy" and POLICY_ARN in decision.reason


def test_the_guardrails_own_version_change_is_checked_quietly() -> None:
    decision = own_decision(
        event("CreatePolicyVersion", {"policyArn": POLICY_ARN, "setAsDefault": True}, GUARDRAIL_ROLE)
    )
    assert (decision.verdict, decision.notify, decision.steps) == (IGNORE, False, (RESTORE_QUARANTINE_POLICY,))
    restored = after_restore(decision)  # the check found it changed: critical, whoever called
    assert (restored.verdict, restored.severity, restored.notify) == (ALERT, CRITICAL, True)
    assert after_restore(restored) == restored


@pytest.mark.parametrize(
    "arn",
    [f"arn:aws:iam::{ACCOUNT}:policy/x/{POLICY}", f"arn:aws:iam::{OTHER_ACCOUNT}:policy/{POLICY}", ""],
)
def test_another_policy_is_ignored_without_reading_anything(arn: str) -> None:
    decision = own_decision(event("CreatePolicyVersion", {"policyArn": arn, "setAsDefault": True}))
    assert (decision.verdict, decision.steps, decision.rule) == (IGNORE, (), "not_quarantine_policy")


def test_failed_calls_change_nothing() -> None:
    for name, request in (
        ("CreatePolicyVersion", {"policyArn": POLICY_ARN, "setAsDefault": True}),
        ("PutRolePolicy", {"roleName": "GuardrailRemediationRole", "policyName": "x", "policyDocument": ALLOW_ALL}),
    ):
        decision = own_decision(event(name, request, error_code="AccessDenied"))
        assert (decision.verdict, decision.steps, decision.rule) == (IGNORE, (), "failed_call")


def test_monitor_mode_alerts_and_the_steps_are_not_carried_out() -> None:
    decision = own_decision(
        event("SetDefaultPolicyVersion", {"policyArn": POLICY_ARN, "versionId": "v2"}), mode=MONITOR
    )
    assert (decision.mode, decision.notify, decision.severity) == (MONITOR, True, CRITICAL)
    message = json.dumps(build_alert(event("SetDefaultPolicyVersion", {"policyArn": POLICY_ARN}), decision))
    assert "monitor mode changes nothing" in message


@pytest.mark.parametrize(
    ("name", "request_parameters"),
    [
        ("PutRolePolicy", {"roleName": "GuardrailRemediationRole", "policyName": "p", "policyDocument": ALLOW_ALL}),
        ("AttachRolePolicy", {"roleName": "iam-user-guardrail-dev-sweep", "policyArn": "arn:aws:iam::aws:policy/A"}),
        ("DetachRolePolicy", {"roleName": "GUARDRAILREMEDIATIONROLE", "policyArn": "arn:aws:iam::aws:policy/B"}),
        ("DeleteRolePolicy", {"roleName": "GuardrailRemediationRole", "policyName": "iam-user-guardrail-remediation"}),
        ("UpdateAssumeRolePolicy", {"roleName": "GuardrailRemediationRole", "policyDocument": ALLOW_ALL}),
        ("PutRolePermissionsBoundary", {"roleName": "GuardrailRemediationRole", "permissionsBoundary": "arn:x"}),
    ],
    ids=["put", "attach", "detach-case", "delete", "trust", "boundary"],
)
def test_a_change_to_a_guardrail_role_is_critical_without_revert(name: str, request_parameters: dict) -> None:
    decision = own_decision(event(name, request_parameters, GUARDRAIL_ROLE))  # the guardrail never changes roles
    assert (decision.verdict, decision.severity, decision.steps, decision.notify) == (ALERT, CRITICAL, (), True)
    assert decision.rule == "tamper_guardrail_role"


def test_role_events_on_other_roles_are_ignored() -> None:
    decision = own_decision(event("AttachRolePolicy", {"roleName": "app", "policyArn": "arn:aws:iam::aws:policy/A"}))
    assert (decision.verdict, decision.rule) == (IGNORE, "not_guarded_role")
    default = decide(
        event("AttachRolePolicy", {"roleName": "GuardrailRemediationRole", "policyArn": "x"}),
        allowlist(),
        own_roles=OWN_ROLES,
    )
    assert default.verdict == ALERT  # the remediation role is guarded even when no roles are passed


def test_every_own_part_event_is_subscribed() -> None:
    assert {
        "CreatePolicyVersion",
        "SetDefaultPolicyVersion",
        "DeletePolicyVersion",
        "PutRolePolicy",
        "AttachRolePolicy",
        "DetachRolePolicy",
        "DeleteRolePolicy",
        "UpdateAssumeRolePolicy",
        "PutRolePermissionsBoundary",
        "DeleteRolePermissionsBoundary",
    } <= SUBSCRIBED_EVENTS


# -- Slack ---------------------------------------------------------------------------------------------


def test_the_alert_names_the_policy_not_a_user_and_has_no_buttons() -> None:
    parsed = event("CreatePolicyVersion", {"policyArn": POLICY_ARN, "policyDocument": ALLOW_ALL, "setAsDefault": True})
    assert target(parsed) == ("policy", POLICY_ARN) and parsed.target_user_name == ""
    message = build_alert(parsed, own_decision(parsed))
    assert message["blocks"][0]["text"]["text"] == f"Guardrail's own policy changed: {POLICY_ARN}"
    assert not [b for b in message["blocks"] if b["type"] == "actions"]
    text = json.dumps(message)
    assert f"`{POLICY_ARN}`" in text and "IAM user" not in text and "(no user)" not in text


def test_the_role_alert_shows_the_change_escaped_in_a_code_span() -> None:
    hostile = json.dumps({"Statement": [{"Effect": "Allow", "Condition": {"x": "<!here> <https://evil.example|x>"}}]})
    parsed = event(
        "PutRolePolicy",
        {"roleName": "GuardrailRemediationRole", "policyName": "a`b", "policyDocument": hostile},
        role_identity(ACCOUNT, "ci", "ci"),
    )
    assert role_change(parsed).startswith("a`b: {")
    message = build_alert(parsed, own_decision(parsed))
    fields = [f["text"] for b in message["blocks"] if "fields" in b for f in b["fields"]]
    [change] = [f for f in fields if f.startswith("*Change*")]
    assert change.startswith("*Change*\n`a'b: {") and change.endswith("`")
    text = json.dumps(message)
    assert "<!here>" not in text and "<https://evil" not in text and "&lt;!here&gt;" in text
