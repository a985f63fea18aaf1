"""Replay CloudTrail history through the real parser and decision engine (dry run, no AWS writes).

Reads CloudTrail log files as AWS writes them to S3 (`.json.gz` / `.json` holding
`{"Records": [...]}`), EventBridge envelopes, JSON Lines, and folders of those. One file at a
time is held in memory: each object AWS writes is small, so a file is parsed whole with the
standard parser and IAM records are picked out with one dictionary lookup per record.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from chalicelib.allowlist import Allowlist
from chalicelib.constants import ALERT, CREATE_ACCESS_KEY, CREATE_USER, IAM_EVENT_SOURCE, QUARANTINE
from chalicelib.events import MalformedEventError, parse_record
from chalicelib.identity import OwnIdentity
from chalicelib.policy import Decision, UserFacts, decide, facts_needed

LOG_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
_IAM_BYTES = IAM_EVENT_SOURCE.encode()
_CLOUDTRAIL_HEAD = b'{"Records":['
_RECORD_MARK = b'"eventVersion":'


def _skippable(raw: bytes) -> bool:
    """A log object exactly as CloudTrail writes it (compact JSON) that names no IAM event.

    Such a file needs no parsing: its records are counted by their `eventVersion` key. Anything
    else (other shapes, hand-edited or broken files) is parsed, so problems are still reported.
    """
    if not raw.startswith(_CLOUDTRAIL_HEAD) or _IAM_BYTES in raw:
        return False
    return raw.endswith(b"]}") or raw.rstrip().endswith(b"]}")


@dataclass
class Skipped:
    path: str
    position: str
    reason: str


@dataclass
class ReplaySummary:
    files: int = 0
    records: int = 0
    iam_events: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    assumed_paths: int = 0
    users: list[dict[str, str]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "iam_events": self.iam_events,
            "skipped": len(self.skipped),
            "decisions": dict(self.decisions),
            "rules": {f"{verdict}/{rule}": n for (verdict, rule), n in sorted(self.rules.items())},
            "assumed_paths": self.assumed_paths,
            "users": self.users,
            "skipped_detail": [s.__dict__ for s in self.skipped],
        }


class Replayer:
    """Feeds records to `decide`, remembering only what later decisions need (paths, key ids)."""

    def __init__(
        self,
        allowlist: Allowlist,
        *,
        own_roles: OwnIdentity | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        live_facts: Callable[[str, bool, bool], UserFacts | None] | None = None,
    ) -> None:
        self.allowlist = allowlist
        self.own_roles = own_roles or OwnIdentity.pinned(home_account="")
        self.since, self.until = since, until
        self.live_facts = live_facts
        self.summary = ReplaySummary()
        self._paths: dict[str, str] = {}
        self._keys: dict[str, set[str]] = {}

    # -- files -------------------------------------------------------------------------------

    def replay(self, paths: Iterable[str | os.PathLike[str]]) -> ReplaySummary:
        for path in iter_log_files(paths, self.summary):
            self.replay_file(path)
        return self.summary

    def replay_file(self, path: Path) -> None:
        self.summary.files += 1
        try:
            raw = path.read_bytes()
            if path.name.endswith(".gz") or raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            self._skip(path, "file", f"cannot read or decompress: {exc}")
            return
        if _skippable(raw):
            self.summary.records += raw.count(_RECORD_MARK)
            return
        if path.name.removesuffix(".gz").endswith((".jsonl", ".ndjson")):
            self._consume(path, self._json_lines(path, raw))
            return
        try:
            document = json.loads(raw)
        except UnicodeDecodeError:
            self._skip(path, "file", "not UTF-8 text")
            return
        except ValueError as exc:
            if raw.lstrip()[:1] == b"{" and "Extra data" in str(exc):
                self._consume(path, self._json_lines(path, raw))
            else:
                self._skip(path, "file", f"not JSON: {exc}")
            return
        records = document.get("Records") if isinstance(document, dict) else None
        if not isinstance(records, list):
            self._consume(path, _unwrap(document, "record"))
            return
        # The hot loop (a CloudTrail log object): one type check and one lookup per record.
        self.summary.records += len(records)
        for index, record in enumerate(records):
            if type(record) is not dict:
                self._skip(path, f"Records[{index}]", "record is not a JSON object")
            elif record.get("eventSource") == IAM_EVENT_SOURCE:
                self._replay_record(path, f"Records[{index}]", record)

    def _consume(self, path: Path, records: Iterable[tuple[str, Any]]) -> None:
        for position, record in records:
            self.summary.records += 1
            if not isinstance(record, dict):
                self._skip(path, position, "record is not a JSON object")
            elif record.get("eventSource") == IAM_EVENT_SOURCE:
                self._replay_record(path, position, record)

    def _json_lines(self, path: Path, raw: bytes) -> Iterator[tuple[str, Any]]:
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
            except ValueError as exc:
                self.summary.records += 1
                self._skip(path, f"line {number}", f"not JSON: {exc}")
                continue
            yield from _unwrap(document, f"line {number}")

    # -- records -----------------------------------------------------------------------------

    def _replay_record(self, path: Path, position: str, record: Mapping[str, Any]) -> None:
        try:
            event = parse_record(record)
        except MalformedEventError as exc:
            self._skip(path, position, str(exc))
            return
        if (self.since and event.event_time < self.since) or (self.until and event.event_time >= self.until):
            return
        self.summary.iam_events += 1
        decision = decide(
            event, self.allowlist, own_roles=self.own_roles, facts=self._facts(event), mode=self.allowlist.mode
        )
        self._remember(event.event_name, event.error_code, event.target_user_name, event, decision)
        self.summary.decisions[decision.verdict] += 1
        key = (decision.verdict, decision.rule)
        self.summary.rules[key] += 1
        self.summary.examples.setdefault(key, decision.reason)
        if decision.verdict in (QUARANTINE, ALERT):
            self.summary.users.append(
                {
                    "account": event.account,
                    "user": event.target_user_name,
                    "event_name": event.event_name,
                    "event_id": event.event_id,
                    "event_time": event.event_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "actor": event.actor.principal_arn or event.actor.display,
                    "decision": decision.verdict,
                    "reason": decision.reason,
                }
            )

    def _facts(self, event: Any) -> UserFacts | None:
        needed = facts_needed(event, self.allowlist)
        if not needed:
            return None
        user = event.target_user_name
        if self.live_facts is not None:
            return self.live_facts(user, needed.path, needed.keys)
        keys = self._keys.get(user, set()) | ({event.access_key_id} if event.access_key_id else set())
        path = self._paths.get(user)
        if path is None and needed.path:
            # The user was created before the replayed period; the live guardrail would read the
            # path from IAM. Assume it fits (counted and reported), or use --live to check.
            path = next((i.path for i in self.allowlist.candidates(user) if i.path), None)
            self.summary.assumed_paths += 1
        return UserFacts(path=path, active_key_ids=tuple(sorted(keys)) if needed.keys else None)

    def _remember(self, name: str, error: str, user: str, event: Any, decision: Decision) -> None:
        if error or not user:
            return
        if name == CREATE_USER:
            self._paths[user] = event.target_user_path or "/"
            self._keys.pop(user, None)
        elif name == CREATE_ACCESS_KEY and event.access_key_id and not decision.steps:
            self._keys.setdefault(user, set()).add(event.access_key_id)

    def _skip(self, path: Path, position: str, reason: str) -> None:
        self.summary.skipped.append(Skipped(str(path), position, reason[:300]))


def _unwrap(document: Any, position: str) -> Iterator[tuple[str, Any]]:
    """Records from a CloudTrail log object, an EventBridge envelope, a list, or a bare record."""
    if isinstance(document, dict):
        records = document.get("Records")
        if isinstance(records, list):
            for index, record in enumerate(records):
                yield f"Records[{index}]", record
            return
        if "detail" in document and "detail-type" in document:
            yield position, document.get("detail")
            return
        yield position, document
        return
    if isinstance(document, list):
        for index, item in enumerate(document):
            yield from _unwrap(item, f"[{index}]")
        return
    yield position, document


def iter_log_files(paths: Iterable[str | os.PathLike[str]], summary: ReplaySummary) -> Iterator[Path]:
    """Named files as given; folders walked recursively for CloudTrail-shaped file names."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.endswith(LOG_SUFFIXES):
                        yield Path(root) / name
        elif path.is_file():
            yield path
        else:
            summary.skipped.append(Skipped(str(path), "path", "no such file or folder"))


