"""Observed quality: an exponential moving average of success per (arm, task type).

The heuristic (context size, thinking, tools, locality) is a prior; once an
arm has `min_observations` outcomes for a task type, what it actually did
dominates the blend.
"""

from __future__ import annotations

from dataclasses import dataclass

from factoryd.routing.versions import ArmVersions


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    alpha: float = 0.3
    min_observations: int = 3
    observed_weight: float = 0.7


@dataclass(slots=True)
class QualityStat:
    ema: float = 0.0
    n: int = 0


class QualityTracker:
    def __init__(
        self, policy: QualityPolicy | None = None, versions: ArmVersions | None = None
    ) -> None:
        self.policy = policy or QualityPolicy()
        self.stats: dict[tuple[str, str], QualityStat] = {}
        self.versions = versions or ArmVersions()

    def observe(self, arm: str, task_type: str, success: bool) -> None:
        stat = self.stats.setdefault((arm, task_type), QualityStat())
        value = 1.0 if success else 0.0
        stat.ema = (
            value if stat.n == 0 else self.policy.alpha * value + (1 - self.policy.alpha) * stat.ema
        )
        stat.n += 1
        self.versions.bump(arm)

    def restore(self, arm: str, task_type: str, ema: float, n: int) -> None:
        """Put back a statistic exactly as a snapshot recorded it."""
        self.stats[(arm, task_type)] = QualityStat(ema=ema, n=n)
        self.versions.bump(arm)

    def observed(self, arm: str, task_type: str) -> float | None:
        stat = self.stats.get((arm, task_type))
        if stat is None or stat.n < self.policy.min_observations:
            return None
        return stat.ema

    def blend(self, arm: str, task_type: str, heuristic: float) -> float:
        observed = self.observed(arm, task_type)
        if observed is None:
            return heuristic
        w = self.policy.observed_weight
        return w * observed + (1 - w) * heuristic
