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
    normalize_consumption,
    normalize_latency,
    normalize_throughput,
)
from factoryd.routing.telemetry import BUCKETS_PER_WINDOW, ArmTelemetry, TelemetryBook
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


def build_view(
    arm: ArmSpec,
    fit: ArmFit,
    req: RouteRequest,
    now: float,
    *,
    telemetry: TelemetryBook,
    quality: QualityTracker,
    policy: RoutingPolicy,
    strategy: Strategy,
    forced: bool = False,
) -> ArmView:
    """Work out `arm`'s own verdict and score terms for `req` at `now`."""
    version = telemetry.versions.of(arm.name)
    tel = telemetry.arms.get(arm.name)
    rejection, valid_until = _own_filters(arm, fit, now, tel, policy, forced=forced)
    if rejection is not None:
        return ArmView(arm, fit, rejection, None, 0.0, False, version, valid_until)
    if tel is not None and tel.buckets:
        # Which telemetry buckets are inside the window changes at bucket edges.
        width = telemetry.window / BUCKETS_PER_WINDOW
        edge = (math.floor((now - telemetry.window) / width) + 1) * width + telemetry.window
        valid_until = min(valid_until, edge)
    perf = telemetry.performance(arm.name, now)
    prior = 0.5 if arm.fallback else 0.0
    if perf is None:
        throughput, latency, consumption = prior, prior, 0.5
    else:
        throughput = normalize_throughput(perf.throughput, policy.throughput_target)
        latency = (
            prior
            if perf.latency is None
            else normalize_latency(perf.latency, policy.latency_target)
        )
        consumption = normalize_consumption(perf.session_tokens, policy.session_token_budget)
    type_name = str(req.type)
    heuristic = fit.heuristic
    value = req.value
    # Positional: a named tuple built from keywords costs a dict per call.
    observed, task_fit, fit_upper = quality.fit_terms(arm.name, type_name, heuristic)
    components = Components(
        heuristic,
        observed,
        task_fit,
        fit_upper,
        value,
        throughput,
        latency,
        consumption,
        fit.base_cost,
        1.0,
        None,
        strategy.cost_floor(policy),
    )
    return ArmView(
        arm,
        fit,
        None,
        components,
        strategy.numerator(components, policy),
        not forced and components.fit_upper < req.quality_floor,
        version,
        valid_until,
    )


def _own_filters(
    arm: ArmSpec,
    fit: ArmFit,
    now: float,
    tel: ArmTelemetry | None,
    policy: RoutingPolicy,
    *,
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
