"""Bursts on moto server: every quarantine at once, Slack rolled up per creator, paced, nothing lost."""

from __future__ import annotations

import json

import pytest

from chalicelib import runtime
from chalicelib.cli import main
from chalicelib.outbox import PACE_SECONDS, Flusher
from devtools.synth import role_identity
from tests.functional.conftest import Aws
from tests.helpers import ACCOUNT, DEVELOPER, record

POLICY = "iam-user-guardrail-quarantine"


def burst(aws: Aws, count: int, identity: dict = DEVELOPER, prefix: str = "burst") -> list[str]:
    users = [f"{prefix}-{i:03d}" for i in range(count)]
    for user in users:
        aws.iam.create_user(UserName=user)
        result = aws.invoke(record("CreateUser", user, identity))
        assert result["verdict"] == "quarantine"
    return users


def named(aws: Aws, user: str) -> bool:
    return any(f"`{user}`" in json.dumps(m) or f"{user}:" in json.dumps(m) for m in aws.slack.messages)


def test_sixty_creations_from_one_creator_quarantine_all_and_post_at_most_fifteen_messages(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    users = burst(aws, 60)
    # every quarantine happened at once, before any flush
    for user in users:
        assert aws.user_state(user)["policies"] == [POLICY]
    assert len(aws.slack.messages) == 5  # the first five alerts, each with its Approve buttons
    assert all(any(b["type"] == "actions" for b in m["blocks"]) for m in aws.slack.messages)
    assert len(aws.items("ROLLUP")) == 55
    audits = [a for a in aws.items("AUDIT") if a.get("kind") == "decision"]
    assert sorted(a["alert"] for a in audits).count("rolled_up") == 55
    assert main(["flush-alerts"]) == 0
    assert "naming 55 user(s)" in capsys.readouterr().out
    assert len(aws.slack.messages) <= 15
    assert all(named(aws, user) for user in users)
    assert aws.items("ROLLUP") == []
    rollup = json.dumps(aws.slack.messages[-1])
    assert "POST /exceptions" in rollup and "sweep --dry-run" in rollup  # how to review and approve the rest


def test_creators_are_counted_apart(aws: Aws) -> None:
    burst(aws, 6)
    burst(aws, 3, identity=role_identity(ACCOUNT, "ci-deployer", "ci"), prefix="ci")
    assert len(aws.slack.messages) == 5 + 3  # the sixth of the first creator is held; the other's three are not
    assert [i["user"] for i in aws.items("ROLLUP")] == ["burst-005"]


def test_flush_is_paced_one_message_a_second_and_resends_the_outbox(aws: Aws) -> None:
    for name in ("a", "b", "c"):
        burst(aws, 6, identity=role_identity(ACCOUNT, f"creator-{name}", "s"), prefix=name)
    aws.slack.behaviour = [(500, 0.0, {})] * 2  # one alert fails twice and lands in the outbox
    aws.iam.create_user(UserName="late")
    aws.invoke(record("CreateUser", "late", role_identity(ACCOUNT, "creator-d", "s")))
    assert len(aws.items("OUTBOX")) == 1
    aws.slack.clear()
    slept: list[float] = []
    report = Flusher(runtime.get().store, runtime.get().notifier, sleep=slept.append).flush()
    assert (report.rollups, report.rolled_up_users, report.resent, report.left) == (3, 3, 1, 0)
    assert len(aws.slack.messages) == 4
    assert slept == [PACE_SECONDS] * 3  # never two messages in the same second from one flush
    assert aws.items("OUTBOX") == [] and aws.items("ROLLUP") == []


def test_rate_limited_flush_honours_retry_after_stops_and_loses_nothing(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = burst(aws, 8)
    aws.slack.clear()
    waits: list[float] = []
    monkeypatch.setattr("slack_sdk.http_retry.builtin_handlers.time.sleep", waits.append)
    aws.slack.behaviour = [(429, 0.0, {"Retry-After": "7"})] * 2  # Slack refuses the attempt and its retry
    first = Flusher(runtime.get().store, runtime.get().notifier, sleep=lambda _: None).flush()
    assert (first.rollups, first.left) == (0, 3) and "429" in first.errors[0]
    assert len(waits) == 1 and waits[0] >= 7  # slack_sdk waited as long as Slack asked
    assert len(aws.items("ROLLUP")) == 3
    second = Flusher(runtime.get().store, runtime.get().notifier, sleep=lambda _: None).flush()
    assert (second.rollups, second.rolled_up_users, second.left) == (1, 3, 0)
    assert all(named(aws, u) for u in users[5:])


def test_flush_cli_reports_what_is_left(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    burst(aws, 6)
    aws.slack.behaviour = [(500, 0.0, {})] * 4
    assert main(["flush-alerts"]) == 1
    assert "1 left for the next flush" in capsys.readouterr().out
    assert len(aws.items("ROLLUP")) == 1
