"""Show a host's router the fleet's pools: scarcity is the fleet's, not the host's.

The router is pure and reads the in-memory `PoolLedger`. In fleet mode the
daemon reads `SharedLedger.view()` each pass and mirrors it into that
ledger, so every host scores arms against the same fill levels, windows
and limits; the authoritative check is still the shared reserve. Local
holds of reservations still in flight on this host are kept; everything
the fleet holds appears as one hold named `FLEET_HOLD`.
"""

from __future__ import annotations

import math

from factoryd.routing.ledger import PoolLedger
from factoryd.state.fleet.pools import LedgerView

FLEET_HOLD = "@fleet"


def mirror_into(ledger: PoolLedger, view: LedgerView) -> list[str]:
    """Copy the fleet's numbers into `ledger`; returns the pools it has that the
    fleet does not (not yet synced by any host)."""
    missing = []
    for name, state in ledger.pools.items():
        shared = view.pools.get(name)
        if shared is None:
            missing.append(name)
            continue
        state.used = shared.used
        state.window_start, state.window_end = shared.window_start, shared.window_end
        state.limited_until = shared.limited_until
        state.limited_reason = shared.limited_reason
        state.strikes = shared.strikes
        own = {rid: amount for rid, amount in state.holds.items() if rid in ledger.reservations}
        if shared.reserved > 0:
            own[FLEET_HOLD] = shared.reserved
        state.holds = own
        state.reserved = math.fsum(own.values())
    # The ledger caches when its next window, limit or expiry falls due.
    ledger._next_event = -math.inf
    return missing
