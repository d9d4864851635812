"""The [daemon] and [routing] sections: how the daemon runs and how it routes.

Both are single tables of scalar settings with defaults; they are read
first, and nothing else in the file depends on them.
"""

from __future__ import annotations

from factoryd.config.context import LoadContext
from factoryd.config.execargs import check_name_list
from factoryd.config.model import PROMPT_MAX_BYTES, DaemonSettings
from factoryd.config.tomltable import MAX_COUNT, Table
from factoryd.routing.ledger import ScarcityPolicy
from factoryd.routing.quality import QualityPolicy
from factoryd.routing.scoring import STRATEGIES, RoutingPolicy
from factoryd.routing.telemetry import HealthPolicy


def read_daemon(ctx: LoadContext, t: Table) -> DaemonSettings:
    state_dir = ctx.path_of(t.string("state_dir", "state"))
    log_dir = ctx.path_of(t.string("log_dir", str(state_dir / "logs")))
    socket = ctx.path_of(t.string("control_socket", str(state_dir / "control.sock")))
    spool = t.string("spool_dir", None)
    listen = t.string("metrics_listen", "127.0.0.1:9464")
    if isinstance(listen, str) and listen != "off":
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            t.problem("metrics_listen", f"expected HOST:PORT or 'off', got {listen!r}")
    settings = DaemonSettings(
        state_dir=state_dir,
        log_dir=log_dir,
        control_socket=socket,
        max_concurrent=t.number("max_concurrent", 16, lo=1, hi=MAX_COUNT, integer=True),
        loop_interval=t.duration("loop_interval", 5.0),
        metrics_listen=listen,
        log_format=t.string("log_format", "auto", ("auto", "json", "console")),
        log_level=t.string("log_level", "info", ("debug", "info", "warning", "error")),
        inherit_env=t.str_list(
            "inherit_env", ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER")
        ),
        run_log_max_bytes=t.size("run_log_max_bytes", 16 * 1024 * 1024),
        prompt_max_bytes=t.size("prompt_max_bytes", PROMPT_MAX_BYTES),
        retain_runs=t.duration("retain_runs", 7 * 86400.0),
        spool_dir=ctx.path_of(spool) if isinstance(spool, str) else None,
    )
    if settings.loop_interval is not None and settings.loop_interval < 0.05:
        t.problem("loop_interval", "expected at least 50ms (it is a safety net, not a poll)")
    check_name_list(t, "inherit_env", settings.inherit_env)
    t.done()
    return settings


def read_routing(
    ctx: LoadContext, t: Table
) -> tuple[RoutingPolicy, ScarcityPolicy, QualityPolicy, HealthPolicy, float]:
    d = RoutingPolicy()
    weights = t.sub("weights")
    quality = t.sub("quality")
    health = t.sub("health")
    scarcity = t.sub("scarcity")
    policy = RoutingPolicy(
        strategy=t.string("strategy", d.strategy, tuple(STRATEGIES)),
        task_fit_weight=weights.number("task_fit", d.task_fit_weight, hi=1000),
        throughput_weight=weights.number("throughput", d.throughput_weight, hi=1000),
        latency_weight=weights.number("latency", d.latency_weight, hi=1000),
        consumption_weight=weights.number("consumption", d.consumption_weight, hi=1000),
        cost_weight=weights.number("cost", d.cost_weight, hi=10),
        cost_floor=t.number("cost_floor", d.cost_floor, hi=1000),
        max_staleness=t.duration("max_staleness", d.max_staleness, allow_none=True),
        session_token_budget=t.number(
            "session_token_budget", d.session_token_budget, lo=1, integer=True
        ),
        throughput_target=t.number("throughput_target", d.throughput_target, exclusive_lo=True),
        latency_target=t.duration("latency_target", d.latency_target) or d.latency_target,
        reservation_ttl=t.duration("reservation_ttl", d.reservation_ttl),
    )
    weights.done()
    q = QualityPolicy(
        alpha=quality.number("alpha", QualityPolicy().alpha, hi=1.0, exclusive_lo=True),
        min_observations=quality.number("min_observations", 3, hi=MAX_COUNT, integer=True),
        observed_weight=quality.number("observed_weight", 0.7, hi=1.0),
    )
    quality.done()
    h = HealthPolicy(
        failure_threshold=health.number("failure_threshold", 3, lo=1, hi=1000, integer=True),
        cooldown=health.duration("cooldown", 300.0),
        max_cooldown=health.duration("max_cooldown", 3600.0),
    )
    health.done()
    s = ScarcityPolicy(
        max_multiplier=scarcity.number("max_multiplier", 100.0, lo=1.0, hi=1e6),
        discount_window=scarcity.duration("discount_window", 3600.0),
        discount_min_fraction=scarcity.number("discount_min_fraction", 0.3, hi=1.0),
        discount=scarcity.number("discount", 0.5, hi=1.0, exclusive_lo=True),
        pace_steps=int(
            scarcity.number("pace_steps", ScarcityPolicy().pace_steps, hi=10_000, integer=True)
        ),
    )
    scarcity.done()
    window = t.duration("telemetry_window", 3600.0)
    if not window:
        t.problem("telemetry_window", "must be longer than zero")
        window = 3600.0
    t.done()
    return policy, s, q, h, window
