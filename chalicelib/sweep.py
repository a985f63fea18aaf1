"""The scheduled sweep: expire exceptions (quarantine again, tell Slack) and resend unsent alerts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.approvals import Approvals
from chalicelib.notify import AlertDeliveryError, Notifier
from chalicelib.slack_message import safe
from chalicelib.store import OUTBOX_PK, Store, StoreUnavailableError

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    expired: list[dict[str, Any]] = field(default_factory=list)
    resent: int = 0
    still_unsent: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "expired": [f"{e['account']}/{e['user']}: {e.get('state')}" for e in self.expired],
            "resent": self.resent,
            "still_unsent": self.still_unsent,
            "errors": self.errors,
        }


def expiry_notice(item: Mapping[str, Any]) -> dict[str, Any]:
    user, account = safe(str(item["user"]), 64), safe(str(item["account"]), 20)
    done = "; ".join(item.get("results", []))
    text = (
        f":hourglass: The exception of `{user}` in {account} (approved by {safe(str(item.get('approver', '')), 120)}) "
        f"expired at {item.get('expires_at', '')}: quarantined again. {safe(done, 1500)}"
    )
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Exception expired: user quarantined again"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
        ],
    }


def run_sweep(*, approvals: Approvals, store: Store, notifier: Notifier) -> SweepReport:
    report = SweepReport()
    report.expired = approvals.expire_due()
    for item in report.expired:
        message = expiry_notice(item)
        try:
            notifier.send(message)
        except AlertDeliveryError as exc:
            store.save_unsent_alert(f"expiry-{item['account']}-{item['user']}", message, str(exc))
    for queued in list(store.query(OUTBOX_PK)):
        try:
            notifier.send(json.loads(queued["message"]))
        except AlertDeliveryError as exc:
            report.still_unsent += 1
            report.errors.append(f"{queued['event_id']}: {exc}")
            continue
        except ValueError:
            report.errors.append(f"{queued['event_id']}: stored message is not JSON")
            continue
        try:
            store.delete(OUTBOX_PK, queued["sk"])
        except StoreUnavailableError as exc:  # sent but not deleted: a repeat next hour beats a loss
            report.errors.append(f"{queued['event_id']}: {exc}")
        report.resent += 1
    log.info(json.dumps({"msg": "sweep done", **report.to_dict()}))
    return report
