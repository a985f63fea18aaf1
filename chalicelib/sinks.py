"""Alert destinations besides Slack: PagerDuty Events API v2 and a generic JSON webhook.

Both post through one `requests.Session` whose adapter retries with urllib3's `Retry`: 429 and
5xx answers and connection errors, `Retry-After` honoured (capped at `RETRY_AFTER_MAX` seconds:
a Lambda cannot wait an hour), a connect and a read timeout on every attempt. What still fails is
queued in the table's outbox under the sink's name and resent by the sweep (`alerts.deliver_queued`).

The webhook gets every alert as the JSON object `alert_document` builds (README: "The alert
document"); PagerDuty gets a `trigger` for critical alerts and for actions the guardrail could not
carry out, deduplicated per account + user + rule, and a `resolve` when an approver closes the case.
Neither the routing key nor the webhook URL is ever logged or stored in the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from chalicelib import observability
from chalicelib.alerts import AlertDeliveryError, Sink
from chalicelib.constants import ALERT, CRITICAL, ENFORCE, HIGH, MONITOR, QUARANTINE
from chalicelib.events import IamEvent
from chalicelib.iam import DONE, FAILED, UNREACHABLE, ActionResult
from chalicelib.policy import Decision
from chalicelib.reconcile import QUARANTINE_USER
from chalicelib.settings import DEFAULT_PAGERDUTY_URL
from chalicelib.slack_message import clip, cloudtrail_url, iam_user_url
from chalicelib.store import EVENT_SK, Store, StoreUnavailableError, event_pk, iso, utcnow

if TYPE_CHECKING:
    from chalicelib.sweep import SweepReport

log = logging.getLogger(__name__)

PAGERDUTY: Final = "pagerduty"
WEBHOOK: Final = "webhook"
#: The `schema` field of every webhook document; bumped when a field changes meaning.
ALERT_SCHEMA: Final = "iam-user-guardrail/alert/v1"
RETRY_STATUSES: Final = (429, 500, 502, 503, 504)
#: The longest Retry-After the guardrail waits; a longer one is waited this long.
RETRY_AFTER_MAX: Final = 10.0
PAGERDUTY_SUMMARY_MAX: Final = 1024
PAGERDUTY_DEDUP_MAX: Final = 255


class CappedRetry(Retry):
    """urllib3's Retry, with Retry-After capped so a rate limit cannot hold the Lambda for long."""

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, RETRY_AFTER_MAX)


def dedup_key(account: str, user: str, rule: str) -> str:
    """One PagerDuty incident per account + user + rule (a repeat updates it)."""
    return f"iam-user-guardrail/{account}/{user or '-'}/{rule or 'alert'}"[:PAGERDUTY_DEDUP_MAX]


def alert_document(event: IamEvent, decision: Decision, results: Sequence[ActionResult] = ()) -> dict[str, Any]:
    """The webhook's JSON object for one alert (pure). Strings are raw: the receiver escapes them."""
    return {
        "schema": ALERT_SCHEMA,
        "severity": decision.severity,
        "verdict": decision.verdict,
        "rule": decision.rule,
        "mode": decision.mode,
        "account": event.account,
        "region": event.region,
        "user": event.target_user_name,
        "actor": event.actor.principal_arn or event.actor.display,
        "actor_type": event.actor.type,
        "reason": decision.reason,
        "event_id": event.event_id,
        "event_name": event.event_name,
        "event_time": event.event_time.isoformat(),
        "source_ip": event.source_ip,
        "access_key_id": event.access_key_id,
        "integration": decision.integration,
        "backdoor": decision.backdoor,
        "actions": [{"action": r.action, "target": r.target, "status": r.status, "detail": r.detail} for r in results],
        "links": {
            "cloudtrail": cloudtrail_url(event),
            **({"iam_user": iam_user_url(event.target_user_name)} if event.target_user_name else {}),
        },
    }


