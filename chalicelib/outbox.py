"""Bursts and the outbox flush: no alert lost, Slack never flooded.

- `BurstGate`: the first `BURST_LIMIT` alerts from one creator in a `BURST_WINDOW_MINUTES` window
  go out at once (with their Approve buttons); later ones are held under `ROLLUP` (one atomic
  counter per creator and window decides). The quarantine itself never waits: the gate only
  chooses how the alert is delivered.
- `Flusher` (the `flush_alerts` function every minute, and `python -m chalicelib.cli flush-alerts`)
  posts one roll-up per creator and window naming every held user (with the commands to review and
  approve them), then resends the outbox. One message at most every `PACE_SECONDS` per flush;
  a Slack refusal (a 429 after slack_sdk honoured `Retry-After`) stops the flush, and what is left
  waits for the next one. Items are deleted only after Slack accepted the message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from chalicelib import observability
from chalicelib.alerts import AlertDeliveryError, Notifier, Sink, deliver_queued
from chalicelib.constants import BURST_LIMIT, BURST_WINDOW_MINUTES
from chalicelib.events import IamEvent
from chalicelib.policy import Decision
from chalicelib.slack_message import code, notice, safe
from chalicelib.store import OUTBOX_PK, Store, StoreUnavailableError, iso, parse_iso, utcnow

log = logging.getLogger(__name__)

BURST_PK: Final = "BURST"
ROLLUP_PK: Final = "ROLLUP"
PACE_SECONDS: Final = 1.0
#: A flush stops sending after this many messages, well inside the function's 60 s timeout.
MAX_SENDS: Final = 30
#: Users listed per roll-up section (Slack: 3,000 characters a section, 50 blocks a message).
LINES_PER_SECTION: Final = 25
#: Users per roll-up message (20 sections); a larger window is split over several messages.
USERS_PER_ROLLUP: Final = 500
#: An outbox item older than this, still unsent after a flush, is "stuck" (metric AlertQueued).
STUCK_AFTER: Final = timedelta(minutes=1)


def window_start(moment: datetime) -> datetime:
    minutes = moment.minute - moment.minute % BURST_WINDOW_MINUTES
    return moment.replace(minute=minutes, second=0, microsecond=0)


class BurstGate:
    """Decides whether an alert goes out now or into its creator's roll-up."""

    def __init__(
        self, store: Store, dynamodb: Any, *, clock: Callable[[], datetime] = utcnow, limit: int = BURST_LIMIT
    ) -> None:
        self.store = store
        self._ddb = dynamodb
        self._clock = clock
        self.limit = limit

    def hold(self, event: IamEvent, decision: Decision, message: Mapping[str, Any]) -> bool:
        """True when the alert was queued for a roll-up; False: send it now (also when unsure)."""
        creator = event.actor.principal_arn or event.actor.display
        window = iso(window_start(self._clock()))
        try:
            reply = self._ddb.update_item(
                TableName=self.store.table,
                Key={"pk": {"S": BURST_PK}, "sk": {"S": f"{window}#{creator}"}},
                UpdateExpression="ADD #n :one SET #ttl = :ttl",
                ExpressionAttributeNames={"#n": "n", "#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":ttl": {"N": str(int((self._clock() + timedelta(days=1)).timestamp()))},
                },
                ReturnValues="UPDATED_NEW",
            )
            count = int(reply["Attributes"]["n"]["N"])
        except Exception as exc:  # the counter is an optimisation; the alert is not
            log.warning("burst counter unavailable (%s): alert sent", type(exc).__name__)
            return False
        if count <= self.limit:
            return False
        item = {
            "pk": ROLLUP_PK,
            "sk": f"{window}#{creator}#{event.event_id}",
            "window": window,
            "creator": creator,
            "account": event.account,
            "user": event.target_user_name,
            "event_id": event.event_id,
            "event_name": event.event_name,
            "verdict": decision.verdict,
            "severity": decision.severity,
            "mode": decision.mode,
            "message": json.dumps(dict(message), separators=(",", ":")),
        }
        try:
            self.store.put(item)
        except StoreUnavailableError as exc:
            log.error("roll-up not stored (%s): alert sent", exc)
            return False
        return True


