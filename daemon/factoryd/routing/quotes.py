"""Each pool's scarcity multiplier and room, quoted once and kept while true.

A decision reads every pool's multiplier and room. Both change only when
the pool's numbers change (a hold, a commit, a limit, a window reset) or
when the clock crosses a known instant (a limit ends, the use-it-or-lose-it
discount starts, a pacing step ends, the window ends). A quote is kept
until then, and a new quote is a new object, so a reader that remembers the quote it used can
tell by identity which pools moved since (see standings.py).
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import NamedTuple

from factoryd.routing.ledger import PoolLedger, PoolState
from factoryd.routing.pacing import pace_step


class PoolQuote(NamedTuple):
    #: The pool's numbers the quote was made from.
    used: float
    reserved: float
    limited_until: float | None
    window_end: float | None
    #: When the clock makes the quote untrue.
    until: float
    #: Scarcity multiplier; the maximum for a limited or exhausted pool.
    multiplier: float
    #: What a charge may take; -inf for a limited or exhausted pool.
    room: float


#: A pool's numbers a quote depends on, read in C for every pool at once.
_NUMBERS = attrgetter("used", "reserved", "limited_until", "window_end")


class PoolQuotes:
    """The current quote of every pool, and the last snapshot handed out.

    Most decisions find no pool changed: the numbers of every pool are read
    in one pass in C and compared as a whole with those the snapshot was
    quoted from, and the same snapshot is returned (a reader may compare it
    by identity: nothing moved). The ledger replaces its `pools` dict when
    pools are added or removed; the names are compared too, so a dict
    edited in place is noticed all the same.
    """

    def __init__(self) -> None:
        self.current: dict[str, PoolQuote] = {}
        self._snapshot: dict[str, PoolQuote] = {}
        self._pools: dict[str, PoolState] | None = None
        self._names: list[str] = []
        self._numbers: list[tuple[float, float, float | None, float | None]] = []
        #: The earliest instant a quote in the snapshot stops being true.
        self._until = -math.inf

    def refresh(self, ledger: PoolLedger, now: float) -> dict[str, PoolQuote]:
        """Every pool's quote at `now`; the returned dict is a snapshot, never
        changed afterwards, and the same object as last time if no quote changed."""
        pools = ledger.pools
        numbers = list(map(_NUMBERS, pools.values()))
        if (
            now < self._until
            and numbers == self._numbers
            and pools is self._pools
            and list(pools) == self._names
        ):
            return self._snapshot
        current = self.current
        get = current.get
        changed = False
        for (name, state), numbers_now in zip(pools.items(), numbers, strict=True):
            quote = get(name)
            if quote is None or now >= quote.until or quote[:4] != numbers_now:
                current[name] = _quote(ledger, name, state, now)
                changed = True
        if len(current) != len(pools):
            for gone in current.keys() - pools.keys():
                del current[gone]
            changed = True
        self._pools, self._names, self._numbers = pools, list(pools), numbers
        self._until = min([q.until for q in current.values()], default=math.inf)
        if changed:
            self._snapshot = current.copy()
        return self._snapshot


def _quote(ledger: PoolLedger, name: str, state: PoolState, now: float) -> PoolQuote:
    multiplier = ledger.multiplier(name, now)
    until = math.inf
    if state.limited_until is not None and now < state.limited_until:
        until = state.limited_until
    if state.window_end is not None and state.window_start is not None:
        discount_from = state.window_end - ledger.discount_window(state)
        until = min(until, discount_from if now < discount_from else state.window_end)
        steps = ledger.scarcity_policy.pace_steps
        until = min(until, pace_step(state.window_start, state.window_end, now, steps)[1])
    numbers = (state.used, state.reserved, state.limited_until, state.window_end)
    if multiplier is None:
        return PoolQuote(*numbers, until, ledger.scarcity_policy.max_multiplier, -math.inf)
    return PoolQuote(*numbers, until, multiplier, state.remaining())