def finding_document(
    *,
    account: str,
    user: str,
    rule: str,
    severity: str,
    verdict: str,
    reason: str,
    actions: Sequence[Mapping[str, str]],
) -> dict[str, Any]:
    """The webhook's JSON object for what no CloudTrail event carries (a sweep finding the guardrail
    acted on, an exception that ended): the same fields, `event_*` empty, `actor` the guardrail."""
    return {
        "schema": ALERT_SCHEMA,
        "severity": severity,
        "verdict": verdict,
        "rule": rule,
        "mode": ENFORCE,
        "account": account,
        "region": "",
        "user": user,
        "actor": "iam-user-guardrail",
        "actor_type": "",
        "reason": reason,
        "event_id": "",
        "event_name": "",
        "event_time": iso(utcnow()),
        "source_ip": "",
        "access_key_id": "",
        "integration": "",
        "backdoor": False,
        "actions": [dict(a) for a in actions],
        "links": {"iam_user": iam_user_url(user)} if user else {},
    }


def page_severity(document: Mapping[str, Any]) -> str:
    """`critical` for a critical alert, `error` when an action could not be carried out, else ''."""
    if document.get("severity") == CRITICAL:
        return "critical"
    if any(a.get("status") in (FAILED, UNREACHABLE) for a in document.get("actions", ())):
        return "error"
    return ""


