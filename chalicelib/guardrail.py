"""Handle one IAM event: parse, load state, decide, act, alert, record.

Order matters for safety:
- a duplicate delivery (event already recorded) is dropped before anything happens;
- IAM actions come before anything that can fail on Slack or DynamoDB, so a quarantine is never
  skipped because another service is down;
- the event is recorded (with its audit record, and the alert itself when Slack refused it) in
  one DynamoDB transaction after the alert was attempted;
- if the table or an IAM action failed, the handler raises at the very end so Lambda retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib import observability
from chalicelib.alerts import AlertDeliveryError, AlertSink, Notifier
from chalicelib.allowlist import Allowlist
from chalicelib.constants import (
    ACCESS_KEY,
    APPROVE,
    CREATE_USER,
    CREDENTIAL_STATUS_EVENTS,
    DEFAULT_QUARANTINE_POLICY_NAME,
    DELETE_USER,
    ENFORCE,
    OWN_PART_EVENTS,
    STATUS_APPROVED,
    STATUS_EXCEPTION,
    STATUS_QUARANTINED,
    TAG_STATUS,
    UPDATE_USER,
)
from chalicelib.events import IamEvent, MalformedEventError, parse_event
from chalicelib.iam import (
    CREDENTIAL_APIS,
    DONE,
    FAILED,
    GONE,
    NOT_IDENTIFIED,
    UNREACHABLE,
    AccountAccessError,
    ActionResult,
    IamActions,
    sanitise_tag_value,
)
from chalicelib.identity import OwnIdentity
from chalicelib.policy import (
    ATTACH_QUARANTINE,
    DEACTIVATE_CREDENTIAL,
    DELETE_LOGIN_PROFILE,
    RESTORE_QUARANTINE_POLICY,
    TAG_USER,
    UNTAG_USER,
    Decision,
    UserFacts,
    after_restore,
    credential_ref,
    decide,
    facts_needed,
)
from chalicelib.selfguard import guarded_roles as default_guarded_roles
from chalicelib.selfguard import target
from chalicelib.slack_message import build_alert
from chalicelib.store import EventState, Outcome, Store, StoreUnavailableError

if TYPE_CHECKING:
    from chalicelib.outbox import BurstGate

log = logging.getLogger(__name__)


def _canonical_name(name: str, record: Mapping[str, Any]) -> str:
    """The user's name as the guardrail recorded it: IAM names match without regard to case, so an
    event may spell it otherwise (`BOB` for `bob`)."""
    recorded = str(record.get("user", ""))
    return recorded if recorded and recorded.lower() == name.lower() else name


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


SELF_APPROVAL_UNCHECKED = (
    ":warning: Self-approval cannot be checked: no Slack bot token is configured, so an approver's email "
    "cannot be linked to the requester. Approve only what you did not request."
)


class ActionFailedError(RuntimeError):
    """An IAM action failed after retries; raised after alerting so Lambda retries the event."""


@dataclass
class HandleResult:
    """What happened to one event (returned by the Lambda handler and printed by the demo)."""

    status: str  # handled | duplicate | rejected
    event_id: str = ""
    event_name: str = ""
    account: str = ""
    user: str = ""
    decision: Decision | None = None
    results: list[ActionResult] = field(default_factory=list)
    alert: str = "none"  # none | sent | queued | lost
    message: Mapping[str, Any] | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "account": self.account,
            "user": self.user,
            "alert": self.alert,
            "reason": self.reason,
            "results": [r.describe() for r in self.results],
        }
        if self.decision:
            data.update(
                verdict=self.decision.verdict,
                severity=self.decision.severity,
                reason=self.decision.reason,
                mode=self.decision.mode,
                integration=self.decision.integration,
            )
        return data


class _AccountIam:
    """The IAM actions of the event's account, resolved only if a decision needs IAM (once)."""

    def __init__(self, iam_for: Callable[[str], IamActions], event: IamEvent) -> None:
        self._iam_for = iam_for
        self._event = event
        self._iam: IamActions | None = None
        self._resolved = False
        self.unreachable = ""

    def get(self) -> IamActions | None:
        if not self._resolved:
            self._resolved = True
            if self._event.account_is_valid:
                try:
                    self._iam = self._iam_for(self._event.account)
                except AccountAccessError as exc:
                    self.unreachable = str(exc)
                    log.error("account unreachable", extra={"account": self._event.account, "error": str(exc)})
                    observability.count(observability.ACCOUNT_UNREACHABLE)
        return self._iam


