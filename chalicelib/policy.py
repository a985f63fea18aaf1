"""The decision engine: (event, allowlist, exception, facts) -> decision. Pure: no I/O.

The table it implements is in DESIGN.md ("Decisions per event"). Every decision carries a reason
written for the security engineer who reads the alert.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Final

from chalicelib.allowlist import Allowlist, Integration
from chalicelib.constants import (
    ACCESS_KEY,
    ALERT,
    APPROVE,
    CREATE_USER,
    CREDENTIAL_EVENTS,
    CREDENTIAL_STATUS_EVENTS,
    CRITICAL,
    DEFAULT_QUARANTINE_POLICY_NAME,
    DELETE_USER,
    DETACH_USER_POLICY,
    HIGH,
    IGNORE,
    INFO,
    LIFECYCLE_EVENTS,
    LOGIN_PROFILE,
    OWN_PART_EVENTS,
    POLICY_VERSION_EVENTS,
    QUARANTINE,
    SERVICE_SPECIFIC_CREDENTIAL,
    SIGNING_CERTIFICATE,
    SSH_PUBLIC_KEY,
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
)
from chalicelib.events import IamEvent
from chalicelib.identity import OwnIdentity
from chalicelib.selfguard import guarded_roles as default_guarded_roles
from chalicelib.selfguard import is_quarantine_policy, policy_arn, role_change

# Steps the actions layer carries out, in this order.
DEACTIVATE_CREDENTIAL: Final = "deactivate_credential"
#: The step's older name (an access key is one kind of credential).
DEACTIVATE_KEY: Final = DEACTIVATE_CREDENTIAL
DELETE_LOGIN_PROFILE: Final = "delete_login_profile"
ATTACH_QUARANTINE: Final = "attach_quarantine_policy"
TAG_USER: Final = "tag_user"
UNTAG_USER: Final = "untag_user"
#: Read the quarantine policy's default version; restore deny-all if it is anything else.
RESTORE_QUARANTINE_POLICY: Final = "restore_quarantine_policy"


def credential_ref(kind: str, credential_id: str) -> str:
    """How records name a credential: an access key by its id, any other kind as `kind:id`."""
    return credential_id if kind == ACCESS_KEY else f"{kind}:{credential_id}"


def parse_credential_ref(ref: str) -> tuple[str, str]:
    """(kind, id) of a record's credential reference."""
    kind, sep, credential_id = ref.partition(":")
    return (kind, credential_id) if sep else (ACCESS_KEY, ref)


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What IAM says about the target user at act time; None where it was not read."""

    path: str | None = None
    active_key_ids: tuple[str, ...] | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class ActiveException:
    """A time-bound exception granted by an approver, bound to one user id."""

    account: str
    user_name: str
    expires_at: datetime
    approved_by: str = ""
    reason: str = ""
    ticket: str = ""
    user_id: str = ""

    def is_active(self, at: datetime) -> bool:
        return at < self.expires_at


@dataclass(frozen=True, slots=True)
class FactsNeeded:
    path: bool = False
    keys: bool = False
    user_id: bool = False

    def __bool__(self) -> bool:
        return self.path or self.keys or self.user_id


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


@dataclass(frozen=True, slots=True)
class Check:
    """What an approved integration's own limits say about a new credential."""

    allowed: bool
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class CredentialRule:
    """One long-lived credential kind: how it is named, undone, and checked for an integration."""

    kind: str
    noun: str
    #: The step that undoes it: deactivation (reversible) or deleting the login profile.
    undo: str
    #: Undone alongside a quarantine too. Every kind is: an approval gives back only what it
    #: deactivated, and a password left in place would sign in the moment any approval releases
    #: the user (it cannot be deactivated, only deleted; an administrator sets a new one).
    undo_on_quarantine: bool
    #: Rule names: (allowed, over an integration's limit, made by someone outside created_by, unapproved user).
    rules: tuple[str, str, str, str]
    check: Callable[[CredentialRule, Integration, IamEvent, UserFacts], Check]

    def describe(self, event: IamEvent) -> str:
        return f"{self.noun} {event.credential_id}" if event.credential_id else f"the new {self.noun}"

    @property
    def undone(self) -> str:
        return "deleted" if self.undo == DELETE_LOGIN_PROFILE else "deactivated"


def _allow_any(rule: CredentialRule, integration: Integration, event: IamEvent, facts: UserFacts) -> Check:
    return Check(True, rule.rules[0], f"{rule.noun} for {event.target_user_name} by integration '{integration.name}'")


