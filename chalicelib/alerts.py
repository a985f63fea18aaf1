"""What every alert sender promises, without importing a Slack client (the event path stays light)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class AlertDeliveryError(RuntimeError):
    """Slack did not accept the message (after retries)."""


class Notifier(Protocol):
    def send(self, message: Mapping[str, Any]) -> None: ...


class NullNotifier:
    """Used when no Slack destination is configured: every alert goes to the outbox."""

    def send(self, message: Mapping[str, Any]) -> None:
        raise AlertDeliveryError("no Slack destination configured (SLACK_WEBHOOK_URL or GUARDRAIL_SLACK_SECRET_ID)")
