"""Helpers for approval tests: signed Slack requests and API Gateway events with an IAM caller."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from chalice.local import LambdaContext
from chalice.test import Client
from slack_sdk.signature import SignatureVerifier

from app import app
from tests.functional.conftest import Aws
from tests.helpers import REPO

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVER = "U0SECLEAD"
SECURITY_ADMIN = "arn:aws:sts::123456789012:assumed-role/security-admin/ops@example.com"


def store_slack_secret(aws: Aws, **extra: str) -> None:
    aws.secrets.create_secret(
        Name="iam-user-guardrail/dev/slack", SecretString=json.dumps({"signing_secret": SIGNING_SECRET, **extra})
    )


def interaction_body(
    aws: Aws,
    action_id: str,
    value: dict[str, str] | str,
    *,
    user_id: str = APPROVER,
    kind: str = "block_actions",
    message: dict[str, Any] | None = None,
) -> str:
    payload = {
        "type": kind,
        "user": {"id": user_id, "username": "sec"},
        "actions": [
            {
                "action_id": action_id,
                "block_id": "guardrail_decision",
                "value": value if isinstance(value, str) else json.dumps(value),
                "type": "button",
            }
        ],
        "response_url": f"{aws.slack.url}/response/T0/1",
        "message": message
        or {
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "x"}},
                {"type": "actions", "block_id": "guardrail_decision", "elements": []},
            ]
        },
    }
    return urlencode({"payload": json.dumps(payload)})


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature or "",
    }


def post_interaction(body: str, headers: dict[str, str]) -> Any:
    with Client(app, stage_name="dev", project_dir=str(REPO)) as client:
        return client.http.post("/slack/interactions", headers=headers, body=body.encode())


def api(
    method: str,
    resource: str,
    *,
    caller: str | None = SECURITY_ADMIN,
    body: Any = None,
    path_params: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Call the REST API as API Gateway does after IAM auth (the identity carries the caller ARN)."""
    path = resource
    for key, value in (path_params or {}).items():
        path = path.replace("{" + key + "}", value)
    event = {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"content-type": "application/json"},
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "identity": {"userArn": caller, "sourceIp": "198.51.100.7"} if caller else {"sourceIp": "198.51.100.7"},
        },
        "body": body if body is None or isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }
    response = app(event, LambdaContext("api_handler", memory_size=128))
    return response["statusCode"], json.loads(response["body"] or "{}")
