"""Command line: `python -m chalicelib.cli {bootstrap,check-allowlist,audit,sweep,flush-alerts,replay,scp,...}`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from chalicelib.allowlist import AllowlistError, load_allowlist


def cmd_check_allowlist(args: argparse.Namespace) -> int:
    try:
        allowlist = load_allowlist(args.path)
    except AllowlistError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{allowlist.source}: valid (version {allowlist.version}, mode {allowlist.mode}, "
        f"{len(allowlist.integrations)} integration(s): {', '.join(i.name for i in allowlist.integrations) or 'none'})"
    )
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from chalicelib.bootstrap import bootstrap
    from chalicelib.runtime import Runtime
    from chalicelib.settings import Settings

    settings = Settings.from_env()
    rt = Runtime(settings)
    summary = bootstrap(
        iam=rt.client("iam"),
        dynamodb=rt.client("dynamodb"),
        sts=rt.client("sts"),
        table=args.table or settings.table,
        policy_name=settings.quarantine_policy_name,
    )
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from chalicelib.runtime import Runtime
    from chalicelib.settings import Settings
    from chalicelib.store import AUDIT_PK, Store

    settings = Settings.from_env()
    store = Store(Runtime(settings).client("dynamodb"), args.table or settings.table)
    shown = 0
    for record in store.query(AUDIT_PK, since=args.since or ""):
        if args.user and record.get("user") != args.user:
            continue
        shown += 1
        who = record.get("by") or record.get("actor", "")
        what = record.get("verdict") or record.get("state") or ""
        print(
            f"{record['at'][:19]}  {record.get('kind', ''):<16} {record.get('account', '')}/{record.get('user', '')}"
            f"  by {who}  {what}  {record.get('reason', '')}"
        )
    if not shown:
        print(
            "no audit records"
            + (f" for {args.user}" if args.user else "")
            + (f" since {args.since}" if args.since else "")
        )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from chalicelib.fanout import sweep_accounts
    from chalicelib.runtime import Runtime
    from chalicelib.settings import Settings

    try:
        runtime = Runtime(Settings.from_env())
        if args.accounts:
            accounts = [a.strip() for a in args.accounts.split(",") if a.strip()]
            bad = [a for a in accounts if not (len(a) == 12 and a.isdigit())]
            if bad:
                print(f"--accounts: {', '.join(bad)} is not a 12-digit account id", file=sys.stderr)
                return 2
            errors: list[str] = []
        else:
            plan = runtime.sweep_plan()
            accounts, errors = plan.accounts, plan.errors
        report = sweep_accounts(
            accounts,
            lambda account: runtime.account_sweep(account, dry_run=args.dry_run, notify=False),
            concurrency=args.concurrency,
        )
        report.errors[:0] = errors
    except Exception as exc:  # cannot run: credentials, table, allowlist, IAM
        print(f"sweep could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"accounts": accounts, **report.to_dict()}, indent=2, default=str))
    else:
        print_table(report)
        print(f"{len(accounts)} account(s)")
    if report.errors:  # an account whose sweep crashed was not checked: say so, fail
        print(f"sweep could not run for every account ({len(report.errors)} error(s)):", file=sys.stderr)
        for error in report.errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    return 1 if args.fail_on_findings and report.findings else 0


def cmd_flush_alerts(args: argparse.Namespace) -> int:
    from chalicelib.runtime import Runtime
    from chalicelib.settings import Settings

    try:
        report = Runtime(Settings.from_env()).flush_alerts()
    except Exception as exc:  # table unreachable, Slack secret unreadable
        print(f"flush could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(
        f"{report.rollups} roll-up(s) naming {report.rolled_up_users} user(s), {report.resent} queued alert(s) "
        f"resent, {report.left} left for the next flush"
    )
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if report.left else 0


def print_table(report: Any) -> None:
    rows = [("USER", "STATUS", "FINDING", "SEVERITY", "ACTION", "DETAIL")]
    for row in report.rows:
        action = f"{row.action}: {row.result}" if row.action else ""
        rows.append(
            (
                f"{row.account}/{row.user}",
                row.status,
                row.finding or "-",
                row.severity or "-",
                action or "-",
                row.detail + (f" (owner {row.owner})" if row.owner else ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:5])) + "  " + r[5])
    print(f"\n{report.users} user(s), {len(report.findings)} finding(s)")


def cmd_replay(args: argparse.Namespace) -> int:
    from chalicelib.identity import OwnIdentity
    from chalicelib.replay import Replayer, format_table
    from chalicelib.settings import Settings

    try:
        settings = Settings.from_env()
        allowlist = load_allowlist(args.allowlist or settings.allowlist_path or None)
        live = None
        if args.live:
            from chalicelib.runtime import Runtime

            iam = Runtime(settings).iam
            live = lambda user, path, keys: iam.user_facts(user, path=path, keys=keys)  # noqa: E731
        replayer = Replayer(
            allowlist,
            own_roles=OwnIdentity.from_settings(settings),
            since=_moment(args.since),
            until=_moment(args.until),
            live_facts=live,
        )
    except (AllowlistError, ValueError) as exc:
        print(f"replay could not run: {exc}", file=sys.stderr)
        return 2
    summary = replayer.replay(args.paths)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_table(summary))
    for skipped in summary.skipped:
        print(f"skipped {skipped.path} [{skipped.position}]: {skipped.reason}", file=sys.stderr)
    return 1 if summary.skipped else 0


def _moment(text: str | None) -> Any:
    if not text:
        return None
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_synth(args: argparse.Namespace) -> int:
    from devtools.synth import write_logs

    files = write_logs(args.out, args.records, per_file=args.per_file, seed=args.seed)
    print(f"wrote {args.records} records in {len(files)} file(s) under {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from devtools.demo import run_demo

    return run_demo()


def cmd_scp(args: argparse.Namespace) -> int:
    from chalicelib.scp import ScpTooLargeError, build_scp, evaluate, render

    try:
        policy = build_scp(load_allowlist(args.allowlist), restrict_resources=args.restrict_resources)
        text = render(policy)
    except AllowlistError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ScpTooLargeError as exc:
        print(f"cannot write the SCP: {exc}", file=sys.stderr)
        return 1
    if args.check:
        principal, user_arn = args.check
        denied = [
            a
            for a in policy["Statement"][0]["Action"]
            if evaluate(policy, action=a, principal_arn=principal, resource=user_arn)
        ]
        print(f"{principal} on {user_arn}: " + (f"denied {', '.join(denied)}" if denied else "allowed"))
        return 0
    print(json.dumps(policy, indent=2) if args.pretty else text)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-allowlist", help="validate an allowlist (exit 0 valid, 1 invalid)")
    check.add_argument("path", nargs="?", help="default: $GUARDRAIL_ALLOWLIST or chalicelib/allowlist.yaml")
    check.set_defaults(func=cmd_check_allowlist)
    boot = sub.add_parser("bootstrap", help="create the table and the quarantine policy (idempotent)")
    boot.add_argument("--table", help="table name (default: $GUARDRAIL_TABLE)")
    boot.set_defaults(func=cmd_bootstrap)
    audit = sub.add_parser("audit", help="print the audit trail (oldest first)")
    audit.add_argument("--user", help="only records about this IAM user")
    audit.add_argument("--since", help="ISO date or time, e.g. 2026-11-01")
    audit.add_argument("--table", help="table name (default: $GUARDRAIL_TABLE)")
    audit.set_defaults(func=cmd_audit)
    sweep = sub.add_parser("sweep", help="reconcile every IAM user with the allowlist (table or JSON)")
    sweep.add_argument("--dry-run", action="store_true", help="report only: change nothing")
    sweep.add_argument("--json", action="store_true", help="print one JSON object")
    sweep.add_argument("--fail-on-findings", action="store_true", help="exit 1 when there are findings (CI)")
    sweep.add_argument("--accounts", help="comma-separated account ids (default: home + organization + lists)")
    sweep.add_argument("--concurrency", type=_positive, default=1, help="accounts swept at once (threads)")
    sweep.set_defaults(func=cmd_sweep)
    flush = sub.add_parser("flush-alerts", help="post held burst roll-ups and queued alerts (paced)")
    flush.set_defaults(func=cmd_flush_alerts)
    replay = sub.add_parser("replay", help="dry-run the decisions over CloudTrail log files (backtest)")
    replay.add_argument("paths", nargs="+", help=".json(.gz), .jsonl files, EventBridge envelopes, or folders")
    replay.add_argument("--allowlist", help="allowlist to test (default: the deployed one)")
    replay.add_argument("--json", action="store_true", help="print one JSON object")
    replay.add_argument("--since", help="ISO date or time: skip earlier events")
    replay.add_argument("--until", help="ISO date or time: skip this and later events")
    replay.add_argument("--live", action="store_true", help="read IAM for paths and key counts (read-only)")
    replay.set_defaults(func=cmd_replay)
    synth = sub.add_parser("synth", help="write synthetic CloudTrail log files (tests, benchmarks)")
    synth.add_argument("--records", type=int, required=True)
    synth.add_argument("--out", required=True)
    synth.add_argument("--per-file", type=int, default=250, help="records per log file (AWS writes small objects)")
    synth.add_argument("--seed", type=int, default=7)
    synth.set_defaults(func=cmd_synth)
    scp = sub.add_parser("scp", help="print a Service Control Policy built from the allowlist")
    scp.add_argument("--allowlist", help="default: $GUARDRAIL_ALLOWLIST or chalicelib/allowlist.yaml")
    scp.add_argument(
        "--restrict-resources", action="store_true", help="also deny users outside the integrations' paths and names"
    )
    scp.add_argument("--pretty", action="store_true", help="indented (the minified form is what must fit 5,120)")
    scp.add_argument(
        "--check", nargs=2, metavar=("PRINCIPAL_ARN", "USER_ARN"), help="say what the SCP denies this caller"
    )
    scp.set_defaults(func=cmd_scp)
    demo = sub.add_parser("demo", help="run the whole flow against a local moto server")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
