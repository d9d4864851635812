"""Small builders for routing tests: arms, pools and an engine in one line."""

from __future__ import annotations

from daemon.durations import parse_period
from daemon.routing.engine import EngineSettings, RoutingEngine
from daemon.routing.ledger import ScarcityPolicy
from daemon.routing.model import ArmSpec, PoolSpec, PoolUnit
from daemon.routing.quality import QualityPolicy
from daemon.routing.scoring import RoutingPolicy
from daemon.routing.telemetry import HealthPolicy

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
