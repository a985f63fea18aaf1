"""AWS Security Hub: every quarantine, undone credential, tamper and sweep hygiene finding as ASFF.

Findings go to the home account's hub through its default product
(`arn:aws:securityhub:<region>:<home>:product/<home>/default`). BatchImportFindings only accepts a
finding whose `AwsAccountId` is the caller's own account when the default product is used, so
`AwsAccountId` is the home account; the account the user lives in is in the resource ARN and in
`ProductFields`.

The finding `Id` is stable per account + user + rule (`iam-user-guardrail/<account>/<user>/<rule>`),
so a repeat updates the finding instead of adding one. When the case ends (exception granted, user
deleted) the finding is imported again with `RecordState: ARCHIVED`; a finding that is archived when
first imported (the user was already gone) also carries `Workflow: RESOLVED`, which Security Hub
only accepts on new findings. A disabled or throttling hub is logged and counted
(`SecurityHubImportFailed`); it never blocks or fails the guardrail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import observability
from chalicelib.constants import ALERT, CRITICAL, DELETE_USER, HIGH, INFO, MONITOR, QUARANTINE, TAMPER_EVENTS
from chalicelib.events import IamEvent
from chalicelib.iam import GONE, ActionResult, error_code
from chalicelib.policy import Decision
from chalicelib.slack_message import clip, cloudtrail_url, iam_user_url
from chalicelib.store import iso, utcnow

if TYPE_CHECKING:
    from chalicelib.sweep import SweepReport

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = "2018-10-08"
ID_PREFIX: Final = "iam-user-guardrail"
TYPE_NAMESPACE: Final = "Software and Configuration Checks/AWS Security Best Practices"
BATCH_MAX: Final = 100
TITLE_MAX: Final = 256
DESCRIPTION_MAX: Final = 1024
TEXT_MAX: Final = 512
FIELD_MAX: Final = 1024
ACTIVE: Final = "ACTIVE"
ARCHIVED: Final = "ARCHIVED"
#: The guardrail's severities (and the sweep's) as ASFF labels.
SEVERITY_LABELS: Final = {CRITICAL: "CRITICAL", HIGH: "HIGH", "medium": "MEDIUM", "low": "LOW", INFO: "INFORMATIONAL"}
#: The keys of a finding this module writes (what an archive re-imports from GetFindings).
_OWN_KEYS: Final = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "Types",
    "CreatedAt",
    "UpdatedAt",
    "FirstObservedAt",
    "LastObservedAt",
    "Severity",
    "FindingProviderFields",
    "Title",
    "Description",
    "Remediation",
    "SourceUrl",
    "ProductFields",
    "Resources",
)

_REMEDIATION = {
    QUARANTINE: (
        "The guardrail attached the deny-all quarantine policy and deactivated the new access key. "
        "If the user is an approved need, an approver grants a time-bound exception from the Slack "
        "alert (Approve) or POST /exceptions; otherwise delete the user and its credentials."
    ),
    ALERT: (
        "The guardrail undid the new credential (access key deactivated or console password deleted). "
        "Find out why its creator made it; integration credentials are created by the allowlist's "
        "provisioners only."
    ),
    "tamper": (
        "The guardrail reverted a change that undid its quarantine. Investigate the actor: it tried "
        "to keep a long-lived credential, and its own permissions may need to be reduced."
    ),
    "sweep": "The hourly sweep found this user out of line with the allowlist; fix the user or the allowlist.",
}


def finding_id(account: str, user: str, rule: str) -> str:
    return f"{ID_PREFIX}/{account}/{user or '-'}/{rule or 'alert'}"


def user_prefix(account: str, user: str) -> str:
    return f"{ID_PREFIX}/{account}/{user or '-'}/"


def user_arn(partition: str, account: str, user: str, path: str = "/") -> str:
    return f"arn:{partition}:iam::{account}:user{path or '/'}{user}"


def severity(value: str) -> dict[str, str]:
    return {"Label": SEVERITY_LABELS.get(value, "MEDIUM"), "Original": value}


def build_finding(
    *,
    product_arn: str,
    home_account: str,
    account: str,
    user: str,
    rule: str,
    title: str,
    description: str,
    severity_name: str,
    classifier: str,
    observed_at: datetime,
    now: datetime,
    remediation: str,
    remediation_url: str,
    region: str = "us-east-1",
    partition: str = "aws",
    path: str = "/",
    source_url: str = "",
    fields: Mapping[str, str] | None = None,
    archived: bool = False,
) -> dict[str, Any]:
    """One ASFF finding (pure). `archived` at creation also sets Workflow RESOLVED."""
    types = [f"{TYPE_NAMESPACE}/{classifier}"]
    level = severity(severity_name)
    product_fields = {
        f"{ID_PREFIX}/Account": account,
        f"{ID_PREFIX}/User": user,
        f"{ID_PREFIX}/Rule": rule,
        **(fields or {}),
    }
    resource: dict[str, Any] = {"Partition": partition, "Region": region}
    if user:
        resource |= {
            "Type": "AwsIamUser",
            "Id": user_arn(partition, account, user, path),
            "Details": {"AwsIamUser": {"UserName": user, "Path": path or "/"}},
        }
    else:
        resource |= {"Type": "AwsAccount", "Id": f"AWS::::Account:{account}"}
    finding: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": finding_id(account, user, rule),
        "ProductArn": product_arn,
        "GeneratorId": f"{ID_PREFIX}/{rule or 'alert'}",
        "AwsAccountId": home_account,
        "Types": types,
        "CreatedAt": iso(observed_at),
        "UpdatedAt": iso(now),
        "FirstObservedAt": iso(observed_at),
        "LastObservedAt": iso(observed_at),
        "Severity": level,
        "FindingProviderFields": {"Severity": level, "Types": types},
        "Title": clip(title, TITLE_MAX),
        "Description": clip(description or title, DESCRIPTION_MAX),
        "Remediation": {"Recommendation": {"Text": clip(remediation, TEXT_MAX), "Url": remediation_url}},
        "ProductFields": {k: clip(str(v), FIELD_MAX) for k, v in product_fields.items() if v},
        "Resources": [resource],
        "RecordState": ARCHIVED if archived else ACTIVE,
    }
    if source_url:
        finding["SourceUrl"] = source_url
    if archived:
        finding["Workflow"] = {"Status": "RESOLVED"}
    return finding


def wants(decision: Decision) -> bool:
    """Quarantines, undone credentials, tamper and what cannot be undone (root keys) become findings."""
    return decision.verdict in (QUARANTINE, ALERT)


class SecurityHub:
    """Imports and archives the guardrail's findings; every public method logs failures and returns."""

    def __init__(
        self,
        client: Any,
        *,
        home_account: Callable[[], str],
        region: str,
        partition: str = "aws",
        decision_url: str = "",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._hub = client
        self._home_account = home_account
        self.region = region
        self.partition = partition
        self.decision_url = decision_url
        self._clock = clock

    @property
    def product_arn(self) -> str:
        home = self._home_account()
        return f"arn:{self.partition}:securityhub:{self.region}:{home}:product/{home}/default"

    # -- the event path (an AlertSink) -------------------------------------------------------

    def publish(self, event: IamEvent, decision: Decision, results: Sequence[ActionResult], *, alerted: bool) -> None:
        """Alerts that are findings are imported; a DeleteUser archives the user's findings."""
        try:
            if event.event_name == DELETE_USER and not event.error_code and event.target_user_name:
                self._archive(self._active(user_prefix(event.account, event.target_user_name)), "the user was deleted")
            elif alerted and wants(decision):
                self.import_findings([self.event_finding(event, decision, results)])
        except Exception as exc:  # the home account id may need STS; nothing here may fail the event
            self._failed("import", exc)

    def event_finding(self, event: IamEvent, decision: Decision, results: Sequence[ActionResult]) -> dict[str, Any]:
        tamper = event.event_name in TAMPER_EVENTS
        kind = "tamper" if tamper else decision.verdict
        user = event.target_user_name
        prefix = "[monitor] would " if decision.mode == MONITOR else ""
        what = {"tamper": "tamper reverted", QUARANTINE: "IAM user quarantined", ALERT: "IAM credential undone"}
        done = "; ".join(r.describe() for r in results)
        return build_finding(
            product_arn=self.product_arn,
            home_account=self._home_account(),
            account=event.account,
            user=user,
            rule=decision.rule,
            title=f"{prefix}{what[kind]}: {user or 'account ' + event.account} ({event.event_name})",
            description=decision.reason + (f" Actions: {done}." if done else ""),
            severity_name=decision.severity,
            classifier="IAM user tamper" if tamper else "IAM user credentials",
            observed_at=event.event_time,
            now=self._clock(),
            remediation=_REMEDIATION[kind],
            remediation_url=self.decision_url or (iam_user_url(user) if user else cloudtrail_url(event)),
            region=self.region,
            partition=event.partition,
            path=event.target_user_path or "/",
            source_url=cloudtrail_url(event),
            fields={
                f"{ID_PREFIX}/EventId": event.event_id,
                f"{ID_PREFIX}/EventName": event.event_name,
                f"{ID_PREFIX}/Actor": event.actor.principal_arn or event.actor.display,
                f"{ID_PREFIX}/Verdict": decision.verdict,
                f"{ID_PREFIX}/Mode": decision.mode,
                f"{ID_PREFIX}/Integration": decision.integration,
                f"{ID_PREFIX}/Actions": done,
            },
            archived=any(r.status == GONE for r in results),
        )

    # -- the sweep (an observer of its report) -----------------------------------------------

    def sweep(self, report: SweepReport, accounts: Iterable[str] = ()) -> None:
        """Import the sweep's findings; archive the active findings of users that no longer exist.

        `accounts` are the accounts the sweep visited. When a reconciliation failed, only accounts
        where users were seen are trusted: an account that could not be read has no gone users.
        """
        try:
            now = self._clock()
            findings = [
                build_finding(
                    product_arn=self.product_arn,
                    home_account=self._home_account(),
                    account=row.account,
                    user=row.user,
                    rule=f"sweep_{row.finding}",
                    title=f"IAM user {row.finding}: {row.user}",
                    description=row.detail + (f" Action: {row.action} ({row.result})." if row.action else ""),
                    severity_name=row.severity,
                    classifier="IAM user hygiene",
                    observed_at=now,
                    now=now,
                    remediation=_REMEDIATION["sweep"] + (f" Owner: {row.owner}." if row.owner else ""),
                    remediation_url=self.decision_url or iam_user_url(row.user),
                    region=self.region,
                    partition=self.partition,
                    fields={f"{ID_PREFIX}/Owner": row.owner, f"{ID_PREFIX}/Status": row.status},
                )
                for row in report.findings
            ]
            self.import_findings(findings)
            present: dict[str, set[str]] = {}
            if not any(e.startswith("reconciliation failed") for e in report.errors):
                present = {account: set() for account in accounts}
            for row in report.rows:
                present.setdefault(row.account, set()).add(row.user)
            for account, users in present.items():
                active = self._active(f"{ID_PREFIX}/{account}/")
                gone = [f for f in active if _user_of(f) not in users | {"-"}]
                self._archive(gone, "the user no longer exists")
        except Exception as exc:
            self._failed("sweep import", exc)

    # -- approvals (a CaseListener) ----------------------------------------------------------

    def case_closed(self, account: str, user: str, *, how: str, case_event_id: str = "") -> None:
        """An exception granted releases the user: its findings are archived. Kept quarantined: unchanged."""
        if how != "granted":
            return
        try:
            self._archive(self._active(user_prefix(account, user)), "exception granted")
        except Exception as exc:
            self._failed("archive", exc)

    def case_reopened(self, account: str, user: str, *, why: str, state: str) -> None:
        """An exception that ended (revoked, expired) quarantines the user again: a new active finding."""
        try:
            now = self._clock()
            finding = build_finding(
                product_arn=self.product_arn,
                home_account=self._home_account(),
                account=account,
                user=user,
                rule=f"exception_{state}",
                title=f"IAM user quarantined again: {user} (exception {state})",
                description=f"The exception of {user} in {account} ended ({why}); the user is quarantined again.",
                severity_name=HIGH,
                classifier="IAM user credentials",
                observed_at=now,
                now=now,
                remediation=_REMEDIATION[QUARANTINE],
                remediation_url=self.decision_url or iam_user_url(user),
                region=self.region,
                partition=self.partition,
            )
            self.import_findings([finding])
        except Exception as exc:
            self._failed("import", exc)

    # -- calls -------------------------------------------------------------------------------

    def import_findings(self, findings: Sequence[Mapping[str, Any]]) -> int:
        """BatchImportFindings in batches of 100; returns how many were accepted."""
        accepted = 0
        for start in range(0, len(findings), BATCH_MAX):
            batch = list(findings[start : start + BATCH_MAX])
            try:
                reply = self._hub.batch_import_findings(Findings=batch)
            except (ClientError, BotoCoreError) as exc:
                self._failed("BatchImportFindings", exc, count=len(batch))
                continue
            failed = reply.get("FailedFindings") or []
            if failed:
                log.error(
                    "Security Hub refused findings",
                    extra={"failed": [f"{f.get('Id')}: {f.get('ErrorCode')} {f.get('ErrorMessage')}" for f in failed]},
                )
                observability.count(observability.SECURITY_HUB_FAILED, len(failed))
            accepted += int(reply.get("SuccessCount", len(batch) - len(failed)))
        return accepted

    def _active(self, prefix: str) -> list[dict[str, Any]]:
        """The guardrail's active findings whose Id starts with `prefix` (checked here too)."""
        product = self.product_arn
        filters = {
            "ProductArn": [{"Value": product, "Comparison": "EQUALS"}],
            "Id": [{"Value": prefix, "Comparison": "PREFIX"}],
            "RecordState": [{"Value": ACTIVE, "Comparison": "EQUALS"}],
        }
        found = []
        for page in self._hub.get_paginator("get_findings").paginate(Filters=filters):
            for finding in page.get("Findings", []):
                if (
                    finding.get("ProductArn") == product
                    and str(finding.get("Id", "")).startswith(prefix)
                    and finding.get("RecordState", ACTIVE) == ACTIVE
                ):
                    found.append(finding)
        return found

    def _archive(self, findings: Iterable[Mapping[str, Any]], why: str) -> None:
        now = iso(self._clock())
        archived = []
        for finding in findings:
            copy = {key: finding[key] for key in _OWN_KEYS if key in finding}
            fields = dict(copy.get("ProductFields", {}))
            fields[f"{ID_PREFIX}/ArchivedBecause"] = why
            archived.append(copy | {"UpdatedAt": now, "RecordState": ARCHIVED, "ProductFields": fields})
        if archived:
            self.import_findings(archived)

    def _failed(self, what: str, exc: Exception, count: int = 1) -> None:
        log.error("Security Hub not updated", extra={"call": what, "error": error_code(exc)})
        observability.count(observability.SECURITY_HUB_FAILED, count)


def _user_of(finding: Mapping[str, Any]) -> str:
    parts = str(finding.get("Id", "")).split("/")
    return parts[2] if len(parts) > 3 else ""
