"""The routing engine as one object: router, ledger, telemetry and quality together.

The reconciler talks to this facade only: `route` before a run, `settle`
after it, `report_limit` when an agent says a pool is exhausted. It stays
pure; the caller passes `now` (wall-clock epoch seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from factoryd.routing.decision import Decision
from factoryd.routing.ledger import PoolLedger, ScarcityPolicy
from factoryd.routing.model import ArmSpec, PoolSpec, RouteRequest, Usage, charges_actual
from factoryd.routing.quality import QualityPolicy, QualityTracker
from factoryd.routing.router import Router
from factoryd.routing.scoring import RoutingPolicy
from factoryd.routing.snapshot import dump_state, load_state
from factoryd.routing.telemetry import HealthPolicy, RunSample, TelemetryBook
from factoryd.routing.versions import ArmVersions


@dataclass(frozen=True, slots=True)
class EngineSettings:
    arms: tuple[ArmSpec, ...]
    pools: tuple[PoolSpec, ...]
    policy: RoutingPolicy
    scarcity: ScarcityPolicy
    quality: QualityPolicy
    health: HealthPolicy
    telemetry_window: float = 3600.0


class RoutingConfig(Protocol):
    """The parts of a config the engine reads. The router sits below the
    config layer and may not import it; `config.Config` satisfies this."""

    @property
    def arms(self) -> tuple[ArmSpec, ...]: ...
    @property
    def pools(self) -> tuple[PoolSpec, ...]: ...
    @property
    def routing(self) -> RoutingPolicy: ...
    @property
    def scarcity(self) -> ScarcityPolicy: ...
    @property
    def quality(self) -> QualityPolicy: ...
    @property
    def health(self) -> HealthPolicy: ...
    @property
    def telemetry_window(self) -> float: ...


class Settlement(NamedTuple):
    """What `settle` did with a run's reservation, for logs and metrics.

    A named tuple: one is made per run, and a tuple is made faster than a
    frozen dataclass."""

    committed: dict[str, float]
    rolled_back: bool
    hold_had_expired: bool


class RoutingEngine:
    def __init__(self, settings: EngineSettings) -> None:
        self.ledger = PoolLedger(settings.pools, settings.scarcity)
        # Telemetry and quality share one change counter per arm, which the
        # router's cached arm views are checked against.
        versions = ArmVersions()
        self.telemetry = TelemetryBook(settings.telemetry_window, settings.health, versions)
        self.quality = QualityTracker(settings.quality, versions)
        self.router = Router(
            settings.arms, self.ledger, self.telemetry, self.quality, settings.policy
        )
        #: Told of every outcome that teaches (arm, task type, ok, seconds, tokens),
        #: so a fleet can learn it too.
        self.on_outcome: Callable[[str, str, bool, float, int], None] | None = None

    @classmethod
    def from_config(cls, config: RoutingConfig) -> RoutingEngine:
        return cls(settings_from_config(config))

    def reconfigure(self, settings: EngineSettings) -> None:
        """Adopt a new config; usage, holds, telemetry and quality carry over."""
        self.ledger.scarcity_policy = settings.scarcity
        self.ledger.reconfigure(settings.pools)
        self.telemetry.window = settings.telemetry_window
        self.telemetry.health = settings.health
        self.quality.policy = settings.quality
        self.router.reconfigure(settings.arms, settings.policy)

    @property
    def arms(self) -> dict[str, ArmSpec]:
        return self.router.arms

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
        return self.router.route(req, now, exclude, busy, force, ttl)

    def settle(
        self,
        decision: Decision,
        *,
        now: float,
        usage: Usage | None,
        ok: bool,
        duration: float,
        task_type: str,
        arm_fault: bool = False,
        limited: bool = False,
    ) -> Settlement:
        """Close a run: commit what it used (or roll back), feed telemetry and quality.

        `usage is None` means the run never got going (spawn failure): the
        hold is rolled back. A limited run is not a quality signal.
        """
        arm_name = decision.arm
        if arm_name is None:
            return Settlement({}, rolled_back=False, hold_had_expired=False)
        res_id = decision.reservation.id if decision.reservation else ""
        arm = self.router.arms.get(arm_name)
        ledger = self.ledger
        if usage is None or arm is None:
            held = ledger.rollback(res_id)
            committed: dict[str, float] = {}
            rolled_back = True
        else:
            pools = ledger.pools
            specs: list[PoolSpec] = []
            for pool in decision.charges:
                state = pools.get(pool)
                if state is not None:
                    specs.append(state.spec)
            committed = charges_actual(specs, arm, usage)
            held = ledger.commit(res_id, committed)
            rolled_back = False
        # A good run that was no arm fault clears the arm's fault count: with its
        # sample when it has one (one change to the arm's telemetry, not two).
        healthy = ok and not arm_fault
        if not limited and usage is not None:
            tokens = usage.total_tokens
            # tuple.__new__: without the named tuple's Python __new__ (at, ok, duration, tokens)
            sample = tuple.__new__(RunSample, (now, ok, duration, tokens))
            self.telemetry.record(arm_name, sample, healthy)
            self.quality.observe(arm_name, task_type, ok)
            if self.on_outcome is not None:
                self.on_outcome(arm_name, task_type, ok, duration, tokens)
        elif healthy:
            self.telemetry.healthy_run(arm_name)
        if arm_fault:
            self.telemetry.fault(arm_name, now)
        elif ok and arm is not None:
            ledger.clear_strikes(arm.pools)
        return tuple.__new__(Settlement, (committed, rolled_back, not held))

    def report_limit(self, arm_name: str, until: float | None, now: float, reason: str) -> float:
        """An agent hit a usage limit: its pools (or the arm itself) are out until `until`.

        Without a reset time the pools' own escalating backoff decides.
        """
        arm = self.arms.get(arm_name)
        pools = [p for p in (arm.pools if arm else ()) if p in self.ledger.pools]
        if until is None:
            until = self.ledger.hold_limit_unknown(pools, now, reason) if pools else now + 900.0
        elif pools:
            until = self._escalate(pools, until, now, reason)
        if not pools:
            self.telemetry.limit(arm_name, until, reason)
        return until

    def _escalate(self, pools: list[str], until: float, now: float, reason: str) -> float:
        """A limit with a reset time: the provider's time, unless the pool was limited
        before with no successful run since (a strike): then at least the pool's own
        escalating backoff, so that a short retry-after cannot bounce a task back
        to the same 429 every few seconds. Returns the latest hold."""
        latest = until
        for name in pools:
            st = self.ledger.pools[name]
            hold = until
            if st.strikes:
                step = min(st.spec.limit_backoff * 2 ** (st.strikes - 1), st.spec.limit_backoff_max)
                hold = max(until, now + step)
            st.strikes += 1
            self.ledger.hold_limit([name], hold, reason)
            latest = max(latest, hold)
        return latest

    def snapshot(self, now: float) -> dict[str, Any]:
        return dump_state(self.ledger, self.telemetry, self.quality, now)

    def load_snapshot(self, data: Any) -> float | None:
        taken_at = load_state(data, self.ledger, self.telemetry, self.quality)
        self.router.forget()
        return taken_at


def settings_from_config(config: RoutingConfig) -> EngineSettings:
    return EngineSettings(
        arms=config.arms,
        pools=config.pools,
        policy=config.routing,
        scarcity=config.scarcity,
        quality=config.quality,
        health=config.health,
        telemetry_window=config.telemetry_window,
    )
