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
        "limit_hits": t.limit_hits,
        "wasted_runs": t.wasted_runs,
        "wait_p50_s": _percentile(t.waits, 0.5),
        "wait_p95_s": _percentile(t.waits, 0.95),
        "value": t.value,
        "regret": (oracle.succeeded - t.succeeded) if oracle is not None else 0.0,
        "runs": t.runs,
    }


@dataclass(frozen=True, slots=True)
class Verdict:
    default: str
    #: Baselines with more tasks succeeded than the default, beyond the interval.
    more_succeeded: tuple[str, ...]
    #: Baselines with more tasks succeeded per USD, beyond the interval.
    cheaper: tuple[str, ...]
    #: Default's tasks succeeded as a share of the oracle's (None: no oracle run).
    oracle_share: float | None

    @property
    def dominated_by(self) -> tuple[str, ...]:
        return tuple(b for b in self.more_succeeded if b in self.cheaper)

    @property
    def wins(self) -> bool:
        share_ok = self.oracle_share is None or self.oracle_share >= ORACLE_SHARE
        return not self.more_succeeded and share_ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "default": self.default,
            "wins": self.wins,
            "more_succeeded": list(self.more_succeeded),
            "more_succeeded_per_usd": list(self.cheaper),
            "dominated_by": list(self.dominated_by),
            "oracle_share": self.oracle_share,
        }

    def sentence(self) -> str:
        share = "" if self.oracle_share is None else f"; {self.oracle_share:.0%} of the oracle's"
        if self.wins:
            extra = (
                f" ({', '.join(self.cheaper)} cheaper per success with fewer)"
                if self.cheaper
                else ""
            )
            return f"{self.default}: WINS: no baseline succeeds more{extra}{share}"
        why = []
        if self.more_succeeded:
            why.append(f"{', '.join(self.more_succeeded)} succeed more")
        if self.dominated_by:
            why.append(f"{', '.join(self.dominated_by)} better on both")
        if self.oracle_share is not None and self.oracle_share < ORACLE_SHARE:
            why.append(f"under {ORACLE_SHARE:.0%} of the oracle")
        return f"{self.default}: LOSES: {'; '.join(why)}{share}"


def _paired_better(mine: Sequence[float], theirs: Sequence[float]) -> bool:
    """Is `theirs` larger than `mine` beyond the 95% interval of the paired difference?"""
    diff = [b - a for a, b in zip(mine, theirs, strict=True)]
    s = summary(diff)
    return bool(s["ci95"][0] > 0 and s["mean"] > 1e-9)


def verdict(rows: Mapping[str, Sequence[Mapping[str, float]]], default: str) -> Verdict | None:
    """Judge `default` against every baseline present, as issue 17 asks."""
    if default not in rows:
        return None
    mine = rows[default]
    more, cheaper = [], []
    for name in BASELINES:
        if name not in rows:
            continue
        theirs = rows[name]
        if _paired_better([r["succeeded"] for r in mine], [r["succeeded"] for r in theirs]):
            more.append(name)
        # Succeeded per USD, compared as USD per success (lower is better; no 1/0).
        if _paired_better(
            [-r["usd_per_success"] for r in mine], [-r["usd_per_success"] for r in theirs]
        ):
            cheaper.append(name)
    share = None
    if ORACLE in rows:
        oracle = statistics.fmean(r["succeeded"] for r in rows[ORACLE])
        mean = statistics.fmean(r["succeeded"] for r in mine)
        share = mean / oracle if oracle > 0 else 1.0
    return Verdict(default, tuple(more), tuple(cheaper), share)
