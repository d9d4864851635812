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
        """The discounted success average (None: fewer than `min_observations` runs)."""
        return self.fit_terms(arm, task_type, 0.0)[0]

    def blend(self, arm: str, task_type: str, heuristic: float) -> float:
        return self.fit_terms(arm, task_type, heuristic)[1]

    def blend_upper(self, arm: str, task_type: str, heuristic: float) -> float:
        """The blend with the observed part at its upper bound: what the floor checks."""
        return self.fit_terms(arm, task_type, heuristic)[2]

    def fit_terms(
        self, arm: str, task_type: str, heuristic: float
    ) -> tuple[float | None, float, float]:
        """(observed, blend, blend_upper): the one definition of the blend.

        The observed average (None below `min_observations` runs); its blend
        with the heuristic prior, `observed_weight` to the observed part; and
        the same blend with the observed part at its Wilson upper bound, on
        the average's effective sample size: n runs while it is still a plain
        mean, at most (2 - alpha) / alpha (an EMA's effective size). One call,
        as the router reads all three whenever an arm's view is rebuilt (after
        every run of the arm); `blend`, `blend_upper` and `observed` read it.
        """
        stat = self.stats.get((arm, task_type))
        policy = self.policy
        if stat is None or stat.n < policy.min_observations:
            return None, heuristic, heuristic
        alpha, ema = policy.alpha, stat.ema
        runs = float(stat.n)
        if alpha > 0:  # min(runs, cap) as a comparison (the builtin costs more)
            cap = (2.0 - alpha) / alpha
            runs = cap if cap < runs else runs
        upper = wilson_upper(ema, runs)
        w = policy.observed_weight
        prior = (1 - w) * heuristic  # the same product in both blends
        return ema, w * ema + prior, w * upper + prior