def pagerduty_trigger(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Events API v2 `trigger` for an alert that pages, without the routing key; else None."""
    severity = page_severity(document)
    if not severity:
        return None
    prefix = "[monitor] " if document.get("mode") == MONITOR else ""
    summary = (
        f"{prefix}IAM {document['verdict']}: {document['user'] or '(no user)'} in {document['account']}: "
        f"{document['reason']}"
    )
    return {
        "event_action": "trigger",
        "dedup_key": dedup_key(document["account"], document["user"], document["rule"]),
        "client": "iam-user-guardrail",
        "payload": {
            "summary": clip(summary, PAGERDUTY_SUMMARY_MAX),
            "source": f"aws-account-{document['account'] or 'unknown'}",
            "severity": severity,
            "timestamp": document["event_time"],
            "component": document["user"] or "account",
            "group": document["account"],
            "class": document["rule"],
            "custom_details": dict(document),
        },
        "links": [{"href": href, "text": name} for name, href in document.get("links", {}).items()],
    }


def pagerduty_resolve(account: str, user: str, rule: str) -> dict[str, Any]:
    return {"event_action": "resolve", "dedup_key": dedup_key(account, user, rule)}


class HttpPoster:
    """POSTs JSON through a session that retries 429/5xx/connection errors; raises AlertDeliveryError."""

    def __init__(self, name: str, *, timeout: float = 5.0, retries: int = 2, backoff: float = 0.5) -> None:
        self.name = name
        self._timeout = (min(timeout, 3.05), timeout)
        retry = CappedRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"POST"}),
            backoff_factor=backoff,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def post(self, url: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        try:
            response = self.session.post(url, json=body, headers=dict(headers or {}), timeout=self._timeout)
        except requests.RequestException as exc:  # the URL may hold a secret: name only the error
            raise AlertDeliveryError(f"{self.name} unreachable: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise AlertDeliveryError(f"{self.name} answered HTTP {response.status_code}")


class PagerDutySink:
    """Events API v2; the routing key is added at send time, never queued."""

    name = PAGERDUTY

    def __init__(self, poster: HttpPoster, routing_key: Callable[[], str], url: str = DEFAULT_PAGERDUTY_URL) -> None:
        self._poster = poster
        self._routing_key = routing_key
        self.url = url

    def payload(self, document: Mapping[str, Any]) -> dict[str, Any] | None:
        return pagerduty_trigger(document)

    def send(self, payload: Mapping[str, Any]) -> None:
        self._poster.post(self.url, {**payload, "routing_key": self._routing_key()})


class WebhookSink:
    """Every alert document, POSTed as JSON (with `Authorization: Bearer` when a token is set)."""

    name = WEBHOOK

    def __init__(self, poster: HttpPoster, url: Callable[[], str], token: Callable[[], str] = lambda: "") -> None:
        self._poster = poster
        self._url = url
        self._token = token

    def payload(self, document: Mapping[str, Any]) -> dict[str, Any] | None:
        return dict(document)

    def send(self, payload: Mapping[str, Any]) -> None:
        token = self._token()
        self._poster.post(self._url(), payload, {"Authorization": f"Bearer {token}"} if token else None)


class Fanout:
    """The guardrail's `AlertSink` for PagerDuty and the webhook: deliver, or queue in the outbox."""

    def __init__(self, sinks: Mapping[str, PagerDutySink | WebhookSink], store: Store) -> None:
        self.sinks = sinks
        self.store = store

    def publish(self, event: IamEvent, decision: Decision, results: Sequence[ActionResult], *, alerted: bool) -> None:
        if alerted:
            self._publish(alert_document(event, decision, results), event.event_id)

    def resolve(self, account: str, user: str, rule: str) -> None:
        """Close the PagerDuty incident of a case an approver decided."""
        sink = self.sinks.get(PAGERDUTY)
        if sink is not None and rule:
            self.deliver(sink, pagerduty_resolve(account, user, rule), f"resolve-{account}-{user}")

    def case_closed(self, account: str, user: str, *, how: str, case_event_id: str = "") -> None:
        """An approver decided the case (granted or kept quarantined): resolve its incident."""
        if PAGERDUTY not in self.sinks or not case_event_id:
            return
        case = self.store.get(event_pk(case_event_id), EVENT_SK) or {}
        if case.get("account") == account and case.get("user") == user:
            self.resolve(account, user, str(case.get("rule", "")))

    def case_reopened(self, account: str, user: str, *, why: str, state: str) -> None:
        """An exception ended (revoked, expired): the user is quarantined again (high: not paged)."""
        document = finding_document(
            account=account,
            user=user,
            rule=f"exception_{state}",
            severity=HIGH,
            verdict=QUARANTINE,
            reason=f"the exception of {user} in {account} ended ({why}): quarantined again",
            actions=[],
        )
        self._publish(document, f"{state}-{account}-{user}")

    def sweep(self, report: SweepReport) -> None:
        """Each sweep finding the guardrail acted on, as one document (the webhook gets every alert)."""
        for row in report.findings:
            if not (row.action and row.result):
                continue
            document = finding_document(
                account=row.account,
                user=row.user,
                rule=f"sweep_{row.finding}",
                severity=row.severity,
                verdict=QUARANTINE if row.action == QUARANTINE_USER else ALERT,
                reason=row.detail,
                actions=[
                    {
                        "action": row.action,
                        "target": row.user,
                        "status": DONE if row.result == "done" else FAILED,
                        "detail": "" if row.result == "done" else row.result,
                    }
                ],
            )
            self._publish(document, f"sweep-{row.account}-{row.user}-{row.finding}")

    def _publish(self, document: Mapping[str, Any], key: str) -> None:
        try:
            for sink in self.sinks.values():
                payload = sink.payload(document)
                if payload is not None:
                    self.deliver(sink, payload, key)
        except Exception:  # never raises into an approval or the sweep
            log.exception("alert sinks failed", extra={"event_id": key})
            observability.count(observability.ALERT_DELIVERY_FAILED)

    def deliver(self, sink: Sink, payload: Mapping[str, Any], key: str) -> None:
        try:
            sink.send(payload)
            return
        except AlertDeliveryError as exc:
            error = str(exc)
        log.error("alert not delivered; queued", extra={"sink": sink.name, "event_id": key, "error": error})
        observability.count(observability.ALERT_DELIVERY_FAILED)
        try:
            self.store.save_unsent_alert(key, payload, error, sink=sink.name)
        except StoreUnavailableError:
            log.critical("alert could not be queued", extra={"sink": sink.name, "alert_message": dict(payload)})
