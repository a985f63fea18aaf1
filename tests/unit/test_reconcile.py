"""Reconciliation of one user, pure: approved, unapproved, expired, exception, hygiene."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.policy import ActiveException
from chalicelib.reconcile import (
    DEACTIVATE_EXTRA_KEYS,
    DEACTIVATE_RECORDED,
    DELETE_LOGIN_PROFILE,
    QUARANTINE_USER,
    TAG,
    AccountUser,
    KeySlot,
    account_users,
    parse_credential_report,
    reconcile,
)
from tests.helpers import ACCOUNT, allowlist

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
POLICY = f"arn:aws:iam::{ACCOUNT}:policy/iam-user-guardrail-quarantine"
APPROVED_TAGS = {"guardrail:status": "approved", "guardrail:integration": "datadog"}


def user(name: str, path: str = "/", **kwargs) -> AccountUser:
    return AccountUser(name=name, arn=f"arn:aws:iam::{ACCOUNT}:user{path}{name}", path=path, **kwargs)


def key(slot: int, age_days: int, used_days_ago: int | None = None, active: bool = True) -> KeySlot:
    used = NOW - timedelta(days=used_days_ago) if used_days_ago is not None else None
    return KeySlot(slot, active, NOW - timedelta(days=age_days), used)


def kinds(verdict) -> list[tuple[str, str]]:
    return [(f.kind, f.action) for f in verdict.findings]


def run(u: AccountUser, **kwargs):
    return reconcile(u, allowlist=allowlist(), policy_arn=POLICY, now=NOW, **kwargs)


def test_compliant_integration_user_has_no_findings() -> None:
    verdict = run(user("svc-datadog", "/integrations/", tags=APPROVED_TAGS, keys=(key(1, 10, 1),)))
    assert verdict.status == "approved" and verdict.findings == ()


def test_untagged_integration_user_gets_tagged() -> None:
    verdict = run(user("svc-datadog", "/integrations/"))
    assert kinds(verdict) == [("missing_tags", TAG)]
    assert dict(verdict.findings[0].tags)["guardrail:integration"] == "datadog"


def test_integration_user_over_max_keys_and_with_console() -> None:
    u = user(
        "svc-datadog",
        "/integrations/",
        tags=APPROVED_TAGS,
        keys=(key(1, 5, 1), key(2, 1, 1)),
        password_enabled=True,
        mfa_active=True,
    )
    assert kinds(run(u)) == [("too_many_keys", DEACTIVATE_EXTRA_KEYS), ("console_not_allowed", DELETE_LOGIN_PROFILE)]
    assert run(u).findings[0].keep_keys == 1 and run(u).findings[0].owner == "platform@example.com"


def test_unapproved_user_without_decision_is_quarantined() -> None:
    assert kinds(run(user("alice"))) == [("unapproved", QUARANTINE_USER)]


def test_already_quarantined_user_is_left_alone() -> None:
    verdict = run(user("alice", policy_arns=frozenset({POLICY})))
    assert verdict.status == "quarantined" and verdict.findings == ()


def test_quarantine_removed_outside_the_guardrail() -> None:
    verdict = run(user("alice"), record={"status": "quarantined"})
    assert kinds(verdict) == [("quarantine_removed", QUARANTINE_USER)]
    assert verdict.findings[0].severity == "critical"


def test_expired_integration_is_unapproved() -> None:
    verdict = run(user("svc-old"))
    assert kinds(verdict) == [("unapproved", QUARANTINE_USER)] and "expired on 2025-01-31" in verdict.findings[0].detail


def test_exception_holder_only_gets_hygiene() -> None:
    active = ActiveException(ACCOUNT, "contractor", NOW + timedelta(days=3), user_id="AIDACONTRACTOR")
    verdict = run(user("contractor", keys=(key(1, 200, 1),), user_id="AIDACONTRACTOR"), exception=active)
    assert verdict.status == "exception" and kinds(verdict) == [("old_key", "")]


def test_an_exception_does_not_pass_to_a_user_created_again_under_that_name() -> None:
    active = ActiveException(ACCOUNT, "contractor", NOW + timedelta(days=3), user_id="AIDACONTRACTOR")
    verdict = run(user("contractor", user_id="AIDASOMEONEELSE"), exception=active)
    assert kinds(verdict) == [("unapproved", QUARANTINE_USER)]


def test_a_quarantined_record_is_honoured_whatever_the_name_now_matches() -> None:
    # quarantined because its creator was not in created_by; name and path fit the integration
    record = {"status": "quarantined", "user_id": "AIDADD"}
    verdict = run(user("svc-datadog", "/integrations/", user_id="AIDADD"), record=record)
    assert kinds(verdict) == [("quarantine_removed", QUARANTINE_USER)]
    kept = run(user("svc-datadog", "/integrations/", user_id="AIDADD", policy_arns=frozenset({POLICY})), record=record)
    assert kept.status == "quarantined" and kept.findings == ()


def test_a_record_of_another_user_of_that_name_is_ignored() -> None:
    record = {"status": "quarantined", "user_id": "AIDAOLD"}
    verdict = run(user("svc-datadog", "/integrations/", user_id="AIDANEW"), record=record)
    assert verdict.status == "approved"


def test_credentials_the_record_lists_as_deactivated_are_deactivated_again() -> None:
    record = {"status": "approved", "user_id": "AIDADD", "deactivated_keys": ["AKIABACKDOOR", "ssh_public_key:APKA1"]}
    u = user("svc-datadog", "/integrations/", tags=APPROVED_TAGS, user_id="AIDADD")
    verdict = run(u, record=record, active_refs=frozenset({"AKIABACKDOOR"}))
    assert kinds(verdict) == [("credential_reactivated", DEACTIVATE_RECORDED)]
    assert verdict.findings[0].credentials == ("AKIABACKDOOR",) and verdict.findings[0].severity == "critical"


def test_console_without_mfa_alerts_then_quarantines_after_grace() -> None:
    u = user(
        "svc-console",
        password_enabled=True,
        password_last_changed=NOW - timedelta(days=2),
        tags={"guardrail:status": "approved", "guardrail:integration": "console-vendor"},
    )
    assert kinds(run(u)) == [("no_mfa", "")]
    late = user(
        "svc-console",
        password_enabled=True,
        password_last_changed=NOW - timedelta(days=8),
        tags={"guardrail:status": "approved", "guardrail:integration": "console-vendor"},
    )
    assert kinds(run(late)) == [("no_mfa", QUARANTINE_USER)]


def test_old_and_unused_keys_are_reported_with_the_owner() -> None:
    u = user("svc-datadog", "/integrations/", tags=APPROVED_TAGS, keys=(key(1, 120, 95),))
    verdict = run(u)
    assert kinds(verdict) == [("old_key", ""), ("unused_key", "")]
    assert all(f.owner == "platform@example.com" for f in verdict.findings)
    never = run(user("svc-datadog", "/integrations/", tags=APPROVED_TAGS, keys=(key(1, 91),)))
    assert kinds(never) == [("old_key", ""), ("unused_key", "")] and "never used" in never.findings[1].detail
    assert run(user("svc-datadog", "/integrations/", tags=APPROVED_TAGS, keys=(key(1, 200, 1, False),))).findings == ()


def test_credential_report_join() -> None:
    report = parse_credential_report(
        "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,"
        "password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,"
        "access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date\n"
        "<root_account>,arn:aws:iam::123456789012:root,2020-01-01T00:00:00+00:00,not_supported,N/A,not_supported,"
        "not_supported,true,false,N/A,N/A,false,N/A,N/A\n"
        "bob,arn:aws:iam::123456789012:user/bob,2026-01-01T00:00:00+00:00,true,N/A,2026-01-02T00:00:00+00:00,N/A,"
        "false,true,2026-01-03T00:00:00+00:00,2026-11-01T00:00:00+00:00,false,N/A,N/A\n"
    )
    assert list(report) == ["bob"]
    details = [
        {
            "UserName": "bob",
            "Arn": "arn:aws:iam::123456789012:user/bob",
            "Path": "/",
            "Tags": [],
            "AttachedManagedPolicies": [{"PolicyName": "x", "PolicyArn": POLICY}],
        }
    ]
    [joined] = account_users(details, report)
    assert joined.password_enabled and not joined.mfa_active and joined.active_keys == 1
    assert joined.keys[0].last_used == datetime(2026, 11, 1, tzinfo=UTC)
    assert POLICY in joined.policy_arns and joined.account == ACCOUNT
