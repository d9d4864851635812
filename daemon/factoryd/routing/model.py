"""The vocabulary of routing: arms, pools, task requirements and usage.

These are immutable specifications built once from config. Mutable state
(pool usage, telemetry, quality) lives in `ledger`, `telemetry` and
`quality`, so that a config reload can swap specs without losing state.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from factoryd.units.durations import Period


class PoolUnit(enum.StrEnum):
    """What a pool counts. Every charge is made in the pool's own unit."""

    TOKENS = "tokens"
    RUNS = "runs"
    USD = "usd"


class TaskType(enum.StrEnum):
    BOILERPLATE = "boilerplate"
    GENERATION = "generation"
    REFACTOR = "refactor"
    REVIEW = "review"
    UNIT_TEST = "unit_test"
    PLANNING = "planning"
    ORCHESTRATION = "orchestration"
    SECURITY_REVIEW = "security_review"
    DEBUG = "debug"
    EXPLAIN = "explain"


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


PRIORITY_BASE: dict[Priority, float] = {
    Priority.LOW: 0.5,
    Priority.NORMAL: 1.0,
    Priority.HIGH: 2.0,
    Priority.CRITICAL: 5.0,
}

TYPE_MULTIPLIER: dict[TaskType, float] = {
    TaskType.BOILERPLATE: 0.6,
    TaskType.GENERATION: 1.0,
    TaskType.REFACTOR: 0.9,
    TaskType.REVIEW: 1.1,
    TaskType.UNIT_TEST: 0.8,
    TaskType.PLANNING: 1.4,
    TaskType.ORCHESTRATION: 1.5,
    TaskType.SECURITY_REVIEW: 2.0,
    TaskType.DEBUG: 1.2,
    TaskType.EXPLAIN: 0.7,
}

MIN_QUALITY: dict[TaskType, float] = {
    TaskType.BOILERPLATE: 0.40,
    TaskType.GENERATION: 0.45,
    TaskType.REFACTOR: 0.50,
    TaskType.REVIEW: 0.55,
    TaskType.UNIT_TEST: 0.45,
    TaskType.PLANNING: 0.60,
    TaskType.ORCHESTRATION: 0.65,
    TaskType.SECURITY_REVIEW: 0.70,
    TaskType.DEBUG: 0.50,
    TaskType.EXPLAIN: 0.40,
}

#: Task types for which an arm that can think earns a quality bonus.
THINKING_BONUS: dict[TaskType, float] = {
    TaskType.PLANNING: 0.2,
    TaskType.ORCHESTRATION: 0.2,
    TaskType.SECURITY_REVIEW: 0.2,
    TaskType.DEBUG: 0.1,
    TaskType.REFACTOR: 0.1,
}


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A shared budget that several arms draw on (an account, a key, a plan).

    `window` is the reset period (None: never resets); windows are aligned to
    `anchor` (epoch seconds), so a 5h subscription window can match the
    provider's own clock.
    """

    name: str
    unit: PoolUnit
    limit: float
    window: Period | None = None
    anchor: float = 0.0
    scarcity_k: float = 2.0
    limit_backoff: float = 900.0
    limit_backoff_max: float = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """One concrete way to run a task: CLI agent + provider + model + account."""

    name: str
    cli: str
    provider: str = ""
    model: str = ""
    pools: tuple[str, ...] = ()
    #: Per-pool charge multiplier, e.g. an opus run costs 5x on a shared plan.
    rates: dict[str, float] = field(default_factory=dict)
    context_window: int = 0
    tools: bool = True
    vision: bool = False
    thinking: tuple[str, ...] = ()
    local: bool = False
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    max_complexity: float | None = None
    enabled: bool = True
    #: A fallback arm stays eligible when its telemetry is stale or missing
    #: (seed A's StaticConfig/CliDefault sources).
    fallback: bool = True

    def estimate_cost(self, tokens: float) -> float:
        """USD for `tokens`, split 60/40 between input and output like seed B."""
        return (
            0.6 * tokens / 1000.0 * self.cost_per_1k_input
            + 0.4 * tokens / 1000.0 * self.cost_per_1k_output
        )

    def cost_of(self, usage: Usage) -> float:
        """USD for a run's reported tokens, when the agent did not report cost."""
        return (usage.input_tokens + usage.cache_write_tokens) / 1000.0 * self.cost_per_1k_input + (
            usage.output_tokens + usage.reasoning_tokens
        ) / 1000.0 * self.cost_per_1k_output

    def rate(self, pool: str) -> float:
        return self.rates.get(pool, 1.0)


