"""Silence detection: is a member account still able to tell the guardrail what happens in it?

An insider with ordinary permissions can disable the EventBridge rule that forwards IAM events
(`events:DisableRule` is not an IAM call) or stop the trail, and the account goes quiet. Each
sweep of a member account therefore checks:

- the forwarding rule (infra/member-account.yaml) exists and is ENABLED (`events:DescribeRule`);
- a trail logs the account's management events in us-east-1, where IAM's events are recorded
  (`cloudtrail:DescribeTrails` with shadow trails, so an organization trail counts, and
  `GetTrailStatus`);
- the heartbeat came back: the previous sweep tagged the account's quarantine policy
  `guardrail:heartbeat=<time>` (an IAM write CloudTrail records), and `on_iam_event` must have
  seen that `TagPolicy` event since. It proves the whole path: trail, rule, bus policy, handler.

`on_iam_event` hands two kinds of event here instead of to the guardrail: the heartbeat's
`TagPolicy` (recorded, never judged as tamper) and `DisableRule`/`DeleteRule`/`RemoveTargets` on a
guardrail rule (alerted, critical).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.alerts import AlertDeliveryError, Notifier
from chalicelib.constants import (
    APP_NAME,
    CLOUDTRAIL_DETAIL_TYPE,
    CRITICAL,
    EVENTS_EVENT_SOURCE,
    FORWARD_RULE_NAME,
    HIGH,
    IAM_EVENT_SOURCE,
    RULE_TAMPER_EVENTS,
    TAG_HEARTBEAT,
    TAG_POLICY_EVENT,
)
from chalicelib.iam import error_code
from chalicelib.slack_message import code, notice, safe
from chalicelib.store import Store, StoreUnavailableError, event_pk, iso, parse_iso, utcnow

log = logging.getLogger(__name__)

ACCOUNT_PK: Final = "ACCOUNT"
#: A heartbeat younger than this is still on its way (CloudTrail to EventBridge takes minutes).
HEARTBEAT_GRACE: Final = timedelta(minutes=15)
#: IAM records its events in us-east-1; a trail must log there.
IAM_REGION: Final = "us-east-1"

RULE_MISSING: Final = "forwarding_rule_missing"
RULE_DISABLED: Final = "forwarding_rule_disabled"
NO_TRAIL: Final = "trail_not_logging"
HEARTBEAT_MISSING: Final = "heartbeat_missing"
CHECK_FAILED: Final = "silence_check_failed"
UNREACHABLE: Final = "account_unreachable"


def seen_pk(account: str) -> str:
    """The partition where `Store.record` notes each event's arrival from `account`."""
    return f"SEEN#{account}"


@dataclass(frozen=True, slots=True)
class Problem:
    """Why an account may be silent."""

    kind: str
    severity: str
    detail: str


