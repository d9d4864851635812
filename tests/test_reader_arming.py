"""Pipe readers are armed a moment after their run starts, all through one loop timer.

proc/arming.py replaced a timer per run: each group of readers must still be
armed no sooner than its own delay after it was queued, in order, a reader
whose run ended first must stay out of the loop's epoll set, and the loop
must hold one arming timer however many runs are waiting.
"""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from factoryd.proc.arming import DelayedArming, arm_after
from factoryd.proc.capture import PipeReader, RunLog

pytestmark = pytest.mark.anyio


class Pipe:
    """A pipe with an unarmed reader on its read end."""

    def __init__(self, log: RunLog) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.reader = PipeReader(self.r, log, lambda _b, _n: None, lambda: None, armed=False)

    def armed(self) -> bool:
        return self.r in asyncio.get_running_loop()._selector.get_map()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.reader.stop()
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def make_pipe(tmp_path: Path) -> Iterator[Callable[[], Pipe]]:
    """Pipes with unarmed readers on one run log, all closed after the test."""
    log = RunLog(tmp_path / "run.log", 1 << 20)
    made: list[Pipe] = []

    def make() -> Pipe:
        made.append(Pipe(log))
        return made[-1]

    yield make
    for pipe in made:
        pipe.close()
    log.close()


async def _until_armed(*pipes: Pipe) -> None:
    with anyio.fail_after(5):
        while not all(pipe.armed() for pipe in pipes):
            await anyio.sleep(0.005)


def _arming_timers(arming: DelayedArming) -> int:
    scheduled = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
    return sum(1 for h in scheduled if not h.cancelled() and h._callback == arming._fire)


async def test_each_group_is_armed_after_its_own_delay_in_order(
    make_pipe: Callable[[], Pipe],
) -> None:
    loop = asyncio.get_running_loop()
    arming = DelayedArming(loop, 0.2)
    first, second = make_pipe(), make_pipe()
    queued_first = loop.time()
    arming.add([first.reader])
    await anyio.sleep(0.1)
    queued_second = loop.time()
    arming.add([second.reader])
    assert _arming_timers(arming) == 1 and len(arming) == 2
    await _until_armed(first)
    assert loop.time() - queued_first >= 0.2 - 0.002
    assert not second.armed()  # its own delay has not passed yet
    await _until_armed(second)
    assert loop.time() - queued_second >= 0.2 - 0.002
    assert len(arming) == 0 and _arming_timers(arming) == 0


async def test_a_reader_done_before_its_time_is_never_armed(
    make_pipe: Callable[[], Pipe],
) -> None:
    arming = DelayedArming(asyncio.get_running_loop(), 0.05)
    quick, slow = make_pipe(), make_pipe()
    arming.add([quick.reader, slow.reader])
    os.close(quick.w)
    quick.w = os.open(os.devnull, os.O_WRONLY)  # closed later like the others
    assert quick.reader.poll() and quick.reader.done  # EOF read: its run ended
    await _until_armed(slow)
    assert not quick.armed()


async def test_many_runs_share_one_timer_per_delay(make_pipe: Callable[[], Pipe]) -> None:
    pipes = [make_pipe() for _ in range(50)]
    for pipe in pipes:
        arm_after(0.05, [pipe.reader])
    scheduled = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
    firing = [h for h in scheduled if not h.cancelled() and "_fire" in repr(h._callback)]
    assert len(firing) == 1
    await _until_armed(*pipes)


def test_a_finished_event_loop_is_not_kept_alive_by_its_arming_queue(tmp_path: Path) -> None:
    # Tests (and tools) run many event loops in one process, one after another.
    # A loop's arming queue must die with it: kept in a module-level table it
    # kept every past loop alive (and its readers, their logs and pipes' objects).
    log_path = tmp_path / "run.log"
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one_run(fire: bool) -> None:
        log = RunLog(log_path, 1 << 20)
        pipe = Pipe(log)
        arm_after(0.01, [pipe.reader])
        loops.append(weakref.ref(asyncio.get_running_loop()))
        if fire:  # armed before the loop ends; else still queued when it closes
            with anyio.fail_after(5):
                while not pipe.armed():
                    await anyio.sleep(0.005)
        pipe.close()
        log.close()

    for i in range(6):
        asyncio.run(one_run(fire=i % 2 == 0))
    gc.collect()
    assert [ref() for ref in loops] == [None] * len(loops)


async def test_many_runs_speaking_after_arming_are_read_while_running_and_not_stalled(
    tmp_path: Path,
) -> None:
    # Forty real runs at once, each quiet past the arming delay, then speaking
    # twice and still running: every line must reach its log while the run is
    # alive (its pipe is in the loop, not read only at exit), and the stall
    # watch must see that output (0.8 s allowed, never 0.8 s quiet).
    from factoryd.core.outcome import Outcome
    from factoryd.proc.tree import become_subreaper
    from proc_kit import py, run_to_end, spec

    assert become_subreaper()
    code = (
        "import time\ntime.sleep(0.05)\nprint('early', flush=True)\n"
        "time.sleep(0.6)\nprint('late', flush=True)\ntime.sleep(0.7)"
    )
    specs = [spec(tmp_path, py(code), stall_timeout=0.8) for _ in range(40)]
    results: list[Outcome] = []
    seen_live: list[bool] = []

    async def one(s: object) -> None:
        results.append((await run_to_end(s))[0].outcome)  # type: ignore[arg-type]

    async def watch() -> None:
        with anyio.fail_after(10):
            while not all(
                s.log.path.exists() and b"late" in s.log.path.read_bytes() for s in specs
            ):
                await anyio.sleep(0.02)
        seen_live.append(not results)  # all forty lines in, no run finished yet

    async with anyio.create_task_group() as tg:
        for s in specs:
            tg.start_soon(one, s)
        tg.start_soon(watch)
    assert seen_live == [True]
    assert results == [Outcome.SUCCEEDED] * 40
    assert all(s.log.path.read_bytes() == b"early\nlate\n" for s in specs)


async def test_a_run_that_closes_its_output_early_and_keeps_running_ends_cleanly(
    tmp_path: Path,
) -> None:
    # EOF on both pipes before the readers are armed, the leader alive for
    # 0.3 s more: the run waits for its exit, not for its pipes.
    from factoryd.core.outcome import Outcome
    from factoryd.proc.tree import become_subreaper
    from proc_kit import py, run_to_end, spec

    assert become_subreaper()
    s = spec(tmp_path, py("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(0.3)"))
    result, _ = await run_to_end(s)
    assert result.outcome is Outcome.SUCCEEDED
    assert 0.3 <= result.duration < 3


async def test_runs_stopped_before_their_readers_are_armed_leave_nothing_in_the_loop(
    tmp_path: Path,
) -> None:
    # Stopped 1 ms after they start, their readers still queued: once the queue's
    # time has come, none of their (closed, maybe reused) descriptors may be
    # registered with the loop.
    from factoryd.core.outcome import Outcome, StopRequest
    from factoryd.proc.tree import become_subreaper
    from proc_kit import run_to_end, spec

    assert become_subreaper()
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    before = set(selector.get_map())
    outcomes: list[Outcome] = []

    async def one() -> None:
        s = spec(tmp_path, ("sleep", "30"))
        result, _ = await run_to_end(s, 0.001, StopRequest(Outcome.CANCELLED, "test"))
        outcomes.append(result.outcome)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    await anyio.sleep(0.05)  # past every queued arming time (5 ms): nothing to poll for
    assert outcomes == [Outcome.CANCELLED] * 10
    assert set(selector.get_map()) == before
