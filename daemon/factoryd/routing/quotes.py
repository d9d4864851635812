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
    key: tuple[float, ...]
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
        for name, state in ledger.pools.items():
            key = (state.used, state.reserved, state.limited_until or 0.0, state.window_end or 0.0)
            quote = current.get(name)
            if quote is None or quote.key != key or now >= quote.until:
                current[name] = _quote(ledger, name, state, key, now)
        if len(current) != len(ledger.pools):
            for gone in current.keys() - ledger.pools.keys():
                del current[gone]
        return dict(current)


def _quote(
    ledger: PoolLedger, name: str, state: PoolState, key: tuple[float, ...], now: float
) -> PoolQuote:
    multiplier = ledger.multiplier(name, now)
    until = math.inf
    if state.limited_until is not None and now < state.limited_until:
        until = state.limited_until
    if state.window_end is not None and state.window_start is not None:
        discount_from = state.window_end - ledger.discount_window(state)
        until = min(until, discount_from if now < discount_from else state.window_end)
        steps = ledger.scarcity_policy.pace_steps
        until = min(until, pace_step(state.window_start, state.window_end, now, steps)[1])
    if multiplier is None:
        return PoolQuote(key, until, ledger.scarcity_policy.max_multiplier, -math.inf)
    return PoolQuote(key, until, multiplier, state.remaining())
