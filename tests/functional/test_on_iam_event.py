"""`on_iam_event` end to end: Chalice test client -> real handler -> moto server -> Slack receiver."""

from __future__ import annotations

import json

import pytest

from chalicelib.allowlist import AllowlistError
from chalicelib.guardrail import ActionFailedError
from chalicelib.store import StoreUnavailableError
from tests.functional.conftest import WEBHOOK_PATH, Aws
from tests.helpers import DEVELOPER, GUARDRAIL_ROLE, MALLORY, TERRAFORM, record

POLICY = "iam-user-guardrail-quarantine"


def create_user(aws: Aws, name: str, path: str = "/") -> None:
    aws.iam.create_user(UserName=name, Path=path)


def create_key(aws: Aws, user: str) -> str:
    return aws.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]


def test_approved_integration_user_is_tagged_and_not_alerted(aws: Aws) -> None:
    create_user(aws, "svc-datadog", "/integrations/")
    result = aws.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))
    assert result["verdict"] == "approve"
    state = aws.user_state("svc-datadog")
    assert state["tags"]["guardrail:status"] == "approved"
    assert state["tags"]["guardrail:integration"] == "datadog"
    assert state["tags"]["guardrail:owner"] == "platform@example.com"
    assert state["tags"]["guardrail:resources"] == "arn:aws:cloudwatch:_:_:_"  # '*' is not allowed in tag values
    assert state["policies"] == []
    assert aws.slack.messages == []
    [audit] = aws.items("AUDIT")
    assert audit["verdict"] == "approve" and audit["user"] == "svc-datadog"


def test_unapproved_user_is_quarantined_and_alerted(aws: Aws) -> None:
    create_user(aws, "alice")
    raw = record("CreateUser", "alice", DEVELOPER)
    result = aws.invoke(raw)
    assert result["verdict"] == "quarantine" and result["alert"] == "sent"
    state = aws.user_state("alice")
    assert state["policies"] == [POLICY]
    assert state["tags"]["guardrail:status"] == "quarantined"
    assert "no integration in the allowlist matches" in state["tags"]["guardrail:reason"]
    assert state["tags"]["guardrail:event-id"] == raw["eventID"]
    [request] = aws.slack.requests
    assert request["path"] == WEBHOOK_PATH
    message = request["json"]
    assert message["blocks"][0]["text"]["text"] == "IAM user quarantined: alice"
    assert any(b["type"] == "actions" for b in message["blocks"])
    [user_record] = aws.items("USER")
    assert user_record["status"] == "quarantined" and user_record["sk"] == "123456789012#alice"


def test_unapproved_create_user_costs_four_aws_calls_and_the_burst_counter(aws: Aws) -> None:
    create_user(aws, "warm-up")
    aws.invoke(record("CreateUser", "warm-up", DEVELOPER))  # a new container reads the Slack secret once
    aws.calls.clear()
    aws.slack.clear()
    create_user(aws, "alice")
    aws.invoke(record("CreateUser", "alice", DEVELOPER))
    assert aws.calls == {
        "dynamodb.BatchGetItem": 1,
        "iam.AttachUserPolicy": 1,
        "iam.TagUser": 1,
        "dynamodb.TransactWriteItems": 1,
        "dynamodb.UpdateItem": 1,  # the creator's alert count in this 10-minute window (outbox.BurstGate)
    }
    assert len(aws.slack.requests) == 1


def test_duplicate_delivery_acts_once_and_alerts_once(aws: Aws) -> None:
    create_user(aws, "alice")
    raw = record("CreateUser", "alice", DEVELOPER)
    assert aws.invoke(raw)["status"] == "handled"
    aws.calls.clear()
    assert aws.invoke(raw)["status"] == "duplicate"
    assert aws.calls == {"dynamodb.BatchGetItem": 1}
    assert len(aws.slack.requests) == 1
    assert len(aws.items("AUDIT")) == 1


def test_key_for_approved_user_within_and_beyond_max_access_keys(aws: Aws) -> None:
    create_user(aws, "svc-datadog", "/integrations/")
    first = create_key(aws, "svc-datadog")
    result = aws.invoke(record("CreateAccessKey", "svc-datadog", TERRAFORM, access_key_id=first))
    assert result["verdict"] == "approve"
    assert aws.user_state("svc-datadog")["keys"] == {first: "Active"}
    second = create_key(aws, "svc-datadog")
    result = aws.invoke(record("CreateAccessKey", "svc-datadog", TERRAFORM, access_key_id=second))
    assert result["verdict"] == "alert"
    assert aws.user_state("svc-datadog")["keys"] == {first: "Active", second: "Inactive"}
    assert aws.user_state("svc-datadog")["policies"] == []  # the integration keeps working
    [message] = aws.slack.messages
    assert "more than max_access_keys 1" in json.dumps(message)
    [user_record] = aws.items("USER")
    assert user_record["deactivated_keys"] == {second}


