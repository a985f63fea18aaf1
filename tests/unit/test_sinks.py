"""Pure parts of the sinks: the webhook document, PagerDuty events, ASFF findings, metric counts,
the outbox routing, and the settings that switch them on."""

from __future__ import annotations

import json

import pytest
from urllib3 import HTTPResponse

from chalicelib.alerts import AlertDeliveryError, deliver_queued
from chalicelib.allowlist import GlobSet
from chalicelib.events import parse_event
from chalicelib.iam import DONE, FAILED, ActionResult
from chalicelib.observability import decision_metrics
from chalicelib.policy import decide
from chalicelib.securityhub import build_finding, finding_id, user_prefix
from chalicelib.settings import Settings, SettingsError
from chalicelib.sinks import (
    ALERT_SCHEMA,
    RETRY_AFTER_MAX,
    CappedRetry,
    alert_document,
    dedup_key,
    pagerduty_resolve,
    pagerduty_trigger,
)
from chalicelib.store import utcnow
from tests.helpers import DEVELOPER, MALLORY, allowlist, record


def document(raw: dict, results: tuple = (), mode: str | None = None) -> dict:
    event = parse_event(raw)
    decision = decide(event, allowlist(), own_roles=GlobSet([]), mode=mode)
    return alert_document(event, decision, results)


def test_webhook_document_has_the_documented_fields_raw_and_json_safe() -> None:
    raw = record("CreateUser", "<!channel>", DEVELOPER)
    doc = document(raw, (ActionResult("attach_quarantine_policy", "<!channel>", DONE),))
    assert doc["schema"] == ALERT_SCHEMA
    expected = {"severity", "verdict", "rule", "account", "user", "actor", "reason", "event_id", "actions"}
    assert expected <= set(doc)
    assert doc["user"] == "<!channel>"  # raw: a webhook receiver is not Slack mrkdwn
    assert doc["actions"] == [
        {"action": "attach_quarantine_policy", "target": "<!channel>", "status": "done", "detail": ""}
    ]
    json.dumps(doc)


def test_only_critical_alerts_and_failed_actions_page() -> None:
    backdoor = document(record("CreateAccessKey", "bob", MALLORY, access_key_id="AKIAEXAMPLE"))
    trigger = pagerduty_trigger(backdoor)
    assert trigger is not None and trigger["payload"]["severity"] == "critical"
    assert trigger["dedup_key"] == "iam-user-guardrail/123456789012/bob/backdoor_key"
    assert "routing_key" not in trigger

    quarantine = document(record("CreateUser", "dana", DEVELOPER))
    assert quarantine["severity"] == "high" and pagerduty_trigger(quarantine) is None
    failed = document(record("CreateUser", "dana", DEVELOPER), (ActionResult("tag_user", "dana", FAILED),))
    assert pagerduty_trigger(failed)["payload"]["severity"] == "error"  # type: ignore[index]

    monitor = document(record("CreateAccessKey", "bob", MALLORY, access_key_id="AKIAEXAMPLE"), mode="monitor")
    assert pagerduty_trigger(monitor)["payload"]["summary"].startswith("[monitor]")  # type: ignore[index]


def test_dedup_key_and_resolve() -> None:
    assert dedup_key("1", "", "") == "iam-user-guardrail/1/-/alert"
    assert len(dedup_key("1", "u" * 300, "r")) == 255
    assert pagerduty_resolve("1", "bob", "backdoor_key") == {
        "event_action": "resolve",
        "dedup_key": "iam-user-guardrail/1/bob/backdoor_key",
    }


def test_retry_after_is_honoured_but_capped() -> None:
    retry = CappedRetry(total=1, respect_retry_after_header=True)
    assert retry.get_retry_after(HTTPResponse(status=429, headers={"Retry-After": "2"})) == 2
    assert retry.get_retry_after(HTTPResponse(status=429, headers={"Retry-After": "3600"})) == RETRY_AFTER_MAX
    assert retry.get_retry_after(HTTPResponse(status=503)) is None
    assert isinstance(retry.new(total=0), CappedRetry)  # urllib3 copies the class on each attempt


class Recorder:
    name = "webhook"

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, payload: dict) -> None:
        self.sent.append(payload)


