"""`make demo`: the whole flow on a local moto server, no AWS account needed.

It starts moto in server mode and a local Slack receiver on loopback, bootstraps the table and
quarantine policy, creates real users and keys in moto, feeds the matching CloudTrail events
through the real `on_iam_event` handler (Chalice's test client, the dev stage's settings), and
prints each decision, the IAM state it left and the Slack message as the team would see it.
"""

from __future__ import annotations

import json
import secrets
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
from slack_sdk.signature import SignatureVerifier

from chalicelib import runtime
from chalicelib.allowlist import DEFAULT_PATH
from chalicelib.bootstrap import bootstrap
from chalicelib.slack_message import DECISION_BLOCK_ID, render_text
from devtools.devserver import MotoServer, SlackReceiver, environment, stage_environment
from devtools.synth import TERRAFORM_USER_AGENT, cloudtrail_record, envelope, role_identity, user_identity

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"  # moto's default account
TERRAFORM = role_identity(ACCOUNT, "terraform-deployer", "tf-apply-1842")
DEVELOPER = role_identity(
    ACCOUNT, "AWSReservedSSO_Developer_5f2a9c1e", "dana@example.com", path="/aws-reserved/sso.amazonaws.com/"
)
CI_BOT = user_identity(ACCOUNT, "legacy-ci-bot")


@dataclass
class Scene:
    title: str
    user: str
    prepare: Callable[[Any], dict[str, Any]]


def scenes() -> list[Scene]:
    def approved_user(iam: Any) -> dict[str, Any]:
        created = iam.create_user(UserName="svc-datadog", Path="/integrations/")["User"]
        return cloudtrail_record(
            "CreateUser",
            user="svc-datadog",
            identity=TERRAFORM,
            path="/integrations/",
            user_agent=TERRAFORM_USER_AGENT,
            user_id=created["UserId"],
        )

    def terraform_key(iam: Any) -> dict[str, Any]:
        key = iam.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
        return cloudtrail_record(
            "CreateAccessKey",
            user="svc-datadog",
            identity=TERRAFORM,
            access_key_id=key,
            user_agent=TERRAFORM_USER_AGENT,
        )

    def developer_user(iam: Any) -> dict[str, Any]:
        created = iam.create_user(UserName="dana-debug")["User"]
        return cloudtrail_record(
            "CreateUser", user="dana-debug", identity=DEVELOPER, source_ip="198.51.100.23", user_id=created["UserId"]
        )

    def backdoor_key(iam: Any) -> dict[str, Any]:
        iam.create_user(UserName="legacy-ci-bot")
        iam.create_user(UserName="bob-legacy")
        key = iam.create_access_key(UserName="bob-legacy")["AccessKey"]["AccessKeyId"]
        return cloudtrail_record(
            "CreateAccessKey",
            user="bob-legacy",
            identity=CI_BOT,
            access_key_id=key,
            source_ip="192.0.2.77",
            user_agent="<!channel> curl/8.4.0",
        )

    def console_password(iam: Any) -> dict[str, Any]:
        iam.create_login_profile(UserName="svc-datadog", Password=f"Demo-{uuid.uuid4().hex}!A1")
        return cloudtrail_record("CreateLoginProfile", user="svc-datadog", identity=DEVELOPER)

    def denied(iam: Any) -> dict[str, Any]:
        return cloudtrail_record("CreateUser", user="mallory", identity=DEVELOPER, error_code="AccessDenied")

    return [
        Scene("Terraform creates the approved integration user svc-datadog", "svc-datadog", approved_user),
        Scene("Terraform creates its first access key", "svc-datadog", terraform_key),
        Scene("Terraform creates a second key (max_access_keys is 1)", "svc-datadog", terraform_key),
        Scene("A developer creates an IAM user by hand", "dana-debug", developer_user),
        Scene("An IAM user creates a key for another user (backdoor pattern)", "bob-legacy", backdoor_key),
        Scene("A developer sets a console password on the integration user", "svc-datadog", console_password),
        Scene("A CreateUser call that AWS refused (AccessDenied)", "", denied),
    ]


