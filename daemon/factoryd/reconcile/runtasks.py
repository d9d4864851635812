"""Each live run's task: a plain asyncio task that the loop's task group outlives.

Every run's body (`RunBook.execute`) runs as a task of its own. Started with
the task group's `start_soon`, anyio wrapped each one in a handle, a wrapper
coroutine, a record of its cancel scope and a done callback: about 65,000
instructions per run out of 1.9 million (bench/instructions.py). What the
group gave is kept here, by hand:

* no run task outlives the loop: when the loop's task group ends, for any
  reason, each run task still alive is cancelled once and awaited,
  shielded, before the group exits. A cancelled runner kills and reaps its
  process group before it returns (runner.py, teardown.py), as it did when
  the group cancelled it;
* a crash is not swallowed: a run task that raises cancels the loop's
  group, and the loop raises its exception, in an exception group as the
  task group did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anyio


class RunTasks:
    """The run tasks alive now, and the errors of those that raised."""

    __slots__ = ("_tasks", "failed", "on_failure")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        #: What run tasks raised (not counting cancellation), in order.
        self.failed: list[BaseException] = []
        #: Called when a run task raises (the loop cancels its task group).
        self.on_failure: Callable[[], Any] | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, body: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(body)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failed.append(exc)
            if self.on_failure is not None:
                self.on_failure()

    async def close(self) -> None:
        """Cancel every run task still alive and wait until each has ended."""
        tasks = list(self._tasks)
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait(tasks)

    def raise_failures(self) -> None:
        if self.failed:
            failed, self.failed = self.failed, []
            raise BaseExceptionGroup("unhandled errors in a run task", failed)
