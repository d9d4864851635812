"""Play a scenario: every policy over every seed, then the figures and the verdict.

Each (policy, seed) pair gets a fresh engine and a fresh world built from
the same seed, so the pairs share arrivals and hidden outcomes and nothing
else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from factoryd.config.model import Config
from factoryd.simulate.loop import Simulation, Tally
from factoryd.simulate.policies import ORACLE, make_policy, policy_names
from factoryd.simulate.scenario import Scenario
from factoryd.simulate.stats import FIGURES, Verdict, per_seed, summary, verdict
from factoryd.simulate.world import World


@dataclass(frozen=True, slots=True)
class Results:
    scenario: str
    seeds: int
    policies: tuple[str, ...]
    default: str
    #: Per policy, one Tally per seed (seed order).
    tallies: dict[str, list[Tally]]
    #: Per policy, one row of figures per seed.
    rows: dict[str, list[dict[str, float]]]
    verdict: Verdict | None
    seconds: float

    def figures(self, policy: str) -> dict[str, Any]:
        rows = self.rows[policy]
        out: dict[str, Any] = {f: summary([r[f] for r in rows]) for f in FIGURES}
        pools = sorted({p for t in self.tallies[policy] for p in t.pool_use})
        out["pool_use"] = {
            p: summary([t.pool_use.get(p, 0.0) for t in self.tallies[policy]]) for p in pools
        }
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seeds": self.seeds,
            "policies": {p: self.figures(p) for p in self.policies},
            "verdict": self.verdict.as_dict() if self.verdict else None,
            "seconds": round(self.seconds, 3),
        }


def check_policies(names: Sequence[str]) -> tuple[str, ...]:
    known = policy_names()
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"unknown policy {bad[0]!r} (known: {', '.join(known)})")
    return tuple(dict.fromkeys(names))


def play(
    config: Config,
    scenario: Scenario,
    policy: str,
    seed: int,
    *,
    trace: list[tuple[Any, ...]] | None = None,
) -> Simulation:
    """One policy over one seed; returns the finished simulation (engine included)."""
    world = World(scenario, config, seed)
    sim = Simulation(
        config, scenario, world, make_policy(policy, config, world, seed), seed, trace=trace
    )
    sim.run()
    return sim


def run_scenario(
    config: Config,
    scenario: Scenario,
    *,
    seeds: int | None = None,
    policies: Sequence[str] = (),
    progress: Callable[[str, int], None] | None = None,
) -> Results:
    t0 = time.perf_counter()
    n = seeds or scenario.seeds
    names = check_policies(policies or policy_names())
    tallies: dict[str, list[Tally]] = {p: [] for p in names}
    for seed in range(n):
        for name in names:
            tallies[name].append(play(config, scenario, name, seed).tally)
            if progress is not None:
                progress(name, seed)
    rows = {
        p: [
            per_seed(t, tallies[ORACLE][i] if ORACLE in tallies else None) for i, t in enumerate(ts)
        ]
        for p, ts in tallies.items()
    }
    default = config.routing.strategy
    return Results(
        scenario=scenario.name,
        seeds=n,
        policies=names,
        default=default,
        tallies=tallies,
        rows=rows,
        verdict=verdict(rows, default),
        seconds=time.perf_counter() - t0,
    )
