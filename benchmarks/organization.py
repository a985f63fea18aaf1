"""Organization-scale figures for `make bench` (issue 10): a sweep over many moto accounts, the
projection of the SQS fan-out to 1,000 and 5,000 accounts, and a burst of creations."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from chalicelib import runtime
from chalicelib.bootstrap import ensure_quarantine_policy
from chalicelib.constants import FORWARD_RULE_NAME
from chalicelib.constants import SWEEP_WORKER_CONCURRENCY as WORKER_CONCURRENCY
from devtools.synth import cloudtrail_record, envelope, role_identity

POLICY = "iam-user-guardrail-quarantine"
HOME = "123456789012"
#: Projection assumptions (stated in BENCHMARKS.md): AWS API latency from Lambda in us-east-1,
#: the wait for a member's credential report, and the worker concurrency (app.py's SQS source).
AWS_CALL_SECONDS = 0.05
CREDENTIAL_REPORT_SECONDS = 10.0
SCHEDULE_SECONDS = 3600


@dataclass(frozen=True)
class OrgSizes:
    accounts: tuple[int, ...]
    users: int
    burst_events: int
    burst_creators: int


FULL = OrgSizes(accounts=(25, 100), users=20, burst_events=200, burst_creators=5)
TINY = OrgSizes(accounts=(3,), users=2, burst_events=12, burst_creators=2)


def _member(account: str, users: int) -> None:
    keys = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="bench"
    )["Credentials"]
    creds = {
        "aws_access_key_id": keys["AccessKeyId"],
        "aws_secret_access_key": keys["SecretAccessKey"],
        "aws_session_token": keys["SessionToken"],
    }
    iam = boto3.client("iam", **creds)
    ensure_quarantine_policy(iam, account, POLICY)
    for n in range(users):
        iam.create_user(UserName=f"user-{n:03d}")
    boto3.client("events", **creds).put_rule(Name=FORWARD_RULE_NAME, EventPattern='{"source":["aws.iam"]}')
    boto3.client("s3", **creds).create_bucket(Bucket=f"trail-{account}")
    trail = boto3.client("cloudtrail", **creds)
    trail.create_trail(Name="organization", S3BucketName=f"trail-{account}", IsMultiRegionTrail=True)
    trail.start_logging(Name="organization")


def org_sweep(sizes: OrgSizes, fresh: Callable[[], Any]) -> list[dict[str, Any]]:
    """Wall time and AWS calls per account of `cli sweep --dry-run --concurrency 1|8` over N accounts."""
    from chalicelib.fanout import sweep_accounts

    rows = []
    for count in sizes.accounts:
        fresh()
        org = boto3.client("organizations")
        org.create_organization(FeatureSet="ALL")
        accounts = [
            org.create_account(Email=f"a{i}@example.com", AccountName=f"a{i}")["CreateAccountStatus"]["AccountId"]
            for i in range(count)
        ]
        for account in accounts:
            _member(account, sizes.users)
        for concurrency in (1, 8):
            runtime.reset()
            rt = runtime.get()
            counter: Counter[str] = Counter()
            for session in (rt._session, rt.member_session):
                session.events.register("before-call", lambda model, _c=counter, **_: _c.update([model.name]))
            plan = rt.sweep_plan()
            start = time.perf_counter()
            report = sweep_accounts(
                plan.accounts,
                lambda a, _rt=rt: _rt.account_sweep(a, dry_run=True, notify=False),
                concurrency=concurrency,
            )
            elapsed = time.perf_counter() - start
            assert not report.errors, report.errors
            rows.append(
                {
                    "accounts": len(plan.accounts),
                    "users": report.users,
                    "concurrency": concurrency,
                    "seconds": elapsed,
                    "aws_calls": sum(counter.values()),
                    "calls_per_account": sum(counter.values()) / len(plan.accounts),
                    "calls": dict(counter),
                }
            )
    return rows


def projection(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accounts times the per-account cost, divided by the worker concurrency (assumptions above)."""
    calls = max(r["calls_per_account"] for r in rows)
    per_account = calls * AWS_CALL_SECONDS + CREDENTIAL_REPORT_SECONDS
    result = []
    for accounts in (1_000, 5_000):
        sends = -(-accounts // 10)
        result.append(
            {
                "accounts": accounts,
                "per_account_s": per_account,
                "worker_concurrency": WORKER_CONCURRENCY,
                "sweep_s": accounts * per_account / WORKER_CONCURRENCY,
                "scheduler_calls": sends + -(-accounts // 20),  # SendMessageBatch + ListAccounts pages
                "fits_the_hour": accounts * per_account / WORKER_CONCURRENCY < SCHEDULE_SECONDS,
            }
        )
    return result


def burst(sizes: OrgSizes, fresh: Callable[[], Any], slack: Any, context: Any) -> dict[str, Any]:
    """N unapproved CreateUser events from K creators through on_iam_event, then one flush."""
    from app import app
    from chalicelib.outbox import BurstGate, Flusher

    iam = fresh()
    slack.clear()
    rt = runtime.get()
    # one 10-minute window for the whole burst, whatever the wall clock says (the gate takes a clock)
    moment = datetime.now(UTC)
    rt.__dict__["burst_gate"] = BurstGate(rt.store, rt.client("dynamodb"), clock=lambda: moment)
    creators = [role_identity(HOME, f"creator-{c}", "s") for c in range(sizes.burst_creators)]
    users = [f"burst-{n:03d}" for n in range(sizes.burst_events)]
    for user in users:
        iam.create_user(UserName=user)
    start = time.perf_counter()
    for n, user in enumerate(users):
        event = cloudtrail_record("CreateUser", user=user, identity=creators[n % len(creators)])
        app.handler_map["on_iam_event"](envelope(event), context)
    immediate = len(slack.requests)
    report = Flusher(rt.store, rt.notifier).flush()  # paced: one message a second
    elapsed = time.perf_counter() - start
    text = json.dumps([r["json"] for r in slack.requests])
    quarantined = sum(1 for u in users if iam.list_attached_user_policies(UserName=u)["AttachedPolicies"])
    return {
        "events": len(users),
        "creators": len(creators),
        "quarantined": quarantined,
        "immediate_messages": immediate,
        "rollups": report.rollups,
        "messages": len(slack.requests),
        "all_named": all(u in text for u in users),
        "seconds_until_last_named": elapsed,
    }


def render(results: dict[str, Any]) -> list[str]:
    rows, proj, b = results["org_sweep"], results["org_projection"], results["burst"]
    lines = [
        "## Organization scale",
        "",
        "`python -m chalicelib.cli sweep --dry-run --concurrency N` over an organization on moto server "
        "(accounts from `organizations:ListAccounts`, each with its users, forwarding rule and trail): the "
        "users' reads and the silence checks (a real run adds the writes for what it finds, and the heartbeat).",
        "",
        "| accounts | users | concurrency | wall time | AWS calls | calls per account |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['accounts']} | {r['users']:,} | {r['concurrency']} | {r['seconds']:.1f} s | {r['aws_calls']:,} | "
            f"{r['calls_per_account']:.1f} |"
            for r in rows
        ],
        "",
        f"Calls: {', '.join(f'{k} {v}' for k, v in sorted(rows[-1]['calls'].items()))}.",
        "",
        "Projection through the fan-out (the hourly `sweep` only lists accounts and sends them to SQS; "
        f"`sweep_worker` sweeps one account per message, up to {WORKER_CONCURRENCY} at once): per-account cost = "
        f"calls per account × {AWS_CALL_SECONDS * 1000:.0f} ms (assumed AWS API latency from Lambda) + "
        f"{CREDENTIAL_REPORT_SECONDS:.0f} s (assumed wait for a member's credential report); "
        "sweep time = accounts × per-account cost ÷ concurrency. Moto's latency is not AWS's, so only the call "
        "counts come from the measurement.",
        "",
        "| accounts | per-account cost | workers | sweep time | scheduler calls | within the hour |",
        "|---|---|---|---|---|---|",
        *[
            f"| {p['accounts']:,} | {p['per_account_s']:.1f} s | {p['worker_concurrency']} | "
            f"{p['sweep_s'] / 60:.1f} min | {p['scheduler_calls']} | {'yes' if p['fits_the_hour'] else 'no'} |"
            for p in proj
        ],
        "",
        f"Burst: {b['events']} unapproved CreateUser events from {b['creators']} creators → {b['quarantined']} "
        f"quarantined, {b['immediate_messages']} Slack messages at once and {b['rollups']} roll-ups from one "
        f"flush ({b['messages']} messages in all; every user named: {'yes' if b['all_named'] else 'NO'}); "
        f"{b['seconds_until_last_named']:.1f} s from the first event until the last user was named "
        "(events handled one after another, then the paced flush; deployed, the flush runs within a minute).",
        "",
    ]
    return lines
