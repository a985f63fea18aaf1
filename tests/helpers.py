"""Shared test data: a hand-written allowlist and record builders."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.allowlist import Allowlist, parse_allowlist
from chalicelib.identity import OwnIdentity
from devtools.synth import cloudtrail_record, role_identity, root_identity, user_identity

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
REPO = Path(__file__).resolve().parent.parent
REAL_FIXTURES = REPO.parent / "shared" / "fixtures" / "cloudtrail" / "real"
TERRAFORM = role_identity(ACCOUNT, "terraform-deployer", "tf-run-42")
DEVELOPER = role_identity(
    ACCOUNT, "AWSReservedSSO_Developer_0123abcd", "dev@example.com", path="/aws-reserved/sso.amazonaws.com/"
)
GUARDRAIL_ROLE = role_identity(ACCOUNT, "iam-user-guardrail-dev-on_iam_event", "iam-user-guardrail-dev-on_iam_event")
#: The guardrail as the dev stage pins it: its Lambda roles at home, its remediation sessions elsewhere.
OWN_IDENTITY = OwnIdentity.pinned(
    ACCOUNT, [f"iam-user-guardrail-dev-{f}" for f in ("on_iam_event", "sweep", "api_handler")]
)
MALLORY = user_identity(ACCOUNT, "mallory")
ROOT = root_identity(ACCOUNT)
EVENT_TIME = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)

ALLOWLIST_YAML = """
version: 1
mode: enforce
exception_max_days: 30
approvers:
  slack_user_ids: [U0SECLEAD]
  iam_principals: ["arn:aws:iam::*:role/security-admin"]
provisioners:
  - "arn:aws:iam::*:role/terraform-deployer"
integrations:
  - name: datadog
    owner: platform@example.com
    purpose: Datadog metrics, read-only
    services: [cloudwatch]
    resources: ["arn:aws:cloudwatch:*:*:*"]
    used_from: Datadog SaaS
    users: ["svc-datadog", "svc-datadog-*"]
    path: /integrations/
    max_access_keys: 1
    ticket: SEC-1
    expires: 2027-06-30
  - name: console-vendor
    owner: it@example.com
    purpose: Vendor portal that needs the console
    users: ["svc-console"]
    console_access: true
  - name: scoped
    owner: data@example.com
    purpose: only in one account
    users: ["svc-scoped"]
    accounts: ["123456789012"]
    created_by: []
  - name: expired
    owner: old@example.com
    purpose: a contract that ended
    users: ["svc-old"]
    expires: 2025-01-31
"""


def allowlist(text: str = ALLOWLIST_YAML) -> Allowlist:
    return parse_allowlist(text)


def record(event_name: str, user: str, identity: dict[str, Any] = TERRAFORM, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("event_time", EVENT_TIME)
    return cloudtrail_record(event_name, user=user, identity=identity, **kwargs)


def real_fixture(name: str) -> dict[str, Any]:
    return json.loads((REAL_FIXTURES / name).read_text())