def rollup_message(window: str, creator: str, items: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One message naming every held user of one creator's window."""
    end = window[:16].replace("T", " ")
    lines = [
        f"• {code(str(i.get('user') or '(no user)'), 80)} in {safe(str(i.get('account', '')), 20)}: "
        f"{safe(str(i.get('event_name', '')), 40)} → {safe(str(i.get('verdict', '')), 20)} "
        f"({safe(str(i.get('severity', '')), 12)}{', monitor' if i.get('mode') == 'monitor' else ''})"
        for i in items
    ]
    head = (
        f":rotating_light: *Burst*: {len(items)} more alert(s) from {code(creator, 300)} in the window from "
        f"{end} UTC (more than {BURST_LIMIT} in {BURST_WINDOW_MINUTES} minutes). Every quarantine already "
        "happened; the users are listed here instead of one message each."
    )
    review = (
        "Review: `python -m chalicelib.cli audit --since " + window[:10] + "` or "
        "`python -m chalicelib.cli sweep --dry-run --accounts <account>`. "
        'Approve one: `POST /exceptions {"account": …, "user": …, "days": 7, "reason": …}` (IAM auth).'
    )
    sections = [head]
    for start in range(0, len(lines), LINES_PER_SECTION):
        sections.append("\n".join(lines[start : start + LINES_PER_SECTION]))
    sections.append(review)
    users = safe(", ".join(str(i.get("user", "")) for i in items), 2000)
    return notice(f"Burst from one creator: {len(items)} users", sections, fallback=f"Burst: {users}")


@dataclass
class FlushReport:
    rollups: int = 0
    rolled_up_users: int = 0
    resent: int = 0
    left: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Flusher:
    """Posts held roll-ups and resends the outbox, paced (the sleeper is injected for tests)."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        sinks: Mapping[str, Sink] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = utcnow,
        max_sends: int = MAX_SENDS,
    ) -> None:
        self._clock = clock
        self.store = store
        self.notifier = notifier
        self.sinks = sinks
        self._sleep = sleep
        self.max_sends = max_sends
        self._sent = 0

    def flush(self) -> FlushReport:
        report = FlushReport()
        self._sent = 0
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for item in self.store.query(ROLLUP_PK):
            groups.setdefault((item["window"], item["creator"]), []).append(item)
        stopped = False
        for (window, creator), group in sorted(groups.items()):
            for start in range(0, len(group), USERS_PER_ROLLUP):
                items = group[start : start + USERS_PER_ROLLUP]
                message = rollup_message(window, creator, items)
                if stopped or not self._send(lambda m=message: self.notifier.send(m), report):
                    stopped = True
                    report.left += len(items)
                    continue
                report.rollups += 1
                report.rolled_up_users += len(items)
                self._delete(ROLLUP_PK, [i["sk"] for i in items], report)
        stuck = 0
        for queued in list(self.store.query(OUTBOX_PK)):
            if stopped:
                report.left += 1
                stuck += _stuck(queued, self._clock())
                continue
            # an item names its destination (Slack, PagerDuty, the webhook): deliver_queued routes it
            if not self._send(lambda q=queued: deliver_queued(q, slack=self.notifier, sinks=self.sinks), report):
                stopped = not report.errors[-1].endswith("stored message is not JSON")
                report.left += 1
                stuck += _stuck(queued, self._clock())
                continue
            report.resent += 1
            self._delete(OUTBOX_PK, [queued["sk"]], report)
        observability.count(observability.ALERT_QUEUED, stuck)  # the alerts-stuck alarm reads it
        observability.flush()
        log.info(json.dumps({"msg": "alerts flushed", **report.to_dict()}))
        return report

    def _send(self, send: Callable[[], None], report: FlushReport) -> bool:
        if self._sent >= self.max_sends:
            return False
        if self._sent:
            self._sleep(PACE_SECONDS)  # one message a second per channel
        try:
            send()
        except AlertDeliveryError as exc:
            report.errors.append(str(exc))
            return False
        except ValueError:
            report.errors.append("stored message is not JSON")
            return False
        finally:
            self._sent += 1
        return True

    def _delete(self, pk: str, sort_keys: list[str], report: FlushReport) -> None:
        """Delete what was sent; a failure means a repeat next minute, never a loss."""
        for start in range(0, len(sort_keys), 100):
            chunk = sort_keys[start : start + 100]
            try:
                self.store.transact([{"Delete": {"TableName": self.store.table, "Key": _key(pk, sk)}} for sk in chunk])
            except StoreUnavailableError as exc:
                report.errors.append(f"sent but not removed from {pk}: {exc}")


def _stuck(item: Mapping[str, Any], now: datetime) -> int:
    """1 when an outbox item has waited longer than a flush interval (what the alarm counts)."""
    try:
        queued = parse_iso(str(item.get("first_failed_at") or item["sk"].split("#", 1)[0]))
    except (ValueError, KeyError):
        return 1
    return int(queued < now - STUCK_AFTER)


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}
