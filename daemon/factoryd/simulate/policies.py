"""Who picks the arm: the daemon's strategies, simple baselines, and a hindsight oracle.

Every policy decides through the daemon's own RoutingEngine, so pool
accounting, reservations, limit holds and the hard filters (an arm held by
a provider limit, a pool that cannot afford the run) are the same for all.
A daemon strategy calls `route` as the reconciler does. A baseline only
chooses the order in which arms are tried, and asks for each with `force`
(still subject to every hard filter and to the ledger), moving to the next
arm when one is refused. The oracle reads the hidden world: it knows each
run's outcome on every arm and every provider's real remaining capacity.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Protocol

from factoryd.config.model import Config
from factoryd.routing.decision import Decision
from factoryd.routing.engine import RoutingEngine, settings_from_config
from factoryd.routing.model import ArmSpec, RouteRequest, charge_actual
from factoryd.routing.scoring import STRATEGIES
from factoryd.simulate.world import World, usage_of

BASELINES = ("round_robin", "random", "cheapest_first", "static_priority", "always_best")
ORACLE = "oracle"


def policy_names() -> tuple[str, ...]:
    """Every policy, daemon strategies first."""
    return (*STRATEGIES, *BASELINES, ORACLE)


class Policy(Protocol):
    name: str
    engine: RoutingEngine

    def choose(
        self,
        req: RouteRequest,
        now: float,
        *,
        task: int,
        attempt: int,
        exclude: Collection[str],
        busy: Collection[str],
        ttl: float | None,
    ) -> Decision | None: ...

    def wake(self, now: float) -> float | None:
        """Besides the engine's own clock, when this policy may decide otherwise."""
        ...


def make_policy(name: str, config: Config, world: World, seed: int) -> Policy:
    if name in STRATEGIES:
        return StrategyPolicy(name, config)
    if name == ORACLE:
        return Oracle(config, world)
    if name in BASELINES:
        return Baseline(name, config, world, seed)
    raise ValueError(f"unknown policy {name!r} (known: {', '.join(policy_names())})")


def _engine(config: Config, strategy: str | None = None) -> RoutingEngine:
    settings = settings_from_config(config)
    if strategy is not None:
        settings = replace(settings, policy=replace(settings.policy, strategy=strategy))
    return RoutingEngine(settings)


class StrategyPolicy:
    """A daemon strategy, deciding exactly as the reconciler asks it to."""

    def __init__(self, name: str, config: Config) -> None:
        self.name = name
        self.engine = _engine(config, name)

    def choose(
        self,
        req: RouteRequest,
        now: float,
        *,
        task: int,
        attempt: int,
        exclude: Collection[str],
        busy: Collection[str],
        ttl: float | None,
    ) -> Decision | None:
        return self.engine.route(req, now, exclude=exclude, busy=busy, ttl=ttl)

    def wake(self, now: float) -> float | None:
        return None


class _Ordered:
    """Try arms in an order of the policy's choosing, each through the engine."""

    name: str
    engine: RoutingEngine
    arms: dict[str, ArmSpec]

    def order(self, req: RouteRequest, now: float, task: int, attempt: int) -> list[str]:
        raise NotImplementedError

    def allowed(self, req: RouteRequest) -> list[str]:
        names = req.arms or tuple(self.arms)
        return [n for n in dict.fromkeys(names) if n in self.arms and self.arms[n].enabled]

    def choose(
        self,
        req: RouteRequest,
        now: float,
        *,
        task: int,
        attempt: int,
        exclude: Collection[str],
        busy: Collection[str],
        ttl: float | None,
    ) -> Decision | None:
        for name in self.order(req, now, task, attempt):
            if name in exclude or name in busy:
                continue
            decision = self.engine.route(req, now, force=name, ttl=ttl)
            if decision.arm is not None:
                return decision
        return None

    def wake(self, now: float) -> float | None:
        return None


class Baseline(_Ordered):
    def __init__(self, name: str, config: Config, world: World, seed: int) -> None:
        self.name = name
        self.engine = _engine(config)
        self.arms = {a.name: a for a in config.arms}
        self.world = world
        self.turn = 0
        self.rng = random.Random(f"{seed}:{name}")

    def order(self, req: RouteRequest, now: float, task: int, attempt: int) -> list[str]:
        names = self.allowed(req)
        if self.name == "round_robin":
            if not names:
                return names
            self.turn += 1
            i = self.turn % len(names)
            return names[i:] + names[:i]
        if self.name == "random":
            self.rng.shuffle(names)
            return names
        if self.name == "cheapest_first":
            return _stable(names, lambda n: self.arms[n].estimate_cost(req.estimated_tokens))
        if self.name == "always_best":
            # The truth as the scenario starts: a fixed belief, blind to drift.
            start = self.world.s.start
            rate = self.world.success_rate
            return _stable(names, lambda n: -rate(n, str(req.type), start))
        return names  # static_priority: the task's preference, else config order


class Oracle(_Ordered):
    """Knows how each run would end on every arm, and what providers really allow.

    Among arms that a provider would not refuse and that are not down, it
    takes the cheapest one on which this run succeeds (USD, then the share
    of the provider's real room it takes, then time); when the run fails
    everywhere it spends the least on it. With nothing safe to run, it waits.
    """

    name = ORACLE

    def __init__(self, config: Config, world: World) -> None:
        self.engine = _engine(config)
        self.arms = {a.name: a for a in config.arms}
        self.world = world

    def order(self, req: RouteRequest, now: float, task: int, attempt: int) -> list[str]:
        w = self.world
        kind = str(req.type)
        u = w.difficulty(task, attempt)
        keyed = []
        for i, name in enumerate(self.allowed(req)):
            arm = self.arms[name]
            tokens, seconds = w.size(task, attempt, name, kind)
            if w.down(name, now) or w.refused(arm, now, tokens):
                continue
            fails = u >= w.success_rate(name, kind, now)
            usd = arm.cost_of(usage_of(tokens))
            pressure = max((self._pressure(arm, p, tokens, now) for p in arm.pools), default=0.0)
            keyed.append(((fails, round(usd, 9), round(pressure, 6), seconds, i), name))
        keyed.sort()
        return [name for _, name in keyed]

    def _pressure(self, arm: ArmSpec, pool: str, tokens: int, now: float) -> float:
        prov = self.world.providers.get(pool)
        if prov is None:
            return 0.0
        room = prov.room(now)
        return charge_actual(prov.spec, arm, usage_of(tokens)) / room if room > 0 else 1.0

    def wake(self, now: float) -> float | None:
        """Provider windows and spells end at times only the oracle knows about."""
        times = [p.window_end for p in self.world.providers.values() if p.window_end]
        for book in (self.world.outages, self.world.hangs, self.world.storms):
            times += [hi for spells in book.values() for lo, hi, _ in spells.spans]
        later = [t for t in times if t > now]
        return min(later) if later else None


def _stable(names: Sequence[str], key: Callable[[str], float]) -> list[str]:
    order = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (key(n), order[n]))
