"""The router's answer for one run: the chosen arm, the ranking and every rejection.

A decision is taken on every run start, but read in full only when someone
asks why (`factoryd explain`, `route`, a blocked task's reason). So the
ranking is kept in the compact form the router sorted, together with the
pools' multipliers at that instant, and `Candidate` objects with their
score breakdown are built from it on first read. What a reader sees is
exactly what the router saw: the arms' views are immutable and the
multipliers are a copy.

`Rejection` lives with the request model (model.py), below both the arm
views that make rejections and this module that reports them, so the two
need not import each other; it is re-exported here for readers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from factoryd.routing.armview import ArmView
from factoryd.routing.ledger import Reservation
from factoryd.routing.model import Rejection, RejectReason
from factoryd.routing.scoring import Components
from factoryd.units.timefmt import iso

#: Runners-up named in a rationale; the full ranking is in `to_dict`.
RATIONALE_RUNNERS_UP = 5
#: Rejections that say least about why a task cannot run now, in the order
#: they come last in a rationale (the others keep the router's order first).
_LAST = {RejectReason.EXCLUDED: 1, RejectReason.DISABLED: 2, RejectReason.NOT_ALLOWED: 3}


@dataclass(frozen=True, slots=True)
class Candidate:
    arm: str
    score: float
    components: Components
    below_quality: bool = False


#: One scored arm as the router sorted it: (-score, tie-break rank, view).
#: A plain tuple because one is made per arm per decision and sorts natively.
Ranked = tuple[float, int, ArmView]


def _candidate(entry: Ranked, multipliers: Mapping[str, float]) -> Candidate:
    neg_score, _, view = entry
    scarcity, scarce_pool = 1.0, None
    pools = [p for p in view.arm.pools if p in multipliers]
    for i, pool in enumerate(pools):
        if i == 0 or multipliers[pool] > scarcity:
            scarcity, scarce_pool = multipliers[pool], pool
    assert view.components is not None, "a rejected arm is never ranked"
    components = view.components._replace(scarcity=scarcity, scarce_pool=scarce_pool)
    return Candidate(view.arm.name, -neg_score, components, view.below_quality)


@dataclass(frozen=True, slots=True)
class Decision:
    """The router's answer for one run, with everything needed to explain it."""

    task: str
    strategy: str
    at: float
    arm: str | None
    reservation: Reservation | None
    ranking: Sequence[Ranked]
    rejections: tuple[Rejection, ...]
    degraded: bool = False
    forced: bool = False
    charges: dict[str, float] = field(default_factory=dict)
    #: Each pool's scarcity multiplier when the decision was taken.
    multipliers: Mapping[str, float] = field(default_factory=dict)
    #: An escalation (some arms excluded for this run): ranked by task fit first.
    by_fit: bool = False

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return tuple(_candidate(r, self.multipliers) for r in self.ranking)

    @property
    def chosen(self) -> Candidate | None:
        entry = next((r for r in self.ranking if r[2].arm.name == self.arm), None)
        return None if entry is None else _candidate(entry, self.multipliers)

    def rationale(self) -> str:
        """One paragraph a person can read in a log line."""
        # The decisive rejections first (a limited pool, a resting arm), the arms the
        # task could never use last: a blocked task's reason is cut to fit a table.
        decisive = sorted(self.rejections, key=lambda r: _LAST.get(r.reason, 0))
        rejected = "; ".join(f"{r.arm}: {r.detail}" for r in decisive)
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
        if self.by_fit:
            parts.append("Escalation: ranked by task fit first, then score")
        others = [r for r in self.ranking if r[2].arm.name != self.arm]
        if others:
            named = ", ".join(f"{r[2].arm.name} {-r[0]:.4g}" for r in others[:RATIONALE_RUNNERS_UP])
            more = len(others) - RATIONALE_RUNNERS_UP
            parts.append("Runners-up: " + named + (f" and {more} more" if more > 0 else ""))
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
            "by_fit": self.by_fit,
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

    def render(self) -> str:
        """The whole decision as a table a person reads (`factoryd route`)."""
        d = self.to_dict()
        lines = [
            f"task {d['task']}  strategy {d['strategy']}  at {d['at']}",
            f"chosen: {d['arm'] or 'none'}" + ("  (degraded)" if d["degraded"] else ""),
        ]
        if d["reservation"]:
            charges = ", ".join(f"{p} {a:g}" for p, a in d["reservation"]["charges"].items())
            # `route` runs nothing and reserves nothing: it says what a run would hold.
            lines.append(f"would reserve: {charges or 'nothing'} (route reserves nothing)")
        if d["ranking"]:
            lines.append("")
            head = (
                f"{'#':>2} {'arm':<20} {'score':>10} {'fit':>6} {'fit<=':>6} {'thru':>6} "
                f"{'lat':>6} {'cons':>6} {'cost':>9} {'scarcity':>8}"
            )
            lines.append(head)
            for r in d["ranking"]:
                c = r["components"]
                lines.append(
                    f"{r['rank']:>2} {r['arm']:<20} {r['score']:>10.4g} {c['task_fit']:>6.3f} "
                    f"{c['fit_upper']:>6.3f} "
                    f"{c['throughput']:>6.3f} {c['latency']:>6.3f} {c['consumption']:>6.3f} "
                    f"{c['effective_cost']:>9.4g} {c['scarcity']:>8.3g}"
                    + ("  below quality floor" if r["below_quality"] else "")
                )
        if d["rejections"]:
            lines.append("")
            lines.append("rejected:")
            for r in d["rejections"]:
                lines.append(f"  {r['arm']:<20} {r['reason']:<18} {r['detail']}")
        lines.append("")
        lines.append(d["rationale"])
        return "\n".join(lines)


__all__ = ["RATIONALE_RUNNERS_UP", "Candidate", "Decision", "Ranked"]