#: How many of a request's attempts-left variants are kept (RouteRequest.with_attempts_left).
VARIANTS_KEPT = 8


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a run needs from an arm; the routing attributes of a task."""

    task: str
    type: TaskType = TaskType.GENERATION
    priority: Priority = Priority.NORMAL
    estimated_tokens: int = 0
    requires_tools: bool = False
    requires_vision: bool = False
    complexity: float = 0.0
    effort: str | None = None
    #: Arms this task may use (empty: every arm); ranked by score, order breaks ties.
    arms: tuple[str, ...] = ()
    min_quality: float | None = None
    #: Runs this task may still have after this one if it fails (its restart
    #: budget); None: unknown, ranked as before (score, or fit after exclusions).
    attempts_left: int | None = field(default=None, metadata={"digest": "omit_default"})
    #: This request with each attempts_left a run was routed with (see below).
    _variants: dict[int | None, RouteRequest] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def with_attempts_left(self, left: int | None) -> RouteRequest:
        """This request for a run with `left` runs after it, the same object every
        time: the router knows a task's request by identity, and a new object per
        run would rebuild its standings on every decision."""
        got = self._variants.get(left)
        if got is None:
            # A task's budget counts down run by run (and a large one never ends):
            # keep the few counts in use, not one object per count ever seen.
            if len(self._variants) >= VARIANTS_KEPT:
                self._variants.clear()
            got = self._variants[left] = replace(self, attempts_left=left)
        return got

    @property
    def value(self) -> float:
        """How much a good result is worth, relative to a normal generation task."""
        return PRIORITY_BASE[self.priority] * TYPE_MULTIPLIER[self.type]

    @property
    def quality_floor(self) -> float:
        return self.min_quality if self.min_quality is not None else MIN_QUALITY[self.type]


@dataclass(frozen=True, slots=True)
class Usage:
    """What a run consumed, as the agent reported it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.reasoning_tokens


def charge_estimate(pool: PoolSpec, arm: ArmSpec, tokens: float) -> float:
    """What reserving one run of `tokens` on `arm` costs `pool`, in the pool's unit."""
    rate = arm.rate(pool.name)
    if pool.unit is PoolUnit.TOKENS:
        return tokens * rate
    if pool.unit is PoolUnit.RUNS:
        return rate
    return arm.estimate_cost(tokens) * rate


def charge_actual(pool: PoolSpec, arm: ArmSpec, usage: Usage) -> float:
    """What a finished run really cost `pool`, in the pool's unit (charges_actual)."""
    return charges_actual((pool,), arm, usage)[pool.name]


def charges_actual(pools: Sequence[PoolSpec], arm: ArmSpec, usage: Usage) -> dict[str, float]:
    """What a finished run really cost each of `pools`, in each pool's unit, by
    pool name in the given order: the one definition, in one call per run (the
    run's tokens and price are read once, not once per pool)."""
    charges: dict[str, float] = {}
    tokens: int | None = None
    cost: float | None = None
    for pool in pools:
        rate = arm.rate(pool.name)
        unit = pool.unit
        if unit is PoolUnit.TOKENS:
            if tokens is None:
                tokens = usage.total_tokens
            charges[pool.name] = tokens * rate
        elif unit is PoolUnit.RUNS:
            charges[pool.name] = rate
        else:
            if cost is None:
                cost = usage.cost_usd if usage.cost_usd is not None else arm.cost_of(usage)
            charges[pool.name] = cost * rate
    return charges


class RejectReason(enum.StrEnum):
    """Why an arm was not chosen. A closed set, so it is safe as a metric label."""

    DISABLED = "disabled"
    NOT_ALLOWED = "not_allowed"
    EXCLUDED = "excluded"
    AT_CAPACITY = "at_capacity"
    UNHEALTHY = "unhealthy"
    SECRET_MISSING = "secret_missing"  # noqa: S105 - a reason, not a secret
    BACKOFF = "backoff"
    LIMITED = "limited"
    STALE = "stale_telemetry"
    LACKS_TOOLS = "lacks_tools"
    LACKS_VISION = "lacks_vision"
    LACKS_EFFORT = "lacks_effort"
    TOO_COMPLEX = "too_complex"
    POOL_LIMITED = "pool_limited"
    POOL_EXHAUSTED = "pool_exhausted"
    POOL_INSUFFICIENT = "pool_insufficient"
    BELOW_QUALITY = "below_quality"
    RESERVE_FAILED = "reserve_failed"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One arm turned down for one request, and why (`detail` is for people)."""

    arm: str
    reason: RejectReason
    detail: str
