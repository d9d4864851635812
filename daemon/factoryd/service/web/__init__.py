"""The live status page: where it is served, wired to the daemon's loop.

`start` opens /metrics and /healthz on `metrics_listen` and the page beside
them (or on `[web] listen` when set), starts the hub that renders views
after each reconcile pass, and returns the bound ports. The page needs the
asyncio backend (aiohttp runs on it), which is what the daemon uses.

aiohttp (and the modules of this package that use it) are imported by
`start`, and only when something is served: a daemon with
`metrics_listen = "off"` and no `[web] listen` of its own never loads it (about 10 MiB of
resident memory and a third of a second of start-up).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from factoryd.config.web import is_loopback
from factoryd.observe.logs import get_logger
from factoryd.service import control
from factoryd.service.web.hub import Hub, RecordingMetrics, read_runs

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler
    from factoryd.service.web.server import Page

__all__ = ["RecordingMetrics", "start"]


def _page(rec: Reconciler, metrics: RecordingMetrics, handlers: dict[str, control.Handler]) -> Page:
    from factoryd.service.web.security import Guard, read_token
    from factoryd.service.web.server import Page

    settings = rec.config.web
    listen = settings.listen or rec.config.daemon.metrics_listen
    log = get_logger()
    try:
        token = read_token(settings.token_file)
    except (OSError, UnicodeDecodeError) as exc:
        # Checked when the config loaded; gone since: nobody can log in.
        log.error("web.token_unreadable", path=str(settings.token_file), error=str(exc))
        token = secrets.token_urlsafe(32)
    guard = Guard(listen=listen, token=token, actions=settings.actions)
    journal = rec.config.daemon.state_dir / "journal.db"
    arms = rec.engine.arms

    async def runs() -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(read_runs, journal, dict(arms))

    async def status() -> dict[str, Any]:
        """`status --json`, plus each arm's learned quality per task type."""
        result: dict[str, Any] = await handlers["status"]({"op": "status"})
        quality: dict[str, dict[str, Any]] = {}
        for (arm, task_type), stat in rec.engine.quality.stats.items():
            quality.setdefault(arm, {})[task_type] = {"ema": round(stat.ema, 3), "n": stat.n}
        result["quality"] = quality
        return result

    hub = Hub(status, runs, metrics)
    page = Page(rec, hub, guard, handlers, journal)
    if not is_loopback(listen) and token is None:
        log.warning("web.locked", listen=listen, note="set [web] token_file to open the page")
    return page


async def start(
    tg: TaskGroup,
    rec: Reconciler,
    metrics: RecordingMetrics,
    healthy: Callable[[], tuple[bool, str]],
    handlers: dict[str, control.Handler],
) -> tuple[int | None, int | None]:
    """Serve metrics and the page in `tg`; (metrics port, page port), None when off."""
    config = rec.config
    settings = config.web
    metrics_listen = config.daemon.metrics_listen
    if metrics_listen == "off" and (settings.listen is None or not settings.enabled):
        return None, None  # nothing is served (the page shares /metrics' listen): no aiohttp
    from aiohttp import web

    from factoryd.service import http

    page = _page(rec, metrics, handlers) if settings.enabled else None
    metrics_port = page_port = None
    log = get_logger()
    if metrics_listen != "off":
        app = web.Application()
        http.add_metrics_routes(app, metrics.exposition, healthy)
        if page is not None and settings.listen is None:
            page.add_routes(app)
        metrics_port = await tg.start(http.serve_app, metrics_listen, app)
        log.info("metrics.listening", listen=metrics_listen, port=metrics_port)
        if page is not None and settings.listen is None:
            page_port = metrics_port
    if page is not None and settings.listen is not None:
        app = web.Application()
        page.add_routes(app)
        page_port = await tg.start(http.serve_app, settings.listen, app)
    if page is not None and page_port is not None:
        rec.on_pass.append(page.hub.changed)
        tg.start_soon(page.hub.run)
        log.info(
            "web.listening",
            listen=settings.listen or metrics_listen,
            port=page_port,
            actions=page.offered,
            token=page.guard.token is not None,
        )
    return metrics_port, page_port
