"""Alert destinations besides Slack, on loopback and moto server: PagerDuty, the JSON webhook,
Security Hub (ASFF), and the structured logs and EMF metrics of a decision."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.sinks import ALERT_SCHEMA
from devtools.devserver import SlackReceiver
from tests.functional.approval_helpers import APPROVER, api, interaction_body, post_interaction, signed_headers
from tests.functional.approval_helpers import store_slack_secret as store_secret
from tests.functional.conftest import Aws
from tests.helpers import ACCOUNT, MALLORY, TERRAFORM, record

ROUTING_KEY = "R0UTINGKEY0000000000000000000000"
PRODUCT_ARN = f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/{ACCOUNT}/default"


@pytest.fixture(scope="module")
def pagerduty() -> Iterator[SlackReceiver]:
    with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def webhook() -> Iterator[SlackReceiver]:
    with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
def sinks(aws: Aws, pagerduty: SlackReceiver, webhook: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> Aws:
    pagerduty.clear()
    webhook.clear()
    monkeypatch.setenv("GUARDRAIL_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("GUARDRAIL_PAGERDUTY_URL", f"{pagerduty.url}/v2/enqueue")
    monkeypatch.setenv("GUARDRAIL_WEBHOOK_URL", f"{webhook.url}/siem")
    monkeypatch.setenv("GUARDRAIL_SINK_TIMEOUT", "1")
    monkeypatch.setenv("GUARDRAIL_SINK_RETRIES", "1")
    return aws


@pytest.fixture
def hub(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("GUARDRAIL_SECURITY_HUB", "true")
    client = boto3.client("securityhub")
    client.enable_security_hub()
    return client


def backdoor(aws: Aws, user: str = "bob") -> tuple[dict[str, Any], str]:
    aws.iam.create_user(UserName=user)
    key = aws.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    raw = record("CreateAccessKey", user, MALLORY, access_key_id=key)
    return raw, key


def findings(client: Any) -> list[dict[str, Any]]:
    return client.get_findings()["Findings"]


def emf(stdout: str) -> list[dict[str, Any]]:
    blobs = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"_aws"')]
    return blobs


def log_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"level"')]


# -- PagerDuty and the webhook ------------------------------------------------------------------


def test_backdoor_key_pages_and_reaches_the_webhook(
    sinks: Aws, pagerduty: SlackReceiver, webhook: SlackReceiver
) -> None:
    raw, _key = backdoor(sinks)
    result = sinks.invoke(raw)
    assert result["verdict"] == "quarantine" and result["severity"] == "critical"

    [page] = [r for r in pagerduty.requests]
    assert page["path"] == "/v2/enqueue"
    body = page["json"]
    assert body["routing_key"] == ROUTING_KEY and body["event_action"] == "trigger"
    assert body["dedup_key"] == f"iam-user-guardrail/{ACCOUNT}/bob/backdoor_key"
    assert body["payload"]["severity"] == "critical"
    assert body["payload"]["source"] == f"aws-account-{ACCOUNT}" and body["payload"]["component"] == "bob"
    assert body["payload"]["custom_details"]["event_id"] == raw["eventID"]

    [hook] = webhook.requests
    document = hook["json"]
    assert document["schema"] == ALERT_SCHEMA
    assert {k: document[k] for k in ("severity", "verdict", "rule", "account", "user", "actor", "event_id")} == {
        "severity": "critical",
        "verdict": "quarantine",
        "rule": "backdoor_key",
        "account": ACCOUNT,
        "user": "bob",
        "actor": MALLORY["arn"],
        "event_id": raw["eventID"],
    }
    assert document["backdoor"] is True and document["reason"]
    assert {a["action"]: a["status"] for a in document["actions"]} == {
        "deactivate_key": "done",
        "attach_quarantine_policy": "done",
        "tag_user": "done",
    }
    assert ROUTING_KEY not in json.dumps(document)
    assert sinks.items("OUTBOX") == []


def test_an_approved_event_pages_nobody(sinks: Aws, pagerduty: SlackReceiver, webhook: SlackReceiver) -> None:
    sinks.iam.create_user(UserName="svc-datadog", Path="/integrations/")
    result = sinks.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))
    assert result["verdict"] == "approve"
    assert pagerduty.requests == [] and webhook.requests == []


def test_a_high_alert_reaches_the_webhook_but_does_not_page(
    sinks: Aws, pagerduty: SlackReceiver, webhook: SlackReceiver
) -> None:
    sinks.iam.create_user(UserName="dana-debug")
    assert sinks.invoke(record("CreateUser", "dana-debug", MALLORY))["severity"] == "high"
    assert pagerduty.requests == []
    assert [r["json"]["user"] for r in webhook.requests] == ["dana-debug"]


def test_429_then_200_is_retried_honouring_retry_after(sinks: Aws, webhook: SlackReceiver) -> None:
    webhook.behaviour = [(429, 0.0, {"Retry-After": "1"})]
    raw, _ = backdoor(sinks)
    sinks.invoke(raw)
    assert len(webhook.requests) == 2
    assert webhook.requests[0]["json"] == webhook.requests[1]["json"]
    assert sinks.items("OUTBOX") == []


def test_dead_receivers_queue_the_alert_and_the_sweep_delivers_it(
    sinks: Aws, pagerduty: SlackReceiver, webhook: SlackReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    pagerduty.behaviour = [(503, 0.0, {})] * 2
    webhook.behaviour = [(500, 0.0, {})] * 2
    raw, key = backdoor(sinks)
    result = sinks.invoke(raw)
    assert sinks.user_state("bob")["keys"][key] == "Inactive"  # the quarantine never waits for a sink
    assert result["alert"] == "sent"  # Slack got it
    assert len(pagerduty.requests) == 2 and len(webhook.requests) == 2  # one retry each
    queued = {item["sink"]: item for item in sinks.items("OUTBOX")}
    assert set(queued) == {"pagerduty", "webhook"}
    assert ROUTING_KEY not in json.dumps(queued, default=str)  # the key is added when sending, never stored
    assert json.loads(queued["webhook"]["message"])["event_id"] == raw["eventID"]
    metrics = emf(capsys.readouterr().out)
    assert sum(blob.get("AlertDeliveryFailed", [0])[0] for blob in metrics) == 2

    pagerduty.clear()
    webhook.clear()
    slack_before = len(sinks.slack.requests)
    report = sinks.invoke_sweep()
    assert report["resent"] == 2 and report["still_unsent"] == 0
    assert pagerduty.messages[0]["routing_key"] == ROUTING_KEY
    assert pagerduty.messages[0]["dedup_key"] == f"iam-user-guardrail/{ACCOUNT}/bob/backdoor_key"
    assert webhook.messages[0]["event_id"] == raw["eventID"]
    assert sinks.items("OUTBOX") == []
    assert all("routing_key" not in r["json"] for r in sinks.slack.requests[slack_before:])  # nothing went to Slack


def test_the_sweeps_actions_and_an_ended_exception_reach_the_webhook(
    sinks: Aws, pagerduty: SlackReceiver, webhook: SlackReceiver
) -> None:
    sinks.iam.create_user(UserName="legacy")
    sinks.invoke_sweep()
    [document] = [r["json"] for r in webhook.requests]
    assert document["schema"] == ALERT_SCHEMA and document["user"] == "legacy"
    assert document["verdict"] == "quarantine" and document["rule"].startswith("sweep_")
    assert document["actions"] == [{"action": "quarantine", "target": "legacy", "status": "done", "detail": ""}]
    assert document["event_id"] == "" and document["actor"] == "iam-user-guardrail"
    webhook.clear()
    assert api("POST", "/exceptions", body={"account": ACCOUNT, "user": "legacy", "days": 1, "reason": "r"})[0] == 201
    path = {"account_id": ACCOUNT, "user_name": "legacy"}
    assert api("DELETE", "/exceptions/{account_id}/{user_name}", path_params=path)[0] == 200
    [ended] = [r["json"] for r in webhook.requests]
    assert ended["rule"] == "exception_revoked" and ended["verdict"] == "quarantine"
    assert pagerduty.requests == []  # high, not critical: nobody is paged


def test_old_outbox_items_without_a_sink_still_go_to_slack(aws: Aws) -> None:
    """Items queued before sinks existed carry no `sink`: they are Slack's."""
    item = {
        "pk": {"S": "OUTBOX"},
        "sk": {"S": "2026-11-29T09:00:00.000000Z#ev-old"},
        "event_id": {"S": "ev-old"},
        "message": {"S": json.dumps({"text": "queued before sinks"})},
    }
    aws.ddb.put_item(TableName=aws.table, Item=item)
    assert aws.invoke_sweep()["resent"] == 1
    assert {"text": "queued before sinks"} in aws.slack.messages


