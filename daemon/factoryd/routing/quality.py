"""Observed quality: a discounted success average per (arm, task type), with
a confidence bound so that a few unlucky runs do not write an arm off.

The heuristic (context size, thinking, tools, locality) is a prior; once an
arm has `min_observations` outcomes for a task type, what it actually did
dominates the blend.

The average is a plain mean over the first runs and an exponential moving
average (weight `alpha` for the newest run) after that, so it forgets old
runs (drift: a model that degrades is noticed within about 1/alpha runs)
without jumping on each one. An arm is kept out by a task type's quality
floor only when it is confidently below it: the floor is checked against
the Wilson upper bound of the average, on the average's effective sample
size. A true 0.85 arm that failed twice in a row keeps a bound above any
floor and is still run; a 0.3 arm seen twenty times is set aside. (With a
0.3 weight and the mean checked directly, two failures took a 0.88 arm
below the floor, where it was never run again and never recovered.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from factoryd.routing.versions import ArmVersions

#: z of the one-sided 90% bound used for the quality floor.
FLOOR_Z = 1.2816


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    alpha: float = 0.1
    min_observations: int = 3
    observed_weight: float = 0.7


@dataclass(slots=True)
class QualityStat:
    ema: float = 0.0
    n: int = 0


def effective_runs(n: int, alpha: float) -> float:
    """How many runs a discounted average of `n` runs is worth: n while it is
    still a plain mean, at most (2 - alpha) / alpha (an EMA's effective size)."""
    return min(float(n), (2.0 - alpha) / alpha) if alpha > 0 else float(n)


def wilson_upper(p: float, n: float, z: float = FLOOR_Z) -> float:
    """Upper Wilson bound of a success rate `p` seen over `n` runs (1.0 if none)."""
    if n <= 0:
        return 1.0
    z2 = z * z
    centre = p + z2 / (2 * n)
    # max(v, 0.0) and min(1.0, u) as comparisons, same results (the builtins
    # cost more than the arithmetic; this runs after every run of an arm).
    variance = p * (1 - p)
    variance = 0.0 if variance < 0.0 else variance
    spread = z * math.sqrt(variance / n + z2 / (4 * n * n))
    upper = (centre + spread) / (1 + z2 / n)
    return upper if upper < 1.0 else 1.0


class QualityTracker:
    def __init__(
        self, policy: QualityPolicy | None = None, versions: ArmVersions | None = None
    ) -> None:
        self.policy = policy or QualityPolicy()
        self.stats: dict[tuple[str, str], QualityStat] = {}
        self.versions = versions or ArmVersions()

    def observe(self, arm: str, task_type: str, success: bool) -> None:
        stat = self.stats.get((arm, task_type))
        if stat is None:
            stat = self.stats[(arm, task_type)] = QualityStat()
        value = 1.0 if success else 0.0
        # A mean while there are fewer than 1/alpha runs, a moving average after.
        alpha, mean = self.policy.alpha, 1.0 / (stat.n + 1)
        weight = mean if mean > alpha else alpha  # max(alpha, mean)
        stat.ema = weight * value + (1 - weight) * stat.ema
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

    def observed_upper(self, arm: str, task_type: str) -> float | None:
        """The Wilson upper bound of the observed average (None: not enough runs)."""
        stat = self.stats.get((arm, task_type))
        if stat is None or stat.n < self.policy.min_observations:
            return None
        return wilson_upper(stat.ema, effective_runs(stat.n, self.policy.alpha))

    def blend(self, arm: str, task_type: str, heuristic: float) -> float:
        return self._mix(self.observed(arm, task_type), heuristic)

    def blend_upper(self, arm: str, task_type: str, heuristic: float) -> float:
        """The blend with the observed part at its upper bound: what the floor checks."""
        return self._mix(self.observed_upper(arm, task_type), heuristic)

    def fit_terms(
        self, arm: str, task_type: str, heuristic: float
    ) -> tuple[float | None, float, float]:
        """(observed, blend, blend_upper) with one look-up, as the router reads them."""
        stat = self.stats.get((arm, task_type))
        if stat is None or stat.n < self.policy.min_observations:
            return None, heuristic, heuristic
        upper = wilson_upper(stat.ema, effective_runs(stat.n, self.policy.alpha))
        return stat.ema, self._mix(stat.ema, heuristic), self._mix(upper, heuristic)

    def _mix(self, observed: float | None, heuristic: float) -> float:
        if observed is None:
            return heuristic
        w = self.policy.observed_weight
        return w * observed + (1 - w) * heuristic
