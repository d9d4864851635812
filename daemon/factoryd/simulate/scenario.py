"""Scenario files: what happens to the daemon over a simulated week, and the hidden truth.

A scenario is TOML read with the same typed, path-aware reader as the
daemon's config, so a typo is an error naming its key, never a silently
ignored setting. It is checked against the config it runs with: every
template, arm and pool it names must exist there, and every arm a task may
be routed to must have a hidden truth for the task's type.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from factoryd.config.model import Config
from factoryd.config.tomltable import ConfigError, Problem, Table, describe
from factoryd.core.schedule import next_fire
from factoryd.units.durations import DurationError, Period, parse_period
from factoryd.units.timefmt import parse_iso

DEFAULT_START = "2026-12-07T00:00:00Z"
#: The event kinds a `[[events]]` entry may be, beside a success drift.
CANCEL, STORM = "operator_cancel", "limit_storm"


@dataclass(frozen=True, slots=True)
class Dist:
    """A normal distribution, truncated at a small positive floor when drawn."""

    mean: float
    sd: float


@dataclass(frozen=True, slots=True)
class Arrival:
    template: str
    #: Mean gap of Poisson arrivals (seconds), or None for a cron schedule.
    every: float | None
    schedule: str | None
    burst: int
    #: Daily window (seconds after local midnight) arrivals are kept in.
    during: tuple[float, float] | None


@dataclass(frozen=True, slots=True)
class Truth:
    arm: str
    type: str
    success: float
    tokens: Dist
    duration: Dist


@dataclass(frozen=True, slots=True)
class ProviderLimit:
    pool: str
    limit: float
    window: Period | None
    reset_in_message: bool


@dataclass(frozen=True, slots=True)
class WorldEvent:
    """A change to the world at `at` seconds after the start."""

    at: float
    #: "success", "outage", "hang", CANCEL or STORM.
    kind: str
    arm: str | None = None
    type: str = "*"
    success: float = 0.0
    #: How long an outage, hang, storm or cancel spell lasts (inf: to the end).
    span: float = float("inf")
    fraction: float = 0.0
    pool: str | None = None
    reset_in_message: bool = True
    #: Operator cancels: the operator submits the task again at once.
    restart: bool = True


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    duration: float
    start: float
    seeds: int
    timezone: str
    #: After arrivals stop, how long work already queued may still finish.
    drain: float
    arrivals: tuple[Arrival, ...]
    truths: tuple[Truth, ...]
    provider_limits: tuple[ProviderLimit, ...]
    events: tuple[WorldEvent, ...]

    @property
    def end(self) -> float:
        return self.start + self.duration + self.drain


class _Reader:
    def __init__(self, path: str) -> None:
        self.file = path
        self.problems: list[Problem] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, key, message))

    def items(self, root: Table, name: str) -> list[Table]:
        value = root.raw(name)
        if value is None or value.__class__ is object:
            return []
        if not isinstance(value, list):
            root.problem(name, f"expected an array of tables, got {describe(value)}")
            return []
        return [Table(self, v, f"{name}[{i}]") for i, v in enumerate(value)]


def load_scenario(path: str | Path, config: Config) -> Scenario:
    """Read and check a scenario; raises ConfigError with every problem found."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([Problem(str(p), "(file)", f"cannot read: {exc.strerror}")]) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([Problem(str(p), "(file)", f"invalid TOML: {exc}")]) from None
    return parse_scenario(data, config, name=p.stem, where=str(p))


def parse_scenario(data: dict[str, Any], config: Config, *, name: str, where: str) -> Scenario:
    r = _Reader(where)
    root = Table(r, data, "")
    sim = root.sub("simulation")
    duration = sim.duration("duration", 7 * 86400.0)
    if not duration:
        sim.problem("duration", "must be longer than zero")
        duration = 1.0
    start = _instant(sim, "start")
    seeds = sim.number("seeds", 20, lo=1, hi=1000, integer=True)
    tz = sim.string("timezone", "UTC")
    drain = sim.duration("drain", 6 * 3600.0)
    sim.done()
    arrivals = tuple(a for t in r.items(root, "arrivals") if (a := _arrival(t, config)))
    if not arrivals and not r.problems:
        root.problem("arrivals", "at least one [[arrivals]] is required")
    truths = tuple(x for t in r.items(root, "truth") if (x := _truth(t, config)))
    limits = tuple(y for t in r.items(root, "provider_limits") if (y := _limit(t, config)))
    events = tuple(z for t in r.items(root, "events") if (z := _event(t, config)))
    root.done()
    scenario = Scenario(
        name=name,
        duration=duration,
        start=start,
        seeds=seeds,
        timezone=tz or "UTC",
        drain=drain,
        arrivals=arrivals,
        truths=truths,
        provider_limits=limits,
        events=tuple(sorted(events, key=lambda e: e.at)),
    )
    if not r.problems:
        _check_truth_coverage(scenario, config, r)
    if r.problems:
        raise ConfigError(r.problems)
    return scenario


def _instant(t: Table, name: str) -> float:
    value = t.raw(name)
    if value.__class__ is object:
        return parse_iso(DEFAULT_START)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            pass
    t.problem(name, f"expected an RFC 3339 time, got {describe(value)}")
    return parse_iso(DEFAULT_START)


def _clock(t: Table, name: str) -> tuple[float, float] | None:
    value = t.str_list("during")
    if not value:
        return None
    try:
        if len(value) != 2:
            raise ValueError
        lo, hi = (_hhmm(v) for v in value)
    except ValueError:
        t.problem(name, f'expected ["HH:MM", "HH:MM"], got {value!r}')
        return None
    return lo, hi


