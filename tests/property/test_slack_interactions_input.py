"""`POST /slack/interactions` under hostile input: arbitrary bodies and headers never raise;
anything not signed with the app's secret is a 401 that touches nothing; a signed request of any
shape is a 200, and an exception is granted (or a quarantine kept) only for a listed approver's
single click on a button that matches a quarantine the guardrail recorded.

`approvals` and `store` are recording stand-ins here (hundreds of examples); the functional tests
in tests/functional/test_approvals.py drive the same handler against moto."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import SignatureVerifier

from chalicelib.approvals import ConflictError, GrantRequest
from chalicelib.constants import ACTION_KEEP_QUARANTINED, QUARANTINE
from chalicelib.slack_interactions import APPROVE_ACTIONS, OUR_ACTIONS, SlackInteractions
from chalicelib.store import EVENT_SK, event_pk
from tests.helpers import ACCOUNT, allowlist
from tests.property.strategies import assert_markup_safe, hostile_text, json_values

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_764_400_000.0
APPROVER = "U0SECLEAD"
EVENT_ID = "5e3d0b1c-0000-4000-8000-000000000001"
CASE = {"account": ACCOUNT, "user": "alice", "verdict": QUARANTINE, "actor_arn": "arn:aws:iam::123456789012:user/m"}
GOOD_VALUE = json.dumps({"a": ACCOUNT, "u": "alice", "e": EVENT_ID})


class _Clock:
    def now(self) -> float:
        return NOW


def sign(body: str, *, at: float = NOW, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(at))
    signature = SignatureVerifier(secret, clock=_Clock()).generate_signature(timestamp=timestamp, body=body)
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature or ""}


@dataclass
class RecordingStore:
    """The table's surface the handler uses, as a dict; every call is recorded."""

    items: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    audit: list[Mapping[str, Any]] = field(default_factory=list)

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        self.calls.append(f"get {pk}")
        item = self.items.get((pk, sk))
        return dict(item) if item else None

    def put(self, item: dict[str, Any], *, condition: str = "", **_: Any) -> bool:
        self.calls.append(f"put {item['pk']}")
        key = (item["pk"], item["sk"])
        if condition and key in self.items:
            return False
        self.items[key] = dict(item)
        return True

    def delete(self, pk: str, sk: str) -> None:
        self.calls.append(f"delete {pk}")
        self.items.pop((pk, sk), None)

    def append_audit(self, record: Mapping[str, Any]) -> None:
        self.calls.append("audit")
        self.audit.append(record)


@dataclass
class RecordingApprovals:
    """Grants and keeps are recorded, not carried out; a second grant of one user conflicts."""

    allowlist: Any = field(default_factory=allowlist)
    granted: list[GrantRequest] = field(default_factory=list)
    kept: list[tuple[str, str, str]] = field(default_factory=list)

    def now(self) -> datetime:
        return datetime.fromtimestamp(NOW, UTC)

    def grant(self, request: GrantRequest) -> dict[str, Any]:
        if any(g.user == request.user for g in self.granted):
            raise ConflictError(f"{request.user} already holds an exception <!here>")
        self.granted.append(request)
        return {"expires_at": "2026-12-06T00:00:00.000000Z", "reason": request.reason}

    def keep_quarantined(self, account: str, user: str, *, approver: str, case_event_id: str) -> None:
        self.kept.append((account, user, approver))


@dataclass
class World:
    store: RecordingStore = field(default_factory=RecordingStore)
    approvals: RecordingApprovals = field(default_factory=RecordingApprovals)
    replies: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store.items[(event_pk(EVENT_ID), EVENT_SK)] = dict(CASE)
        self.handler = SlackInteractions(
            signing_secret=lambda: SECRET,
            approvals=self.approvals,  # type: ignore[arg-type]
            store=self.store,  # type: ignore[arg-type]
            responder=lambda url, message: self.replies.append((url, message)),
            clock=lambda: NOW,
        )

    @property
    def decided(self) -> bool:
        return bool(self.approvals.granted or self.approvals.kept) or any(
            pk.startswith("DECISION#") for pk, _ in self.store.items
        )


def legitimate(payload: Any) -> str:
    """The action a correct click carries ('' when the payload is anything else)."""
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return ""
    actions, user = payload.get("actions"), payload.get("user")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        return ""
    action = actions[0]
    if not isinstance(user, dict) or user.get("id") != APPROVER or action.get("action_id") not in OUR_ACTIONS:
        return ""
    return action["action_id"] if action.get("value") == GOOD_VALUE else ""


headers = st.dictionaries(
    st.one_of(
        st.sampled_from(("X-Slack-Signature", "x-slack-request-timestamp", "Content-Type")), st.text(max_size=10)
    ),
    st.one_of(st.text(max_size=30), st.just("v0=" + "0" * 64), st.just(str(int(NOW)))),
    max_size=4,
)
raw_bodies = st.one_of(st.binary(max_size=200), st.text(max_size=200))


