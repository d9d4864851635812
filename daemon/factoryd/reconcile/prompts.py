"""Prompt files read ahead of a run, on a worker thread, never on the loop.

A task with a `prompt_file` cannot be routed until its prompt is read. The
run book asks `take` on each pass: the first ask queues a read (started by
the loop as a task of its own), later asks return None until the read ends
and wakes the loop; then the text, or the error that fails that one run
(`spawn_failed`, with the task's backoff: no arm was chosen, none is
blamed). Each run reads the file afresh: an operator's edit counts from the
next run on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple

import anyio
from structlog.typing import FilteringBoundLogger

from factoryd.config.model import Config
from factoryd.core.outcome import Outcome, RunResult
from factoryd.reconcile.runstate import TaskState
from factoryd.reconcile.settle import judge
from factoryd.reconcile.table import TaskTable
from factoryd.run.launch import new_run_id
from factoryd.run.promptfile import PromptFileError, read_prompt_file


class Prompt(NamedTuple):
    ready: bool
    prompt: str | None


class PromptReads:
    def __init__(
        self,
        table: TaskTable,
        rng: random.Random,
        logger: FilteringBoundLogger,
        wake: Callable[[str], None],
    ) -> None:
        self.table = table
        self.rng = rng
        self.logger = logger
        self.wake = wake
        #: Reads asked for that the loop has not started yet: (task, path, cap).
        self.queued: list[tuple[str, str, int]] = []
        self._reading: set[str] = set()
        self._done: dict[str, tuple[str, str | PromptFileError]] = {}
        #: Two reads at a time: a slow disk must not grow a crowd of threads.
        self._limiter = anyio.CapacityLimiter(2)

    def ready(self, rt: TaskState, config: Config, now_m: float, now_w: float) -> Prompt:
        """The prompt read from the task's file (None: it has none), or not ready:
        being read, or unusable (that run has then failed, here)."""
        spec = rt.spec
        if spec.prompt is not None or spec.prompt_file is None:
            return Prompt(True, None)
        got = self.take(rt.name, spec.prompt_file, config.daemon.prompt_max_bytes)
        if isinstance(got, PromptFileError):
            self._failed(rt, str(got), now_m, now_w)
        return Prompt(True, got) if isinstance(got, str) else Prompt(False, None)

    def _failed(self, rt: TaskState, reason: str, now_m: float, now_w: float) -> None:
        """The prompt file is unusable: that run fails before any arm is chosen."""
        failed = RunResult(new_run_id(now_w), Outcome.SPAWN_FAILED, reason, started_ok=False)
        self.logger.error(
            "run.finished",
            task=rt.name,
            run_id=failed.run_id,
            outcome=str(Outcome.SPAWN_FAILED),
            stage="prompt",
            reason=reason,
        )
        rt.last_outcome = str(Outcome.SPAWN_FAILED)
        self.table.apply_verdict(rt, judge(rt, failed, now_m, self.rng), set(rt.exclude), now_m)

    def take(self, task: str, path: str, max_bytes: int) -> str | PromptFileError | None:
        """The prompt (or why it cannot be had); None while it is being read."""
        done = self._done.pop(task, None)
        if done is not None and done[0] == path:
            return done[1]
        if task not in self._reading:
            self._reading.add(task)
            self.queued.append((task, path, max_bytes))
        return None

    def start_queued(self) -> list[tuple[str, str, int]]:
        queued, self.queued = self.queued, []
        return queued

    async def read(self, task: str, path: str, max_bytes: int) -> None:
        result: str | PromptFileError
        try:
            result = await anyio.to_thread.run_sync(
                read_prompt_file, path, max_bytes, limiter=self._limiter
            )
        except PromptFileError as exc:
            result = exc
        finally:
            self._reading.discard(task)
        self._done[task] = (path, result)
        self.wake("prompt")
