"""The task state machine in isolation: restart budget, backoff growth and jitter."""

from __future__ import annotations

import random

from factoryd.core.lifecycle import RestartBook, TaskPhase, backoff_delay, verdict_after_run
from factoryd.core.outcome import Outcome
from factoryd.core.taskspec import Backoff, RestartPolicy, TaskKind, TaskSpec
from factoryd.routing.model import RouteRequest


def spec(**kw: object) -> TaskSpec:
    kw.setdefault("kind", TaskKind.SERVICE)
    return TaskSpec(name="t", route=RouteRequest(task="t"), **kw)  # type: ignore[arg-type]


def test_backoff_grows_exponentially_to_the_cap_without_jitter() -> None:
    policy = Backoff(initial=1.0, max=30.0, jitter=False)
    rng = random.Random(1)
    assert [backoff_delay(policy, n, rng) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_full_jitter_is_uniform_below_the_ceiling_and_seeded() -> None:
    policy = Backoff(initial=1.0, max=30.0, jitter=True)
    a = [backoff_delay(policy, n, random.Random(42)) for n in range(1, 8)]
    b = [backoff_delay(policy, n, random.Random(42)) for n in range(1, 8)]
    assert a == b  # deterministic with a seeded RNG
    ceilings = [1, 2, 4, 8, 16, 30, 30]
    assert all(0 <= d <= c for d, c in zip(a, ceilings, strict=True))
    samples = [backoff_delay(policy, 5, random.Random(s)) for s in range(500)]
    assert 6 < sum(samples) / len(samples) < 10  # mean of U(0, 16) is 8
    assert len({round(x, 6) for x in samples}) > 450  # really jittered


def test_successive_quick_failures_back_off_longer() -> None:
    s = spec(
        restart=RestartPolicy.ALWAYS,
        max_restarts=10,
        backoff=Backoff(initial=1, max=100, jitter=False, reset_after=60),
    )
    book = RestartBook.empty()
    delays = []
    now = 0.0
    for i in range(6):
        v = verdict_after_run(s, book, Outcome.FAILED, "exit status 1", 2.0, now, random.Random(0))
        expected = TaskPhase.BACKING_OFF if i else TaskPhase.PENDING
        assert v.phase is expected and v.counts_restart
        delays.append(v.retry_at - now)
        now = v.retry_at + 2
    # The first failure after a healthy run restarts at once; backoff from the second.
    assert delays == [0, 1, 2, 4, 8, 16]
    v = verdict_after_run(s, book, Outcome.FAILED, "exit status 1", 120.0, now, random.Random(0))
    assert v.retry_at - now == 0 or v.phase is TaskPhase.PENDING  # a long run resets the count


def test_restart_budget_is_counted_within_the_window() -> None:
    s = spec(
        restart=RestartPolicy.ON_FAILURE,
        max_restarts=2,
        restart_window=100,
        backoff=Backoff(initial=0.01, max=0.01, jitter=False),
    )
    book = RestartBook.empty()
    rng = random.Random(0)
    assert verdict_after_run(s, book, Outcome.FAILED, "x", 1, 0, rng).counts_restart
    assert verdict_after_run(s, book, Outcome.FAILED, "x", 1, 10, rng).counts_restart
    gave_up = verdict_after_run(s, book, Outcome.STALLED, "silent", 1, 20, rng)
    assert gave_up.phase is TaskPhase.GAVE_UP
    assert "2 restarts within 100s" in gave_up.reason and "stalled: silent" in gave_up.reason
    book = RestartBook.empty()
    verdict_after_run(s, book, Outcome.FAILED, "x", 1, 0, rng)
    verdict_after_run(s, book, Outcome.FAILED, "x", 1, 10, rng)
    assert verdict_after_run(
        s, book, Outcome.FAILED, "x", 1, 150, rng
    ).counts_restart  # window moved


def test_limited_runs_requeue_at_once_and_do_not_count() -> None:
    s = spec(max_restarts=0)
    book = RestartBook.empty()
    v = verdict_after_run(s, book, Outcome.LIMITED, "usage limit", 1, 0, random.Random(0))
    assert v.phase is TaskPhase.PENDING and not v.counts_restart and v.retry_at is None
    assert not book.restarts


def test_oneshot_and_scheduled_verdicts() -> None:
    rng = random.Random(0)
    one = spec(kind=TaskKind.ONESHOT, restart=RestartPolicy.ALWAYS)
    assert (
        verdict_after_run(one, RestartBook.empty(), Outcome.SUCCEEDED, "ok", 1, 0, rng).phase
        is TaskPhase.SUCCEEDED
    )
    cron = spec(kind=TaskKind.SCHEDULED, restart=RestartPolicy.NEVER, schedule="* * * * *")
    assert (
        verdict_after_run(cron, RestartBook.empty(), Outcome.FAILED, "x", 1, 0, rng).phase
        is TaskPhase.WAITING
    )
    assert (
        verdict_after_run(cron, RestartBook.empty(), Outcome.CANCELLED, "op", 1, 0, rng).phase
        is TaskPhase.CANCELLED
    )


def test_a_service_crash_looping_for_days_keeps_its_capped_backoff() -> None:
    # A generous budget (20 restarts in 10 min) and 5 min backoff: once the delay
    # is at its cap, a service failing at once restarts twice per window, never
    # exhausts its budget, and its quick failures keep counting. After the
    # 1,025th, 2 ** n no longer fit a float: the verdict raised OverflowError and
    # took the whole daemon down (3.5 days in; minutes with a 1 ms backoff).
    s = spec(
        restart=RestartPolicy.ALWAYS,
        max_restarts=20,
        backoff=Backoff(initial=1.0, max=300.0, jitter=False),
    )
    book, rng = RestartBook.empty(), random.Random(3)
    now = 0.0
    for _ in range(1100):
        verdict = verdict_after_run(s, book, Outcome.FAILED, "exit 1", 0.05, now, rng)
        assert verdict.phase is not TaskPhase.GAVE_UP
        now = verdict.retry_at if verdict.retry_at is not None else now
    assert book.quick_failures == 1100
    assert verdict.phase is TaskPhase.BACKING_OFF and verdict.reason.startswith("restarting in 300")
    for policy in (Backoff(initial=0.001, max=1.0), Backoff(initial=5.0, max=60.0, jitter=False)):
        assert 0 <= backoff_delay(policy, 10**6, rng) <= policy.max
