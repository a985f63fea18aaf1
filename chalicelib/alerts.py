"""What every alert sender promises, without importing a Slack client (the event path stays light)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

#: The `sink` of an outbox item bound for Slack (also what an item without `sink` means).
SLACK_SINK: Final = "slack"


class AlertDeliveryError(RuntimeError):
    """The destination (Slack, PagerDuty, a webhook) did not accept the message (after retries)."""


class Notifier(Protocol):
    def send(self, message: Mapping[str, Any]) -> None: ...


class NullNotifier:
    """Used when no Slack destination is configured: every alert goes to the outbox."""

    def send(self, message: Mapping[str, Any]) -> None:
        raise AlertDeliveryError("no Slack destination configured (SLACK_WEBHOOK_URL or GUARDRAIL_SLACK_SECRET_ID)")


class AlertSink(Protocol):
    """A destination besides Slack (PagerDuty, a JSON webhook, Security Hub): sees every decision,
    `alerted` when Slack was sent (or queued) an alert for it; never raises."""

    def publish(self, event: Any, decision: Any, results: Sequence[Any], *, alerted: bool) -> None: ...


class Sink(Protocol):
    """A destination an outbox item can name (`sink`): PagerDuty, the JSON webhook."""

    name: str

    def send(self, payload: Mapping[str, Any]) -> None: ...


def deliver_queued(item: Mapping[str, Any], *, slack: Notifier, sinks: Mapping[str, Sink] | None = None) -> None:
    """Send one outbox item to the destination it names.

    Outbox items carry `message` (the JSON text of what to send) and `sink`: `slack` or absent for
    Slack (items written before sinks existed have none), or the name of another sink. Raises
    AlertDeliveryError (still undeliverable) or ValueError (the stored message is not JSON).
    """
    message = json.loads(item["message"])
    name = item.get("sink") or SLACK_SINK
    if name == SLACK_SINK:
        slack.send(message)
        return
    sink = (sinks or {}).get(name)
    if sink is None:
        raise AlertDeliveryError(f"the outbox names sink {name!r}, which is not configured")
    sink.send(message)
