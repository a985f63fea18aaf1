"""Organization scale on moto server: accounts from Organizations, the SQS fan-out, silence detection,
and the member-account StackSet template deployed through CloudFormation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from chalice.test import Client

from app import IAM_EVENT_PATTERN, app
from chalicelib import runtime
from chalicelib.bootstrap import ensure_quarantine_policy
from chalicelib.cli import main
from chalicelib.constants import ACCOUNT_ROW, FORWARD_RULE_NAME, TAG_HEARTBEAT
from chalicelib.sweep import SweepReport
from devtools.synth import cloudtrail_record, envelope, role_identity
from tests.functional.conftest import Aws
from tests.helpers import ACCOUNT, REPO

POLICY = "iam-user-guardrail-quarantine"


@dataclass
class Member:
    """A member account of the organization, seen with OrganizationAccountAccessRole credentials."""

    account: str
    credentials: dict[str, str]

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name="us-east-1", **self.credentials)

    def policies(self, user: str) -> list[str]:
        attached = self.client("iam").list_attached_user_policies(UserName=user)["AttachedPolicies"]
        return [p["PolicyName"] for p in attached]


def member(account: str, *, users: int = 1, healthy: bool = True) -> Member:
    """Prepare an account as the StackSet would (policy, rule) with a trail, and pre-existing users."""
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="test"
    )["Credentials"]
    keys = {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }
    found = Member(account, keys)
    iam = found.client("iam")
    ensure_quarantine_policy(iam, account, POLICY)
    for index in range(users):
        iam.create_user(UserName=f"legacy-{account[-4:]}-{index}")
    if healthy:
        pattern = json.dumps(IAM_EVENT_PATTERN)
        found.client("events").put_rule(Name=FORWARD_RULE_NAME, EventPattern=pattern, State="ENABLED")
        found.client("s3").create_bucket(Bucket=f"trail-{account}")
        trail = found.client("cloudtrail")
        trail.create_trail(Name="organization", S3BucketName=f"trail-{account}", IsMultiRegionTrail=True)
        trail.start_logging(Name="organization")
    return found


def organization(count: int) -> list[str]:
    org = boto3.client("organizations")
    org.create_organization(FeatureSet="ALL")
    return [add_account(i) for i in range(count)]


def add_account(index: int) -> str:
    status = boto3.client("organizations").create_account(Email=f"acct{index}@example.com", AccountName=f"a{index}")
    return status["CreateAccountStatus"]["AccountId"]


def swept(report: dict[str, Any]) -> set[str]:
    return {f["account"] for f in report["findings"] if f["user"] != ACCOUNT_ROW}


def account_findings(report: dict[str, Any] | SweepReport) -> set[tuple[str, str]]:
    rows = report["findings"] if isinstance(report, dict) else [r.to_dict() for r in report.findings]
    return {(f["account"], f["finding"]) for f in rows if f["user"] == ACCOUNT_ROW}


# -- accounts from Organizations -------------------------------------------------------------------


def test_organization_is_swept_without_a_static_list_and_new_accounts_join(
    aws: Aws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = organization(25)
    for account in accounts:
        member(account, users=1, healthy=False)
    assert main(["sweep", "--json", "--concurrency", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accounts"][0] == ACCOUNT and set(report["accounts"]) == {ACCOUNT, *accounts}
    assert swept(report) == set(accounts)  # every member's pre-existing user was found and quarantined
    assert all(member(a, users=0, healthy=False).policies(f"legacy-{a[-4:]}-0") == [POLICY] for a in accounts[:3])
    # an account added to the organization later is swept on the next run; an excluded one is not
    late, excluded = add_account(25), add_account(26)
    member(late, users=1, healthy=False)
    member(excluded, users=1, healthy=False)
    monkeypatch.setenv("GUARDRAIL_SWEEP_EXCLUDE", excluded)
    assert main(["sweep", "--json", "--concurrency", "8", "--dry-run"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert late in again["accounts"] and excluded not in again["accounts"]
    assert late in swept(again)


def test_suspended_accounts_are_not_swept_and_an_unreadable_organization_falls_back(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no organization to read here: auto falls back to the explicit list quietly, true reports it
    monkeypatch.setenv("GUARDRAIL_SWEEP_ACCOUNTS", "111122223333")
    runtime.reset()
    plan = runtime.get().sweep_plan()
    assert plan.accounts == [ACCOUNT, "111122223333"] and not plan.discovered and plan.errors == []
    monkeypatch.setenv("GUARDRAIL_ORG_DISCOVERY", "true")
    runtime.reset()
    plan = runtime.get().sweep_plan()
    assert plan.accounts == [ACCOUNT, "111122223333"] and "AWSOrganizationsNotInUseException" in plan.errors[0]
    monkeypatch.setenv("GUARDRAIL_ORG_DISCOVERY", "false")
    active, closed = organization(2)
    runtime.reset()
    assert runtime.get().sweep_plan().accounts == [ACCOUNT, "111122223333"]
    monkeypatch.setenv("GUARDRAIL_ORG_DISCOVERY", "auto")
    boto3.client("organizations").close_account(AccountId=closed)
    runtime.reset()
    plan = runtime.get().sweep_plan()
    assert plan.accounts == [ACCOUNT, active, "111122223333"] and plan.discovered and plan.errors == []


# -- silence detection -----------------------------------------------------------------------------


def test_a_disabled_forwarding_rule_is_named_and_alerted_and_the_others_are_not(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = organization(3)
    members = [member(a, users=0) for a in accounts]
    members[1].client("events").disable_rule(Name=FORWARD_RULE_NAME)
    report = aws.invoke_sweep()
    assert account_findings(report) == {(accounts[1], "forwarding_rule_disabled")}
    [row] = [f for f in report["findings"] if f["user"] == ACCOUNT_ROW]
    assert row["severity"] == "critical" and "DISABLED" in row["detail"]
    alerts = [json.dumps(m) for m in aws.slack.messages if "may be silent" in json.dumps(m)]
    assert len(alerts) == 1 and accounts[1] in alerts[0] and "forwarding_rule_disabled" in alerts[0]
    assert not any(a in alerts[0] for a in (accounts[0], accounts[2]))
    # the same problem is not re-alerted every hour; it stays in the report (and the digest)
    aws.slack.clear()
    assert account_findings(aws.invoke_sweep()) == {(accounts[1], "forwarding_rule_disabled")}
    assert not any("may be silent" in json.dumps(m) for m in aws.slack.messages)


def test_a_stopped_trail_and_a_deleted_rule_are_found(aws: Aws) -> None:
    accounts = organization(2)
    first, second = member(accounts[0], users=0), member(accounts[1], users=0)
    first.client("cloudtrail").stop_logging(Name="organization")
    second.client("events").delete_rule(Name=FORWARD_RULE_NAME)
    assert account_findings(aws.invoke_sweep()) == {
        (accounts[0], "trail_not_logging"),
        (accounts[1], "forwarding_rule_missing"),
    }


def heartbeat_event(
    account: str, value: str, *, policy: str = POLICY, role: str = "GuardrailRemediationRole"
) -> dict[str, Any]:
    raw = cloudtrail_record(
        "TagPolicy", user="", identity=role_identity(account, role, "iam-user-guardrail"), account=account
    )
    raw["requestParameters"] = {
        "policyArn": f"arn:aws:iam::{account}:policy/{policy}",
        "tags": [{"key": TAG_HEARTBEAT, "value": value}],
    }
    raw["responseElements"] = None
    return raw


def test_a_missing_heartbeat_is_alerted_and_a_returned_one_is_not(aws: Aws) -> None:
    accounts = organization(2)
    for account in accounts:
        member(account, users=0)
    aws._instrument()
    rt = runtime.get()
    t0 = datetime.now(UTC)
    for account in accounts:
        rt.account_sweep(account, clock=lambda: t0).run(SweepReport())
    tags = {}
    for account in accounts:
        iam = member(account, users=0, healthy=False).client("iam")
        policy_tags = iam.list_policy_tags(PolicyArn=f"arn:aws:iam::{account}:policy/{POLICY}")["Tags"]
        tags[account] = {t["Key"]: t["Value"] for t in policy_tags}[TAG_HEARTBEAT]
    # the heartbeat of the first account comes back through on_iam_event; the second's never does
    result = aws.invoke(heartbeat_event(accounts[0], tags[accounts[0]]))
    assert result["status"] == "heartbeat" and "verdict" not in result  # recorded, never judged as tamper
    # forgeries do not count: another policy, another principal, a value the sweep did not send (an
    # insider's far-future value, sent once before the rule is disabled, would otherwise pass forever)
    assert aws.invoke(heartbeat_event(accounts[1], tags[accounts[1]], policy="other"))["status"] == "ignored"
    forged = heartbeat_event(accounts[1], tags[accounts[1]], role="AWSReservedSSO_Developer_1")
    assert aws.invoke(forged)["status"] == "ignored"
    future = aws.invoke(heartbeat_event(accounts[1], "9999-12-31T00:00:00.000000Z"))
    assert (future["status"], future["reason"]) == ("ignored", "not the heartbeat the sweep sent last")
    aws.slack.clear()
    later = t0 + timedelta(hours=1)
    reports = []
    for account in accounts:
        report = SweepReport()
        rt.account_sweep(account, clock=lambda: later).run(report)
        reports.append(report)
    assert account_findings(reports[0]) == set()
    assert account_findings(reports[1]) == {(accounts[1], "heartbeat_missing")}
    [alert] = [json.dumps(m) for m in aws.slack.messages]
    assert accounts[1] in alert and "heartbeat_missing" in alert and accounts[0] not in alert


def test_a_young_heartbeat_is_not_judged_yet(aws: Aws) -> None:
    [account] = organization(1)
    member(account, users=0)
    aws._instrument()
    rt = runtime.get()
    t0 = datetime.now(UTC)
    rt.account_sweep(account, clock=lambda: t0).run(SweepReport())
    iam = member(account, users=0, healthy=False).client("iam")
    arn = f"arn:aws:iam::{account}:policy/{POLICY}"
    first = iam.list_policy_tags(PolicyArn=arn)["Tags"]
    report = SweepReport()
    rt.account_sweep(account, clock=lambda: t0 + timedelta(minutes=5)).run(report)
    assert account_findings(report) == set()
    assert iam.list_policy_tags(PolicyArn=arn)["Tags"] == first  # the pending heartbeat is not replaced


def rule_event(account: str, name: str, rule: str) -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "userIdentity": role_identity(account, "AWSReservedSSO_Admin_1", "mallory@example.com"),
        "eventTime": "2026-11-29T09:00:00Z",
        "eventSource": "events.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.9",
        "requestParameters": {"rule": rule, "ids": ["t"]} if name == "RemoveTargets" else {"name": rule},
        "responseElements": None,
        "eventID": f"rule-{account}-{name}-{rule}",
        "recipientAccountId": account,
    }


def test_disabling_a_guardrail_rule_is_alerted_once_and_other_rules_are_not(aws: Aws) -> None:
    attack = rule_event("210987654321", "DisableRule", FORWARD_RULE_NAME)
    wrapped = envelope(attack)
    wrapped["source"] = "aws.events"
    with Client(app, stage_name="dev", project_dir=str(REPO)) as client:
        first = client.lambda_.invoke("on_iam_event", wrapped).payload
        again = client.lambda_.invoke("on_iam_event", wrapped).payload
        home = client.lambda_.invoke(
            "on_iam_event", envelope(rule_event(ACCOUNT, "RemoveTargets", "iam-user-guardrail-dev-on_iam_event"))
        ).payload
        other = client.lambda_.invoke("on_iam_event", envelope(rule_event(ACCOUNT, "DeleteRule", "team-rule"))).payload
    assert (first["status"], first["severity"], first["rule"]) == ("alerted", "critical", FORWARD_RULE_NAME)
    assert again["status"] == "duplicate" and home["status"] == "alerted" and other["status"] == "ignored"
    messages = [json.dumps(m) for m in aws.slack.messages]
    assert len(messages) == 2 and "DisableRule" in messages[0] and "210987654321" in messages[0]
    assert "RemoveTargets" in messages[1]
    assert {a["kind"] for a in aws.items("AUDIT")} == {"rule_tamper"}


# -- the fan-out through SQS -----------------------------------------------------------------------


@pytest.fixture
def queues(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName="iam-user-guardrail-dev-sweep-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    queue = sqs.create_queue(QueueName="iam-user-guardrail-dev-sweep", Attributes={"RedrivePolicy": redrive})
    monkeypatch.setenv("GUARDRAIL_SWEEP_QUEUE", "iam-user-guardrail-dev-sweep")
    runtime.reset()
    yield queue["QueueUrl"], dlq


def receive(url: str) -> list[dict[str, Any]]:
    reply = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=5, AttributeNames=["All"])
    return reply.get("Messages", [])


def as_lambda_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What Lambda's SQS event source hands the worker for these messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:iam-user-guardrail-dev-sweep",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def test_fan_out_end_to_end_with_a_poison_message(aws: Aws, queues: tuple[str, str]) -> None:
    queue, dlq = queues
    accounts = organization(3)
    for account in accounts:
        member(account, users=1)
    aws.iam.create_user(UserName="home-legacy")
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=queue, MessageBody='{"account": "not-an-account"}')  # a poison message
    scheduled = aws.invoke_sweep()
    assert (scheduled["accounts"], scheduled["enqueued"], scheduled["discovered"]) == (4, 4, True)
    assert aws.calls["sqs.SendMessageBatch"] == 1 and not scheduled["digest_sent"]  # no results stored yet
    handled: list[str] = []
    with Client(app, stage_name="dev", project_dir=str(REPO)) as client:
        for _ in range(5):
            batch = receive(queue)
            if not batch:
                break
            answer = client.lambda_.invoke("sweep_worker", as_lambda_event(batch)).payload
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            for message in batch:  # what Lambda does with a partial batch response
                if message["MessageId"] in failed:
                    sqs.change_message_visibility(
                        QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
                else:
                    handled.append(json.loads(message["Body"])["account"])
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    assert sorted(handled) == sorted([ACCOUNT, *accounts])
    [dead] = receive(dlq)
    assert "not-an-account" in dead["Body"]
    for account in accounts:
        assert member(account, users=0, healthy=False).policies(f"legacy-{account[-4:]}-0") == [POLICY]
    assert {r["sk"] for r in aws.items("ACCOUNT")} == {ACCOUNT, *accounts}
    # the next scheduled run assembles the daily digest from the stored per-account results
    aws.slack.clear()
    again = aws.invoke_sweep()
    assert again["digest_sent"]
    [digest] = [json.dumps(m) for m in aws.slack.messages if "Daily IAM user digest" in json.dumps(m)]
    assert "home-legacy" in digest and all(f"legacy-{a[-4:]}-0" in digest for a in accounts)


def test_worker_reports_only_the_failed_account(aws: Aws, queues: tuple[str, str]) -> None:
    accounts = organization(2)
    member(accounts[0], users=1)
    member(accounts[1], users=1)
    bodies = [json.dumps({"account": a, "run": "r"}) for a in accounts] + ["{not json"]
    with Client(app, stage_name="dev", project_dir=str(REPO)) as client:
        event = client.events.generate_sqs_event(bodies, queue_name="iam-user-guardrail-dev-sweep")
        for index, record in enumerate(event["Records"]):
            record["messageId"] = f"m{index}"
        answer = client.lambda_.invoke("sweep_worker", event).payload
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert {r["sk"] for r in aws.items("ACCOUNT")} == set(accounts)


# -- the StackSet template, deployed -----------------------------------------------------------------


def test_member_account_template_deploys_on_cloudformation(aws: Aws) -> None:
    [account] = organization(1)
    found = member(account, users=0, healthy=False)
    for policy in found.client("iam").list_policies(Scope="Local")["Policies"]:
        found.client("iam").delete_policy(PolicyArn=policy["Arn"])  # the stack creates it
    guardrail_roles = [f"arn:aws:iam::{ACCOUNT}:role/iam-user-guardrail-dev-{f}" for f in ("on_iam_event", "sweep")]
    cloudformation = found.client("cloudformation")
    cloudformation.create_stack(
        StackName="iam-user-guardrail-member",
        TemplateBody=(REPO / "infra" / "member-account.yaml").read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[
            {"ParameterKey": "SecurityAccountId", "ParameterValue": ACCOUNT},
            {"ParameterKey": "GuardrailRoleArns", "ParameterValue": ",".join(guardrail_roles)},
            {"ParameterKey": "ExternalId", "ParameterValue": "guardrail-7f3a9c"},
        ],
    )
    [stack] = cloudformation.describe_stacks(StackName="iam-user-guardrail-member")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    rule = found.client("events").describe_rule(Name=FORWARD_RULE_NAME)
    assert rule["State"] == "ENABLED" and json.loads(rule["EventPattern"]) == IAM_EVENT_PATTERN
    [target] = found.client("events").list_targets_by_rule(Rule=FORWARD_RULE_NAME)["Targets"]
    assert target["Arn"] == f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/default"
    iam = found.client("iam")
    role = iam.get_role(RoleName="GuardrailRemediationRole")["Role"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert sorted(trust["Principal"]["AWS"]) == sorted(guardrail_roles)
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": "guardrail-7f3a9c"}}
    policy_arn = f"arn:aws:iam::{account}:policy/{POLICY}"
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]["Document"]
    document = json.loads(document) if isinstance(document, str) else document
    assert document["Statement"][0]["Effect"] == "Deny" and document["Statement"][0]["Action"] == "*"
    [inline] = iam.list_role_policies(RoleName="GuardrailRemediationRole")["PolicyNames"]
    assert inline == "iam-user-guardrail-remediation"
    # what the stack declares is what the sweep checks: the account is not silent (rule) once a trail logs
    found.client("s3").create_bucket(Bucket=f"trail-{account}")
    trail = found.client("cloudtrail")
    trail.create_trail(Name="member-trail", S3BucketName=f"trail-{account}", IsMultiRegionTrail=True)
    trail.start_logging(Name="member-trail")
    report = SweepReport()
    aws._instrument()
    runtime.get().account_sweep(account).run(report)
    assert account_findings(report) == set()


def test_rule_tamper_is_alerted_even_when_the_table_is_down(aws: Aws) -> None:
    aws.ddb.delete_table(TableName=aws.table)
    attack = envelope(rule_event("210987654321", "DeleteRule", FORWARD_RULE_NAME))
    with Client(app, stage_name="dev", project_dir=str(REPO)) as client, pytest.raises(Exception, match="table"):
        client.lambda_.invoke("on_iam_event", attack)  # raised: Lambda retries it
    [message] = [json.dumps(m) for m in aws.slack.messages]
    assert "DeleteRule" in message and "210987654321" in message