def test_backdoor_key_is_deactivated_and_user_quarantined(aws: Aws) -> None:
    create_user(aws, "bob")
    key = create_key(aws, "bob")
    result = aws.invoke(record("CreateAccessKey", "bob", MALLORY, access_key_id=key))
    assert (result["verdict"], result["severity"]) == ("quarantine", "critical")
    state = aws.user_state("bob")
    assert state["keys"] == {key: "Inactive"}
    assert state["policies"] == [POLICY]
    assert "possible backdoor" in json.dumps(aws.slack.messages[0])


def test_login_profile_for_integration_without_console_access_is_deleted(aws: Aws) -> None:
    create_user(aws, "svc-datadog", "/integrations/")
    aws.iam.create_login_profile(UserName="svc-datadog", Password="Sup3r-Secret-Passw0rd!")
    result = aws.invoke(record("CreateLoginProfile", "svc-datadog", TERRAFORM))
    assert result["verdict"] == "alert"
    with pytest.raises(aws.iam.exceptions.NoSuchEntityException):
        aws.iam.get_login_profile(UserName="svc-datadog")


def test_creator_supplied_guardrail_tags_are_removed(aws: Aws) -> None:
    aws.iam.create_user(
        UserName="eve", Tags=[{"Key": "guardrail:integration", "Value": "datadog"}, {"Key": "team", "Value": "x"}]
    )
    raw = record("CreateUser", "eve", MALLORY, tags=[("guardrail:integration", "datadog"), ("team", "x")])
    aws.invoke(raw)
    tags = aws.user_state("eve")["tags"]
    assert "guardrail:integration" not in tags
    assert tags["team"] == "x" and tags["guardrail:status"] == "quarantined"


def test_user_deleted_before_the_event_arrives(aws: Aws) -> None:
    result = aws.invoke(record("CreateUser", "ghost", DEVELOPER))
    assert result["status"] == "handled"
    assert result["results"] == ["attach_quarantine_policy ghost: user_gone (user no longer exists)"]
    assert "user_gone" in json.dumps(aws.slack.messages[0])
    assert aws.items("AUDIT")[0]["results"] == result["results"]


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param([(500, 0.0, {})] * 2, id="slack-500"),
        pytest.param([(200, 2.5, {})] * 2, id="slack-timeout"),
        pytest.param([(429, 0.0, {"Retry-After": "0"})] * 2, id="slack-429-after-retries"),
    ],
)
def test_slack_failure_never_prevents_quarantine_and_queues_the_alert(aws: Aws, behaviour: list) -> None:
    aws.slack.behaviour.extend(behaviour)
    create_user(aws, "alice")
    result = aws.invoke(record("CreateUser", "alice", DEVELOPER))
    assert result["alert"] == "queued"
    assert aws.user_state("alice")["policies"] == [POLICY]
    [unsent] = aws.items("OUTBOX")
    message = json.loads(unsent["message"])
    assert message["blocks"][0]["text"]["text"] == "IAM user quarantined: alice"
    assert "not-a-real-secret" not in unsent["error"]


def test_slack_429_is_retried_then_delivered(aws: Aws) -> None:
    aws.slack.behaviour.append((429, 0.0, {"Retry-After": "0"}))
    create_user(aws, "alice")
    assert aws.invoke(record("CreateUser", "alice", DEVELOPER))["alert"] == "sent"
    assert len(aws.slack.requests) == 2
    assert aws.items("OUTBOX") == []


def test_bot_token_from_secrets_manager(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    monkeypatch.setenv("GUARDRAIL_SLACK_API_URL", aws.slack.url + "/api/")
    aws.secrets.create_secret(
        Name="iam-user-guardrail/dev/slack",
        SecretString=json.dumps({"bot_token": "xoxb-test-token", "channel": "C0SECURITY", "signing_secret": "s"}),
    )
    create_user(aws, "alice")
    assert aws.invoke(record("CreateUser", "alice", DEVELOPER))["alert"] == "sent"
    [request] = aws.slack.requests
    assert request["path"] == "/api/chat.postMessage"
    assert request["headers"]["Authorization"] == "Bearer xoxb-test-token"
    assert request["json"]["channel"] == "C0SECURITY"
    assert request["json"]["blocks"][0]["type"] == "header"
    assert request["json"]["text"].startswith("IAM user quarantined: alice")


def test_missing_slack_secret_queues_the_alert(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    create_user(aws, "alice")
    result = aws.invoke(record("CreateUser", "alice", DEVELOPER))
    assert result["alert"] == "queued"
    assert aws.user_state("alice")["policies"] == [POLICY]
    assert "cannot read Slack secret" in aws.items("OUTBOX")[0]["error"]


def test_table_unreachable_still_quarantines_then_raises(aws: Aws) -> None:
    aws.ddb.delete_table(TableName=aws.table)
    create_user(aws, "alice")
    with pytest.raises(StoreUnavailableError):
        aws.invoke(record("CreateUser", "alice", DEVELOPER))
    assert aws.user_state("alice")["policies"] == [POLICY]
    assert len(aws.slack.requests) == 1


def test_invalid_allowlist_fails_closed_and_loudly(aws: Aws) -> None:
    aws.write_allowlist("version: 1\nintegrations:\n  - name: datadog\n    users: ['*']\n")
    create_user(aws, "svc-datadog", "/integrations/")
    with pytest.raises(AllowlistError, match=r"integrations\[0\] \(datadog\)"):
        aws.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))
    assert aws.user_state("svc-datadog")["tags"] == {}  # nothing approved
    aws.write_allowlist("version: 1\nintegrations:\n  - name: datadog\n    users: ['*']\n")
    with pytest.raises(AllowlistError):  # the failure is not cached as success
        aws.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))


