"""A real daemon with its status page, and plain HTTP against it, for the web tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_kit import events, free_port, header, start_daemon, write_config

CHROMIUM = "/usr/bin/chromium"
#: Flags that run Debian's chromium headless here (no sandbox in a container,
#: no GPU, no network chatter of its own).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_chromium() -> str:
    """Debian's chromium: a clear failure in CI when it is missing, a skip elsewhere."""
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"{CHROMIUM} is missing (make test installs it: scripts/install-system-deps)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install -c constraints.txt -e '.[test]')"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return CHROMIUM


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - http://127.0.0.1 only
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Live:
    url: str
    port: int
    log: Path
    sock: Path
    tmp: Path

    def status(self) -> dict:
        reply = request(self.url + "/api/status")
        assert reply.status == 200, reply.body
        return reply.json()  # type: ignore[return-value]

    def task(self, name: str) -> dict:
        return next(t for t in self.status()["tasks"] if t["name"] == name)

    def events(self, name: str) -> list[dict]:
        return [e for e in events(self.log) if e.get("event") == name]


@contextmanager
def live_daemon(
    tmp_path: Path, body: str, web: str = "", host: str = "127.0.0.1", **daemon: object
) -> Iterator[Live]:
    """Start `factoryd run` on a free port of `host` with `body` ([[tasks]] ...) and `[web]`
    keys; reached at 127.0.0.1 either way."""
    port = free_port()
    text = header(tmp_path, metrics_listen=f"{host}:{port}", loop_interval="1s", **daemon)
    text += body + ("\n[web]\n" + web + "\n" if web else "")
    config = write_config(tmp_path, text)
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    live = Live(
        f"http://127.0.0.1:{port}", port, log, tmp_path / "state" / "control.sock", tmp_path
    )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the daemon exited: {log.read_text()[-2000:]}")
            try:
                return request(live.url + "/healthz").status == 200
            except OSError:
                return False

        wait_for(up, 20, "the daemon's /healthz")
        yield live
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fake_claude(tmp_path: Path, fixture: Path, gate: Path) -> Path:
    """An executable for a claude arm: waits for `gate`, then prints a recorded 429 run."""
    exe = tmp_path / "fake-claude"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, time\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n"
        f"sys.stdout.write(open({str(fixture)!r}).read())\n"
        "sys.exit(1)\n"
    )
    exe.chmod(0o755)
    return exe
