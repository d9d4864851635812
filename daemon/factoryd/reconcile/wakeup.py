"""What wakes the reconcile loop, and the loop's sleep until something does.

The loop sleeps after every pass until an event (a run ended, a command, a
reload) or its next deadline. That sleep happens several times per run on a
busy daemon, so it is one reused asyncio event and one plain loop timer: an
anyio cancel scope and a new event per sleep cost more than a quiet pass.
Only the loop task waits on the event; everything that wakes it runs on the
loop too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from factoryd.reconcile.table import TaskTable


class Wakeup:
    """The reasons the loop was woken for since it last looked, and its sleep."""

    __slots__ = ("_event", "_reasons")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._reasons: set[str] = set()

    def __call__(self, reason: str) -> None:
        """Wake the loop (now, or as soon as it sleeps) for `reason`."""
        self._reasons.add(reason)
        self._event.set()

    def take(self) -> set[str]:
        """What woke the loop since the last call ("interval": its own deadline)."""
        reasons = self._reasons or {"interval"}
        self._reasons = set()
        self._event.clear()
        return reasons

    @property
    def pending(self) -> bool:
        return self._event.is_set()

    async def sleep(self, delay: float) -> None:
        """Until woken, or `delay` seconds."""
        event = self._event
        if event.is_set():
            return
        timer = asyncio.get_running_loop().call_later(delay, event.set)
        try:
            await event.wait()
        finally:
            timer.cancel()


def sleep_for(table: TaskTable, interval: float, now_m: float, now_w: float) -> float:
    """How long the loop may sleep for its tasks: until the soonest retry or
    cron fire, at most `interval` (the loop adds its runs' and the fleet's)."""
    soonest = interval
    for rt in table.idle.values():
        if rt.retry_at is not None:
            soonest = min(soonest, rt.retry_at - now_m)
    for rt in table.cron.values():
        if rt.next_fire is not None:
            soonest = min(soonest, rt.next_fire - now_w)
    return soonest
