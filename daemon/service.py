"""The daemon process: wires config, reconciler, signals, metrics and systemd.

Signals: SIGTERM/SIGINT stop starting runs, stop every run in parallel
(SIGTERM, grace, SIGKILL) and exit 0; SIGHUP reloads the config, keeping
the running one on any error. The loop pings the systemd watchdog, so a
hung loop gets the unit restarted.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import anyio

from daemon import control, http
from daemon.config import Config, load_config
from daemon.logs import get_logger
from daemon.metrics import Metrics, StateCollector
from daemon.process import become_subreaper
from daemon.reconciler import Reconciler
from daemon.sdnotify import Notifier
from daemon.status import build_status


class Service:
    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.path = config.path
        self.log = get_logger()
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.metrics.config_loaded(Path(self.path).read_bytes())
        self.reconciler = Reconciler(config, metrics=self.metrics)
        rec = self.reconciler
        self.metrics.add_state_collector(
            StateCollector(
                lambda: rec.engine, rec.task_phases, rec.run_states, rec.blocked_by_label
            )
        )
        self.metrics_port: int | None = None

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
        return f"{len(rec.runs)} run(s), {len(rec.tasks)} task(s)"

    def healthy(self) -> tuple[bool, str]:
        interval = self.reconciler.config.daemon.loop_interval
        return self.reconciler.healthy(max(3 * interval, 10.0) + 5.0)

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                if sig == signal.SIGHUP:
                    self.log.info("signal.reload", signal="SIGHUP")
                    self.reconciler.request_reload(self.load)
                else:
                    self.log.info(
                        "signal.stop",
                        signal=signal.Signals(sig).name,
                        runs=len(self.reconciler.runs),
                    )
                    self.notifier.stopping()
                    self.reconciler.request_stop()

    async def _systemd(self) -> None:
        await self.reconciler.started.wait()
        self.notifier.ready(self._status_line())
        interval = self.notifier.watchdog_interval
        while True:
            await anyio.sleep(interval if interval is not None else 10.0)
            # The watchdog proves the loop is passing, not just that a task runs.
            ok, _ = self.healthy()
            if ok and interval is not None:
                self.notifier.watchdog()
            self.notifier.status(self._status_line())

    def _control_handlers(self) -> dict[str, control.Handler]:
        rec = self.reconciler

        async def status(_req: dict[str, Any]) -> Any:
            return build_status(rec)

        async def state_dump(_req: dict[str, Any]) -> Any:
            return rec.engine.snapshot(rec.clock.wall())

        async def reset(req: dict[str, Any]) -> Any:
            name = req.get("task")
            if not isinstance(name, str):
                raise control.ControlError('reset needs "task": NAME')
            if not await rec.call(lambda: rec.reset(name)):
                raise control.ControlError(f"no task named {name!r}")
            return {"task": name, "reset": True}

        async def reload(_req: dict[str, Any]) -> Any:
            rec.request_reload(self.load)
            return {"reload": "requested"}

        return {"status": status, "state_dump": state_dump, "reset": reset, "reload": reload}

    async def run(self) -> int:
        become_subreaper()
        daemon = self.config.daemon
        for directory in (daemon.state_dir, daemon.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.log.info(
            "daemon.starting",
            config=str(self.path),
            tasks=len(self.config.tasks),
            arms=len(self.config.arms),
            pools=len(self.config.pools),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._signals)
            if daemon.metrics_listen != "off":
                self.metrics_port = await tg.start(
                    http.serve, daemon.metrics_listen, self.metrics.exposition, self.healthy
                )
                self.log.info(
                    "metrics.listening", listen=daemon.metrics_listen, port=self.metrics_port
                )
            await tg.start(control.serve, daemon.control_socket, self._control_handlers())
            self.log.info("control.listening", socket=str(daemon.control_socket))
            tg.start_soon(self._systemd)
            await self.reconciler.run()
            tg.cancel_scope.cancel()
        self.log.info("daemon.stopped")
        self.notifier.close()
        return 0
