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

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from factoryd.routing.armview import ArmView
from factoryd.routing.explain import render_table
from factoryd.routing.ledger import Reservation
from factoryd.routing.model import Rejection, RejectReason
from factoryd.routing.scoring import Components
from factoryd.units.timefmt import iso

#: Runners-up named in a rationale; the full ranking is in `to_dict`.
RATIONALE_RUNNERS_UP = 5
#: True for a standing that is a ranked entry (a tuple), not a Rejection; in C,
#: as filtering a few hundred standings per decision in Python costs.
IS_RANKED: Callable[[object], TypeGuard[Ranked]] = tuple.__instancecheck__  # type: ignore[assignment]
_IS_REJECTION: Callable[[object], TypeGuard[Rejection]] = Rejection.__instancecheck__  # type: ignore[assignment]
#: Rankings longer than this have their runners-up found without a full sort.
NSMALLEST_FROM = 128
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


def _scarcest(view: ArmView, multipliers: Mapping[str, float]) -> tuple[float, str | None]:
    """The largest multiplier among the arm's pools, and its pool (1.0, None: no pool)."""
    scarcity, scarce_pool = 1.0, None
    pools = [p for p in view.arm.pools if p in multipliers]
    for i, pool in enumerate(pools):
        if i == 0 or multipliers[pool] > scarcity:
            scarcity, scarce_pool = multipliers[pool], pool
    return scarcity, scarce_pool


def _candidate(entry: Ranked, multipliers: Mapping[str, float]) -> Candidate:
    neg_score, _, view = entry
    scarcity, scarce_pool = _scarcest(view, multipliers)
    assert view.components is not None, "a rejected arm is never ranked"
    components = view.components._replace(scarcity=scarcity, scarce_pool=scarce_pool)
    return Candidate(view.arm.name, -neg_score, components, view.below_quality)


class Basis:
    """What the router had in hand when it chose, kept for the explanation.

    The live path needs only the chosen arm and its reservation; sorting
    the whole ranking, listing every rejection and copying the pools'
    multipliers is done from this on first read. Everything here is
    immutable or a copy the router no longer touches, so a read long after
    the decision gives what an immediate read would have.
    """

    __slots__ = (
        "_ranked",
        "below",
        "chosen",
        "entries",
        "floor",
        "not_allowed",
        "ordered",
        "quotes",
        "refused",
        "task_type",
    )

    def __init__(
        self,
        ranked: list[Ranked] | None,
        chosen: Ranked | None,
        not_allowed: tuple[Rejection, ...],
        entries: list[Any],
        below: list[Ranked],
        refused: list[Rejection],
        quotes: Mapping[str, Any],
        task_type: str,
        floor: float,
        ordered: bool = False,
    ) -> None:
        # The scored arms in the standings' order (None: listed from `entries`).
        self._ranked = ranked
        self.chosen = chosen
        self.not_allowed = not_allowed
        #: Every arm's standing: a ranked tuple or its own Rejection.
        self.entries = entries
        #: Feasible arms set aside by the quality floor (sorted on first read).
        self.below = below
        #: Arms whose reservation the ledger refused, in the order tried.
        self.refused = refused
        #: Each pool's quote (a `multiplier` attribute) at the decision.
        self.quotes = quotes
        self.task_type = task_type
        self.floor = floor
        #: `ranked` is already in the decision's order (a cascade's plan): never sorted.
        self.ordered = ordered

    @property
    def ranked(self) -> list[Ranked]:
        """The scored arms, in the standings' order until the decision sorts them."""
        if self._ranked is None:
            self._ranked = list(filter(IS_RANKED, self.entries))
        return self._ranked


