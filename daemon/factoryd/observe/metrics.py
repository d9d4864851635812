"""Prometheus metrics: one `factoryd_` prefix, base units, bounded labels.

Labels only ever carry configured names (task, arm, pool, cli) or closed
enums (outcome, reason, phase, result): never run ids or free text, so
cardinality is fixed by the config, not by how many runs come and go.
Submitted one-shot tasks are labelled with their template name.

Counters are updated as things happen, here; state that already lives
elsewhere (pool usage, task phases, runs by state) is read at scrape time by
the collector in scrape.py, so it can never drift from the truth.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.registry import Collector

from factoryd import __version__
from factoryd.core.events import LimitHit
from factoryd.core.outcome import Outcome, RunResult
from factoryd.observe.exposition import Renderer
from factoryd.observe.fastobserve import FastObserve
from factoryd.observe.tally import Tally
from factoryd.routing.decision import Decision
from factoryd.routing.model import Usage

DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400)
#: Per-task duration series looked up directly (beyond it: found through `child`).
DURATION_SERIES_KEPT = 10_000
DECISION_BUCKETS = (
    10e-6,
    25e-6,
    50e-6,
    100e-6,
    250e-6,
    500e-6,
    1e-3,
    2.5e-3,
    5e-3,
    10e-3,
    25e-3,
    100e-3,
)
PASS_BUCKETS = (100e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1.0)


#: What can wake the reconcile loop (the `reason` of factoryd_reconcile_passes_total).
PASS_REASONS = (
    "interval",
    "exit",
    "prompt",
    "submit",
    "command",
    "reload",
    "cancel",
    "reset",
    "fleet",
    "shutdown",
)


class Metrics:
    """Every factoryd metric, in its own registry (tests may run several daemons)."""

    def __init__(self) -> None:
        # `_created` series double the exposition and no dashboard or alert uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.renderer = Renderer()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.build_info = Gauge(
            "factoryd_build_info",
            "Version of the running factoryd.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.config_info = Gauge(
            "factoryd_config_info",
            "Digest of the config in force (1 for the current one).",
            ["digest"],
            registry=r,
        )
        self.config_reload_time = Gauge(
            "factoryd_config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded.",
            registry=r,
        )
        self.config_reload_ok = Gauge(
            "factoryd_config_last_reload_successful",
            "1 if the last config (re)load succeeded, 0 if the daemon kept an older one.",
            registry=r,
        )
        self.config_reload_ok.set(1)
        self.config_reloads = Counter(
            "factoryd_config_reloads_total",
            "Config reload attempts by result.",
            ["result"],
            registry=r,
        )
        # Counted once per run under the run's task: a Tally, not a Counter
        # (no child object made for each task's first run: tally.py).
        self.runs_started = Tally(
            "factoryd_runs_started_total", "Runs started.", ["task", "arm"], registry=r
        )
        self.runs_finished = Tally(
            "factoryd_runs_finished_total",
            "Runs finished, by outcome.",
            ["task", "arm", "outcome"],
            registry=r,
        )
        self.run_duration = Histogram(
            "factoryd_run_duration_seconds",
            "Wall-clock duration of finished runs.",
            ["task"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "factoryd_task_restarts_total",
            "Restarts scheduled by restart policy.",
            ["task"],
            registry=r,
        )
        self.give_ups = Counter(
            "factoryd_task_give_ups_total",
            "Tasks that exhausted their restart budget.",
            ["task"],
            registry=r,
        )
        self.timeouts = Counter(
            "factoryd_run_timeouts_total",
            "Runs ended by their wall-clock timeout.",
            ["task"],
            registry=r,
        )
        self.stalls = Counter(
            "factoryd_run_stalls_total",
            "Runs ended for silence (stall timeout).",
            ["task"],
            registry=r,
        )
        self.kills_escalated = Counter(
            "factoryd_kills_escalated_total",
            "Stops that needed SIGKILL after the grace.",
            ["cli"],
            registry=r,
        )
        self.orphans_reaped = Counter(
            "factoryd_orphans_reaped_total",
            "Escaped or orphaned descendants of runs that factoryd killed or reaped.",
            registry=r,
        )
        self.decisions = Counter(
            "factoryd_routing_decisions_total",
            "Routing decisions by chosen arm ('none').",
            ["arm", "strategy"],
            registry=r,
        )
        self.rejections = Counter(
            "factoryd_routing_rejections_total",
            "Arms rejected by routing, by reason.",
            ["arm", "reason"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "factoryd_routing_decision_seconds",
            "Time to make one routing decision.",
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self._decision_seconds = FastObserve(self.decision_seconds)
        self.tokens = Counter(
            "factoryd_tokens_total", "Tokens reported by agents.", ["arm", "kind"], registry=r
        )
        self.cost = Counter(
            "factoryd_cost_usd_total",
            "Cost reported (or derived from tokens) in USD.",
            ["arm"],
            registry=r,
        )
        self.limit_hits = Counter(
            "factoryd_limit_hits_total",
            "Usage limits reported by agents.",
            ["arm", "pool"],
            registry=r,
        )
        self.passes = Counter(
            "factoryd_reconcile_passes_total",
            "Reconcile passes, by what woke the loop.",
            ["reason"],
            registry=r,
        )
        for reason in PASS_REASONS:  # every series exists from the start, at 0
            self.passes.labels(reason)
        self.pass_seconds = Histogram(
            "factoryd_reconcile_pass_seconds",
            "Duration of one reconcile pass.",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        #: The loop observes its passes through this (see FastObserve).
        self.pass_observer = FastObserve(self.pass_seconds)
        self.parser_errors = Counter(
            "factoryd_parser_errors_total",
            "Agent output lines that could not be parsed.",
            ["cli"],
            registry=r,
        )
        self.output_bytes = Counter(
            "factoryd_output_bytes_total",
            "Agent output bytes written to run logs.",
            ["cli"],
            registry=r,
        )
        self.output_dropped = Counter(
            "factoryd_output_dropped_bytes_total",
            "Agent output bytes not kept: past the log cap, or the log could not be written.",
            ["cli"],
            registry=r,
        )
        self.spawn_failures = Counter(
            "factoryd_spawn_failures_total",
            "Runs that could not start.",
            ["task", "arm"],
            registry=r,
        )
        self.submissions = Counter(
            "factoryd_submissions_total",
            "Submitted tasks, by result.",
            ["source", "result"],
            registry=r,
        )
        self.cron_fires = Counter(
            "factoryd_cron_fires_total",
            "Scheduled fires, by what was done with them.",
            ["task", "result"],
            registry=r,
        )
        self.last_pass = Gauge(
            "factoryd_last_pass_timestamp_seconds",
            "When the last reconcile pass finished.",
            registry=r,
        )

        #: Every run's output counters, per CLI (a handful of series): looked up
        #: once, not three `labels()` calls per run.
        self._per_cli: dict[str, tuple[Any, Any, Any]] = {}
        #: Series looked up by `child`, by (metric, label values).
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        #: Each decision's counter value, by (arm or "none", strategy), and each
        #: task's duration histogram: the values themselves, added to directly.
        self._decided: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, FastObserve] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: prometheus_client validates
        and locks on every `labels()` call, and a run's counters are the same
        handful of series run after run (labels are configured names, so the
        cache is as bounded as the series themselves)."""
        key = (metric, labels)
        got = self._children.get(key)
        if got is None:
            if len(self._children) > 100_000:
                self._children.clear()
            got = self._children[key] = metric.labels(*labels)
        return got

    # -- recording ----------------------------------------------------------

    def config_loaded(self, raw: bytes) -> None:
        self.config_info.clear()
        self.config_info.labels(hashlib.sha256(raw).hexdigest()[:12]).set(1)
        self.config_reload_time.set(time.time())

    def decision(self, d: Decision, seconds: float) -> None:
        """Counted on every run start: the histogram and the decision's counter are
        added to directly (`Counter.inc` checks its argument and takes its value's
        lock through two calls); a rejection takes the usual path."""
        self._decision_seconds.observe(seconds)
        key = (d.arm or "none", d.strategy)
        value = self._decided.get(key)
        if value is None:
            if len(self._decided) > 10_000:
                self._decided.clear()
            value = self._decided[key] = self.child(self.decisions, *key)._value
        value.inc(1)
        for r in d.rejections:
            # An arm the task does not allow is the task's choice, not a rejection.
            if r.reason != "not_allowed":
                self.child(self.rejections, r.arm, str(r.reason)).inc()

    def prepare_tasks(self, labels: Iterable[str]) -> None:
        """Make each configured task's duration series now, at adoption, not at its
        first run's end. Prometheus's advice for series known in advance: they
        are scraped at zero from the start, so `rate()` and absence alerts work
        before the first run. And a histogram series is dozens of objects: made
        before the daemon freezes its start-up heap, the collector never walks
        them again, where made in a burst of first runs they were a tenth of the
        loop's work (their making, then their survival through collections)."""
        for label in labels:
            if len(self._durations) >= DURATION_SERIES_KEPT:
                return
            self._duration(label)

    def _duration(self, task: str) -> FastObserve:
        """A task's duration series, made at most once (while DURATION_SERIES_KEPT
        holds; past it the cache starts over and `child` finds the series)."""
        durations = self._durations.get(task)
        if durations is None:
            if len(self._durations) > DURATION_SERIES_KEPT:
                self._durations.clear()
            durations = self._durations[task] = FastObserve(self.child(self.run_duration, task))
        return durations

    def run_finished(self, task: str, arm: str, cli: str, result: RunResult) -> None:
        """Everything a finished run counts, whatever its outcome."""
        outcome = result.outcome
        self.runs_finished.add((task, arm, outcome.value))
        self._duration(task).observe(result.duration)
        if outcome is Outcome.TIMED_OUT:
            self.timeouts.labels(task).inc()
        elif outcome is Outcome.STALLED:
            self.stalls.labels(task).inc()
        elif outcome is Outcome.SPAWN_FAILED:
            self.spawn_failures.labels(task, arm).inc()
        if result.sigkilled:
            self.kills_escalated.labels(cli).inc()
        if result.orphans_killed:
            self.orphans_reaped.inc(result.orphans_killed)
        per_cli = self._per_cli.get(cli)
        if per_cli is None:
            per_cli = self._per_cli[cli] = (
                self.output_bytes.labels(cli),
                self.output_dropped.labels(cli),
                self.parser_errors.labels(cli),
            )
        logged, dropped, parse_errors = per_cli
        # A quiet run adds nothing: no lock taken for a zero (most runs drop
        # nothing and have no parse errors).
        if result.bytes_logged:
            logged.inc(result.bytes_logged)
        if result.bytes_dropped:
            dropped.inc(result.bytes_dropped)
        if result.parse_errors:
            parse_errors.inc(result.parse_errors)

    def usage(self, arm: str, usage: Usage, cost: float | None) -> None:
        for kind, value in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            if value > 0:
                self.tokens.labels(arm, kind).inc(value)
        if cost:
            self.cost.labels(arm).inc(cost)

    def limit(self, arm: str, pools: Iterable[str], _hit: LimitHit) -> None:
        for pool in list(pools) or ["none"]:
            self.limit_hits.labels(arm, pool).inc()

    def exposition(self) -> bytes:
        return self.renderer.render(self.registry)

    def add_state_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


__all__ = [
    "DECISION_BUCKETS",
    "DURATION_BUCKETS",
    "PASS_BUCKETS",
    "PASS_REASONS",
    "FastObserve",
    "Metrics",
]
