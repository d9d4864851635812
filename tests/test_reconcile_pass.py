"""Reconcile passes with a fake runner and a fake clock: no process, no waiting.

Each test drives the loop's pass by hand (see reconcile_kit.py) and checks
one rule of the loop: capacity, restart policy, backoff, cancellation, and
that the index of tasks in motion always equals a full scan.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from daemon_kit import header, task
from factoryd.core.lifecycle import TERMINAL, TaskPhase
from factoryd.core.outcome import Outcome
from factoryd.reconcile.planner import ARMS_AT_CAP, WAITING_FOR_SLOT
from reconcile_kit import Harness

pytestmark = pytest.mark.anyio


async def test_no_more_runs_than_max_concurrent_and_the_rest_wait_for_a_slot(
    tmp_path: Path,
) -> None:
    text = header(tmp_path, max_concurrent=2)
    text += "".join(task(f"s{i}", "pass") for i in range(5))
    h = Harness(tmp_path, text)
    h.step()
    assert len(h.rec.runs) == 2
    waiting = [t for t in h.rec.tasks.values() if t.run is None]
    assert len(waiting) == 3
    assert all(t.phase is TaskPhase.PENDING and t.reason == WAITING_FOR_SLOT for t in waiting)
    first = next(t.name for t in h.rec.tasks.values() if t.run is not None)
    await h.end(first, Outcome.FAILED, duration=120.0)
    h.step()
    assert len(h.rec.runs) == 2  # the freed slot went to a waiting task at once


async def test_an_arm_at_its_own_cap_holds_the_task_without_asking_the_router(
    tmp_path: Path,
) -> None:
    text = header(tmp_path).replace('pools = ["local"]', 'pools = ["local"]\nmax_concurrent = 1')
    text += task("a", "pass") + task("b", "pass")
    h = Harness(tmp_path, text)
    h.step()
    assert len(h.rec.runs) == 1
    held = next(t for t in h.rec.tasks.values() if t.run is None)
    assert held.phase is TaskPhase.PENDING and held.reason == ARMS_AT_CAP
    decisions = h.rec.metrics.decisions.labels("none", h.rec.config.routing.strategy)
    assert decisions._value.get() == 0  # no routing decision was asked for and refused


async def test_a_oneshot_that_succeeds_is_not_restarted(tmp_path: Path) -> None:
    h = Harness(tmp_path, header(tmp_path) + task("once", "pass", kind="oneshot"))
    h.step()
    await h.end("once", Outcome.SUCCEEDED)
    for _ in range(5):
        h.later(60)
        h.step()
    once = h.rec.tasks["once"]
    assert once.phase is TaskPhase.SUCCEEDED and once.run is None
    assert len(h.fleet.runners) == 1 and once.runs == 1 and once.restarts == 0


async def test_a_failing_service_backs_off_then_restarts(tmp_path: Path) -> None:
    backoff = {"initial": "2s", "max": "60s", "jitter": False, "reset_after": "30s"}
    h = Harness(tmp_path, header(tmp_path) + task("svc", "pass", backoff=backoff))
    h.step()
    await h.end("svc", Outcome.FAILED, duration=0.5)
    h.step()
    svc = h.rec.tasks["svc"]
    # The first failure after a healthy run restarts in the same pass.
    assert svc.run is not None and len(h.fleet.runners) == 2 and svc.restarts == 1
    await h.end("svc", Outcome.FAILED, duration=0.5)
    h.step()
    assert svc.phase is TaskPhase.BACKING_OFF and svc.retry_at == pytest.approx(h.now + 2.0)
    h.later(1.9)
    h.step()
    assert svc.run is None and len(h.fleet.runners) == 2  # still backing off
    h.later(0.1)
    h.step()
    assert svc.run is not None and len(h.fleet.runners) == 3 and svc.restarts == 2
    await h.end("svc", Outcome.FAILED, duration=0.5)
    h.step()
    assert svc.retry_at == pytest.approx(h.now + 4.0)  # the third quick failure doubles it


async def test_cancel_stops_the_run_and_it_stays_cancelled(tmp_path: Path) -> None:
    h = Harness(tmp_path, header(tmp_path) + task("svc", "pass"))
    h.step()
    runner = h.runner("svc")
    assert h.rec.table.cancel("svc")
    h.step()
    assert [(s.outcome, s.reason) for s in runner.stops] == [
        (Outcome.CANCELLED, "cancelled by operator")
    ]
    await h.end("svc", Outcome.CANCELLED, "cancelled by operator")
    for _ in range(3):
        h.later(10)
        h.step()
    svc = h.rec.tasks["svc"]
    assert svc.phase is TaskPhase.CANCELLED and svc.run is None and len(h.fleet.runners) == 1


async def test_a_task_removed_by_a_reload_has_its_run_stopped(tmp_path: Path) -> None:
    h = Harness(tmp_path, header(tmp_path) + task("keep", "pass") + task("gone", "pass"))
    h.step()
    gone = h.runner("gone")
    from daemon_kit import write_config
    from factoryd.config.loader import load_config

    h.rec.apply_config(load_config(write_config(tmp_path, header(tmp_path) + task("keep", "pass"))))
    h.step()
    assert [s.reason for s in gone.stops] == ["task removed from config"]
    assert h.runner("keep").stops == []


async def test_the_index_of_tasks_in_motion_equals_a_full_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTORYD_CHECK_INDEX", "1")  # every pass also proves it
    text = header(tmp_path, max_concurrent=3)
    for i in range(8):
        text += task(f"t{i}", "pass", kind=("service", "oneshot")[i % 2], max_restarts=3)
    text += task("cron", "pass", kind="scheduled", schedule="* * * * *")
    h = Harness(tmp_path, text)
    rng = random.Random(5)
    outcomes = [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED, Outcome.LIMITED]
    for _ in range(300):
        h.step()
        live = [t.name for t in h.rec.tasks.values() if t.run is not None]
        choice = rng.random()
        if live and choice < 0.5:
            await h.end(rng.choice(live), rng.choice(outcomes), duration=rng.uniform(0, 60))
        elif choice < 0.6:
            h.rec.table.cancel(rng.choice(sorted(h.rec.tasks)))
        elif choice < 0.7:
            h.rec.table.reset(rng.choice(sorted(h.rec.tasks)))
        h.later(rng.uniform(0, 20))
        scan = {
            name
            for name, t in h.rec.tasks.items()
            if t.run is None and not t.removed and t.spec.enabled and t.phase not in TERMINAL
        }
        assert set(h.rec.table.idle) == scan
    assert len(h.fleet.runners) > 50  # the walk did exercise starts and ends


def test_a_spawned_run_is_taken_in_when_the_helper_answers_not_at_the_next_pass(
    tmp_path: Path,
) -> None:
    """`run.started` is told and the run marked running the moment its runner
    reports the leader, with no pass between (kill -9 -> replacement running is
    measured to that line; the pid's journal record is the durability tests')."""
    from structlog.testing import capture_logs

    h = Harness(tmp_path, header(tmp_path) + task("svc", "pass", kind="service"))
    h.step()
    run = h.rec.runs[h.run_of("svc")]
    assert run.state == "starting" and run.pid is None
    passes = h.rec.passes
    with capture_logs() as logs:
        h.runner("svc").on_started(4242, (5, 6), 123.0)  # type: ignore[attr-defined]
    assert run.state == "running" and run.pid == 4242
    assert [e["event"] for e in logs] == ["run.started"] and logs[0]["pid"] == 4242
    assert h.rec.passes == passes and not h.rec.book._reports  # no pass, nothing left for one
