"""Local stand-ins for the demo and tests: moto in server mode and a Slack receiver.

Both are real HTTP servers on loopback; nothing here talks to the internet.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

REPO = Path(__file__).resolve().parent.parent

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def stage_environment(stage: str = "dev") -> dict[str, str]:
    """A Chalice stage's environment variables from .chalice/config.json (as Lambda would have them)."""
    config = json.loads((REPO / ".chalice" / "config.json").read_text())
    return dict(config["stages"][stage].get("environment_variables", {}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """`moto_server` in a child process on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        env = {**os.environ, **FAKE_CREDENTIALS}
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):  # noqa: S310 - loopback http
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start within 30 s")

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback http
            pass

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def environment(self) -> dict[str, str]:
        """What a boto3 process needs to talk to this server."""
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SlackReceiver:
    """A local HTTP server that records what a Slack webhook or Web API would receive.

    `behaviour` is a list of (status, delay_seconds, headers) used for the next requests in turn;
    when it is empty the receiver answers 200 "ok" (or `{"ok": true}` on /api/ paths).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.behaviour: list[tuple[int, float, Mapping[str, str]]] = []
        #: JSON answers for Web API paths (e.g. "/api/users.info"); others answer {"ok": true}.
        self.api_responses: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                receiver._record(self.path, dict(self.headers.items()), body)
                status, delay, headers = receiver._next()
                if delay:
                    time.sleep(delay)
                path = self.path.split("?", 1)[0]
                api = path.startswith("/api/")
                if api:
                    payload = json.dumps(receiver.api_responses.get(path, {"ok": status == 200}))
                else:
                    payload = "ok" if status == 200 else "error"
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json" if api else "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, path: str, headers: dict[str, str], body: str) -> None:
        parsed: Any
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {k: v[0] for k, v in parse_qs(body).items()}
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body, "json": parsed})

    def _next(self) -> tuple[int, float, Mapping[str, str]]:
        with self._lock:
            return self.behaviour.pop(0) if self.behaviour else (200, 0.0, {})

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["json"] for r in self.requests]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.behaviour.clear()
            self.api_responses.clear()

    def start(self) -> SlackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SlackReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
