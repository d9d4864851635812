"""[[pools]] and [[arms]]: the capacity a provider sells, and who spends it.

Pools come first (arms name them); an arm's routing facts become an
`ArmSpec` for the router, and how to start its CLI an `ArmLaunch` that the
router never sees.
"""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime

from factoryd.config.context import LoadContext
from factoryd.config.execargs import check_env_names, check_program
from factoryd.config.model import CLIS, ArmLaunch
from factoryd.config.tomltable import MAX_COUNT, MISSING, Table, describe
from factoryd.routing.model import ArmSpec, PoolSpec, PoolUnit
from factoryd.units.durations import DurationError, Period, parse_period


def read_pool(ctx: LoadContext, t: Table) -> tuple[PoolSpec | None, int | None]:
    name = t.name("name")
    unit = t.string("unit", None, tuple(u.value for u in PoolUnit))
    if unit is None and "unit" not in t.data:
        t.problem("unit", "is required: one of tokens, runs, usd")
    limit = t.number("limit", MISSING, exclusive_lo=True)
    window: Period | None = None
    raw = t.raw("window")
    if raw is not MISSING and raw != "none":
        if not isinstance(raw, str):
            t.problem(
                "window", f"expected a period such as '5h', '7d' or '1mo', got {describe(raw)}"
            )
        else:
            try:
                window = parse_period(raw)
            except DurationError as exc:
                t.problem("window", str(exc))
            else:
                if not window.months and window.seconds < 1:
                    t.problem("window", "expected at least 1s")
                    window = None
    anchor = _anchor(t)
    spec_k = t.number("scarcity_k", 2.0, hi=16)
    backoff = t.duration("limit_backoff", 900.0) or 900.0
    backoff_max = t.duration("limit_backoff_max", 6 * 3600.0) or 6 * 3600.0
    cap = t.number("max_concurrent", None, lo=1, hi=MAX_COUNT, integer=True)
    t.done()
    if not isinstance(name, str) or unit is None or limit is None:
        return None, None
    return (
        PoolSpec(
            name=name,
            unit=PoolUnit(unit),
            limit=float(limit),
            window=window,
            anchor=anchor,
            scarcity_k=float(spec_k),
            limit_backoff=backoff,
            limit_backoff_max=max(backoff, backoff_max),
        ),
        cap,
    )


def _anchor(t: Table) -> float:
    raw = t.raw("anchor")
    if raw is MISSING:
        return 0.0
    if isinstance(raw, datetime):
        value = raw if raw.tzinfo else raw.replace(tzinfo=zoneinfo.ZoneInfo("UTC"))
        return value.timestamp()
    if isinstance(raw, date):
        return datetime(raw.year, raw.month, raw.day, tzinfo=zoneinfo.ZoneInfo("UTC")).timestamp()
    if isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if value.tzinfo is None:
                value = value.replace(tzinfo=zoneinfo.ZoneInfo("UTC"))
            return value.timestamp()
    t.problem(
        "anchor",
        f"expected an RFC 3339 date-time such as 2026-01-01T09:00:00Z, got {describe(raw)}",
    )
    return 0.0


def read_arm(
    ctx: LoadContext, t: Table, pools: dict[str, PoolSpec]
) -> tuple[ArmSpec | None, ArmLaunch]:
    name = t.name("name")
    cli = t.string("cli", MISSING, CLIS)
    pool_names = t.str_list("pools")
    raw_pools = t.data.get("pools", [])
    pools_ok = isinstance(raw_pools, list) and all(isinstance(x, str) for x in raw_pools)
    for i, pool in enumerate(pool_names):
        # A declared but invalid pool has its own error; do not cascade.
        if pool not in pools and pool not in ctx.declared_pools:
            known = ", ".join(pools) or "none are defined"
            ctx.problem(f"{t.key('pools')}[{i}]", f"no pool named {pool!r} (known: {known})")
    if len(set(pool_names)) != len(pool_names):
        t.problem("pools", "lists a pool more than once")
    rates_table = t.sub("rates")
    rates: dict[str, float] = {}
    for pool in list(rates_table.data):
        rate = rates_table.number(pool, 1.0, hi=1e6)
        if pools_ok and pool not in pool_names:
            rates_table.problem(pool, "is not one of this arm's pools")
        rates[pool] = float(rate)
    thinking = t.str_list("thinking")
    max_complexity = t.number("max_complexity", None, hi=1.0)
    argv = t.str_list("argv") if "argv" in t.data else None
    if t.data.get("argv") == []:
        t.problem("argv", "must not be empty")
    check_program(t, "argv", argv)
    spec = ArmSpec(
        name=name,
        cli=cli or "command",
        provider=t.string("provider", ""),
        model=t.string("model", ""),
        pools=pool_names,
        rates=rates,
        context_window=t.number("context_window", 0, hi=1e9, integer=True),
        tools=t.boolean("tools", True),
        vision=t.boolean("vision", False),
        thinking=thinking,
        local=t.boolean("local", False),
        cost_per_1k_input=float(t.number("cost_per_1k_input", 0.0, hi=1e6)),
        cost_per_1k_output=float(t.number("cost_per_1k_output", 0.0, hi=1e6)),
        max_complexity=None if max_complexity is None else float(max_complexity),
        enabled=t.boolean("enabled", True),
        fallback=t.boolean("fallback", True),
    )
    secrets = t.str_map("secrets")
    check_env_names(t, "secrets", [var for var, _ in secrets])
    for var, source in secrets:
        if not (source.startswith("env:") or source.startswith("file:")) or len(source) < 5:
            ctx.problem(
                f"{t.key('secrets')}.{var}",
                # never the value: an inline secret put here by mistake is a credential
                "expected 'env:NAME' or 'file:/path' (the value given is not shown)",
            )
    env = t.str_map("env")
    check_env_names(t, "env", [var for var, _ in env])
    executable = t.string("executable", None)
    if executable is not None and not executable.strip():
        t.problem("executable", "the program to run must not be empty")
    launch = ArmLaunch(
        argv=argv,
        executable=executable,
        args=t.str_list("args"),
        env=env,
        secrets=secrets,
        config_dir=ctx.opt_path(t, "config_dir"),
        base_url=t.string("base_url", None),
        max_concurrent=t.number("max_concurrent", None, lo=1, hi=MAX_COUNT, integer=True),
    )
    t.done()
    rates_table.done()
    if not isinstance(name, str) or cli is None:
        return None, launch
    return spec, launch
