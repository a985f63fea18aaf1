"""Time-bound exceptions: grant (release from quarantine), keep quarantined, revoke, expire.

Every operation ends in an audit record that nobody edits. Releasing a user reactivates only the
access keys that the guardrail itself deactivated (recorded in its user record), and quarantining
again deactivates exactly those keys once more.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib import observability
from chalicelib.allowlist import Allowlist
from chalicelib.arns import parse_assumed_role_arn, parse_principal_arn
from chalicelib.constants import (
    STATUS_EXCEPTION,
    STATUS_QUARANTINED,
    TAG_REASON,
    TAG_STATUS,
)
from chalicelib.iam import DONE, GONE, AccountAccessError, ActionResult, IamActions, error_code, sanitise_tag_value
from chalicelib.policy import exception_tags, parse_credential_ref
from chalicelib.store import (
    EVENT_SK,
    EXCEPTION_PK,
    USER_PK,
    Store,
    event_pk,
    is_active_exception,
    iso,
    parse_iso,
    user_sk,
    utcnow,
)

log = logging.getLogger(__name__)

ACTIVE = "active"
EXPIRED = "expired"
REVOKED = "revoked"
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_USER_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
REASON_MAX = 500
TICKET_MAX = 100


class ApprovalError(Exception):
    """A refused operation; `status` is the HTTP status the REST API answers."""

    status = 400

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class InvalidRequestError(ApprovalError):
    status = 400


class ForbiddenError(ApprovalError):
    status = 403


class NotFoundError(ApprovalError):
    status = 404


class ConflictError(ApprovalError):
    status = 409


class AccountUnreachableError(ApprovalError):
    """The account's remediation role could not be assumed."""

    status = 502


class ReleaseFailedError(ApprovalError):
    """IAM refused part of a release or re-quarantine; the state says what was done."""

    status = 502


class CaseListener(Protocol):
    """Told when a case ends (Security Hub archives, PagerDuty resolves); must not raise."""

    def case_closed(self, account: str, user: str, *, how: str, case_event_id: str = "") -> None: ...

    def case_reopened(self, account: str, user: str, *, why: str, state: str) -> None: ...


@dataclass(frozen=True, slots=True)
class GrantRequest:
    account: str
    user: str
    days: int
    reason: str
    approver: str
    ticket: str = ""
    requester: str = ""
    source: str = "api"
    case_event_id: str = ""
    #: The approver's IAM identity with its path (a REST caller's role ARN, resolved).
    approver_principal: str = ""


def principal_key(arn: str) -> tuple[str, str, str] | None:
    """(account, 'role' | 'user', name) of an IAM user, role or assumed-role session ARN.

    Sessions of one role are one principal (a new session name is the same requester), and IAM
    names are unique without regard to case or path.
    """
    session = parse_assumed_role_arn(arn)
    if session is not None:
        return session.account, "role", session.role.lower()
    principal = parse_principal_arn(arn)
    if principal is not None:
        return principal.account, principal.type, principal.name.lower()
    return None


def same_principal(a: str, b: str) -> bool:
    key = principal_key(a)
    return key is not None and key == principal_key(b)


def validate_target(account: Any, user: Any) -> tuple[str, str]:
    if not isinstance(account, str) or not _ACCOUNT_RE.match(account):
        raise InvalidRequestError("account must be a 12-digit account id", "account")
    if not isinstance(user, str) or not _USER_RE.match(user):
        raise InvalidRequestError("user must be an IAM user name", "user")
    return account, user


