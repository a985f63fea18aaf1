"""The decision engine: (event, allowlist, exception, facts) -> decision. Pure: no I/O.

The table it implements is in DESIGN.md ("Decisions per event"). Every decision carries a reason
written for the security engineer who reads the alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Final

from chalicelib.allowlist import Allowlist, GlobSet, Integration
from chalicelib.constants import (
    ALERT,
    APPROVE,
    CREATE_ACCESS_KEY,
    CREATE_LOGIN_PROFILE,
    CREATE_USER,
    CREATION_EVENTS,
    CRITICAL,
    DEFAULT_QUARANTINE_POLICY_NAME,
    DETACH_USER_POLICY,
    HIGH,
    IGNORE,
    INFO,
    OWN_PART_EVENTS,
    POLICY_VERSION_EVENTS,
    QUARANTINE,
    STATUS_APPROVED,
    STATUS_EXCEPTION,
    STATUS_QUARANTINED,
    TAG_APPROVED_BY,
    TAG_EVENT_ID,
    TAG_EXCEPTION_EXPIRES,
    TAG_INTEGRATION,
    TAG_OWNER,
    TAG_PREFIX,
    TAG_PURPOSE,
    TAG_REASON,
    TAG_RESOURCES,
    TAG_SERVICES,
    TAG_STATUS,
    TAG_TICKET,
    TAG_USED_FROM,
    TAG_USER_EVENT,
    TAMPER_EVENTS,
    UPDATE_ACCESS_KEY,
)
from chalicelib.events import IamEvent
from chalicelib.selfguard import guarded_roles as default_guarded_roles
from chalicelib.selfguard import is_quarantine_policy, role_change

# Steps the actions layer carries out, in this order.
DEACTIVATE_KEY: Final = "deactivate_key"
DELETE_LOGIN_PROFILE: Final = "delete_login_profile"
ATTACH_QUARANTINE: Final = "attach_quarantine_policy"
TAG_USER: Final = "tag_user"
UNTAG_USER: Final = "untag_user"
#: Read the quarantine policy's default version; restore deny-all if it is anything else.
RESTORE_QUARANTINE_POLICY: Final = "restore_quarantine_policy"

#: Events whose target may need IAM reads (path, key count) before deciding.
_CREDENTIAL_EVENTS: Final = frozenset({CREATE_ACCESS_KEY, CREATE_LOGIN_PROFILE})


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What IAM says about the target user at act time; None where it was not read."""

    path: str | None = None
    active_key_ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ActiveException:
    """A time-bound exception granted by an approver."""

    account: str
    user_name: str
    expires_at: datetime
    approved_by: str = ""
    reason: str = ""
    ticket: str = ""

    def is_active(self, at: datetime) -> bool:
        return at < self.expires_at


@dataclass(frozen=True, slots=True)
class FactsNeeded:
    path: bool = False
    keys: bool = False

    def __bool__(self) -> bool:
        return self.path or self.keys


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: str
    reason: str
    severity: str = INFO
    steps: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    untag_keys: tuple[str, ...] = ()
    integration: str = ""
    notify: bool = False
    backdoor: bool = False
    mode: str = "enforce"
    #: A stable name for the rule that decided (replay groups by it).
    rule: str = ""

    @property
    def quarantines(self) -> bool:
        return ATTACH_QUARANTINE in self.steps


@dataclass(frozen=True, slots=True)
class Match:
    integration: Integration | None
    creator_ok: bool
    why_not: str


def facts_needed(event: IamEvent, allowlist: Allowlist) -> FactsNeeded:
    """Which IAM reads `decide` needs for this event (none for most events)."""
    if event.event_name not in _CREDENTIAL_EVENTS or event.error_code or not event.target_user_name:
        return FactsNeeded()
    candidates = allowlist.candidates(event.target_user_name)
    if not candidates:
        return FactsNeeded()
    return FactsNeeded(
        path=not event.target_user_path and any(i.path for i in candidates),
        keys=event.event_name == CREATE_ACCESS_KEY,
    )


