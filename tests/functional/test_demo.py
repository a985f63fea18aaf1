"""`make demo` must keep working: run it as a user would and check what it prints."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_demo_runs_the_whole_flow_and_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chalicelib.cli", "demo"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "decision: approve (info) svc-datadog matches integration 'datadog'" in out
    assert "guardrail:status=approved" in out
    assert "decision: quarantine (high) no integration in the allowlist matches user name 'dana-debug'" in out
    assert "policies ['iam-user-guardrail-quarantine']" in out
    assert "decision: quarantine (critical)" in out and "=Inactive" in out
    assert "== IAM user quarantined: dana-debug ==" in out
    assert "&lt;!channel&gt; curl/8.4.0" in out  # the injected mention is shown escaped
    assert "decision: ignore (info) CreateUser failed with AccessDenied" in out
    assert "duplicate delivery: nothing done, no second alert" in out
    assert "POST /slack/interactions (signed): HTTP 200" in out
    assert "message replaced: :white_check_mark: Approved by <@U0123SECLEAD> until" in out
    assert "guardrail:status=exception" in out
    assert "message replaced: :lock: Kept quarantined by <@U0123SECLEAD>" in out
    assert "ephemeral reply to the clicker: :no_entry: already decided" in out
    assert "Done: moto server stopped" in out
