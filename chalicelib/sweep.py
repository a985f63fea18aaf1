"""The scheduled sweep: nothing slips through a missed event.

Each run (hourly): expire exceptions, reconcile every IAM user of the account with the allowlist,
the exceptions and the guardrail's records (acting as if the missed events had been seen), resend
alerts left in the outbox, and once a day post a digest of the findings.

AWS reads are bulk: GetAccountAuthorizationDetails (1,000 users a page), one credential report,
one Query each for the guardrail's user records and exceptions. Writes happen only for what the
sweep decides to change.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import observability
from chalicelib.alerts import AlertDeliveryError, Notifier, Sink, deliver_queued
from chalicelib.allowlist import Allowlist
from chalicelib.approvals import Approvals
from chalicelib.constants import (
    ACCESS_KEY,
    CRITICAL,
    ENFORCE,
    SIGNING_CERTIFICATE,
    STATUS_APPROVED,
    STATUS_QUARANTINED,
    TAG_REASON,
    TAG_STATUS,
)
from chalicelib.iam import CREDENTIAL_APIS, DONE, FAILED, GONE, INTACT, AccountAccessError, ActionResult, IamActions
from chalicelib.policy import RESTORE_QUARANTINE_POLICY, parse_credential_ref
from chalicelib.reconcile import (
    DEACTIVATE_EXTRA_KEYS,
    DEACTIVATE_RECORDED,
    DELETE_LOGIN_PROFILE,
    QUARANTINE_USER,
    TAG,
    AccountUser,
    Finding,
    account_users,
    owned_record,
    parse_credential_report,
    reconcile,
    unrecorded_credentials,
)
from chalicelib.slack_message import code, notice, quoted, safe
from chalicelib.store import (
    EVENT_SK,
    EXCEPTION_PK,
    META_PK,
    OUTBOX_PK,
    USER_PK,
    Store,
    StoreUnavailableError,
    event_pk,
    exception_from_item,
    is_active_exception,
    iso,
    parse_iso,
    user_sk,
    utcnow,
)

log = logging.getLogger(__name__)

#: An alert still unsent this long after it was first queued counts as stuck (metric AlertQueued).
OUTBOX_STUCK_AFTER = timedelta(minutes=1)
DIGEST_SK = "DIGEST"
#: The finding of an account whose quarantine policy's default version is not deny-all.
POLICY_TAMPERED = "quarantine_policy_tampered"


@dataclass
class Row:
    account: str
    user: str
    status: str
    finding: str = ""
    severity: str = ""
    detail: str = ""
    owner: str = ""
    action: str = ""
    result: str = ""

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class SweepReport:
    users: int = 0
    rows: list[Row] = field(default_factory=list)
    expired: list[dict[str, Any]] = field(default_factory=list)
    resent: int = 0
    still_unsent: int = 0
    digest_sent: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Row]:
        return [r for r in self.rows if r.finding]

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "findings": [r.to_dict() for r in self.findings],
            "statuses": dict(Counter({(r.account, r.user): r.status for r in self.rows}.values())),
            "expired": [f"{e['account']}/{e['user']}: {e.get('state')}" for e in self.expired],
            "resent": self.resent,
            "still_unsent": self.still_unsent,
            "digest_sent": self.digest_sent,
            "errors": self.errors,
        }


class Reconciler:
    """Reconcile one account's IAM users; act on findings in enforce mode unless dry-run."""

    def __init__(
        self,
        *,
        iam: IamActions,
        store: Store,
        allowlist: Allowlist,
        mode: str,
        dry_run: bool = False,
        clock: Callable[[], datetime] = utcnow,
        account: str = "",
    ) -> None:
        self.account = account
        self.iam = iam
        self.store = store
        self.allowlist = allowlist
        self.act = mode == ENFORCE and not dry_run
        self._clock = clock

    def run(self, report: SweepReport) -> None:
        self._check_quarantine_policy(report)
        now = self._clock()
        users = account_users(self.iam.user_details(), parse_credential_report(self.iam.credential_report()))
        items = list(self.store.query(USER_PK))
        # Records follow the user id: a renamed user keeps its record, a re-created name starts afresh.
        by_id = {item["user_id"]: item for item in items if item.get("user_id")}
        by_name = {item["sk"]: item for item in items}
        exceptions = {
            item["sk"]: exception_from_item(item)
            for item in self.store.query(EXCEPTION_PK)
            if is_active_exception(item)
        }
        report.users += len(users)
        since = self.store.watching_since(self.account) if self.account and users else None
        for user in users:
            key = user_sk(user.account, user.name)
            record = owned_record(user, by_id.get(user.user_id) or by_name.get(key))
            verdict = reconcile(
                user,
                allowlist=self.allowlist,
                policy_arn=self.iam.quarantine_policy_arn(user.account),
                now=now,
                exception=exceptions.get(key),
                record=record,
                active_refs=self._recorded_still_active(user, record, report),
                watching_since=since,
            )
            if verdict.status == STATUS_APPROVED:
                verdict = replace(
                    verdict, findings=(*verdict.findings, *self._unrecorded(user, record, verdict.integration, report))
                )
            if not verdict.findings:
                report.rows.append(Row(user.account, user.name, verdict.status))
            quarantined = False
            for finding in verdict.findings:
                row = Row(
                    user.account,
                    user.name,
                    verdict.status,
                    finding.kind,
                    finding.severity,
                    finding.detail,
                    finding.owner,
                    finding.action,
                )
                if finding.action and self.act and not (quarantined and finding.action == QUARANTINE_USER):
                    row.result = self._apply(user, finding)
                    quarantined = quarantined or finding.action == QUARANTINE_USER
                elif finding.action:
                    row.result = "not done (dry run or monitor mode)"
                report.rows.append(row)

    def _check_quarantine_policy(self, report: SweepReport) -> None:
        """Before users are judged: the policy that quarantines them must deny everything (2 reads)."""
        if not self.account:
            report.errors.append("the quarantine policy was not checked: the account is unknown")
            return
        result = self.iam.check_quarantine_policy(self.account, restore=self.act)
        if result.status == INTACT:
            return
        if result.status == FAILED:
            report.errors.append(f"{self.account}: quarantine policy: {result.describe()}")
            return
        row = Row(
            self.account,
            self.iam.policy_name,
            "quarantine_policy",
            POLICY_TAMPERED,
            CRITICAL,
            f"{result.target}: {result.detail}",
            action=RESTORE_QUARANTINE_POLICY,
            result="done" if result.status == DONE else "not done (dry run or monitor mode)",
        )
        report.rows.append(row)
        try:
            self.store.append_audit(
                {
                    "kind": f"sweep_{RESTORE_QUARANTINE_POLICY}",
                    "account": self.account,
                    "by": "sweep",
                    "reason": row.detail,
                    "results": [result.describe()],
                }
            )
        except StoreUnavailableError as exc:
            log.error("sweep could not record the quarantine policy check: %s", exc)

    def _unrecorded(
        self, user: AccountUser, record: Mapping[str, Any], integration: str, report: SweepReport
    ) -> list[Finding]:
        """An approved user's other credential kinds (SSH keys, service-specific credentials, signing
        certificates), listed for approved users only: they are few, and the bulk reads carry none."""
        if not record.get("seen_at"):
            return []  # never watched: nothing it holds can have been made behind the guardrail's back
        errors: list[str] = []
        kinds = [kind for kind in CREDENTIAL_APIS if kind != ACCESS_KEY]
        if not user.signing_certificates_active:  # the credential report says so at no cost
            kinds.remove(SIGNING_CERTIFICATE)
        listed = self.iam.credentials(user.name, kinds, errors=errors)
        report.errors += [f"{user.account}/{user.name}: {e}" for e in errors]
        owner = next((i.owner for i in self.allowlist.integrations if i.name == integration), "")
        return unrecorded_credentials(user, record, [(c.ref, c.created) for c in listed if c.active], owner)

    def _recorded_still_active(
        self, user: AccountUser, record: Mapping[str, Any], report: SweepReport
    ) -> frozenset[str]:
        """Which credentials the record lists as deactivated are active now (listed only for users
        whose record lists some: the bulk reads carry no credential ids)."""
        recorded = set(record.get("deactivated_keys", ()))
        kinds = {parse_credential_ref(ref)[0] for ref in recorded}
        if not recorded or (kinds == {ACCESS_KEY} and not user.active_keys):
            return frozenset()
        errors: list[str] = []
        active = {c.ref for c in self.iam.credentials(user.name, sorted(kinds), errors=errors) if c.active}
        report.errors += [f"{user.account}/{user.name}: {e}" for e in errors]
        return frozenset(active & recorded)

    def _apply(self, account_user: AccountUser, finding: Finding) -> str:
        account, user = account_user.account, finding.user
        deactivated: list[str] = []
        update: dict[str, Any] = {"user_id": account_user.user_id} if account_user.user_id else {}
        case: dict[str, Any] | None = None
        if finding.action == QUARANTINE_USER:
            results: list[ActionResult] = []
            errors: list[str] = []
            for credential in self.iam.credentials(user, errors=errors):
                if credential.active:
                    results.append(self.iam.set_credential_status(user, credential.kind, credential.id, "Inactive"))
                    deactivated.append(credential.ref)
            results += [ActionResult("list_credentials", user, "failed", e) for e in errors]
            results.append(self.iam.attach_quarantine(user, account))
            tags = [(TAG_STATUS, STATUS_QUARANTINED), (TAG_REASON, f"sweep: {finding.detail}")]
            results.append(self.iam.tag_user(user, tags))
            case_id = f"sweep-{uuid.uuid4().hex}"
            update |= {"status": STATUS_QUARANTINED, "reason": finding.detail, "tags": dict(tags)}
            update["quarantine_event_id"] = case_id
            case = {"pk": event_pk(case_id), "sk": EVENT_SK, "account": account, "user": user, "at": iso(self._clock())}
            case |= {"verdict": "quarantine", "actor": "sweep", "user_id": account_user.user_id}
        elif finding.action == DEACTIVATE_RECORDED:
            results = []
            for ref in finding.credentials:
                results.append(self.iam.set_credential_status(user, *parse_credential_ref(ref), "Inactive"))
                deactivated.append(ref)
        elif finding.action == TAG:
            results = [self.iam.tag_user(user, finding.tags)]
            update |= {"status": STATUS_APPROVED, "tags": dict(finding.tags)}
        elif finding.action == DEACTIVATE_EXTRA_KEYS:
            active = self.iam.active_keys(user)  # oldest first
            approved = [k for k in active if k in finding.credentials]
            extra = (approved + [k for k in active if k not in approved])[finding.keep_keys :]
            results = [self.iam.set_key_status(user, key, "Inactive") for key in extra]
            deactivated = list(extra)
        elif finding.action == DELETE_LOGIN_PROFILE:
            results = [self.iam.delete_login_profile(user)]
        else:  # pragma: no cover - reconcile defines every action
            raise ValueError(finding.action)
        deactivated = [k for k, r in zip(deactivated, results, strict=False) if r.status == DONE]
        if case is not None:
            case["deactivated"] = deactivated
        done = [r for r in results if r.status in (DONE, GONE)]
        audit = {
            "kind": f"sweep_{finding.action}",
            "account": account,
            "user": user,
            "by": "sweep",
            "reason": finding.detail,
            "results": [r.describe() for r in results],
        }
        writes = [
            self.store.audit_op(audit),
            {"Update": self.store.user_update(account, user, update, add_keys=tuple(deactivated))},
        ]
        if case is not None:  # what an approval of this quarantine gives back
            writes.append(self.store.put_op(case))
        try:
            self.store.transact(writes)
        except StoreUnavailableError as exc:
            log.error("sweep could not record %s for %s: %s", finding.action, user, exc)
        return "done" if len(done) == len(results) else "; ".join(r.describe() for r in results if r not in done)


