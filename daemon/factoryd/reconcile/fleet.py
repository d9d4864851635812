"""The reconciler's side of a fleet: shared pools in the decision path and settlement.

Imported only when the config has a `[fleet]` table. Hooks on the
router's ledger and engine and on the pass. They run on the loop (the one
owner of run state) but never wait on the database: each hands its call
to the fleet's worker (reconcile/fleetwork.py) and, where an answer
matters, takes it on a later pass:

* before a pass starts runs, `before_starts` mirrors the latest view of
  the fleet's pools (usage, fleet-wide holds, windows, limits) into the
  router's in-memory ledger, so every host scores arms against the
  fleet's scarcity, not its own, and asks the worker for a newer view;
* every reservation that passes the router's local check is confirmed by
  `gate` in the shared ledger (all-or-nothing, on the database's clock).
  The first time, the gate posts the reserve and refuses every arm of the
  task (it stays pending; the pass goes on with other tasks); the answer
  wakes the loop, and the next pass's gate returns the granted reservation
  or the fleet's refusal, on which the router moves to its next arm exactly
  as after a local refusal. The local hold is kept under the fleet's id, so
  the journal, recovery and settlement all name the one reservation;
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

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

import psycopg
from structlog.typing import FilteringBoundLogger

from factoryd.reconcile.fleetwork import Ask, Asks, FleetWork
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
        #: The latest view the worker read, not mirrored yet.
        self._fresh: LedgerView | None = None
        self._viewing = False
        #: Set once the schema is in place and this host's pools are synced.
        self.ready = False
        #: The worker that makes every database call the loop needs (fleetwork.py).
        self.work = FleetWork(self._job_failed)
        self.asks = Asks()
        #: Called on the loop when a reservation's answer came back for a task
        #: (the service clears the task's retry delay and wakes the loop).
        self.on_answer: Callable[[str], None] = lambda _task: None
        #: False holds a fleet-wide task back on this host (reconcile/fleetonce.py).
        self.admit: Callable[[str], bool] = lambda _task: True
        #: Worker-side only (touched by jobs, one at a time): limits and
        #: outcomes not yet sent.
        self._limits: list[_PendingLimit] = []
        self._limits_waiting = False
        self._unsent: list[ArmOutcome] = []
        #: Outcomes of this pass (loop side), posted once per pass.
        self._outcomes: list[ArmOutcome] = []
        #: The durable queue's loop side (reconcile/fleetqueue.py), and the
        #: service's submit that enqueues (both set by service/fleetqueue.py).
        self.queue: QueueHooks | None = None
        self.submit: Callable[[dict[str, Any], str, str], Awaitable[Any]] | None = None
        #: Counts for status and tests.
        self.refused = 0
        self.outage_refusals = 0
        self.asked = 0

    def attach(self, engine: RoutingEngine) -> None:
        engine.ledger.gate = self.gate
        engine.ledger.on_settle = self.on_settle
        engine.ledger.on_limit = self.on_limit
        engine.on_outcome = self.on_outcome
        self._arms = engine.arms

    def _job_failed(self, kind: str, exc: BaseException) -> None:
        if not isinstance(exc, TROUBLE):
            self.logger.error("fleet.job_failed", job=kind, error=" ".join(str(exc).split())[:300])

    # -- before routing --------------------------------------------------------

    def before_starts(self, engine: RoutingEngine) -> None:
        """Show the router the fleet's pools (a pass is about to start runs): the
        latest view the worker read, and ask for a newer one (never waits)."""
        if not self.ready:
            return
        if self._limits_waiting:
            self.work.post("limits", self._send_limits)
        if not self._viewing:
            self._viewing = True
            self.work.post("view", self._read_view, self._got_view)
        fresh, self._fresh = self._fresh, None
        if fresh is not None:
            self.view = fresh
            mirror(engine.ledger, fresh)

    def _read_view(self) -> LedgerView | None:
        try:
            return self.store.ledger.view()
        except TROUBLE:
            return None  # the gate refuses shared reservations meanwhile

    def _got_view(self, view: LedgerView | None) -> None:
        self._viewing = False
        if view is not None:
            self._fresh = view

    # -- reserving ---------------------------------------------------------------

    def gate(self, res: Reservation) -> Reservation | Refusal:
        """Confirm a reservation the local ledger granted, in the fleet's ledger.

        Never waits: the first call for a task posts the reserve to the worker
        and refuses (every arm of the task, until the answer is back); the call
        after the answer takes it."""
        first = next(iter(res.charges), "")
        if not self.admit(res.task):
            return Refusal(first or res.arm, RejectReason.POOL_LIMITED, "fleet: not this host's")
        ask = self.asks.get(res.task)
        if ask is not None:
            if ask.answer is None:
                return Refusal(
                    first or ask.arm,
                    RejectReason.POOL_LIMITED,
                    f"waiting for the fleet's ledger to confirm arm {ask.arm}",
                )
            self.asks.pop(res.task)
            if ask.arm == res.arm and ask.charges == dict(res.charges):
                return self._answered(res, ask)
            if isinstance(ask.answer, Reservation):  # the router chose otherwise now
                self._undo(ask.rid)
        if not res.charges:
            return res  # an arm that draws on no pool shares nothing
        if not self.ready:
            return self._outage(res, first, "not connected yet")
        if not self.store.db.connected:
            return self._outage(res, first, "the database did not answer")
        rid = f"{self.host}/{uuid.uuid4().hex[:16]}"
        ttl = max(res.expires_at - res.created_at, 1.0)
        ask = Ask(res.arm, dict(res.charges), rid)
        self.asks.add(res.task, ask)
        self.asked += 1
        self.work.post(
            "reserve",
            partial(self._reserve, res.arm, res.task, dict(res.charges), ttl, rid),
            partial(self._got_answer, res.task, ask),
            fallback=partial(self.store.outbox.rollback, rid),
        )
        return Refusal(first, RejectReason.POOL_LIMITED, f"asking the fleet's ledger for {res.arm}")

    def asking(self, task: str) -> bool:
        """True while `task` waits for the fleet's answer (it is not blocked)."""
        ask = self.asks.get(task)
        return ask is not None and ask.answer is None

    def _reserve(
        self, arm: str, task: str, charges: dict[str, float], ttl: float, rid: str
    ) -> Reservation | Refusal | str:
        """In the worker: the shared ledger's all-or-nothing reserve."""
        db = self.store.db
        was_connected = db.connected
        try:
            return self.store.ledger.reserve(arm, task, charges, ttl, res_id=rid)
        except TROUBLE as exc:
            if was_connected or db.connected:
                # The hold may have been written before the answer was lost: undo it.
                self.store.outbox.rollback(rid)
            return str(exc) or type(exc).__name__
        except FleetError as exc:
            first = next(iter(charges), "")
            return Refusal(first, RejectReason.POOL_EXHAUSTED, f"fleet ledger: {exc}")
        except Exception as exc:  # an answer the task can act on, never a wait forever
            self._job_failed("reserve", exc)
            return f"the fleet's ledger failed: {type(exc).__name__}"

    def _got_answer(self, task: str, ask: Ask, answer: Reservation | Refusal | str) -> None:
        """On the loop: the worker's answer to a reserve."""
        ask.answer = answer
        ask.answered_at = time.monotonic()
        if self.asks.get(task) is not ask:  # dropped meanwhile: undo a grant
            if isinstance(answer, Reservation):
                self._undo(ask.rid)
            return
        self.on_answer(task)

    def _answered(self, res: Reservation, ask: Ask) -> Reservation | Refusal:
        answer = ask.answer
        first = next(iter(res.charges), "")
        if isinstance(answer, Reservation):
            self.store.allowance.reset()
            return replace(res, id=ask.rid)
        if isinstance(answer, Refusal):
            self.refused += 1
            return answer
        return self._outage(res, first, str(answer))

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
    # settled, lost, or never prepared. Each posts its database call.

    def on_settle(self, rid: str, actual: Mapping[str, float] | None) -> None:
        """A reservation was committed (`actual` usage) or rolled back (None)."""
        if not rid or rid == FLEET_HOLD:
            return
        committed = None if actual is None else dict(actual)
        if committed is None and rid.startswith(LOCAL_PREFIX):
            return  # the fleet never held it
        if not self.ready:  # the schema may not exist yet: keep it for the flush
            self._keep(rid, committed)
            return
        self.work.post(
            "settle",
            partial(self._settle, rid, committed),
            fallback=partial(self._keep, rid, committed),
        )

    def on_limit(self, pools: list[str], until: float | None, reason: str) -> None:
        """A run met a usage limit: hold its pools for every host."""
        if pools:
            self._limits_waiting = True
            limit = _PendingLimit(list(pools), until, reason)
            self.work.post("limits", partial(self._send_limits, limit))

    def on_outcome(self, arm: str, task_type: str, ok: bool, seconds: float, tokens: int) -> None:
        """A run taught the router something (only what the arm did): the fleet too."""
        self._outcomes.append(ArmOutcome(arm, task_type, ok, seconds, tokens))
        spec = self._arms.get(arm)
        if ok and spec is not None and self.view is not None:
            struck = [p for p in spec.pools if (s := self.view.pools.get(p)) and s.strikes]
            if struck:
                self.work.post("strikes", partial(self.store.ledger.clear_strikes, struck))

    def _undo(self, rid: str) -> None:
        """Roll back a fleet grant no run will use (kept in the outbox at shutdown)."""
        self.work.post(
            "settle", partial(self._settle, rid, None), fallback=partial(self._keep, rid, None)
        )

    def _settle(self, rid: str, committed: dict[str, float] | None) -> None:
        """In the worker: settle the fleet's hold, or keep it for the flush."""
        try:
            if committed is None:
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

    def _send_limits(self, limit: _PendingLimit | None = None) -> None:
        """In the worker: hold the limits seen for every host (kept while away)."""
        if limit is not None:
            self._limits.append(limit)
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
        self._limits_waiting = False

    def _record(self, batch: list[ArmOutcome]) -> None:
        """In the worker: send outcomes to the fleet's learning (kept, bounded, if away)."""
        self._unsent = (self._unsent + batch)[-1000:]
        try:
            self.store.learning.record(self._unsent)
        except TROUBLE:
            return
        self._unsent = []

    def after_pass(self, now_m: float) -> None:
        """Keep the queue's claims; send the pass's outcomes to the fleet's learning;
        roll back granted holds no start took."""
        if self.queue is not None:
            self.queue.each_pass(now_m)
        for _task, ask in self.asks.stale(time.monotonic()):
            if isinstance(ask.answer, Reservation):
                self._undo(ask.rid)
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        self.work.post("learning", partial(self._record, batch))


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
