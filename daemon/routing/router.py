"""The router: filter, score, rank and reserve, returning an explained decision.

Order of work for one request:

1. bring the ledger up to `now` (window resets, expired holds, lifted limits);
2. hard filters, each leaving a `Rejection` with a reason enum and a
   sentence: disabled, not allowed for the task, excluded for this run, at
   its concurrency cap, unhealthy, resting after faults, limited, stale
   telemetry (non-fallback arms), then feasibility (tools, vision, effort,
   complexity ceiling, every pool can afford the estimate);
3. quality floor: arms below the task type's minimum are set aside and used
   only if nothing else is feasible (the decision is then `degraded`);
4. score with the configured strategy; rank by score, ties broken by the
   arm's position (the task's `arms` list, else config order), then name;
5. reserve on the best arm; a refused reservation moves on to the next arm,
   so a request never fails while a feasible arm remains.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from daemon.routing.armview import ArmFit, ArmView, RequestShape, arm_fit, build_view, request_shape
from daemon.routing.decision import Candidate, Decision, Ranked, Rejection
from daemon.routing.ledger import PoolLedger, PoolState, Refusal
from daemon.routing.model import ArmSpec, RejectReason, RouteRequest
from daemon.routing.quality import QualityTracker
from daemon.routing.scoring import STRATEGIES, RoutingPolicy
from daemon.routing.telemetry import TelemetryBook

__all__ = ["Candidate", "Decision", "Rejection", "Router"]

#: Request shapes whose arm views are kept; beyond this the cache starts over.
MAX_SHAPES = 1024


class _ShapeViews:
    """The arm views for one request shape, in the order the request lists arms."""

    __slots__ = ("not_allowed", "views")

    def __init__(
        self, views: list[tuple[int, str, ArmView]], not_allowed: tuple[Rejection, ...]
    ) -> None:
        #: (tie-break rank, arm name, view): rank orders equal scores by the
        #: task's preference, then config order, then name.
        self.views = views
        self.not_allowed = not_allowed


class _PoolQuote:
    """A pool's multiplier and room, valid while its numbers and the clock allow."""

    __slots__ = ("key", "multiplier", "room", "until")

    def __init__(
        self, key: tuple[float, ...], until: float, multiplier: float, room: float
    ) -> None:
        self.key = key
        self.until = until
        self.multiplier = multiplier
        self.room = room


