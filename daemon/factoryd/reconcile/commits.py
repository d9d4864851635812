"""Each pass's journal batch, committed behind the loop: one at a time, in order.

A pass records what it did (run intents, task progress, run ends) in the
journal batch, and the runs it started may spawn only once that batch is
committed (journal before acknowledgement: `JournalBatch.flush` opens their
gates after the commit). The loop used to wait for that commit before its
next pass. Measured in a burst of short runs under the slower machine's
interpreter, that wait was ~40% of the loop's wall time (2.4 ms a pass),
with the loop idle for much of it while exits piled up for the next pass.

Now the loop asks for a commit (`want`) and goes on; this task commits.
What keeps the guarantees:

* one task, so one commit at a time, in the order passes asked: a batch is
  built only when the one before it has been committed *and* settled (its
  gates opened, or its records put back for the next batch when the write
  failed), so a retry never lands after newer records of the same rows;
* a batch is built when its commit begins, so asks made meanwhile coalesce
  into it (a burst pays one commit per round, not one per pass);
* gates still open only after their commit; a run's spawn waits for it as
  before, only the loop does not;
* the loop waits (`settled`) for everything asked before it stops.

An exception other than a journal write failure (those `flush` handles)
ends this task and, through the loop's task group, the daemon, as it did
when the loop awaited the commit itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Commits:
    """The committing task's side: `run` it in the loop's task group."""

    __slots__ = ("_flush", "_idle", "_wanted")

    def __init__(self, flush: Callable[[], Awaitable[None]]) -> None:
        self._flush = flush
        self._wanted = asyncio.Event()
        #: Set while nothing is asked for or being committed.
        self._idle = asyncio.Event()
        self._idle.set()

    def want(self) -> None:
        """Commit what is recorded now (soon, behind the loop)."""
        self._idle.clear()
        self._wanted.set()

    async def settled(self) -> None:
        """Until everything recorded so far is committed (and its gates opened)."""
        self.want()
        await self._idle.wait()

    async def run(self) -> None:
        wanted, idle = self._wanted, self._idle
        while True:
            await wanted.wait()
            wanted.clear()
            await self._flush()
            if not wanted.is_set():
                idle.set()
