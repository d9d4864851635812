"""Cron: fire times in a zone, missed fires after downtime, capacity refusals queue."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from daemon_kit import header, running, task, until
from factoryd.core.lifecycle import TaskPhase
from factoryd.core.schedule import catch_up, next_fire
from factoryd.core.taskspec import MissedPolicy
from factoryd.reconcile.runstate import Clock


def ts(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def test_next_fire_is_local_to_the_zone_across_dst() -> None:
    # 02:30 Paris does not exist on 2026-03-29 (clocks jump 02:00 -> 03:00):
    # the job fires at 03:00 local, then at 02:30 again the next day.
    first = next_fire("30 2 * * *", "Europe/Paris", ts(2026, 3, 28, 12))
    assert first == ts(2026, 3, 29, 1, 0)
    assert next_fire("30 2 * * *", "Europe/Paris", first) == ts(2026, 3, 30, 0, 30)
    # 02:30 Paris happens twice on 2026-10-25: a nightly job runs once.
    fall = next_fire("30 2 * * *", "Europe/Paris", ts(2026, 10, 24, 12))
    assert fall == ts(2026, 10, 25, 0, 30)
    assert next_fire("30 2 * * *", "Europe/Paris", fall) == ts(2026, 10, 26, 1, 30)
    # ...while an every-15-minutes job keeps firing through the repeated hour.
    quarter = [ts(2026, 10, 25, 0, 45)]
    for _ in range(5):
        quarter.append(next_fire("*/15 * * * *", "Europe/Paris", quarter[-1]))
    assert [b - a for a, b in itertools.pairwise(quarter)] == [900.0] * 5
    # 09:00 New York is 14:00 UTC in winter and 13:00 UTC in summer.
    assert next_fire("0 9 * * *", "America/New_York", ts(2026, 1, 10)) == ts(2026, 1, 10, 14)
    assert next_fire("0 9 * * *", "America/New_York", ts(2026, 7, 10)) == ts(2026, 7, 10, 13)


def test_not_due_and_due() -> None:
    last = ts(2026, 5, 1, 10, 0)
    quiet = catch_up("*/5 * * * *", "UTC", last, ts(2026, 5, 1, 10, 4), MissedPolicy.ONCE, 10)
    assert quiet.runs == 0 and quiet.next_fire == ts(2026, 5, 1, 10, 5)
    due = catch_up("*/5 * * * *", "UTC", last, ts(2026, 5, 1, 10, 5), MissedPolicy.ONCE, 10)
    assert due.runs == 1 and due.missed == 1 and due.next_fire == ts(2026, 5, 1, 10, 10)


@pytest.mark.parametrize(
    ("policy", "cap", "runs"),
    [
        (MissedPolicy.SKIP, 10, 0),
        (MissedPolicy.ONCE, 10, 1),
        (MissedPolicy.ALL, 10, 6),
        (MissedPolicy.ALL, 3, 3),
    ],
)
def test_downtime_policies(policy: MissedPolicy, cap: int, runs: int) -> None:
    plan = catch_up("0 * * * *", "UTC", ts(2026, 5, 1, 0, 0), ts(2026, 5, 1, 6, 30), policy, cap)
    assert plan.runs == runs
    assert plan.next_fire == ts(2026, 5, 1, 7, 0)
    assert str(policy) in plan.decision
    assert plan.missed == (6 if cap >= 6 else cap + 1)


@pytest.mark.anyio
async def test_capacity_refused_fire_is_queued_then_run(tmp_path: Path) -> None:
    wall = [ts(2026, 5, 1, 10, 0, 30)]
    import time

    text = (
        header(tmp_path, max_concurrent=1)
        + task("hog", "import time; print('x', flush=True); time.sleep(600)")
        + task("tick", "print('fired')", kind="scheduled", schedule="* * * * *")
    )
    from daemon_kit import write_config
    from factoryd.config.loader import load_config
    from factoryd.proc.tree import become_subreaper
    from factoryd.reconcile.reconciler import Reconciler

    become_subreaper()
    rec = Reconciler(
        load_config(write_config(tmp_path, text)),
        clock=Clock(mono=time.monotonic, wall=lambda: wall[0]),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        tick = rec.tasks["tick"]
        await until(lambda: rec.tasks["hog"].run is not None, what="hog running")
        assert tick.phase is TaskPhase.WAITING and tick.next_fire == ts(2026, 5, 1, 10, 1)
        wall[0] = ts(2026, 5, 1, 10, 1, 1)
        rec.wake("test")
        await until(lambda: tick.pending_fires == 1, what="fire queued")
        await until(lambda: tick.reason == "waiting for a free slot", what="refused")
        assert tick.runs == 0
        rec.table.cancel("hog")
        await until(lambda: tick.runs == 1 and tick.phase is TaskPhase.WAITING, what="fire run")
        assert tick.pending_fires == 0 and tick.last_outcome == "succeeded"
        rec.request_stop()


@pytest.mark.anyio
async def test_missed_fires_after_downtime_follow_the_policy(tmp_path: Path) -> None:
    text = header(tmp_path) + task(
        "every", "print(1)", kind="scheduled", schedule="*/10 * * * *", missed="all", missed_cap=4
    )
    async with running(tmp_path, text) as rec:
        now = rec.clock.wall()
        rec.table.restore_schedule("every", now - 3 * 3600)  # 18 fires missed, capped at 4
        rt = rec.tasks["every"]
        await until(lambda: rt.runs == 4 and rt.pending_fires == 0, what="four catch-up runs")
        assert rt.phase is TaskPhase.WAITING
