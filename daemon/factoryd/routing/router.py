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
   a request that says how many attempts its task has left is ranked as a
   cascade over them (cascade.py: cheap adequate arms first while attempts
   remain, the best fit on the last one); one that does not, with excluded
   arms (an escalation after a failure or a limit), ranks by task fit
   first, score second;
5. reserve on the best arm; a refused reservation moves on to the next arm,
   so a request never fails while a feasible arm remains.

Steps 2 to 4 are kept between decisions, per request shape, and redone only
for the arms whose telemetry, quality or pools moved (standings.py); the
caches never change an answer (tests/test_routing_cache.py).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from factoryd.routing.armview import (
    ArmFit,
    ArmView,
    RequestShape,
    arm_fit,
    build_view,
    request_shape,
)
from factoryd.routing.cascade import cascade
from factoryd.routing.decision import Decision, Ranked
from factoryd.routing.ledger import PoolLedger, Refusal
from factoryd.routing.model import ArmSpec, Rejection, RejectReason, RouteRequest
from factoryd.routing.quality import QualityTracker
from factoryd.routing.quotes import PoolQuotes
from factoryd.routing.scoring import STRATEGIES, RoutingPolicy
from factoryd.routing.standings import Standing, Standings
from factoryd.routing.telemetry import TelemetryBook

__all__ = ["Router"]

#: Request shapes whose standings are kept; beyond this the cache starts over.
MAX_SHAPES = 1024


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
        """Drop every cached standing and pool quote (after state was loaded wholesale)."""
        self._shapes: dict[RequestShape, Standings] = {}
        self._quotes = PoolQuotes()
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
        quotes = self._quotes.refresh(self.ledger, now)
        exponent = self.strategy.exponent(req.value)
        if force is None:
            standings = self._standings(req, now, exponent)
        elif force in self.arms:
            view = self._view(self.arms[force], req, now, fit=None, forced=True)
            standings = Standings([(0, force, view)], (), exponent)
        else:
            standings = Standings([], (), exponent)
            standings.not_allowed = (
                Rejection(force, RejectReason.NOT_ALLOWED, f"no arm named {force}"),
            )

        def rebuild(view: ArmView) -> ArmView:
            return self._view(view.arm, req, now, fit=view.fit, forced=force is not None)

        standings.update(
            now,
            quotes,
            self.telemetry.versions,
            rebuild,
            lambda charges: self.ledger.refusal(charges, now),
        )
        entries = standings.entries
        if exclude or busy:
            entries = _blocked(standings, exclude, busy)
        rejections = [*standings.not_allowed, *(e for e in entries if e.__class__ is Rejection)]
        ranked: list[Ranked] = [e for e in entries if e.__class__ is tuple]
        below: list[Ranked] = []
        if standings.below:
            below = [e for e in ranked if e[2].below_quality]
            ranked = [e for e in ranked if not e[2].below_quality]
        by_fit = bool(exclude)
        if req.attempts_left is not None and force is None:
            # A cascade over the task's remaining attempts (cascade.py).
            ranked, below = cascade(ranked, below, req.attempts_left + 1)
            by_fit = False  # the score decides among the arms the plan allows
            degraded = bool(ranked) and all(e[2].below_quality for e in ranked)
        else:
            degraded = not ranked and bool(below)
            if degraded:
                ranked, below = below, []
            ranked.sort()
            if exclude:
                # An escalation (the run after a failure or a limit): the task has
                # fewer attempts left, so the arm most likely to succeed goes first.
                ranked.sort(key=_by_fit)
            below.sort()
        rejections.extend(
            Rejection(
                view.arm.name,
                RejectReason.BELOW_QUALITY,
                f"quality {_fit(view):.3f} (at most {_upper(view):.3f}) below the "
                f"{req.type} floor {req.quality_floor:.2f}",
            )
            for _, _, view in below
        )
        multipliers = {pool: quote.multiplier for pool, quote in quotes.items()}
        ttl = self.policy.reservation_ttl if ttl is None else ttl
        for _, _, view in ranked:
            charges = dict(view.fit.charges)
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
                by_fit=by_fit,
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
            by_fit=by_fit,
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

    def _standings(self, req: RouteRequest, now: float, exponent: float) -> Standings:
        """The cached standings for requests shaped like `req`, made on first use."""
        key = request_shape(req)
        standings = self._shapes.get(key)
        if standings is not None:
            return standings
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        if req.arms:
            arms = [self.arms[n] for n in dict.fromkeys(req.arms) if n in self.arms]
            not_allowed = tuple(
                Rejection(a.name, RejectReason.NOT_ALLOWED, "not among the task's arms")
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
        standings = self._shapes[key] = Standings(views, not_allowed, exponent)
        return standings


def _blocked(
    standings: Standings, exclude: Collection[str], busy: Collection[str]
) -> list[Standing | None]:
    """The standings with this call's excluded and busy arms taken out (a
    disabled arm keeps saying so: that is the more useful reason)."""
    entries = list(standings.entries)
    for names, reason, detail in (
        (busy, RejectReason.AT_CAPACITY, "at its concurrency cap"),
        (exclude, RejectReason.EXCLUDED, "excluded for this run"),  # wins over busy
    ):
        for name in names:
            i = standings.position.get(name)
            if i is None:
                continue
            entry = entries[i]
            if entry.__class__ is Rejection and entry.reason is RejectReason.DISABLED:
                continue
            entries[i] = Rejection(name, reason, detail)
    return entries


def _fit(view: ArmView) -> float:
    assert view.components is not None, "a rejected arm is never ranked"
    return view.components.task_fit


def _by_fit(entry: Ranked) -> tuple[float, float, int]:
    return (-_fit(entry[2]), entry[0], entry[1])


def _upper(view: ArmView) -> float:
    assert view.components is not None, "a rejected arm is never ranked"
    return view.components.fit_upper
