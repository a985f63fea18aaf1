"""The sweep at organization scale: one account per unit of work, fanned out through SQS.

- `schedule_sweep` (the hourly `sweep` function when `GUARDRAIL_SWEEP_QUEUE` is set) expires
  exceptions, lists the accounts, sends one SQS message per account (`SendMessageBatch`, 10 a
  call) and posts the daily digest assembled from the per-account results stored in the table.
- `handle_messages` (the `sweep_worker` function, SQS event source) sweeps one account per message
  and reports the messages it could not handle as batch item failures: SQS makes only those
  visible again, and after `maxReceiveCount` receives moves them to the dead-letter queue.
- `sweep_accounts` runs the same per-account sweep in one process for an operator, optionally on
  threads (`python -m chalicelib.cli sweep --concurrency 8`); Lambda never uses threads.

`AccountSweep` is the unit: reconcile the account's users (`sweep.Reconciler`, unchanged), check
that a member account is not silent (`silence.py`), store the result under `ACCOUNT`/`<id>`, and
alert when a new reason for silence appears.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from chalicelib.alerts import Notifier
from chalicelib.constants import ACCOUNT_ROW, CRITICAL
from chalicelib.iam import AccountAccessError
from chalicelib.silence import ACCOUNT_PK, UNREACHABLE, Problem, SilenceCheck, silence_alert
from chalicelib.store import Store, StoreUnavailableError, iso, utcnow
from chalicelib.sweep import (
    Row,
    SweepReport,
    _daily_digest,
    _deliver,
    expiry_notice,
    findings_message,
    sweep_errors_message,
)

if TYPE_CHECKING:
    from chalicelib.approvals import Approvals
    from chalicelib.sweep import Reconciler

log = logging.getLogger(__name__)

SQS_BATCH: Final = 10
#: Findings kept per account in its stored result (the digest lists at most 40 anyway).
STORED_FINDINGS: Final = 200
_ACCOUNT_RE = re.compile(r"^\d{12}$")


class SweepMessageError(ValueError):
    """An SQS message that does not name one account (a poison message)."""


class AccountSweep:
    """Sweep one account: reconcile, check for silence, store the result, alert on new silence."""

    def __init__(
        self,
        *,
        account: str,
        reconciler: Callable[[], Reconciler],
        silence: Callable[[], SilenceCheck] | None,
        store: Store,
        notifier: Notifier | None,
        dry_run: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.account = account
        self._reconciler = reconciler
        self._silence = silence
        self.store = store
        self.notifier = notifier
        self.dry_run = dry_run
        self._clock = clock

    def run(self, report: SweepReport) -> None:
        now = self._clock()
        previous = self.store.get(ACCOUNT_PK, self.account) or {}
        first_row, users_before = len(report.rows), report.users
        problems: list[Problem] = []
        values: dict[str, Any] = {}
        try:
            reconciler = self._reconciler()
            check = self._silence() if self._silence else None
        except AccountAccessError as exc:
            problems.append(Problem(UNREACHABLE, CRITICAL, str(exc)))
        else:
            reconciler.run(report)
            if check is not None:
                found, values = check.run(previous, send_heartbeat=not self.dry_run)
                problems += found
        for problem in problems:
            row = Row(self.account, ACCOUNT_ROW, "account", problem.kind, problem.severity, problem.detail)
            report.rows.append(row)
        if self.dry_run:
            return
        findings = [r.to_dict() for r in report.rows[first_row:] if r.finding][:STORED_FINDINGS]
        result = {
            **values,
            "swept_at": iso(now),
            "users": report.users - users_before,
            "findings": json.dumps(findings, separators=(",", ":")),
            "problems": sorted({p.kind for p in problems}),
        }
        try:
            self.store.transact([self.store.update_op(ACCOUNT_PK, self.account, result)])
        except StoreUnavailableError as exc:
            report.errors.append(f"{self.account}: result not stored: {exc}")
        new = {p.kind for p in problems} - set(previous.get("problems", []))
        if new and self.notifier is not None:
            key = f"silence-{self.account}-{now:%Y%m%dT%H%M}"
            _deliver(self.store, self.notifier, key, silence_alert(self.account, problems))


# -- SQS -------------------------------------------------------------------------------------------


class SweepQueue:
    """Sends sweep messages to the queue named by `GUARDRAIL_SWEEP_QUEUE`."""

    def __init__(self, client: Any, name: str) -> None:
        self._sqs = client
        self.name = name
        self._url = ""

    @property
    def url(self) -> str:
        if not self._url:
            self._url = self._sqs.get_queue_url(QueueName=self.name)["QueueUrl"]
        return self._url

    def send(self, accounts: Sequence[str], run: str) -> tuple[int, list[str]]:
        """One message per account, 10 a call; entries SQS refuses are retried once. (sent, errors)"""
        sent, errors = 0, []
        for start in range(0, len(accounts), SQS_BATCH):
            entries = [
                {"Id": str(i), "MessageBody": sweep_message(account, run)}
                for i, account in enumerate(accounts[start : start + SQS_BATCH])
            ]
            for attempt in range(2):
                reply = self._sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
                sent += len(reply.get("Successful", []))
                failed = {f["Id"]: f for f in reply.get("Failed", [])}
                entries = [e for e in entries if e["Id"] in failed]
                if not entries:
                    break
                if attempt == 1:
                    for entry in entries:
                        account = json.loads(entry["MessageBody"])["account"]
                        errors.append(f"{account}: not queued ({failed[entry['Id']].get('Code')})")
        return sent, errors


def sweep_message(account: str, run: str) -> str:
    return json.dumps({"account": account, "run": run}, separators=(",", ":"))


def parse_sweep_message(body: Any) -> str:
    """The account a message names; SweepMessageError for anything else."""
    try:
        data = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        data = None
    account = data.get("account") if isinstance(data, Mapping) else None
    if not isinstance(account, str) or not _ACCOUNT_RE.match(account):  # a number would lose leading zeros
        raise SweepMessageError(f"not a sweep message: {str(body)[:80]!r}")
    return account


def handle_messages(records: Iterable[Mapping[str, Any]], sweep_one: Callable[[str], Any]) -> dict[str, Any]:
    """Sweep the account of each message; the ones that fail are reported, the rest still run."""
    failures = []
    for record in records:
        message_id = str(record.get("messageId", ""))
        try:
            sweep_one(parse_sweep_message(record.get("body")))
        except Exception as exc:  # a poison message or one account's failure must not fail the batch
            log.error(json.dumps({"msg": "sweep message failed", "message_id": message_id, "error": repr(exc)[:300]}))
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


# -- the scheduler and the operator's run ------------------------------------------------------------


@dataclass
class ScheduleReport:
    accounts: int = 0
    enqueued: int = 0
    discovered: bool = False
    expired: list[str] = field(default_factory=list)
    digest_sent: bool = False
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def schedule_sweep(
    *,
    approvals: Approvals,
    store: Store,
    notifier: Notifier,
    queue: SweepQueue,
    accounts: Sequence[str],
    discovered: bool = False,
    errors: Sequence[str] = (),
    clock: Callable[[], datetime] = utcnow,
) -> ScheduleReport:
    """The hourly scheduler: expire exceptions, enqueue every account, post the daily digest."""
    now = clock()
    report = ScheduleReport(accounts=len(accounts), discovered=discovered, errors=list(errors))
    for item in approvals.expire_due():
        report.expired.append(f"{item['account']}/{item['user']}: {item.get('state')}")
        _deliver(store, notifier, f"expiry-{item['account']}-{item['user']}", expiry_notice(item))
    try:
        report.enqueued, failed = queue.send(list(accounts), iso(now))
        report.errors += failed
    except Exception as exc:  # the digest and the error notice still go out
        report.errors.append(f"accounts not queued: {type(exc).__name__}: {exc}")
    digest = SweepReport(rows=stored_findings(store))
    report.digest_sent = _daily_digest(store, notifier, digest, now)
    if report.errors:
        _deliver(store, notifier, f"sweep-errors-{now:%Y%m%dT%H%M}", sweep_errors_message(report.errors))
    log.info(json.dumps({"msg": "sweep scheduled", **report.to_dict()}))
    return report


def stored_findings(store: Store) -> list[Row]:
    """Every account's latest findings, from the results the workers stored."""
    rows = []
    for item in store.query(ACCOUNT_PK):
        try:
            rows += [Row(**row) for row in json.loads(item.get("findings") or "[]")]
        except (ValueError, TypeError):
            log.error("stored result of %s is unreadable", item.get("sk"))
    return rows


