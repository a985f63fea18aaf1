"""`make bench` must keep working: its tiny mode runs every figure (timings are not asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_bench_tiny_mode_reports_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--tiny"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for figure in (
        "cold start to first decision / bare boto3 floor",
        "AWS calls, unapproved CreateUser (enforce) | 5 + 1 Slack post",
        "decision throughput (parse + decide)",
        "replay / decompress + json.loads floor",
        "replay peak memory",
        "sweep, 30 users",
        "| CreateUser, approved integration | approve | 3 |",
        "| duplicate delivery | duplicate | 1 |",
        "## Organization scale",
        "| 4 | 6 | 1 |",
        "| 4 | 6 | 8 |",
        "| 1,000 |",
        "| 5,000 |",
        "Burst: 12 unapproved CreateUser events from 2 creators → 12 quarantined",
        "every user named: yes",
    ):
        assert figure in out, figure