def decide(
    event: IamEvent,
    allowlist: Allowlist,
    *,
    own_roles: GlobSet,
    exception: ActiveException | None = None,
    facts: UserFacts | None = None,
    mode: str | None = None,
    record: Mapping[str, Any] | None = None,
    quarantine_policy: str = DEFAULT_QUARANTINE_POLICY_NAME,
    guarded_roles: frozenset[str] | None = None,
) -> Decision:
    """Decide what to do about one IAM event. `mode` overrides the allowlist's mode.

    `record` is the guardrail's own record of the target user (status, the keys it deactivated,
    the tags it set): tamper events are judged against it. `guarded_roles` are the lower-cased
    names of the guardrail's own roles (default: the remediation role).
    """
    if event.event_name in OWN_PART_EVENTS:
        roles = default_guarded_roles() if guarded_roles is None else guarded_roles
        decision = _own_parts(event, own_roles, quarantine_policy, roles)
    elif event.event_name in TAMPER_EVENTS:
        decision = _tamper(event, own_roles, exception, record or {}, quarantine_policy)
    else:
        decision = _decide(event, allowlist, exception, facts or UserFacts())
    mode = mode or allowlist.mode
    return decision if mode == decision.mode else replace(decision, mode=mode)


def _decide(
    event: IamEvent,
    allowlist: Allowlist,
    exception: ActiveException | None,
    facts: UserFacts,
) -> Decision:
    name = event.event_name
    if name not in CREATION_EVENTS:
        return Decision(IGNORE, f"{name} is not an event the guardrail acts on", rule="not_handled")
    if event.error_code:
        return Decision(IGNORE, f"{name} failed with {event.error_code}; nothing was created", rule="failed_call")
    # The guardrail never creates users or credentials: a creation event made by its role is judged
    # like any other (the own-role exemption applies to the tamper events it causes itself).
    if not event.target_user_name:
        if event.actor.type == "Root" and name == CREATE_ACCESS_KEY:
            return Decision(
                ALERT,
                "the root user created an access key for itself; root keys cannot be managed "
                "through IAM: delete it from the root user's security credentials now",
                severity=CRITICAL,
                rule="root_access_key",
                notify=True,
            )
        return Decision(
            ALERT, f"{name} names no user the guardrail can act on", severity=HIGH, notify=True, rule="no_target_user"
        )
    if not event.account_is_valid:
        return Decision(
            ALERT,
            f"{name} comes from account {event.account!r}, which is not a 12-digit id",
            HIGH,
            notify=True,
            rule="invalid_account",
        )

    match = _match(event, allowlist, facts)
    active = exception if exception is not None and exception.is_active(event.event_time) else None
    if name == CREATE_USER:
        return _create_user(event, match, active)
    if name == CREATE_ACCESS_KEY:
        return _create_access_key(event, allowlist, match, active, facts)
    return _create_login_profile(event, allowlist, match, active)


def _tamper(
    event: IamEvent,
    own_roles: GlobSet,
    exception: ActiveException | None,
    record: Mapping[str, Any],
    quarantine_policy: str,
) -> Decision:
    """DESIGN.md's last row: revert what undoes the guardrail's work, and alert as critical."""
    name, user = event.event_name, event.target_user_name
    if event.error_code:
        return Decision(IGNORE, f"{name} failed with {event.error_code}; nothing changed", rule="failed_call")
    if own_roles.matches(event.actor.principal_arn):
        return Decision(IGNORE, f"{name} was made by the guardrail's own role", rule="own_role")
    if not user or not event.account_is_valid:
        return Decision(IGNORE, f"{name} names no user in a valid account", rule="no_target_user")
    if exception is not None and exception.is_active(event.event_time):
        return Decision(
            IGNORE,
            f"{name} on {user} during its exception (until {exception.expires_at:%Y-%m-%d})",
            rule="during_exception",
        )
    by = event.actor.principal_arn or event.actor.display
    if name == DETACH_USER_POLICY:
        policy_arn = str(event.request_parameters.get("policyArn", ""))
        if not policy_arn.endswith(f":policy/{quarantine_policy}"):
            return Decision(
                IGNORE,
                f"DetachUserPolicy of {policy_arn or 'a policy'}, not the quarantine policy",
                rule="not_quarantine_policy",
            )
        return _reverted(
            f"the quarantine policy was detached from {user} by {by}: attached again",
            (ATTACH_QUARANTINE,),
            rule="tamper_detach",
        )
    if name == UPDATE_ACCESS_KEY:
        status = event.request_parameters.get("status")
        if status != "Active" or event.access_key_id not in record.get("deactivated_keys", ()):
            return Decision(
                IGNORE,
                f"UpdateAccessKey to {status} of a key the guardrail did not deactivate",
                rule="not_guardrail_key",
            )
        return _reverted(
            f"{event.access_key_id}, deactivated by the guardrail, was reactivated by {by}: deactivated again",
            (DEACTIVATE_KEY,),
            rule="tamper_reactivated_key",
        )
    ours: Mapping[str, str] = record.get("tags") or {}
    if name == TAG_USER_EVENT:
        # Setting a guardrail tag to the value the guardrail recorded changes nothing (and breaks loops).
        touched = tuple(k for k, v in event.request_tags if k.lower().startswith(TAG_PREFIX) and ours.get(k) != v)
        remove = tuple(k for k in touched if k not in ours)
    else:
        touched = tuple(k for k in event.request_tag_keys if k.lower().startswith(TAG_PREFIX) and k in ours)
        remove = ()
    if not touched:
        return Decision(IGNORE, f"{name} changed no guardrail tag it recorded", rule="no_guardrail_tags")
    restore = tuple((k, ours[k]) for k in touched if k in ours)
    steps = (*((UNTAG_USER,) if remove else ()), *((TAG_USER,) if restore else ()))
    return _reverted(
        f"{by} changed the guardrail's tags on {user} ({', '.join(touched)}): restored",
        steps,
        tags=restore,
        untag=remove,
        rule="tamper_tags",
    )


