"""Send alerts to Slack through slack_sdk: an incoming webhook or a bot token and channel.

Sending is a thin wrapper: it retries 429 (honouring Retry-After), 500/503 and connection errors a
bounded number of times, then raises `AlertDeliveryError`. It never logs the webhook URL or the
token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from chalicelib.alerts import AlertDeliveryError

log = logging.getLogger(__name__)
# slack_sdk logs request URLs at debug level; a webhook URL is a secret.
logging.getLogger("slack_sdk").setLevel(logging.WARNING)


def _retry_handlers(max_retries: int) -> list[RetryHandler]:
    return [
        RateLimitErrorRetryHandler(max_retry_count=max_retries),
        ServerErrorRetryHandler(max_retry_count=max_retries),
        ConnectionErrorRetryHandler(max_retry_count=max_retries),
    ]


class WebhookNotifier:
    """Posts to an incoming webhook (or a `response_url`)."""

    def __init__(self, url: str, *, timeout: float = 5.0, max_retries: int = 2) -> None:
        self._client = WebhookClient(url, timeout=timeout, retry_handlers=_retry_handlers(max_retries))  # type: ignore[arg-type]

    def send(self, message: Mapping[str, Any]) -> None:
        try:
            response = self._client.send_dict(dict(message))
        except Exception as exc:  # urllib raises many kinds; none may escape as a crash
            raise AlertDeliveryError(f"Slack webhook unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise AlertDeliveryError(f"Slack webhook answered HTTP {response.status_code}: {response.body[:100]!r}")


class BotNotifier:
    """Posts with a bot token to a channel (`chat.postMessage`)."""

    def __init__(
        self,
        token: str,
        channel: str,
        *,
        base_url: str = WebClient.BASE_URL,
        timeout: float = 5.0,
        max_retries: int = 2,
    ) -> None:
        self.channel = channel
        self.client = WebClient(
            token=token, base_url=base_url, timeout=int(max(timeout, 1)), retry_handlers=_retry_handlers(max_retries)
        )

    def send(self, message: Mapping[str, Any]) -> None:
        try:
            self.client.chat_postMessage(
                channel=self.channel, text=message.get("text", ""), blocks=message.get("blocks")
            )
        except SlackApiError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            error = exc.response.get("error") if exc.response is not None else ""
            raise AlertDeliveryError(f"chat.postMessage failed: HTTP {status} {error}") from None
        except Exception as exc:
            raise AlertDeliveryError(f"Slack API unreachable: {type(exc).__name__}") from None