def test_routing_key_and_webhook_from_secrets_manager(
    aws: Aws, pagerduty: SlackReceiver, webhook: SlackReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    pagerduty.clear()
    webhook.clear()
    store_secret(
        aws, pagerduty_routing_key=ROUTING_KEY, alert_webhook_url=f"{webhook.url}/siem", alert_webhook_token="t0k3n"
    )
    monkeypatch.setenv("GUARDRAIL_PAGERDUTY_ROUTING_KEY", "secret")
    monkeypatch.setenv("GUARDRAIL_PAGERDUTY_URL", f"{pagerduty.url}/v2/enqueue")
    monkeypatch.setenv("GUARDRAIL_WEBHOOK_URL", "secret")
    raw, _ = backdoor(aws)
    aws.invoke(raw)
    assert pagerduty.messages[0]["routing_key"] == ROUTING_KEY
    [hook] = webhook.requests
    assert hook["path"] == "/siem" and hook["headers"]["Authorization"] == "Bearer t0k3n"


def test_keep_quarantined_resolves_the_incident(
    sinks: Aws, pagerduty: SlackReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_secret(sinks)
    raw, _ = backdoor(sinks)
    sinks.invoke(raw)
    pagerduty.clear()
    value = {"a": ACCOUNT, "u": "bob", "e": raw["eventID"]}
    body = interaction_body(sinks, "guardrail_keep_quarantined", value, user_id=APPROVER)
    assert post_interaction(body, signed_headers(body)).status_code == 200
    assert pagerduty.messages == [
        {
            "event_action": "resolve",
            "dedup_key": f"iam-user-guardrail/{ACCOUNT}/bob/backdoor_key",
            "routing_key": ROUTING_KEY,
        }
    ]


# -- Security Hub -------------------------------------------------------------------------------


def test_quarantine_imports_one_asff_finding(aws: Aws, hub: Any) -> None:
    raw, _key = backdoor(aws)
    aws.invoke(raw)
    [finding] = findings(hub)
    assert finding["SchemaVersion"] == "2018-10-08"
    assert finding["Id"] == f"iam-user-guardrail/{ACCOUNT}/bob/backdoor_key"
    assert finding["ProductArn"] == PRODUCT_ARN
    assert finding["GeneratorId"] == "iam-user-guardrail/backdoor_key"
    assert finding["AwsAccountId"] == ACCOUNT
    assert finding["Types"] == ["Software and Configuration Checks/AWS Security Best Practices/IAM user credentials"]
    assert finding["Severity"] == {"Label": "CRITICAL", "Original": "critical"}
    assert finding["FindingProviderFields"]["Severity"]["Label"] == "CRITICAL"
    assert finding["RecordState"] == "ACTIVE"
    assert "Workflow" not in finding
    assert finding["Title"].startswith("IAM user quarantined: bob")
    assert "backdoor" in finding["Description"]
    assert "Approve" in finding["Remediation"]["Recommendation"]["Text"]
    assert finding["Remediation"]["Recommendation"]["Url"].endswith("/iam/home#/users/details/bob")
    assert raw["eventID"] in finding["SourceUrl"]
    [resource] = finding["Resources"]
    assert resource["Type"] == "AwsIamUser" and resource["Id"] == f"arn:aws:iam::{ACCOUNT}:user/bob"
    assert resource["Details"]["AwsIamUser"]["UserName"] == "bob"
    fields = finding["ProductFields"]
    assert fields["iam-user-guardrail/EventId"] == raw["eventID"]
    assert fields["iam-user-guardrail/Actor"] == MALLORY["arn"]
    assert aws.calls["securityhub.BatchImportFindings"] == 1


def test_a_repeat_updates_the_finding(aws: Aws, hub: Any) -> None:
    raw, _ = backdoor(aws)
    aws.invoke(raw)
    second = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    aws.invoke(record("CreateAccessKey", "bob", MALLORY, access_key_id=second))
    [finding] = findings(hub)
    assert finding["ProductFields"]["iam-user-guardrail/EventId"] != raw["eventID"]


def test_slack_approval_archives_the_finding(aws: Aws, hub: Any) -> None:
    store_secret(aws)
    raw, _ = backdoor(aws)
    aws.invoke(raw)
    value = {"a": ACCOUNT, "u": "bob", "e": raw["eventID"]}
    body = interaction_body(aws, "guardrail_approve_7", value, user_id=APPROVER)
    assert post_interaction(body, signed_headers(body)).status_code == 200
    [finding] = findings(hub)
    assert finding["RecordState"] == "ARCHIVED"
    assert finding["ProductFields"]["iam-user-guardrail/ArchivedBecause"] == "exception granted"
    assert finding["Severity"]["Label"] == "CRITICAL"  # the rest of the finding is unchanged


def test_an_approval_for_one_user_leaves_the_others_findings(aws: Aws, hub: Any) -> None:
    """`bob` and `bobby`: the archive matches the whole user name, not a prefix of it."""
    store_secret(aws)
    raw, _ = backdoor(aws)
    aws.invoke(raw)
    other, _ = backdoor(aws, "bobby")
    aws.invoke(other)
    value = {"a": ACCOUNT, "u": "bob", "e": raw["eventID"]}
    body = interaction_body(aws, "guardrail_approve_7", value, user_id=APPROVER)
    post_interaction(body, signed_headers(body))
    states = {f["Resources"][0]["Details"]["AwsIamUser"]["UserName"]: f["RecordState"] for f in findings(hub)}
    assert states == {"bob": "ARCHIVED", "bobby": "ACTIVE"}


def test_rest_grant_archives_and_revoke_reopens_with_a_new_finding(
    sinks: Aws, hub: Any, pagerduty: SlackReceiver
) -> None:
    raw, _ = backdoor(sinks)
    sinks.invoke(raw)
    pagerduty.clear()
    body = {"account": ACCOUNT, "user": "bob", "days": 3, "reason": "vendor migration"}
    assert api("POST", "/exceptions", body=body)[0] == 201
    assert [f["RecordState"] for f in findings(hub)] == ["ARCHIVED"]
    assert [m["event_action"] for m in pagerduty.messages] == ["resolve"]  # the REST grant closes the page too
    path = {"account_id": ACCOUNT, "user_name": "bob"}
    assert api("DELETE", "/exceptions/{account_id}/{user_name}", path_params=path)[0] == 200
    states = {f["Id"].rsplit("/", 1)[1]: f["RecordState"] for f in findings(hub)}
    assert states == {"backdoor_key": "ARCHIVED", "exception_revoked": "ACTIVE"}


def test_a_deleteuser_event_archives_the_users_findings(aws: Aws, hub: Any) -> None:
    raw, _ = backdoor(aws)
    aws.invoke(raw)
    other, _ = backdoor(aws, "bobby")
    aws.invoke(other)
    assert aws.invoke(record("DeleteUser", "bob", TERRAFORM))["verdict"] == "ignore"
    states = {f["Resources"][0]["Details"]["AwsIamUser"]["UserName"]: f["RecordState"] for f in findings(hub)}
    assert states == {"bob": "ARCHIVED", "bobby": "ACTIVE"}
    [bob] = [f for f in findings(hub) if f["RecordState"] == "ARCHIVED"]
    assert bob["ProductFields"]["iam-user-guardrail/ArchivedBecause"] == "the user was deleted"


def test_hub_disabled_never_blocks_the_quarantine(
    aws: Aws, hub: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.refuse_path["/findings/import"] = "InvalidAccessException"
    raw, key = backdoor(aws)
    result = aws.invoke(raw)
    assert result["verdict"] == "quarantine" and result["alert"] == "sent"
    state = aws.user_state("bob")
    assert state["keys"][key] == "Inactive" and state["policies"] == ["iam-user-guardrail-quarantine"]
    assert findings(hub) == []
    out = capsys.readouterr().out
    assert sum(blob.get("SecurityHubImportFailed", [0])[0] for blob in emf(out)) == 1
    [line] = [line for line in log_lines(out) if line["message"] == "Security Hub not updated"]
    assert line["error"] == "InvalidAccessException" and line["correlation_id"] == raw["eventID"]


def test_throttled_hub_is_counted_and_the_event_still_recorded(
    aws: Aws, hub: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.refuse_path["/findings/import"] = "ThrottlingException"
    raw, key = backdoor(aws)
    assert aws.invoke(raw)["status"] == "handled"
    assert aws.user_state("bob")["keys"][key] == "Inactive"
    assert len(aws.items(f"EVENT#{raw['eventID']}")) == 1  # recorded: no Lambda retry, no second action
    assert sum(blob.get("SecurityHubImportFailed", [0])[0] for blob in emf(capsys.readouterr().out)) == 1


def test_sweep_imports_hygiene_findings_and_archives_deleted_users(aws: Aws, hub: Any) -> None:
    aws.iam.create_user(UserName="legacy")
    report = aws.invoke_sweep()
    assert [f["user"] for f in report["findings"]] == ["legacy"]
    [finding] = findings(hub)
    assert finding["Id"].startswith(f"iam-user-guardrail/{ACCOUNT}/legacy/sweep_")
    assert finding["Types"] == ["Software and Configuration Checks/AWS Security Best Practices/IAM user hygiene"]
    for policy in aws.iam.list_attached_user_policies(UserName="legacy")["AttachedPolicies"]:
        aws.iam.detach_user_policy(UserName="legacy", PolicyArn=policy["PolicyArn"])
    for tag in aws.iam.list_user_tags(UserName="legacy")["Tags"]:
        aws.iam.untag_user(UserName="legacy", TagKeys=[tag["Key"]])
    aws.iam.delete_user(UserName="legacy")
    aws.invoke_sweep()
    assert [f["RecordState"] for f in findings(hub)] == ["ARCHIVED"]


# -- logs and metrics ---------------------------------------------------------------------------


def test_one_quarantine_logs_json_with_the_event_id_and_emits_emf(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    aws.iam.create_user(UserName="dana-debug")
    raw = record("CreateUser", "dana-debug", MALLORY)
    aws.invoke(raw)
    out = capsys.readouterr().out
    [handled] = [line for line in log_lines(out) if line["message"] == "event handled"]
    assert handled["correlation_id"] == raw["eventID"] and handled["event_id"] == raw["eventID"]
    assert handled["verdict"] == "quarantine" and handled["rule"] == "unapproved_user"
    assert handled["service"] == "iam-user-guardrail"
    [blob] = emf(out)
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "IamUserGuardrail"
    assert directive["Dimensions"] == [["service"]]  # never the account: low cardinality
    assert {m["Name"] for m in directive["Metrics"]} == {"Quarantined"}
    assert blob["Quarantined"] == [1.0]


def test_slack_down_counts_a_failed_delivery(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    aws.slack.behaviour = [(500, 0.0, {})] * 2
    aws.iam.create_user(UserName="dana-debug")
    assert aws.invoke(record("CreateUser", "dana-debug", MALLORY))["alert"] == "queued"
    [blob] = emf(capsys.readouterr().out)
    assert blob["AlertDeliveryFailed"] == [1.0] and blob["Quarantined"] == [1.0]


def test_the_sweep_publishes_findings_and_stuck_alerts(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    aws.iam.create_user(UserName="legacy")
    item = {
        "pk": {"S": "OUTBOX"},
        "sk": {"S": "2026-11-29T09:00:00.000000Z#ev-stuck"},
        "sink": {"S": "webhook"},  # a sink that is not configured any more: stays queued, counted
        "event_id": {"S": "ev-stuck"},
        "message": {"S": "{}"},
    }
    aws.ddb.put_item(TableName=aws.table, Item=item)
    capsys.readouterr()
    report = aws.invoke_sweep()
    assert report["still_unsent"] == 1
    [blob] = emf(capsys.readouterr().out)
    assert blob["SweepFindings"] == [float(len(report["findings"]))] and blob["AlertQueued"] == [1.0]


def test_no_sink_secret_reaches_the_logs_or_the_outbox(
    aws: Aws,
    pagerduty: SlackReceiver,
    webhook: SlackReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    pagerduty.clear()
    webhook.clear()
    hook_path, token = "/hooks/s3cr3t-path-789", "webhook-token-456"
    store_secret(
        aws, pagerduty_routing_key=ROUTING_KEY, alert_webhook_url=webhook.url + hook_path, alert_webhook_token=token
    )
    monkeypatch.setenv("GUARDRAIL_PAGERDUTY_ROUTING_KEY", "secret")
    monkeypatch.setenv("GUARDRAIL_PAGERDUTY_URL", f"{pagerduty.url}/v2/enqueue")
    monkeypatch.setenv("GUARDRAIL_WEBHOOK_URL", "secret")
    monkeypatch.setenv("GUARDRAIL_SINK_RETRIES", "0")
    pagerduty.behaviour = [(500, 0.0, {})]
    webhook.behaviour = [(500, 0.0, {})]
    raw, _ = backdoor(aws)
    capsys.readouterr()
    caplog.clear()
    aws.invoke(raw)
    captured = capsys.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "alert not delivered" in logged
    outbox = json.dumps(aws.items("OUTBOX"), default=str)
    for secret in (ROUTING_KEY, hook_path, token):
        assert secret not in logged and secret not in outbox