def _check_key_count(rule: CredentialRule, integration: Integration, event: IamEvent, facts: UserFacts) -> Check:
    user, key, limit = event.target_user_name, rule.describe(event), integration.max_access_keys
    if facts.active_key_ids is None:
        return Check(
            False,
            "key_count_unknown",
            f"could not count the active keys of {user} (integration '{integration.name}'); "
            f"{key} is deactivated until someone checks",
        )
    count = len(set(facts.active_key_ids) | ({event.credential_id} if event.credential_id else set()))
    if count <= limit:
        return Check(
            True,
            rule.rules[0],
            f"{key} for {user} is allowed: integration '{integration.name}' has {count} active key(s), "
            f"max_access_keys {limit}",
        )
    return Check(
        False,
        rule.rules[1],
        f"{user} (integration '{integration.name}') would have {count} active keys, more than "
        f"max_access_keys {limit}: {key} is deactivated",
    )


def _check_console(rule: CredentialRule, integration: Integration, event: IamEvent, facts: UserFacts) -> Check:
    user = event.target_user_name
    if integration.console_access:
        return Check(
            True,
            rule.rules[0],
            f"console access for {user} is allowed by integration '{integration.name}'; "
            "MFA is required and checked by the sweep",
        )
    return Check(
        False,
        rule.rules[1],
        f"integration '{integration.name}' does not allow console access: the login profile of {user} is deleted",
    )


def _generic_rules(kind: str) -> tuple[str, str, str, str]:
    return (f"{kind}_allowed", f"{kind}_over_limit", f"{kind}_by_unlisted_creator", f"unapproved_{kind}")


#: Every long-lived credential kind an IAM user can hold, and the rule each follows.
CREDENTIALS: Final[Mapping[str, CredentialRule]] = {
    rule.kind: rule
    for rule in (
        CredentialRule(
            ACCESS_KEY,
            "access key",
            DEACTIVATE_CREDENTIAL,
            True,
            ("key_within_limit", "key_over_limit", "key_by_unlisted_creator", "unapproved_key"),
            _check_key_count,
        ),
        CredentialRule(
            LOGIN_PROFILE,
            "console password",
            DELETE_LOGIN_PROFILE,
            True,
            ("console_allowed", "console_not_allowed", "password_by_unlisted_creator", "unapproved_console_password"),
            _check_console,
        ),
        CredentialRule(
            SSH_PUBLIC_KEY, "SSH public key", DEACTIVATE_CREDENTIAL, True, _generic_rules(SSH_PUBLIC_KEY), _allow_any
        ),
        CredentialRule(
            SERVICE_SPECIFIC_CREDENTIAL,
            "service-specific credential",
            DEACTIVATE_CREDENTIAL,
            True,
            _generic_rules(SERVICE_SPECIFIC_CREDENTIAL),
            _allow_any,
        ),
        CredentialRule(
            SIGNING_CERTIFICATE,
            "signing certificate",
            DEACTIVATE_CREDENTIAL,
            True,
            _generic_rules(SIGNING_CERTIFICATE),
            _allow_any,
        ),
    )
}


def facts_needed(event: IamEvent, allowlist: Allowlist, exception: ActiveException | None = None) -> FactsNeeded:
    """Which IAM reads `decide` needs for this event (none for most events).

    An exception found by name is honoured only for the user id it was granted to: where the
    event does not carry the id, it is read.
    """
    if event.error_code or not event.target_user_name:
        return FactsNeeded()
    user_id = exception is not None and not event.target_user_id
    if (
        event.event_name not in CREDENTIAL_EVENTS
        and event.event_name not in LIFECYCLE_EVENTS
        and not is_reactivation(event)
    ):
        return FactsNeeded(user_id=user_id)
    candidates = allowlist.candidates(event.target_user_name)
    return FactsNeeded(
        path=bool(candidates) and not event.target_user_path and any(i.path for i in candidates),
        keys=bool(candidates) and event.credential_kind == ACCESS_KEY,
        user_id=user_id,
    )


