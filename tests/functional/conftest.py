"""Functional fixtures: moto in server mode (a child process on loopback), a local Slack receiver,
the Chalice test client, and AWS call counting through botocore's event hooks."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from chalice.test import Client

from app import app
from chalicelib import runtime
from chalicelib.bootstrap import bootstrap
from devtools.devserver import MotoServer, SlackReceiver, stage_environment
from devtools.synth import envelope
from tests.helpers import ALLOWLIST_YAML, REPO

STAGE_ENV: dict[str, str] = stage_environment("dev")
WEBHOOK_PATH = "/services/T000/B000/not-a-real-secret"
ACCOUNT_ID = "123456789012"  # moto's default account: the guardrail's home in these tests
TRUST_ACCOUNT = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
    '"Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}'
)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def slack_receiver() -> Iterator[SlackReceiver]:
    with SlackReceiver() as receiver:
        yield receiver


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


#: moto 5 does not implement service-specific credentials; the harness answers the one read the
#: guardrail makes with IAM's reply for a user that has none (the decision and the update call are
#: tested on the pure layer). Every other call reaches moto.
_MOTO_GAPS = {
    "ListServiceSpecificCredentials": (
        '<ListServiceSpecificCredentialsResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
        "<ListServiceSpecificCredentialsResult><ServiceSpecificCredentials/></ListServiceSpecificCredentialsResult>"
        "<ResponseMetadata><RequestId>t</RequestId></ResponseMetadata></ListServiceSpecificCredentialsResponse>"
    )
}


def _error_response(url: str, code: str, message: str) -> AWSResponse:
    """What an AWS query-protocol service answers on error (IAM, STS)."""
    xml = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>t</RequestId></ErrorResponse>"
    )
    return AWSResponse(url, 403 if code == "AccessDenied" else 400, {}, _Raw(xml.encode()))


def member_client(account: str, service: str = "iam") -> Any:
    """A client in another account (moto switches accounts by assumed-role credentials)."""
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="test"
    )["Credentials"]
    return boto3.client(
        service,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


@dataclass
class Aws:
    """The test's view of the world: boto3 clients on moto, the Slack receiver, call counts."""

    iam: Any
    ddb: Any
    secrets: Any
    slack: SlackReceiver
    allowlist_path: Path
    table: str
    calls: Counter[str] = field(default_factory=Counter)
    throttle: dict[str, int] = field(default_factory=dict)
    #: Answer these API actions with this AWS error code, always (e.g. {"AssumeRole": "AccessDenied"}).
    refuse: dict[str, str] = field(default_factory=dict)
    #: Answer requests to these URL paths of REST-JSON services with this error code, always
    #: (e.g. {"/findings/import": "InvalidAccessException"}: Security Hub disabled; moto does not check).
    refuse_path: dict[str, str] = field(default_factory=dict)

    def invoke(self, raw: dict[str, Any], *, wrap: bool = True) -> dict[str, Any]:
        """Deliver an event to the real `on_iam_event` handler, as EventBridge would.

        A CreateUser record names the user id IAM gave the user, as CloudTrail's does: where the
        user exists in moto, the synthetic record gets moto's id.
        """
        self._instrument()
        detail = raw.get("detail", raw)
        detail = detail if isinstance(detail, dict) else {}
        response = detail.get("responseElements")
        created = response.get("user") if isinstance(response, dict) else None
        if detail.get("eventName") == "CreateUser" and isinstance(created, dict):
            iam = self.iam_of(str(detail.get("recipientAccountId") or ACCOUNT_ID))
            with contextlib.suppress(iam.exceptions.NoSuchEntityException):
                created["userId"] = iam.get_user(UserName=created["userName"])["User"]["UserId"]
        with Client(app, stage_name="dev", project_dir=str(REPO)) as client:
            return client.lambda_.invoke("on_iam_event", envelope(raw) if wrap else raw).payload

    def invoke_sweep(self) -> dict[str, Any]:
        """Run the scheduled `sweep` function as the schedule would."""
        self._instrument()
        with Client(app, stage_name="dev", project_dir=str(REPO)) as client:
            event = client.events.generate_cw_event(
                source="aws.events", detail_type="Scheduled Event", detail={}, resources=[], region="us-east-1"
            )
            return client.lambda_.invoke("sweep", event).payload

    def iam_of(self, account: str) -> Any:
        """An IAM client in `account`."""
        return self.iam if account == ACCOUNT_ID else member_client(account)

    def _instrument(self) -> None:
        rt = runtime.get()
        if getattr(rt, "_instrumented", False):
            return
        rt._session.events.register("before-call", self._count)
        rt._session.events.register("before-send", self._maybe_throttle)
        rt._instrumented = True  # type: ignore[attr-defined]

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[f"{model.service_model.service_name}.{model.name}"] += 1

    def _maybe_throttle(self, request: Any, **_: Any) -> AWSResponse | None:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        for action, remaining in self.throttle.items():
            if remaining and f"Action={action}&" in body + "&":
                self.throttle[action] = remaining - 1
                return _error_response(request.url, "Throttling", "Rate exceeded")
        for path, code in self.refuse_path.items():
            if request.url.split("?", 1)[0].endswith(path):
                body = json.dumps({"__type": code, "message": f"refused by the test: {code}"}).encode()
                return AWSResponse(request.url, 403, {"x-amzn-ErrorType": code}, _Raw(body))
        for action, code in self.refuse.items():
            if f"Action={action}&" in body + "&":
                return _error_response(request.url, code, f"refused by the test: {code}")
        for action, xml in _MOTO_GAPS.items():
            if f"Action={action}&" in body + "&":
                return AWSResponse(request.url, 200, {}, _Raw(xml.encode()))
        return None

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def write_allowlist(self, text: str) -> None:
        self.allowlist_path.write_text(text)
        runtime.reset()

    def items(self, pk: str) -> list[dict[str, Any]]:
        table = boto3.resource("dynamodb").Table(self.table)
        return table.query(KeyConditionExpression=boto3.dynamodb.conditions.Key("pk").eq(pk))["Items"]

    def user_state(self, user: str) -> dict[str, Any]:
        tags = {t["Key"]: t["Value"] for t in self.iam.list_user_tags(UserName=user)["Tags"]}
        policies = [p["PolicyName"] for p in self.iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]
        keys = {k["AccessKeyId"]: k["Status"] for k in self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}
        return {"tags": tags, "policies": policies, "keys": keys}


