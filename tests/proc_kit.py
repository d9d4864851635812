"""Helpers for tests that run real processes: specs, waiting with deadlines, leak checks."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import psutil
from factoryd.core.outcome import RunResult, StopRequest
from factoryd.proc.capture import RunLog
from factoryd.run.agents.base import Parser
from factoryd.run.runner import Runner
from factoryd.run.runspec import RunSpec

PY = sys.executable


def py(code: str) -> tuple[str, ...]:
    return (PY, "-c", code)


def unique_run_id() -> str:
    """A run id no other test run on this host uses: tests hunt processes by their
    run marker, so a fixed id would let two suites find (and fail on) each other's."""
    return f"t-{uuid.uuid4().hex[:16]}"


def spec(tmp_path: Path, argv: tuple[str, ...], run_id: str | None = None, **kw: object) -> RunSpec:
    run_id = run_id or unique_run_id()
    env = {"PATH": os.environ.get("PATH", ""), "FACTORYD_RUN_ID": run_id}
    return RunSpec(
        run_id=run_id,
        task="t",
        arm="a",
        cli="command",
        argv=argv,
        env=env,
        cwd=str(tmp_path),
        log=RunLog(tmp_path / f"{run_id}.log", int(kw.pop("log_cap", 1 << 20))),
        parser=kw.pop("parser", Parser()),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def run_to_end(
    s: RunSpec, stop_after: float | None = None, stop: StopRequest | None = None
) -> tuple[RunResult, Runner]:
    runner = Runner(s)
    result: list[RunResult] = []

    async def go() -> None:
        result.append(await runner.run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        if stop_after is not None and stop is not None:
            await anyio.sleep(stop_after)
            runner.request_stop(stop)
    return result[0], runner


def processes_with_env(key: str, value: str) -> list[psutil.Process]:
    """Every live (not zombie) process whose environment carries key=value."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(key) == value:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def processes_with_marker(marker: str) -> list[psutil.Process]:
    """Every live process of run `marker` (FACTORYD_RUN_ID)."""
    return processes_with_env("FACTORYD_RUN_ID", marker)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` with a deadline (for conditions nothing can await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def await_for(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
