"""`make bench`: performance figures, printed as a table and written to BENCHMARKS.md.

Figures (issue: "Replay CloudTrail history ... and a benchmark suite"):
1. cold start to first decision, as a ratio to a bare boto3 floor (median of alternating runs);
2. AWS calls (and Slack posts) per event for each decision path, counted with botocore event hooks;
3. decision throughput: parse + decide, pure;
4. replay records per second on synthetic gzip logs, as a ratio to decompress + json.loads, with
   peak memory;
5. sweep AWS calls and seconds for 1,000 users on moto server;
6. organization scale (benchmarks/organization.py): a sweep of 25 and 100 moto accounts with
   --concurrency 1 and 8, the fan-out's projection to 1,000 and 5,000 accounts, a burst of 200
   creations from 5 creators.

`--tiny` runs every figure on small inputs (the test suite uses it so the script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chalicelib import runtime  # noqa: E402
from chalicelib.bootstrap import bootstrap  # noqa: E402
from devtools.devserver import MotoServer, SlackReceiver, environment, stage_environment  # noqa: E402
from devtools.synth import cloudtrail_record, envelope, role_identity, user_identity, write_logs  # noqa: E402

ACCOUNT = "123456789012"
TERRAFORM = role_identity(ACCOUNT, "terraform-deployer", "tf")
DEVELOPER = role_identity(
    ACCOUNT, "AWSReservedSSO_Developer_1", "dev@example.com", path="/aws-reserved/sso.amazonaws.com/"
)
CI_BOT = user_identity(ACCOUNT, "legacy-ci-bot")
POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/iam-user-guardrail-quarantine"


@dataclass(frozen=True)
class Sizes:
    cold_runs: int
    decisions: int
    replay_records: int
    replay_runs: int
    sweep_users: int


FULL = Sizes(cold_runs=11, decisions=50_000, replay_records=1_000_000, replay_runs=3, sweep_users=1_000)
TINY = Sizes(cold_runs=2, decisions=2_000, replay_records=5_000, replay_runs=1, sweep_users=30)


@contextmanager
def aws_world() -> Iterator[tuple[MotoServer, SlackReceiver, dict[str, str]]]:
    with MotoServer() as moto, SlackReceiver() as slack:
        env = {
            **moto.environment(),
            **stage_environment("dev"),
            "GUARDRAIL_ALLOWLIST": str(REPO / "chalicelib" / "allowlist.yaml"),
            "SLACK_WEBHOOK_URL": f"{slack.url}/services/TBENCH/BBENCH/bench",
        }
        with environment(env):
            yield moto, slack, env


def fresh_account(moto: MotoServer, env: dict[str, str]) -> Any:
    moto.reset()
    runtime.reset()
    iam = boto3.client("iam")
    bootstrap(
        iam=iam,
        dynamodb=boto3.client("dynamodb"),
        sts=boto3.client("sts"),
        table=env["GUARDRAIL_TABLE"],
        policy_name=env["GUARDRAIL_QUARANTINE_POLICY_NAME"],
    )
    return iam


# -- 1. cold start ---------------------------------------------------------------------------------

FLOOR = """
import boto3
boto3.client("iam").tag_user(UserName="svc-datadog", Tags=[{"Key": "bench", "Value": "floor"}])
"""

COLD = """
import json, sys
import app
from chalice.local import LambdaContext
context = LambdaContext("on_iam_event", 512)
context.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:iam-user-guardrail-dev-on_iam_event"
result = app.app.handler_map["on_iam_event"](json.loads(sys.argv[1]), context)
assert result["verdict"] == "approve", result
"""


def cold_start(sizes: Sizes) -> dict[str, Any]:
    with aws_world() as (moto, _, env):
        iam = fresh_account(moto, env)
        iam.create_user(UserName="svc-datadog", Path="/integrations/")
        child_env = {**os.environ, **env}
        floors, colds = [], []
        for _ in range(sizes.cold_runs):
            event = envelope(
                cloudtrail_record("CreateUser", user="svc-datadog", identity=TERRAFORM, path="/integrations/")
            )
            floors.append(_timed([sys.executable, "-c", FLOOR], child_env))
            colds.append(_timed([sys.executable, "-c", COLD, json.dumps(event)], child_env))
    floor, cold = statistics.median(floors), statistics.median(colds)
    return {"floor_s": floor, "cold_s": cold, "ratio": cold / floor, "runs": sizes.cold_runs}


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=REPO, check=True, capture_output=True)  # noqa: S603 - our interpreter
    return time.perf_counter() - start


# -- 2. AWS calls per event --------------------------------------------------------------------------


def calls_per_event() -> list[dict[str, Any]]:
    from app import app

    rows = []
    with aws_world() as (moto, slack, env):
        for name, prepare in _paths():
            iam = fresh_account(moto, env)
            events = prepare(iam)
            counter: Counter[str] = Counter()
            rt = runtime.get()
            rt.slack_bot_token()  # read once per container, not per event: a warm container is measured
            rt._session.events.register("before-call", lambda model, _c=counter, **_: _c.update([model.name]))
            for event in events[:-1]:
                app.handler_map["on_iam_event"](envelope(event), lambda_context())
            counter.clear()
            slack.clear()
            result = app.handler_map["on_iam_event"](envelope(events[-1]), lambda_context())
            rows.append(
                {
                    "path": name,
                    "verdict": result.get("verdict", result["status"]),
                    "aws_calls": sum(counter.values()),
                    "calls": dict(counter),
                    "slack_posts": len(slack.requests),
                }
            )
    return rows


def lambda_context() -> Any:
    """A Lambda context as AWS passes it: the function ARN names the account."""
    from chalice.local import LambdaContext

    context = LambdaContext("on_iam_event", 512)
    context.invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:iam-user-guardrail-dev-on_iam_event"
    return context


def _paths() -> list[tuple[str, Callable[[Any], list[dict[str, Any]]]]]:
    def approved_user(iam: Any) -> list[dict[str, Any]]:
        iam.create_user(UserName="svc-datadog", Path="/integrations/")
        return [cloudtrail_record("CreateUser", user="svc-datadog", identity=TERRAFORM, path="/integrations/")]

    def unapproved_user(iam: Any) -> list[dict[str, Any]]:
        iam.create_user(UserName="dana")
        return [cloudtrail_record("CreateUser", user="dana", identity=DEVELOPER)]

    def approved_key(iam: Any) -> list[dict[str, Any]]:
        first = approved_user(iam)
        key = iam.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
        return [*first, cloudtrail_record("CreateAccessKey", user="svc-datadog", identity=TERRAFORM, access_key_id=key)]

    def backdoor_key(iam: Any) -> list[dict[str, Any]]:
        iam.create_user(UserName="bob")
        key = iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
        return [cloudtrail_record("CreateAccessKey", user="bob", identity=CI_BOT, access_key_id=key)]

    def duplicate(iam: Any) -> list[dict[str, Any]]:
        event = unapproved_user(iam)[0]
        return [event, event]

    def tamper(iam: Any) -> list[dict[str, Any]]:
        first = unapproved_user(iam)
        detach = cloudtrail_record("DetachUserPolicy", user="dana", identity=DEVELOPER)
        detach["requestParameters"] = {"userName": "dana", "policyArn": POLICY_ARN}
        detach["responseElements"] = None
        return [*first, detach]

    return [
        ("CreateUser, approved integration", approved_user),
        ("CreateUser, unapproved (enforce)", unapproved_user),
        ("CreateAccessKey, approved integration", approved_key),
        ("CreateAccessKey, backdoor", backdoor_key),
        ("duplicate delivery", duplicate),
        ("DetachUserPolicy of the quarantine policy (tamper)", tamper),
    ]


# -- 3. decision throughput --------------------------------------------------------------------------


def decision_throughput(sizes: Sizes) -> dict[str, Any]:
    from chalicelib.allowlist import load_allowlist
    from chalicelib.events import parse_event
    from chalicelib.identity import OwnIdentity
    from chalicelib.policy import decide
    from devtools.synth import synthetic_records

    allowlist = load_allowlist(REPO / "chalicelib" / "allowlist.yaml")
    own = OwnIdentity.pinned(home_account="")
    records = [
        r for r in synthetic_records(sizes.decisions * 60, iam_share=0.02) if r["eventSource"] == "iam.amazonaws.com"
    ]
    records = (records * (sizes.decisions // max(len(records), 1) + 1))[: sizes.decisions]
    start = time.perf_counter()
    for raw in records:
        decide(parse_event(raw), allowlist, own_roles=own)
    elapsed = time.perf_counter() - start
    return {"events": len(records), "seconds": elapsed, "per_second": len(records) / elapsed}


# -- 4. replay -----------------------------------------------------------------------------------------

REPLAY = """
import json, resource, sys, time
from chalicelib.allowlist import load_allowlist
from chalicelib.replay import Replayer
start = time.perf_counter()
summary = Replayer(load_allowlist("chalicelib/allowlist.yaml")).replay([sys.argv[1]])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "records": summary.records, "iam_events": summary.iam_events,
                  "skipped": len(summary.skipped),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

