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
    ArmView,
    RequestShape,
    ViewContext,
    arm_fit,
    build_view,
    request_shape,
)
from factoryd.routing.cascade import cascade
from factoryd.routing.decision import (
    IS_RANKED,
    Basis,
    Decision,
    Ranked,
    best_ranked,
    by_fit_key,
    sort_ranked,
)
from factoryd.routing.ledger import PoolLedger, Refusal, Reservation
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
        #: The same standings by request object (id, with the object kept so
        #: that its id is not reused while the entry lives).
        self._by_request: dict[int, tuple[RouteRequest, Standings]] = {}
        self._quotes = PoolQuotes()
        self._latest = -math.inf

    # -- public ------------------------------------------------------------

    def route(
        self,
        req: RouteRequest,
        now: float,
        exclude: Collection[str] = (),
        busy: Collection[str] = (),
        force: str | None = None,
        ttl: float | None = None,
    ) -> Decision:
        """Pick an arm for one run of `req` and hold its pools.

        The options may be passed by position (the engine does: matching
        keywords costs a string compare per option on every decision).

        `exclude`: arms this run must not use (e.g. one that just hit a limit);
        `busy`: arms at their concurrency cap; `force`: use this arm only,
        still subject to every hard filter and to pool accounting.
        """
        ledger = self.ledger
        ledger.advance(now)
        if now < self._latest:
            self.forget()  # the clock stepped back: validity times no longer hold
        self._latest = now
        quotes = self._quotes.refresh(ledger, now)
        if force is None:
            # A task's request is one long-lived object: known by identity, it
            # needs no shape built and hashed.
            known = self._by_request.get(id(req))
            if known is not None and known[0] is req:
                standings = known[1]
            else:
                standings = self._standings(req, now)
        else:
            context = self._context(req)
            exponent = self.strategy.exponent(req.value)
            if force in self.arms:
                view = self._view(self.arms[force], now, context, forced=True)
                standings = Standings([(0, force, view)], (), exponent, context, forced=True)
            else:
                standings = Standings([], (), exponent, context, forced=True)
                standings.not_allowed = (
                    Rejection(force, RejectReason.NOT_ALLOWED, f"no arm named {force}"),
                )
        standings.update(now, quotes, self.telemetry.versions, ledger.refusal)
        # A copy either way: the standings change in place at the next decision.
        entries = _blocked(standings, exclude, busy) if exclude or busy else standings.entries[:]
        # An escalation (the run after a failure or a limit, some arms excluded):
        # the task has fewer attempts left, so the arm most likely to succeed goes first.
        by_fit = bool(exclude)
        ranked: list[Ranked] | None = None  # listed from the entries when read
        below: list[Ranked] = []
        degraded = planned = False
        if req.attempts_left is not None and force is None:
            # A cascade over the task's remaining attempts (cascade.py): its
            # order is final, and the score decides among the arms it allows.
            ranked, below = _split_at_floor(entries, bool(standings.below))
            ranked, below = cascade(ranked, below, req.attempts_left + 1)
            by_fit, planned = False, True
            degraded = bool(ranked) and all(e[2].below_quality for e in ranked)
            best = ranked[0] if ranked else None
        elif standings.below:
            ranked, below = _split_at_floor(entries, True)
            degraded = not ranked and bool(below)
            if degraded:
                ranked, below = below, []
            best = best_ranked(ranked, by_fit) if ranked else None
        else:
            # Usually the best arm's reservation holds: it is found without sorting,
            # among the standings' scores while no arm is blocked for this call.
            best = None if exclude or busy else standings.best()
            if best is None:
                scored = filter(IS_RANKED, entries)
                best = (
                    min(scored, key=by_fit_key, default=None)
                    if by_fit
                    else min(scored, default=None)
                )
        refused: list[Rejection] = []
        ttl = self.policy.reservation_ttl if ttl is None else ttl
        chosen: Ranked | None = None
        held: tuple[Reservation, dict[str, float]] | None = None
        if best is not None:
            held = self._reserve(best, req.task, now, ttl, refused)
            if held is not None:
                chosen = best
            else:
                if ranked is None:
                    ranked = list(filter(IS_RANKED, entries))
                # Refused: the rest in the full order, as the decision ranks them.
                for entry in (ranked if planned else sort_ranked(ranked, by_fit))[1:]:
                    held = self._reserve(entry, req.task, now, ttl, refused)
                    if held is not None:
                        chosen = entry
                        break
        basis = Basis(
            ranked,
            chosen,
            standings.not_allowed,
            entries,
            below,
            refused,
            quotes,
            standings.context.type_name,  # str(req.type), req.quality_floor: fixed by shape
            standings.context.floor,
            planned,
        )
        # By position, in Decision's order (ranking, rejections and multipliers
        # come from the basis).
        return Decision(
            req.task,
            self.policy.strategy,
            now,
            None if chosen is None else chosen[2].arm.name,
            None if held is None else held[0],
            None,
            None,
            degraded,
            force is not None,
            {} if held is None else held[1],
            None,
            by_fit,
            basis,
        )

    def _reserve(
        self, entry: Ranked, task: str, now: float, ttl: float, refused: list[Rejection]
    ) -> tuple[Reservation, dict[str, float]] | None:
        """Hold the estimate for the arm of `entry`, or note the ledger's refusal."""
        view = entry[2]
        charges = dict(view.fit.charges)
        got = self.ledger.reserve(view.arm.name, task, charges, now, ttl)
        if isinstance(got, Refusal):
            refused.append(Rejection(view.arm.name, RejectReason.RESERVE_FAILED, got.detail))
            return None
        return got, charges

    # -- caches ------------------------------------------------------------

    def _context(self, req: RouteRequest) -> ViewContext:
        return ViewContext(
            req,
            telemetry=self.telemetry,
            quality=self.quality,
            policy=self.policy,
            strategy=self.strategy,
        )

    def _view(self, arm: ArmSpec, now: float, context: ViewContext, *, forced: bool) -> ArmView:
        """A first view of `arm` for the context's request (fit worked out here)."""
        fit = arm_fit(arm, context.request, self.ledger.pools)
        return build_view(arm, fit, now, context, forced, self.telemetry.versions.of(arm.name))

    def _standings(self, req: RouteRequest, now: float) -> Standings:
        """The cached standings for requests shaped like `req`, made on first use."""
        if len(self._by_request) >= MAX_SHAPES:
            self._by_request.clear()
        key = request_shape(req)
        standings = self._shapes.get(key)
        if standings is not None:
            self._by_request[id(req)] = (req, standings)
            return standings
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
            self._by_request.clear()
        exponent = self.strategy.exponent(req.value)
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
        context = self._context(req)
        views = [(rank[a.name], a.name, self._view(a, now, context, forced=False)) for a in arms]
        standings = self._shapes[key] = Standings(views, not_allowed, exponent, context)
        self._by_request[id(req)] = (req, standings)
        return standings


def _split_at_floor(
    entries: list[Standing | None], any_below: bool
) -> tuple[list[Ranked], list[Ranked]]:
    """(the scored arms that meet the quality floor, those set aside below it)."""
    ranked: list[Ranked] = list(filter(IS_RANKED, entries))
    if not any_below:
        return ranked, []
    return [e for e in ranked if not e[2].below_quality], [e for e in ranked if e[2].below_quality]


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
