"""The pure parts of organization scale: account plans, sweep messages, heartbeat judgement, roll-ups."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.fanout import SweepMessageError, handle_messages, parse_sweep_message, sweep_message
from chalicelib.organization import DiscoveryError, plan_accounts
from chalicelib.outbox import USERS_PER_ROLLUP, rollup_message, window_start
from chalicelib.settings import Settings, SettingsError
from chalicelib.silence import HEARTBEAT_MISSING, SilenceCheck, guardrail_rule, pipeline_event

HOME = "123456789012"


class Listed:
    """An organization whose listing is given (the AWS side is tested on moto server)."""

    def __init__(self, accounts: list[str] | None = None, error: str = "") -> None:
        self.accounts, self.error = accounts or [], error

    def active_accounts(self) -> list[str]:
        if self.error:
            raise DiscoveryError(f"organizations:ListAccounts failed: {self.error}")
        return self.accounts


def test_plan_puts_home_first_merges_lists_and_excludes() -> None:
    plan = plan_accounts(
        home=HOME,
        discovery="auto",
        organization=Listed([HOME, "111111111111", "222222222222"]),
        explicit=["333333333333", "111111111111"],
        exclude=["222222222222", HOME],
    )
    assert plan.accounts == [HOME, "111111111111", "333333333333"] and plan.discovered
    # the home account is never excluded: an exclusion must not hide the security account


@pytest.mark.parametrize(
    ("discovery", "error", "reported"),
    [
        ("auto", "AWSOrganizationsNotInUseException", False),
        ("auto", "AccessDeniedException", False),
        ("auto", "TooManyRequestsException", True),  # readable but failing: said so
        ("true", "AccessDeniedException", True),
    ],
)
def test_unreadable_organization(discovery: str, error: str, reported: bool) -> None:
    plan = plan_accounts(home=HOME, discovery=discovery, organization=Listed(error=error), explicit=["111111111111"])
    assert plan.accounts == [HOME, "111111111111"] and not plan.discovered
    assert bool(plan.errors) is reported


def test_discovery_off_never_asks() -> None:
    plan = plan_accounts(home=HOME, discovery="false", organization=Listed(error="boom"), explicit=[])
    assert plan.accounts == [HOME] and plan.errors == []


def test_settings_for_organization_scale() -> None:
    settings = Settings.from_env(
        {
            "GUARDRAIL_SWEEP_EXCLUDE": "111122223333",
            "GUARDRAIL_ORG_DISCOVERY": "TRUE",
            "GUARDRAIL_SWEEP_QUEUE": "iam-user-guardrail-prod-sweep",
        }
    )
    assert settings.sweep_exclude == ("111122223333",) and settings.org_discovery == "true"
    assert settings.sweep_queue == "iam-user-guardrail-prod-sweep"
    assert Settings.from_env({}).org_discovery == "auto"
    for name, value in (
        ("GUARDRAIL_SWEEP_EXCLUDE", "1234"),
        ("GUARDRAIL_ORG_DISCOVERY", "maybe"),
        ("GUARDRAIL_SWEEP_QUEUE", "https://sqs/queue"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})


@pytest.mark.parametrize(
    "body",
    ["", "not json", "[]", '{"account": "12345"}', '{"account": 123456789012}', '{"acct": "123456789012"}', None],
)
def test_poison_messages_are_refused(body: object) -> None:
    with pytest.raises(SweepMessageError):
        parse_sweep_message(body)


def test_a_batch_reports_only_its_failures() -> None:
    swept: list[str] = []

    def sweep_one(account: str) -> None:
        if account == "222222222222":
            raise RuntimeError("credential report throttled")
        swept.append(account)

    records = [
        {"messageId": "a", "body": sweep_message("111111111111", "r")},
        {"messageId": "b", "body": "poison"},
        {"messageId": "c", "body": sweep_message("222222222222", "r")},
        {"messageId": "d", "body": sweep_message("333333333333", "r")},
    ]
    answer = handle_messages(records, sweep_one)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "c"}]}
    assert swept == ["111111111111", "333333333333"]


def check(now: datetime) -> SilenceCheck:
    return SilenceCheck(
        account="111111111111",
        events=None,
        cloudtrail=None,
        iam=None,
        dynamodb=None,
        table="t",
        policy_name="iam-user-guardrail-quarantine",
        clock=lambda: now,
    )


def test_heartbeat_judgement() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    sent = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    older = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    young = (now - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    c = check(now)
    assert c.heartbeat({}, now) == ([], False)  # the first sweep has nothing to judge
    assert c.heartbeat({"hb_sent": sent, "hb_returned": sent}, now) == ([], False)
    problems, pending = c.heartbeat({"hb_sent": sent, "hb_returned": older}, now)
    assert not pending
    assert [p.kind for p in problems] == [HEARTBEAT_MISSING] and problems[0].severity == "critical"
    assert c.heartbeat({"hb_sent": sent}, now)[0][0].kind == HEARTBEAT_MISSING
    assert c.heartbeat({"hb_sent": young}, now) == ([], True)


def test_pipeline_events_are_recognised_and_nothing_else() -> None:
    def wrap(source: str, name: str) -> dict:
        return {"detail-type": "AWS API Call via CloudTrail", "detail": {"eventSource": source, "eventName": name}}

    assert pipeline_event(wrap("iam.amazonaws.com", "TagPolicy")) == "heartbeat"
    assert pipeline_event(wrap("events.amazonaws.com", "DisableRule")) == "rule"
    assert pipeline_event(wrap("iam.amazonaws.com", "CreateUser")) == ""
    assert pipeline_event(wrap("events.amazonaws.com", "TagPolicy")) == ""
    assert pipeline_event({"detail-type": "Scheduled Event", "detail": {}}) == ""
    assert pipeline_event("not a dict") == ""
    assert guardrail_rule("iam-user-guardrail-forward") and guardrail_rule("iam-user-guardrail-prod-on_iam_event")
    assert not guardrail_rule("team-iam-user-guardrail-forward")


def test_rollup_escapes_what_the_creator_controls() -> None:
    items = [
        {
            "user": "x<!channel>",
            "account": HOME,
            "event_name": "CreateUser",
            "verdict": "quarantine",
            "severity": "high",
        },
        {"user": "y`<https://evil|click>`", "account": HOME, "event_name": "CreateUser", "verdict": "quarantine"},
    ]
    message = rollup_message("2026-11-29T09:10:00.000000Z", "arn:aws:iam::1:user/<@U1>", items)
    text = json.dumps(message)
    assert "<!channel>" not in text and "<https://evil" not in text and "<@U1>" not in text
    assert "x&lt;!channel&gt;" in text and len(message["blocks"]) <= 50


def test_rollup_of_two_hundred_users_fits_slack_limits() -> None:
    items = [{"user": f"u-{i:03d}-" + "n" * 50, "account": HOME, "verdict": "quarantine"} for i in range(200)]
    message = rollup_message("2026-11-29T09:10:00.000000Z", "creator", items)
    sections = [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]
    assert all(len(s) <= 3000 for s in sections) and len(message["blocks"]) <= 50
    assert all(f"u-{i:03d}" in json.dumps(message) for i in range(200))


def test_a_huge_window_is_split_so_no_user_is_cut_off() -> None:
    items = [{"user": f"u-{i:04d}", "account": HOME, "verdict": "quarantine"} for i in range(USERS_PER_ROLLUP)]
    message = rollup_message("2026-11-29T09:10:00.000000Z", "creator", items)
    assert len(message["blocks"]) < 50 and f"u-{USERS_PER_ROLLUP - 1:04d}" in json.dumps(message["blocks"])


def test_windows_are_ten_minutes() -> None:
    assert window_start(datetime(2026, 11, 29, 9, 19, 59, tzinfo=UTC)) == datetime(2026, 11, 29, 9, 10, tzinfo=UTC)
