"""Small builders for routing tests: arms, pools and an engine in one line."""

from __future__ import annotations

from factoryd.routing.engine import EngineSettings, RoutingEngine
from factoryd.routing.ledger import ScarcityPolicy
from factoryd.routing.model import ArmSpec, PoolSpec, PoolUnit
from factoryd.routing.quality import QualityPolicy
from factoryd.routing.scoring import RoutingPolicy
from factoryd.routing.telemetry import HealthPolicy
from factoryd.units.durations import parse_period

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a fixed "now"


def arm(name: str, **kw: object) -> ArmSpec:
    kw.setdefault("cli", "command")
    return ArmSpec(name=name, **kw)  # type: ignore[arg-type]


def pool(
    name: str, unit: str = "tokens", limit: float = 1000, window: str | None = None, **kw: object
) -> PoolSpec:
    return PoolSpec(
        name=name,
        unit=PoolUnit(unit),
        limit=limit,
        window=parse_period(window) if window else None,
        **kw,  # type: ignore[arg-type]
    )


def engine(
    arms: list[ArmSpec], pools: list[PoolSpec] = (), strategy: str = "balanced", **policy: object
) -> RoutingEngine:
    return RoutingEngine(
        EngineSettings(
            arms=tuple(arms),
            pools=tuple(pools),
            policy=RoutingPolicy(strategy=strategy, **policy),  # type: ignore[arg-type]
            scarcity=ScarcityPolicy(),
            quality=QualityPolicy(),
            health=HealthPolicy(),
        )
    )
