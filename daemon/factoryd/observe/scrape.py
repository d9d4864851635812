"""Metrics read at scrape time from the state that already holds them.

Pool usage, windows and limits, arm availability, tasks by phase and runs
by state live in the router's ledger and the reconciler's tables; copying
them into gauges as they change would be a second truth that can drift.
This collector asks for them when Prometheus scrapes instead. Scrapes are
served on the event loop (see `service/http.py`), the same thread that owns
that state, so it reads without locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from factoryd.observe.logs import lines_dropped
from factoryd.routing.availability import arm_health
from factoryd.routing.engine import RoutingEngine


class StateCollector(Collector):
    """Reads live state at scrape time: pools, tasks by phase, runs by state."""

    def __init__(
        self,
        engine: Callable[[], RoutingEngine],
        task_phases: Callable[[], dict[str, int]],
        run_states: Callable[[], dict[str, int]],
        blocked: Callable[[], dict[str, int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.task_phases = task_phases
        self.run_states = run_states
        self.blocked = blocked
        self.clock = clock

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        now = self.clock()
        engine = self.engine()
        ledger = engine.ledger
        ledger.advance(now)
        used = GaugeMetricFamily(
            "factoryd_pool_used", "Pool usage in the current window.", labels=["pool", "unit"]
        )
        reserved = GaugeMetricFamily(
            "factoryd_pool_reserved", "Pool capacity held by runs.", labels=["pool", "unit"]
        )
        limit = GaugeMetricFamily(
            "factoryd_pool_limit", "Pool capacity per window.", labels=["pool", "unit"]
        )
        mult = GaugeMetricFamily(
            "factoryd_pool_scarcity_multiplier",
            "Cost multiplier from pool scarcity (capped; the cap when exhausted).",
            labels=["pool"],
        )
        exhausted = GaugeMetricFamily(
            "factoryd_pool_exhausted",
            "1 if the pool cannot take runs (used up or limited).",
            labels=["pool"],
        )
        reset = GaugeMetricFamily(
            "factoryd_pool_reset_seconds",
            "Seconds until the pool's window resets.",
            labels=["pool"],
        )
        limited = GaugeMetricFamily(
            "factoryd_pool_limited_seconds",
            "Seconds until a provider-reported limit on the pool lifts (0 if none).",
            labels=["pool"],
        )
        for name, st in ledger.pools.items():
            unit = str(st.spec.unit)
            used.add_metric([name, unit], st.used)
            reserved.add_metric([name, unit], st.reserved)
            limit.add_metric([name, unit], st.spec.limit)
            m = ledger.multiplier(name, now)
            mult.add_metric([name], ledger.scarcity_policy.max_multiplier if m is None else m)
            exhausted.add_metric([name], 1.0 if m is None else 0.0)
            if st.window_end is not None:
                reset.add_metric([name], max(0.0, st.window_end - now))
            until = st.limited_until if st.is_limited(now) else None
            limited.add_metric([name], 0.0 if until is None else until - now)
        yield from (used, reserved, limit, mult, exhausted, reset, limited)
        expired = CounterMetricFamily(
            "factoryd_reservations_expired", "Reservations released because nobody settled them."
        )
        expired.add_metric([], ledger.expired_total)
        yield expired
        dropped = CounterMetricFamily(
            "factoryd_log_lines_dropped",
            "Log lines the daemon could not write (its stderr or log file failed).",
        )
        dropped.add_metric([], lines_dropped())
        yield dropped
        arms_limited = GaugeMetricFamily(
            "factoryd_arm_available",
            "1 if the arm could be routed to now (enabled, secrets set, healthy, "
            "not resting, neither it nor its pools limited): status's health is ok.",
            labels=["arm"],
        )
        for arm_name in engine.arms:
            ok = arm_health(engine, arm_name, now)[0] == "ok"
            arms_limited.add_metric([arm_name], 1.0 if ok else 0.0)
        yield arms_limited
        phases = GaugeMetricFamily("factoryd_tasks", "Tasks by phase.", labels=["phase"])
        for phase, count in sorted(self.task_phases().items()):
            phases.add_metric([phase], count)
        yield phases
        states = GaugeMetricFamily(
            "factoryd_runs", "Runs currently alive, by state.", labels=["state"]
        )
        for state, count in sorted(self.run_states().items()):
            states.add_metric([state], count)
        yield states
        blocked = GaugeMetricFamily(
            "factoryd_tasks_blocked",
            "Tasks no arm can take right now (every allowed arm limited, resting or full).",
            labels=["task"],
        )
        for label, count in sorted(self.blocked().items()):
            blocked.add_metric([label], count)
        yield blocked
