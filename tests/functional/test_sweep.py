"""The sweep and tamper protection against moto server: converge to the truth whatever was missed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import runtime
from chalicelib.cli import main
from chalicelib.sweep import SweepReport
from devtools.synth import cloudtrail_record, role_identity, user_identity
from tests.functional.approval_helpers import interaction_body, post_interaction, signed_headers, store_slack_secret
from tests.functional.conftest import Aws
from tests.helpers import ACCOUNT, MALLORY, TERRAFORM, record

POLICY = "iam-user-guardrail-quarantine"
POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}"


def sweep(aws: Aws, *, dry_run: bool = False, days_later: int = 0, pre_existing: bool = True) -> SweepReport:
    """Run one account's sweep. `pre_existing`: the users made so far existed before the guardrail
    began to watch (bootstrap marks that moment; these tests move it to now), so the sweep may
    approve an integration-named one it never saw created (test_redteam: one made while it watched)."""
    if pre_existing:
        watch_from_now(aws)
    aws._instrument()
    now = datetime.now(UTC) + timedelta(days=days_later)
    report = SweepReport()
    runtime.get().reconciler(dry_run=dry_run, clock=lambda: now).run(report)
    return report


def watch_from_now(aws: Aws) -> None:
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    item = {"pk": {"S": "META"}, "sk": {"S": f"WATCHING#{ACCOUNT}"}, "since": {"S": moment}}
    aws.ddb.put_item(TableName=aws.table, Item=item)


def findings(report: SweepReport) -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    for row in report.findings:
        result.setdefault(row.user, []).append((row.finding, row.result))
    return result


def existing_account(aws: Aws) -> dict[str, str]:
    """Users that existed before the guardrail, each with a story."""
    iam = aws.iam
    iam.create_user(UserName="svc-datadog", Path="/integrations/")  # approved, never tagged
    iam.create_user(UserName="legacy-admin")  # unapproved
    iam.create_user(UserName="svc-old")  # integration expired
    iam.create_user(UserName="contractor")  # holds an exception
    keys = {
        "legacy": iam.create_access_key(UserName="legacy-admin")["AccessKey"]["AccessKeyId"],
        "contractor": iam.create_access_key(UserName="contractor")["AccessKey"]["AccessKeyId"],
    }
    aws.ddb.put_item(
        TableName=aws.table,
        Item={
            "pk": {"S": "EXCEPTION"},
            "sk": {"S": f"{ACCOUNT}#contractor"},
            "account": {"S": ACCOUNT},
            "user": {"S": "contractor"},
            "user_id": {"S": iam.get_user(UserName="contractor")["User"]["UserId"]},
            "state": {"S": "active"},
            "expires_at": {"S": (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        },
    )
    return keys


def test_pre_existing_users_are_reconciled(aws: Aws) -> None:
    keys = existing_account(aws)
    report = sweep(aws)
    assert findings(report) == {
        "svc-datadog": [("missing_tags", "done")],
        "legacy-admin": [("unapproved", "done")],
        "svc-old": [("unapproved", "done")],
    }
    assert aws.user_state("svc-datadog")["tags"]["guardrail:status"] == "approved"
    legacy = aws.user_state("legacy-admin")
    assert legacy["policies"] == [POLICY] and legacy["keys"] == {keys["legacy"]: "Inactive"}
    assert legacy["tags"]["guardrail:status"] == "quarantined"
    assert aws.user_state("svc-old")["policies"] == [POLICY]
    assert aws.user_state("contractor") == {"tags": {}, "policies": [], "keys": {keys["contractor"]: "Active"}}
    assert {a["kind"] for a in aws.items("AUDIT")} == {"sweep_quarantine", "sweep_tag"}
    assert {r["sk"]: r.get("deactivated_keys") for r in aws.items("USER")}[f"{ACCOUNT}#legacy-admin"] == {
        keys["legacy"]
    }
    # a second run finds nothing left to do
    assert sweep(aws).findings == []


def test_dry_run_changes_nothing(aws: Aws) -> None:
    existing_account(aws)
    report = sweep(aws, dry_run=True)
    assert {row.result for row in report.findings} == {"not done (dry run or monitor mode)"}
    assert aws.user_state("legacy-admin")["policies"] == []
    assert aws.user_state("svc-datadog")["tags"] == {}
    assert not [c for c in aws.calls if c.split(".")[1].startswith(("Attach", "Tag", "Update", "Put", "Transact"))]


def test_monitor_mode_only_reports(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_MODE", "monitor")
    runtime.reset()
    existing_account(aws)
    assert findings(sweep(aws))["legacy-admin"] == [("unapproved", "not done (dry run or monitor mode)")]
    assert aws.user_state("legacy-admin")["policies"] == []


def test_missed_events_are_caught(aws: Aws) -> None:
    aws.iam.create_user(
        UserName="svc-datadog",
        Path="/integrations/",
        Tags=[{"Key": "guardrail:status", "Value": "approved"}, {"Key": "guardrail:integration", "Value": "datadog"}],
    )
    first = aws.iam.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
    second = aws.iam.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
    aws.iam.create_login_profile(UserName="svc-datadog", Password="Missed-Event-Passw0rd!")
    report = sweep(aws)
    assert findings(report)["svc-datadog"] == [
        ("too_many_keys", "done"),
        ("console_not_allowed", "done"),
        ("no_mfa", ""),
    ]
    assert aws.user_state("svc-datadog")["keys"] == {first: "Active", second: "Inactive"}
    with pytest.raises(aws.iam.exceptions.NoSuchEntityException):
        aws.iam.get_login_profile(UserName="svc-datadog")


def test_console_user_without_mfa_is_quarantined_after_the_grace_period(aws: Aws) -> None:
    aws.iam.create_user(
        UserName="svc-console",
        Tags=[
            {"Key": "guardrail:status", "Value": "approved"},
            {"Key": "guardrail:integration", "Value": "console-vendor"},
        ],
    )
    aws.iam.create_login_profile(UserName="svc-console", Password="Console-Passw0rd-123!")
    row = findings(sweep(aws))["svc-console"]
    assert row == [("no_mfa", "")]
    assert aws.user_state("svc-console")["policies"] == []
    assert findings(sweep(aws, days_later=8))["svc-console"] == [("no_mfa", "done")]
    assert aws.user_state("svc-console")["policies"] == [POLICY]


def test_old_and_unused_keys_are_reported_with_the_owner(aws: Aws) -> None:
    aws.iam.create_user(
        UserName="svc-datadog",
        Path="/integrations/",
        Tags=[{"Key": "guardrail:status", "Value": "approved"}, {"Key": "guardrail:integration", "Value": "datadog"}],
    )
    aws.iam.create_access_key(UserName="svc-datadog")
    report = sweep(aws, days_later=100)
    rows = [(r.finding, r.owner) for r in report.findings]
    assert rows == [("old_key", "platform@example.com"), ("unused_key", "platform@example.com")]


def test_sweep_call_count_is_bulk(aws: Aws) -> None:
    for n in range(25):
        aws.iam.create_user(UserName=f"quarantined-{n}")
        aws.iam.attach_user_policy(UserName=f"quarantined-{n}", PolicyArn=POLICY_ARN)
    for n in range(5):
        aws.iam.create_user(
            UserName=f"svc-datadog-{n}",
            Path="/integrations/",
            Tags=[
                {"Key": "guardrail:status", "Value": "approved"},
                {"Key": "guardrail:integration", "Value": "datadog"},
            ],
        )
    aws.iam.create_user(UserName="newcomer")
    aws.calls.clear()
    report = sweep(aws)
    assert report.users == 31 and [r.user for r in report.findings] == ["newcomer"]
    reads = {k: v for k, v in aws.calls.items() if k.split(".")[1].startswith(("Get", "Generate", "Query"))}
    assert reads.pop("iam.GenerateCredentialReport") <= 2
    assert reads == {
        "iam.GetAccountAuthorizationDetails": 1,
        "iam.GetCredentialReport": 1,
        "dynamodb.Query": 2,
        # the quarantine policy's default version, read once per account: intact, so nothing more
        "iam.GetPolicy": 1,
        "iam.GetPolicyVersion": 1,
    }
    writes = {k: v for k, v in aws.calls.items() if k not in reads and "CredentialReport" not in k}
    assert writes.pop("dynamodb.BatchGetItem") == 1  # when the guardrail began to watch the account
    assert writes == {
        # a quarantine deactivates every kind of credential the user holds: one list call per kind.
        # The 5 approved integration users existed before the guardrail watched them (no record):
        # their other credential kinds are not listed (test_redteam: one it watched is)
        "iam.ListAccessKeys": 1,
        "iam.ListSSHPublicKeys": 1,
        "iam.ListServiceSpecificCredentials": 1,
        "iam.ListSigningCertificates": 1,
        "iam.AttachUserPolicy": 1,
        "iam.TagUser": 1,
        "dynamodb.TransactWriteItems": 1,
    }


def test_sweep_lambda_alerts_what_it_did_and_posts_one_digest_a_day(aws: Aws) -> None:
    existing_account(aws)
    result = aws.invoke_sweep()
    assert {f["user"] for f in result["findings"]} == {"svc-datadog", "legacy-admin", "svc-old"}
    titles = [m["blocks"][0]["text"]["text"] for m in aws.slack.messages]
    assert titles[0] == "Sweep: the guardrail acted on missed changes"
    assert titles[1].startswith("Daily IAM user digest")
    assert "owner platform@example.com" in json.dumps(aws.slack.messages[1])
    aws.slack.clear()
    aws.iam.create_user(UserName="late-arrival")
    second = aws.invoke_sweep()
    assert second["digest_sent"] is False
    assert [m["blocks"][0]["text"]["text"] for m in aws.slack.messages] == [
        "Sweep: the guardrail acted on missed changes"
    ]


def test_cli_sweep_table_json_and_exit_codes(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    existing_account(aws)
    assert main(["sweep", "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert "legacy-admin" in table and "unapproved" in table and "4 user(s), 3 finding(s)" in table
    assert main(["sweep", "--dry-run", "--json", "--fail-on-findings"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["users"] == 4 and len(data["findings"]) == 3
    assert aws.user_state("legacy-admin")["policies"] == []
    assert main(["sweep"]) == 0
    capsys.readouterr()
    assert main(["sweep", "--fail-on-findings"]) == 0  # converged
    aws.ddb.delete_table(TableName=aws.table)
    assert main(["sweep", "--dry-run"]) == 2
    assert "sweep could not run" in capsys.readouterr().err


# -- tamper protection in the event path -------------------------------------------------------


def quarantined(aws: Aws) -> tuple[str, str]:
    aws.iam.create_user(UserName="bob")
    key = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    raw = record("CreateAccessKey", "bob", MALLORY, access_key_id=key)
    assert aws.invoke(raw)["verdict"] == "quarantine"
    aws.slack.clear()
    return key, raw["eventID"]


def tamper_event(name: str, request: dict, identity: dict = MALLORY) -> dict:
    raw = cloudtrail_record(name, user="bob", identity=identity)
    raw["requestParameters"] = {"userName": "bob", **request}
    raw["responseElements"] = None
    return raw


def test_detach_of_quarantine_policy_is_reverted(aws: Aws) -> None:
    quarantined(aws)
    aws.iam.detach_user_policy(UserName="bob", PolicyArn=POLICY_ARN)
    result = aws.invoke(tamper_event("DetachUserPolicy", {"policyArn": POLICY_ARN}))
    assert (result["verdict"], result["severity"]) == ("alert", "critical")
    assert aws.user_state("bob")["policies"] == [POLICY]
    assert "tamper: the quarantine policy was detached" in json.dumps(aws.slack.messages[0])


def test_reactivated_key_is_deactivated_again(aws: Aws) -> None:
    key, _ = quarantined(aws)
    aws.iam.update_access_key(UserName="bob", AccessKeyId=key, Status="Active")
    aws.invoke(tamper_event("UpdateAccessKey", {"accessKeyId": key, "status": "Active"}))
    assert aws.user_state("bob")["keys"] == {key: "Inactive"}
    assert len(aws.slack.messages) == 1


def test_guardrail_tags_are_restored(aws: Aws) -> None:
    quarantined(aws)
    aws.iam.tag_user(
        UserName="bob",
        Tags=[{"Key": "guardrail:status", "Value": "approved"}, {"Key": "guardrail:integration", "Value": "datadog"}],
    )
    aws.invoke(
        tamper_event(
            "TagUser",
            {
                "tags": [
                    {"key": "guardrail:status", "value": "approved"},
                    {"key": "guardrail:integration", "value": "datadog"},
                ]
            },
        )
    )
    tags = aws.user_state("bob")["tags"]
    assert tags["guardrail:status"] == "quarantined" and "guardrail:integration" not in tags
    aws.iam.untag_user(UserName="bob", TagKeys=["guardrail:status"])
    aws.invoke(tamper_event("UntagUser", {"tagKeys": ["guardrail:status"]}))
    assert aws.user_state("bob")["tags"]["guardrail:status"] == "quarantined"
    assert len(aws.slack.messages) == 2


def test_guardrails_own_release_is_not_tamper(aws: Aws) -> None:
    store_slack_secret(aws)
    key, event_id = quarantined(aws)
    body = interaction_body(aws, "guardrail_approve_7", {"a": ACCOUNT, "u": "bob", "e": event_id})
    assert post_interaction(body, signed_headers(body)).status_code == 200
    own = role_identity(ACCOUNT, "iam-user-guardrail-dev-api_handler", "iam-user-guardrail-dev-api_handler")
    for raw in (
        tamper_event("DetachUserPolicy", {"policyArn": POLICY_ARN}, own),
        tamper_event("UpdateAccessKey", {"accessKeyId": key, "status": "Active"}, own),
        tamper_event("TagUser", {"tags": [{"key": "guardrail:status", "value": "exception"}]}, own),
    ):
        assert aws.invoke(raw)["verdict"] == "ignore"
    # during the exception the user itself may manage its key too (anyone else: tests/functional/test_insider.py)
    bob = user_identity(ACCOUNT, "bob")
    assert aws.invoke(tamper_event("UpdateAccessKey", {"accessKeyId": key, "status": "Active"}, bob))["verdict"] == (
        "approve"
    )
    assert aws.user_state("bob")["policies"] == [] and aws.user_state("bob")["keys"] == {key: "Active"}
    assert [m for m in aws.slack.messages if "tamper" in json.dumps(m)] == []


def test_rule_pattern_subscribes_to_tamper_events() -> None:
    from app import IAM_EVENT_PATTERN

    assert {"DetachUserPolicy", "UpdateAccessKey", "TagUser", "UntagUser", "CreateUser"} <= set(
        IAM_EVENT_PATTERN["detail"]["eventName"]
    )


def test_tamper_by_provisioner_is_still_reverted(aws: Aws) -> None:
    quarantined(aws)
    aws.iam.detach_user_policy(UserName="bob", PolicyArn=POLICY_ARN)
    assert aws.invoke(tamper_event("DetachUserPolicy", {"policyArn": POLICY_ARN}, TERRAFORM))["verdict"] == "alert"
    assert aws.user_state("bob")["policies"] == [POLICY]
