"""Run a real Reconciler (real processes) inside a test, and wait on its state."""

from __future__ import annotations

import json
import random
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from daemon.config import load_config
from daemon.process import become_subreaper
from daemon.reconciler import Reconciler

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
