"""An arm's own part of a routing decision, kept between decisions.

Most of what the router works out per arm does not depend on how full the
pools are: the arm's own hard filters (disabled, unhealthy, resting after
faults, limited, stale telemetry, lacking a capability), its task fit, its
telemetry terms, its base cost and so the strategy's numerator. That part
changes only when the arm's telemetry or observed quality changes, or when
the clock passes a known instant: a backoff or limit ends, telemetry turns
stale, a telemetry bucket leaves the window. An `ArmView` records it with
the versions it was computed from and the instant it stops being true, so a
decision recomputes only the arms that changed and pays a few float
operations for the rest (bench/route.py measures the difference).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from factoryd.routing.ledger import PoolState
from factoryd.routing.model import ArmSpec, Rejection, RejectReason, RouteRequest, charge_estimate
from factoryd.routing.quality import QualityTracker
from factoryd.routing.scoring import (
    Components,
    RoutingPolicy,
    Strategy,
    heuristic_quality,
    telemetry_terms,
)
from factoryd.routing.telemetry import ArmTelemetry, TelemetryBook
from factoryd.units.timefmt import iso

#: The fields of a RouteRequest that shape a view (everything but the task's name).
RequestShape = tuple[object, ...]


def request_shape(req: RouteRequest) -> RequestShape:
    return (
        req.type,
        req.priority,
        req.estimated_tokens,
        req.requires_tools,
        req.requires_vision,
        req.complexity,
        req.effort,
        req.arms,
        req.min_quality,
    )


@dataclass(frozen=True, slots=True)
class ArmFit:
    """The part of a view fixed by the arm's spec and the request shape alone."""

    heuristic: float
    base_cost: float
    #: The estimate's charge on each of the arm's pools, in pool order.
    charges: tuple[tuple[str, float], ...]
    #: A capability the request needs and the arm lacks (tools, vision, ...).
    lacks: Rejection | None


def arm_fit(arm: ArmSpec, req: RouteRequest, pools: Mapping[str, PoolState]) -> ArmFit:
    return ArmFit(
        heuristic=heuristic_quality(arm, req),
        base_cost=arm.estimate_cost(req.estimated_tokens),
        charges=tuple(
            (pool, charge_estimate(pools[pool].spec, arm, req.estimated_tokens))
            for pool in arm.pools
            if pool in pools
        ),
        lacks=_lacks(arm, req),
    )


class ArmView(NamedTuple):
    """What one arm brings to a decision for one request shape, pools aside.

    Immutable (decisions keep references to views for their explanation);
    a named tuple because one is rebuilt whenever its arm's telemetry changes.
    """

    arm: ArmSpec
    fit: ArmFit
    #: The arm's own hard-filter verdict; None means it may run.
    rejection: Rejection | None
    #: Every score term but scarcity (left at 1.0); None for a rejected arm.
    components: Components | None
    #: The strategy's arm-dependent part of the score.
    numerator: float
    below_quality: bool
    #: The arm's change counter (versions.py) when the view was built.
    version: int
    #: When the clock makes the view untrue (inf: only a change can).
    valid_until: float


class ViewContext:
    """What every view for one request shape is built with, worked out once.

    The request's value, quality floor and type name are fixed by its shape
    (request_shape), and the strategy's cost floor by the policy, so a
    rebuild reads them here instead of working them out per arm (`value`
    and `quality_floor` hash enums in Python).
    """

    __slots__ = (
        "cost_floor",
        "floor",
        "numerator",
        "policy",
        "quality",
        "request",
        "strategy",
        "telemetry",
        "type_name",
        "value",
    )

    def __init__(
        self,
        req: RouteRequest,
        *,
        telemetry: TelemetryBook,
        quality: QualityTracker,
        policy: RoutingPolicy,
        strategy: Strategy,
    ) -> None:
        #: The request the shape was first seen with: its fields but the task's
        #: name and attempts are those of every request of the shape.
        self.request = req
        self.telemetry = telemetry
        self.quality = quality
        self.policy = policy
        self.strategy = strategy
        self.numerator = strategy.numerator
        self.cost_floor = strategy.cost_floor(policy)
        self.value = req.value
        self.floor = req.quality_floor
        self.type_name = str(req.type)


