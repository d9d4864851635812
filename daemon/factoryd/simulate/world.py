"""The hidden world of one seed: arrivals, how each run really goes, what providers allow.

Nothing here is visible to a routing policy except through a run's result
(the oracle alone reads it directly). Every random draw is keyed by what it
is about, never by the order it is asked for: the k-th run of task n on arm
A has the same tokens and duration whichever policy asks, and the same
difficulty draw `u` on every arm (it succeeds when u < the arm's true
success rate). That is what makes seeds paired: policies differ only by
their choices, not by luck.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from factoryd.config.model import Config
from factoryd.core.events import LimitHit
from factoryd.core.outcome import Outcome
from factoryd.core.schedule import next_fire
from factoryd.routing.model import ArmSpec, PoolSpec, Usage, charge_actual
from factoryd.routing.windows import window_bounds
from factoryd.simulate.scenario import CANCEL, STORM, Dist, Scenario, Truth, WorldEvent
from factoryd.units.durations import Period

#: A request the provider refuses at once (429) answers after this long.
REFUSAL_SECONDS = 5.0
#: A run on an arm in an outage fails after this long.
OUTAGE_SECONDS = 30.0
MIN_DURATION = 10.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How one run will go, decided when it starts."""

    ends: float
    outcome: Outcome
    usage: Usage
    limit: LimitHit | None = None
    #: The run did work that a limit or a cancel threw away.
    wasted: bool = False
    #: Operator cancel: submit the task again.
    restart: bool = False


@dataclass(slots=True)
class Provider:
    """What a provider really allows on one pool, and what it has seen used."""

    spec: PoolSpec
    limit: float
    window: Period | None
    reset_in_message: bool
    used: float = 0.0
    window_start: float | None = None
    window_end: float | None = None

    def roll(self, now: float) -> None:
        if self.window is None:
            return
        if self.window_end is None or now >= self.window_end:
            start, end = window_bounds(self.spec.anchor, self.window, now)
            if start != self.window_start:
                self.used = 0.0
            self.window_start, self.window_end = start, end

    def room(self, now: float) -> float:
        self.roll(now)
        return self.limit - self.used


@dataclass(slots=True)
class _Spells:
    """Intervals during which something holds (an outage, a hang, a storm)."""

    spans: list[tuple[float, float, WorldEvent]] = field(default_factory=list)

    def at(self, t: float) -> tuple[float, WorldEvent] | None:
        for lo, hi, ev in self.spans:
            if lo <= t < hi:
                return hi, ev
        return None


