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


class PoolQuotes:
    def __init__(self) -> None:
        self.current: dict[str, PoolQuote] = {}

    def refresh(self, ledger: PoolLedger, now: float) -> dict[str, PoolQuote]:
        """Every pool's quote at `now`; the returned dict is a snapshot."""
        current = self.current
        get = current.get
        pools = ledger.pools
        for name, state in pools.items():
            quote = get(name)
            if (
                quote is None
                or now >= quote.until
                or quote.used != state.used
                or quote.reserved != state.reserved
                or quote.limited_until != state.limited_until
                or quote.window_end != state.window_end
            ):
                current[name] = _quote(ledger, name, state, now)
        if len(current) != len(pools):
            for gone in current.keys() - pools.keys():
                del current[gone]
        return current.copy()


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