def expiry_notice(item: Mapping[str, Any]) -> dict[str, Any]:
    user, account = code(str(item["user"]), 130), safe(str(item["account"]), 20)
    done = "; ".join(str(result) for result in item.get("results", []))
    approver, expired = safe(str(item.get("approver", "")), 120), safe(str(item.get("expires_at", "")), 40)
    text = (
        f":hourglass: The exception of {user} in {account} (approved by {approver}) "
        f"expired at {expired}: quarantined again. {safe(done, 1500)}"
    )
    return notice("Exception expired: user quarantined again", [text])


def findings_message(rows: list[Row], title: str, limit: int = 40) -> dict[str, Any]:
    """A Slack summary of sweep findings: counts, then one line per finding (owner to contact)."""
    counts = Counter(r.finding for r in rows)
    summary = safe(", ".join(f"{n} {kind}" for kind, n in counts.most_common()), 1000)
    lines = [
        f"• {code(r.user, 130)} ({safe(r.account, 12)}) *{safe(r.finding, 40)}*: {quoted(r.detail, (r.user,), 200)}"
        + (f" → {safe(r.result or r.action, 120)}" if r.action else "")
        + (f" — owner {safe(r.owner, 80)}" if r.owner else "")
        for r in rows[:limit]
    ]
    if len(rows) > limit:
        lines.append(f"… and {len(rows) - limit} more (`python -m chalicelib.cli sweep --dry-run`)")
    sections = [summary or "no findings"]
    chunk: list[str] = []
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > 2900:
            sections.append("\n".join(chunk))
            chunk = []
        chunk.append(line)
    sections.append("\n".join(chunk))
    return notice(title, sections, fallback=f"{title}: {summary or 'no findings'}")