class SilenceCheck:
    """The checks of one member account, through that account's clients."""

    def __init__(
        self,
        *,
        account: str,
        events: Any,
        cloudtrail: Any,
        iam: Any,
        dynamodb: Any,
        table: str,
        policy_name: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.account = account
        self._events = events
        self._cloudtrail = cloudtrail
        self._iam = iam
        self._ddb = dynamodb
        self.table = table
        self.policy_arn = f"arn:aws:iam::{account}:policy/{policy_name}"
        self._clock = clock

    def run(self, previous: Mapping[str, Any], *, send_heartbeat: bool) -> tuple[list[Problem], dict[str, Any]]:
        """The problems found, and the account-record values to store (heartbeat sent, last event)."""
        now = self._clock()
        problems = [*self.rule(), *self.trail()]
        heartbeat, pending = self.heartbeat(previous, now)
        problems += heartbeat
        values: dict[str, Any] = {}
        last = self.last_event_at()
        if last:
            values["last_event_at"] = last
        if send_heartbeat and not pending:
            sent = self.send_heartbeat(now)
            if sent:
                values["hb_sent"] = sent
            else:
                problems.append(Problem(CHECK_FAILED, HIGH, "could not tag the quarantine policy with a heartbeat"))
        return problems, values

    def rule(self) -> list[Problem]:
        try:
            state = self._events.describe_rule(Name=FORWARD_RULE_NAME).get("State", "")
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return [Problem(RULE_MISSING, CRITICAL, f"EventBridge rule {FORWARD_RULE_NAME} does not exist")]
            return [Problem(CHECK_FAILED, HIGH, f"events:DescribeRule failed: {error_code(exc)}")]
        if state != "ENABLED":
            return [Problem(RULE_DISABLED, CRITICAL, f"EventBridge rule {FORWARD_RULE_NAME} is {state or 'unknown'}")]
        return []

    def trail(self) -> list[Problem]:
        try:
            trails = self._cloudtrail.describe_trails(includeShadowTrails=True).get("trailList", [])
            for trail in trails:
                if not (trail.get("IsMultiRegionTrail") or trail.get("HomeRegion") == IAM_REGION):
                    continue
                if self._cloudtrail.get_trail_status(Name=trail["TrailARN"]).get("IsLogging"):
                    return []
        except (ClientError, BotoCoreError) as exc:
            return [Problem(CHECK_FAILED, HIGH, f"CloudTrail could not be read: {error_code(exc)}")]
        return [Problem(NO_TRAIL, CRITICAL, f"no trail logs the account's management events in {IAM_REGION}")]

    def heartbeat(self, previous: Mapping[str, Any], now: datetime) -> tuple[list[Problem], bool]:
        """(problems, pending): the previous heartbeat is judged once its grace has passed."""
        sent = str(previous.get("hb_sent", ""))
        if not sent:
            return [], False
        if str(previous.get("hb_returned", "")) >= sent:
            return [], False
        if now - parse_iso(sent) < HEARTBEAT_GRACE:
            return [], True
        return [
            Problem(
                HEARTBEAT_MISSING,
                CRITICAL,
                f"the heartbeat sent at {sent} never reached the guardrail (rule, trail or bus policy broken)",
            )
        ], False

    def send_heartbeat(self, now: datetime) -> str:
        value = iso(now)
        try:
            self._iam.tag_policy(PolicyArn=self.policy_arn, Tags=[{"Key": TAG_HEARTBEAT, "Value": value}])
        except (ClientError, BotoCoreError) as exc:
            log.error("heartbeat not sent in %s: %s", self.account, error_code(exc))
            return ""
        return value

    def last_event_at(self) -> str:
        """When the last IAM event from this account arrived ('' when none is remembered)."""
        try:
            reply = self._ddb.query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": seen_pk(self.account)}},
                ScanIndexForward=False,
                Limit=1,
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("last event of %s not read: %s", self.account, error_code(exc))
            return ""
        items = reply.get("Items", [])
        return items[0]["sk"]["S"].split("#", 1)[0] if items else ""


# -- on_iam_event's branch for pipeline events ------------------------------------------------------


def pipeline_event(raw: Any) -> str:
    """'heartbeat', 'rule' or '' (an event for the guardrail) for a raw EventBridge input."""
    detail = raw.get("detail") if isinstance(raw, Mapping) else None
    if not isinstance(detail, Mapping) or raw.get("detail-type") != CLOUDTRAIL_DETAIL_TYPE:
        return ""
    name, source = detail.get("eventName"), detail.get("eventSource")
    if source == IAM_EVENT_SOURCE and name == TAG_POLICY_EVENT:
        return "heartbeat"
    if source == EVENTS_EVENT_SOURCE and name in RULE_TAMPER_EVENTS:
        return "rule"
    return ""


def guardrail_rule(name: str) -> bool:
    """The member forwarding rule, or one of the guardrail's own rules (event, schedules)."""
    return name == FORWARD_RULE_NAME or name.startswith(f"{APP_NAME}-")


class PipelineWatch:
    """Records heartbeats; alerts when someone disables, deletes or empties a guardrail rule."""

    def __init__(
        self,
        *,
        store: Store,
        notifier: Notifier,
        policy_name: str,
        remediation_role: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.policy_name = policy_name
        self.remediation_role = remediation_role
        self._clock = clock

    def handle(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        detail = raw["detail"]
        kind = pipeline_event(raw)
        account = str(detail.get("recipientAccountId") or raw.get("account") or "")
        base = {"event_id": str(detail.get("eventID", "")), "event_name": str(detail.get("eventName"))}
        base["account"] = account
        if detail.get("errorCode"):
            return {**base, "status": "ignored", "reason": "the call failed"}
        request = detail.get("requestParameters") if isinstance(detail.get("requestParameters"), Mapping) else {}
        if kind == "heartbeat":
            return {**base, **self._heartbeat(account, detail, request)}
        return {**base, **self._rule_tamper(raw, account, request)}

    def _heartbeat(self, account: str, detail: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
        """Record a heartbeat only if the guardrail's own role sent exactly the value the sweep stored.

        Anyone who may tag the policy could otherwise send a far-future value once, then disable the
        rule: every later heartbeat would look returned.
        """
        if request.get("policyArn") != f"arn:aws:iam::{account}:policy/{self.policy_name}":
            return {"status": "ignored", "reason": "not the quarantine policy"}
        identity = detail.get("userIdentity") if isinstance(detail.get("userIdentity"), Mapping) else {}
        session = identity.get("sessionContext") if isinstance(identity.get("sessionContext"), Mapping) else {}
        issuer = session.get("sessionIssuer") if isinstance(session.get("sessionIssuer"), Mapping) else {}
        if issuer.get("arn") != f"arn:aws:iam::{account}:role/{self.remediation_role}":
            return {"status": "ignored", "reason": "not tagged by the guardrail's role"}
        tags = request.get("tags") if isinstance(request.get("tags"), list) else []
        values = [str(t.get("value", "")) for t in tags if isinstance(t, Mapping) and t.get("key") == TAG_HEARTBEAT]
        if not values:
            return {"status": "ignored", "reason": "no heartbeat tag"}
        value = values[0][:40]
        op = self.store.update_op(
            ACCOUNT_PK,
            account,
            {"hb_returned": value, "hb_returned_at": iso(self._clock())},
            require={"hb_sent": value},
        )
        if not self.store.transact([op]):
            return {"status": "ignored", "reason": "not the heartbeat the sweep sent last"}
        log.info(json.dumps({"msg": "heartbeat returned", "account": account, "value": value}))
        return {"status": "heartbeat", "value": value}

    def _rule_tamper(self, raw: Mapping[str, Any], account: str, request: Mapping[str, Any]) -> dict[str, Any]:
        detail = raw["detail"]
        rule = str(request.get("name") or request.get("rule") or "")
        if not guardrail_rule(rule):
            return {"status": "ignored", "reason": f"rule {rule[:64]!r} is not the guardrail's"}
        event_id = str(detail.get("eventID", ""))
        identity = detail.get("userIdentity") if isinstance(detail.get("userIdentity"), Mapping) else {}
        actor = str(identity.get("arn") or identity.get("type") or "unknown")
        name = str(detail.get("eventName"))
        message = rule_tamper_alert(account, rule, name, actor, str(detail.get("eventTime", "")))
        try:
            first = not event_id or self.store.put(
                {"pk": event_pk(event_id), "sk": "EVENT", "kind": "rule_tamper", "at": iso(self._clock())},
                condition="attribute_not_exists(pk)",
            )
        except StoreUnavailableError:  # alert anyway (a repeat beats silence), then fail for a retry
            self._send(message, event_id, account, rule, queue=False)
            raise
        if not first:
            return {"status": "duplicate"}
        alert = self._send(message, event_id, account, rule)
        self.store.append_audit(
            {"kind": "rule_tamper", "account": account, "rule": rule, "event_name": name, "actor": actor}
        )
        return {"status": "alerted", "rule": rule, "severity": CRITICAL, "alert": alert}

    def _send(self, message: dict[str, Any], event_id: str, account: str, rule: str, *, queue: bool = True) -> str:
        try:
            self.notifier.send(message)
        except AlertDeliveryError as exc:
            if not queue:
                log.critical(json.dumps({"msg": "rule tamper alert not delivered", "message": message}))
                return "lost"
            self.store.save_unsent_alert(event_id or f"rule-{account}-{rule}", message, str(exc))
            return "queued"
        return "sent"


def rule_tamper_alert(account: str, rule: str, event_name: str, actor: str, when: str) -> dict[str, Any]:
    text = (
        f":rotating_light: *CRITICAL* `{safe(event_name, 40)}` on the guardrail's EventBridge rule "
        f"`{safe(rule, 64)}` in account {safe(account, 20)} by {code(actor, 300)} at {safe(when, 40)}. "
        "IAM events from this account may no longer reach the guardrail: restore the rule "
        "(re-deploy the StackSet instance) and run `python -m chalicelib.cli sweep --accounts "
        f"{safe(account, 20)}`."
    )
    return notice(f"Guardrail rule {event_name}: account may be silent", [text])


def silence_alert(account: str, problems: list[Problem]) -> dict[str, Any]:
    lines = "\n".join(f"• *{p.kind}* ({p.severity}): {safe(p.detail, 300)}" for p in problems)
    text = (
        f":rotating_light: Account {safe(account, 20)} may be silent: the guardrail would not see IAM "
        f"changes there.\n{lines}"
    )
    return notice(f"Account {account}: guardrail cannot watch it", [text])