class Router:
    """Routes requests over a set of arms; owns no clock and does no I/O."""

    def __init__(
        self,
        arms: Sequence[ArmSpec],
        ledger: PoolLedger,
        telemetry: TelemetryBook,
        quality: QualityTracker,
        policy: RoutingPolicy | None = None,
    ) -> None:
        self.ledger = ledger
        self.telemetry = telemetry
        self.quality = quality
        self.arms: dict[str, ArmSpec] = {}
        self.policy = policy or RoutingPolicy()
        self.reconfigure(arms, self.policy)

    def reconfigure(self, arms: Sequence[ArmSpec], policy: RoutingPolicy) -> None:
        if policy.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {policy.strategy!r}")
        self.arms = {a.name: a for a in arms}
        self._order = {a.name: i for i, a in enumerate(arms)}
        self.policy = policy
        self.strategy = STRATEGIES[policy.strategy]
        self.forget()

    def forget(self) -> None:
        """Drop every cached view and pool quote (after state was loaded wholesale)."""
        self._shapes: dict[RequestShape, _ShapeViews] = {}
        self._quotes: dict[str, _PoolQuote] = {}
        self._latest = -math.inf

    # -- public ------------------------------------------------------------

    def route(
        self,
        req: RouteRequest,
        now: float,
        *,
        exclude: Collection[str] = (),
        busy: Collection[str] = (),
        force: str | None = None,
        ttl: float | None = None,
    ) -> Decision:
        """Pick an arm for one run of `req` and hold its pools.

        `exclude`: arms this run must not use (e.g. one that just hit a limit);
        `busy`: arms at their concurrency cap; `force`: use this arm only,
        still subject to every hard filter and to pool accounting.
        """
        self.ledger.advance(now)
        if now < self._latest:
            self.forget()  # the clock stepped back: validity times no longer hold
        self._latest = now
        if force is None:
            shape = self._shape(req, now)
            views, rejections = shape.views, list(shape.not_allowed)
        elif force in self.arms:
            view = self._view(self.arms[force], req, now, fit=None, forced=True)
            views, rejections = [(0, force, view)], []
        else:
            views = []
            rejections = [Rejection(force, RejectReason.NOT_ALLOWED, f"no arm named {force}")]
        multipliers, room = self._quote_pools(now)
        exponent = self.strategy.exponent(req.value)
        # Per pool: (room for a charge, scarcity term of the score).
        quotes = {pool: (room[pool], m**exponent) for pool, m in multipliers.items()}
        feasible: list[Ranked] = []
        below: list[Ranked] = []
        # The hot loop of every run start: views are revalidated in place and
        # everything else is a lookup or a float operation.
        versions = self.telemetry.versions.counts
        per_call = bool(exclude or busy)
        disabled = RejectReason.DISABLED
        for i, (rank, name, view) in enumerate(views):
            if now >= view.valid_until or versions.get(name, 0) != view.version:
                view = self._view(view.arm, req, now, fit=view.fit, forced=force is not None)
                views[i] = (rank, name, view)
            rejection = view.rejection
            if per_call and (rejection is None or rejection.reason is not disabled):
                if name in exclude:
                    rejection = Rejection(name, RejectReason.EXCLUDED, "excluded for this run")
                elif name in busy:
                    rejection = Rejection(name, RejectReason.AT_CAPACITY, "at its concurrency cap")
            if rejection is not None:
                rejections.append(rejection)
                continue
            term = 0.0  # the scarcest pool's term; a discount may bring it below 1
            for pool, amount in view.charges:
                left, pool_term = quotes[pool]
                if amount > left or left <= 0:
                    # The quote says no; the ledger words the exact refusal.
                    refusal = self.ledger.refusal(dict(view.charges), now)
                    if refusal is not None:
                        rejection = Rejection(name, refusal.reason, refusal.detail)
                        break
                if pool_term > term:
                    term = pool_term
            if rejection is not None:
                rejections.append(rejection)
                continue
            entry = (-view.numerator / (term or 1.0), rank, view)
            (below if view.below_quality else feasible).append(entry)
        degraded = not feasible and bool(below)
        ranked = feasible or below
        ranked.sort()
        if not degraded:
            below.sort()
            rejections.extend(
                Rejection(
                    view.arm.name,
                    RejectReason.BELOW_QUALITY,
                    f"quality {_fit(view):.3f} below the {req.type} floor {req.quality_floor:.2f}",
                )
                for _, _, view in below
            )
        ttl = self.policy.reservation_ttl if ttl is None else ttl
        for _, _, view in ranked:
            charges = dict(view.charges)
            held = self.ledger.reserve(view.arm.name, req.task, charges, now, ttl)
            if isinstance(held, Refusal):
                rejections.append(
                    Rejection(view.arm.name, RejectReason.RESERVE_FAILED, held.detail)
                )
                continue
            return Decision(
                task=req.task,
                strategy=self.policy.strategy,
                at=now,
                arm=view.arm.name,
                reservation=held,
                ranking=ranked,
                rejections=tuple(rejections),
                degraded=degraded,
                forced=force is not None,
                charges=charges,
                multipliers=multipliers,
            )
        return Decision(
            task=req.task,
            strategy=self.policy.strategy,
            at=now,
            arm=None,
            reservation=None,
            ranking=ranked,
            rejections=tuple(rejections),
            degraded=degraded,
            forced=force is not None,
            multipliers=multipliers,
        )

    # -- caches ------------------------------------------------------------

    def _view(
        self, arm: ArmSpec, req: RouteRequest, now: float, *, fit: ArmFit | None, forced: bool
    ) -> ArmView:
        return build_view(
            arm,
            fit or arm_fit(arm, req, self.ledger.pools),
            req,
            now,
            telemetry=self.telemetry,
            quality=self.quality,
            policy=self.policy,
            strategy=self.strategy,
            forced=forced,
        )

    def _shape(self, req: RouteRequest, now: float) -> _ShapeViews:
        """The cached views for requests shaped like `req`, built on first use."""
        key = request_shape(req)
        shape = self._shapes.get(key)
        if shape is not None:
            return shape
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        if req.arms:
            arms = [self.arms[n] for n in dict.fromkeys(req.arms) if n in self.arms]
            not_allowed = tuple(
                Rejection(a.name, RejectReason.NOT_ALLOWED, f"not in task {req.task}'s arms")
                for a in self.arms.values()
                if a.name not in req.arms
            )
        else:
            arms, not_allowed = list(self.arms.values()), ()
        preference = {name: i for i, name in enumerate(req.arms)}
        by_tie = sorted(
            arms, key=lambda a: (preference.get(a.name, 0), self._order[a.name], a.name)
        )
        rank = {a.name: i for i, a in enumerate(by_tie)}
        views = [
            (rank[a.name], a.name, self._view(a, req, now, fit=None, forced=False)) for a in arms
        ]
        shape = self._shapes[key] = _ShapeViews(views, not_allowed)
        return shape

    def _quote_pools(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """Every pool's scarcity multiplier and room for a charge, at `now`.

        A limited or exhausted pool quotes room -inf (any charge is refused)
        and the maximum multiplier, so the arithmetic stays finite.
        """
        multipliers: dict[str, float] = {}
        room: dict[str, float] = {}
        for name, state in self.ledger.pools.items():
            key = (state.used, state.reserved, state.limited_until or 0.0, state.window_end or 0.0)
            quote = self._quotes.get(name)
            if quote is None or quote.key != key or now >= quote.until:
                quote = self._quotes[name] = self._quote(name, state, key, now)
            multipliers[name] = quote.multiplier
            room[name] = quote.room
        return multipliers, room

    def _quote(self, name: str, state: PoolState, key: tuple[float, ...], now: float) -> _PoolQuote:
        multiplier = self.ledger.multiplier(name, now)
        until = math.inf
        if state.limited_until is not None and now < state.limited_until:
            until = state.limited_until
        if state.window_end is not None and state.window_start is not None:
            discount_from = state.window_end - self.ledger.discount_window(state)
            until = min(until, discount_from if now < discount_from else state.window_end)
        if multiplier is None:
            return _PoolQuote(key, until, self.ledger.scarcity_policy.max_multiplier, -math.inf)
        return _PoolQuote(key, until, multiplier, state.remaining())


def _fit(view: ArmView) -> float:
    assert view.components is not None, "a rejected arm is never ranked"
    return view.components.task_fit