def policy_tampered_message(rows: list[Row]) -> dict[str, Any]:
    """Critical: a quarantine policy that does not deny everything releases every quarantined user."""
    lines = [
        f":rotating_light: *CRITICAL* The quarantine policy of {safe(r.account, 12)} was not deny-all: "
        f"{safe(r.detail, 600)} → {safe(r.result, 120)}"
        for r in rows
    ]
    lines.append(
        "No event told the guardrail (a lost or filtered event): find who changed the policy in CloudTrail "
        "(CreatePolicyVersion, SetDefaultPolicyVersion)."
    )
    return notice("Quarantine policy tampered", ["\n".join(lines)])


def sweep_errors_message(errors: list[str]) -> dict[str, Any]:
    text = ":x: The sweep could not check everything:\n" + "\n".join(f"• {safe(e, 300)}" for e in errors[:20])
    return notice("Sweep incomplete", [text])


def run_sweep(
    *,
    approvals: Approvals,
    store: Store,
    notifier: Notifier,
    reconcilers: Iterable[Callable[[], Reconciler]] = (),
    clock: Callable[[], datetime] = utcnow,
    sinks: Mapping[str, Sink] | None = None,
    observers: Iterable[Callable[[SweepReport], None]] = (),
) -> SweepReport:
    """`reconcilers` build one Reconciler per account (building one may fail: the account is reported).

    `sinks` are the destinations besides Slack that outbox items may name; `observers` see the
    report once every account is reconciled (Security Hub imports the hygiene findings).
    """
    report = SweepReport()
    report.expired = approvals.expire_due()
    for item in report.expired:
        _deliver(store, notifier, f"expiry-{item['account']}-{item['user']}", expiry_notice(item))
    for build in reconcilers:
        try:
            build().run(report)
        except Exception as exc:  # the other accounts, the outbox and the digest still run
            log.exception("reconciliation failed")
            if isinstance(exc, AccountAccessError):
                observability.count(observability.ACCOUNT_UNREACHABLE)
            report.errors.append(f"reconciliation failed: {type(exc).__name__}: {exc}")
    if report.errors:
        _deliver(store, notifier, f"sweep-errors-{clock():%Y%m%dT%H%M}", sweep_errors_message(report.errors))
    tampered = [r for r in report.findings if r.finding == POLICY_TAMPERED]
    if tampered:
        _deliver(store, notifier, f"policy-tampered-{clock():%Y%m%dT%H%M}", policy_tampered_message(tampered))
    if reconcilers:
        acted = [r for r in report.findings if r.result == "done" and r.finding != POLICY_TAMPERED]
        if acted:
            message = findings_message(acted, "Sweep: the guardrail acted on missed changes")
            _deliver(store, notifier, f"sweep-{clock():%Y%m%dT%H%M}", message)
        report.digest_sent = _daily_digest(store, notifier, report, clock())
        for observe in observers:
            observe(report)
    _resend_outbox(store, notifier, report, sinks, clock())
    log.info("sweep done", extra=report.to_dict())
    observability.count(observability.SWEEP_FINDINGS, len(report.findings))
    observability.flush()
    return report