@given(body=raw_bodies, request_headers=headers)
@example(
    body=b"\xff\xfe payload=%7B%7D", request_headers={"X-Slack-Request-Timestamp": "nan", "X-Slack-Signature": "v0="}
)
@example(body="payload={}", request_headers={"X-Slack-Request-Timestamp": "1e400", "X-Slack-Signature": "v0=00"})
@example(body=b"", request_headers={"X-Slack-Signature": "\x80", "x-slack-request-timestamp": str(int(NOW))})
def test_unsigned_or_wrongly_signed_requests_are_401_and_touch_nothing(
    body: bytes | str, request_headers: dict[str, str]
) -> None:
    world = World()
    reply = world.handler.handle(body, request_headers)
    assert reply.status == 401
    assert world.store.calls == [] and world.replies == [] and not world.decided


@given(body=st.text(max_size=200), secret=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and s != SECRET))
def test_a_request_signed_with_another_secret_is_401(body: str, secret: str) -> None:
    world = World()
    assert world.handler.handle(body, sign(body, secret=secret)).status == 401
    assert world.store.calls == [] and not world.decided


@given(body=st.text(max_size=200), age=st.sampled_from((-3600, -301, 301, 86400)))
def test_a_correct_signature_outside_five_minutes_is_401(body: str, age: int) -> None:
    world = World()
    assert world.handler.handle(body, sign(body, at=NOW - age)).status == 401
    assert world.store.calls == [] and not world.decided


@pytest.mark.parametrize("configured", ["", "  ", None])
def test_an_empty_or_missing_signing_secret_is_401_not_a_crash(configured: str | None) -> None:
    """A secret left blank (or unreadable) verifies nothing: every request is refused."""

    def secret() -> str:
        if configured is None:
            raise KeyError("signing_secret")
        return configured

    world = World()
    world.handler = SlackInteractions(
        signing_secret=secret,
        approvals=world.approvals,  # type: ignore[arg-type]
        store=world.store,  # type: ignore[arg-type]
        responder=lambda url, message: world.replies.append((url, message)),
        clock=lambda: NOW,
    )
    body = urlencode({"payload": json.dumps(correct_click())})
    assert world.handler.handle(body, sign(body)).status == 401
    assert world.store.calls == [] and not world.decided


values = st.one_of(
    st.builds(
        lambda a, u, e: json.dumps({"a": a, "u": u, "e": e}),
        st.sampled_from((ACCOUNT, "210987654321", "")),
        st.one_of(st.sampled_from(("alice", "ALICE", "alice ", "bob")), hostile_text),
        st.sampled_from((EVENT_ID, EVENT_ID.upper(), "other-event", "")),
    ),
    json_values,
)


