"""The decision table (DESIGN.md "Decisions per event"), one row per case, plus real records."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.allowlist import parse_allowlist
from chalicelib.constants import ALERT, APPROVE, CRITICAL, HIGH, IGNORE, INFO, MONITOR, QUARANTINE
from chalicelib.events import parse_event
from chalicelib.policy import (
    ATTACH_QUARANTINE,
    DEACTIVATE_KEY,
    DELETE_LOGIN_PROFILE,
    TAG_USER,
    UNTAG_USER,
    ActiveException,
    UserFacts,
    decide,
    facts_needed,
)
from devtools.synth import role_identity, user_id_for, user_identity
from tests.helpers import (
    ACCOUNT,
    DEVELOPER,
    EVENT_TIME,
    GUARDRAIL_ROLE,
    MALLORY,
    OTHER_ACCOUNT,
    OWN_IDENTITY,
    REAL_FIXTURES,
    ROOT,
    TERRAFORM,
    allowlist,
    real_fixture,
    record,
)

OWN_ROLES = OWN_IDENTITY
CONTRACTOR_ID = user_id_for(ACCOUNT, "contractor")
EXCEPTION = ActiveException(
    ACCOUNT, "contractor", EVENT_TIME + timedelta(days=7), "U0SECLEAD", "pilot", user_id=CONTRACTOR_ID
)
#: IAM's answer for the user the exception was granted to (credential events carry no user id).
SAME_USER = UserFacts(user_id=CONTRACTOR_ID)
KEY = "AKIAEXAMPLENEWKEY001"


@dataclass
class Case:
    id: str
    event: str
    user: str
    identity: dict[str, Any] = field(default_factory=lambda: TERRAFORM)
    verdict: str = QUARANTINE
    steps: tuple[str, ...] = (ATTACH_QUARANTINE, TAG_USER)
    severity: str = HIGH
    reason: str = ""
    record_kwargs: dict[str, Any] = field(default_factory=dict)
    facts: UserFacts | None = None
    exception: ActiveException | None = None
    notify: bool | None = None


CASES = [
    # CreateUser
    Case(
        "user-approved",
        "CreateUser",
        "svc-datadog",
        verdict=APPROVE,
        steps=(TAG_USER,),
        severity=INFO,
        reason="matches integration 'datadog'",
        record_kwargs={"path": "/integrations/"},
        notify=False,
    ),
    Case("user-unlisted", "CreateUser", "alice", DEVELOPER, reason="no integration in the allowlist matches"),
    Case("user-wrong-path", "CreateUser", "svc-datadog", reason="requires path /integrations/ (user has path /)"),
    Case(
        "user-wrong-creator",
        "CreateUser",
        "svc-datadog",
        DEVELOPER,
        record_kwargs={"path": "/integrations/"},
        reason="is not in its created_by",
    ),
    Case("user-expired", "CreateUser", "svc-old", reason="expired on 2025-01-31"),
    Case(
        "user-wrong-account",
        "CreateUser",
        "svc-scoped",
        record_kwargs={"account": OTHER_ACCOUNT},
        reason=f"not approved in account {OTHER_ACCOUNT}",
    ),
    Case(
        "user-created-by-anyone", "CreateUser", "svc-scoped", MALLORY, verdict=APPROVE, steps=(TAG_USER,), severity=INFO
    ),
    Case(
        "user-exception",
        "CreateUser",
        "contractor",
        DEVELOPER,
        verdict=APPROVE,
        steps=(TAG_USER,),
        severity=INFO,
        exception=EXCEPTION,
        reason="holds an exception until",
    ),
    Case(
        "user-expired-exception",
        "CreateUser",
        "contractor",
        DEVELOPER,
        exception=ActiveException(ACCOUNT, "contractor", EVENT_TIME - timedelta(seconds=1)),
    ),
    Case(
        "user-creator-guardrail-tags",
        "CreateUser",
        "alice",
        DEVELOPER,
        steps=(ATTACH_QUARANTINE, UNTAG_USER, TAG_USER),
        reason="creator-supplied tags ignored: guardrail:status",
        record_kwargs={"tags": [("guardrail:status", "approved"), ("team", "x")]},
    ),
    Case(
        "user-error",
        "CreateUser",
        "alice",
        DEVELOPER,
        verdict=IGNORE,
        steps=(),
        severity=INFO,
        record_kwargs={"error_code": "AccessDenied"},
        reason="failed with AccessDenied",
        notify=False,
    ),
    # the guardrail never creates users: its role doing so is judged like anyone else's
    Case("user-own-role", "CreateUser", "alice", GUARDRAIL_ROLE, reason="no integration in the allowlist matches"),
    Case("user-by-root", "CreateUser", "tracy", ROOT),
    # CreateAccessKey
    Case(
        "key-approved",
        "CreateAccessKey",
        "svc-datadog",
        verdict=APPROVE,
        steps=(),
        severity=INFO,
        facts=UserFacts(path="/integrations/", active_key_ids=(KEY,)),
        reason="1 active key(s), max_access_keys 1",
        notify=False,
    ),
    Case(
        "key-over-limit",
        "CreateAccessKey",
        "svc-datadog",
        verdict=ALERT,
        steps=(DEACTIVATE_KEY,),
        facts=UserFacts(path="/integrations/", active_key_ids=("AKIAOLDKEY0000000001", KEY)),
        reason="would have 2 active keys, more than max_access_keys 1",
    ),
    Case(
        "key-count-unknown",
        "CreateAccessKey",
        "svc-datadog",
        verdict=ALERT,
        steps=(DEACTIVATE_KEY,),
        facts=UserFacts(path="/integrations/", active_key_ids=None),
        reason="could not count the active keys",
    ),
    Case(
        "key-wrong-creator",
        "CreateAccessKey",
        "svc-datadog",
        MALLORY,
        verdict=ALERT,
        steps=(DEACTIVATE_KEY,),
        severity=CRITICAL,
        facts=UserFacts(path="/integrations/", active_key_ids=(KEY,)),
        reason="not in the created_by of 'datadog': only the access key is deactivated",
    ),
    Case(
        "key-backdoor",
        "CreateAccessKey",
        "bob",
        MALLORY,
        steps=(DEACTIVATE_KEY, ATTACH_QUARANTINE, TAG_USER),
        severity=CRITICAL,
        reason="possible backdoor",
    ),
    Case(
        "key-backdoor-by-provisioner",
        "CreateAccessKey",
        "bob",
        TERRAFORM,
        steps=(DEACTIVATE_KEY, ATTACH_QUARANTINE, TAG_USER),
        severity=HIGH,
        reason="possible backdoor",
    ),
    Case(
        "key-self",
        "CreateAccessKey",
        "mallory",
        MALLORY,
        steps=(DEACTIVATE_KEY, ATTACH_QUARANTINE, TAG_USER),
        severity=HIGH,
    ),
    Case(
        "key-exception",
        "CreateAccessKey",
        "contractor",
        verdict=APPROVE,
        steps=(),
        severity=INFO,
        exception=EXCEPTION,
        facts=SAME_USER,
        notify=True,
    ),
    Case(
        "key-exception-self",
        "CreateAccessKey",
        "contractor",
        user_identity(ACCOUNT, "contractor"),
        verdict=APPROVE,
        steps=(),
        severity=INFO,
        exception=EXCEPTION,
        facts=SAME_USER,
        notify=True,
    ),
    Case(
        "key-exception-by-someone-else",
        "CreateAccessKey",
        "contractor",
        DEVELOPER,
        verdict=ALERT,
        steps=(DEACTIVATE_KEY,),
        severity=CRITICAL,
        exception=EXCEPTION,
        facts=SAME_USER,
        reason="does not cover it",
    ),
    Case(
        "key-exception-of-a-deleted-user",
        "CreateAccessKey",
        "contractor",
        verdict=QUARANTINE,
        steps=(DEACTIVATE_KEY, ATTACH_QUARANTINE, TAG_USER),
        severity=HIGH,
        exception=EXCEPTION,
        facts=UserFacts(user_id="AIDANEWUSERSAMENAME01"),
    ),
    Case(
        "key-error",
        "CreateAccessKey",
        "bob",
        MALLORY,
        verdict=IGNORE,
        steps=(),
        severity=INFO,
        record_kwargs={"error_code": "LimitExceeded"},
    ),
    # CreateLoginProfile
    Case(
        "login-allowed",
        "CreateLoginProfile",
        "svc-console",
        verdict=APPROVE,
        steps=(),
        severity=INFO,
        reason="MFA is required",
        notify=False,
    ),
    Case(
        "login-not-allowed",
        "CreateLoginProfile",
        "svc-datadog",
        verdict=ALERT,
        steps=(DELETE_LOGIN_PROFILE,),
        facts=UserFacts(path="/integrations/"),
        reason="does not allow console access",
    ),
    Case(
        "login-wrong-creator",
        "CreateLoginProfile",
        "svc-console",
        MALLORY,
        verdict=ALERT,
        steps=(DELETE_LOGIN_PROFILE,),
        severity=CRITICAL,
        reason="not in the created_by",
    ),
    Case(
        "login-unlisted",
        "CreateLoginProfile",
        "bob",
        MALLORY,
        steps=(DELETE_LOGIN_PROFILE, ATTACH_QUARANTINE, TAG_USER),
        severity=CRITICAL,
        reason="console password was made by",
    ),
    Case(
        "login-exception",
        "CreateLoginProfile",
        "contractor",
        user_identity(ACCOUNT, "contractor"),
        verdict=APPROVE,
        steps=(),
        severity=INFO,
        exception=EXCEPTION,
        facts=SAME_USER,
        notify=True,
    ),
    Case(
        "login-exception-by-someone-else",
        "UpdateLoginProfile",
        "contractor",
        DEVELOPER,
        verdict=ALERT,
        steps=(DELETE_LOGIN_PROFILE,),
        severity=CRITICAL,
        exception=EXCEPTION,
        facts=SAME_USER,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decision_table(case: Case) -> None:
    event = parse_event(record(case.event, case.user, case.identity, access_key_id=KEY, **case.record_kwargs))
    decision = decide(event, allowlist(), own_roles=OWN_ROLES, exception=case.exception, facts=case.facts)
    assert decision.verdict == case.verdict, decision.reason
    assert decision.steps == case.steps
    assert decision.severity == case.severity
    assert case.reason in decision.reason
    assert decision.reason  # every decision explains itself
    assert decision.rule  # and names the rule that decided
    if case.notify is not None:
        assert decision.notify is case.notify
    elif case.verdict in (QUARANTINE, ALERT):
        assert decision.notify


def test_approved_user_gets_integration_tags() -> None:
    event = parse_event(record("CreateUser", "svc-datadog", path="/integrations/"))
    tags = dict(decide(event, allowlist(), own_roles=OWN_ROLES).tags)
    assert tags == {
        "guardrail:status": "approved",
        "guardrail:integration": "datadog",
        "guardrail:owner": "platform@example.com",
        "guardrail:purpose": "Datadog metrics, read-only",
        "guardrail:services": "cloudwatch",
        "guardrail:resources": "arn:aws:cloudwatch:*:*:*",
        "guardrail:used-from": "Datadog SaaS",
        "guardrail:ticket": "SEC-1",
        "guardrail:event-id": event.event_id,
    }


def test_creator_supplied_guardrail_tags_never_approve() -> None:
    tags = [("guardrail:status", "approved"), ("guardrail:integration", "datadog"), ("Guardrail:Owner", "x")]
    event = parse_event(record("CreateUser", "alice", DEVELOPER, tags=tags))
    decision = decide(event, allowlist(), own_roles=OWN_ROLES)
    assert decision.verdict == QUARANTINE
    assert dict(decision.tags)["guardrail:status"] == "quarantined"
    assert decision.untag_keys == ("Guardrail:Owner", "guardrail:integration", "guardrail:status")


def test_monitor_mode_decides_the_same() -> None:
    event = parse_event(record("CreateUser", "alice", DEVELOPER))
    enforce = decide(event, allowlist(), own_roles=OWN_ROLES)
    monitor = decide(event, allowlist(), own_roles=OWN_ROLES, mode=MONITOR)
    assert (monitor.verdict, monitor.steps, monitor.reason) == (enforce.verdict, enforce.steps, enforce.reason)
    assert monitor.mode == MONITOR and enforce.mode == "enforce"
    assert decide(event, replace(allowlist(), mode=MONITOR), own_roles=OWN_ROLES).mode == MONITOR


def test_integration_expires_after_its_last_day() -> None:
    last_day = datetime(2027, 6, 30, 23, 59, tzinfo=UTC)
    for when, verdict in ((last_day, APPROVE), (last_day + timedelta(minutes=1), QUARANTINE)):
        event = parse_event(record("CreateUser", "svc-datadog", path="/integrations/", event_time=when))
        assert decide(event, allowlist(), own_roles=OWN_ROLES).verdict == verdict


def test_root_key_for_itself_is_critical_alert() -> None:
    raw = record("CreateAccessKey", "", ROOT)
    raw["requestParameters"] = None
    del raw["responseElements"]["accessKey"]["userName"]
    event = parse_event(raw)
    assert event.target_user_name == ""
    decision = decide(event, allowlist(), own_roles=OWN_ROLES)
    assert (decision.verdict, decision.severity, decision.steps) == (ALERT, CRITICAL, ())


def test_sso_principal_matches_role_arn_glob_not_session() -> None:
    sso = role_identity(ACCOUNT, "AWSReservedSSO_Admin_1", "ann@example.com", path="/aws-reserved/sso.amazonaws.com/")
    event = parse_event(record("CreateUser", "svc-scoped", sso))
    assert event.actor.principal_arn == (
        "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_1"
    )
    text = (
        "version: 1\nintegrations:\n- {name: a, owner: o, purpose: p, users: [svc-a], created_by: [\n"
        "  'arn:aws:iam::*:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_*']}\n"
    )
    lst = parse_allowlist(text)
    assert decide(parse_event(record("CreateUser", "svc-a", sso)), lst, own_roles=OWN_ROLES).verdict == APPROVE
    session_glob = text.replace("role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_*", "role/*/ann@example.com")
    lst = parse_allowlist(session_glob)
    assert decide(parse_event(record("CreateUser", "svc-a", sso)), lst, own_roles=OWN_ROLES).verdict == QUARANTINE


def test_facts_are_read_only_when_needed() -> None:
    lst = allowlist()
    assert not facts_needed(parse_event(record("CreateUser", "svc-datadog")), lst)
    assert not facts_needed(parse_event(record("CreateAccessKey", "alice", MALLORY)), lst)
    needed = facts_needed(parse_event(record("CreateAccessKey", "svc-datadog")), lst)
    assert needed.keys and needed.path
    needed = facts_needed(parse_event(record("CreateLoginProfile", "svc-console")), lst)
    assert not needed.keys and not needed.path


real = pytest.mark.skipif(not REAL_FIXTURES.is_dir(), reason="../shared/fixtures absent")
REAL_EXPECTATIONS = [
    ("stratus__CreateUser__iamuser-sdk-with-tags.json", QUARANTINE, HIGH),
    ("stratus__CreateAccessKey__iamuser-for-other-user-backdoor.json", QUARANTINE, CRITICAL),
    ("stratus__CreateLoginProfile__iamuser-for-other-user.json", QUARANTINE, CRITICAL),
    # a password changed for another user is a credential made for them (issue 9: UpdateLoginProfile)
    ("stratus__UpdateLoginProfile__iamuser-for-other-user.json", QUARANTINE, CRITICAL),
    ("invictus__CreateUser__terraform-with-tags-and-path.json", QUARANTINE, HIGH),
    ("invictus__CreateLoginProfile__terraform-for-other-user.json", QUARANTINE, CRITICAL),
    ("awsdocs__CreateUser__cli-alice-creates-bob-eventVersion1.0.json", QUARANTINE, HIGH),
    ("awsdocs-otel__CreateUser__cloudshell-cli-mary-creates-richard.json", QUARANTINE, HIGH),
    ("panther-handbuilt__CreateUser__root-console-with-path.json", QUARANTINE, HIGH),
    ("panther-handbuilt__CreateUser__cloudformation-invokedBy-assumedrole.json", QUARANTINE, HIGH),
    ("panther-handbuilt__CreateUser__error-EntityAlreadyExists-assumedrole-console.json", IGNORE, INFO),
    ("panther__CreateAccessKey__error-LimitExceeded-go-sdk.json", IGNORE, INFO),
    ("panther-handbuilt__CreateAccessKey__root-for-self-requestParameters-null.json", ALERT, CRITICAL),
    # a 13-digit sanitised account id cannot name a policy ARN: alert, do not act
    ("elastic__CreateAccessKey__console-alice-for-bob.json", ALERT, HIGH),
    ("invictus__DetachUserPolicy__administratoraccess-cleanup.json", IGNORE, INFO),
    ("stratus__AttachUserPolicy__administratoraccess-to-new-user.json", IGNORE, INFO),
    ("ENVELOPE_example.json", IGNORE, INFO),
]


@real
@pytest.mark.parametrize(("name", "verdict", "severity"), REAL_EXPECTATIONS)
def test_real_records(name: str, verdict: str, severity: str) -> None:
    decision = decide(parse_event(real_fixture(name)), allowlist(), own_roles=OWN_ROLES)
    assert (decision.verdict, decision.severity) == (verdict, severity), decision.reason


@real
def test_real_backdoor_by_listed_provisioner_is_not_critical() -> None:
    event = parse_event(real_fixture("stratus__CreateAccessKey__iamuser-for-other-user-backdoor.json"))
    text = "version: 1\nprovisioners: ['arn:aws:iam::*:user/christophe']\n"
    decision = decide(event, parse_allowlist(text), own_roles=OWN_ROLES)
    assert decision.verdict == QUARANTINE and decision.severity == HIGH and decision.backdoor


def test_unknown_event_names_are_ignored() -> None:
    event = parse_event(record("DeleteUser", "alice", user_identity(ACCOUNT, "admin")))
    assert decide(event, allowlist(), own_roles=OWN_ROLES).verdict == IGNORE
