"""Run tasks are plain asyncio tasks (reconcile/runtasks.py): what the task
group gave them must still hold. A loop cancelled from outside leaves no run
process behind; a run task that crashes takes the loop down with its error;
the loop's sleep wakes on its deadline and on a wake-up (reconcile/wakeup.py).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import anyio
import pytest
from daemon_kit import header, task, until, write_config
from factoryd.config.loader import load_config
from factoryd.proc.tree import become_subreaper
from factoryd.reconcile.reconciler import Reconciler
from factoryd.reconcile.runtasks import RunTasks
from factoryd.reconcile.wakeup import Wakeup

pytestmark = pytest.mark.anyio


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_loop_cancelled_from_outside_kills_its_runs_before_it_returns(
    tmp_path: Path,
) -> None:
    become_subreaper()
    text = header(tmp_path) + task("slow", "import time; time.sleep(60)", stop_grace="2s")
    rec = Reconciler(load_config(write_config(tmp_path, text)), rng=random.Random(1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        await until(lambda: any(r.pid for r in rec.runs.values()), what="the run's pid")
        pid = next(r.pid for r in rec.runs.values() if r.pid)
        assert _alive(pid)
        tg.cancel_scope.cancel()  # not request_stop: the loop is torn down
    # rec.run has returned: its run task was cancelled and waited for.
    assert len(rec._run_tasks) == 0
    assert not _alive(pid)


async def test_a_run_task_that_raises_ends_the_loop_with_its_error(tmp_path: Path) -> None:
    text = header(tmp_path) + task("svc", "pass")
    rec = Reconciler(load_config(write_config(tmp_path, text)), rng=random.Random(1))

    async def broken(run: object) -> None:
        raise RuntimeError("a bug in a run task")

    rec.book.execute = broken  # type: ignore[method-assign]
    with pytest.raises(BaseExceptionGroup) as caught:
        with anyio.fail_after(10):
            await rec.run()
    assert [str(e) for e in caught.value.exceptions] == ["a bug in a run task"]


async def test_close_cancels_live_run_tasks_and_waits_for_their_cleanup() -> None:
    tasks, cleaned, failures = RunTasks(), [], []
    tasks.on_failure = lambda: failures.append(1)
    started = asyncio.Event()

    async def body() -> None:
        try:
            started.set()
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):  # as a runner's teardown is
                await asyncio.sleep(0.01)
                cleaned.append(1)
            raise

    tasks.start(body())
    await started.wait()
    assert len(tasks) == 1
    await tasks.close()
    assert cleaned == [1] and len(tasks) == 0
    assert failures == [] and tasks.failed == []  # a cancellation is no failure
    tasks.raise_failures()  # nothing to raise


async def test_the_loop_sleep_ends_at_its_deadline_or_at_a_wake_up() -> None:
    wake = Wakeup()
    assert wake.take() == {"interval"} and not wake.pending
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await wake.sleep(0.05)  # nothing wakes it: its deadline does
    assert loop.time() - t0 >= 0.04
    assert wake.take() == {"interval"}
    loop.call_later(0.01, wake, "exit")
    t0 = loop.time()
    await wake.sleep(30.0)
    assert loop.time() - t0 < 5.0
    assert wake.take() == {"exit"} and not wake.pending
    wake("command")  # a wake-up before the sleep: it does not sleep at all
    with anyio.fail_after(1):
        await wake.sleep(30.0)
    assert wake.take() == {"command"}


async def test_close_lets_a_shielded_step_finish_before_the_task_is_cancelled() -> None:
    """A spawn waits, shielded, for the helper's answer: a leader may exist and
    must have an owner. Closing the run tasks must not cut that wait short."""
    tasks = RunTasks()
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[int] = loop.create_future()
    seen: list[object] = []
    waiting = asyncio.Event()

    async def body() -> None:
        with anyio.CancelScope(shield=True):
            waiting.set()
            seen.append(await answer)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled after the shielded step")
            raise

    tasks.start(body())
    await waiting.wait()  # inside its shielded step when closing begins
    loop.call_later(0.05, answer.set_result, 1234)
    with anyio.fail_after(5):
        await tasks.close()
    assert seen == [1234, "cancelled after the shielded step"] and len(tasks) == 0