def _own_parts(event: IamEvent, own_roles: GlobSet, quarantine_policy: str, roles: frozenset[str]) -> Decision:
    """Changes to the quarantine policy's versions or to the guardrail's roles (critical).

    The policy is checked live by the act step (`RESTORE_QUARANTINE_POLICY`), whoever made the
    call: the guardrail's own restore finds deny-all and stays quiet, which breaks loops.
    """
    name = event.event_name
    if event.error_code:
        return Decision(IGNORE, f"{name} failed with {event.error_code}; nothing changed", rule="failed_call")
    by = event.actor.principal_arn or event.actor.display
    params = event.request_parameters
    if name in POLICY_VERSION_EVENTS:
        arn = str(params.get("policyArn") or "")
        if not is_quarantine_policy(arn, account=event.account, partition=event.partition, name=quarantine_policy):
            return Decision(
                IGNORE, f"{name} on {arn or 'a policy'}, not the quarantine policy", rule="not_quarantine_policy"
            )
        version = str(params.get("versionId") or "")
        what = f"{name}{f' {version}' if version else ''}{' (set as default)' if params.get('setAsDefault') else ''}"
        if own_roles.matches(event.actor.principal_arn):
            return Decision(
                IGNORE,
                f"{what} on the quarantine policy by the guardrail's own role: its default version is checked",
                steps=(RESTORE_QUARANTINE_POLICY,),
                rule="own_role",
            )
        return Decision(
            ALERT,
            f"tamper: {by} called {what} on the quarantine policy {arn}; a default version other than "
            "deny-all releases every quarantined user: the default version is checked and deny-all restored "
            "if it changed",
            CRITICAL,
            (RESTORE_QUARANTINE_POLICY,),
            notify=True,
            rule="tamper_quarantine_policy",
        )
    role = str(params.get("roleName") or "")
    if role.lower() not in roles:
        return Decision(
            IGNORE, f"{name} on role {role or '(none)'}, not one of the guardrail's roles", rule="not_guarded_role"
        )
    change = role_change(event)
    return Decision(
        ALERT,
        f"tamper: {by} called {name} on the guardrail's role {role}{f' ({change})' if change else ''}; "
        "the guardrail does not revert role changes: review the role now",
        CRITICAL,
        notify=True,
        rule="tamper_guardrail_role",
    )


def after_restore(decision: Decision) -> Decision:
    """The act step had to restore the quarantine policy: critical and alerted, whoever the caller."""
    if decision.notify:
        return decision
    return replace(
        decision,
        verdict=ALERT,
        severity=CRITICAL,
        notify=True,
        reason=f"tamper: {decision.reason}, and it was not deny-all: restored",
        rule="tamper_quarantine_policy",
    )


def _reverted(
    reason: str,
    steps: tuple[str, ...],
    *,
    rule: str,
    tags: tuple[tuple[str, str], ...] = (),
    untag: tuple[str, ...] = (),
) -> Decision:
    return Decision(ALERT, f"tamper: {reason}", CRITICAL, steps, tags, untag, notify=True, rule=rule)


def _create_user(event: IamEvent, match: Match, active: ActiveException | None) -> Decision:
    untag, note = _creator_guardrail_tags(event)
    user = event.target_user_name
    if match.integration and match.creator_ok:
        integration = match.integration
        return Decision(
            APPROVE,
            f"{user} matches integration '{integration.name}' (owner {integration.owner}), "
            f"created by {event.actor.principal_arn or event.actor.display}{note}",
            steps=_tag_steps(untag),
            tags=integration_tags(integration, event.event_id),
            untag_keys=untag,
            integration=integration.name,
            rule="integration_user",
        )
    if active:
        return _exception_decision(event, active, untag=untag, note=note)
    return Decision(
        QUARANTINE,
        f"{match.why_not}{note}",
        severity=HIGH,
        steps=(ATTACH_QUARANTINE, *_tag_steps(untag)),
        tags=_quarantine_tags(match.why_not, event.event_id),
        untag_keys=untag,
        integration=match.integration.name if match.integration else "",
        notify=True,
        rule="unapproved_user",
    )