def _daily_digest(store: Store, notifier: Notifier, report: SweepReport, now: datetime) -> bool:
    """Post the findings once per UTC day (a conditional write keeps it to one)."""
    today = now.strftime("%Y-%m-%d")
    if not report.findings:
        return False
    claimed = store.put(
        {"pk": META_PK, "sk": DIGEST_SK, "day": today},
        condition="attribute_not_exists(pk) OR #day <> :day",
        values={"day": today},
        names={"#day": "day"},
    )
    if not claimed:
        return False
    _deliver(store, notifier, f"digest-{today}", findings_message(report.findings, f"Daily IAM user digest {today}"))
    return True


def _deliver(store: Store, notifier: Notifier, key: str, message: dict[str, Any]) -> None:
    try:
        notifier.send(message)
    except AlertDeliveryError as exc:
        store.save_unsent_alert(key, message, str(exc))


def _resend_outbox(
    store: Store, notifier: Notifier, report: SweepReport, sinks: Mapping[str, Sink] | None, now: datetime
) -> None:
    stuck = 0
    for queued in list(store.query(OUTBOX_PK)):
        try:
            deliver_queued(queued, slack=notifier, sinks=sinks)
        except AlertDeliveryError as exc:
            report.still_unsent += 1
            stuck += _queued_at(queued) < now - OUTBOX_STUCK_AFTER
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
    observability.count(observability.ALERT_QUEUED, stuck)  # 0 too: the alarm needs data points


def _queued_at(item: Mapping[str, Any]) -> datetime:
    """When an outbox item was first queued (its sort key starts with that time)."""
    try:
        return parse_iso(str(item.get("first_failed_at") or item["sk"].split("#", 1)[0]))
    except (ValueError, KeyError):
        return datetime.min.replace(tzinfo=UTC)  # unknown: count it as stuck