FLOOR_REPLAY = """
import gzip, json, os, resource, sys, time
start = time.perf_counter()
records = 0
for root, dirs, files in os.walk(sys.argv[1]):
    dirs.sort()
    for name in sorted(f for f in files if f.endswith(".json.gz")):
        with open(os.path.join(root, name), "rb") as handle:
            records += len(json.loads(gzip.decompress(handle.read()))["Records"])
print(json.dumps({"seconds": time.perf_counter() - start, "records": records,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def replay(sizes: Sizes, cache: Path) -> dict[str, Any]:
    logs = cache / f"synthetic-{sizes.replay_records}"
    if not (logs / "done").exists():
        write_logs(logs, sizes.replay_records, per_file=250)
        (logs / "done").write_text("ok")
    replays, floors = [], []
    for _ in range(sizes.replay_runs):  # alternate, so that caches and CPU clocks treat both alike
        floors.append(_child_json([sys.executable, "-c", FLOOR_REPLAY, str(logs)]))
        replays.append(_child_json([sys.executable, "-c", REPLAY, str(logs)]))
    for run in replays + floors:
        assert run["records"] == sizes.replay_records, run
    seconds = statistics.median(r["seconds"] for r in replays)
    floor = statistics.median(r["seconds"] for r in floors)
    return {
        "records": sizes.replay_records,
        "iam_events": replays[0]["iam_events"],
        "seconds": seconds,
        "per_second": sizes.replay_records / seconds,
        "floor_per_second": sizes.replay_records / floor,
        "ratio": seconds / floor,
        "peak_mb": max(r["peak_mb"] for r in replays),
        "runs": sizes.replay_runs,
    }


def _child_json(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run(argv, cwd=REPO, check=True, capture_output=True, text=True)  # noqa: S603
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- 5. sweep --------------------------------------------------------------------------------------------


def sweep(sizes: Sizes) -> dict[str, Any]:
    from chalicelib.sweep import SweepReport

    with aws_world() as (moto, _, env):
        iam = fresh_account(moto, env)
        tagged = [
            {"Key": "guardrail:status", "Value": "approved"},
            {"Key": "guardrail:integration", "Value": "datadog"},
        ]
        new = max(1, sizes.sweep_users // 100)
        for n in range(sizes.sweep_users):
            if n < new:
                iam.create_user(UserName=f"newcomer-{n}")
            elif n % 2:
                iam.create_user(UserName=f"svc-datadog-{n}", Path="/integrations/", Tags=tagged)
            else:
                iam.create_user(UserName=f"quarantined-{n}")
                iam.attach_user_policy(UserName=f"quarantined-{n}", PolicyArn=POLICY_ARN)
        # these users existed before the guardrail began to watch the account
        since = {"pk": {"S": "META"}, "sk": {"S": f"WATCHING#{ACCOUNT}"}, "since": {"S": time_now()}}
        boto3.client("dynamodb").put_item(TableName=env["GUARDRAIL_TABLE"], Item=since)
        counter: Counter[str] = Counter()
        rt = runtime.get()
        rt._session.events.register("before-call", lambda model, **_: counter.update([model.name]))
        report = SweepReport()
        start = time.perf_counter()
        rt.reconciler().run(report)
        elapsed = time.perf_counter() - start
    writes = {k: v for k, v in counter.items() if not k.startswith(("Get", "Generate", "Query"))}
    reads = {k: v for k, v in counter.items() if k not in writes}
    return {
        "users": report.users,
        "findings": len(report.findings),
        "seconds": elapsed,
        "aws_calls": sum(counter.values()),
        "reads": reads,
        "writes": writes,
    }


# -- 6. organization scale --------------------------------------------------------------------------------


def organization_scale(tiny: bool) -> dict[str, Any]:
    from benchmarks import organization

    sizes = organization.TINY if tiny else organization.FULL
    with aws_world() as (moto, slack, env):
        rows = organization.org_sweep(sizes, lambda: fresh_account(moto, env))
        burst = organization.burst(sizes, lambda: fresh_account(moto, env), slack, lambda_context())
    return {"org_sweep": rows, "org_projection": organization.projection(rows), "burst": burst}


# -- report ------------------------------------------------------------------------------------------------


#: deployment.zip before the demo, dev servers and synthetic generator left chalicelib/ (commit 8cfe5ee).
PACKAGE_BEFORE = {"bytes": 3_039_953, "files": 704}


def time_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def package_size() -> dict[str, Any]:
    """`chalice package --stage prod`: the Lambda deployment.zip, and what of it is our own code."""
    out = Path(tempfile.mkdtemp()) / "prod"
    chalice = Path(sys.executable).parent / "chalice"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    subprocess.run(  # noqa: S603 - our venv's chalice
        [str(chalice), "package", "--stage", "prod", str(out)], cwd=REPO, env=env, check=True, capture_output=True
    )
    with zipfile.ZipFile(out / "deployment.zip") as archive:
        infos = archive.infolist()
    own = [i for i in infos if i.filename == "app.py" or i.filename.startswith("chalicelib/")]
    return {
        "bytes": (out / "deployment.zip").stat().st_size,
        "files": len(infos),
        "own_files": len(own),
        "own_bytes": sum(i.file_size for i in own),
    }


def machine() -> dict[str, str]:
    versions = {
        name: metadata.version(name) for name in ("boto3", "botocore", "chalice", "moto", "slack_sdk", "PyYAML")
    }
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        **versions,
    }


def render(results: dict[str, Any], tiny: bool) -> str:
    cold, rep, sw, thr = results["cold_start"], results["replay"], results["sweep"], results["decisions"]
    pkg = results["package"]
    lines = [
        "# Benchmarks" + (" (tiny mode: the figures mean nothing)" if tiny else ""),
        "",
        "Produced by `make bench` (`python -m benchmarks.bench`); do not edit by hand.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in results["machine"].items()],
        "",
        "## Summary",
        "",
        "| figure | result | target |",
        "|---|---|---|",
        f"| cold start to first decision / bare boto3 floor | {cold['ratio']:.2f}× ({cold['cold_s'] * 1000:.0f} ms vs "
        f"{cold['floor_s'] * 1000:.0f} ms, median of {cold['runs']}) | ≤ 1.5× |",
        f"| AWS calls, unapproved CreateUser (enforce) | {_calls(results, 'CreateUser, unapproved (enforce)')} "
        "| ≤ 5 + 1 Slack post (4 + the burst counter) |",
        f"| decision throughput (parse + decide) | {thr['per_second']:,.0f} events/s | |",
        f"| replay | {rep['per_second']:,.0f} records/s ({rep['records']:,} records, {rep['seconds']:.1f} s) | |",
        f"| replay / decompress + json.loads floor | {rep['ratio']:.2f}× "
        f"(floor {rep['floor_per_second']:,.0f} records/s, medians of {rep['runs']} alternating runs) | ≤ 1.5× |",
        f"| replay peak memory | {rep['peak_mb']:.0f} MB | < 300 MB |",
        f"| sweep, {sw['users']:,} users | {sw['aws_calls']} AWS calls, {sw['seconds']:.1f} s | O(N/1000) + writes |",
        f"| Lambda deployment.zip | {pkg['bytes']:,} bytes, {pkg['files']} files ({pkg['own_files']} of ours, "
        f"{pkg['own_bytes']:,} bytes uncompressed); before devtools/ moved out: {PACKAGE_BEFORE['bytes']:,} bytes, "
        f"{PACKAGE_BEFORE['files']} files | no dev tooling |",
        "",
        "## AWS calls per event",
        "",
        "| path | verdict | AWS calls | calls | Slack posts |",
        "|---|---|---|---|---|",
        *[
            f"| {r['path']} | {r['verdict']} | {r['aws_calls']} | {_fmt(r['calls'])} | {r['slack_posts']} |"
            for r in results["calls_per_event"]
        ],
        "",
        "## Sweep",
        "",
        f"{sw['users']:,} users ({sw['findings']} findings acted on): "
        f"reads {_fmt(sw['reads'])}; writes {_fmt(sw['writes'])}.",
        "",
    ]
    from benchmarks import organization

    lines += organization.render(results["organization"])
    return "\n".join(lines)


def _calls(results: dict[str, Any], path: str) -> str:
    row = next(r for r in results["calls_per_event"] if r["path"] == path)
    return f"{row['aws_calls']} + {row['slack_posts']} Slack post"


def _fmt(calls: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small inputs: checks that every figure is produced")
    parser.add_argument("--out", help="where to write the markdown (default BENCHMARKS.md; none in tiny mode)")
    parser.add_argument("--cache", default=str(REPO / ".bench-cache"), help="synthetic logs are kept here")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    cache = Path(tempfile.mkdtemp()) if args.tiny else Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine()}
    for name, run in (
        ("cold_start", lambda: cold_start(sizes)),
        ("calls_per_event", calls_per_event),
        ("decisions", lambda: decision_throughput(sizes)),
        ("replay", lambda: replay(sizes, cache)),
        ("sweep", lambda: sweep(sizes)),
        ("organization", lambda: organization_scale(args.tiny)),
        ("package", package_size),
    ):
        print(f"running {name} …", file=sys.stderr, flush=True)
        results[name] = run()
    text = render(results, args.tiny)
    print(text)
    out = args.out or (None if args.tiny else str(REPO / "BENCHMARKS.md"))
    if out:
        Path(out).write_text(text)
    print(json.dumps(results, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
