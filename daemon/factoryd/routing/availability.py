"""Whether an arm can be routed to now, and what keeps it out: one answer for all.

`factoryd status` (the arm's health column), the `factoryd_arm_available`
metric and the web page read this one function, so that they cannot
disagree (the metric once said 1 while status showed the arm limited,
because one counted the arm's pools and the other did not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from factoryd.routing.engine import RoutingEngine


def arm_health(engine: RoutingEngine, name: str, now: float) -> tuple[str, list[str]]:
    """("ok" | "disabled" | "secret_missing" | "unhealthy" | "resting" | "limited",
    the arm's pools under a limit hold now)."""
    arm = engine.arms[name]
    ledger = engine.ledger
    pools = [p for p in arm.pools if p in ledger.pools and ledger.pools[p].is_limited(now)]
    if not arm.enabled:
        return "disabled", pools
    health = engine.telemetry.condition(name, now)
    if health == "ok" and pools:
        health = "limited"
    return health, pools
