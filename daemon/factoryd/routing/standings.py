"""Where every arm stands for one request shape, kept up to date between decisions.

An arm's standing is either its score entry (ready to rank) or the reason
it is out (its own hard filter, or a pool that cannot take its charge).
It depends on the arm's view (armview.py) and on the quotes of the arm's
pools (quotes.py). Between two decisions few of those move: the run that
just settled changed one arm's telemetry and its pools' numbers. So each
decision re-examines only the arms whose view changed (from the change
log in versions.py), whose view expired, or that draw on a pool whose
quote changed, and reuses every other standing as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from factoryd.routing.armview import ArmView, ViewContext, build_view
from factoryd.routing.decision import Ranked
from factoryd.routing.ledger import Refusal
from factoryd.routing.model import Rejection
from factoryd.routing.quotes import PoolQuote
from factoryd.routing.versions import ArmVersions

Standing = Ranked | Rejection
#: The ledger's refusal of charges at an instant (PoolLedger.refusal).
Refuse = Callable[[dict[str, float], float], Refusal | None]


class Standings:
    """The standings of a fixed list of arms for one request shape."""

    def __init__(
        self,
        views: list[tuple[int, str, ArmView]],
        not_allowed: tuple[Rejection, ...],
        exponent: float,
        context: ViewContext,
        *,
        forced: bool = False,
    ) -> None:
        #: (tie-break rank, arm name, view), in the order the request lists arms;
        #: the rank orders equal scores by preference, config order, then name.
        self.views = views
        self.not_allowed = not_allowed
        self.exponent = exponent
        #: What the views are rebuilt with, and whether they are a forced arm's.
        self.context = context
        self.forced = forced
        self.position = {name: i for i, (_, name, _) in enumerate(views)}
        self.by_pool: dict[str, list[int]] = {}
        for i, (_, _, view) in enumerate(views):
            for pool, _amount in view.fit.charges:
                self.by_pool.setdefault(pool, []).append(i)
        self.entries: list[Standing | None] = []
        #: Each entry's first field (minus its score), inf for a rejected arm: the
        #: best arm is found among plain floats (Standings.best).
        self.scores: list[float] = []
        #: Arms whose entry is ranked but below the task type's quality floor.
        self.below: set[int] = set()
        self._seen_version = -1
        self._seen_quotes: Mapping[str, PoolQuote] = {}
        self._terms: dict[str, float] = {}
        self._expires = -math.inf

    def update(
        self,
        now: float,
        quotes: Mapping[str, PoolQuote],
        versions: ArmVersions,
        refuse: Refuse,
    ) -> None:
        """Bring every standing up to `now`, re-examining only what moved."""
        changed, seen_version = versions.changes(self._seen_version)
        full = changed is None or now >= self._expires or not self.entries
        if full:
            dirty: range | set[int] = range(len(self.views))
            self._terms = {p: q.multiplier**self.exponent for p, q in quotes.items()}
            self.entries = [None] * len(self.views)
            self.scores = [math.inf] * len(self.views)
        else:
            assert changed is not None
            # In C: the changed arms' positions, None for an arm not in these standings.
            found = set(map(self.position.get, changed))
            found.discard(None)
            seen = self._seen_quotes
            if quotes is not seen:  # the same snapshot: no pool moved (quotes.py)
                for pool, quote in quotes.items():
                    if seen.get(pool) is not quote:
                        self._terms[pool] = quote.multiplier**self.exponent
                        found.update(self.by_pool.get(pool, ()))
            dirty = found  # type: ignore[assignment]  # None discarded: ints only
        counts = versions.counts
        expires = math.inf if full else self._expires
        views, context, forced = self.views, self.context, self.forced
        entries, scores, below, terms = self.entries, self.scores, self.below, self._terms
        for i in dirty:
            rank, name, view = views[i]
            # Unpacked: a named tuple's fields read by name take the slow path.
            arm, fit, rejection, _, numerator, below_quality, version, valid_until = view
            current = counts.get(name, 0)  # the counter now (read directly: versions.py)
            if now >= valid_until or current != version:
                view = build_view(arm, fit, now, context, forced, current)
                views[i] = (rank, name, view)
                _, _, rejection, _, numerator, below_quality, _, valid_until = view
            if valid_until < expires:  # min(), without the call
                expires = valid_until
            # The arm's standing: its own rejection, a pool's refusal, or its entry.
            entry: Standing | None = rejection
            if rejection is None:
                term = 0.0  # the scarcest pool's term; a discount may bring it below 1
                for pool, amount in fit.charges:
                    left = quotes[pool].room
                    if amount > left or left <= 0:
                        # The quote says no; the ledger words the exact refusal.
                        refusal = refuse(dict(fit.charges), now)
                        if refusal is not None:
                            entry = Rejection(name, refusal.reason, refusal.detail)
                            break
                    pool_term = terms[pool]
                    if pool_term > term:
                        term = pool_term
                else:
                    score = -numerator / (term or 1.0)
                    entry = (score, rank, view)
                    entries[i] = entry
                    scores[i] = score
                    if below_quality:
                        below.add(i)
                    else:
                        below.discard(i)
                    continue
            entries[i] = entry
            scores[i] = math.inf
            below.discard(i)
        self._expires = expires
        self._seen_version = seen_version
        self._seen_quotes = quotes

    def best(self) -> Ranked | None:
        """The least ranked entry, found among the floats of `scores` when it is
        the only one with the least (ranked entries otherwise compare on their
        tie-break rank: None, and the caller compares the entries themselves)."""
        scores = self.scores
        low = min(scores, default=math.inf)
        if low < math.inf and scores.count(low) == 1:  # NaN and inf fail the first test
            entry = self.entries[scores.index(low)]
            assert entry.__class__ is tuple, "an arm with a score is ranked"
            return entry
        return None