def describe_user(iam: Any, user: str) -> list[str]:
    if not user:
        return ["(no user was created)"]
    try:
        tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=user)["Tags"]}
    except iam.exceptions.NoSuchEntityException:
        return [f"{user}: does not exist"]
    policies = [p["PolicyName"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]
    keys = [f"{k['AccessKeyId']}={k['Status']}" for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
    try:
        iam.get_login_profile(UserName=user)
        console = "yes"
    except iam.exceptions.NoSuchEntityException:
        console = "no"
    return [
        f"user {user}: policies {policies or 'none'}; keys {keys or 'none'}; console password {console}",
        "tags " + (", ".join(f"{key}={value}" for key, value in sorted(tags.items())) or "none"),
    ]


def run_demo() -> int:
    from chalice.test import Client

    from app import app

    print("iam-user-guardrail demo: moto server + local Slack receiver on 127.0.0.1, no AWS account\n")
    with MotoServer() as moto, SlackReceiver() as slack:
        env = {
            **moto.environment(),
            **stage_environment("dev"),
            "GUARDRAIL_ALLOWLIST": str(DEFAULT_PATH),
            "SLACK_WEBHOOK_URL": f"{slack.url}/services/TDEMO/BDEMO/demo",
            "GUARDRAIL_SLACK_RESPONSE_HOSTS": "127.0.0.1",
            # the narrative below says what happened; Lambda's JSON log lines and EMF metrics would bury it
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        signing_secret = secrets.token_hex(16)
        with environment(env):
            runtime.reset()
            iam = boto3.client("iam")
            summary = bootstrap(
                iam=iam,
                dynamodb=boto3.client("dynamodb"),
                sts=boto3.client("sts"),
                table=env["GUARDRAIL_TABLE"],
                policy_name=env["GUARDRAIL_QUARANTINE_POLICY_NAME"],
            )
            boto3.client("secretsmanager").create_secret(
                Name=env["GUARDRAIL_SLACK_SECRET_ID"], SecretString=json.dumps({"signing_secret": signing_secret})
            )
            print(f"moto server {moto.url}; bootstrap: {summary['table']}; {summary['policy']}")
            print(f"allowlist: {DEFAULT_PATH.relative_to(REPO)}\n")
            with Client(app, stage_name="dev", project_dir=str(REPO)) as client:
                delivered: list[dict[str, Any]] = []
                for number, scene in enumerate(scenes(), 1):
                    slack.clear()
                    delivered.append(envelope(scene.prepare(iam)))
                    result = client.lambda_.invoke("on_iam_event", delivered[-1]).payload
                    _print_scene(number, scene.title, result, describe_user(iam, scene.user), slack.messages)
                slack.clear()
                title = "EventBridge delivers scene 4's event a second time"
                result = client.lambda_.invoke("on_iam_event", delivered[3]).payload
                _print_scene(len(delivered) + 1, title, result, describe_user(iam, "dana-debug"), slack.messages)
                approvals = [
                    (
                        "The security lead clicks [Approve 7 days] on dana-debug's alert",
                        delivered[3],
                        "guardrail_approve_7",
                    ),
                    (
                        "The security lead clicks [Keep quarantined] on bob-legacy's alert",
                        delivered[4],
                        "guardrail_keep_quarantined",
                    ),
                    (
                        "Someone clicks [Approve 30 days] on dana-debug's alert again",
                        delivered[3],
                        "guardrail_approve_30",
                    ),
                ]
                for number, (title, case, action) in enumerate(approvals, len(delivered) + 2):
                    slack.clear()
                    status = _click(client, slack.url, case, action, signing_secret)
                    user = case["detail"]["requestParameters"]["userName"]
                    updates = [r["json"] for r in slack.requests if r["path"].startswith("/response/")]
                    _print_click(number, title, status, describe_user(iam, user), updates)
            runtime.reset()
    print("Done: moto server stopped, nothing left running.")
    return 0


def _click(client: Any, slack_url: str, case: dict[str, Any], action: str, signing_secret: str) -> int:
    """Sign and post a Slack button click to the real /slack/interactions route."""
    detail = case["detail"]
    payload = {
        "type": "block_actions",
        "user": {"id": "U0123SECLEAD", "username": "security-lead"},
        "actions": [
            {
                "action_id": action,
                "block_id": DECISION_BLOCK_ID,
                "value": json.dumps(
                    {
                        "a": detail["recipientAccountId"],
                        "u": detail["requestParameters"]["userName"],
                        "e": detail["eventID"],
                    }
                ),
            }
        ],
        "response_url": f"{slack_url}/response/TDEMO/1",
        "message": {"blocks": []},
    }
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": SignatureVerifier(signing_secret).generate_signature(timestamp=timestamp, body=body) or "",
    }
    return int(client.http.post("/slack/interactions", headers=headers, body=body.encode()).status_code)


def _print_click(number: int, title: str, status: int, state: list[str], updates: list[dict[str, Any]]) -> None:
    print(f"── {number}. {title} " + "─" * max(0, 70 - len(title)))
    print(f"POST /slack/interactions (signed): HTTP {status}")
    for line in state:
        print(f"iam:      {line}")
    for update in updates:
        kind = "ephemeral reply to the clicker" if update.get("response_type") == "ephemeral" else "message replaced"
        print(f"slack:    {kind}: {update.get('text', '')}")
    print()


def _print_scene(number: int, title: str, result: dict[str, Any], state: list[str], messages: list[Any]) -> None:
    print(f"── {number}. {title} " + "─" * max(0, 70 - len(title)))
    verdict = result.get("verdict", result.get("status"))
    print(f"decision: {verdict} ({result.get('severity', '-')}) {result.get('reason', '')}")
    for action in result.get("results", []):
        print(f"action:   {action}")
    for line in state:
        print(f"iam:      {line}")
    if result.get("status") == "duplicate":
        print("duplicate delivery: nothing done, no second alert")
    for message in messages:
        print("slack:")
        print(textwrap.indent(render_text(message), "  │ "))
    if not messages:
        print("slack:    (no message)")
    print()
