"""Wall-clock steps: schedules keep firing, the step is logged once.

Driven by the reconcile harness (fake runner, fake clocks): the monotonic
clock moves with `later`, the wall clock alone with `step_wall`, as when NTP
or an operator steps it. Before this was handled, an every-minute task
stepped 2 h forward and back stayed `waiting` for the 2 h it had gone ahead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_kit import header, task
from factoryd.core.lifecycle import TaskPhase
from factoryd.core.outcome import Outcome
from factoryd.core.schedule import catch_up
from factoryd.core.taskspec import MissedPolicy
from reconcile_kit import Harness
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio

HOUR = 3600.0


def _cron(tmp_path: Path, schedule: str = "* * * * *") -> Harness:
    text = header(tmp_path, max_concurrent=2) + task("svc", "pass")
    text += task("tick", "pass", kind="scheduled", schedule=schedule)
    return Harness(tmp_path, text)


async def _fire_and_finish(h: Harness) -> None:
    """Let the every-minute task reach its next fire, run it, and end the run."""
    h.later(61.0)
    h.step()
    tick = h.rec.tasks["tick"]
    assert tick.run is not None, tick.reason
    await h.end("tick", Outcome.SUCCEEDED)
    h.step()
    assert tick.phase is TaskPhase.WAITING, tick.reason


async def test_an_every_minute_task_fires_again_after_the_clock_steps_forward_and_back(
    tmp_path: Path,
) -> None:
    with capture_logs() as logs:
        h = _cron(tmp_path)
        h.step()
        await _fire_and_finish(h)
        tick = h.rec.tasks["tick"]
        h.step_wall(+2 * HOUR)
        h.later(1.0)
        h.step()  # the jump forward is a due time passed: one fire, now
        assert tick.run is not None
        await h.end("tick", Outcome.SUCCEEDED)
        h.step()
        h.step_wall(-2 * HOUR)
        h.later(1.0)
        h.step()
        assert tick.next_fire is not None and tick.next_fire - h.wall() <= 60.0, tick.reason
        assert tick.last_fire is not None and tick.last_fire <= h.wall()
        for _ in range(3):  # and it keeps firing each minute
            await _fire_and_finish(h)
        assert h.rec.tasks["svc"].run is not None  # the service never noticed
    steps = [e for e in logs if e["event"] == "clock.stepped"]
    assert [(e["direction"], e["step_seconds"]) for e in steps] == [
        ("forward", 2 * HOUR),
        ("back", -2 * HOUR),
    ]


async def test_a_step_is_logged_once_and_slow_passes_are_no_step(tmp_path: Path) -> None:
    with capture_logs() as logs:
        h = _cron(tmp_path, schedule="0 * * * *")
        h.step()
        h.later(300.0)  # a long sleep moves both clocks: no step
        h.step()
        h.step_wall(-5 * HOUR)
        for _ in range(4):
            h.later(1.0)
            h.step()
        tick = h.rec.tasks["tick"]
        assert tick.next_fire is not None and tick.next_fire - h.wall() <= HOUR
        assert tick.phase is TaskPhase.WAITING and "clock stepped" in tick.reason
    assert [e["step_seconds"] for e in logs if e["event"] == "clock.stepped"] == [-5 * HOUR]


async def test_backoff_runs_on_the_monotonic_clock_across_a_step(tmp_path: Path) -> None:
    h = Harness(tmp_path, header(tmp_path) + task("svc", "pass"))
    h.step()
    # The first quick failure restarts at once; the second one backs off.
    await h.end("svc", Outcome.FAILED, duration=0.1)
    h.step()
    await h.end("svc", Outcome.FAILED, duration=0.1)
    h.step()
    svc = h.rec.tasks["svc"]
    assert svc.run is None and svc.retry_at is not None
    wait = svc.retry_at - h.now
    h.step_wall(+6 * HOUR)  # a step forward does not end the backoff
    h.step()
    assert svc.run is None
    h.step_wall(-12 * HOUR)
    h.later(wait + 0.01)  # nor does a step back lengthen it
    h.step()
    assert svc.run is not None


def test_a_last_fire_in_the_future_after_a_restart_counts_nothing_missed() -> None:
    # The daemon fired at 12:00 with the clock 2 h ahead, was stopped, and the
    # clock was put right (10:00) before it started again.
    plan = catch_up("* * * * *", "UTC", 1.8e9 + 2 * HOUR, 1.8e9, MissedPolicy.ALL, 5)
    assert plan.missed == 0 and plan.runs == 0
    assert plan.next_fire == 1.8e9 + 60.0 - (1.8e9 % 60.0)


def test_pool_windows_follow_a_step_forward_and_keep_their_usage_across_a_step_back() -> None:
    """As the README says: a step past a window's end starts the next window
    (the provider's clock moved on too); a step back never hands out capacity
    again: the window in force, and what was used in it, stay until the wall
    clock reaches its end once more."""
    from factoryd.routing.ledger import PoolLedger
    from factoryd.routing.model import PoolSpec, PoolUnit
    from factoryd.units.durations import parse_period

    ledger = PoolLedger([PoolSpec("p", PoolUnit.RUNS, 10, parse_period("5h"))])
    t = 1.8e9
    ledger.advance(t)
    ledger.commit("none", {"p": 3})
    pool = ledger.pools["p"]
    ledger.advance(t + 6 * HOUR)
    assert pool.used == 0.0 and pool.window_start == t + 5 * HOUR
    ledger.commit("none", {"p": 2})
    ledger.advance(t)
    assert pool.used == 2.0 and pool.window_start == t + 5 * HOUR
    ledger.advance(t + 10 * HOUR)
    assert pool.used == 0.0 and pool.window_start == t + 10 * HOUR
