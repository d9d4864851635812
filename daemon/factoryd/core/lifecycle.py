"""The task state machine: what happens to a task after each run ends.

Pure functions over plain values with the clock and the random source
passed in, so every rule (restart policy, restart budget, backoff with
full jitter, limits that do not count) is tested in microseconds.
"""

from __future__ import annotations

import enum
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from factoryd.core.outcome import Outcome
from factoryd.core.taskspec import Backoff, RestartPolicy, TaskKind, TaskSpec
from factoryd.routing.model import ArmSpec


class TaskPhase(enum.StrEnum):
    """Where a task stands. Terminal phases keep their reason until reset."""

    PENDING = "pending"  # wants a run; waiting for capacity or for the loop
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    BLOCKED = "blocked"  # no arm can take it right now (limits, caps, filters)
    WAITING = "waiting"  # scheduled: between fire times
    STOPPED = "stopped"  # held by the operator (`factoryd stop`) until `factoryd start`
    SUCCEEDED = "succeeded"  # done: a oneshot (or non-restarting service) that succeeded
    FAILED = "failed"  # done: failed and its policy says never restart
    GAVE_UP = "gave_up"  # exhausted its restart budget
    CANCELLED = "cancelled"  # stopped by an operator
    DISABLED = "disabled"


TERMINAL = frozenset(
    {
        TaskPhase.SUCCEEDED,
        TaskPhase.FAILED,
        TaskPhase.GAVE_UP,
        TaskPhase.CANCELLED,
        TaskPhase.DISABLED,
    }
)


@dataclass(slots=True)
class RestartBook:
    """A task's restart history: what the budget and the backoff are computed from."""

    restarts: deque[float]
    #: Consecutive runs that ended before `reset_after`: the backoff exponent.
    quick_failures: int = 0

    @classmethod
    def empty(cls) -> RestartBook:
        return cls(restarts=deque())


@dataclass(frozen=True, slots=True)
class Verdict:
    phase: TaskPhase
    reason: str
    #: Monotonic time before which no new run may start (None: at once).
    retry_at: float | None = None
    counts_restart: bool = False


#: The largest n for which 2.0 ** n is a finite float.
_MAX_EXPONENT = 1023


def backoff_delay(policy: Backoff, attempt: int, rng: random.Random) -> float:
    """Exponential backoff capped at `max`; with jitter, uniform in [0, that] (full jitter)."""
    # The exponent is capped where 2.0 ** n still fits a float: a task that fails
    # at once for days without exhausting its budget counts past a thousand
    # quick failures, and 2 ** 1025 made the verdict raise (the daemon died).
    # Below the cap, 2.0 ** n is 2 ** n exactly.
    exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
    ceiling = min(policy.max, policy.initial * 2.0**exponent)
    return rng.uniform(0.0, ceiling) if policy.jitter else ceiling


def verdict_after_run(
    spec: TaskSpec,
    book: RestartBook,
    outcome: Outcome,
    reason: str,
    duration: float,
    now: float,
    rng: random.Random,
) -> Verdict:
    """Decide the task's next phase from the run that just ended (mutates `book`)."""
    if outcome is Outcome.LIMITED:
        return Verdict(TaskPhase.PENDING, f"requeued after a usage limit: {reason}")
    if outcome is Outcome.CANCELLED:
        return Verdict(TaskPhase.CANCELLED, reason)
    # An adopted run whose status we cannot know counts as done, not failed:
    # re-running work that may have succeeded is the worse mistake.
    ok = outcome in (Outcome.SUCCEEDED, Outcome.EXIT_UNKNOWN)
    if duration >= spec.backoff.reset_after:
        book.quick_failures = 0
    wants_restart = spec.restart is RestartPolicy.ALWAYS or (
        spec.restart is RestartPolicy.ON_FAILURE and not ok
    )
    if spec.kind is TaskKind.SERVICE and spec.restart is RestartPolicy.ALWAYS:
        wants_restart = True
    elif spec.kind is not TaskKind.SERVICE and ok:
        wants_restart = False
    if not wants_restart:
        if spec.kind is TaskKind.SCHEDULED:
            return Verdict(TaskPhase.WAITING, f"last run {outcome}: {reason}")
        return Verdict(TaskPhase.SUCCEEDED if ok else TaskPhase.FAILED, reason)
    window_start = now - spec.restart_window
    while book.restarts and book.restarts[0] < window_start:
        book.restarts.popleft()
    if len(book.restarts) >= spec.max_restarts:
        why = (
            f"{len(book.restarts)} restarts within {spec.restart_window:g}s "
            f"(max_restarts {spec.max_restarts}); last run {outcome}: {reason}"
        )
        if spec.kind is TaskKind.SCHEDULED:
            book.restarts.clear()
            book.quick_failures = 0
            return Verdict(TaskPhase.WAITING, f"gave up on this fire: {why}")
        return Verdict(TaskPhase.GAVE_UP, why)
    book.restarts.append(now)
    if duration < spec.backoff.reset_after:
        book.quick_failures += 1
    # The first failure after a healthy run restarts at once (as systemd's 100 ms
    # and supervisord's next tick); backoff begins with the second quick failure.
    quick = book.quick_failures
    delay = backoff_delay(spec.backoff, quick - 1, rng) if quick > 1 else 0.0
    return Verdict(
        TaskPhase.BACKING_OFF if delay > 0 else TaskPhase.PENDING,
        f"restarting in {delay:.2f}s after {outcome}: {reason}",
        retry_at=now + delay,
        counts_restart=True,
    )


#: After these outcomes a task's next run avoids the arm that just ran it.
#: A limit, as the seeds did; and a failure, when another arm may take the
#: task: a cascade that escalates instead of repeating on the arm that just
#: failed. The routing simulator showed that repeating is how a router that
#: misjudged an arm (or prefers a free weak one) loses tasks outright.
_ESCALATE_ON_FAILURE = frozenset({Outcome.FAILED, Outcome.TIMED_OUT, Outcome.STALLED})


def exclusions_after(
    exclude: set[str],
    outcome: Outcome,
    arm: str,
    *,
    allowed: Collection[str],
    arms: Mapping[str, ArmSpec],
) -> set[str]:
    """The arms the task's next run must not use, after a run on `arm` ended so.

    `allowed`: the task's own choice of arms (empty: any); `arms`: the
    configured ones. A failure escalates only when the task may use some
    enabled arm besides `arm`. The set grows while runs keep failing; the
    router clears it when it leaves no arm.
    """
    if outcome is Outcome.LIMITED:
        return exclude | {arm}
    if outcome in _ESCALATE_ON_FAILURE and any(
        a != arm and a in arms and arms[a].enabled for a in allowed or arms
    ):
        return exclude | {arm}
    return set()


def attempts_left(spec: TaskSpec, book: RestartBook, now: float) -> int:
    """How many more runs the task gets if its next run fails: its restart
    budget left in the window (0 when a failure would not be restarted).
    The router plans a cascade over the next run and these (routing/cascade.py)."""
    if spec.restart is RestartPolicy.NEVER:
        return 0
    # `restarts` is in time order (appended at each restart, pruned from the
    # left): the ones in the window are found by bisection, not by a walk over
    # a busy service's whole history on every start.
    used = len(book.restarts) - bisect_left(book.restarts, now - spec.restart_window)
    return max(spec.max_restarts - used, 0)