def format_table(summary: ReplaySummary) -> str:
    lines = [
        f"{summary.files} file(s), {summary.records} record(s), {summary.iam_events} IAM event(s) evaluated, "
        f"{len(summary.skipped)} skipped",
        "",
        f"{'DECISION':<11} {'RULE':<28} {'COUNT':>7}  EXAMPLE REASON",
    ]
    for key, count in sorted(summary.rules.items(), key=lambda kv: (-kv[1], kv[0])):
        verdict, rule = key
        lines.append(f"{verdict:<11} {rule:<28} {count:>7}  {summary.examples[key][:110]}")
    if summary.assumed_paths:
        lines.append(
            f"note: {summary.assumed_paths} event(s) for users created before the replayed period: their IAM "
            "path was assumed to fit (use --live to read it)"
        )
    acted = [u for u in summary.users if u["decision"] == QUARANTINE]
    if acted:
        lines += [
            "",
            "Would have been quarantined:",
            f"{'TIME':<21} {'ACCOUNT':<13} {'USER':<32} {'EVENT':<20} CREATED BY",
        ]
        lines += [
            f"{u['event_time']:<21} {u['account']:<13} {u['user'][:32]:<32} {u['event_name']:<20} {u['actor']}"
            for u in acted
        ]
    if summary.skipped:
        lines += ["", "Skipped:"] + [f"  {s.path} [{s.position}]: {s.reason}" for s in summary.skipped[:50]]
        if len(summary.skipped) > 50:
            lines.append(f"  … and {len(summary.skipped) - 50} more")
    return "\n".join(lines)