def _create_access_key(
    event: IamEvent,
    allowlist: Allowlist,
    match: Match,
    active: ActiveException | None,
    facts: UserFacts,
) -> Decision:
    user = event.target_user_name
    key = event.access_key_id or "the new key"
    backdoor = not event.actor_is_target
    trusted = allowlist.provisioners.matches(event.actor.principal_arn)
    integration = match.integration
    if integration and match.creator_ok:
        if facts.active_key_ids is None:
            return Decision(
                ALERT,
                f"could not count the active keys of {user} (integration '{integration.name}'); "
                f"{key} is deactivated until someone checks",
                severity=HIGH,
                rule="key_count_unknown",
                steps=(DEACTIVATE_KEY,),
                integration=integration.name,
                notify=True,
            )
        count = len(set(facts.active_key_ids) | ({event.access_key_id} if event.access_key_id else set()))
        if count <= integration.max_access_keys:
            return Decision(
                APPROVE,
                f"{key} for {user} is allowed: integration '{integration.name}' has {count} active "
                f"key(s), max_access_keys {integration.max_access_keys}",
                integration=integration.name,
                rule="key_within_limit",
            )
        return Decision(
            ALERT,
            f"{user} (integration '{integration.name}') would have {count} active keys, more than "
            f"max_access_keys {integration.max_access_keys}: {key} is deactivated",
            severity=HIGH,
            rule="key_over_limit",
            steps=(DEACTIVATE_KEY,),
            integration=integration.name,
            notify=True,
        )
    if active:
        return _exception_decision(event, active, notify=True)
    if integration:
        return Decision(
            ALERT,
            f"{key} was created for integration user {user} by {event.actor.principal_arn or event.actor.display}, "
            f"who is not in the created_by of '{integration.name}': only the key is deactivated",
            severity=CRITICAL,
            rule="key_by_unlisted_creator",
            steps=(DEACTIVATE_KEY,),
            integration=integration.name,
            notify=True,
            backdoor=backdoor,
        )
    backdoor_note = ""
    severity = HIGH
    if backdoor:
        backdoor_note = f"; the key was created by another principal ({event.actor.display}): possible backdoor"
        severity = HIGH if trusted else CRITICAL
    return Decision(
        QUARANTINE,
        f"{match.why_not}{backdoor_note}",
        severity=severity,
        steps=(DEACTIVATE_KEY, ATTACH_QUARANTINE, TAG_USER),
        tags=_quarantine_tags(match.why_not, event.event_id),
        notify=True,
        backdoor=backdoor,
        rule="backdoor_key" if backdoor else "unapproved_key",
    )


def _create_login_profile(
    event: IamEvent,
    allowlist: Allowlist,
    match: Match,
    active: ActiveException | None,
) -> Decision:
    user = event.target_user_name
    actor = event.actor.principal_arn or event.actor.display
    integration = match.integration
    if integration and match.creator_ok:
        if integration.console_access:
            return Decision(
                APPROVE,
                f"console access for {user} is allowed by integration '{integration.name}'; "
                "MFA is required and checked by the sweep",
                integration=integration.name,
                rule="console_allowed",
            )
        return Decision(
            ALERT,
            f"integration '{integration.name}' does not allow console access: the login profile of {user} is deleted",
            severity=HIGH,
            rule="console_not_allowed",
            steps=(DELETE_LOGIN_PROFILE,),
            integration=integration.name,
            notify=True,
        )
    if active:
        return _exception_decision(event, active, notify=True)
    backdoor = not event.actor_is_target
    if integration:
        return Decision(
            ALERT,
            f"a console password was set for integration user {user} by {actor}, who is not in the "
            f"created_by of '{integration.name}': the login profile is deleted",
            severity=CRITICAL,
            rule="password_by_unlisted_creator",
            steps=(DELETE_LOGIN_PROFILE,),
            integration=integration.name,
            notify=True,
            backdoor=backdoor,
        )
    severity = CRITICAL if backdoor and not allowlist.provisioners.matches(event.actor.principal_arn) else HIGH
    return Decision(
        QUARANTINE,
        f"{match.why_not}; a console password was set by {actor}",
        severity=severity,
        steps=(ATTACH_QUARANTINE, TAG_USER),
        tags=_quarantine_tags(match.why_not, event.event_id),
        notify=True,
        backdoor=backdoor,
        rule="unapproved_console_password",
    )


