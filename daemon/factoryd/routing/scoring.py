"""Score components and the named strategies that combine them.

Every strategy sees the same `Components`, so a decision can show each
candidate's breakdown whatever strategy ranked it:

* ``weighted`` (seed A): fit x 0.35 + throughput x 0.25 + latency x 0.20 +
  consumption x 0.20, weights configurable;
* ``value_per_cost`` (seed B): quality x value / effective cost;
* ``balanced`` (the default): value x weighted utility / (base cost^c x
  scarcity^(1/value)). Seed A alone ignores price and pool scarcity; seed B
  alone ignores telemetry and lets price swamp quality. Balanced keeps A's
  telemetry terms (with B's blended quality as task fit), tempers price by
  the `cost` weight (0.5: a 4x cheaper arm needs half the utility), and
  applies pool scarcity in full but scaled by the task's value, so a
  low-value task steps away from a filling pool before a critical one does.

`balanced` and `value_per_cost` can make every decision alike, and do in
the simulator's `mixed` scenario: when all arms draw on one pool, scarcity
divides every score by the same figure; when prices differ more than the
utilities can (there 3.75x and 5x, where balanced would need 1.9x and 2.2x
the utility, value_per_cost 3.75x and 5x the fit), both rank the cheapest
arm above the task type's quality floor first; and the cascade over a
task's attempts (cascade.py) chooses among the arms it allows by score,
which there is the same order. Not a bug: they part where pools, prices
within a few times of each other, or telemetry differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from factoryd.routing.model import THINKING_BONUS, ArmSpec, RouteRequest
from factoryd.routing.telemetry import Performance

#: Free (local or subscription) arms still cost something when scoring, so
#: that scarcity can multiply it and nothing divides by zero.
COST_FLOOR = 0.001


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The [routing] section: strategy, weights and normalisation targets."""

    strategy: str = "balanced"
    task_fit_weight: float = 0.35
    throughput_weight: float = 0.25
    latency_weight: float = 0.20
    consumption_weight: float = 0.20
    cost_weight: float = 0.5
    #: Telemetry older than this keeps a non-fallback arm out; None: never stale.
    max_staleness: float | None = 600.0
    session_token_budget: int = 5_000_000
    #: Completions per second that score a full 1.0 for throughput.
    throughput_target: float = 1.0
    #: Average run duration (seconds) at which the latency score reaches 0.
    latency_target: float = 5.0
    #: How long a reservation may live before it is presumed lost.
    reservation_ttl: float = 7200.0
    #: USD a run on a free (local or subscription) arm is priced at by
    #: `balanced`: a free run still takes one of the task's attempts and the
    #: arm's capacity. At COST_FLOOR a free 0.45 arm scored ~17x a $0.31 one.
    cost_floor: float = 0.05


class Components(NamedTuple):
    """Everything that went into one candidate's score.

    A named tuple rather than a frozen dataclass: one is built per arm
    whenever its telemetry changes, and a tuple is built three times faster.
    """

    heuristic: float
    observed: float | None
    task_fit: float
    #: task_fit with the observed part at its upper confidence bound: the
    #: quality floor keeps an arm out only when this is below it.
    fit_upper: float
    value: float
    throughput: float
    latency: float
    consumption: float
    base_cost: float
    scarcity: float
    scarce_pool: str | None
    #: The least a run is priced at by the strategy (a free arm's price).
    cost_floor: float = COST_FLOOR

    @property
    def effective_cost(self) -> float:
        return max(self.base_cost, self.cost_floor) * self.scarcity

    def as_dict(self) -> dict[str, float | str | None]:
        return {
            "heuristic": round(self.heuristic, 6),
            "observed": None if self.observed is None else round(self.observed, 6),
            "task_fit": round(self.task_fit, 6),
            "fit_upper": round(self.fit_upper, 6),
            "value": round(self.value, 6),
            "throughput": round(self.throughput, 6),
            "latency": round(self.latency, 6),
            "consumption": round(self.consumption, 6),
            "base_cost": round(self.base_cost, 9),
            "scarcity": round(self.scarcity, 6),
            "scarce_pool": self.scarce_pool,
            "cost_floor": round(self.cost_floor, 9),
            "effective_cost": round(self.effective_cost, 9),
        }


def heuristic_quality(arm: ArmSpec, req: RouteRequest) -> float:
    """Seed B's prior: what an arm's capabilities suggest before any run is seen."""
    score = 0.5
    if arm.context_window >= 100_000:
        score += 0.1
    if arm.context_window >= 200_000:
        score += 0.05
    if arm.thinking:
        score += THINKING_BONUS.get(req.type, 0.0)
    if req.requires_tools and not arm.tools:
        score *= 0.1
    if arm.local:
        score += 0.05
    if req.complexity > 0.7 and arm.local:
        score *= 0.7
    return min(1.0, max(0.0, score))


