"""Run a real Reconciler (real processes) inside a test, and wait on its state."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil
import pytest
from factoryd.config.loader import load_config
from factoryd.proc.tree import become_subreaper
from factoryd.reconcile.reconciler import Reconciler
from proc_kit import processes_with_env

PY = sys.executable


def header(tmp_path: Path, **daemon: object) -> str:
    settings = {
        "state_dir": str(tmp_path / "state"),
        "log_dir": str(tmp_path / "logs"),
        "metrics_listen": "off",
        **daemon,
    }
    lines = ["[daemon]"]
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value) if isinstance(value, str) else value}")
    lines += [
        "",
        "[[pools]]",
        'name = "local"',
        'unit = "runs"',
        "limit = 1000000",
        "",
        "[[arms]]",
        'name = "local"',
        'cli = "command"',
        'pools = ["local"]',
        "",
    ]
    return "\n".join(lines) + "\n"


def task(name: str, code: str, **kw: object) -> str:
    """A [[tasks]] entry running `python -c code`."""
    lines = ["[[tasks]]", f'name = "{name}"', f"argv = {json.dumps([PY, '-c', code])}"]
    for key, value in kw.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        elif isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n\n"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "factoryd.toml"
    path.write_text(textwrap.dedent(text))
    return path


@asynccontextmanager
async def running(tmp_path: Path, text: str, seed: int = 7) -> AsyncIterator[Reconciler]:
    become_subreaper()
    config = load_config(write_config(tmp_path, text))
    rec = Reconciler(config, rng=random.Random(seed))
    async with anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        with anyio.fail_after(10):
            await rec.started.wait()
        try:
            yield rec
        finally:
            rec.request_stop()


async def until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll reconciler state with a deadline; fails the test with `what`."""
    try:
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


ROOT = Path(__file__).resolve().parent.parent


def factoryd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line as an operator does: `python -m factoryd ARGS`."""
    return subprocess.run(
        [sys.executable, "-m", "factoryd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def start_daemon(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "factoryd", "run", "--config", str(config), "--log-format", "json"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )


def events(log: Path) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def count_events(log: Path, event: str) -> int:
    """How many lines of a daemon's JSON log are `event` so far."""
    return sum(e.get("event") == event for e in events(log))


def tagged(tag: str) -> list[psutil.Process]:
    """Every live process a test marked with env TEST_TAG=tag (inherited by children)."""
    return processes_with_env("TEST_TAG", tag)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_tool(name: str) -> str:
    """The path of a tool the test needs; a failure in CI, a printed skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it: scripts/install-system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
