"""Approvals: signed Slack clicks, authorization, decided-once, release and re-quarantine, REST."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from chalicelib.cli import main
from tests.functional.approval_helpers import (
    APPROVER,
    SECURITY_ADMIN,
    api,
    interaction_body,
    post_interaction,
    signed_headers,
    store_slack_secret,
)
from tests.functional.conftest import Aws
from tests.helpers import ACCOUNT, DEVELOPER, MALLORY, record

POLICY = "iam-user-guardrail-quarantine"


def quarantined_case(aws: Aws, user: str = "bob", identity: dict = MALLORY) -> tuple[dict, str, str]:
    """A user with a key the guardrail deactivated and one its owner had switched off already."""
    aws.iam.create_user(UserName=user)
    own_off = aws.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    aws.iam.update_access_key(UserName=user, AccessKeyId=own_off, Status="Inactive")
    key = aws.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    raw = record("CreateAccessKey", user, identity, access_key_id=key)
    assert aws.invoke(raw)["verdict"] == "quarantine"
    aws.slack.clear()
    return {"a": ACCOUNT, "u": user, "e": raw["eventID"]}, key, own_off


def click(aws: Aws, action: str, value: dict | str, **kwargs) -> int:
    body = interaction_body(aws, action, value, **kwargs)
    return post_interaction(body, signed_headers(body)).status_code


def responses(aws: Aws) -> list[dict]:
    return [r["json"] for r in aws.slack.requests if r["path"].startswith("/response/")]


@pytest.fixture
def slack_app(aws: Aws) -> Aws:
    store_slack_secret(aws)
    return aws


# -- signature -------------------------------------------------------------------------------


def test_valid_signature_approves_and_releases_exactly(slack_app: Aws) -> None:
    aws = slack_app
    value, key, own_off = quarantined_case(aws)
    assert click(aws, "guardrail_approve_7", value) == 200
    state = aws.user_state("bob")
    assert state["policies"] == [], aws.slack.requests
    assert state["keys"] == {key: "Active", own_off: "Inactive"}  # only the guardrail's key comes back
    assert state["tags"]["guardrail:status"] == "exception"
    assert state["tags"]["guardrail:approved-by"] == f"slack:{APPROVER}"
    expires = datetime.fromisoformat(state["tags"]["guardrail:exception-expires"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    [update] = responses(aws)
    assert update["replace_original"] is True
    assert f"Approved by <@{APPROVER}> until" in update["blocks"][-1]["text"]["text"]
    assert not [b for b in update["blocks"] if b["type"] == "actions"]
    [exception] = aws.items("EXCEPTION")
    assert exception["state"] == "active" and exception["reactivated_keys"] == [key]
    assert exception["requester"] == MALLORY["arn"]
    assert "grant" in [a["kind"] for a in aws.items("AUDIT")]


@pytest.mark.parametrize(
    "headers_for",
    [
        pytest.param(lambda body: signed_headers(body, secret="wrong-secret"), id="wrong-secret"),
        pytest.param(lambda body: signed_headers(body + "&x=1"), id="tampered-body"),
        pytest.param(lambda body: signed_headers(body, at=time.time() - 301), id="stale"),
        pytest.param(lambda body: signed_headers(body, at=time.time() + 301), id="future"),
        pytest.param(lambda body: {"Content-Type": "application/x-www-form-urlencoded"}, id="no-headers"),
        pytest.param(
            lambda body: {**signed_headers(body), "X-Slack-Request-Timestamp": "soon"}, id="non-numeric-timestamp"
        ),
    ],
)
def test_bad_signatures_get_401_and_change_nothing(slack_app: Aws, headers_for) -> None:
    aws = slack_app
    value, _, _ = quarantined_case(aws)
    body = interaction_body(aws, "guardrail_approve_7", value)
    response = post_interaction(body, headers_for(body))
    assert response.status_code == 401
    assert aws.user_state("bob")["policies"] == [POLICY]
    assert responses(aws) == []


def test_tampered_body_is_rejected(slack_app: Aws) -> None:
    aws = slack_app
    value, _, _ = quarantined_case(aws)
    body = interaction_body(aws, "guardrail_keep_quarantined", value)
    forged = interaction_body(aws, "guardrail_approve_30", value)
    assert post_interaction(forged, signed_headers(body)).status_code == 401
    assert aws.user_state("bob")["policies"] == [POLICY]


def test_missing_signing_secret_fails_closed(aws: Aws) -> None:
    value, _, _ = quarantined_case(aws)
    assert click(aws, "guardrail_approve_7", value) == 401


# -- authorization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "value_change", "expected"),
    [
        ({"user_id": "U0NOTAPPROVER"}, {}, "not an approver"),
        ({}, {"u": "someone-else"}, "does not match a quarantine"),
        ({}, {"a": "999999999999"}, "does not match a quarantine"),
        ({}, {"e": "forged-event-id"}, "does not match a quarantine"),
        ({"kind": "view_submission"}, {}, "unsupported interaction type"),
    ],
)
def test_refusals_are_200_ephemeral_and_audited(
    slack_app: Aws, kwargs: dict, value_change: dict, expected: str
) -> None:
    aws = slack_app
    value, _, _ = quarantined_case(aws)
    assert click(aws, "guardrail_approve_7", {**value, **value_change}, **kwargs) == 200
    assert aws.user_state("bob")["policies"] == [POLICY]
    [reply] = responses(aws)
    assert reply["response_type"] == "ephemeral" and expected in reply["text"]
    refusals = [a for a in aws.items("AUDIT") if a["kind"] == "refusal"]
    assert len(refusals) == 1 and expected in refusals[0]["reason"]


def test_unknown_action_id_is_refused(slack_app: Aws) -> None:
    aws = slack_app
    value, _, _ = quarantined_case(aws)
    assert click(aws, "guardrail_approve_365", value) == 200
    assert "unknown action" in responses(aws)[0]["text"]
    assert aws.user_state("bob")["policies"] == [POLICY]


def test_malformed_button_value_is_refused(slack_app: Aws) -> None:
    aws = slack_app
    quarantined_case(aws)
    assert click(aws, "guardrail_approve_7", "not json") == 200
    assert "carries no account, user and event" in responses(aws)[0]["text"]


def test_self_approval_is_refused_when_linked_by_email(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    store_slack_secret(aws, bot_token="xoxb-test", channel="C0SEC")
    monkeypatch.setenv("GUARDRAIL_SLACK_API_URL", aws.slack.url + "/api/")
    value, _, _ = quarantined_case(aws, "dev-user", DEVELOPER)  # session name dev@example.com
    aws.slack.api_responses["/api/users.info"] = {
        "ok": True,
        "user": {"id": APPROVER, "profile": {"email": "Dev@Example.com"}},
    }
    assert click(aws, "guardrail_approve_7", value) == 200
    assert "someone else must decide" in responses(aws)[0]["text"]
    assert aws.user_state("dev-user")["policies"] == [POLICY]
    aws.slack.clear()
    aws.slack.api_responses["/api/users.info"] = {
        "ok": True,
        "user": {"id": APPROVER, "profile": {"email": "sec@example.com"}},
    }
    from chalicelib import runtime

    runtime.reset()  # forget the cached email lookup
    assert click(aws, "guardrail_approve_7", value) == 200
    assert aws.user_state("dev-user")["policies"] == []


def test_double_click_decides_once(slack_app: Aws) -> None:
    aws = slack_app
    value, key, _ = quarantined_case(aws)
    assert click(aws, "guardrail_keep_quarantined", value) == 200
    assert click(aws, "guardrail_approve_30", value) == 200
    assert aws.user_state("bob")["policies"] == [POLICY]
    assert aws.user_state("bob")["keys"][key] == "Inactive"
    first, second = responses(aws)
    assert f"Kept quarantined by <@{APPROVER}>" in first["text"]
    assert second["response_type"] == "ephemeral" and "already decided" in second["text"]
    kinds = [a["kind"] for a in aws.items("AUDIT")]
    assert kinds.count("keep_quarantined") == 1 and kinds.count("refusal") == 1


def test_expiry_quarantines_again_and_a_late_click_changes_nothing(slack_app: Aws) -> None:
    aws = slack_app
    value, key, own_off = quarantined_case(aws)
    assert click(aws, "guardrail_approve_7", value) == 200
    table = boto3.resource("dynamodb").Table(aws.table)
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    table.update_item(
        Key={"pk": "EXCEPTION", "sk": f"{ACCOUNT}#bob"},
        UpdateExpression="SET expires_at = :p",
        ExpressionAttributeValues={":p": past},
    )
    aws.slack.clear()
    report = aws.invoke_sweep()
    assert report["expired"] == [f"{ACCOUNT}/bob: expired"]
    state = aws.user_state("bob")
    assert state["policies"] == [POLICY]
    assert state["keys"] == {key: "Inactive", own_off: "Inactive"}
    assert state["tags"]["guardrail:status"] == "quarantined"
    assert "Exception expired" in json.dumps(aws.slack.messages)
    assert "expired" in [a["kind"] for a in aws.items("AUDIT")]
    aws.slack.clear()
    assert click(aws, "guardrail_approve_30", value) == 200
    assert "already decided" in responses(aws)[0]["text"]
    assert aws.user_state("bob")["policies"] == [POLICY]


def test_sweep_resends_unsent_alerts(slack_app: Aws) -> None:
    aws = slack_app
    aws.slack.behaviour.extend([(500, 0.0, {})] * 2)
    aws.iam.create_user(UserName="alice")
    assert aws.invoke(record("CreateUser", "alice", DEVELOPER))["alert"] == "queued"
    assert len(aws.items("OUTBOX")) == 1
    aws.slack.clear()
    report = aws.invoke_sweep()
    assert report["resent"] == 1 and aws.items("OUTBOX") == []
    assert aws.slack.messages[0]["blocks"][0]["text"]["text"] == "IAM user quarantined: alice"


# -- REST API ----------------------------------------------------------------------------------


def test_rest_grant_list_revoke(aws: Aws) -> None:
    _, key, own_off = quarantined_case(aws)
    body = {"account": ACCOUNT, "user": "bob", "days": 3, "reason": "vendor migration", "ticket": "SEC-9"}
    status, granted = api("POST", "/exceptions", body=body)
    assert status == 201, granted
    assert granted["approver"] == SECURITY_ADMIN and granted["ticket"] == "SEC-9"
    assert aws.user_state("bob")["keys"] == {key: "Active", own_off: "Inactive"}
    assert api("POST", "/exceptions", body=body)[0] == 409
    status, listed = api("GET", "/exceptions", query={"account": ACCOUNT})
    assert status == 200 and [e["user"] for e in listed["exceptions"]] == ["bob"]
    assert api("GET", "/exceptions", query={"account": "210987654321"})[1]["exceptions"] == []
    status, revoked = api(
        "DELETE", "/exceptions/{account_id}/{user_name}", path_params={"account_id": ACCOUNT, "user_name": "bob"}
    )
    assert status == 200 and revoked["state"] == "revoked"
    assert aws.user_state("bob")["policies"] == [POLICY]
    assert aws.user_state("bob")["keys"] == {key: "Inactive", own_off: "Inactive"}
    assert (
        api("DELETE", "/exceptions/{account_id}/{user_name}", path_params={"account_id": ACCOUNT, "user_name": "bob"})[
            0
        ]
        == 404
    )
    kinds = [a["kind"] for a in aws.items("AUDIT")]
    assert "grant" in kinds and "revoked" in kinds


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"user": "bob", "days": 3, "reason": "r"}, 400, "account"),
        ({"account": "12", "user": "bob", "days": 3, "reason": "r"}, 400, "account"),
        ({"account": ACCOUNT, "user": "bob", "days": 31, "reason": "r"}, 400, "days"),
        ({"account": ACCOUNT, "user": "bob", "days": "3", "reason": "r"}, 400, "days"),
        ({"account": ACCOUNT, "user": "bob", "days": 3, "reason": ""}, 400, "reason"),
        ({"account": ACCOUNT, "user": "bob/../x", "days": 3, "reason": "r"}, 400, "user"),
        ({"account": ACCOUNT, "user": "bob", "days": 3, "reason": "r", "admin": True}, 400, "admin"),
        ("not json", 400, "body"),
        ({"account": ACCOUNT, "user": "nobody", "days": 3, "reason": "r"}, 404, "user"),
    ],
)
def test_rest_grant_errors_name_the_field(aws: Aws, body, status: int, field: str) -> None:
    quarantined_case(aws)
    got, answer = api("POST", "/exceptions", body=body)
    assert (got, answer.get("field")) == (status, field), answer
    assert aws.user_state("bob")["policies"] == [POLICY]


@pytest.mark.parametrize(
    "caller",
    [
        None,
        "arn:aws:sts::123456789012:assumed-role/developer/ops@example.com",
        "arn:aws:iam::123456789012:user/security-admin",
    ],
)
def test_rest_refuses_callers_outside_iam_principals(aws: Aws, caller: str | None) -> None:
    quarantined_case(aws)
    body = {"account": ACCOUNT, "user": "bob", "days": 3, "reason": "r"}
    assert api("POST", "/exceptions", caller=caller, body=body)[0] == 403
    assert api("GET", "/exceptions", caller=caller)[0] == 403
    assert aws.user_state("bob")["policies"] == [POLICY]


def test_rest_refuses_self_approval(aws: Aws) -> None:
    creator = "arn:aws:sts::123456789012:assumed-role/security-admin/ops@example.com"
    from devtools.synth import role_identity

    identity = role_identity(ACCOUNT, "security-admin", "ops@example.com")
    assert identity["arn"] == creator
    quarantined_case(aws, "ops-user", identity)
    status, answer = api("POST", "/exceptions", body={"account": ACCOUNT, "user": "ops-user", "days": 1, "reason": "r"})
    assert status == 403 and "self-approval" in answer["error"]


def test_audit_cli_prints_the_trail(slack_app: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    aws = slack_app
    value, _, _ = quarantined_case(aws)
    click(aws, "guardrail_approve_7", value)
    capsys.readouterr()
    assert main(["audit", "--user", "bob"]) == 0
    out = capsys.readouterr().out
    assert "decision" in out and "grant" in out and f"slack:{APPROVER}" in out
    assert main(["audit", "--since", "2999-01-01"]) == 0
    assert "no audit records" in capsys.readouterr().out