def decide(
    event: IamEvent,
    allowlist: Allowlist,
    *,
    own_roles: OwnIdentity,
    exception: ActiveException | None = None,
    facts: UserFacts | None = None,
    mode: str | None = None,
    record: Mapping[str, Any] | None = None,
    quarantine_policy: str = DEFAULT_QUARANTINE_POLICY_NAME,
    guarded_roles: frozenset[str] | None = None,
) -> Decision:
    """Decide what to do about one IAM event. `mode` overrides the allowlist's mode.

    `record` is the guardrail's own record of the target user (status, the credentials it
    deactivated, the tags it set): tamper and rename events are judged against it. `guarded_roles`
    are the lower-cased names of the guardrail's own roles (default: the remediation role).
    """
    facts = facts or UserFacts()
    active = bound_exception(exception, event, facts)
    if event.event_name in OWN_PART_EVENTS:
        roles = default_guarded_roles() if guarded_roles is None else guarded_roles
        decision = _own_parts(event, own_roles, quarantine_policy, roles)
    elif event.event_name in TAMPER_EVENTS:
        decision = _tamper(event, own_roles, active, record or {}, quarantine_policy)
        if decision.rule == "not_guardrail_key" and is_reactivation(event):
            # A credential switched back on is a credential made usable: the same rule as a new one.
            decision = _decide(event, allowlist, active, facts)
    elif event.event_name in LIFECYCLE_EVENTS:
        decision = _lifecycle(event, allowlist, active, facts, record or {})
    else:
        decision = _decide(event, allowlist, active, facts)
    mode = mode or allowlist.mode
    return decision if mode == decision.mode else replace(decision, mode=mode)


def is_reactivation(event: IamEvent) -> bool:
    """An Update*Key/Credential/Certificate call that set a credential Active."""
    return (
        event.event_name in CREDENTIAL_STATUS_EVENTS
        and not event.error_code
        and bool(event.credential_id)
        and event.request_parameters.get("status") == "Active"
    )


def bound_exception(exception: ActiveException | None, event: IamEvent, facts: UserFacts) -> ActiveException | None:
    """The exception, if it is active at the event's time and belongs to this very user.

    An exception names the user id it was granted to: a user deleted and created again under the
    same name is another user, and inherits nothing.
    """
    if exception is None or not exception.is_active(event.event_time) or not exception.user_id:
        return None
    user_id = event.target_user_id or facts.user_id
    return exception if user_id == exception.user_id else None


def _decide(event: IamEvent, allowlist: Allowlist, active: ActiveException | None, facts: UserFacts) -> Decision:
    name = event.event_name
    if name not in CREATION_EVENT_NAMES and not is_reactivation(event):
        return Decision(IGNORE, f"{name} is not an event the guardrail acts on", rule="not_handled")
    if event.error_code:
        return Decision(IGNORE, f"{name} failed with {event.error_code}; nothing was created", rule="failed_call")
    # The guardrail never creates users or credentials: a creation event made by its role is judged
    # like any other (the own-role exemption applies to the tamper events it causes itself).
    if not event.target_user_name:
        if event.actor.type == "Root" and event.credential_kind == ACCESS_KEY:
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
    if name == CREATE_USER:
        return _create_user(event, match, active)
    return _credential(event, CREDENTIALS[event.credential_kind], allowlist, match, active, facts)


CREATION_EVENT_NAMES: Final = frozenset({CREATE_USER, *CREDENTIAL_EVENTS})


def _tamper(
    event: IamEvent,
    own_roles: OwnIdentity,
    active: ActiveException | None,
    record: Mapping[str, Any],
    quarantine_policy: str,
) -> Decision:
    """DESIGN.md's last row: revert what undoes the guardrail's work, and alert as critical."""
    name, user = event.event_name, event.target_user_name
    if event.error_code:
        return Decision(IGNORE, f"{name} failed with {event.error_code}; nothing changed", rule="failed_call")
    if own_roles.is_own(event.actor, event.account):
        return Decision(IGNORE, f"{name} was made by the guardrail's own role", rule="own_role")
    if not user or not event.account_is_valid:
        return Decision(IGNORE, f"{name} names no user in a valid account", rule="no_target_user")
    by = event.actor.principal_arn or event.actor.display
    if name in CREDENTIAL_STATUS_EVENTS:
        # Not exempt during an exception: an approval gives back only the credentials deactivated
        # by the alert it approved; what stays in the record stays deactivated.
        return _tamper_credential(event, CREDENTIALS[event.credential_kind], record, by)
    if active is not None:
        return Decision(
            IGNORE,
            f"{name} on {user} during its exception (until {active.expires_at:%Y-%m-%d})",
            rule="during_exception",
        )
    if name == DETACH_USER_POLICY:
        policy_arn = str(event.request_parameters.get("policyArn", ""))
        if not is_quarantine_policy(
            policy_arn, account=event.account, partition=event.partition, name=quarantine_policy
        ):
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
    return _tamper_tags(event, record, by)