def _exception_decision(
    event: IamEvent,
    active: ActiveException,
    *,
    untag: tuple[str, ...] = (),
    note: str = "",
    notify: bool = False,
) -> Decision:
    until = active.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    tags = (*exception_tags(active.approved_by, active.expires_at), (TAG_EVENT_ID, event.event_id))
    create_user = event.event_name == CREATE_USER
    return Decision(
        APPROVE,
        f"{event.target_user_name} holds an exception until {until} approved by "
        f"{active.approved_by or 'an approver'}{note}",
        steps=_tag_steps(untag) if create_user else (),
        tags=tags if create_user else (),
        untag_keys=untag,
        notify=notify,
        rule="active_exception",
    )


def _match(event: IamEvent, allowlist: Allowlist, facts: UserFacts) -> Match:
    path = event.target_user_path or facts.path
    if path is None and event.event_name == CREATE_USER:
        path = "/"
    return match_user(
        allowlist,
        user=event.target_user_name,
        account=event.account,
        path=path,
        day=event.event_time.date(),
        creator=event.actor.principal_arn,
        creator_display=event.actor.display,
    )


def match_user(
    allowlist: Allowlist,
    *,
    user: str,
    account: str,
    path: str | None,
    day: date,
    creator: str | None = None,
    creator_display: str = "",
) -> Match:
    """The integration approving `user` on `day`, or why none does.

    `creator=None` skips the created_by check (the sweep sees users, not the calls that made them).
    """
    candidates = allowlist.candidates(user)
    if not candidates:
        return Match(None, False, f"no integration in the allowlist matches user name '{user}'")
    reasons = []
    creator_miss: Integration | None = None
    for integration in candidates:
        label = f"user name '{user}' matches integration '{integration.name}'"
        if integration.accounts and account not in integration.accounts:
            reasons.append(f"{label}, which is not approved in account {account}")
            continue
        if integration.path and path != integration.path:
            shown = f"path {path}" if path else "an unknown path"
            reasons.append(f"{label}, which requires path {integration.path} (user has {shown})")
            continue
        if integration.is_expired(day):
            reasons.append(f"{label}, which expired on {integration.expires}")
            continue
        if creator is None or integration.creator_allowed(creator):
            return Match(integration, True, "")
        reasons.append(f"{label}, but the caller {creator or creator_display} is not in its created_by")
        creator_miss = creator_miss or integration
    return Match(creator_miss, False, "; ".join(reasons))


def exception_tags(approver: str, expires: datetime) -> tuple[tuple[str, str], ...]:
    """The tags of a user released under an exception."""
    return (
        (TAG_STATUS, STATUS_EXCEPTION),
        (TAG_EXCEPTION_EXPIRES, expires.strftime("%Y-%m-%dT%H:%M:%SZ")),
        (TAG_APPROVED_BY, approver),
    )


def integration_tags(integration: Integration, event_id: str) -> tuple[tuple[str, str], ...]:
    """The tags an approved integration user carries (values are sanitised by the IAM layer)."""
    pairs = [
        (TAG_STATUS, STATUS_APPROVED),
        (TAG_INTEGRATION, integration.name),
        (TAG_OWNER, integration.owner),
        (TAG_PURPOSE, integration.purpose),
        (TAG_SERVICES, " ".join(integration.services)),
        (TAG_RESOURCES, " ".join(integration.resources)),
        (TAG_USED_FROM, integration.used_from),
        (TAG_TICKET, integration.ticket),
        (TAG_EVENT_ID, event_id),
    ]
    return tuple((key, value) for key, value in pairs if value)


def _quarantine_tags(reason: str, event_id: str) -> tuple[tuple[str, str], ...]:
    return ((TAG_STATUS, STATUS_QUARANTINED), (TAG_REASON, reason), (TAG_EVENT_ID, event_id))


def _creator_guardrail_tags(event: IamEvent) -> tuple[tuple[str, ...], str]:
    """Tags under `guardrail:` that the creator set: never trusted, removed unless overwritten."""
    keys = tuple(sorted({key for key, _ in event.request_tags if key.lower().startswith(TAG_PREFIX)}))
    if not keys:
        return (), ""
    return keys, f" (creator-supplied tags ignored: {', '.join(keys)})"


def _tag_steps(untag: tuple[str, ...]) -> tuple[str, ...]:
    return (UNTAG_USER, TAG_USER) if untag else (TAG_USER,)
