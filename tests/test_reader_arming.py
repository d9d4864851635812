"""Pipe readers are armed a moment after their run starts, all through one loop timer.

proc/arming.py replaced a timer per run: each group of readers must still be
armed no sooner than its own delay after it was queued, in order, a reader
whose run ended first must stay out of the loop's epoll set, and the loop
must hold one arming timer however many runs are waiting.
"""

from __future__ import annotations

import asyncio
import os
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