class Decision:
    """The router's answer for one run, with everything needed to explain it.

    Immutable by convention. `ranking`, `rejections` and `multipliers` are
    given whole by a caller that builds a decision itself (recovery,
    tests), or worked out on first read from the router's `Basis`.
    """

    __slots__ = (
        "_basis",
        "_held",
        "_multipliers",
        "_ranking",
        "_rationale",
        "_rejections",
        "arm",
        "at",
        "by_fit",
        "charges",
        "degraded",
        "forced",
        "reservation",
        "strategy",
        "task",
    )

    def __init__(
        self,
        task: str,
        strategy: str,
        at: float,
        arm: str | None,
        reservation: Reservation | None,
        ranking: Sequence[Ranked] | None = (),
        rejections: Sequence[Rejection] | None = (),
        degraded: bool = False,
        forced: bool = False,
        charges: dict[str, float] | None = None,
        multipliers: Mapping[str, float] | None = None,
        by_fit: bool = False,
        basis: Basis | None = None,
    ) -> None:
        self.task = task
        self.strategy = strategy
        self.at = at
        self.arm = arm
        self.reservation = reservation
        self.degraded = degraded
        self.forced = forced
        self.charges: dict[str, float] = {} if charges is None else charges
        #: An escalation (some arms excluded for this run): ranked by task fit first.
        self.by_fit = by_fit
        self._basis = basis
        self._ranking = None if basis is not None else ranking
        self._rejections = None if basis is not None else tuple(rejections or ())
        self._multipliers = None if basis is not None else (multipliers or {})
        self._rationale: str | None = None
        # The reservation as it was held: the ledger may drop pools from it later.
        self._held = (
            None
            if reservation is None
            else (reservation.id, dict(reservation.charges), reservation.expires_at)
        )

    # -- read on demand --------------------------------------------------------

    @property
    def ranking(self) -> Sequence[Ranked]:
        """Every scored arm, best first: (-score, tie-break rank, view)."""
        if self._ranking is None:
            b = self._basis
            assert b is not None
            self._ranking = b.ranked if b.ordered else sort_ranked(b.ranked, self.by_fit)
        return self._ranking

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        if self._rejections is None:
            assert self._basis is not None
            self._rejections = _rejections(self._basis)
        return self._rejections

    @property
    def multipliers(self) -> Mapping[str, float]:
        """Each pool's scarcity multiplier when the decision was taken."""
        if self._multipliers is None:
            assert self._basis is not None
            self._multipliers = {p: q.multiplier for p, q in self._basis.quotes.items()}
        return self._multipliers

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        multipliers = self.multipliers
        return tuple(_candidate(r, multipliers) for r in self.ranking)

    @property
    def chosen(self) -> Candidate | None:
        entry = self._chosen_entry()
        return None if entry is None else _candidate(entry, self.multipliers)

    @property
    def score(self) -> float | None:
        """The chosen arm's score (None: no arm), read without explaining the decision."""
        entry = self._chosen_entry()
        return None if entry is None else -entry[0]

    def _chosen_entry(self) -> Ranked | None:
        if self._basis is not None and self._ranking is None:
            return self._basis.chosen if self.arm is not None else None
        return next((r for r in self.ranking if r[2].arm.name == self.arm), None)

    def _leaders(self, count: int) -> Sequence[Ranked]:
        """The first `count` of the ranking, without sorting all of it if it can."""
        basis = self._basis
        # Sorting in C beats a heap in Python up to about a hundred entries.
        if self._ranking is not None or basis is None or basis.ordered:
            return self.ranking[:count]
        if len(basis.ranked) <= NSMALLEST_FROM:
            return sort_ranked(basis.ranked, self.by_fit)[:count]
        if self.by_fit:
            return heapq.nsmallest(count, basis.ranked, key=by_fit_key)
        return heapq.nsmallest(count, basis.ranked)

    def rationale(self) -> str:
        """One paragraph a person can read in a log line (made once, then kept)."""
        if self._rationale is None:
            self._rationale = self._make_rationale()
        return self._rationale

    def _make_rationale(self) -> str:
        # The decisive rejections first (a limited pool, a resting arm), the arms the
        # task could never use last: a blocked task's reason is cut to fit a table.
        decisive = sorted(self.rejections, key=lambda r: _LAST.get(r.reason, 0))
        rejected = "; ".join(f"{r.arm}: {r.detail}" for r in decisive)
        chosen_entry = self._chosen_entry()
        if self.arm is None or chosen_entry is None:
            if not self.rejections:
                return f"No arm available for task {self.task}"
            return f"All arms rejected for task {self.task}: {rejected}"
        # What the chosen Candidate would say, without building it.
        c = chosen_entry[2].components
        assert c is not None, "a rejected arm is never ranked"
        multipliers = self._multipliers
        if multipliers is None:  # only the chosen arm's pools, not every pool's
            assert self._basis is not None
            quotes = self._basis.quotes
            pools = chosen_entry[2].arm.pools
            multipliers = {p: quotes[p].multiplier for p in pools if p in quotes}
        scarcity, scarce_pool = _scarcest(chosen_entry[2], multipliers)
        cost = c._replace(scarcity=scarcity).effective_cost  # as the Candidate's
        parts = [
            f"Selected {self.arm} for task {self.task} (strategy {self.strategy}, "
            f"score {-chosen_entry[0]:.4g}; fit {c.task_fit:.3f}, throughput {c.throughput:.3f}, "
            f"latency {c.latency:.3f}, consumption {c.consumption:.3f}, "
            f"cost {cost:.4g} x{scarcity:.3g} scarcity"
            + (f" from {scarce_pool}" if scarce_pool else "")
            + ")"
        ]
        if self.forced:
            parts.append("Forced by request")
        if self.degraded:
            parts.append("Degraded: no arm met the quality floor")
        if self.by_fit:
            parts.append("Escalation: ranked by task fit first, then score")
        # The arm names in a ranking are distinct, so the others are all but one.
        total = len(self._basis.ranked) if self._ranking is None and self._basis else None
        if total is None:
            total = len(self.ranking)
        leaders = self._leaders(RATIONALE_RUNNERS_UP + 1)
        others = [r for r in leaders if r[2].arm.name != self.arm][:RATIONALE_RUNNERS_UP]
        if others:
            named = ", ".join(f"{r[2].arm.name} {-r[0]:.4g}" for r in others)
            more = total - 1 - RATIONALE_RUNNERS_UP
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
            if self._held is None
            else {
                "id": self._held[0],
                "charges": dict(self._held[1]),
                "expires_at": iso(self._held[2]),
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
        return render_table(self.to_dict())


def by_fit_key(entry: Ranked) -> tuple[float, float, int]:
    """An escalation's order: task fit first, then score, then tie-break rank."""
    components = entry[2].components
    assert components is not None, "a rejected arm is never ranked"
    return (-components.task_fit, entry[0], entry[1])


def sort_ranked(ranked: list[Ranked], by_fit: bool) -> list[Ranked]:
    """Sort the router's scored arms in place into the decision's order."""
    ranked.sort()
    if by_fit:
        ranked.sort(key=by_fit_key)
    return ranked


def best_ranked(ranked: list[Ranked], by_fit: bool) -> Ranked:
    """The first of `sort_ranked(ranked, by_fit)` without sorting: entries are
    totally ordered (each has its own tie-break rank), so the least is first."""
    return min(ranked, key=by_fit_key) if by_fit else min(ranked)


def _rejections(basis: Basis) -> tuple[Rejection, ...]:
    """The rejections in the order the router reports them: the task's own
    exclusions, each arm's standing in turn, the quality floor's, then the
    ledger's refusals in the order the arms were tried."""
    out = [*basis.not_allowed, *filter(_IS_REJECTION, basis.entries)]
    if basis.below:
        basis.below.sort()
        out.extend(
            Rejection(
                view.arm.name,
                RejectReason.BELOW_QUALITY,
                f"quality {_fit(view):.3f} (at most {_upper(view):.3f}) below the "
                f"{basis.task_type} floor {basis.floor:.2f}",
            )
            for _, _, view in basis.below
        )
    out.extend(basis.refused)
    return tuple(out)


def _fit(view: ArmView) -> float:
    assert view.components is not None, "a rejected arm is never ranked"
    return view.components.task_fit


def _upper(view: ArmView) -> float:
    assert view.components is not None, "a rejected arm is never ranked"
    return view.components.fit_upper
