"""Only what the arm did teaches the router: settlement's rule, and its proof on a pass.

Operator cancels, restarts by a config change and daemon shutdowns stop
runs as `cancelled`; none of them may lower an arm's quality, success rate
or health, or every arm that serves a service would decay.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_kit import header, task, write_config
from factoryd.config.loader import load_config
from factoryd.core.lesson import lesson
from factoryd.core.outcome import Outcome
from reconcile_kit import Harness

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("outcome", "teaches", "ok"),
    [
        (Outcome.SUCCEEDED, True, True),
        (Outcome.FAILED, True, False),
        (Outcome.TIMED_OUT, True, False),
        (Outcome.STALLED, True, False),
        (Outcome.CANCELLED, False, False),
        (Outcome.LIMITED, False, False),
        (Outcome.LOST, False, False),
        (Outcome.EXIT_UNKNOWN, False, False),
        (Outcome.SPAWN_FAILED, False, False),
    ],
)
def test_what_each_outcome_teaches(outcome: Outcome, teaches: bool, ok: bool) -> None:
    taught = lesson(outcome, "claude")
    assert (taught.teaches, taught.ok) == (teaches, ok)
    assert taught.arm_fault is (outcome is Outcome.SPAWN_FAILED)
    assert lesson(outcome, "command").arm_fault is False  # a command's spawn: the task's fault


def learned(h: Harness) -> tuple[object, ...]:
    engine = h.rec.engine
    snap = engine.snapshot(1.8e9 + h.now)
    tel = engine.telemetry.arm("local")
    return snap["arms"], snap["quality"], tel.healthy, tel.consecutive_faults


async def test_twenty_restarts_and_cancels_leave_the_arm_as_it_was(tmp_path: Path) -> None:
    backoff = {"initial": "1ms", "jitter": False}
    text = header(tmp_path) + task("svc", "pass", backoff=backoff, max_restarts=100)
    h = Harness(tmp_path, text)
    h.step()
    await h.end("svc", Outcome.SUCCEEDED, duration=60.0)  # one real lesson first
    h.later(1)
    h.step()
    before = learned(h)
    assert before[1], "the successful run was learned from"
    for i in range(20):
        if i % 2:  # the operator cancels, then lets it run again
            assert h.rec.table.cancel("svc")
            h.step()
            await h.end("svc", Outcome.CANCELLED, "cancelled by operator")
            h.step()
            assert h.rec.table.reset("svc")
        else:  # a reload changes the task: its run is stopped and restarted
            changed = task("svc", f"pass  # {i}", backoff=backoff, max_restarts=100)
            h.rec.apply_config(load_config(write_config(tmp_path, header(tmp_path) + changed)))
            h.step()
            await h.end("svc", Outcome.CANCELLED, "task changed in config")
        h.later(1)
        h.step()
        assert h.rec.tasks["svc"].run is not None, h.rec.tasks["svc"].reason
    assert len(h.fleet.runners) == 22  # the first, its restart after success, 20 more
    assert learned(h) == before
