"""Many accounts: the guardrail acts in the account named by the event, through its remediation role."""

from __future__ import annotations

import json

import boto3
import pytest

from chalicelib import runtime
from chalicelib.bootstrap import ensure_quarantine_policy
from chalicelib.constants import ACCOUNT_ROW
from devtools.synth import role_identity
from tests.functional.conftest import Aws, member_client
from tests.helpers import ACCOUNT, OTHER_ACCOUNT, record

MEMBER_DEVELOPER = role_identity(OTHER_ACCOUNT, "AWSReservedSSO_Developer_1", "dev@example.com")
POLICY = "iam-user-guardrail-quarantine"


def member_iam() -> boto3.client:
    """An IAM client in the member account."""
    return member_client(OTHER_ACCOUNT)


@pytest.fixture
def member(aws: Aws) -> boto3.client:
    iam = member_iam()
    ensure_quarantine_policy(iam, OTHER_ACCOUNT, POLICY)  # the StackSet puts it there
    return iam


def policies(iam: boto3.client, user: str) -> list[str]:
    return [p["PolicyName"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]


def test_member_account_user_is_quarantined_there_and_not_at_home(aws: Aws, member: boto3.client) -> None:
    member.create_user(UserName="dana")
    aws.iam.create_user(UserName="dana")  # same name at home: must stay untouched
    result = aws.invoke(record("CreateUser", "dana", MEMBER_DEVELOPER, account=OTHER_ACCOUNT))
    assert (result["verdict"], result["account"]) == ("quarantine", OTHER_ACCOUNT)
    assert policies(member, "dana") == [POLICY]
    assert policies(aws.iam, "dana") == []
    assert aws.iam.list_user_tags(UserName="dana")["Tags"] == []
    assert aws.calls["sts.AssumeRole"] == 1
    # credentials are cached for the next event in that account
    member.create_user(UserName="erin")
    aws.invoke(record("CreateUser", "erin", MEMBER_DEVELOPER, account=OTHER_ACCOUNT))
    assert aws.calls["sts.AssumeRole"] == 1 and policies(member, "erin") == [POLICY]


def test_assume_role_failure_is_alerted_not_crashed_on(aws: Aws, member: boto3.client) -> None:
    aws.refuse["AssumeRole"] = "AccessDenied"
    member.create_user(UserName="dana")
    result = aws.invoke(record("CreateUser", "dana", MEMBER_DEVELOPER, account=OTHER_ACCOUNT))
    assert result["status"] == "handled" and result["verdict"] == "quarantine"
    assert result["results"][0].startswith(f"assume_role {OTHER_ACCOUNT}: account_unreachable")
    assert "AccessDenied" in result["results"][0]
    message = json.dumps(aws.slack.messages[0])
    assert "account_unreachable" in message and "GuardrailRemediationRole" in message
    assert policies(member, "dana") == []
    assert len(aws.items("AUDIT")) == 1  # recorded: a permanent failure is not retried forever


def test_external_id_is_sent(aws: Aws, member: boto3.client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_EXTERNAL_ID", "guardrail-7f3a")
    runtime.reset()
    sent: list[str] = []
    aws._instrument()
    runtime.get()._session.events.register(
        "provide-client-params.sts.AssumeRole", lambda params, **_: sent.append(params.get("ExternalId", ""))
    )
    member.create_user(UserName="dana")
    aws.invoke(record("CreateUser", "dana", MEMBER_DEVELOPER, account=OTHER_ACCOUNT))
    assert sent == ["guardrail-7f3a"]


def test_sweep_visits_member_accounts(aws: Aws, member: boto3.client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_SWEEP_ACCOUNTS", OTHER_ACCOUNT)
    runtime.reset()
    member.create_user(UserName="legacy")
    aws.iam.create_user(UserName="home-legacy")
    report = aws.invoke_sweep()
    assert {(f["account"], f["user"]) for f in report["findings"] if f["user"] != ACCOUNT_ROW} == {
        (OTHER_ACCOUNT, "legacy"),
        (ACCOUNT, "home-legacy"),
    }
    # the member has neither forwarding rule nor trail here: it is silent, and said so
    silent = {(f["account"], f["finding"]) for f in report["findings"] if f["user"] == ACCOUNT_ROW}
    assert silent == {(OTHER_ACCOUNT, "forwarding_rule_missing"), (OTHER_ACCOUNT, "trail_not_logging")}
    assert policies(member, "legacy") == [POLICY]
    assert policies(aws.iam, "home-legacy") == [POLICY]


def test_unreachable_member_account_does_not_stop_the_sweep(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_SWEEP_ACCOUNTS", OTHER_ACCOUNT)
    runtime.reset()
    aws.refuse["AssumeRole"] = "AccessDenied"
    aws.iam.create_user(UserName="home-legacy")
    report = aws.invoke_sweep()
    assert [(f["user"], f["finding"]) for f in report["findings"]] == [
        ("home-legacy", "unapproved"),
        (ACCOUNT_ROW, "account_unreachable"),
    ]
    unreachable = report["findings"][1]
    assert unreachable["account"] == OTHER_ACCOUNT and unreachable["severity"] == "critical"
    assert "AccessDenied" in unreachable["detail"] and report["errors"] == []
    assert any("account_unreachable" in json.dumps(m) and OTHER_ACCOUNT in json.dumps(m) for m in aws.slack.messages)


def test_home_account_comes_from_the_lambda_context(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalice.local import LambdaContext

    from chalicelib.runtime import Runtime
    from chalicelib.settings import Settings

    rt = Runtime(Settings.from_env({}))
    context = LambdaContext("on_iam_event", 512)
    context.invoked_function_arn = "arn:aws:lambda:us-east-1:444455556666:function:iam-user-guardrail-prod-on_iam_event"
    rt.learn_home_account(context)
    assert rt.home_account == "444455556666"


def test_home_account_falls_back_to_sts(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUARDRAIL_HOME_ACCOUNT")
    runtime.reset()
    assert runtime.get().home_account == ACCOUNT


def test_events_that_need_no_iam_do_not_assume_a_role(aws: Aws) -> None:
    from devtools.synth import cloudtrail_record

    raw = cloudtrail_record("TagUser", user="dana", identity=MEMBER_DEVELOPER, account=OTHER_ACCOUNT)
    raw["requestParameters"] = {"userName": "dana", "tags": [{"key": "team", "value": "x"}]}
    raw["responseElements"] = None
    assert aws.invoke(raw)["verdict"] == "ignore"
    assert aws.calls["sts.AssumeRole"] == 0


def test_approving_in_an_unreachable_account_decides_nothing(aws: Aws, member: boto3.client) -> None:
    from tests.functional.approval_helpers import (
        api,
        interaction_body,
        post_interaction,
        signed_headers,
        store_slack_secret,
    )

    store_slack_secret(aws)
    member.create_user(UserName="dana")
    raw = record("CreateUser", "dana", MEMBER_DEVELOPER, account=OTHER_ACCOUNT)
    aws.invoke(raw)
    assert policies(member, "dana") == [POLICY]
    aws.refuse["AssumeRole"] = "AccessDenied"
    runtime.reset()  # forget the cached member credentials
    aws._instrument()
    aws.slack.clear()
    body = interaction_body(aws, "guardrail_approve_7", {"a": OTHER_ACCOUNT, "u": "dana", "e": raw["eventID"]})
    assert post_interaction(body, signed_headers(body)).status_code == 200
    reply = next(r["json"] for r in aws.slack.requests if r["path"].startswith("/response/"))
    assert reply["response_type"] == "ephemeral" and "cannot assume" in reply["text"]
    assert aws.items(f"DECISION#{raw['eventID']}") == []  # not decided: may be clicked again later
    status, answer = api(
        "POST", "/exceptions", body={"account": OTHER_ACCOUNT, "user": "dana", "days": 1, "reason": "r"}
    )
    assert status == 502 and answer["field"] == "account"
    assert policies(member, "dana") == [POLICY]
