"""Commands into the loop: how the control socket changes state without sharing it.

A caller outside the loop (a socket handler, the spool watcher) hands a
function to `CommandQueue.call`, which wakes the loop and waits; the loop
runs every queued function between passes (`run_all`), the only place they
can touch state, and hands each caller its result or its exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream


class CommandQueue:
    def __init__(self, wake: Callable[[str], None]) -> None:
        self._wake = wake
        self._queued: list[tuple[Callable[[], Any], MemoryObjectSendStream[Any]]] = []

    async def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run `fn` inside the loop, between passes, and return what it returns."""
        send, recv = anyio.create_memory_object_stream[Any](1)
        self._queued.append((fn, send))
        self._wake("command")
        with anyio.fail_after(timeout), recv:
            outcome = await recv.receive()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def run_all(self) -> None:
        """Run what was queued (called by the loop only)."""
        queued, self._queued = self._queued, []
        for fn, reply in queued:
            try:
                outcome = fn()
            except Exception as exc:  # handed back to the caller, not raised here
                outcome = exc
            with contextlib.suppress(anyio.BrokenResourceError, anyio.WouldBlock):
                reply.send_nowait(outcome)
            reply.close()