def build_view(
    arm: ArmSpec, fit: ArmFit, now: float, ctx: ViewContext, forced: bool, version: int
) -> ArmView:
    """Work out `arm`'s own verdict and score terms for the context's request at `now`.

    Called for every arm whose telemetry or quality moved, so after every run;
    what is fixed by the request's shape comes from `ctx`, worked out once.
    `version`: the arm's change counter now (versions.py), which the caller
    has just read to find the view stale.
    """
    telemetry = ctx.telemetry
    name = arm.name
    tel = telemetry.arms.get(name)
    policy = ctx.policy
    rejection, valid_until = _own_filters(arm, fit, now, tel, policy, forced)
    if rejection is not None:
        return ArmView(arm, fit, rejection, None, 0.0, False, version, valid_until)
    prior = 0.5 if arm.fallback else 0.0
    perf, edge = telemetry.performance_until(name, now)
    if edge < valid_until:  # the telemetry window passes a bucket edge first
        valid_until = edge
    throughput, latency, consumption = telemetry_terms(perf, policy, prior)
    heuristic = fit.heuristic
    observed, task_fit, fit_upper = ctx.quality.fit_terms(name, ctx.type_name, heuristic)
    # tuple.__new__: a named tuple's own __new__ is a Python function (a frame
    # per call); the fields in their declared order, as Components(...) takes them.
    components = tuple.__new__(
        Components,
        (
            heuristic,
            observed,
            task_fit,
            fit_upper,
            ctx.value,
            throughput,
            latency,
            consumption,
            fit.base_cost,
            1.0,
            None,
            ctx.cost_floor,
        ),
    )
    return tuple.__new__(
        ArmView,
        (
            arm,
            fit,
            None,
            components,
            ctx.numerator(components, policy),
            not forced and fit_upper < ctx.floor,
            version,
            valid_until,
        ),
    )


def _own_filters(
    arm: ArmSpec,
    fit: ArmFit,
    now: float,
    tel: ArmTelemetry | None,
    policy: RoutingPolicy,
    forced: bool,
) -> tuple[Rejection | None, float]:
    """The first of the arm's own hard filters that keeps it out, in the order
    the router documents, and until when the verdict holds (inf: until the
    arm's telemetry changes)."""
    name = arm.name
    if not arm.enabled:
        return Rejection(name, RejectReason.DISABLED, "disabled in config"), math.inf
    until = math.inf
    if tel is not None:
        if tel.missing_secret:
            return Rejection(name, RejectReason.SECRET_MISSING, tel.missing_secret), math.inf
        if not tel.healthy:
            return Rejection(name, RejectReason.UNHEALTHY, "marked unhealthy"), math.inf
        if tel.backoff_until is not None and now < tel.backoff_until:
            detail = f"resting after {tel.consecutive_faults} faults until {iso(tel.backoff_until)}"
            return Rejection(name, RejectReason.BACKOFF, detail), tel.backoff_until
        if tel.limited_until is not None and now < tel.limited_until:
            detail = (
                f"subscription limit reached for {arm.model or name} until "
                f"{iso(tel.limited_until)}"
                + (f" ({tel.limited_reason})" if tel.limited_reason else "")
            )
            return Rejection(name, RejectReason.LIMITED, detail), tel.limited_until
    if not arm.fallback and not forced and policy.max_staleness is not None:
        if tel is None or tel.last_event_at is None:
            detail = "no telemetry yet and not a fallback arm"
            return Rejection(name, RejectReason.STALE, detail), math.inf
        if now - tel.last_event_at > policy.max_staleness:
            # Worded without the age, which would be out of date as soon as cached.
            detail = (
                f"stale telemetry (last event {iso(tel.last_event_at)}, "
                f"older than {policy.max_staleness:.0f}s)"
            )
            return Rejection(name, RejectReason.STALE, detail), math.inf
        until = tel.last_event_at + policy.max_staleness
    return fit.lacks, until


def _lacks(arm: ArmSpec, req: RouteRequest) -> Rejection | None:
    """A capability the request needs that the arm does not have."""
    if req.requires_tools and not arm.tools:
        return Rejection(arm.name, RejectReason.LACKS_TOOLS, "task requires tools")
    if req.requires_vision and not arm.vision:
        return Rejection(arm.name, RejectReason.LACKS_VISION, "task requires vision")
    if req.effort is not None and req.effort not in arm.thinking:
        detail = f"no '{req.effort}' thinking effort"
        return Rejection(arm.name, RejectReason.LACKS_EFFORT, detail)
    if arm.max_complexity is not None and req.complexity > arm.max_complexity:
        detail = f"complexity {req.complexity:.2f} above ceiling {arm.max_complexity:.2f}"
        return Rejection(arm.name, RejectReason.TOO_COMPLEX, detail)
    return None
