"""Arbitrary JSON and mutated CloudTrail records: the parser rejects with a reason or parses, and
what it parses can be decided and alerted on; the Lambda handler rejects without touching AWS."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given

from chalicelib.events import MalformedEventError, parse_event
from chalicelib.guardrail import Guardrail
from chalicelib.iam import IamActions
from chalicelib.policy import decide
from chalicelib.slack_message import build_alert
from chalicelib.store import Store
from tests.helpers import OWN_IDENTITY, allowlist, record
from tests.property.strategies import any_event_json

ALLOWLIST = allowlist()
OWN = OWN_IDENTITY


@given(raw=any_event_json)
@example(raw={**record("CreateUser", "alice"), "eventTime": "0001-01-01T00:00:00+23:59"})
@example(raw={**record("CreateUser", "alice"), "eventTime": "9999-12-31T23:59:59-23:59"})
def test_parse_rejects_with_a_reason_or_the_event_can_be_decided_and_alerted(raw: Any) -> None:
    try:
        event = parse_event(raw)
    except MalformedEventError as exc:
        assert str(exc)
        return
    for mode in (None, "monitor"):
        decision = decide(event, ALLOWLIST, own_roles=OWN, mode=mode)
        assert decision.reason
        build_alert(event, decision)


class Untouchable:
    """Stands in for every collaborator the handler must not reach on rejected input."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        raise AssertionError(f"rejected input reached {name}")

    def __call__(self, account: str) -> IamActions:
        self.calls.append(f"iam_for({account})")
        raise AssertionError("rejected input reached IAM")


@given(raw=any_event_json)
def test_the_handler_rejects_what_the_parser_rejects_without_io(raw: Any) -> None:
    try:
        parse_event(raw)
    except MalformedEventError as exc:
        reason = str(exc)
    else:
        return  # parsed input goes on to the table and IAM: the functional tests drive that path
    notifier, iam_for = Untouchable(), Untouchable()
    guardrail = Guardrail(
        allowlist=ALLOWLIST,
        iam_for=iam_for,
        store=Store(None, "no-table"),  # never reached: any call would fail on None
        notifier=notifier,
        own_roles=OWN,
    )
    result = guardrail.handle(raw)
    assert (result.status, result.reason) == ("rejected", reason)
    assert notifier.calls == [] and iam_for.calls == []
