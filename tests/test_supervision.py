"""The reconcile loop with real processes: restart policies, give-up, caps, floods."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from daemon_kit import header, running, task, until
from factoryd.core.lifecycle import TaskPhase

pytestmark = pytest.mark.anyio

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"


async def test_service_is_restarted_after_kill_minus_nine(tmp_path: Path) -> None:
    text = header(tmp_path) + task(
        "svc", SLEEPER, restart="always", backoff={"initial": "10ms", "max": "50ms"}
    )
    async with running(tmp_path, text) as rec:
        await until(lambda: _pid(rec, "svc") is not None, what="first run")
        first = _pid(rec, "svc")
        os.kill(first, signal.SIGKILL)
        await until(lambda: _pid(rec, "svc") not in (None, first), what="replacement")
        rt = rec.tasks["svc"]
        assert rt.runs == 2 and rt.restarts == 1
        assert rt.last_outcome == "failed"
        assert psutil.pid_exists(_pid(rec, "svc"))


@pytest.mark.parametrize(
    ("restart", "code", "phase", "runs"),
    [
        ("on-failure", "raise SystemExit(0)", TaskPhase.SUCCEEDED, 1),
        ("never", "raise SystemExit(1)", TaskPhase.FAILED, 1),
        ("on-failure", "raise SystemExit(1)", TaskPhase.GAVE_UP, 3),
        ("always", "raise SystemExit(0)", TaskPhase.GAVE_UP, 3),
    ],
)
async def test_restart_policies(
    tmp_path: Path, restart: str, code: str, phase: TaskPhase, runs: int
) -> None:
    text = header(tmp_path) + task(
        "t", code, restart=restart, max_restarts=2, backoff={"initial": "10ms", "max": "20ms"}
    )
    async with running(tmp_path, text) as rec:
        rt = rec.tasks["t"]
        await until(lambda: rt.phase is phase and rt.run is None, what=f"phase {phase}")
        assert rt.runs == runs


async def test_give_up_keeps_its_reason_until_reset(tmp_path: Path) -> None:
    text = header(tmp_path) + task(
        "crash",
        "raise SystemExit(7)",
        max_restarts=2,
        restart_window="1h",
        backoff={"initial": "10ms", "max": "20ms"},
    )
    async with running(tmp_path, text) as rec:
        rt = rec.tasks["crash"]
        await until(lambda: rt.phase is TaskPhase.GAVE_UP, what="give-up")
        assert "2 restarts within 3600s" in rt.reason and "exit status 7" in rt.reason
        runs = rt.runs
        rec.wake("test")
        await until(lambda: rec.passes > 3)
        assert rt.phase is TaskPhase.GAVE_UP and rt.runs == runs
        assert rec.table.reset("crash")
        await until(lambda: rt.runs > runs, what="a run after reset")


async def test_timeout_and_stall_end_runs_with_distinct_outcomes(tmp_path: Path) -> None:
    text = (
        header(tmp_path)
        + task("slow", SLEEPER, kind="oneshot", timeout="300ms", restart="never")
        + task(
            "quiet",
            "import time; time.sleep(60)",
            kind="oneshot",
            stall_timeout="300ms",
            restart="never",
        )
        + task(
            "chatty",
            "import time\nfor i in range(10):\n print(i, flush=True); time.sleep(0.1)",
            kind="oneshot",
            stall_timeout="300ms",
            restart="never",
        )
    )
    async with running(tmp_path, text) as rec:
        await until(
            lambda: all(
                rec.tasks[n].run is None and rec.tasks[n].runs for n in ("slow", "quiet", "chatty")
            ),
            what="three runs",
        )
        assert rec.tasks["slow"].last_outcome == "timed_out"
        assert rec.tasks["quiet"].last_outcome == "stalled"
        assert rec.tasks["chatty"].last_outcome == "succeeded"
        assert rec.tasks["slow"].phase is TaskPhase.FAILED


async def test_missing_binary_backs_off_instead_of_hot_looping(tmp_path: Path) -> None:
    text = header(tmp_path) + (
        '[[tasks]]\nname = "ghost"\nargv = ["/no/such/agent"]\nrestart = "always"\n'
        'max_restarts = 3\nbackoff = { initial = "200ms", max = "1s", jitter = false }\n'
    )
    async with running(tmp_path, text) as rec:
        rt = rec.tasks["ghost"]
        await until(lambda: rt.runs >= 2, what="second attempt")
        assert rt.phase in (TaskPhase.BACKING_OFF, TaskPhase.RUNNING, TaskPhase.PENDING)
        assert rt.last_outcome == "spawn_failed"
        assert (
            "executable not found: /no/such/agent" in rt.reason
            or rt.phase is not TaskPhase.BACKING_OFF
        )
        await until(lambda: rt.phase is TaskPhase.GAVE_UP, what="give-up")
        assert rt.runs == 4


async def test_bad_workdir_fails_that_run_only(tmp_path: Path) -> None:
    text = (
        header(tmp_path)
        + task("lost", "print(1)", workdir=str(tmp_path / "missing"), restart="never")
        + task("fine", SLEEPER)
    )
    async with running(tmp_path, text) as rec:
        await until(lambda: rec.tasks["lost"].phase is TaskPhase.FAILED, what="failed run")
        assert "workdir" in rec.tasks["lost"].reason
        await until(lambda: _pid(rec, "fine") is not None, what="healthy task running")


async def test_concurrency_caps_hold_under_a_hundred_tasks(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    code = (
        "import os, time, pathlib\n"
        f"d = pathlib.Path({str(ledger)!r})\n"
        "me = d / str(os.getpid())\n"
        "me.write_text(f'{time.monotonic()} ')\n"
        "time.sleep(0.15)\n"
        "me.write_text(me.read_text() + f'{time.monotonic()}')\n"
    )
    text = header(tmp_path, max_concurrent=6).replace(
        'name = "local"\ncli = "command"', 'name = "local"\ncli = "command"\nmax_concurrent = 4'
    ) + "".join(task(f"t{i:03}", code, kind="oneshot") for i in range(100))
    async with running(tmp_path, text) as rec:
        peak = 0

        def done() -> bool:
            nonlocal peak
            peak = max(peak, len(rec.runs))
            return all(rt.phase is TaskPhase.SUCCEEDED for rt in rec.tasks.values())

        await until(done, timeout=60, what="100 tasks")
    spans = [tuple(map(float, f.read_text().split())) for f in ledger.iterdir()]
    assert len(spans) == 100
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    alive = most = 0
    for _, delta in events:
        alive += delta
        most = max(most, alive)
    assert most <= 4 and peak <= 4
    assert most >= 3  # the cap is used, not just respected


async def test_output_flood_is_capped_and_the_loop_stays_responsive(tmp_path: Path) -> None:
    flood = (
        "import sys\nchunk = ('{\"x\": 1}' * 100 + '\\n').encode() * 100\n"
        "for _ in range(1280):\n    sys.stdout.buffer.write(chunk)\n"
    )
    text = (
        header(tmp_path, run_log_max_bytes="1MiB")
        + task("flood", flood, kind="oneshot", restart="never")
        + task("svc", SLEEPER)
    )
    me = psutil.Process()
    rss_before = me.memory_info().rss
    async with running(tmp_path, text) as rec:
        await until(lambda: _pid(rec, "svc") is not None, what="service")
        passes = rec.passes
        await until(
            lambda: rec.tasks["flood"].phase is TaskPhase.SUCCEEDED,
            timeout=60,
            what="flood to finish",
        )
        # The loop kept passing while 100 MB went through it.
        assert rec.passes > passes
        logs = list((tmp_path / "logs" / "flood").iterdir())
        assert len(logs) == 1 and logs[0].stat().st_size < 1024 * 1024 + 200
        total = 1280 * 100 * len('{"x": 1}' * 100 + "\n")
        dropped = rec.metrics.output_dropped.labels("command")._value.get()
        assert dropped == total - 1024 * 1024
    assert me.memory_info().rss - rss_before < 50 * 1024 * 1024


def _pid(rec, name: str) -> int | None:
    rt = rec.tasks[name]
    run = rec.runs.get(rt.run) if rt.run else None
    return run.pid if run is not None else None