@st.composite
def clicks(draw: st.DrawFn) -> dict[str, Any]:
    """A correct click with none, one or a few parts changed to something else."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": APPROVER, "username": "lead"},
        "actions": [{"action_id": draw(st.sampled_from(sorted(OUR_ACTIONS))), "value": GOOD_VALUE}],
        "response_url": "https://hooks.slack.com/actions/T0/1/x",
        "message": {"blocks": [{"type": "actions", "block_id": "guardrail_decision"}]},
    }
    parts = ("type", "user", "user id", "actions", "action_id", "value", "second action", "response_url", "message")
    changed = [draw(st.sampled_from(("nothing", *parts)))]
    changed += draw(st.lists(st.sampled_from(parts), max_size=2, unique=True)) if draw(st.booleans()) else []
    for part in changed:
        action = payload["actions"][0] if isinstance(payload["actions"], list) and payload["actions"] else {}
        if part == "user id":
            payload["user"] = {
                "id": draw(st.one_of(st.sampled_from(("U0OTHER", "u0seclead", " U0SECLEAD")), json_values))
            }
        elif part == "action_id" and isinstance(action, dict):
            action["action_id"] = draw(st.one_of(st.sampled_from(("guardrail_approve_365", "approve")), hostile_text))
        elif part == "value" and isinstance(action, dict):
            action["value"] = draw(values)
        elif part == "second action" and isinstance(payload["actions"], list):
            payload["actions"].append(dict(action) if isinstance(action, dict) else action)
        elif part in payload:
            payload[part] = draw(json_values)
    return payload


signed_bodies = st.one_of(st.text(max_size=200), json_values.map(lambda p: urlencode({"payload": json.dumps(p)})))


@given(body=signed_bodies)
@example(body=urlencode({"payload": json.dumps({"type": "block_actions", "actions": "x", "user": []})}))
@example(body=urlencode({"payload": json.dumps({"type": "<!channel>", "response_url": "https://hooks.slack.com/a"})}))
def test_signed_requests_of_any_shape_are_200_and_decide_nothing(body: str) -> None:
    world = World()
    assert world.handler.handle(body.encode(), sign(body)).status == 200
    assert not world.decided
    assert_replies_safe(world)


@settings(max_examples=max(settings().max_examples, 200))  # cheap, and the defects are many
@given(body=clicks().map(lambda p: urlencode({"payload": json.dumps(p)})))
@example(
    body=urlencode(
        {
            "payload": json.dumps(
                {
                    "type": "block_actions",
                    "user": {"id": APPROVER},
                    "actions": [{"action_id": "guardrail_approve_7", "value": GOOD_VALUE}],
                    "response_url": "https://hooks.slack.com/a",
                }
            )
        }
    )
)
def test_signed_requests_are_200_and_only_a_correct_click_decides(body: str) -> None:
    world = World()
    reply = world.handler.handle(body.encode(), sign(body))
    assert reply.status == 200
    payload = _payload(body)
    action = legitimate(payload)
    if action in APPROVE_ACTIONS:
        [grant] = world.approvals.granted
        assert (grant.account, grant.user, grant.days, grant.approver) == (
            ACCOUNT,
            "alice",
            APPROVE_ACTIONS[action],
            f"slack:{APPROVER}",
        )
        assert world.approvals.kept == []
    elif action == ACTION_KEEP_QUARANTINED:
        assert world.approvals.kept == [(ACCOUNT, "alice", f"slack:{APPROVER}")]
        assert world.approvals.granted == []
    else:
        assert not world.decided, payload
    assert_replies_safe(world)


def assert_replies_safe(world: World) -> None:
    """What the handler posts back echoes nothing unescaped, and its mrkdwn is verbatim."""
    for _, message in world.replies:
        assert_markup_safe(message["text"], mentions=True)
        for block in message.get("blocks", []):
            if block.get("type") == "section" and block["text"].get("verbatim") is not None:
                assert block["text"]["verbatim"] is True


def correct_click(action_id: str = "guardrail_approve_7") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": APPROVER},
        "actions": [{"action_id": action_id, "value": GOOD_VALUE}],
        "response_url": "https://hooks.slack.com/a",
    }


def _value(**change: str) -> str:
    return json.dumps({"a": ACCOUNT, "u": "alice", "e": EVENT_ID} | change)


#: One defect each; every one must leave the click undecided (the random search mixes them).
ONE_DEFECT: dict[str, Callable[[dict[str, Any]], None]] = {
    "not an approver": lambda p: p.update(user={"id": "U0OTHER"}),
    "approver id in lower case": lambda p: p.update(user={"id": "u0seclead"}),
    "approver id with a newline": lambda p: p.update(user={"id": "U0SECLEAD\n"}),
    "no user": lambda p: p.pop("user"),
    "two actions": lambda p: p["actions"].append(dict(p["actions"][0])),
    "no action": lambda p: p.update(actions=[]),
    "unknown action": lambda p: p["actions"][0].update(action_id="guardrail_approve_365"),
    "other user": lambda p: p["actions"][0].update(value=_value(u="bob")),
    "user in upper case": lambda p: p["actions"][0].update(value=_value(u="ALICE")),
    "other account": lambda p: p["actions"][0].update(value=_value(a="210987654321")),
    "other event": lambda p: p["actions"][0].update(value=_value(e="other-event")),
    "value not JSON": lambda p: p["actions"][0].update(value="alice"),
    "not block_actions": lambda p: p.update(type="view_submission"),
}


@pytest.mark.parametrize("defect", sorted(ONE_DEFECT))
def test_a_click_with_one_defect_decides_nothing(defect: str) -> None:
    world, payload = World(), correct_click()
    ONE_DEFECT[defect](payload)
    body = urlencode({"payload": json.dumps(payload)})
    assert world.handler.handle(body, sign(body)).status == 200
    assert not world.decided
    assert world.store.audit and world.store.audit[-1]["kind"] == "refusal"


@pytest.mark.parametrize("verdict", ["alert", "approve", ""])
def test_a_correct_click_on_a_case_that_is_no_quarantine_decides_nothing(verdict: str) -> None:
    world = World()
    world.store.items[(event_pk(EVENT_ID), EVENT_SK)]["verdict"] = verdict
    body = urlencode({"payload": json.dumps(correct_click())})
    assert world.handler.handle(body, sign(body)).status == 200
    assert not world.decided


@pytest.mark.parametrize("action_id", sorted(OUR_ACTIONS))
def test_the_correct_click_decides(action_id: str) -> None:
    world = World()
    body = urlencode({"payload": json.dumps(correct_click(action_id))})
    assert world.handler.handle(body, sign(body)).status == 200
    assert len(world.approvals.granted) + len(world.approvals.kept) == 1


def test_the_same_click_twice_decides_once() -> None:
    world = World()
    body = urlencode(
        {
            "payload": json.dumps(
                {
                    "type": "block_actions",
                    "user": {"id": APPROVER},
                    "actions": [{"action_id": "guardrail_approve_30", "value": GOOD_VALUE}],
                    "response_url": "https://hooks.slack.com/a",
                }
            )
        }
    )
    for _ in range(2):
        assert world.handler.handle(body, sign(body)).status == 200
    assert len(world.approvals.granted) == 1
    assert "already decided" in world.replies[-1][1]["text"]


def _payload(body: str) -> Any:
    from urllib.parse import parse_qs

    try:
        return json.loads(parse_qs(body, keep_blank_values=True).get("payload", [""])[0])
    except ValueError:
        return None
