"""Reconciliation: compare one IAM user with the allowlist, exceptions and the guardrail's record.

Pure: the sweep reads the account in bulk (GetAccountAuthorizationDetails and the credential
report), then calls `reconcile` once per user; the result says what is wrong and what to do.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from chalicelib.allowlist import Allowlist
from chalicelib.constants import (
    CRITICAL,
    HIGH,
    INFO,
    STATUS_APPROVED,
    STATUS_DELETED,
    STATUS_EXCEPTION,
    STATUS_QUARANTINED,
    TAG_INTEGRATION,
    TAG_STATUS,
)
from chalicelib.policy import ActiveException, integration_tags, match_user

# Actions the sweep may take.
QUARANTINE_USER: Final = "quarantine"
#: Deactivate again the credentials the guardrail's record lists as deactivated.
DEACTIVATE_RECORDED: Final = "deactivate_recorded"
TAG: Final = "tag"
DEACTIVATE_EXTRA_KEYS: Final = "deactivate_extra_keys"
DELETE_LOGIN_PROFILE: Final = "delete_login_profile"
NO_ACTION: Final = ""


@dataclass(frozen=True, slots=True)
class KeySlot:
    slot: int
    active: bool
    last_rotated: datetime | None
    last_used: datetime | None


@dataclass(frozen=True, slots=True)
class AccountUser:
    """One IAM user as the bulk reads show it."""

    name: str
    arn: str
    path: str = "/"
    user_id: str = ""
    created: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    policy_arns: frozenset[str] = frozenset()
    password_enabled: bool = False
    password_last_changed: datetime | None = None
    mfa_active: bool = False
    keys: tuple[KeySlot, ...] = ()
    #: The credential report's cert_1_active / cert_2_active (X.509 signing certificates).
    signing_certificates_active: bool = False

    @property
    def account(self) -> str:
        parts = self.arn.split(":")
        return parts[4] if len(parts) > 5 else ""

    @property
    def active_keys(self) -> int:
        return sum(1 for k in self.keys if k.active)


@dataclass(frozen=True, slots=True)
class Finding:
    user: str
    kind: str
    severity: str
    detail: str
    action: str = NO_ACTION
    owner: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    keep_keys: int = 0
    #: DEACTIVATE_RECORDED: the credential references to deactivate again; DEACTIVATE_EXTRA_KEYS:
    #: the keys to keep first (those the guardrail approved).
    credentials: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserVerdict:
    user: str
    status: str  # approved | exception | quarantined | unapproved
    integration: str = ""
    findings: tuple[Finding, ...] = ()


def reconcile(
    user: AccountUser,
    *,
    allowlist: Allowlist,
    policy_arn: str,
    now: datetime,
    exception: ActiveException | None = None,
    record: Mapping[str, Any] | None = None,
    active_refs: frozenset[str] = frozenset(),
    watching_since: datetime | None = None,
) -> UserVerdict:
    """What is wrong with one user, and what to do.

    The guardrail's record and exception belong to a user id: a user created again under the name
    of a deleted one inherits neither. What the record says the guardrail did is honoured whatever
    the name now matches: a quarantined user stays quarantined, a credential it deactivated stays
    inactive (`active_refs`: the user's active credentials among those the record lists).
    """
    record = owned_record(user, record)
    if exception is not None and (not exception.user_id or exception.user_id != user.user_id):
        exception = None
    quarantined = policy_arn in user.policy_arns
    findings: list[Finding] = []
    reactivated = tuple(sorted(active_refs & set(record.get("deactivated_keys", ()))))
    if reactivated:
        detail = f"{', '.join(reactivated)}, deactivated by the guardrail, is active again"
        findings.append(Finding(user.name, "credential_reactivated", CRITICAL, detail, DEACTIVATE_RECORDED))
        findings[-1] = replace(findings[-1], credentials=reactivated)
    if exception is not None and exception.is_active(now):
        findings += _hygiene(user, allowlist, now, "")
        return UserVerdict(user.name, STATUS_EXCEPTION, findings=tuple(findings))
    if record.get("status") == STATUS_QUARANTINED:
        if not quarantined:
            detail = "the quarantine policy was removed outside the guardrail"
            findings.append(Finding(user.name, "quarantine_removed", CRITICAL, detail, QUARANTINE_USER))
        return UserVerdict(user.name, STATUS_QUARANTINED, findings=tuple(findings))
    match = match_user(allowlist, user=user.name, account=user.account, path=user.path, day=now.date())
    integration = match.integration if match.creator_ok else None
    if integration is None:
        if quarantined:
            return UserVerdict(user.name, STATUS_QUARANTINED, findings=tuple(findings))
        findings.append(Finding(user.name, "unapproved", HIGH, match.why_not, QUARANTINE_USER))
        return UserVerdict(user.name, "unapproved", findings=tuple(findings))
    created = _aware(user.created)
    if not record.get("status") and watching_since is not None and created is not None and created >= watching_since:
        # The sweep sees users, not who made them: a user made while the guardrail watched whose
        # CreateUser it never saw cannot be checked against created_by, so it approves nothing.
        detail = (
            f"matches integration '{integration.name}' but was created {created:%Y-%m-%d %H:%M} UTC while the "
            "guardrail watched and its CreateUser was never seen: its creator cannot be checked against created_by"
        )
        findings.append(Finding(user.name, "creator_unverified", HIGH, detail, QUARANTINE_USER, integration.owner))
        return UserVerdict(user.name, "unapproved", findings=tuple(findings))

    owner = integration.owner
    wanted = dict(integration_tags(integration, record.get("last_event_id", "") or "sweep"))
    if user.tags.get(TAG_STATUS) != STATUS_APPROVED or user.tags.get(TAG_INTEGRATION) != integration.name:
        findings.append(
            Finding(
                user.name,
                "missing_tags",
                INFO,
                f"approved by '{integration.name}' but not tagged",
                TAG,
                owner,
                tags=tuple(wanted.items()),
            )
        )
    if user.active_keys > integration.max_access_keys:
        findings.append(
            Finding(
                user.name,
                "too_many_keys",
                HIGH,
                f"{user.active_keys} active keys, max_access_keys {integration.max_access_keys}",
                DEACTIVATE_EXTRA_KEYS,
                owner,
                keep_keys=integration.max_access_keys,
                # the keys the guardrail approved are kept first (a rotated-out key switched back on is not)
                credentials=tuple(record.get("approved_keys", ())),
            )
        )
    if user.password_enabled and not integration.console_access:
        findings.append(
            Finding(
                user.name,
                "console_not_allowed",
                HIGH,
                f"'{integration.name}' does not allow console access",
                DELETE_LOGIN_PROFILE,
                owner,
            )
        )
    findings += _hygiene(user, allowlist, now, owner)
    return UserVerdict(user.name, STATUS_APPROVED, integration.name, tuple(findings))


def unrecorded_credentials(
    user: AccountUser, record: Mapping[str, Any], active: Iterable[tuple[str, datetime | None]], owner: str = ""
) -> list[Finding]:
    """Active credentials (other than access keys, which max_access_keys governs) of an approved
    user that the guardrail never approved: their creation event was missed.

    The sweep cannot tell who made them; one made after the guardrail began to watch the user
    (`seen_at`) was made while it was watching and its event was lost: deactivated. An older one
    predates the guardrail and is reported for its owner to confirm.
    """
    approved = set(record.get("approved_keys", ()))
    seen = _report_time(str(record.get("seen_at") or "")) if record.get("seen_at") else None
    missed, older = [], []
    for ref, created in active:
        if ref in approved:
            continue
        (missed if seen is not None and created is not None and _aware(created) >= seen else older).append(ref)
    findings = []
    if missed:
        detail = f"{', '.join(missed)} made while the guardrail watched, never approved (its event was missed)"
        findings.append(
            Finding(
                user.name, "unrecorded_credential", HIGH, detail, DEACTIVATE_RECORDED, owner, credentials=tuple(missed)
            )
        )
    if older:
        detail = f"{', '.join(older)} predates the guardrail: confirm it with the owner"
        findings.append(Finding(user.name, "unrecorded_credential", INFO, detail, NO_ACTION, owner))
    return findings


def owned_record(user: AccountUser, record: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The record if it belongs to this user (same id, or a record written before ids were kept)."""
    if not record:
        return {}
    if record.get("status") == STATUS_DELETED or (record.get("user_id") and record["user_id"] != user.user_id):
        return {}
    return record


def _hygiene(user: AccountUser, allowlist: Allowlist, now: datetime, owner: str) -> list[Finding]:
    findings = []
    if user.password_enabled and not user.mfa_active:
        since = user.password_last_changed or user.created or now
        grace_end = since + timedelta(days=allowlist.mfa_grace_days)
        if now >= grace_end:
            detail = (
                f"console password without MFA since {since:%Y-%m-%d}, past the {allowlist.mfa_grace_days}-day grace"
            )
            findings.append(Finding(user.name, "no_mfa", CRITICAL, detail, QUARANTINE_USER, owner))
        else:
            detail = f"console password without MFA; quarantined after {grace_end:%Y-%m-%d} unless MFA is enabled"
            findings.append(Finding(user.name, "no_mfa", HIGH, detail, NO_ACTION, owner))
    for key in user.keys:
        if not key.active:
            continue
        if key.last_rotated and now - key.last_rotated > timedelta(days=allowlist.max_key_age_days):
            age = (now - key.last_rotated).days
            detail = f"access key {key.slot} is {age} days old (max_key_age_days {allowlist.max_key_age_days})"
            findings.append(Finding(user.name, "old_key", HIGH, detail, NO_ACTION, owner))
        last = key.last_used or key.last_rotated
        if last and now - last > timedelta(days=allowlist.max_unused_days):
            when = f"last used {key.last_used:%Y-%m-%d}" if key.last_used else "never used"
            detail = f"access key {key.slot} {when} (max_unused_days {allowlist.max_unused_days})"
            findings.append(Finding(user.name, "unused_key", INFO, detail, NO_ACTION, owner))
    return findings


# -- reading the bulk sources --------------------------------------------------------------------


def parse_credential_report(content: bytes | str) -> dict[str, dict[str, str]]:
    """Rows of the IAM credential report keyed by user name (the root account row is dropped)."""
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    rows = csv.DictReader(io.StringIO(text))
    return {row["user"]: row for row in rows if row.get("user") and row["user"] != "<root_account>"}


def account_users(details: Iterable[Mapping[str, Any]], report: Mapping[str, Mapping[str, str]]) -> list[AccountUser]:
    """Join GetAccountAuthorizationDetails' users with the credential report."""
    users = []
    for detail in details:
        row = report.get(detail["UserName"], {})
        users.append(
            AccountUser(
                name=detail["UserName"],
                arn=detail["Arn"],
                path=detail.get("Path", "/"),
                user_id=detail.get("UserId", ""),
                created=_aware(detail.get("CreateDate")),
                tags={t["Key"]: t["Value"] for t in detail.get("Tags", [])},
                policy_arns=frozenset(p["PolicyArn"] for p in detail.get("AttachedManagedPolicies", [])),
                password_enabled=row.get("password_enabled") == "true",
                password_last_changed=_report_time(row.get("password_last_changed")),
                mfa_active=row.get("mfa_active") == "true",
                signing_certificates_active="true" in (row.get("cert_1_active"), row.get("cert_2_active")),
                keys=tuple(
                    KeySlot(
                        slot=n,
                        active=row.get(f"access_key_{n}_active") == "true",
                        last_rotated=_report_time(row.get(f"access_key_{n}_last_rotated")),
                        last_used=_report_time(row.get(f"access_key_{n}_last_used_date")),
                    )
                    for n in (1, 2)
                    if row.get(f"access_key_{n}_active") in ("true", "false")
                ),
            )
        )
    return users


def _report_time(value: str | None) -> datetime | None:
    if not value or value in ("N/A", "no_information", "not_supported"):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _aware(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        return _report_time(value)
    return None
