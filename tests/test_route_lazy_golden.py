"""A decision's explanation, built on demand, is byte for byte what it was when eager.

The router used to sort the whole ranking, list every rejection and copy
the pools' multipliers on every decision; now it keeps what it had and
builds the explanation when one is read. `fixtures/route_lazy_golden.json`
holds a digest of every explanation (`to_dict` as JSON, `render`,
`rationale`, `candidates`, `chosen`) of random histories over random
configurations (a cascade over the task's attempts among them), written
by the router as it was before (eager). Here every
explanation is read only at the end of its history, as late as a reader
can, and must match. To write the file from another tree:

    PYTHONPATH=daemon:tests python tests/test_route_lazy_golden.py OUT.json
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from factoryd.routing.engine import RoutingEngine
from factoryd.routing.ledger import Refusal, Reservation
from factoryd.routing.model import (
    ArmSpec,
    Priority,
    RejectReason,
    RouteRequest,
    TaskType,
    Usage,
)
from routing_kit import T0, arm, engine, pool

GOLDEN = Path(__file__).parent / "fixtures" / "route_lazy_golden.json"
SCENARIOS = 80
#: The last scenarios have rankings long enough to find runners-up by a heap.
WIDE = 4
OPS = 60


def random_engine(rng: random.Random, wide: bool) -> tuple[RoutingEngine, list[ArmSpec], list[str]]:
    """A random configuration; `wide`: 150 arms that can all run (long rankings)."""
    units = ["tokens", "runs", "usd"]
    pools = [
        pool(
            f"p{i}",
            rng.choice(units),
            1e12 if wide else rng.choice([3, 40, 5.0, 200_000, 1e9, 1e12]),
            rng.choice([None, "5m", "1h", "5h"]),
        )
        for i in range(rng.randint(0, 8))
    ]
    names = [p.name for p in pools]
    arms = [
        arm(
            f"a{i}",
            pools=tuple(rng.sample(names, rng.randint(0, min(3, len(names))))),
            context_window=rng.choice([0, 100_000, 200_000]),
            thinking=rng.choice([(), ("high",)]),
            tools=wide or rng.random() > 0.1,
            vision=wide or rng.random() > 0.7,
            local=rng.random() > 0.8,
            fallback=wide or rng.random() > 0.15,
            enabled=wide or rng.random() > 0.05,
            max_complexity=None if wide else rng.choice([None, None, 0.5]),
            cost_per_1k_input=rng.choice([0.0, 0.001, 0.5]),
            cost_per_1k_output=rng.choice([0.0, 0.004, 2.0]),
        )
        for i in range(150 if wide else rng.choice([1, 2, 5, 12, 40, 60, 60]))
    ]
    strategy = rng.choice(["balanced", "balanced", "weighted", "value_per_cost"])
    return engine(arms, pools, strategy), arms, names


def random_request(rng: random.Random, n: int, arm_names: list[str], wide: bool) -> RouteRequest:
    allowed: tuple[str, ...] = ()
    if not wide and rng.random() < 0.2:
        allowed = tuple(rng.sample(arm_names, rng.randint(1, len(arm_names))))
    return RouteRequest(
        task=f"t{n}",
        type=TaskType.GENERATION if wide else rng.choice(list(TaskType)),
        priority=rng.choice(list(Priority)),
        estimated_tokens=rng.choice([0, 1_000, 20_000, 150_000]),
        requires_tools=rng.random() < 0.2,
        requires_vision=rng.random() < 0.1,
        complexity=rng.choice([0.0, 0.3, 0.8]),
        effort=None if wide else rng.choice([None, None, "high"]),
        arms=allowed,
        min_quality=0.0 if wide else rng.choice([None, None, 0.3, 0.7]),
        # None: ranked as before; a number: a cascade over the task's attempts.
        attempts_left=rng.choice([None, None, 0, 1, 3]),
    )


def explain(d: Any) -> str:
    """Everything a reader can ask of a decision, as one string: the rationale
    first, as the daemon's log line reads it before anything else."""
    rationale = d.rationale()
    chosen = d.chosen
    return "\n".join(
        [
            rationale,
            json.dumps(d.to_dict()),
            d.render(),
            repr([(c.arm, c.score, tuple(c.components), c.below_quality) for c in d.candidates]),
            repr(None if chosen is None else (chosen.arm, chosen.score, tuple(chosen.components))),
            repr((d.arm, d.charges, [tuple(r.__repr__() for r in d.rejections)])),
        ]
    )


def history(seed: int) -> list[str]:
    """Digests of every decision's explanation in one random history, each read
    after the whole history has run."""
    rng = random.Random(seed)
    e, arms, pool_names = random_engine(rng, seed >= SCENARIOS - WIDE)
    names = [a.name for a in arms]
    wide = seed >= SCENARIOS - WIDE
    requests = [random_request(rng, i, names, wide) for i in range(4)]
    refuse: set[str] = set()

    def gate(res: Reservation) -> Reservation | Refusal:
        if res.arm in refuse:
            return Refusal("fleet", RejectReason.POOL_INSUFFICIENT, "the fleet refused")
        return res

    e.ledger.gate = gate
    now = T0
    decisions = []
    for _ in range(OPS):
        kind = rng.choice(["route"] * 6 + ["tick", "touch", "limit", "pool", "health", "gate"])
        if kind == "route":
            req = rng.choice(requests)
            exclude = tuple(rng.sample(names, min(len(names), rng.choice([0, 0, 0, 1, 2]))))
            busy = tuple(rng.sample(names, min(len(names), rng.choice([0, 0, 1]))))
            force = rng.choice([*names, "nobody"]) if rng.random() < 0.1 else None
            d = e.route(req, now, exclude=exclude, busy=busy, force=force)
            decisions.append(d)
            ending = rng.choice(["ok", "ok", "fail", "fault", "spawn", "limited", "open"])
            if d.arm is not None and ending != "open":
                e.settle(
                    d,
                    now=now,
                    usage=None if ending == "spawn" else Usage(input_tokens=900, output_tokens=300),
                    ok=ending == "ok",
                    duration=rng.choice([2.0, 12.0, 90.0]),
                    task_type=str(req.type),
                    arm_fault=ending == "fault",
                    limited=ending == "limited",
                )
        elif kind == "tick":
            now += rng.choice([0.5, 30, 61, 299, 601, 1800, 3700, -90])
        elif kind == "touch":
            e.telemetry.touch(rng.choice(names), now)
        elif kind == "limit":
            e.report_limit(rng.choice(names), now + rng.choice([10, 400]), now, "test")
        elif kind == "pool" and pool_names:
            if rng.random() < 0.5:
                e.ledger.hold_limit([rng.choice(pool_names)], now + 120, "test")
            else:
                e.ledger.hold_limit_unknown([rng.choice(pool_names)], now, "test")
        elif kind == "health":
            e.telemetry.arm(rng.choice(names)).healthy = rng.random() < 0.7
        elif kind == "gate":
            refuse = set(rng.sample(names, min(len(names), rng.randint(0, 3))))
    return [hashlib.sha256(explain(d).encode()).hexdigest()[:16] for d in decisions]


def test_lazy_explanations_match_the_eager_router() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert len(golden) == SCENARIOS
    for seed in range(SCENARIOS):
        got = history(seed)
        want = golden[str(seed)]
        first = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), None)
        assert got == want, f"seed {seed}: decision {first} explains differently"


if __name__ == "__main__":
    out = {str(seed): history(seed) for seed in range(SCENARIOS)}
    Path(sys.argv[1]).write_text(json.dumps(out, indent=0) + "\n")