def test_monitor_mode_changes_nothing_in_iam(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_MODE", "monitor")
    create_user(aws, "bob")
    key = create_key(aws, "bob")
    result = aws.invoke(record("CreateAccessKey", "bob", MALLORY, access_key_id=key))
    assert (result["verdict"], result["mode"]) == ("quarantine", "monitor")
    assert aws.user_state("bob") == {"tags": {}, "policies": [], "keys": {key: "Active"}}
    assert not [c for c in aws.calls if c.startswith("iam.")]
    assert aws.slack.messages[0]["blocks"][0]["text"]["text"] == "[monitor] would quarantine: bob"


@pytest.mark.parametrize("raw", [{"detail-type": "Scheduled Event", "detail": {}}, {"detail": "junk"}, {}])
def test_malformed_events_are_logged_and_ignored(aws: Aws, raw: dict, caplog: pytest.LogCaptureFixture) -> None:
    result = aws.invoke(raw, wrap=False)
    assert result["status"] == "rejected" and result["reason"]
    assert "event ignored" in caplog.text
    assert aws.slack.requests == []


def test_iam_throttling_is_retried(aws: Aws) -> None:
    create_user(aws, "alice")
    aws.throttle["AttachUserPolicy"] = 2
    result = aws.invoke(record("CreateUser", "alice", DEVELOPER))
    assert result["verdict"] == "quarantine"
    assert aws.user_state("alice")["policies"] == [POLICY]
    assert aws.throttle["AttachUserPolicy"] == 0


def test_iam_throttling_beyond_retries_alerts_and_raises(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_AWS_MAX_ATTEMPTS", "2")
    create_user(aws, "alice")
    aws.throttle["AttachUserPolicy"] = 100
    raw = record("CreateUser", "alice", DEVELOPER)
    with pytest.raises(ActionFailedError, match="Throttling"):
        aws.invoke(raw)
    assert "attach_quarantine_policy alice: failed (Throttling)" in json.dumps(aws.slack.messages[0])
    assert aws.items(f"EVENT#{raw['eventID']}") == []  # not recorded, so Lambda's retry acts again
    aws.throttle.clear()
    assert aws.invoke(raw)["verdict"] == "quarantine"
    assert aws.user_state("alice")["policies"] == [POLICY]


def test_missing_quarantine_policy_is_a_failure_not_a_silent_skip(aws: Aws) -> None:
    arn = f"arn:aws:iam::123456789012:policy/{POLICY}"
    aws.iam.delete_policy(PolicyArn=arn)
    create_user(aws, "alice")
    with pytest.raises(ActionFailedError, match="missing"):
        aws.invoke(record("CreateUser", "alice", DEVELOPER))
    assert "run bootstrap" in json.dumps(aws.slack.messages[0])


def test_a_user_created_by_the_guardrails_own_role_is_still_quarantined(aws: Aws) -> None:
    """The guardrail never creates users: its role doing so means it was misused."""
    create_user(aws, "alice")
    assert aws.invoke(record("CreateUser", "alice", GUARDRAIL_ROLE))["verdict"] == "quarantine"
    assert aws.user_state("alice")["policies"] == [POLICY]


def test_no_secret_reaches_the_logs(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    monkeypatch.setenv("GUARDRAIL_SLACK_API_URL", aws.slack.url + "/api/")
    token, signing = "xoxb-secret-token-123", "signing-secret-456"
    aws.secrets.create_secret(
        Name="iam-user-guardrail/dev/slack",
        SecretString=json.dumps({"bot_token": token, "channel": "C0SEC", "signing_secret": signing}),
    )
    aws.slack.behaviour.extend([(500, 0.0, {})] * 2)  # failures are where secrets tend to leak
    create_user(aws, "alice")
    caplog.clear()  # from here on, only what the guardrail logs
    assert aws.invoke(record("CreateUser", "alice", DEVELOPER))["alert"] == "queued"
    assert caplog.text  # something was logged
    assert token not in caplog.text and signing not in caplog.text
    assert token not in json.dumps(aws.items("OUTBOX"), default=str)