def _hhmm(text: str) -> float:
    hours, _, minutes = text.partition(":")
    h, m = int(hours), int(minutes or 0)
    if not (0 <= h <= 24 and 0 <= m < 60):
        raise ValueError(text)
    return h * 3600.0 + m * 60.0


def _arrival(t: Table, config: Config) -> Arrival | None:
    template = t.string("template")
    if isinstance(template, str) and template not in config.templates:
        known = ", ".join(config.templates) or "none are defined"
        t.problem("template", f"no template named {template!r} in the config (known: {known})")
    every = t.duration("every", None)
    schedule = t.string("schedule", None)
    burst = t.number("burst", 1, lo=1, hi=10_000, integer=True)
    during = _clock(t, "during")
    t.done()
    if (every is None) == (schedule is None):
        t.problem("every", "give either every (a mean gap) or schedule (a cron expression)")
        return None
    if every is not None and every <= 0:
        t.problem("every", "must be longer than zero")
        return None
    if schedule is not None:
        try:
            next_fire(schedule, "UTC", 0.0)
            valid = True
        except Exception:  # croniter's errors have no common base worth naming
            valid = False
        if not valid:
            t.problem("schedule", f"not a valid cron expression: {schedule!r}")
            return None
    if not isinstance(template, str):
        return None
    return Arrival(template, every, schedule, burst or 1, during)


def _dist(t: Table, name: str, *, seconds: bool) -> Dist | None:
    sub = t.sub(name)
    if not sub.data:
        t.problem(name, "is required: { mean = ..., sd = ... }")
        return None
    if seconds:
        mean, sd = sub.duration("mean", None), sub.duration("sd", 0.0)
        if mean is None:
            sub.problem("mean", "is required (a duration)")
    else:
        mean, sd = sub.number("mean", None), sub.number("sd", 0.0)
    sub.done()
    return None if mean is None or sd is None else Dist(float(mean), float(sd))


def _arm(t: Table, config: Config, *, required: bool = True) -> str | None:
    arm = t.string("arm") if required else t.string("arm", None)
    names = [a.name for a in config.arms]
    if isinstance(arm, str) and arm not in names:
        t.problem("arm", f"no arm named {arm!r} in the config (known: {', '.join(names)})")
        return None
    return arm if isinstance(arm, str) else None


def _pool(t: Table, config: Config, *, required: bool = True) -> str | None:
    pool = t.string("pool") if required else t.string("pool", None)
    names = [p.name for p in config.pools]
    if isinstance(pool, str) and pool not in names:
        t.problem("pool", f"no pool named {pool!r} in the config (known: {', '.join(names)})")
        return None
    return pool if isinstance(pool, str) else None


def _truth(t: Table, config: Config) -> Truth | None:
    arm = _arm(t, config)
    kind = t.string("type", "*")
    success = t.number("success", None, hi=1.0)
    tokens = _dist(t, "tokens", seconds=False)
    duration = _dist(t, "duration", seconds=True)
    t.done()
    if arm is None or success is None or tokens is None or duration is None:
        return None
    return Truth(arm, kind, float(success), tokens, duration)


def _limit(t: Table, config: Config) -> ProviderLimit | None:
    pool = _pool(t, config)
    limit = t.number("limit", None, exclusive_lo=True)
    window_text = t.string("window", None)
    reset = t.boolean("reset_in_message", True)
    t.done()
    window = None
    if isinstance(window_text, str):
        try:
            window = parse_period(window_text)
        except DurationError as exc:
            t.problem("window", str(exc))
            return None
    if pool is None or limit is None:
        return None
    return ProviderLimit(pool, float(limit), window, reset)


def _event(t: Table, config: Config) -> WorldEvent | None:
    at = t.duration("at", None)
    if at is None:
        t.problem("at", "is required (a duration after the start, e.g. '2d')")
    kind = t.string("type", "*")
    if kind == CANCEL:
        fraction = t.number("fraction", None, hi=1.0)
        span = t.duration("for", float("inf"))
        restart = t.boolean("restart", True)
        t.done()
        if at is None or fraction is None:
            return None
        return WorldEvent(at, CANCEL, fraction=fraction, span=span, restart=restart)
    if kind == STORM:
        pool = _pool(t, config)
        span = t.duration("for", None)
        reset = t.boolean("reset_in_message", False)
        t.done()
        if span is None:
            t.problem("for", "is required for a limit storm (how long it lasts)")
        if at is None or pool is None or span is None:
            return None
        return WorldEvent(at, STORM, pool=pool, span=span, reset_in_message=reset)
    arm = _arm(t, config)
    success = t.number("success", None, hi=1.0)
    outage = t.duration("outage", None)
    hang = t.duration("hang", None)
    t.done()
    given = [
        k for k, v in (("success", success), ("outage", outage), ("hang", hang)) if v is not None
    ]
    if len(given) != 1:
        t.problem("success", "give exactly one of success, outage or hang")
        return None
    if at is None or arm is None:
        return None
    if success is not None:
        return WorldEvent(at, "success", arm=arm, type=kind, success=float(success))
    return WorldEvent(at, given[0], arm=arm, span=float(outage or hang or 0.0))


def _check_truth_coverage(s: Scenario, config: Config, r: _Reader) -> None:
    """Every arm a task may go to needs a truth for the task's type (or "*")."""
    have = {(x.arm, x.type) for x in s.truths}
    enabled = [a.name for a in config.arms if a.enabled]
    for arrival in s.arrivals:
        route = config.templates[arrival.template].route
        for arm in route.arms or enabled:
            if (arm, str(route.type)) not in have and (arm, "*") not in have:
                r.problem(
                    "truth",
                    f"no [[truth]] for arm {arm!r} and type {route.type!r} "
                    f'(template {arrival.template!r} may route there; add type = "*")',
                )
                return