class Guardrail:
    def __init__(
        self,
        *,
        allowlist: Allowlist,
        iam_for: Callable[[str], IamActions],
        store: Store,
        notifier: Notifier,
        own_roles: OwnIdentity,
        policy_name: str = DEFAULT_QUARANTINE_POLICY_NAME,
        mode: str | None = None,
        burst: BurstGate | None = None,
        sinks: Iterable[AlertSink] = (),
        guarded_roles: frozenset[str] | None = None,
        self_approval_checkable: Callable[[], bool] = lambda: True,
    ) -> None:
        self.sinks = sinks
        self.allowlist = allowlist
        self.burst = burst
        self.iam_for = iam_for
        self.store = store
        self.notifier = notifier
        self.own_roles = own_roles
        self.policy_name = policy_name
        self.mode = mode or allowlist.mode
        self.guarded_roles = default_guarded_roles() if guarded_roles is None else guarded_roles
        self._self_approval_checkable = self_approval_checkable

    def handle(self, raw: Any) -> HandleResult:
        """Entry point for the EventBridge rule: never raises on bad input."""
        try:
            event = parse_event(raw)
        except MalformedEventError as exc:
            observability.correlate(raw.get("id") if isinstance(raw, dict) else None)
            log.warning("event ignored", extra={"reason": str(exc)})
            return HandleResult(status="rejected", reason=str(exc))
        return self.handle_event(event)

    def handle_event(self, event: IamEvent) -> HandleResult:
        observability.correlate(event.event_id)
        store_error: StoreUnavailableError | None = None
        try:
            # A rename is judged against the record the user had under its old name.
            state = self.store.load(event.event_id, event.account, event.renamed_from or event.target_user_name)
        except StoreUnavailableError as exc:
            log.error("table unreachable; acting without state", extra={"error": str(exc)})
            store_error, state = exc, EventState()
        result = HandleResult(
            status="handled",
            event_id=event.event_id,
            event_name=event.event_name,
            account=event.account,
            user=event.target_user_name,
        )
        if state.processed:
            result.status = "duplicate"
            log.info("duplicate delivery ignored", extra={"event_id": event.event_id})
            return result

        account = _AccountIam(self.iam_for, event)
        decision, facts = self._decide(event, state, account)
        result.decision = decision
        if decision.mode == ENFORCE and decision.steps:
            iam = account.get()
            if iam is not None:
                result.results = self._act(iam, event, decision, state.user_record)
            elif account.unreachable:
                result.results = [ActionResult("assume_role", event.account, UNREACHABLE, account.unreachable)]
        failed = [r for r in result.results if r.status == FAILED]
        gone = any(r.status in (GONE, UNREACHABLE) for r in result.results)
        if any(r.action == RESTORE_QUARANTINE_POLICY and r.status == DONE for r in result.results):
            decision = result.decision = after_restore(decision)

        alert_error = ""
        if decision.notify or failed or gone:
            notes = ()
            if decision.quarantines and not self._self_approval_checkable():
                notes = (SELF_APPROVAL_UNCHECKED,)
            result.message = build_alert(event, decision, result.results, notes=notes)
            try:
                if not failed and self.burst is not None and self.burst.hold(event, decision, result.message):
                    result.alert = "rolled_up"  # named in the creator's roll-up by the next flush
                else:
                    self.notifier.send(result.message)
                    result.alert = "sent"
            except AlertDeliveryError as exc:
                alert_error = str(exc)
                log.error("alert not delivered; queued", extra={"event_id": event.event_id, "error": alert_error})
        for sink in self.sinks:
            sink.publish(event, decision, result.results, alerted=result.message is not None)

        if failed:
            self._queue_alert(event, result, alert_error)
            self._log(result)
            raise ActionFailedError(f"{event.event_name} {event.event_id}: " + "; ".join(r.describe() for r in failed))

        if store_error is None:
            try:
                if not self.store.record(self._outcome(event, result, alert_error, state, facts)):
                    result.status = "duplicate"
                    log.info("concurrent duplicate delivery", extra={"event_id": event.event_id})
                    return result
                if alert_error:
                    result.alert = "queued"
            except StoreUnavailableError as exc:
                store_error = exc
        if store_error is not None and alert_error:
            self._alert_lost(result)
        self._log(result)
        if store_error is not None:
            raise store_error
        return result

    def _decide(self, event: IamEvent, state: EventState, account: _AccountIam) -> tuple[Decision, UserFacts | None]:
        needed = facts_needed(event, self.allowlist, state.exception)
        facts = None
        iam = account.get() if needed else None
        if iam is not None:
            facts = iam.user_facts(event.target_user_name, path=needed.path, keys=needed.keys, user_id=needed.user_id)
        decision = decide(
            event,
            self.allowlist,
            own_roles=self.own_roles,
            exception=state.exception,
            facts=facts,
            mode=self.mode,
            record=state.user_record,
            quarantine_policy=self.policy_name,
            guarded_roles=self.guarded_roles,
        )
        return decision, facts

    def _act(
        self, iam: IamActions, event: IamEvent, decision: Decision, record: Mapping[str, Any]
    ) -> list[ActionResult]:
        user = _canonical_name(event.target_user_name, record)
        results: list[ActionResult] = []
        for step in decision.steps:
            if step == DEACTIVATE_CREDENTIAL:
                results += self._deactivate_new(iam, event, record)
                if results and results[-1].status == GONE:
                    break
                continue
            if step == ATTACH_QUARANTINE:
                result = iam.attach_quarantine(user, event.account, event.partition)
            elif step == DELETE_LOGIN_PROFILE:
                result = iam.delete_login_profile(user)
            elif step == UNTAG_USER:
                ours = {key.lower() for key, _ in decision.tags}
                result = iam.untag_user(user, [k for k in decision.untag_keys if k.lower() not in ours])
            elif step == TAG_USER:
                result = iam.tag_user(user, decision.tags)
            elif step == RESTORE_QUARANTINE_POLICY:
                result = iam.check_quarantine_policy(event.account, event.partition)
            else:  # pragma: no cover - the policy module defines every step
                raise ValueError(f"unknown step {step}")
            results.append(result)
            if result.status == GONE:
                break
        return results

    @staticmethod
    def _deactivate_new(iam: IamActions, event: IamEvent, record: Mapping[str, Any]) -> list[ActionResult]:
        """Deactivate the credential the event made. Where the record does not name it (CloudTrail
        left out responseElements), the user's active credentials of that kind created at or after
        the event are the new ones; if none can be found, say so rather than claim it was done."""
        user, kind = _canonical_name(event.target_user_name, record), event.credential_kind
        if event.credential_id:
            return [iam.set_credential_status(user, kind, event.credential_id, "Inactive")]
        try:
            listed = iam.credentials(user, (kind,))
        except Exception as exc:  # botocore errors of every kind: reported, the rest still acts
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            if code == "NoSuchEntity":
                return [ActionResult(f"deactivate_{kind}", user, GONE, "user no longer exists")]
            return [ActionResult(f"deactivate_{kind}", user, FAILED, f"cannot list credentials: {code}")]
        since = event.event_time - timedelta(seconds=2)
        known = set(record.get("deactivated_keys", ())) | set(record.get("approved_keys", ()))
        new = [
            c
            for c in listed
            if c.active and c.created is not None and _aware(c.created) >= since and c.ref not in known
        ]
        if not new:
            noun = "key" if kind == ACCESS_KEY else kind.replace("_", " ")
            detail = f"the event names no {noun} id and no active {noun} created since {since:%H:%M:%S} was found"
            return [ActionResult(f"deactivate_{kind}", user, NOT_IDENTIFIED, detail)]
        return [iam.set_credential_status(user, kind, c.id, "Inactive") for c in new]

    def _outcome(
        self,
        event: IamEvent,
        result: HandleResult,
        alert_error: str,
        state: EventState,
        facts: UserFacts | None,
    ) -> Outcome:
        decision = result.decision
        assert decision is not None
        done = [r for r in result.results if r.status == DONE]
        deactivated = tuple(
            credential_ref(event.credential_kind, r.target.rsplit("/", 1)[1])
            for r in done
            if r.action.startswith("deactivate_") and "/" in r.target
        )
        update: dict[str, Any] = {}
        user_id = event.target_user_id or (facts.user_id if facts else None) or state.user_record.get("user_id")
        if user_id:
            update["user_id"] = user_id
        if done:
            update["last_event_id"] = event.event_id
            status = dict(decision.tags).get(TAG_STATUS, "")
            if status in (STATUS_APPROVED, STATUS_QUARANTINED, STATUS_EXCEPTION):
                update.update(status=status, reason=decision.reason[:1000], integration=decision.integration)
                update["tags"] = {key: sanitise_tag_value(value) for key, value in decision.tags}
            if decision.quarantines:
                update["quarantine_event_id"] = event.event_id
        approved = decision.verdict == APPROVE and event.credential_kind in CREDENTIAL_APIS and event.credential_id
        switched_off = (
            event.event_name in CREDENTIAL_STATUS_EVENTS
            and event.credential_id
            and event.request_parameters.get("status") == "Inactive"
            and not event.error_code
        )
        audit = {
            "kind": "decision",
            "event_id": event.event_id,
            "event_name": event.event_name,
            "event_time": event.event_time.isoformat(),
            "account": event.account,
            "user": event.target_user_name,
            "target": ": ".join(target(event) or ()),
            "actor": event.actor.principal_arn or event.actor.display,
            "source_ip": event.source_ip,
            "verdict": decision.verdict,
            "severity": decision.severity,
            "reason": decision.reason,
            "mode": decision.mode,
            "integration": decision.integration,
            "results": [r.describe() for r in result.results],
            "alert": "queued" if alert_error else result.alert,
        }
        case = {
            "event_name": event.event_name,
            "account": event.account,
            "user": event.target_user_name,
            "verdict": decision.verdict,
            "severity": decision.severity,
            "rule": decision.rule,
            "actor": event.actor.principal_arn,
            "actor_arn": event.actor.arn,
            "actor_session": event.actor.session_name,
            "actor_user_name": event.actor.user_name,
            "actor_account": event.actor.account_id,
            "user_id": user_id or "",
            # What this alert deactivated: approving it gives back exactly these.
            "deactivated": list(deactivated),
        }
        return Outcome(
            event_id=event.event_id,
            account=event.account,
            user=event.target_user_name,
            audit=audit,
            event=case,
            # a policy or role event names no user: it never writes a user record
            user_update=(
                update
                if event.target_user_name and not event.error_code and event.event_name not in OWN_PART_EVENTS
                else {}
            ),
            deactivated_keys=deactivated,
            approved_keys=(credential_ref(event.credential_kind, event.credential_id),) if approved else (),
            unapproved_keys=(credential_ref(event.credential_kind, event.credential_id),) if switched_off else (),
            unsent_alert=result.message if alert_error else None,
            alert_error=alert_error,
            # A failed call changed nothing: a CreateUser refused with EntityAlreadyExists must not
            # wipe the record of the user that exists, nor a refused UpdateUser move it.
            fresh_record=event.event_name == CREATE_USER and not event.error_code,
            moved_from=event.renamed_from if event.event_name == UPDATE_USER and not event.error_code else "",
            previous_record=state.user_record,
            previous_exception=state.exception_item,
            close=event.event_name == DELETE_USER and not event.error_code,
        )

    def _queue_alert(self, event: IamEvent, result: HandleResult, alert_error: str) -> None:
        if not alert_error or result.message is None:
            return
        try:
            self.store.save_unsent_alert(event.event_id, result.message, alert_error)
            result.alert = "queued"
        except StoreUnavailableError:
            self._alert_lost(result)

    @staticmethod
    def _alert_lost(result: HandleResult) -> None:
        """Slack and the table both failed: the log keeps the whole alert, and the handler raises."""
        result.alert = "lost"
        log.critical("alert could not be queued", extra={"alert_message": result.message})

    @staticmethod
    def _log(result: HandleResult) -> None:
        observability.decision(result)