class Approvals:
    def __init__(
        self,
        *,
        store: Store,
        iam_for: Callable[[str], IamActions],
        allowlist: Allowlist,
        clock: Callable[[], datetime] = utcnow,
        listeners: Iterable[CaseListener] = (),
    ) -> None:
        self.listeners = listeners
        self.store = store
        self._iam_for = iam_for
        self.allowlist = allowlist
        self._clock = clock

    def _iam(self, account: str) -> IamActions:
        try:
            return self._iam_for(account)
        except AccountAccessError as exc:
            raise AccountUnreachableError(str(exc), "account") from None

    def now(self) -> datetime:
        return self._clock()

    # -- queries -----------------------------------------------------------------------------

    def active(self, account: str = "") -> list[dict[str, Any]]:
        now = self._clock()
        return [
            _public(item)
            for item in self.store.query(EXCEPTION_PK, since=f"{account}#" if account else "")
            if is_active_exception(item)
            and (not account or item["account"] == account)
            and parse_iso(item["expires_at"]) > now
        ]

    def check_days(self, days: Any) -> int:
        limit = self.allowlist.exception_max_days
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= limit:
            raise InvalidRequestError(f"days must be a whole number from 1 to {limit} (exception_max_days)", "days")
        return days

    # -- grant -------------------------------------------------------------------------------

    def grant(self, request: GrantRequest) -> dict[str, Any]:
        """Record the exception, then release the user from quarantine."""
        account, user = validate_target(request.account, request.user)
        days = self.check_days(request.days)
        reason = request.reason.strip() if isinstance(request.reason, str) else ""
        if not reason:
            raise InvalidRequestError("reason is required", "reason")
        if len(reason) > REASON_MAX:
            raise InvalidRequestError(f"reason is longer than {REASON_MAX} characters", "reason")
        if not isinstance(request.ticket, str) or len(request.ticket) > TICKET_MAX:
            raise InvalidRequestError(f"ticket must be a string of at most {TICKET_MAX} characters", "ticket")
        iam = self._iam(account)
        try:
            user_id = iam.user_id(user)
        except Exception as exc:  # botocore errors of every kind: without the id nothing can be bound
            raise AccountUnreachableError(f"cannot read user {user} in {account}: {error_code(exc)}", "user") from None
        if user_id is None:
            raise NotFoundError(f"user {user} does not exist in account {account}", "user")
        found = self.store.get_many([(EXCEPTION_PK, user_sk(account, user)), (USER_PK, user_sk(account, user))])
        current = found.get((EXCEPTION_PK, user_sk(account, user)))
        if is_active_exception(current) and parse_iso(current["expires_at"]) > self._clock():  # type: ignore[index]
            raise ConflictError(f"{user} already holds an exception until {current['expires_at']}")  # type: ignore[index]
        record = found.get((USER_PK, user_sk(account, user)), {})
        case_id = request.case_event_id or str(record.get("quarantine_event_id", ""))
        case = self.store.get(event_pk(case_id), EVENT_SK) if case_id else None
        if case and case.get("user_id") and case["user_id"] != user_id:
            # The alert was about a user since deleted: its button must not release whoever holds the name now.
            raise ConflictError(
                f"{user} in {account} is not the user this alert was about (that user was deleted and the name "
                "reused): nothing was approved"
            )
        requester = request.requester or str((case or {}).get("actor_arn", ""))
        if request.source != "slack" and self._is_requester(request, case or {}):
            raise ForbiddenError("self-approval: the approver created this user or credential", "approver")
        # Only what the approved alert deactivated comes back, and only what is still deactivated.
        still = set(record.get("deactivated_keys", ()))
        keys = tuple(k for k in (case or {}).get("deactivated", ()) if k in still)
        now = self._clock()
        expires = now + timedelta(days=days)
        tags = exception_tags(sanitise_tag_value(request.approver), expires)
        item = {
            "pk": EXCEPTION_PK,
            "sk": user_sk(account, user),
            "account": account,
            "user": user,
            "user_id": user_id,
            "state": ACTIVE,
            "reason": reason,
            "ticket": request.ticket,
            "approver": request.approver,
            "requester": requester,
            "source": request.source,
            "case_event_id": case_id,
            "granted_at": iso(now),
            "expires_at": iso(expires),
            "reactivated_keys": list(keys),
        }
        written = self.store.transact(
            [
                self.store.put_op(
                    item,
                    condition="attribute_not_exists(pk) OR #state <> :active",
                    values={"active": ACTIVE},
                    names={"#state": "state"},
                ),
                self.store.audit_op(_audit("grant", item, by=request.approver, why=reason)),
                {
                    "Update": self.store.user_update(
                        account,
                        user,
                        {
                            "status": STATUS_EXCEPTION,
                            "exception_expires": iso(expires),
                            "tags": dict(tags),
                            "user_id": user_id,
                        },
                        discard={"deactivated_keys": keys},
                    )
                },
            ]
        )
        if not written:
            raise ConflictError(f"{user} already holds an exception")
        results = self._release(iam, user, account, keys, tags)
        self._tell("case_closed", account, user, how="granted", case_event_id=case_id)
        self._raise_on_failure(results, account, user, "release")
        return _public(item) | {"results": [r.describe() for r in results]}

    def user_tag_values(self, account: str, user: str) -> set[str]:
        """Lower-cased values of the IAM user's tags that look like emails (best effort: empty on error)."""
        try:
            return {v.strip().lower() for v in self._iam(account).user_tags(user).values() if "@" in v}
        except Exception as exc:  # the requester may be gone, or its account unreachable
            log.warning("could not read the tags of requester %s: %s", user, type(exc).__name__)
            return set()

    @staticmethod
    def _is_requester(request: GrantRequest, case: dict[str, Any]) -> bool:
        """The approver's principal made the call that was quarantined: a role, not a session,
        is compared (a new session of the requester's role is the requester)."""
        mine = [request.approver, request.approver_principal]
        theirs = [str(case.get("actor", "")), str(case.get("actor_arn", "")), request.requester]
        return any(same_principal(a, b) for a in mine if a for b in theirs if b)

    @staticmethod
    def _release(
        iam: IamActions, user: str, account: str, keys: Iterable[str], tags: tuple[tuple[str, str], ...]
    ) -> list[ActionResult]:
        results = [iam.detach_quarantine(user, account)]
        results += [iam.set_credential_status(user, *parse_credential_ref(key), "Active") for key in keys]
        results.append(iam.tag_user(user, tags))
        return results

    # -- keep quarantined, revoke, expire ----------------------------------------------------

    def keep_quarantined(self, account: str, user: str, *, approver: str, case_event_id: str) -> None:
        account, user = validate_target(account, user)
        record = {"account": account, "user": user, "case_event_id": case_event_id}
        self.store.transact(
            [
                self.store.audit_op(_audit("keep_quarantined", record, by=approver, why="kept quarantined")),
                {"Update": self.store.user_update(account, user, {"status": STATUS_QUARANTINED, "kept_by": approver})},
            ]
        )
        self._tell("case_closed", account, user, how="kept_quarantined", case_event_id=case_event_id)

    def revoke(self, account: str, user: str, *, by: str, why: str = "revoked") -> dict[str, Any]:
        """End an active exception now and quarantine the user again."""
        account, user = validate_target(account, user)
        item = self.store.get(EXCEPTION_PK, user_sk(account, user))
        if not is_active_exception(item):
            raise NotFoundError(f"{user} in {account} holds no active exception", "user")
        assert item is not None
        return self._end(item, REVOKED, by=by, why=why)

    def expire_due(self) -> list[dict[str, Any]]:
        """Quarantine again every user whose exception has passed its end (the sweep calls this)."""
        now = self._clock()
        ended = []
        for item in self.store.query(EXCEPTION_PK):
            if is_active_exception(item) and parse_iso(item["expires_at"]) <= now:
                try:
                    ended.append(self._end(item, EXPIRED, by="sweep", why="exception expired"))
                except ApprovalError as exc:
                    log.error("could not expire exception of %s: %s", item["sk"], exc)
                    ended.append(_public(item) | {"state": "expire_failed", "results": [str(exc)]})
        return ended

    def _end(self, item: dict[str, Any], state: str, *, by: str, why: str) -> dict[str, Any]:
        account, user = item["account"], item["user"]
        tags = ((TAG_STATUS, STATUS_QUARANTINED), (TAG_REASON, sanitise_tag_value(why)))
        keys = tuple(item.get("reactivated_keys", ()))
        iam = self._iam(account)  # before any state changes: an unreachable account changes nothing
        written = self.store.transact(
            [
                self.store.update_op(
                    EXCEPTION_PK,
                    user_sk(account, user),
                    {"state": state, "ended_at": iso(self._clock()), "ended_by": by},
                    require={"state": ACTIVE},
                ),
                self.store.audit_op(_audit(state, item, by=by, why=why)),
                {
                    "Update": self.store.user_update(
                        account, user, {"status": STATUS_QUARANTINED, "reason": why, "tags": dict(tags)}, add_keys=keys
                    )
                },
            ]
        )
        if not written:
            raise ConflictError(f"the exception of {user} was already ended")
        results = [iam.set_credential_status(user, *parse_credential_ref(key), "Inactive") for key in keys]
        results.append(iam.attach_quarantine(user, account))
        if results[-1].status != GONE:
            results.append(iam.tag_user(user, tags))
        self._tell("case_reopened", account, user, why=why, state=state)
        self._raise_on_failure(results, account, user, "quarantine")
        return _public(item) | {"state": state, "results": [r.describe() for r in results]}

    def _tell(self, what: str, account: str, user: str, **details: str) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, what)(account, user, **details)
            except Exception:  # a listener never undoes or blocks an approval
                log.exception("case listener failed", extra={"listener": type(listener).__name__})
        observability.flush()

    def _raise_on_failure(self, results: list[ActionResult], account: str, user: str, what: str) -> None:
        failed = [r for r in results if r.status not in (DONE, GONE)]
        if failed:
            self.store.append_audit(
                {"kind": f"{what}_failed", "account": account, "user": user, "results": [r.describe() for r in failed]}
            )
            raise ReleaseFailedError(f"{what} of {user} incomplete: " + "; ".join(r.describe() for r in failed))


def _audit(kind: str, item: dict[str, Any], *, by: str, why: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "account": item.get("account", ""),
        "user": item.get("user", ""),
        "by": by,
        "reason": why,
        "event_id": item.get("case_event_id", ""),
        "expires_at": item.get("expires_at", ""),
        "ticket": item.get("ticket", ""),
        "requester": item.get("requester", ""),
    }


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("pk", "sk")}
