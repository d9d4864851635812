"""The daemon process: wires journal, recovery, reconciler, signals, HTTP, control
socket, spool directory and systemd.

Start-up order: check what can be checked and lock the state dir (see
preflight.py: a second daemon, a taken port or an unwritable dir is refused
before anything is touched), open the journal, recover (adopt or account for every run
the journal says is live, reap strays), start the loop; READY=1 goes to
systemd after recovery and the first pass. The loop itself pings the
watchdog after every pass, and never sleeps longer than half the watchdog
interval, so a hung loop gets the unit restarted.

Signals: SIGTERM/SIGINT stop starting runs, stop every run in parallel
(SIGTERM, grace, SIGKILL) and exit 0; SIGHUP reloads the config, keeping
the running one on any error.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from prometheus_client import Counter

from factoryd.config.loader import load_config
from factoryd.config.model import Config
from factoryd.config.submission import SubmitError
from factoryd.observe import logs
from factoryd.observe.logs import get_logger
from factoryd.observe.scrape import StateCollector
from factoryd.proc import capture
from factoryd.proc.fdlimit import raise_soft_limit
from factoryd.proc.tree import become_subreaper
from factoryd.reconcile.operator import restore_holds
from factoryd.reconcile.reconciler import Reconciler
from factoryd.reconcile.recovery import recover
from factoryd.service import control, ops, preflight, web
from factoryd.service.lock import StateLock
from factoryd.service.sdnotify import Notifier
from factoryd.service.spool import watch_spool
from factoryd.service.submit import submit
from factoryd.state.journal import Journal

if TYPE_CHECKING:
    from factoryd.service.fleet import FleetService


class Service:
    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier | None = None,
        state_lock: StateLock | None = None,
    ) -> None:
        self.config = config
        self.path = config.path
        self.log = get_logger()
        self.notifier = notifier or Notifier()
        self.metrics = web.RecordingMetrics()
        self.metrics.config_loaded(Path(self.path).read_bytes())
        self.journal: Journal | None = None
        self.reconciler: Reconciler | None = None
        #: Fleet mode (service/fleet.py), only with a `[fleet]` table.
        self.fleet: FleetService | None = None
        self.metrics_port: int | None = None
        self.web_port: int | None = None
        self._last_watchdog = 0.0
        #: The state dir's lock, if the caller took it already (see `_claim_state_dir`).
        self._state_lock = state_lock

    @property
    def rec(self) -> Reconciler:
        assert self.reconciler is not None
        return self.reconciler

    def load(self) -> Config:
        """Reload from disk; raises ConfigError (the reconciler keeps the old config)."""
        self.notifier.reloading()
        try:
            config = load_config(self.path)
            self.metrics.config_loaded(Path(self.path).read_bytes())
            self.config = config
            return config
        finally:
            self.notifier.ready(self._status_line())

    def _status_line(self) -> str:
        rec = self.reconciler
        if rec is None:
            return "starting"
        return f"{len(rec.runs)} run(s), {len(rec.tasks)} task(s)"

    def healthy(self) -> tuple[bool, str]:
        interval = self.rec.config.daemon.loop_interval
        return self.rec.healthy(max(3 * interval, 10.0) + 5.0)

    def _after_pass(self) -> None:
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval is not None and now - self._last_watchdog >= interval:
            self._last_watchdog = now
            self.notifier.watchdog()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                if sig == signal.SIGHUP:
                    self.log.info("signal.reload", signal="SIGHUP")
                    self.rec.request_reload(self.load)
                else:
                    self.log.info(
                        "signal.stop", signal=signal.Signals(sig).name, runs=len(self.rec.runs)
                    )
                    self.notifier.stopping()
                    self.rec.request_stop()

    async def _systemd(self) -> None:
        await self.rec.started.wait()
        self.notifier.ready(self._status_line())
        while self.notifier.enabled:
            await anyio.sleep(10.0)
            self.notifier.status(self._status_line())

    def _control_handlers(self) -> dict[str, control.Handler]:
        rec = self.rec

        async def state_dump(_req: dict[str, Any]) -> Any:
            return rec.engine.snapshot(rec.clock.wall())

        async def reset(req: dict[str, Any]) -> Any:
            name = _name(req, "task")
            if not await rec.run_in_loop(lambda: rec.table.reset(name)):
                raise control.ControlError(f"no task named {name!r}")
            return {"task": name, "reset": True}

        async def cancel(req: dict[str, Any]) -> Any:
            name = _name(req, "id")
            if not await rec.run_in_loop(lambda: rec.table.cancel(name)):
                raise control.ControlError(f"no queued or running task {name!r}")
            return {"id": name, "cancelled": True}

        async def submit_op(req: dict[str, Any]) -> Any:
            request = {k: v for k, v in req.items() if k not in ("op", "_peer")}
            try:
                accepted = await submit(rec, request, "socket", "request")
            except SubmitError as exc:
                rec.metrics.submissions.labels("socket", "rejected").inc()
                raise control.ControlError(str(exc)) from None
            return {
                "id": accepted.id,
                "template": accepted.label,
                "duplicate": accepted.duplicate,
                "state": accepted.state,
            }

        async def reload(_req: dict[str, Any]) -> Any:
            rec.request_reload(self.load)
            return {"reload": "requested"}

        fleet = {"fleet_status": _alone} if self.fleet is None else self.fleet.handlers()
        return fleet | {
            "state_dump": state_dump,
            "reset": reset,
            "cancel": cancel,
            "submit": submit_op,
            "reload": reload,
            # status, and the operator's verbs (logs, show, wait, stop, start,
            # restart, release; reset and reload say more): service/ops.py.
            **ops.handlers(rec, self.load),
        }

    def _claim_state_dir(self) -> None:
        """Start-up checks and the state dir's lock, before anything is touched
        (raises preflight.StartupError: one line, exit 1)."""
        if self._state_lock is None:
            self._state_lock = preflight.claim(self.config)

    def _watch_run_logs(self, on: bool) -> None:
        """Say when a run's log cannot be written (a full disk) and when it can
        again: once per run each way. The run is still drained meanwhile, and
        what it wrote is counted in factoryd_output_dropped_bytes_total."""
        if not on:
            capture.write_failure_hook = None
            return
        log = self.log
        failures = Counter(
            "factoryd_run_log_write_failures_total",
            "Times a run's log could not be written (its output is dropped until it can).",
            registry=self.metrics.registry,
        )

        def hook(path: Path, error: str | None, dropped: int) -> None:
            if error is not None:
                failures.inc()
                log.error("run.log_write_failed", log=str(path), error=error)
            else:
                log.info("run.log_write_resumed", log=str(path), bytes_dropped=dropped)

        capture.write_failure_hook = hook

    async def run(self) -> int:
        self._claim_state_dir()
        self._watch_run_logs(True)
        become_subreaper()
        runs_nofile, _ = raise_soft_limit()
        daemon = self.config.daemon
        for directory in (daemon.state_dir, daemon.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(daemon.state_dir / "journal.db")
        self.reconciler = Reconciler(self.config, metrics=self.metrics, journal=self.journal)
        rec = self.reconciler
        rec.leader_nofile = runs_nofile
        if self.config.fleet is not None:
            from factoryd.service.fleet import FleetService

            self.fleet = FleetService(self.config, rec, self.metrics, self.log)
        self.metrics.add_state_collector(
            StateCollector(
                lambda: rec.engine,
                rec.table.phase_counts,
                rec.book.run_states,
                rec.table.blocked_by_label,
            )
        )
        rec.on_pass.append(self._after_pass)
        if self.notifier.watchdog_interval is not None:
            rec.max_sleep = self.notifier.watchdog_interval / 2
        self.log.info(
            "daemon.starting",
            config=str(self.path),
            tasks=len(self.config.tasks),
            arms=len(self.config.arms),
            pools=len(self.config.pools),
        )
        self.notifier.status("recovering")
        if self.fleet is not None:  # claims still ours become tasks, so their runs are adopted
            await self.fleet.readopt()
        recover(rec, self.journal, os.environ.get("INVOCATION_ID", ""))
        restore_holds(rec, self.journal)
        spool = daemon.spool_dir or daemon.state_dir / "spool"
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._signals)
            handlers = self._control_handlers()
            self.metrics_port, self.web_port = await web.start(
                tg, rec, self.metrics, self.healthy, handlers
            )
            await tg.start(control.serve, daemon.control_socket, handlers)
            self.log.info("control.listening", socket=str(daemon.control_socket))
            tg.start_soon(watch_spool, rec, spool)
            tg.start_soon(self._systemd)
            if self.fleet is not None:
                tg.start_soon(self.fleet.run)
                await self.fleet.wait_ready()
            tune_collector()
            with logs.lines_per_turn():
                await rec.run()
            tg.cancel_scope.cancel()
        rec.batch.close()
        if self.fleet is not None:
            await self.fleet.stop()
        self.log.info("daemon.stopped")
        self._watch_run_logs(False)
        self.notifier.close()
        if self._state_lock is not None:
            self._state_lock.release()
        return 0


#: Allocations (of tracked objects) between two young-generation collections;
#: CPython's default is 700.
YOUNG_COLLECTION_EVERY = 3000


def tune_collector() -> None:
    """Set the cyclic collector up for a long-running loop, before the first pass.

    Move what start-up made (modules, classes, the config, the recovered
    table) out of the collector's sight.

    Those objects live as long as the daemon, yet every full collection walked
    them again: with the daemon's imports one such walk paused the loop for
    tens of milliseconds (measured ~110 ms in the loopwork driver), now and
    then inside a burst of starts. Frozen, a full collection visits only what
    came after. A frozen object that later becomes cyclic garbage is not
    collected; start-up objects are replaced only by a reload, which is rare
    and mostly acyclic, so the cost is bounded.

    Collect the young generation every YOUNG_COLLECTION_EVERY allocations
    rather than every 700: a run's objects (its decision, runner, records,
    log lines) mostly die within the run, and at the default a burst of
    starts caught thousands of them alive, promoted them and walked them
    again in the older generations. Measured in bench/loopwork.py's driver
    under the debug interpreter: collection time per run 203 -> 107 us, the
    middle generation's share 266 -> ~70 ms per 3,000 runs; one young
    collection then walks at most 3,000 objects (~0.5 ms, release build).
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)


async def _alone(_req: dict[str, Any]) -> Any:
    raise control.ControlError("this daemon runs alone: its config has no [fleet] table")


def _name(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise control.ControlError(f'this request needs "{key}": NAME')
    return value
