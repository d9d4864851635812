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

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.routing.ledger import PoolLedger, Refusal, Reservation
from daemon.routing.model import ArmSpec, RejectReason, RouteRequest, charge_estimate
from daemon.routing.quality import QualityTracker
from daemon.routing.scoring import (
    STRATEGIES,
    Components,
    RoutingPolicy,
    heuristic_quality,
    normalize_consumption,
    normalize_latency,
    normalize_throughput,
)
from daemon.routing.telemetry import TelemetryBook
from daemon.timefmt import iso


@dataclass(frozen=True, slots=True)
class Rejection:
    arm: str
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class Candidate:
    arm: str
    score: float
    components: Components
    below_quality: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The router's answer for one run, with everything needed to explain it."""

    task: str
    strategy: str
    at: float
    arm: str | None
    reservation: Reservation | None
    candidates: tuple[Candidate, ...]
    rejections: tuple[Rejection, ...]
    degraded: bool = False
    forced: bool = False
    charges: dict[str, float] = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.arm == self.arm), None)

    def rationale(self) -> str:
        """One paragraph a person can read in a log line."""
        rejected = "; ".join(f"{r.arm}: {r.detail}" for r in self.rejections)
        chosen = self.chosen
        if self.arm is None or chosen is None:
            if not self.rejections:
                return f"No arm available for task {self.task}"
            return f"All arms rejected for task {self.task}: {rejected}"
        c = chosen.components
        parts = [
            f"Selected {self.arm} for task {self.task} (strategy {self.strategy}, "
            f"score {chosen.score:.4g}; fit {c.task_fit:.3f}, throughput {c.throughput:.3f}, "
            f"latency {c.latency:.3f}, consumption {c.consumption:.3f}, "
            f"cost {c.effective_cost:.4g} x{c.scarcity:.3g} scarcity"
            + (f" from {c.scarce_pool}" if c.scarce_pool else "")
            + ")"
        ]
        if self.forced:
            parts.append("Forced by request")
        if self.degraded:
            parts.append("Degraded: no arm met the quality floor")
        others = [f"{x.arm} {x.score:.4g}" for x in self.candidates if x.arm != self.arm]
        if others:
            parts.append("Runners-up: " + ", ".join(others))
        if self.rejections:
            parts.append(f"Rejected {len(self.rejections)}: {rejected}")
        return ". ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "strategy": self.strategy,
            "at": iso(self.at),
            "arm": self.arm,
            "degraded": self.degraded,
            "forced": self.forced,
            "reservation": None
            if self.reservation is None
            else {
                "id": self.reservation.id,
                "charges": self.reservation.charges,
                "expires_at": iso(self.reservation.expires_at),
            },
            "ranking": [
                {
                    "rank": i + 1,
                    "arm": c.arm,
                    "score": c.score,
                    "below_quality": c.below_quality,
                    "components": c.components.as_dict(),
                }
                for i, c in enumerate(self.candidates)
            ],
            "rejections": [
                {"arm": r.arm, "reason": str(r.reason), "detail": r.detail} for r in self.rejections
            ],
            "rationale": self.rationale(),
        }


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
        self._charge_cache: dict[tuple[str, int], dict[str, float]] = {}
        self.policy = policy

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
        rejections: list[Rejection] = []
        feasible: list[Candidate] = []
        below: list[Candidate] = []
        mults: dict[str, float | None] = {}  # each pool's multiplier, once per decision
        for arm in self._candidate_arms(req, force, rejections):
            rejection = self._hard_filter(arm, req, now, exclude, busy, forced=arm.name == force)
            if rejection is not None:
                rejections.append(rejection)
                continue
            components = self._components(arm, req, now, mults)
            score = STRATEGIES[self.policy.strategy](components, self.policy)
            if force is None and components.task_fit < req.quality_floor:
                below.append(Candidate(arm.name, score, components, below_quality=True))
            else:
                feasible.append(Candidate(arm.name, score, components))
        degraded = not feasible and bool(below)
        ranked = self._rank(feasible or below, req)
        if not degraded:
            rejections.extend(
                Rejection(
                    c.arm,
                    RejectReason.BELOW_QUALITY,
                    f"quality {c.components.task_fit:.3f} below the {req.type} floor "
                    f"{req.quality_floor:.2f}",
                )
                for c in self._rank(below, req)
            )
        ttl = self.policy.reservation_ttl if ttl is None else ttl
        for cand in ranked:
            arm = self.arms[cand.arm]
            charges = self._charges(arm, req)
            held = self.ledger.reserve(arm.name, req.task, charges, now, ttl)
            if isinstance(held, Refusal):
                rejections.append(Rejection(arm.name, RejectReason.RESERVE_FAILED, held.detail))
                continue
            return Decision(
                task=req.task,
                strategy=self.policy.strategy,
                at=now,
                arm=arm.name,
                reservation=held,
                candidates=tuple(ranked),
                rejections=tuple(rejections),
                degraded=degraded,
                forced=force is not None,
                charges=charges,
            )
        return Decision(
            task=req.task,
            strategy=self.policy.strategy,
            at=now,
            arm=None,
            reservation=None,
            candidates=tuple(ranked),
            rejections=tuple(rejections),
            degraded=degraded,
            forced=force is not None,
        )

    # -- steps -------------------------------------------------------------

    def _candidate_arms(
        self, req: RouteRequest, force: str | None, rejections: list[Rejection]
    ) -> list[ArmSpec]:
        if force is not None:
            if force not in self.arms:
                rejections.append(
                    Rejection(force, RejectReason.NOT_ALLOWED, f"no arm named {force}")
                )
                return []
            return [self.arms[force]]
        if not req.arms:
            return list(self.arms.values())
        allowed = [self.arms[n] for n in req.arms if n in self.arms]
        rejections.extend(
            Rejection(a.name, RejectReason.NOT_ALLOWED, f"not in task {req.task}'s arms")
            for a in self.arms.values()
            if a.name not in req.arms
        )
        return allowed

    def _hard_filter(
        self,
        arm: ArmSpec,
        req: RouteRequest,
        now: float,
        exclude: Collection[str],
        busy: Collection[str],
        *,
        forced: bool,
    ) -> Rejection | None:
        def reject(reason: RejectReason, detail: str) -> Rejection:
            return Rejection(arm.name, reason, detail)

        if not arm.enabled:
            return reject(RejectReason.DISABLED, "disabled in config")
        if arm.name in exclude:
            return reject(RejectReason.EXCLUDED, "excluded for this run")
        if arm.name in busy:
            return reject(RejectReason.AT_CAPACITY, "at its concurrency cap")
        tel = self.telemetry.arms.get(arm.name)
        if tel is not None:
            if not tel.healthy:
                return reject(RejectReason.UNHEALTHY, "marked unhealthy")
            if tel.backoff_until is not None and now < tel.backoff_until:
                return reject(
                    RejectReason.BACKOFF,
                    f"resting after {tel.consecutive_faults} faults until {iso(tel.backoff_until)}",
                )
            if tel.limited_until is not None and now < tel.limited_until:
                return reject(
                    RejectReason.LIMITED,
                    f"subscription limit reached for {arm.model or arm.name} until "
                    f"{iso(tel.limited_until)}"
                    + (f" ({tel.limited_reason})" if tel.limited_reason else ""),
                )
        if not arm.fallback and not forced and self.policy.max_staleness is not None:
            perf = self.telemetry.performance(arm.name, now)
            if perf is None:
                return reject(RejectReason.STALE, "no telemetry yet and not a fallback arm")
            if perf.age is not None and perf.age > self.policy.max_staleness:
                return reject(
                    RejectReason.STALE,
                    f"stale telemetry (last event {perf.age:.0f}s ago, "
                    f"max {self.policy.max_staleness:.0f}s)",
                )
        if req.requires_tools and not arm.tools:
            return reject(RejectReason.LACKS_TOOLS, "task requires tools")
        if req.requires_vision and not arm.vision:
            return reject(RejectReason.LACKS_VISION, "task requires vision")
        if req.effort is not None and req.effort not in arm.thinking:
            return reject(RejectReason.LACKS_EFFORT, f"no '{req.effort}' thinking effort")
        if arm.max_complexity is not None and req.complexity > arm.max_complexity:
            return reject(
                RejectReason.TOO_COMPLEX,
                f"complexity {req.complexity:.2f} above ceiling {arm.max_complexity:.2f}",
            )
        charges = self._charges(arm, req)
        pools = self.ledger.pools
        # Quick check first; the exact refusal (and its sentence) only when it fails.
        if any(
            pools[p].is_limited(now) or amount > (left := pools[p].remaining()) or left <= 0
            for p, amount in charges.items()
        ):
            refusal = self.ledger.refusal(charges, now)
            if refusal is not None:
                return reject(refusal.reason, refusal.detail)
        return None

    def _charges(self, arm: ArmSpec, req: RouteRequest) -> dict[str, float]:
        """What the estimate costs each of the arm's pools (cached: it depends only on
        the arm, the pools' specs and the token estimate, all fixed until a reload)."""
        key = (arm.name, req.estimated_tokens)
        charges = self._charge_cache.get(key)
        if charges is None:
            charges = {
                pool: charge_estimate(self.ledger.pools[pool].spec, arm, req.estimated_tokens)
                for pool in arm.pools
                if pool in self.ledger.pools
            }
            if len(self._charge_cache) > 4096:
                self._charge_cache.clear()
            self._charge_cache[key] = charges
        return dict(charges)

    def _components(
        self, arm: ArmSpec, req: RouteRequest, now: float, mults: dict[str, float | None]
    ) -> Components:
        policy = self.policy
        heuristic = heuristic_quality(arm, req)
        observed = self.quality.observed(arm.name, str(req.type))
        perf = self.telemetry.performance(arm.name, now)
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
        scarcity, scarce_pool = 1.0, None
        for i, pool in enumerate(p for p in arm.pools if p in self.ledger.pools):
            if pool not in mults:
                mults[pool] = self.ledger.multiplier(pool, now)
            mult = mults[pool]
            if mult is None:  # filtered earlier; keep the math finite regardless
                mult = self.ledger.scarcity_policy.max_multiplier
            if i == 0 or mult > scarcity:
                scarcity, scarce_pool = mult, pool
        return Components(
            heuristic=heuristic,
            observed=observed,
            task_fit=self.quality.blend(arm.name, str(req.type), heuristic),
            value=req.value,
            throughput=throughput,
            latency=latency,
            consumption=consumption,
            base_cost=arm.estimate_cost(req.estimated_tokens),
            scarcity=scarcity,
            scarce_pool=scarce_pool,
        )

    def _rank(self, candidates: list[Candidate], req: RouteRequest) -> list[Candidate]:
        preference = {name: i for i, name in enumerate(req.arms)}

        def key(c: Candidate) -> tuple[float, int, int, str]:
            return (-c.score, preference.get(c.arm, 0), self._order.get(c.arm, 0), c.arm)

        return sorted(candidates, key=key)
