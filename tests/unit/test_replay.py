"""Replay: real records, generated gz logs, every bad-input case, the JSON contract and exit codes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from chalicelib.cli import main
from chalicelib.replay import Replayer
from devtools.synth import envelope, write_logs
from tests.helpers import ALLOWLIST_YAML, DEVELOPER, REAL_FIXTURES, TERRAFORM, allowlist, record
from tests.unit.test_policy import REAL_EXPECTATIONS

real = pytest.mark.skipif(not REAL_FIXTURES.is_dir(), reason="../shared/fixtures absent")


@pytest.fixture
def allowlist_file(tmp_path: Path) -> Path:
    path = tmp_path / "allowlist.yaml"
    path.write_text(ALLOWLIST_YAML)
    return path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["replay", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


@real
def test_real_fixtures_replay_like_the_unit_expectations(
    allowlist_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = run_json(capsys, str(REAL_FIXTURES), "--allowlist", str(allowlist_file))
    files = sorted(REAL_FIXTURES.glob("*.json"))
    assert code == 0 and result["skipped"] == 0
    assert result["records"] == len(files)
    assert result["iam_events"] == len(files) - 2  # ConsoleLogin and GetCallerIdentity are not IAM
    by_id = {u["event_id"]: u["decision"] for u in result["users"]}
    for name, verdict, _ in REAL_EXPECTATIONS:
        raw = json.loads((REAL_FIXTURES / name).read_text())
        detail = raw.get("detail", raw)
        if verdict in ("quarantine", "alert") and "eventID" in detail:
            assert by_id[detail["eventID"]] == verdict, name
    expected = {"quarantine": 0, "alert": 0}
    for _, verdict, _ in REAL_EXPECTATIONS:
        if verdict in expected:
            expected[verdict] += 1
    assert {k: result["decisions"].get(k, 0) for k in expected} == expected


def test_generated_gz_logs(tmp_path: Path, allowlist_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = write_logs(tmp_path / "logs", 3000, per_file=200)
    assert len(files) == 15 and all(f.name.endswith(".json.gz") for f in files)
    code, result = run_json(capsys, str(tmp_path / "logs"), "--allowlist", str(allowlist_file))
    assert code == 0 and result["records"] == 3000 and result["skipped"] == 0
    assert 20 < result["iam_events"] < 150
    assert sum(result["decisions"].values()) == result["iam_events"]
    assert set(result["decisions"]) <= {"approve", "quarantine", "alert", "ignore"}
    user = result["users"][0]
    assert set(user) == {"account", "user", "event_name", "event_id", "event_time", "actor", "decision", "reason"}


def test_formats_envelope_jsonl_and_bare_list(tmp_path: Path) -> None:
    bare = record("CreateUser", "alice", DEVELOPER)
    (tmp_path / "envelope.json").write_text(json.dumps(envelope(bare)))
    lines = [json.dumps(record("CreateUser", f"bob-{n}", DEVELOPER)) for n in range(3)]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "list.json").write_text(
        json.dumps([record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/")])
    )
    (tmp_path / "notes.txt").write_text("not a log")
    summary = Replayer(allowlist()).replay([tmp_path])
    assert (summary.records, summary.iam_events, len(summary.skipped)) == (5, 5, 0)
    assert summary.decisions == {"quarantine": 4, "approve": 1}


def test_bad_input_is_reported_with_file_and_position_and_the_replay_goes_on(
    tmp_path: Path, allowlist_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = record("CreateUser", "alice", DEVELOPER)
    broken = record("CreateUser", "bob", DEVELOPER)
    del broken["eventTime"]
    (tmp_path / "a-corrupt.json.gz").write_bytes(gzip.compress(b'{"Records": []}')[:-8] + b"garbage!")
    (tmp_path / "b-not-json.json").write_text("{this is not json")
    (tmp_path / "c-records.json.gz").write_bytes(gzip.compress(json.dumps({"Records": [good, broken, 7]}).encode()))
    (tmp_path / "d-lines.jsonl").write_text(json.dumps(good | {"eventID": "x2"}) + "\n{oops\n")
    code, result = run_json(capsys, str(tmp_path), "--allowlist", str(allowlist_file))
    assert code == 1
    positions = {(Path(s["path"]).name, s["position"]) for s in result["skipped_detail"]}
    assert positions == {
        ("a-corrupt.json.gz", "file"),
        ("b-not-json.json", "file"),
        ("c-records.json.gz", "Records[1]"),
        ("c-records.json.gz", "Records[2]"),
        ("d-lines.jsonl", "line 2"),
    }
    assert result["skipped"] == 5 and result["decisions"] == {"quarantine": 2}
    assert "eventTime" in next(s["reason"] for s in result["skipped_detail"] if s["position"] == "Records[1]")


def test_since_until_and_missing_paths(
    tmp_path: Path, allowlist_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_logs(tmp_path, 2000, per_file=500)
    _, everything = run_json(capsys, str(tmp_path), "--allowlist", str(allowlist_file))
    _, early = run_json(capsys, str(tmp_path), "--allowlist", str(allowlist_file), "--until", "2026-11-01T00:30:00Z")
    _, late = run_json(capsys, str(tmp_path), "--allowlist", str(allowlist_file), "--since", "2026-11-01T00:30:00Z")
    assert early["iam_events"] + late["iam_events"] == everything["iam_events"]
    assert 0 < early["iam_events"] < everything["iam_events"]
    assert all(u["event_time"] < "2026-11-01T00:30:00Z" for u in early["users"])
    code, result = run_json(capsys, str(tmp_path / "absent"), "--allowlist", str(allowlist_file))
    assert code == 1 and result["skipped_detail"][0]["reason"] == "no such file or folder"


def test_invalid_allowlist_cannot_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 9\n")
    assert main(["replay", str(tmp_path), "--allowlist", str(bad)]) == 2
    assert "unsupported value 9" in capsys.readouterr().err


def test_table_lists_who_created_the_quarantined_users(
    tmp_path: Path, allowlist_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "one.json").write_text(json.dumps({"Records": [record("CreateUser", "alice", DEVELOPER)]}))
    assert main(["replay", str(tmp_path), "--allowlist", str(allowlist_file)]) == 0
    out = capsys.readouterr().out
    assert "unapproved_user" in out and "Would have been quarantined:" in out
    assert "alice" in out and "AWSReservedSSO_Developer_0123abcd" in out


def test_key_counts_follow_the_replayed_history() -> None:
    events = [
        record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"),
        record("CreateAccessKey", "svc-datadog", TERRAFORM, access_key_id="AKIA1"),
        record("CreateAccessKey", "svc-datadog", TERRAFORM, access_key_id="AKIA2"),
    ]
    replayer = Replayer(allowlist())
    for index, raw in enumerate(events):
        replayer._replay_record(Path("mem"), str(index), raw)
    assert [u["decision"] for u in replayer.summary.users] == ["alert"]
    assert replayer.summary.decisions == {"approve": 2, "alert": 1}


def test_cloudtrail_objects_without_iam_events_are_counted_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    noise = [record("CreateUser", f"u{n}", DEVELOPER) | {"eventSource": "s3.amazonaws.com"} for n in range(7)]
    compact = json.dumps({"Records": noise}, separators=(",", ":")).encode()
    (tmp_path / "noise.json.gz").write_bytes(gzip.compress(compact))
    pretty = json.dumps({"Records": noise}, indent=2).encode()  # not as AWS writes it: parsed
    (tmp_path / "pretty.json").write_bytes(pretty)
    parsed: list[int] = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda raw, *a, **k: parsed.append(len(raw)) or real_loads(raw, *a, **k))
    summary = Replayer(allowlist()).replay([tmp_path])
    assert (summary.records, summary.iam_events, summary.skipped) == (14, 0, [])
    assert parsed == [len(pretty)]