@pytest.fixture
def aws(
    moto_server: MotoServer, slack_receiver: SlackReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Aws]:
    moto_server.reset()
    slack_receiver.clear()
    for key, value in {**moto_server.environment(), **STAGE_ENV}.items():
        monkeypatch.setenv(key, value)
    allowlist_path = tmp_path / "allowlist.yaml"
    allowlist_path.write_text(ALLOWLIST_YAML)
    monkeypatch.setenv("GUARDRAIL_ALLOWLIST", str(allowlist_path))
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_receiver.url + WEBHOOK_PATH)
    monkeypatch.setenv("GUARDRAIL_SLACK_TIMEOUT", "1")
    monkeypatch.setenv("GUARDRAIL_SLACK_RETRIES", "1")
    monkeypatch.setenv("GUARDRAIL_SLACK_RESPONSE_HOSTS", "127.0.0.1")
    monkeypatch.setenv("GUARDRAIL_HOME_ACCOUNT", "123456789012")  # in Lambda: from the function's context
    monkeypatch.delenv("GUARDRAIL_MODE", raising=False)
    monkeypatch.delenv("GUARDRAIL_SWEEP_QUEUE")  # the sweep runs in one process unless a test fans out
    runtime.reset()
    iam, ddb = boto3.client("iam"), boto3.client("dynamodb")
    bootstrap(
        iam=iam,
        dynamodb=ddb,
        sts=boto3.client("sts"),
        table=STAGE_ENV["GUARDRAIL_TABLE"],
        policy_name=STAGE_ENV["GUARDRAIL_QUARANTINE_POLICY_NAME"],
    )
    # The approver role the test allowlist names: the REST API reads it (iam:GetRole) to check its path.
    iam.create_role(RoleName="security-admin", AssumeRolePolicyDocument=TRUST_ACCOUNT)
    yield Aws(
        iam=iam,
        ddb=ddb,
        secrets=boto3.client("secretsmanager"),
        slack=slack_receiver,
        allowlist_path=allowlist_path,
        table=STAGE_ENV["GUARDRAIL_TABLE"],
    )
    runtime.reset()
