"""Structured logs and CloudWatch metrics through AWS Lambda Powertools (Logger, Metrics with EMF).

Every module keeps `log = logging.getLogger(__name__)` and logs a short message with `extra=` fields.
`setup()` (once per Lambda container, from `runtime.get`) gives the `chalicelib` logger Powertools'
JSON formatter on stdout, so each record is one JSON line carrying the CloudTrail event id as
`correlation_id`. The operator CLI never calls it: its output stays readable and its stdout clean.

Metrics are counted here and written as one EMF blob per event, sweep or approval (`flush`):
namespace `IamUserGuardrail`, the single dimension `service` (never the account: dimensions are
kept low-cardinality so alarms and the dashboard address them). Powertools is imported only when
`setup` or `flush` run, so the CLI and the pure modules do not pay for it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from chalicelib.constants import ALERT, APPROVE, QUARANTINE, TAMPER_EVENTS

if TYPE_CHECKING:
    from chalicelib.guardrail import HandleResult

SERVICE: Final = "iam-user-guardrail"
NAMESPACE: Final = "IamUserGuardrail"
#: The logger every chalicelib module's logger propagates to.
PACKAGE_LOGGER: Final = "chalicelib"

QUARANTINED: Final = "Quarantined"
CREDENTIAL_UNDONE: Final = "CredentialUndone"
APPROVED: Final = "Approved"
TAMPER_REVERTED: Final = "TamperReverted"
ALERT_QUEUED: Final = "AlertQueued"
ALERT_DELIVERY_FAILED: Final = "AlertDeliveryFailed"
ACCOUNT_UNREACHABLE: Final = "AccountUnreachable"
SWEEP_FINDINGS: Final = "SweepFindings"
SECURITY_HUB_FAILED: Final = "SecurityHubImportFailed"
METRICS: Final = (
    QUARANTINED,
    CREDENTIAL_UNDONE,
    APPROVED,
    TAMPER_REVERTED,
    ALERT_QUEUED,
    ALERT_DELIVERY_FAILED,
    ACCOUNT_UNREACHABLE,
    SWEEP_FINDINGS,
    SECURITY_HUB_FAILED,
)
#: Decision steps that undo a credential (policy.DEACTIVATE_KEY, policy.DELETE_LOGIN_PROFILE).
_UNDO_STEPS: Final = frozenset({"deactivate_key", "delete_login_profile"})

log = logging.getLogger(__name__)
_lock = threading.Lock()
_pending: Counter[str] = Counter()
_logger: Any = None
_metrics: Any = None


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current `sys.stdout` (Lambda sends it to CloudWatch Logs; tests capture it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup() -> None:
    """Give the chalicelib loggers Powertools' JSON formatter (idempotent)."""
    global _logger
    with _lock:
        if _logger is not None:
            return
        from aws_lambda_powertools.logging.filters import SuppressFilter
        from aws_lambda_powertools.logging.logger import Logger

        _logger = Logger(service=SERVICE, logger_handler=_StdoutHandler(), utc=True)
        package = logging.getLogger(PACKAGE_LOGGER)
        package.addHandler(_logger.registered_handler)
        package.setLevel(_logger.log_level)
        # Lambda's runtime puts a plain-text handler on the root logger: keep our records out of it
        # (one line each), but not out of pytest's capture handler.
        for handler in logging.root.handlers:
            if type(handler).__module__ != "_pytest.logging":
                handler.addFilter(SuppressFilter(PACKAGE_LOGGER))


def correlate(event_id: str | None) -> None:
    """Every following log line carries `correlation_id` = this CloudTrail event id (None clears it)."""
    if _logger is not None:
        _logger.set_correlation_id(event_id or None)


def count(name: str, value: float = 1) -> None:
    """Add to a metric; written out by the next `flush`. A value of 0 still publishes the metric."""
    with _lock:
        _pending[name] += value


def flush() -> None:
    """Write the counted metrics as one EMF blob on stdout (nothing when none were counted)."""
    global _metrics
    with _lock:
        pending = dict(_pending)
        _pending.clear()
    if not pending:
        return
    try:
        from aws_lambda_powertools.metrics import Metrics, MetricUnit

        if _metrics is None:
            _metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
        for name, value in sorted(pending.items()):
            _metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        _metrics.flush_metrics()
    except Exception as exc:  # metrics must never break the guardrail
        log.error("metrics not written", extra={"error": f"{type(exc).__name__}: {exc}", "metrics": pending})


def decision_metrics(
    *, verdict: str, event_name: str, steps: Sequence[str], alert: str, statuses: Sequence[str]
) -> dict[str, int]:
    """The metrics one handled event counts (pure)."""
    counts: Counter[str] = Counter()
    if verdict == QUARANTINE:
        counts[QUARANTINED] += 1
    elif verdict == APPROVE:
        counts[APPROVED] += 1
    elif verdict == ALERT and event_name in TAMPER_EVENTS:
        counts[TAMPER_REVERTED] += 1
    elif verdict == ALERT and _UNDO_STEPS & set(steps):
        counts[CREDENTIAL_UNDONE] += 1
    if alert in ("queued", "lost"):
        counts[ALERT_DELIVERY_FAILED] += 1
    if "account_unreachable" in statuses:
        counts[ACCOUNT_UNREACHABLE] += 1
    return dict(counts)


def decision(result: HandleResult) -> None:
    """The one JSON line per decision, and its metrics."""
    fields: dict[str, Any] = result.to_dict()
    if result.decision is not None:
        fields["rule"] = result.decision.rule
        counted = decision_metrics(
            verdict=result.decision.verdict,
            event_name=result.event_name,
            steps=result.decision.steps,
            alert=result.alert,
            statuses=[r.status for r in result.results],
        )
        for name, value in counted.items():
            count(name, value)
    log.info("event handled", extra=_fields(fields), stacklevel=2)
    flush()


def _fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`extra=` keys must not collide with LogRecord's own attributes."""
    return {(f"{k}_" if k in _RESERVED else k): v for k, v in fields.items()}


_RESERVED: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