def _tamper_credential(event: IamEvent, rule: CredentialRule, record: Mapping[str, Any], by: str) -> Decision:
    status = event.request_parameters.get("status")
    ref = credential_ref(rule.kind, event.credential_id)
    if status != "Active" or not event.credential_id or ref not in record.get("deactivated_keys", ()):
        return Decision(
            IGNORE,
            f"{event.event_name} to {status} of a {rule.noun} the guardrail did not deactivate",
            rule="not_guardrail_key",
        )
    return _reverted(
        f"{rule.describe(event)}, deactivated by the guardrail, was reactivated by {by}: deactivated again",
        (DEACTIVATE_CREDENTIAL,),
        rule="tamper_reactivated_key",
    )


def _tamper_tags(event: IamEvent, record: Mapping[str, Any], by: str) -> Decision:
    """TagUser/UntagUser of `guardrail:` keys. IAM tag keys are case-insensitive, so are these checks.

    The guardrail's role may only tag and untag keys that start with exactly `guardrail:` (its
    IAM condition is case-sensitive): a case-variant key (`GUARDRAIL:status`) is overwritten by
    restoring the canonical key, and one it cannot overwrite is named in the alert for a human.
    """
    name, user = event.event_name, event.target_user_name
    ours = {key.lower(): (key, value) for key, value in (record.get("tags") or {}).items()}

    def guardrail_key(key: str) -> bool:
        return key.lower().startswith(TAG_PREFIX)

    if name == TAG_USER_EVENT:
        # Setting a guardrail tag to the value the guardrail recorded changes nothing (and breaks loops).
        touched = tuple(k for k, v in event.request_tags if guardrail_key(k) and ours.get(k.lower()) != (k, v))
        foreign = tuple(k for k in touched if k.lower() not in ours)
    else:
        touched = tuple(k for k in event.request_tag_keys if guardrail_key(k) and k.lower() in ours)
        foreign = ()
    if not touched:
        return Decision(IGNORE, f"{name} changed no guardrail tag it recorded", rule="no_guardrail_tags")
    restore = tuple(dict.fromkeys(ours[k.lower()] for k in touched if k.lower() in ours))
    remove = tuple(k for k in foreign if k.startswith(TAG_PREFIX))
    by_hand = tuple(k for k in foreign if not k.startswith(TAG_PREFIX))
    note = ""
    if by_hand:
        note = (
            f"; {', '.join(by_hand)} differs from the guardrail's own keys only in case and its role may not "
            "remove it: remove it by hand"
        )
    steps = (*((UNTAG_USER,) if remove else ()), *((TAG_USER,) if restore else ()))
    return _reverted(
        f"{by} changed the guardrail's tags on {user} ({', '.join(touched)}): restored{note}",
        steps,
        tags=restore,
        untag=remove,
        rule="tamper_tags",
    )


def _own_parts(event: IamEvent, own_roles: OwnIdentity, quarantine_policy: str, roles: frozenset[str]) -> Decision:
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
        arn = policy_arn(event)
        if not is_quarantine_policy(arn, account=event.account, partition=event.partition, name=quarantine_policy):
            return Decision(
                IGNORE, f"{name} on {arn or 'a policy'}, not the quarantine policy", rule="not_quarantine_policy"
            )
        version = str(params.get("versionId") or "")
        what = f"{name}{f' {version}' if version else ''}{' (set as default)' if params.get('setAsDefault') else ''}"
        if own_roles.is_own(event.actor, event.account):
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