class World:
    """Truth, provider limits and events of a scenario, for one seed."""

    def __init__(self, scenario: Scenario, config: Config, seed: int) -> None:
        self.s = scenario
        self.seed = seed
        self.arms = {a.name: a for a in config.arms}
        self.truth: dict[tuple[str, str], Truth] = {(t.arm, t.type): t for t in scenario.truths}
        real = {p.pool: p for p in scenario.provider_limits}
        self.providers: dict[str, Provider] = {}
        for spec in config.pools:
            p = real.get(spec.name)
            self.providers[spec.name] = Provider(
                spec,
                p.limit if p else spec.limit,
                p.window if p else spec.window,
                p.reset_in_message if p else True,
            )
        start = scenario.start
        # Success drift per (arm, type): sorted change times and the new rates.
        self.drift: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        self.outages: dict[str, _Spells] = {}
        self.hangs: dict[str, _Spells] = {}
        self.storms: dict[str, _Spells] = {}
        self.cancels = _Spells()
        for ev in scenario.events:
            at = start + ev.at
            if ev.kind == "success" and ev.arm:
                times, rates = self.drift.setdefault((ev.arm, ev.type), ([], []))
                times.append(at)
                rates.append(ev.success)
            elif ev.kind in ("outage", "hang") and ev.arm:
                book = self.outages if ev.kind == "outage" else self.hangs
                book.setdefault(ev.arm, _Spells()).spans.append((at, at + ev.span, ev))
            elif ev.kind == STORM and ev.pool:
                self.storms.setdefault(ev.pool, _Spells()).spans.append((at, at + ev.span, ev))
            elif ev.kind == CANCEL:
                self.cancels.spans.append((at, at + ev.span, ev))

    # -- arrivals ----------------------------------------------------------

    def arrivals(self) -> list[tuple[float, str]]:
        """(time, template) of every task that arrives, in time order."""
        s = self.s
        end = s.start + s.duration
        zone = ZoneInfo(s.timezone)
        out: list[tuple[float, str]] = []
        for i, a in enumerate(s.arrivals):
            rng = random.Random(f"{self.seed}:arrivals:{i}")
            if a.every is not None:
                t = s.start
                while True:
                    t += rng.expovariate(1.0 / a.every)
                    if t >= end:
                        break
                    if a.during is None or _inside(t, a.during, zone):
                        out.append((t, a.template))
            else:
                assert a.schedule is not None
                t = next_fire(a.schedule, s.timezone, s.start - 1.0)
                while t < end:
                    out.extend((t, a.template) for _ in range(a.burst))
                    t = next_fire(a.schedule, s.timezone, t)
        out.sort(key=lambda x: x[0])
        return out

    # -- truth -------------------------------------------------------------

    def success_rate(self, arm: str, task_type: str, t: float) -> float:
        for key in ((arm, task_type), (arm, "*")):
            drift = self.drift.get(key)
            if drift is not None:
                i = bisect.bisect_right(drift[0], t)
                if i:
                    return drift[1][i - 1]
        truth = self._truth(arm, task_type)
        return truth.success if truth else 0.0

    def _truth(self, arm: str, task_type: str) -> Truth | None:
        return self.truth.get((arm, task_type)) or self.truth.get((arm, "*"))

    def difficulty(self, task: int, attempt: int) -> float:
        """The run's draw: it succeeds on any arm whose true rate is above it."""
        return random.Random(f"{self.seed}:{task}:{attempt}:u").random()

    def size(self, task: int, attempt: int, arm: str, task_type: str) -> tuple[int, float]:
        """(tokens, seconds) the run would take on `arm`."""
        truth = self._truth(arm, task_type)
        if truth is None:
            return 0, MIN_DURATION
        rng = random.Random(f"{self.seed}:{task}:{attempt}:{arm}")
        return int(_draw(rng, truth.tokens, 1.0)), _draw(rng, truth.duration, MIN_DURATION)

    def down(self, arm: str, t: float) -> bool:
        """The oracle's view: would a run on `arm` started at `t` fail for outside reasons?"""
        return any(b.get(arm) and b[arm].at(t) for b in (self.outages, self.hangs))

    def refused(self, arm: ArmSpec, t: float, tokens: int) -> bool:
        """The oracle's view: would a provider refuse or cut this run?"""
        usage = usage_of(tokens)
        for pool in arm.pools:
            if pool in self.storms and self.storms[pool].at(t):
                return True
            prov = self.providers.get(pool)
            if prov and charge_actual(prov.spec, arm, usage) > prov.room(t):
                return True
        return False

    # -- one run -----------------------------------------------------------

    def plan(
        self,
        task: int,
        attempt: int,
        arm: ArmSpec,
        task_type: str,
        now: float,
        timeout: float | None,
        stall_timeout: float | None,
    ) -> Plan:
        """How the `attempt`-th run of `task` goes on `arm` if it starts `now`."""
        for pool in arm.pools:
            storm = self.storms.get(pool)
            hit = storm.at(now) if storm else None
            if hit is not None:
                until = hit[0] if hit[1].reset_in_message else None
                return _limited(now + REFUSAL_SECONDS, Usage(), pool, until, wasted=False)
            prov = self.providers.get(pool)
            if prov is not None and prov.room(now) <= 0:
                until = prov.window_end if prov.reset_in_message else None
                return _limited(now + REFUSAL_SECONDS, Usage(), pool, until, wasted=False)
        if arm.name in self.outages and self.outages[arm.name].at(now):
            return Plan(now + OUTAGE_SECONDS, Outcome.FAILED, Usage())
        hang = self.hangs[arm.name].at(now) if arm.name in self.hangs else None
        if hang is not None:
            limits = [(x, o) for x, o in ((timeout, Outcome.TIMED_OUT),) if x is not None]
            limits += [(x, o) for x, o in ((stall_timeout, Outcome.STALLED),) if x is not None]
            wait, outcome = min(limits, default=(hang[0] - now, Outcome.FAILED))
            return Plan(now + min(wait, hang[0] - now), outcome, Usage())
        tokens, seconds = self.size(task, attempt, arm.name, task_type)
        ok = self.difficulty(task, attempt) < self.success_rate(arm.name, task_type, now)
        outcome = Outcome.SUCCEEDED if ok else Outcome.FAILED
        fraction = 1.0
        if timeout is not None and seconds > timeout:
            fraction, outcome = timeout / seconds, Outcome.TIMED_OUT
        cancel = self.cancels.at(now)
        restart = False
        if cancel is not None:
            rng = random.Random(f"{self.seed}:{task}:{attempt}:cancel")
            if rng.random() < cancel[1].fraction:
                point = rng.random()
                if point < fraction:
                    fraction, outcome, restart = point, Outcome.CANCELLED, cancel[1].restart
        # The provider counts the run as it streams; a run that crosses the
        # real limit is cut off there and answered with a 429.
        usage = usage_of(int(tokens * fraction))
        for pool in arm.pools:
            prov = self.providers.get(pool)
            if prov is None:
                continue
            charge, room = charge_actual(prov.spec, arm, usage), prov.room(now)
            if charge > room:
                cut = room / charge
                prov.used = prov.limit
                until = prov.window_end if prov.reset_in_message else None
                ends = now + seconds * fraction * cut
                return _limited(ends, usage_of(int(tokens * fraction * cut)), pool, until, True)
        for pool in arm.pools:
            prov = self.providers.get(pool)
            if prov is not None:
                prov.used += charge_actual(prov.spec, arm, usage)
        return Plan(
            now + seconds * fraction,
            outcome,
            usage,
            wasted=outcome is Outcome.CANCELLED,
            restart=restart,
        )


def _limited(ends: float, usage: Usage, pool: str, until: float | None, wasted: bool) -> Plan:
    text = f"429 from the provider of pool {pool}" + ("" if until else " (no reset time)")
    hit = LimitHit(text=text, until=until, status=429)
    return Plan(ends, Outcome.LIMITED, usage, limit=hit, wasted=wasted)


def usage_of(tokens: int) -> Usage:
    return Usage(input_tokens=tokens * 6 // 10, output_tokens=tokens - tokens * 6 // 10)


def _draw(rng: random.Random, dist: Dist, floor: float) -> float:
    value = rng.gauss(dist.mean, dist.sd) if dist.sd > 0 else dist.mean
    return max(floor, value) if math.isfinite(value) else floor


def _inside(t: float, during: tuple[float, float], zone: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(t, tz=zone)
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    lo, hi = during
    return lo <= seconds < hi if lo <= hi else seconds >= lo or seconds < hi
