"""Tamper rules: what undoes the guardrail's work is reverted, unless the guardrail or an exception did it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.constants import ALERT, CRITICAL, IGNORE
from chalicelib.events import parse_event
from chalicelib.policy import ATTACH_QUARANTINE, DEACTIVATE_KEY, TAG_USER, UNTAG_USER, ActiveException, decide
from chalicelib.synth import cloudtrail_record
from tests.helpers import (
    ACCOUNT,
    EVENT_TIME,
    GUARDRAIL_ROLE,
    MALLORY,
    OWN_IDENTITY,
    REAL_FIXTURES,
    allowlist,
    real_fixture,
)

OWN = OWN_IDENTITY
POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/iam-user-guardrail-quarantine"
KEY = "AKIAGUARDRAILOFF0001"
RECORD = {
    "status": "quarantined",
    "deactivated_keys": [KEY],
    "tags": {"guardrail:status": "quarantined", "guardrail:reason": "no integration"},
}


def tamper(event_name: str, request: dict[str, Any], identity: dict = MALLORY, **kwargs: Any) -> dict[str, Any]:
    raw = cloudtrail_record(event_name, user="bob", identity=identity, event_time=EVENT_TIME)
    raw["requestParameters"] = {"userName": "bob", **request}
    raw["responseElements"] = None
    raw.update(kwargs)
    return raw


CASES = [
    ("detach", tamper("DetachUserPolicy", {"policyArn": POLICY_ARN}), ALERT, (ATTACH_QUARANTINE,), ()),
    (
        "detach-other-policy",
        tamper("DetachUserPolicy", {"policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}),
        IGNORE,
        (),
        (),
    ),
    ("reactivate", tamper("UpdateAccessKey", {"accessKeyId": KEY, "status": "Active"}), ALERT, (DEACTIVATE_KEY,), ()),
    (
        "reactivate-other-key",
        tamper("UpdateAccessKey", {"accessKeyId": "AKIAOTHER", "status": "Active"}),
        IGNORE,
        (),
        (),
    ),
    ("deactivate", tamper("UpdateAccessKey", {"accessKeyId": KEY, "status": "Inactive"}), IGNORE, (), ()),
    (
        "tag-status",
        tamper("TagUser", {"tags": [{"key": "guardrail:status", "value": "approved"}]}),
        ALERT,
        (TAG_USER,),
        (),
    ),
    (
        "tag-new-key",
        tamper("TagUser", {"tags": [{"key": "guardrail:integration", "value": "datadog"}]}),
        ALERT,
        (UNTAG_USER,),
        ("guardrail:integration",),
    ),
    ("tag-other", tamper("TagUser", {"tags": [{"key": "team", "value": "x"}]}), IGNORE, (), ()),
    ("untag", tamper("UntagUser", {"tagKeys": ["guardrail:status", "team"]}), ALERT, (TAG_USER,), ()),
    ("own-role", tamper("DetachUserPolicy", {"policyArn": POLICY_ARN}, GUARDRAIL_ROLE), IGNORE, (), ()),
    ("failed-call", tamper("DetachUserPolicy", {"policyArn": POLICY_ARN}, errorCode="AccessDenied"), IGNORE, (), ()),
]


@pytest.mark.parametrize(("name", "raw", "verdict", "steps", "untag"), CASES, ids=[c[0] for c in CASES])
def test_tamper_table(name: str, raw: dict, verdict: str, steps: tuple, untag: tuple) -> None:
    decision = decide(parse_event(raw), allowlist(), own_roles=OWN, record=RECORD)
    assert (decision.verdict, decision.steps) == (verdict, steps), decision.reason
    assert decision.rule
    if verdict == ALERT:
        assert decision.severity == CRITICAL and decision.notify
        assert decision.reason.startswith("tamper: ")
        assert decision.untag_keys == untag


def test_restored_tags_are_the_guardrails_own_values() -> None:
    raw = tamper("TagUser", {"tags": [{"key": "guardrail:status", "value": "approved"}]})
    decision = decide(parse_event(raw), allowlist(), own_roles=OWN, record=RECORD)
    assert decision.tags == (("guardrail:status", "quarantined"),)


def test_nothing_is_reverted_during_an_active_exception() -> None:
    active = ActiveException(ACCOUNT, "bob", EVENT_TIME + timedelta(days=1), "U0SECLEAD")
    for _, raw, *_ in CASES:
        assert decide(parse_event(raw), allowlist(), own_roles=OWN, record=RECORD, exception=active).verdict == IGNORE


@pytest.mark.skipif(not REAL_FIXTURES.is_dir(), reason="../shared/fixtures absent")
@pytest.mark.parametrize(
    "name",
    [
        "invictus__DetachUserPolicy__administratoraccess-cleanup.json",
        "elastic__UpdateAccessKey__console-deactivate-other-users-key.json",
    ],
)
def test_real_tamper_shaped_records_that_are_not_tamper(name: str) -> None:
    event = parse_event(real_fixture(name))
    assert decide(event, allowlist(), own_roles=OWN, record=RECORD).verdict == IGNORE


def test_no_loop_when_tags_already_hold_the_guardrails_values() -> None:
    same = tamper("TagUser", {"tags": [{"key": "guardrail:status", "value": "quarantined"}]})
    assert decide(parse_event(same), allowlist(), own_roles=OWN, record=RECORD).verdict == IGNORE
    not_ours = tamper("UntagUser", {"tagKeys": ["guardrail:integration"]})
    assert decide(parse_event(not_ours), allowlist(), own_roles=OWN, record=RECORD).verdict == IGNORE
