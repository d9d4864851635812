"""What a host may spend on its own while the fleet's database is away.

By default nothing: with the database unreachable no shared pool can be
checked, so no new run that draws on one starts (no overspend). An
operator who prefers a bounded risk to a stall sets `[fleet]
outage_allowance = { pool = amount }`: each host may then reserve up to
that much per pool, locally, per outage. The runs' usage is committed
through the outbox when the database returns (a commit of a reservation
the fleet never saw records its usage), so the fleet's numbers catch up.
The worst case overspend is the allowance times the number of hosts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping


class OutageAllowance:
    def __init__(self, budget: Mapping[str, float]) -> None:
        self.budget = dict(budget)
        self.spent: dict[str, float] = {}

    def reserve(self, charges: Mapping[str, float]) -> str | None:
        """A local reservation id if every pool's allowance covers its charge, else None."""
        for pool, amount in charges.items():
            if self.spent.get(pool, 0.0) + amount > self.budget.get(pool, 0.0):
                return None
        for pool, amount in charges.items():
            self.spent[pool] = self.spent.get(pool, 0.0) + amount
        return f"local/{uuid.uuid4().hex[:16]}"

    def reset(self) -> None:
        """The database is back: the next outage starts with the whole allowance."""
        self.spent.clear()
