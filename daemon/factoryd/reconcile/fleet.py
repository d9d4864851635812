"""The reconciler's side of a fleet: shared pools in the decision path and settlement.

Imported only when the config has a `[fleet]` table. Hooks on the
router's ledger and engine and on the pass, all on the loop (the one owner
of run state), each a short transaction on the fleet's database:

* before a pass starts runs, `before_starts` mirrors the fleet's pools
  (usage, fleet-wide holds, windows, limits) into the router's in-memory
  ledger, so every host scores arms against the fleet's scarcity, not its
  own;
* every reservation that passes the router's local check is confirmed by
  `gate` in the shared ledger (all-or-nothing, on the database's clock):
  refused there, the router moves on to its next arm exactly as after a
  local refusal. The local hold is kept under the fleet's id, so the
  journal, recovery and settlement all name the one reservation;
* every commit and rollback of the router's ledger (`on_settle`: a run
  that ended, was lost, or was never prepared) settles the fleet's hold in
  pool units, and every limit a run met (`on_limit`) is held on the pool
  for every host;
* what a run taught the router (`on_outcome`: only what the arm did) is
  sent to the fleet's learning, one batch per pass (`after_pass`), which
  also keeps the durable queue's claims (reconcile/fleetqueue.py).

While the database is unreachable: no reservation on a shared pool, unless
`[fleet] outage_allowance` covers it (a local id, `local/...`); settlements
and limits are kept (the outbox on disk, limits in memory) and applied when
the database answers again. A reserve whose answer was lost is rolled back
through the outbox, so a hold this host never learned of does not linger.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import psycopg
from structlog.typing import FilteringBoundLogger

from factoryd.routing.engine import RoutingEngine
from factoryd.routing.ledger import PoolLedger, Refusal, Reservation
from factoryd.routing.model import RejectReason
from factoryd.state.fleet.errors import FleetError, FleetUnavailable
from factoryd.state.fleet.learning import ArmOutcome
from factoryd.state.fleet.pools import LedgerView
from factoryd.state.fleet.store import FleetStore

#: What a fleet call may raise that the loop survives: the database is away,
#: or answered with an error (the call did not happen; retried or refused).
TROUBLE = (FleetUnavailable, psycopg.Error)

#: The hold, in a mirrored pool, of every reservation other hosts have in flight.
FLEET_HOLD = "@fleet"
#: Reservation ids granted from the outage allowance (the fleet never saw them).
LOCAL_PREFIX = "local/"


class QueueHooks(Protocol):
    """The queue's loop side (reconcile/fleetqueue.py `QueueBook`), called each pass."""

    def each_pass(self, now_m: float) -> None: ...


@dataclass(slots=True)
class _PendingLimit:
    pools: list[str]
    until: float | None
    reason: str


