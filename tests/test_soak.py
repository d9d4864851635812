"""A compressed-time soak of the pure core: three simulated days, thousands of runs
with random exits, hangs, 429s and subscription limits over several arms and pools.

The clock is injected, so days pass in a second. The simulation plays the
reconciler's part for the pure pieces (router, ledger, telemetry, quality,
restart policy), keeps its own independent books of every charge, and
checks at the end that:

* every pool balances: `used` equals the charges committed in its current
  window to the token, run and cent, and nothing stays reserved;
* every task ended in a state its policy allows, limited runs never spent
  restart budget, and gave-up tasks really exhausted it;
* memory stayed flat while the runs went by.
"""

from __future__ import annotations

import heapq
import math
import random
import tracemalloc
from collections import defaultdict, deque
from dataclasses import dataclass, field

from factoryd.core.lifecycle import TERMINAL, RestartBook, TaskPhase, verdict_after_run
from factoryd.core.outcome import Outcome
from factoryd.core.taskspec import Backoff, RestartPolicy, TaskKind, TaskSpec
from factoryd.routing.decision import Decision
from factoryd.routing.model import RouteRequest, TaskType, Usage
from routing_kit import T0, arm, engine, pool

DAYS = 3
TIMEOUT = 1800.0


@dataclass
class SimTask:
    spec: TaskSpec
    book: RestartBook = field(default_factory=RestartBook.empty)
    phase: TaskPhase = TaskPhase.PENDING
    retry_at: float = 0.0
    running: bool = False
    exclude: set[str] = field(default_factory=set)
    history: list[tuple[float, Outcome, bool]] = field(default_factory=list)
    restarts: int = 0


def make_tasks(rng: random.Random) -> list[SimTask]:
    """12 services that always restart (the bulk of the runs), and 18 tasks that end:
    services restarting on failure or never, and one-shots, with small and large
    restart budgets, so every terminal phase gets reached."""
    tasks = []
    for i in range(30):
        if i < 12:
            kind, restart, budget = TaskKind.SERVICE, RestartPolicy.ALWAYS, 100_000
        else:
            kind = TaskKind.SERVICE if i % 2 else TaskKind.ONESHOT
            restart = [RestartPolicy.ALWAYS, RestartPolicy.ON_FAILURE, RestartPolicy.NEVER][i % 3]
            budget = rng.choice([2, 3, 10])
        spec = TaskSpec(
            name=f"t{i:02}",
            kind=kind,
            route=RouteRequest(
                task=f"t{i:02}",
                type=list(TaskType)[i % 10],
                estimated_tokens=rng.choice([0, 2000, 20000]),
                priority=["low", "normal", "high", "critical"][i % 4],
            ),  # type: ignore[arg-type]
            restart=restart,
            max_restarts=budget,
            restart_window=rng.choice([600.0, 3600.0]),
            backoff=Backoff(initial=5.0, max=600.0, jitter=True, reset_after=300.0),
            timeout=TIMEOUT,
        )
        tasks.append(SimTask(spec))
    return tasks