def _lifecycle(
    event: IamEvent,
    allowlist: Allowlist,
    active: ActiveException | None,
    facts: UserFacts,
    record: Mapping[str, Any],
) -> Decision:
    """UpdateUser (rename, new path) and DeleteUser: the record and exception follow the user id."""
    name, user = event.event_name, event.target_user_name
    if event.error_code:
        return Decision(IGNORE, f"{name} failed with {event.error_code}; nothing changed", rule="failed_call")
    if not user or not event.account_is_valid:
        return Decision(IGNORE, f"{name} names no user in a valid account", rule="no_target_user")
    if name == DELETE_USER:
        return Decision(IGNORE, f"{user} was deleted: its record and any exception are closed", rule="user_deleted")
    if not event.renamed_from and not event.target_user_path:
        return Decision(IGNORE, f"UpdateUser changed neither the name nor the path of {user}", rule="not_handled")
    by = event.actor.principal_arn or event.actor.display
    old = event.renamed_from or user
    change = f"{old} was renamed to {user}" if event.renamed_from else f"{user} was moved"
    path = event.target_user_path or facts.path
    if event.target_user_path:
        change += f" (new path {event.target_user_path})"
    if active is not None:
        return Decision(
            APPROVE,
            f"{change} by {by} during its exception (until {active.expires_at:%Y-%m-%d}); "
            "the exception follows the user",
            rule="renamed_during_exception",
            notify=True,
        )
    match = match_user(allowlist, user=user, account=event.account, path=path, day=event.event_time.date())
    integration = match.integration if match.creator_ok else None
    was = record.get("status")
    if was == STATUS_APPROVED and integration is not None and integration.name == record.get("integration"):
        return Decision(
            APPROVE,
            f"{change} by {by}; it still matches integration '{integration.name}'",
            integration=integration.name,
            rule="renamed_within_integration",
        )
    if integration is not None:
        why = (
            f"{change} by {by} into the name and path of integration '{integration.name}': a rename is not a "
            "creation by a provisioner and approves nothing"
        )
        severity, rule = CRITICAL, "renamed_into_integration"
    else:
        why = f"{change} by {by}; {match.why_not}"
        severity, rule = HIGH, "renamed_user"
    if was == STATUS_QUARANTINED:
        why += "; the quarantine is kept"
    return Decision(
        QUARANTINE,
        why,
        severity=severity,
        steps=(ATTACH_QUARANTINE, TAG_USER),
        tags=_quarantine_tags(why, event.event_id),
        notify=True,
        rule=rule,
    )


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


def _credential(
    event: IamEvent,
    rule: CredentialRule,
    allowlist: Allowlist,
    match: Match,
    active: ActiveException | None,
    facts: UserFacts,
) -> Decision:
    """One rule for every long-lived credential kind (access key, password, SSH key, ...)."""
    user = event.target_user_name
    actor = event.actor.principal_arn or event.actor.display
    what = rule.describe(event)
    made = "reactivated" if is_reactivation(event) else "made"
    backdoor = not event.actor_is_target
    provisioner = allowlist.provisioners.matches(event.actor.principal_arn)
    integration = match.integration
    if integration and match.creator_ok:
        check = rule.check(rule, integration, event, facts)
        if check.allowed:
            return Decision(APPROVE, check.reason, integration=integration.name, rule=check.rule)
        return Decision(
            ALERT,
            check.reason,
            severity=HIGH,
            rule=check.rule,
            steps=(rule.undo,),
            integration=integration.name,
            notify=True,
        )
    if active:
        if event.actor_is_target or provisioner:
            return _exception_decision(event, active, notify=True)
        return Decision(
            ALERT,
            f"{what} was {made} for {user} by {actor}, who is neither the user nor a provisioner: the exception "
            f"(approved by {active.approved_by or 'an approver'}) does not cover it; only the {rule.noun} is "
            f"{rule.undone}: possible backdoor",
            severity=CRITICAL,
            rule="backdoor_during_exception",
            steps=(rule.undo,),
            notify=True,
            backdoor=True,
        )
    if integration:
        return Decision(
            ALERT,
            f"{what} was {made} for integration user {user} by {actor}, who is not in the created_by of "
            f"'{integration.name}': only the {rule.noun} is {rule.undone}",
            severity=CRITICAL,
            rule=rule.rules[2],
            steps=(rule.undo,),
            integration=integration.name,
            notify=True,
            backdoor=backdoor,
        )
    note = f"; {what} was {made} by {actor}"
    if backdoor:
        note = f"; {what} was {made} by another principal ({event.actor.display}): possible backdoor"
    undo = (rule.undo,) if rule.undo_on_quarantine else ()
    return Decision(
        QUARANTINE,
        f"{match.why_not}{note}",
        severity=CRITICAL if backdoor and not provisioner else HIGH,
        steps=(*undo, ATTACH_QUARANTINE, TAG_USER),
        tags=_quarantine_tags(match.why_not, event.event_id),
        notify=True,
        backdoor=backdoor,
        rule=("backdoor_key" if backdoor and rule.kind == ACCESS_KEY else rule.rules[3]),
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