def worker_sweep(
    sweep: AccountSweep, store: Store, notifier: Notifier, clock: Callable[[], datetime] = utcnow
) -> SweepReport:
    """What the worker does for one message: the account's sweep, then its own notices."""
    report = SweepReport()
    sweep.run(report)
    stamp = f"{sweep.account}-{clock():%Y%m%dT%H%M}"
    acted = [r for r in report.findings if r.result == "done"]
    if acted:
        message = findings_message(acted, f"Sweep of {sweep.account}: the guardrail acted on missed changes")
        _deliver(store, notifier, f"sweep-{stamp}", message)
    if report.errors:
        _deliver(store, notifier, f"sweep-errors-{stamp}", sweep_errors_message(report.errors))
    return report


def sweep_accounts(
    accounts: Sequence[str], build: Callable[[str], AccountSweep], *, concurrency: int = 1
) -> SweepReport:
    """Sweep `accounts` in this process (threads when concurrency > 1); one report, in account order."""

    def one(account: str) -> SweepReport:
        report = SweepReport()
        try:
            build(account).run(report)
        except Exception as exc:  # the other accounts still run
            log.exception("sweep of %s failed", account)
            report.errors.append(f"{account}: {type(exc).__name__}: {exc}")
        return report

    if concurrency > 1:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sweep") as pool:
            parts = list(pool.map(one, accounts))
    else:
        parts = [one(account) for account in accounts]
    merged = SweepReport()
    for part in parts:
        merged.users += part.users
        merged.rows += part.rows
        merged.errors += part.errors
    return merged
