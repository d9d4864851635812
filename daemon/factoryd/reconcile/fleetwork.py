"""The fleet's database calls, taken off the loop: one worker, and reservations asked ahead.

The loop owns every run and must never wait on the network: over TCP a
partitioned database holds a call for up to the connect or I/O timeout
(5 to 10 s), which would freeze every run, restart and control request of
the host. So the loop only *posts* work here:

* `FleetWork` is a FIFO of jobs run one at a time in a worker thread (a
  dedicated anyio limiter of one, so the fleet never takes the threads
  other work needs, and jobs keep their order: a reservation's settlement
  always follows its reserve). A job's answer is handed back on the loop's
  thread, between awaits, where it may touch run state. What is still
  queued when the daemon stops is drained by `drain` (settlements reach
  the database or the outbox).
* `Asks` are shared reservations in flight. A start that needs one does not
  wait for it: the router's gate posts the reserve and refuses every arm of
  that task for now (the task stays pending, the pass moves on); the answer
  wakes the loop, and the next pass's gate hands the router the granted
  reservation, the fleet's refusal (the router moves to its next arm), or
  the outage rule. A granted hold that no start took in `STALE_AFTER`
  seconds (the task was cancelled, the router chose otherwise) is rolled back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from factoryd.routing.ledger import Refusal, Reservation

#: A granted reservation no start took within this long is rolled back.
STALE_AFTER = 15.0


@dataclass(slots=True)
class Job:
    #: What it is, for `drain` and tests: "settle", "reserve", "view", ...
    kind: str
    #: Runs in the worker thread.
    fn: Callable[[], Any]
    #: Given fn's result on the loop's thread (not called when fn raised).
    done: Callable[[Any], None] | None = None
    #: At shutdown, instead of fn when the database did not answer in time.
    fallback: Callable[[], None] | None = None


class FleetWork:
    def __init__(self, on_error: Callable[[str, BaseException], None]) -> None:
        self._send: MemoryObjectSendStream[Job]
        self._recv: MemoryObjectReceiveStream[Job]
        self._send, self._recv = anyio.create_memory_object_stream[Job](math.inf)
        self._limiter = anyio.CapacityLimiter(1)
        self._on_error = on_error
        #: Jobs posted and not yet answered (for status and tests).
        self.backlog = 0
        self.done_total = 0

    def post(
        self,
        kind: str,
        fn: Callable[[], Any],
        done: Callable[[Any], None] | None = None,
        fallback: Callable[[], None] | None = None,
    ) -> None:
        """Queue `fn` for the worker (never blocks: the stream is unbounded)."""
        self.backlog += 1
        self._send.send_nowait(Job(kind, fn, done, fallback))

    async def serve(self) -> None:
        """Run jobs in order until cancelled (a task in the fleet service's group)."""
        async for job in self._recv:
            try:
                result = await anyio.to_thread.run_sync(job.fn, limiter=self._limiter)
            except Exception as exc:  # a job's own trouble: logged, the worker goes on
                self._on_error(job.kind, exc)
            else:
                if job.done is not None:
                    job.done(result)
            finally:
                self.backlog -= 1
                self.done_total += 1

    async def drain(self, seconds: float) -> int:
        """After the loop ended: run what is still queued, for at most `seconds`;
        jobs past that get their fallback (a settlement goes to the outbox)."""
        count = 0
        with anyio.move_on_after(seconds, shield=True) as scope:
            while True:
                try:
                    job = self._recv.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                try:
                    await anyio.to_thread.run_sync(job.fn, limiter=self._limiter)
                except Exception as exc:
                    self._on_error(job.kind, exc)
                count += 1
        if scope.cancelled_caught:
            while True:
                try:
                    job = self._recv.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if job.fallback is not None:
                    job.fallback()
        return count


@dataclass(slots=True)
class Ask:
    arm: str
    charges: dict[str, float]
    rid: str
    #: Set when the answer came back: a reservation, a refusal, or the reason
    #: the database did not answer (a str).
    answer: Reservation | Refusal | str | None = None
    answered_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Asks:
    """Shared reservations in flight or answered, one per task at most."""

    def __init__(self) -> None:
        self.by_task: dict[str, Ask] = {}

    def get(self, task: str) -> Ask | None:
        return self.by_task.get(task)

    def add(self, task: str, ask: Ask) -> None:
        self.by_task[task] = ask

    def pop(self, task: str) -> Ask | None:
        return self.by_task.pop(task, None)

    def stale(self, now_m: float) -> list[tuple[str, Ask]]:
        """Answered asks no start took within STALE_AFTER (removed)."""
        old = [
            (task, ask)
            for task, ask in self.by_task.items()
            if ask.answer is not None and now_m - ask.answered_at > STALE_AFTER
        ]
        for task, _ in old:
            del self.by_task[task]
        return old
