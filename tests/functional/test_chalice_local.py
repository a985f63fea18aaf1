"""The approval route over real HTTP: `chalice local` on a free loopback port, moto server behind it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.devserver import MotoServer, free_port
from tests.functional.approval_helpers import interaction_body, signed_headers, store_slack_secret
from tests.functional.conftest import STAGE_ENV, Aws
from tests.helpers import MALLORY, REPO, record

CHALICE = Path(sys.executable).parent / "chalice"


@pytest.fixture
def chalice_local(aws: Aws, moto_server: MotoServer) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        **moto_server.environment(),
        **STAGE_ENV,
        "GUARDRAIL_ALLOWLIST": str(aws.allowlist_path),
        "GUARDRAIL_SLACK_RESPONSE_HOSTS": "127.0.0.1",
    }
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        [str(CHALICE), "local", "--host", "127.0.0.1", "--port", str(port), "--stage", "dev", "--no-autoreload"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"chalice local exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(f"{url}/slack/interactions", timeout=1)  # noqa: S310 - loopback
            except urllib.error.HTTPError:
                break  # the server answers (405 for GET): it is up
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def post(url: str, body: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_signed_click_over_real_http_releases_the_user(aws: Aws, chalice_local: str) -> None:
    store_slack_secret(aws)
    aws.iam.create_user(UserName="bob")
    key = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    raw = record("CreateAccessKey", "bob", MALLORY, access_key_id=key)
    aws.invoke(raw)
    assert aws.user_state("bob")["keys"] == {key: "Inactive"}
    value = {"a": "123456789012", "u": "bob", "e": raw["eventID"]}
    body = interaction_body(aws, "guardrail_approve_7", value)

    assert post(f"{chalice_local}/slack/interactions", body, signed_headers(body, secret="forged")) == 401
    assert aws.user_state("bob")["policies"] == ["iam-user-guardrail-quarantine"]

    assert post(f"{chalice_local}/slack/interactions", body, signed_headers(body)) == 200
    state = aws.user_state("bob")
    assert state["policies"] == []
    assert state["keys"] == {key: "Active"}
    assert state["tags"]["guardrail:status"] == "exception"
    update = [r["json"] for r in aws.slack.requests if r["path"].startswith("/response/")]
    assert "Approved by <@U0SECLEAD>" in update[-1]["text"]
