"""Each live run's task: a plain asyncio task that the loop's task group outlives.

Every run's body (`RunBook.execute`) runs as a task of its own. Started with
the task group's `start_soon`, anyio wrapped each one in a handle, a wrapper
coroutine, a record of its cancel scope and a done callback: some 75,000
instructions per run (of 1.9 million, bench/instructions.py) more than a
plain task. What the group gave is kept here, by hand:

* no run task outlives the loop: when the loop's task group ends, for any
  reason, each run task still alive is cancelled and awaited, shielded,
  before the group exits. Each runs in a cancel scope of its own, which is
  what is cancelled: anyio's cancellation, as the group's was, so the
  shielded steps of a run (a spawn waiting for the helper's answer, a
  teardown) finish first, and a cancelled runner kills and reaps its process
  group before it returns (runner.py, teardown.py);
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
        #: Each live run task and the cancel scope its body runs in.
        self._tasks: dict[asyncio.Task[None], anyio.CancelScope] = {}
        #: What run tasks raised (not counting cancellation), in order.
        self.failed: list[BaseException] = []
        #: Called when a run task raises (the loop cancels its task group).
        self.on_failure: Callable[[], Any] | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, body: Coroutine[Any, Any, None]) -> None:
        scope = anyio.CancelScope()
        task = asyncio.get_running_loop().create_task(_within(scope, body))
        self._tasks[task] = scope
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failed.append(exc)
            if self.on_failure is not None:
                self.on_failure()

    async def close(self) -> None:
        """Cancel every run task still alive and wait until each has ended."""
        tasks = list(self._tasks.items())
        if not tasks:
            return
        for _, scope in tasks:
            scope.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait([task for task, _ in tasks])

    def raise_failures(self) -> None:
        if self.failed:
            failed, self.failed = self.failed, []
            raise BaseExceptionGroup("unhandled errors in a run task", failed)


async def _within(scope: anyio.CancelScope, body: Coroutine[Any, Any, None]) -> None:
    with scope:
        await body
