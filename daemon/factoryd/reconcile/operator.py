"""What an operator does to a running daemon: hold, start, restart, release.

Each function runs inside the loop (handed in by the control socket through
the command queue), the one place that may change task and run state.

* `hold` (`factoryd stop`): the task is stopped and stays stopped, across
  reloads and daemon restarts, until `start`; the names held are kept in
  the journal (meta key `operator_holds`), written with the pass's batch.
* `start`: lifts the hold and lets a task that ended (cancelled, gave up,
  failed, succeeded) run again.
* `restart`: stops the current run and starts a new one as soon as it has
  ended: no backoff, no restart counted, nothing taught to the router (a
  cancelled run teaches nothing; see settle.lesson).
* `release`: lifts a pool's limit hold (and its strikes) or an arm's limit
  and health cooldown now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from factoryd.core.lifecycle import TERMINAL, RestartBook, TaskPhase
from factoryd.core.outcome import Outcome
from factoryd.reconcile.table import HELD
from factoryd.state import journal as j
from factoryd.units.timefmt import iso

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler
    from factoryd.reconcile.runstate import TaskState
    from factoryd.routing.engine import RoutingEngine

#: The journal's meta key that holds the names the operator stopped.
HOLDS_KEY = "operator_holds"


class OperatorError(Exception):
    """The action cannot be done; the message says why (no such task, ...)."""


def _task(rec: Reconciler, name: str) -> TaskState:
    rt = rec.table.tasks.get(name)
    if rt is None:
        raise OperatorError(f"no task or submission named {name!r} in the daemon")
    return rt


def _save_holds(rec: Reconciler) -> None:
    rec.batch.op(j.op_meta(HOLDS_KEY, json.dumps(sorted(rec.table.held))))


def restore_holds(rec: Reconciler, journal: j.Journal) -> list[str]:
    """At start-up (after recovery, before the first pass): stopped tasks stay stopped."""
    try:
        names = json.loads(journal.meta(HOLDS_KEY) or "[]")
    except json.JSONDecodeError:
        names = []
    held = [n for n in names if isinstance(n, str)]
    rec.table.held.update(held)
    for name in held:
        rt = rec.table.tasks.get(name)
        if rt is not None and rt.phase is not TaskPhase.DISABLED:
            rt.retry_at = None
            rec.table.set_phase(rt, TaskPhase.STOPPED, HELD)
    return held


def hold(rec: Reconciler, name: str) -> dict[str, Any]:
    rt = _task(rec, name)
    table = rec.table
    already = name in table.held
    table.held.add(name)
    _save_holds(rec)
    run = rec.runs.get(rt.run) if rt.run else None
    rt.retry_at = None
    if rt.phase is not TaskPhase.STOPPED:
        table.set_phase(rt, TaskPhase.STOPPED, HELD)
    table.wake("command")
    return {
        "task": name,
        "held": True,
        "already": already,
        "stopping_run": run.run_id if run else None,
    }


def start(rec: Reconciler, name: str) -> dict[str, Any]:
    rt = _task(rec, name)
    table = rec.table
    was_held = name in table.held
    table.held.discard(name)
    if was_held:
        _save_holds(rec)
    if rt.run is not None and rt.phase is TaskPhase.RUNNING:
        return {"task": name, "started": False, "running": rt.run, "was_held": was_held}
    if rt.phase is TaskPhase.DISABLED:
        raise OperatorError(f"task {name!r} is disabled in the config (enabled = false)")
    if rt.phase is TaskPhase.STOPPED or rt.phase in TERMINAL:
        rt.book = RestartBook.empty()
        rt.retry_at = None
        rt.exclude.clear()
        # A scheduled task waits for its next fire again; `restart` runs it now.
        table._init_phase(rt, rec.clock.wall(), "started by operator")
    else:
        rt.retry_at = None  # pending or backing off: now, not after the backoff
        table.index(rt)
    table.wake("command")
    return {"task": name, "started": True, "phase": str(rt.phase), "was_held": was_held}


def restart(rec: Reconciler, name: str) -> dict[str, Any]:
    rt = _task(rec, name)
    table = rec.table
    if rt.phase is TaskPhase.DISABLED:
        raise OperatorError(f"task {name!r} is disabled in the config (enabled = false)")
    if name in table.held:
        table.held.discard(name)
        _save_holds(rec)
    run = rec.runs.get(rt.run) if rt.run else None
    if run is not None:
        run.restart = True
        rec.book.stop(run, Outcome.CANCELLED, "restarted by operator")
        if rt.phase is TaskPhase.STOPPED:
            table.set_phase(rt, TaskPhase.RUNNING, f"run {run.run_id} restarting")
        return {"task": name, "stopping_run": run.run_id, "restart": "when it has ended"}
    if rt.phase is TaskPhase.STOPPED or rt.phase in TERMINAL:
        rt.book = RestartBook.empty()
    rt.exclude.clear()
    table.restarted(rt)
    return {"task": name, "stopping_run": None, "restart": "now"}


def release(engine: RoutingEngine, name: str, now: float) -> dict[str, Any]:
    """Lift a pool's limit hold, or an arm's limit and cooldown (raises OperatorError)."""
    ledger = engine.ledger
    lifted: dict[str, Any] = {}
    if name in ledger.pools:
        st = ledger.pools[name]
        lifted = {
            "kind": "pool",
            "limited_until": iso(st.limited_until) if st.is_limited(now) else None,
            "reason": st.limited_reason if st.is_limited(now) else "",
            "strikes": st.strikes,
        }
        st.limited_until = None
        st.limited_reason = ""
        st.strikes = 0
    elif name in engine.arms:
        tel = engine.telemetry.arms.get(name)
        lifted = {"kind": "arm", "limited_until": None, "backoff_until": None, "faults": 0}
        if tel is not None:
            if tel.limited_until is not None and tel.limited_until > now:
                lifted["limited_until"] = iso(tel.limited_until)
            if tel.backoff_until is not None and tel.backoff_until > now:
                lifted["backoff_until"] = iso(tel.backoff_until)
            lifted["faults"] = tel.consecutive_faults
            tel.limited_until = None
            tel.limited_reason = ""
            tel.backoff_until = None
            tel.consecutive_faults = 0
            engine.telemetry.versions.bump(name)
        still = [p for p in engine.arms[name].pools if p in ledger.pools]
        lifted["pools_still_limited"] = [p for p in still if ledger.pools[p].is_limited(now)]
    else:
        pools = ", ".join(sorted(ledger.pools)) or "none"
        arms = ", ".join(sorted(engine.arms)) or "none"
        raise OperatorError(f"no pool or arm named {name!r} (pools: {pools}; arms: {arms})")
    ledger.advance(now)
    engine.router.forget()
    return {"name": name, **lifted}


@dataclass(frozen=True, slots=True)
class Who:
    """Who asked, as the kernel says (SO_PEERCRED), for logs."""

    uid: int | None
    pid: int | None

    @classmethod
    def of(cls, request: dict[str, Any]) -> Who:
        peer = request.get("_peer") or {}
        return cls(peer.get("uid"), peer.get("pid"))