def telemetry_terms(
    perf: Performance | None, policy: RoutingPolicy, prior: float
) -> tuple[float, float, float]:
    """(throughput, latency, consumption): an arm's telemetry as score terms in [0, 1].

    The one definition of the three normalisations, in one call (the router
    reads all three whenever an arm's view is rebuilt, after every run of
    the arm). Throughput: completions per second over `throughput_target`,
    capped at 1.0 (0.0 for a target <= 0). Latency: 1.0 at zero seconds,
    falling linearly to 0.0 at `latency_target` and beyond; `prior` when no
    run succeeded in the window. Consumption: 1.0 minus the share of
    `session_token_budget` used, at least 0.0 (0.5 for a budget <= 0). An
    arm that never reported anything: (prior, prior, 0.5).

    min(x, 1.0) and max(x, 0.0) are written as comparisons with the
    builtins' result for every input (a builtin call with its argument tuple
    costs more than the rest of a term).
    """
    if perf is None:
        return prior, prior, 0.5
    per_second, seconds, _, tokens, _ = perf
    target = policy.throughput_target
    if target > 0:
        share = per_second / target
        throughput = 1.0 if share > 1.0 else share  # min(share, 1.0)
    else:
        throughput = 0.0
    if seconds is None:
        latency = prior
    elif seconds <= 0:
        latency = 1.0
    else:
        latency = 1.0 - seconds / policy.latency_target
        latency = 0.0 if latency < 0.0 else latency  # max(latency, 0.0)
    budget = policy.session_token_budget
    if budget <= 0:
        consumption = 0.5
    else:
        used = tokens / budget
        consumption = 1.0 - (1.0 if used > 1.0 else used)  # 1 - min(used, 1.0)
    return throughput, latency, consumption


def normalize_latency(seconds: float, target: float) -> float:
    """1.0 at zero, falling linearly to 0.0 at `target` and beyond (telemetry_terms)."""
    perf = Performance(0.0, seconds, None, 0, None)
    return telemetry_terms(perf, RoutingPolicy(latency_target=target), 0.0)[1]


def _utility(c: Components, p: RoutingPolicy) -> float:
    """Seed A's weighted sum of fit and telemetry terms."""
    return (
        p.task_fit_weight * c.task_fit
        + p.throughput_weight * c.throughput
        + p.latency_weight * c.latency
        + p.consumption_weight * c.consumption
    )


@dataclass(frozen=True, slots=True)
class Strategy:
    """A scoring rule written as numerator / scarcity ** exponent.

    Every strategy is a part that depends only on the arm (fit, telemetry,
    price) divided by a power of its pools' scarcity. Written this way the
    router can cache the arm's part between decisions and pay only one
    division per arm for the pools, which change on every reservation.
    """

    #: The arm's own part: Components without scarcity.
    numerator: Callable[[Components, RoutingPolicy], float]
    #: How strongly scarcity counts for a task of the given value.
    exponent: Callable[[float], float]
    #: The least a run is priced at (free arms included).
    cost_floor: Callable[[RoutingPolicy], float] = lambda p: COST_FLOOR

    def score(self, c: Components, p: RoutingPolicy) -> float:
        # float ** float is typed Any (a negative base gives a complex); scarcity is positive.
        score: float = self.numerator(c, p) / c.scarcity ** self.exponent(c.value)
        return score


def _balanced_numerator(c: Components, p: RoutingPolicy) -> float:
    # max(base_cost, cost_floor) as a comparison, the builtin's result for every
    # input (read whenever an arm's view is rebuilt, after every run of the arm).
    base, floor = c.base_cost, c.cost_floor
    cost = floor if floor > base else base
    # float ** float is typed Any; the base is at least cost_floor, so positive.
    numerator: float = c.value * _utility(c, p) / cost**p.cost_weight
    return numerator


def _value_per_cost_numerator(c: Components, p: RoutingPolicy) -> float:
    return c.task_fit * c.value / max(c.base_cost, COST_FLOOR)


STRATEGIES: dict[str, Strategy] = {
    # Scarcity applies in full, scaled by the task's value (see the module doc).
    "balanced": Strategy(
        _balanced_numerator,
        lambda value: 1.0 / value if value > 0 else 1.0,
        lambda p: p.cost_floor,
    ),
    # Seed A ignores pools altogether.
    "weighted": Strategy(_utility, lambda value: 0.0),
    # Seed B divides by the effective cost, scarcity included.
    "value_per_cost": Strategy(_value_per_cost_numerator, lambda value: 1.0),
}