class FleetLink:
    def __init__(self, store: FleetStore, logger: FilteringBoundLogger) -> None:
        self.store = store
        self.host = store.settings.host
        self.logger = logger
        self.view: LedgerView | None = None
        #: Set once the schema is in place and this host's pools are synced.
        self.ready = False
        #: Limits seen while the database was away: held fleet-wide once it is back.
        self._limits: list[_PendingLimit] = []
        #: Outcomes to teach the fleet (sent once per pass, see `after_pass`).
        self._outcomes: list[ArmOutcome] = []
        #: The durable queue's loop side (reconcile/fleetqueue.py), and the
        #: service's submit that enqueues (both set by service/fleetqueue.py).
        self.queue: QueueHooks | None = None
        self.submit: Callable[[dict[str, Any], str, str], Awaitable[Any]] | None = None
        #: Counts for status and tests.
        self.refused = 0
        self.outage_refusals = 0

    def attach(self, engine: RoutingEngine) -> None:
        engine.ledger.gate = self.gate
        engine.ledger.on_settle = self.on_settle
        engine.ledger.on_limit = self.on_limit
        engine.on_outcome = self.on_outcome
        self._arms = engine.arms

    # -- before routing --------------------------------------------------------

    def before_starts(self, engine: RoutingEngine) -> None:
        """Show the router the fleet's pools (a pass is about to start runs)."""
        if not self.ready:
            return
        self._send_limits()
        try:
            view = self.store.ledger.view()
        except TROUBLE:
            return  # the gate refuses shared reservations meanwhile
        self.view = view
        mirror(engine.ledger, view)

    # -- reserving ---------------------------------------------------------------

    def gate(self, res: Reservation) -> Reservation | Refusal:
        """Confirm a reservation the local ledger granted, in the fleet's ledger."""
        if not res.charges:
            return res  # an arm that draws on no pool shares nothing
        first = next(iter(res.charges))
        if not self.ready:
            return self._outage(res, first, "not connected yet")
        db = self.store.db
        was_connected = db.connected
        rid = f"{self.host}/{uuid.uuid4().hex[:16]}"
        ttl = max(res.expires_at - res.created_at, 1.0)
        try:
            got = self.store.ledger.reserve(res.arm, res.task, res.charges, ttl, res_id=rid)
        except TROUBLE as exc:
            if was_connected or db.connected:
                # The hold may have been written before the answer was lost: undo it.
                self.store.outbox.rollback(rid)
            return self._outage(res, first, str(exc))
        except FleetError as exc:
            return Refusal(first, RejectReason.POOL_EXHAUSTED, f"fleet ledger: {exc}")
        if isinstance(got, Refusal):
            self.refused += 1
            return got
        self.store.allowance.reset()
        return replace(res, id=rid)

    def _outage(self, res: Reservation, pool: str, why: str) -> Reservation | Refusal:
        local = self.store.allowance.reserve(res.charges)
        if local is not None:
            self.logger.warning(
                "fleet.outage_allowance", arm=res.arm, task=res.task, charges=res.charges
            )
            return replace(res, id=LOCAL_PREFIX + local.split("/", 1)[-1])
        self.outage_refusals += 1
        return Refusal(
            pool,
            RejectReason.POOL_LIMITED,
            f"pool {pool} is shared by the fleet and its database is unreachable "
            f"({why.split(';')[0][:120]}); no outage_allowance left",
        )

    # -- settling ------------------------------------------------------------------
    # The router's ledger and engine call these (routing/ledger.py `on_settle`,
    # `on_limit`; routing/engine.py `on_outcome`), on the loop, for every run:
    # settled, lost, or never prepared.

    def on_settle(self, rid: str, actual: Mapping[str, float] | None) -> None:
        """A reservation was committed (`actual` usage) or rolled back (None)."""
        if not rid or rid == FLEET_HOLD:
            return
        self._settle(rid, None if actual is None else dict(actual))

    def on_limit(self, pools: list[str], until: float | None, reason: str) -> None:
        """A run met a usage limit: hold its pools for every host."""
        if pools:
            self._limits.append(_PendingLimit(list(pools), until, reason))
            self._send_limits()

    def on_outcome(self, arm: str, task_type: str, ok: bool, seconds: float, tokens: int) -> None:
        """A run taught the router something (only what the arm did): the fleet too."""
        self._outcomes.append(ArmOutcome(arm, task_type, ok, seconds, tokens))
        spec = self._arms.get(arm)
        if ok and spec is not None and self.view is not None:
            struck = [p for p in spec.pools if (s := self.view.pools.get(p)) and s.strikes]
            if struck:
                with contextlib.suppress(*TROUBLE):
                    self.store.ledger.clear_strikes(struck)

    def _settle(self, rid: str, committed: dict[str, float] | None) -> None:
        if not self.ready:  # the schema may not exist yet: keep it for the flush
            self._keep(rid, committed)
            return
        try:
            if committed is None:
                if not rid.startswith(LOCAL_PREFIX):
                    self.store.ledger.rollback(rid)
            else:
                self.store.ledger.commit(rid, committed)
        except TROUBLE:
            self._keep(rid, committed)

    def _keep(self, rid: str, committed: dict[str, float] | None) -> None:
        if committed is None:
            if rid.startswith(LOCAL_PREFIX):
                return  # the fleet never held it
            self.store.outbox.rollback(rid)
        else:
            self.store.outbox.commit(rid, committed)
        self.logger.info("fleet.settlement_kept", res_id=rid, pending=len(self.store.outbox))

    def _send_limits(self) -> None:
        while self._limits:
            limit = self._limits[0]
            try:
                if limit.until is None:
                    self.store.ledger.hold_limit_unknown(limit.pools, limit.reason)
                else:
                    self.store.ledger.hold_limit(limit.pools, limit.until, limit.reason)
            except TROUBLE:
                return
            self._limits.pop(0)
            self.logger.info("fleet.limit_shared", pools=limit.pools, until=limit.until)

    def after_pass(self, now_m: float) -> None:
        """Keep the queue's claims; send the pass's outcomes to the fleet's learning."""
        if self.queue is not None:
            self.queue.each_pass(now_m)
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        try:
            self.store.learning.record(batch)
        except TROUBLE:
            self._outcomes = batch[-1000:] + self._outcomes  # bounded; retried next pass


def mirror(ledger: PoolLedger, view: LedgerView) -> None:
    """Copy the fleet's numbers into the router's ledger. This host's own holds
    stay (they are the fleet's holds under the same ids); every other host's
    appear as one hold, `FLEET_HOLD`."""
    for name, state in ledger.pools.items():
        shared = view.pools.get(name)
        if shared is None:
            continue
        state.used = shared.used
        state.window_start, state.window_end = shared.window_start, shared.window_end
        state.limited_until = shared.limited_until
        state.limited_reason = shared.limited_reason + (
            f", reported by {shared.limited_by}" if shared.limited_by else ""
        )
        state.strikes = shared.strikes
        own = {rid: a for rid, a in state.holds.items() if rid in ledger.reservations}
        in_fleet = math.fsum(a for rid, a in own.items() if not rid.startswith(LOCAL_PREFIX))
        others = shared.reserved - in_fleet
        if others > 1e-9:
            own[FLEET_HOLD] = others
        state.holds = own
        state.reserved = math.fsum(own.values())
    ledger._next_event = -math.inf
