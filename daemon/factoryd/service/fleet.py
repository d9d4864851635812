"""Fleet mode in the daemon process: connect, heartbeat, replay, report.

Imported only when the config has a `[fleet]` table. `FleetService` builds
the fleet's storage (state/fleet/) and the reconciler's hooks
(reconcile/fleet.py), then runs beside the loop:

* connecting: the schema is created or migrated and the host registered,
  retried with backoff while the database is unreachable (the daemon runs
  meanwhile; shared pools take no new reservation until it is in);
* every heartbeat (a third of the lease; every second while the database
  is away): the host's heartbeat, the holds on fleet-wide services
  (reconcile/fleetonce.py), the pools' specs when the config changed, the
  outbox replayed when it holds settlements made during an outage, and the
  shared learning read back into the router's quality;
* before recovery, the claims this host's previous daemon held and the
  queue still gives it are kept, so their runs are adopted (`readopt`);
* `factoryd_fleet_connected` (1/0), `factoryd_fleet_outbox_pending`, and one
  `fleet.connected` / `fleet.disconnected` log event per transition;
* the `fleet_status` control operation behind `factoryd fleet status`;
* the durable queue's claimer and renewals (service/fleetqueue.py).

Every database call runs in a worker thread, never on the loop's thread:
the reconciler's reserves and settlements through its worker
(reconcile/fleetwork.py, started here), the heartbeat, claims and status
in anyio's threads.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial
from typing import Any

import anyio
import psycopg
from prometheus_client import Gauge
from structlog.typing import FilteringBoundLogger

from factoryd import __version__
from factoryd.config.model import Config
from factoryd.observe.metrics import Metrics
from factoryd.reconcile.fleet import FleetLink
from factoryd.reconcile.fleetonce import OnceBook
from factoryd.reconcile.reconciler import Reconciler
from factoryd.service import control
from factoryd.service.fleetqueue import QueueService
from factoryd.state.fleet.errors import FleetError, FleetUnavailable
from factoryd.state.fleet.learning import as_quality
from factoryd.state.fleet.store import FleetStore

#: Ended queue items and settlements are forgotten after this long.
PRUNE_EVERY = 3600.0
SETTLEMENTS_KEPT = 7 * 86400.0
#: How long the first pass waits for the database at start-up (seconds).
START_WAIT = 5.0
#: How long shutdown gives queued settlements to reach the database (then: the outbox).
DRAIN_WAIT = 5.0


class FleetService:
    def __init__(
        self, config: Config, rec: Reconciler, metrics: Metrics, logger: FilteringBoundLogger
    ) -> None:
        assert config.fleet is not None
        self.settings = config.fleet
        self.rec = rec
        self.logger = logger.bind(fleet_host=self.settings.host)
        registry = metrics.registry
        # The `host` label is the fleet's name for this host, so a fleet
        # dashboard can tell hosts apart whatever their scrape `instance` is.
        host = self.settings.host
        self.connected = Gauge(
            "factoryd_fleet_connected",
            "1 while the fleet's database answers, else 0",
            ["host"],
            registry=registry,
        ).labels(host)
        self.outbox_pending = Gauge(
            "factoryd_fleet_outbox_pending",
            "Settlements made during a database outage, not yet applied",
            ["host"],
            registry=registry,
        ).labels(host)
        self.claims = Gauge(
            "factoryd_fleet_claims",
            "Queue items this host holds a claim on",
            ["host"],
            registry=registry,
        ).labels(host)
        self.store = FleetStore(
            self.settings,
            config.daemon.state_dir,
            on_change=self._changed,
            quality_alpha=config.quality.alpha,
        )
        self.link = FleetLink(self.store, self.logger)
        self.link.attach(rec.engine)
        rec.fleet = self.link
        rec.on_pass.append(lambda: self.link.after_pass(rec.clock.mono()))
        self.link.on_answer = self._answered
        self.queue = QueueService(rec, self.store, self.link, self.logger)
        self.once = OnceBook(rec, self.link, self.logger)
        self.link.admit = self._admit
        # A task held back by the fleet waits (its answer wakes the loop): not "blocked".
        rec.book.held_back = lambda rt: not self.once.admit(rt) or self.link.asking(rt.name)
        rec.on_pass.append(lambda: self.once.each_pass(rec.clock.mono()))
        #: Set once connected (start-up waits for it a little, see `wait_ready`).
        self.ready = anyio.Event()
        self._synced: tuple[Any, ...] | None = None
        self._next_prune = 0.0
        self._warned = False
        if self.settings.inline_password():
            self.logger.warning(
                "fleet.inline_password",
                note="fleet.database holds a password in the config; use env:NAME or file:PATH",
            )

    def _changed(self, connected: bool, reason: str) -> None:
        """One log event per transition (called from whichever thread saw it)."""
        self.connected.set(1 if connected else 0)
        if connected:
            self.logger.info("fleet.connected", database=self.store.db.where)
        else:
            self.logger.warning("fleet.disconnected", database=self.store.db.where, reason=reason)

    def _admit(self, task: str) -> bool:
        rt = self.rec.tasks.get(task)
        return rt is None or self.once.admit(rt)

    def _answered(self, task: str) -> None:
        """A shared reservation's answer is back (on the loop): the task may start now."""
        rt = self.rec.tasks.get(task)
        if rt is not None:
            rt.retry_at = None
        self.rec.wake("fleet")

    # -- background ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect (retrying), then heartbeat until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.link.work.serve)
            await self._run()

    async def _run(self) -> None:
        delay = 0.5
        while not self.link.ready:
            try:
                await self.queue.in_thread(self._open)
            except FleetUnavailable:
                pass
            except (FleetError, psycopg.Error) as exc:  # a schema too new: an operator must act
                self.logger.error("fleet.open_failed", error=_line(exc))
            if not self.link.ready:
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.ready.set()
        await self.rec.run_in_loop(self.queue.stop_orphans)
        self.rec.wake("command")  # tasks held back while connecting may start now
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.queue.claimer)
            while True:
                started = time.monotonic()
                try:
                    await self.queue.renew()
                    await self._hold_services()
                    await self.queue.in_thread(self._chores)
                    learned = await self.queue.in_thread(self.learned)
                    await self.rec.run_in_loop(partial(self._adopt_learning, learned))
                except FleetUnavailable:
                    pass
                except (FleetError, psycopg.Error) as exc:
                    self.logger.error("fleet.heartbeat_failed", error=_line(exc))
                self.outbox_pending.set(len(self.store.outbox))
                self.claims.set(len(self.queue.book.held))
                spent = time.monotonic() - started
                # While the database is away, look again every second (its own
                # backoff spaces the real attempts), so the gate reopens soon after.
                every = self.settings.heartbeat if self.store.db.connected else 1.0
                await anyio.sleep(max(0.0, min(every, self.settings.heartbeat) - spent))

    async def _hold_services(self) -> None:
        """Take or renew this host's hold on each fleet-wide service (`fleet = "once"`)."""
        asks = self.once.hold_requests()
        if not asks:
            return
        sent = time.monotonic()
        hold = self.store.once.hold
        answers = await self.queue.in_thread(lambda: {t: hold(t, a) for t, a in asks})
        await self.rec.run_in_loop(partial(self.once.holds_answered, answers, sent))

    async def readopt(self) -> int:
        """Before recovery: keep the previous daemon's claims the queue still gives
        this host (service/fleetqueue.py); returns how many."""
        return await self.queue.readopt(START_WAIT)

    async def wait_ready(self, timeout: float = START_WAIT) -> None:
        """Start-up gives the database a moment before the first pass, so the
        config's tasks do not all block on "not connected yet" for nothing."""
        with anyio.move_on_after(timeout):
            await self.ready.wait()

    def _open(self) -> None:
        self.store.open(__version__, {"pid_started": time.time()})
        self._sync_pools()
        applied = self.store.flush()
        if applied:
            self.logger.info("fleet.outbox_applied", settlements=applied)
        self.link.ready = True
        self.logger.info("fleet.ready", host=self.settings.host, lease=self.settings.lease)

    def _sync_pools(self) -> None:
        pools = self.rec.config.pools
        key = tuple(pools)
        if key == self._synced:
            return
        differed = self.store.ledger.sync_pools(pools)
        if differed:
            self.logger.warning(
                "fleet.pool_spec_changed",
                pools=differed,
                note="this host's config differs from the fleet's; the last to start wins",
            )
        self._synced = key

    def _chores(self) -> None:
        if self.rec.config.fleet != self.settings and not self._warned:
            self._warned = True
            self.logger.warning("fleet.settings_changed", note="[fleet] takes effect at restart")
        self._sync_pools()
        if len(self.store.outbox):
            applied = self.store.flush()
            if applied:
                self.logger.info(
                    "fleet.outbox_applied", settlements=applied, left=len(self.store.outbox)
                )
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            self.store.ledger.prune_settlements(SETTLEMENTS_KEPT)
            self.store.queue.prune(self.rec.config.daemon.retain_runs)

    def learned(self) -> list[tuple[str, str, float, int]]:
        """The fleet's quality rows (arm, task type, ema, runs)."""
        return as_quality(self.store.learning.view())

    def _adopt_learning(self, rows: list[tuple[str, str, float, int]]) -> int:
        """Seed the router's quality with what the whole fleet learned (on the loop).
        Only rows that differ are restored: each bumps the arm's cached views."""
        quality = self.rec.engine.quality
        arms = self.rec.engine.arms
        changed = 0
        for arm, kind, ema, n in rows:
            stat = quality.stats.get((arm, kind))
            if arm in arms and (stat is None or (stat.ema, stat.n) != (ema, n)):
                quality.restore(arm, kind, ema, n)
                changed += 1
        return changed

    # -- operations ------------------------------------------------------------------

    def handlers(self) -> dict[str, control.Handler]:
        async def fleet_status(_req: dict[str, Any]) -> Any:
            try:
                status = await self.queue.in_thread(self.store.status)
            except FleetUnavailable as exc:
                raise control.ControlError(str(exc)) from None
            status["host"] = self.settings.host
            status["connected"] = self.store.db.connected
            return status

        return {"fleet_status": fleet_status}

    async def stop(self) -> None:
        """The loop ended: run the settlements still queued (or keep them in the
        outbox), settle the queue's side, then disconnect."""
        await self.link.work.drain(DRAIN_WAIT)
        if self.link.ready:
            for task, attempt in self.once.releases():  # another host takes it at once
                with contextlib.suppress(FleetError, psycopg.Error):
                    await self.queue.in_thread(self.store.once.let_go, task, attempt)
            await self.queue.shutdown()
        self.store.close()


def _line(exc: BaseException) -> str:
    """An error as one line (psycopg's messages span several)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__
