"""Fleet-wide config tasks (`fleet = "once"`): one fire per fleet, one service host.

Imported only with a `[fleet]` table. Every host has the task in its
config; the fleet's database (state/fleet/once.py) decides which host runs
it. All of this runs on the loop; the database calls go through the
fleet's worker (scheduled fires) or the heartbeat (services), never waited
for on the loop. The runbook asks `admit` before it routes such a task:

* a scheduled task's fire (due at the cron instant, the same on every
  host) is claimed with `claim_fire(task, due)` before its first run: the
  host whose insert wins runs it (restarts of that fire need no new claim);
  the others drop the fire and wait for the next. Fires missed while a
  host was down are not caught up beyond the latest due time: some other
  host was up to run them. While the database does not answer, no fire
  is claimed and the task waits (a fire run twice is the worse mistake);
* a service is held under a lease like a queue claim: every heartbeat
  each host asks `hold(task, attempt)`; the holder renews, a free or
  lapsed service is taken (the attempt number is the fencing token), any
  other host gets None. A host runs the service only while its hold is
  confirmed and its lease, on its own clock, has not run out: a lost or
  lapsed hold stops the run (and the task waits, not cancelled), so when
  the holder dies, another host takes it over once the lease lapses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from factoryd.core.lifecycle import TERMINAL, TaskPhase
from factoryd.core.outcome import Outcome
from factoryd.reconcile.fleet import TROUBLE
from factoryd.state.fleet.errors import FleetError
from factoryd.state.fleet.once import Holding
from factoryd.units.timefmt import iso

if TYPE_CHECKING:
    from factoryd.config.model import Config
    from factoryd.reconcile.fleet import FleetLink
    from factoryd.reconcile.reconciler import Reconciler
    from factoryd.reconcile.runstate import TaskState

WAITING_FOR_HOLD = "fleet: runs on one host at a time; another host holds it"


@dataclass(slots=True)
class _Held:
    attempt: int
    #: This host's monotonic deadline: the lease minus a tenth, from when the
    #: renewal was sent (the database's lease began no earlier).
    until: float


class OnceBook:
    def __init__(self, rec: Reconciler, link: FleetLink, logger: FilteringBoundLogger) -> None:
        self.rec = rec
        self.link = link
        self.logger = logger
        self.lease = link.store.settings.lease
        #: Scheduled tasks: the fire due time asked for, and the answer (None: asking).
        self.fires: dict[str, tuple[float, bool | None]] = {}
        #: Services this host holds.
        self.held: dict[str, _Held] = {}
        #: Services this host stopped because its hold ended: waiting, not cancelled.
        self._stopped: set[str] = set()
        #: The config's fleet-wide services, recomputed when the config changes.
        self._config: Config | None = None
        self._services: tuple[str, ...] = ()

    # -- the runbook's question ----------------------------------------------------

    def admit(self, rt: TaskState) -> bool:
        """May this host start `rt` now? (Always, unless it is fleet-wide.)"""
        if rt.spec.fleet != "once":
            return True
        if rt.spec.schedule is not None:
            return self._fire(rt)
        held = self.held.get(rt.name)
        if held is not None and time.monotonic() < held.until:
            return True
        if rt.reason != WAITING_FOR_HOLD:
            self.rec.table.set_phase(rt, TaskPhase.PENDING, WAITING_FOR_HOLD)
        return False

    def _fire(self, rt: TaskState) -> bool:
        due = rt.last_fire
        if due is None:
            return True  # started by an operator, not by the schedule
        asked = self.fires.get(rt.name)
        if asked is None or asked[0] != due:
            self.fires[rt.name] = (due, None)
            self.link.work.post(
                "fire",
                partial(self._claim_fire, rt.name, due),
                partial(self._fire_answer, rt.name, due),
            )
            return False
        if asked[1] is None:
            return False
        if asked[1]:
            return True
        # Another host runs this fire: drop it (and any older fire caught up with it).
        rt.pending_fires = 0
        self.rec.table.set_phase(
            rt, TaskPhase.WAITING, f"fleet: the fire at {iso(due)} ran on another host"
        )
        return False

    def _claim_fire(self, task: str, due: float) -> bool | None:
        """In the worker: True if this host runs the fire; None if the database is away."""
        try:
            return self.link.store.once.claim_fire(task, due)
        except (*TROUBLE, FleetError):
            return None
        except Exception as exc:  # asked again later, never waited on forever
            self.logger.error("fleet.fire_claim_failed", task=task, error=type(exc).__name__)
            return None

    def _fire_answer(self, task: str, due: float, won: bool | None) -> None:
        if self.fires.get(task) != (due, None):
            return
        if won is None:
            del self.fires[task]  # asked again by a later pass
            return
        self.fires[task] = (due, won)
        if won:
            self.logger.info("fleet.fire_claimed", task=task, due=iso(due))
        self.link.on_answer(task)

    # -- services: the heartbeat's side ------------------------------------------------

    def hold_requests(self) -> list[tuple[str, int | None]]:
        """The services to hold or renew this heartbeat, with the attempt held."""
        out: list[tuple[str, int | None]] = []
        for name in self.services():
            rt = self.rec.tasks.get(name)
            if rt is None or (rt.phase in TERMINAL and name not in self._stopped):
                continue  # gave up, failed or cancelled: not a candidate
            held = self.held.get(name)
            if held is None and rt.phase is TaskPhase.STOPPED:
                continue  # held by an operator here: never take it (a holder keeps it)
            out.append((name, held.attempt if held else None))
        return out

    def holds_answered(self, answers: dict[str, Holding | None], sent_at: float) -> None:
        """The heartbeat's holds came back (on the loop)."""
        woke = False
        for task, got in answers.items():
            had = self.held.get(task)
            if got is None:
                if had is not None:
                    del self.held[task]
                    self.logger.warning("fleet.once_lost", task=task, attempt=had.attempt)
                continue
            self.held[task] = _Held(got.attempt, sent_at + self.lease * 0.9)
            if had is None or had.attempt != got.attempt:
                woke = True
                self.logger.info(
                    "fleet.once_held", task=task, attempt=got.attempt, took_from=got.took_from
                )
        if woke:
            self.rec.wake("fleet")

    def each_pass(self, now_m: float) -> None:
        """Stop the runs of services this host no longer holds; let them wait again."""
        if not self.held and not self._stopped and not self.services():
            return
        for name, held in list(self.held.items()):
            if now_m >= held.until:
                del self.held[name]
                self.logger.warning("fleet.once_lapsed", task=name, attempt=held.attempt)
        tasks = self.rec.tasks
        for name in self.services():
            rt = tasks.get(name)
            if name in self.held or rt is None or rt.run is None:
                continue
            run = self.rec.runs.get(rt.run)
            if run is None or run.stop_reason is not None:
                continue
            self._stopped.add(name)
            self.rec.book.stop(
                run, Outcome.CANCELLED, "fleet: this host no longer holds the service"
            )
        for name in list(self._stopped):
            rt = tasks.get(name)
            if rt is None:
                self._stopped.discard(name)
            elif rt.run is None and rt.phase is TaskPhase.CANCELLED:
                self._stopped.discard(name)
                self.rec.table.reset(name)
                self.rec.table.set_phase(rt, TaskPhase.PENDING, WAITING_FOR_HOLD)

    def services(self) -> tuple[str, ...]:
        """The config's fleet-wide services (cached per config)."""
        config = self.rec.config
        if config is not self._config:
            self._config = config
            self._services = tuple(
                s.name for s in config.tasks if s.fleet == "once" and s.schedule is None
            )
        return self._services

    def releases(self) -> list[tuple[str, int]]:
        """Shutting down: the services to give up at once (another host takes them)."""
        out = [(name, held.attempt) for name, held in self.held.items()]
        self.held.clear()
        return out