def test_outbox_items_go_to_the_sink_they_name() -> None:
    slack, webhook = Recorder(), Recorder()
    deliver_queued({"message": '{"text": "old"}'}, slack=slack)  # written before `sink` existed
    deliver_queued({"message": '{"text": "s"}', "sink": "slack"}, slack=slack, sinks={"webhook": webhook})
    deliver_queued({"message": '{"event_id": "e"}', "sink": "webhook"}, slack=slack, sinks={"webhook": webhook})
    assert slack.sent == [{"text": "old"}, {"text": "s"}] and webhook.sent == [{"event_id": "e"}]
    with pytest.raises(AlertDeliveryError, match="pagerduty"):
        deliver_queued({"message": "{}", "sink": "pagerduty"}, slack=slack, sinks={"webhook": webhook})
    with pytest.raises(ValueError):
        deliver_queued({"message": "not json", "sink": "slack"}, slack=slack)


@pytest.mark.parametrize(
    ("verdict", "event_name", "steps", "alert", "statuses", "expected"),
    [
        ("quarantine", "CreateUser", ("attach_quarantine_policy",), "sent", (), {"Quarantined": 1}),
        ("approve", "CreateUser", ("tag_user",), "none", (), {"Approved": 1}),
        ("alert", "DetachUserPolicy", ("attach_quarantine_policy",), "sent", (), {"TamperReverted": 1}),
        (
            "alert",
            "CreateAccessKey",
            ("deactivate_key",),
            "queued",
            (),
            {"CredentialUndone": 1, "AlertDeliveryFailed": 1},
        ),
        ("alert", "CreateAccessKey", (), "sent", (), {}),  # a root key: nothing was undone
        (
            "quarantine",
            "CreateUser",
            (),
            "lost",
            ("account_unreachable",),
            {"Quarantined": 1, "AlertDeliveryFailed": 1, "AccountUnreachable": 1},
        ),
    ],
)
def test_decision_metrics(verdict, event_name, steps, alert, statuses, expected) -> None:
    got = decision_metrics(verdict=verdict, event_name=event_name, steps=steps, alert=alert, statuses=statuses)
    assert got == expected


def test_finding_ids_are_stable_and_user_prefixes_do_not_overlap() -> None:
    assert finding_id("1", "bob", "r") == "iam-user-guardrail/1/bob/r"
    assert not finding_id("1", "bobby", "r").startswith(user_prefix("1", "bob"))
    now = utcnow()
    common = {
        "product_arn": "arn:aws:securityhub:us-east-1:1:product/1/default",
        "home_account": "1",
        "account": "2",
        "user": "",
        "rule": "root_access_key",
        "title": "t" * 300,
        "description": "",
        "severity_name": "critical",
        "classifier": "IAM user credentials",
        "observed_at": now,
        "now": now,
        "remediation": "r",
        "remediation_url": "https://example.com",
    }
    finding = build_finding(**common)
    assert finding["Resources"][0] == {
        "Partition": "aws",
        "Region": "us-east-1",
        "Type": "AwsAccount",
        "Id": "AWS::::Account:2",
    }
    assert len(finding["Title"]) == 256 and finding["Description"]
    archived = build_finding(**common, archived=True)
    assert archived["RecordState"] == "ARCHIVED" and archived["Workflow"] == {"Status": "RESOLVED"}


def test_sink_settings() -> None:
    s = Settings.from_env(
        {
            "GUARDRAIL_SECURITY_HUB": "TRUE",
            "GUARDRAIL_PAGERDUTY_ROUTING_KEY": "k",
            "GUARDRAIL_WEBHOOK_URL": "https://x/y",
        }
    )
    assert s.security_hub and s.pagerduty_routing_key == "k" and s.webhook_url == "https://x/y"
    assert "https://x/y" not in repr(s) and "'k'" not in repr(s)  # secrets stay out of reprs and logs
    with pytest.raises(SettingsError, match="GUARDRAIL_SECURITY_HUB"):
        Settings.from_env({"GUARDRAIL_SECURITY_HUB": "maybe"})
    with pytest.raises(SettingsError, match="GUARDRAIL_WEBHOOK_URL") as raised:
        Settings.from_env({"GUARDRAIL_WEBHOOK_URL": "ftp://secret-token@host"})
    assert "secret-token" not in str(raised.value)
    with pytest.raises(SettingsError, match="GUARDRAIL_SLACK_SECRET_ID"):
        Settings.from_env({"GUARDRAIL_PAGERDUTY_ROUTING_KEY": "secret"})
