"""Pipe readers armed a moment after their run starts, with one loop timer for all.

A run's readers join the loop's epoll set only if the run lasts beyond a few
milliseconds (capture.PipeReader.arm says why). A timer per run for that was
two heap operations on the loop's timer heap, a cancelled handle left in it
and, every hundred runs, a rebuild of the heap, at hundreds of runs a
second. Runs start in time order and wait the same delay, so their arming
times arrive in order: a queue, and one timer set at its head.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Sequence

from factoryd.proc.capture import PipeReader

#: An arming time this close is due when the timer runs (a loop may run a
#: timer up to its clock's resolution early; arming a moment early is harmless).
SLACK = 0.001


class DelayedArming:
    """Arms each queued group of readers `delay` seconds after it was queued.

    A reader that ended meanwhile is left as it is (`PipeReader.arm` does
    nothing once it is done), so a run that ends sooner needs no cancel."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._loop = loop
        self._delay = delay
        self._queue: deque[tuple[float, Sequence[PipeReader]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, readers: Sequence[PipeReader]) -> None:
        due = self._loop.time() + self._delay
        self._queue.append((due, readers))
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        queue, now = self._queue, self._loop.time() + SLACK
        try:
            while queue and queue[0][0] <= now:
                for reader in queue.popleft()[1]:
                    reader.arm()
        finally:
            # Even if one arm failed: the groups behind it keep their timer
            # (and with it, this queue: see `_PER_LOOP`).
            if queue:
                self._timer = self._loop.call_at(queue[0][0], self._fire)


#: Each loop's queue for each delay, held only as long as its timer is pending
#: (the loop's timer heap holds it then): a table holding them strongly held
#: every event loop ever used in the process, since a queue refers to its loop.
_PER_LOOP: weakref.WeakValueDictionary[tuple[asyncio.AbstractEventLoop, float], DelayedArming] = (
    weakref.WeakValueDictionary()
)


def arm_after(delay: float, readers: Sequence[PipeReader]) -> None:
    """Arm `readers` in `delay` seconds, through the running loop's queue for that delay."""
    key = (asyncio.get_running_loop(), delay)
    arming = _PER_LOOP.get(key)
    if arming is None:
        arming = _PER_LOOP[key] = DelayedArming(key[0], delay)
    arming.add(readers)
