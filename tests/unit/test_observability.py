"""Structured logging in a Lambda-like process: one JSON line per record, none through the root handler."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

SCRIPT = """
import logging, sys
# Lambda's runtime installs a plain-text handler on the root logger before importing the handler.
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="ROOT %(message)s")
from chalicelib import observability
observability.setup()
observability.correlate("ev-123")
logging.getLogger("chalicelib.guardrail").info("event handled", extra={"user": "bob"})
logging.getLogger("somelib").warning("other libraries still reach the root handler")
observability.count(observability.QUARANTINED)
observability.flush()
observability.flush()  # nothing pending: nothing written
"""


def test_one_json_line_per_record_and_one_emf_blob() -> None:
    done = subprocess.run(  # noqa: S603 - our interpreter, a fixed script
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2, done.stdout
    log, metrics = lines
    assert log["message"] == "event handled" and log["correlation_id"] == "ev-123" and log["user"] == "bob"
    assert log["level"] == "INFO" and log["service"] == "iam-user-guardrail"
    assert (
        metrics["Quarantined"] == [1.0] and metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "IamUserGuardrail"
    )
    assert "event handled" not in done.stderr  # not a second, plain-text line through Lambda's handler
    assert "ROOT other libraries still reach the root handler" in done.stderr
