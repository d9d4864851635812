"""Figures over seeds: means with 95% intervals, and the verdict on the default strategy.

Seeds are paired (every policy sees the same arrivals and the same hidden
outcomes), so comparisons between two policies use the interval of the
per-seed difference, which is far narrower than the overlap of two
separate intervals would suggest.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factoryd.simulate.loop import Tally
from factoryd.simulate.policies import BASELINES, ORACLE

#: Two-sided 95% Student t quantiles by degrees of freedom (1..30); 1.96 beyond.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

#: The figures reported per policy, in table order.
FIGURES = (
    "succeeded",
    "never_done",
    "usd",
    "usd_per_success",
    "succeeded_per_usd",
    "limit_hits",
    "wasted_runs",
    "wait_p50_s",
    "wait_p95_s",
    "value",
    "regret",
    "runs",
)
#: The oracle must be reached to this share of its tasks succeeded.
ORACLE_SHARE = 0.9


def t95(n: int) -> float:
    if n < 2:
        return 0.0
    return _T95[n - 2] if n - 1 <= len(_T95) else 1.96


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% interval of the mean (Student t; a point for one seed)."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return {"mean": mean, "ci95": [mean, mean]}
    half = t95(len(values)) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def per_seed(t: Tally, oracle: Tally | None) -> dict[str, float]:
    return {
        "succeeded": t.succeeded,
        "never_done": t.never_done,
        "usd": t.usd,
        "usd_per_success": t.usd / max(t.succeeded, 1),
        "succeeded_per_usd": succeeded_per_usd(t),
        "limit_hits": t.limit_hits,
        "wasted_runs": t.wasted_runs,
        "wait_p50_s": _percentile(t.waits, 0.5),
        "wait_p95_s": _percentile(t.waits, 0.95),
        "value": t.value,
        "regret": (oracle.succeeded - t.succeeded) if oracle is not None else 0.0,
        "runs": t.runs,
    }


#: Succeeded per USD divides by at least this much spend, so a free policy
#: (local or subscription arms only) scores a large finite figure, not 1/0.
USD_FLOOR = 0.01


def succeeded_per_usd(t: Tally) -> float:
    return t.succeeded / max(t.usd, USD_FLOOR)


#: The two metrics issue 17 judges on (both: higher is better).
CRITERIA = ("succeeded", "succeeded_per_usd")


@dataclass(frozen=True, slots=True)
class Comparison:
    """The default minus one baseline on one metric, paired by seed."""

    baseline: str
    metric: str
    mean: float
    lo: float
    hi: float
    #: The baseline's mean, to say the difference as a share of it.
    base: float

    @property
    def worse(self) -> bool:
        """The default is below the baseline beyond the 95% interval."""
        return self.hi < 0 and self.mean < -1e-9

    @property
    def better(self) -> bool:
        return self.lo > 0 and self.mean > 1e-9

    def text(self) -> str:
        share = f" ({self.mean / self.base:+.1%})" if abs(self.base) > 1e-12 else ""
        fmt = "{:+.1f}" if self.metric == "succeeded" else "{:+.2f}"
        return (
            f"{self.metric} {fmt.format(self.mean)}{share} "
            f"[{fmt.format(self.lo)}, {fmt.format(self.hi)}] vs {self.baseline}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "ci95": [self.lo, self.hi],
            "baseline_mean": self.base,
            "worse": self.worse,
            "better": self.better,
        }


def compare(
    baseline: str, metric: str, mine: Sequence[float], theirs: Sequence[float]
) -> Comparison:
    """Mean and 95% interval of the per-seed difference mine - theirs."""
    s = summary([a - b for a, b in zip(mine, theirs, strict=True)])
    lo, hi = s["ci95"]
    return Comparison(baseline, metric, s["mean"], lo, hi, statistics.fmean(theirs))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Issue 17's criterion for one scenario, computed from paired seeds.

    It holds when, against every baseline, the default is not behind on
    tasks succeeded beyond the interval, no baseline is ahead on succeeded
    per USD unless the default is ahead of it on tasks succeeded (a cheaper
    baseline that succeeds as often is better on both), and the default
    reaches ORACLE_SHARE of the oracle's tasks succeeded. A baseline that
    is cheaper per success but succeeds less, beyond the interval, is a
    trade-off, reported but not a failure.
    """

    default: str
    #: Per baseline, per metric in CRITERIA.
    comparisons: tuple[Comparison, ...]
    #: Default's tasks succeeded as a share of the oracle's (None: no oracle run).
    oracle_share: float | None

    def _by(self, baseline: str, metric: str) -> Comparison:
        return next(c for c in self.comparisons if c.baseline == baseline and c.metric == metric)

    @property
    def baselines(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.baseline for c in self.comparisons))

    @property
    def failures(self) -> tuple[Comparison, ...]:
        out = []
        for b in self.baselines:
            succ, eff = self._by(b, "succeeded"), self._by(b, "succeeded_per_usd")
            if succ.worse:
                out.append(succ)
            if eff.worse and not succ.better:
                out.append(eff)
        return tuple(out)

    @property
    def tradeoffs(self) -> tuple[Comparison, ...]:
        """Baselines cheaper per success that succeed less (not a failure)."""
        return tuple(
            self._by(b, "succeeded_per_usd")
            for b in self.baselines
            if self._by(b, "succeeded_per_usd").worse and self._by(b, "succeeded").better
        )

    @property
    def oracle_ok(self) -> bool:
        return self.oracle_share is None or self.oracle_share >= ORACLE_SHARE

    @property
    def holds(self) -> bool:
        return not self.failures and self.oracle_ok

    def as_dict(self) -> dict[str, Any]:
        per: dict[str, dict[str, Any]] = {}
        for c in self.comparisons:
            per.setdefault(c.baseline, {})[c.metric] = c.as_dict()
        return {
            "default": self.default,
            "holds": self.holds,
            "failures": [c.text() for c in self.failures],
            "tradeoffs": [c.text() for c in self.tradeoffs],
            "oracle_share": self.oracle_share,
            "oracle_ok": self.oracle_ok,
            "paired_difference": per,
        }

    def sentence(self) -> str:
        """One line: holds, or fails with which baseline, which metric, by how much."""
        share = (
            ""
            if self.oracle_share is None
            else f"{self.oracle_share:.1%} of the oracle's succeeded"
        )
        if self.holds:
            extra = ""
            if self.tradeoffs:
                extra = "; trade-offs (cheaper, succeed less): " + ", ".join(
                    f"{c.baseline} {c.mean:+.2f}/USD" for c in self.tradeoffs
                )
            return f"{self.default}: HOLDS: {share}{extra}"
        why = [c.text() for c in self.failures]
        if not self.oracle_ok:
            why.append(f"under {ORACLE_SHARE:.0%} of the oracle")
        return f"{self.default}: FAILS: {'; '.join(why)}; {share}"


def verdict(rows: Mapping[str, Sequence[Mapping[str, float]]], default: str) -> Verdict | None:
    """Judge `default` against every baseline present, as issue 17 asks."""
    if default not in rows:
        return None
    mine = rows[default]
    comparisons = []
    for name in BASELINES:
        if name not in rows:
            continue
        theirs = rows[name]
        for metric in CRITERIA:
            comparisons.append(
                compare(name, metric, [r[metric] for r in mine], [r[metric] for r in theirs])
            )
    share = None
    if ORACLE in rows:
        oracle = statistics.fmean(r["succeeded"] for r in rows[ORACLE])
        mean = statistics.fmean(r["succeeded"] for r in mine)
        share = mean / oracle if oracle > 0 else 1.0
    return Verdict(default, tuple(comparisons), share)
