"""Command line: `python -m chalicelib.cli {bootstrap,check-allowlist,demo}`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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

    store = Store(Runtime(Settings.from_env()).client("dynamodb"), args.table or Settings.from_env().table)
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


def cmd_demo(args: argparse.Namespace) -> int:
    from chalicelib.demo import run_demo

    return run_demo()


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
    demo = sub.add_parser("demo", help="run the whole flow against a local moto server")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