def test_three_simulated_days_of_runs_balance_to_the_token_and_cent() -> None:
    rng = random.Random(20261122)
    e = engine(
        [
            arm("sub-a", cli="claude", pools=("plan-a",), context_window=200_000),
            arm("sub-b", cli="codex", pools=("plan-b", "tokens"), thinking=("high",)),
            arm(
                "api",
                cli="opencode",
                pools=("spend", "tokens"),
                cost_per_1k_input=0.003,
                cost_per_1k_output=0.015,
            ),
            arm("local", cli="command", pools=("runs",), local=True),
        ],
        [
            pool("plan-a", "runs", 300, "5h"),
            pool("plan-b", "runs", 400, "5h"),
            pool("tokens", "tokens", 20_000_000, "1d"),
            pool("spend", "usd", 300.0, "1d"),
            pool("runs", "runs", 400, "1h"),
        ],
        reservation_ttl=TIMEOUT + 600,
    )
    tasks = make_tasks(rng)
    by_name = {t.spec.name: t for t in tasks}
    now = T0
    end = T0 + DAYS * 86400
    events: list[tuple[float, int, str, Decision, Outcome, Usage | None, float | None]] = []
    seq = 0
    books: dict[tuple[str, float], list[float]] = defaultdict(list)
    finished_runs = 0
    limited_runs = 0
    memory_samples: deque[int] = deque()
    tracemalloc.start()

    def start(task: SimTask) -> None:
        nonlocal seq
        decision = e.route(task.spec.route, now, exclude=task.exclude, ttl=TIMEOUT + 600)
        if decision.arm is None:
            task.exclude.clear()
            task.phase, task.retry_at = TaskPhase.BLOCKED, now + 60
            return
        roll = rng.random()
        usage = Usage(
            input_tokens=rng.randint(100, 9000), output_tokens=rng.randint(10, 900), cost_usd=None
        )
        limit_until: float | None = None
        if roll < 0.55:
            outcome, duration = Outcome.SUCCEEDED, rng.uniform(10, 900)
        elif roll < 0.75:
            outcome, duration = Outcome.FAILED, rng.uniform(1, 300)
        elif roll < 0.82:
            outcome, duration = Outcome.TIMED_OUT, TIMEOUT
        elif roll < 0.87:
            outcome, duration, usage = Outcome.LIMITED, rng.uniform(1, 20), Usage()
            limit_until = now + rng.uniform(60, 1800) if rng.random() < 0.8 else None
        elif roll < 0.95:
            outcome, duration, usage = Outcome.SPAWN_FAILED, 0.0, None
        else:
            outcome, duration = Outcome.STALLED, rng.uniform(60, 600)
        seq += 1
        heapq.heappush(
            events, (now + duration, seq, task.spec.name, decision, outcome, usage, limit_until)
        )
        task.running = True
        task.phase = TaskPhase.RUNNING

    def finish(
        task: SimTask,
        decision: Decision,
        outcome: Outcome,
        usage: Usage | None,
        limit_until: float | None,
        started: float,
    ) -> None:
        nonlocal finished_runs, limited_runs
        task.running = False
        before = {p: e.ledger.pools[p].used for p in decision.charges}
        windows = {p: e.ledger.pools[p].window_start for p in decision.charges}
        settled = e.settle(
            decision,
            now=now,
            usage=usage,
            ok=outcome is Outcome.SUCCEEDED,
            duration=now - started,
            task_type=str(task.spec.route.type),
            limited=outcome is Outcome.LIMITED,
        )
        for p, amount in settled.committed.items():
            st = e.ledger.pools[p]
            # The window may have rolled between reserve and commit: usage lands in
            # the window current at commit time, which is what we book.
            books[(p, st.window_start)].append(amount)
            if windows[p] == st.window_start:
                assert math.isclose(st.used, before[p] + amount, abs_tol=1e-9)
        if outcome is Outcome.LIMITED:
            limited_runs += 1
            e.report_limit(decision.arm, limit_until, now, "simulated limit")
            task.exclude.add(decision.arm)
        else:
            task.exclude.clear()
        restarts_before = len(task.book.restarts)
        verdict = verdict_after_run(task.spec, task.book, outcome, "sim", now - started, now, rng)
        task.history.append((now, outcome, verdict.counts_restart))
        if verdict.counts_restart:
            task.restarts += 1
        if outcome is Outcome.LIMITED:
            assert not verdict.counts_restart and len(task.book.restarts) == restarts_before
        task.phase = verdict.phase
        task.retry_at = verdict.retry_at if verdict.retry_at is not None else now
        finished_runs += 1

    starts: dict[str, float] = {}
    while now < end or events:
        for task in tasks:
            if (
                now < end
                and not task.running
                and task.phase not in TERMINAL
                and now >= task.retry_at
            ):
                start(task)
                starts[task.spec.name] = now
        next_time = min([events[0][0]] if events else [now + 60.0])
        next_time = min(next_time, now + 60.0) if now < end else next_time
        now = next_time
        e.ledger.advance(now)
        while events and events[0][0] <= now:
            _, _, name, decision, outcome, usage, until = heapq.heappop(events)
            finish(by_name[name], decision, outcome, usage, until, starts[name])
        if finished_runs and finished_runs % 500 == 0:
            memory_samples.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.stop()
    assert finished_runs > 3000, finished_runs
    assert limited_runs > 100
    # Pools balance to the token, the run and the cent.
    e.ledger.advance(now)
    for name, st in e.ledger.pools.items():
        booked = math.fsum(books[(name, st.window_start)])
        assert math.isclose(st.used, booked, abs_tol=1e-6), (name, st.used, booked)
        assert st.used >= 0
        assert st.reserved == 0 and not st.holds
    assert not e.ledger.reservations
    # Every task ended in a state its policy allows.
    for task in tasks:
        spec = task.spec
        outcomes = [o for _, o, _ in task.history]
        assert task.restarts == sum(1 for _, _, counted in task.history if counted)
        limited_counted = [c for _, o, c in task.history if o is Outcome.LIMITED and c]
        assert not limited_counted
        if task.phase is TaskPhase.SUCCEEDED:
            assert outcomes and outcomes[-1] is Outcome.SUCCEEDED
            assert spec.kind is TaskKind.ONESHOT or spec.restart is not RestartPolicy.ALWAYS
        elif task.phase is TaskPhase.FAILED:
            assert spec.restart is RestartPolicy.NEVER and outcomes[-1] is not Outcome.SUCCEEDED
        elif task.phase is TaskPhase.GAVE_UP:
            window_start = task.history[-1][0] - spec.restart_window
            recent = [t for t, o, counted in task.history[:-1] if counted and t >= window_start]
            assert len(recent) >= spec.max_restarts
        else:
            assert spec.kind is TaskKind.SERVICE or spec.restart is not RestartPolicy.NEVER
    # Memory stayed flat: the second half of the samples grew by less than 512 KiB.
    samples = list(memory_samples)
    half = samples[len(samples) // 2 :]
    assert max(half) - min(half) < 512 * 1024, (min(half), max(half))
