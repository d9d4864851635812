"""HTTP on the event loop: GET /metrics and /healthz, and the site the status page adds to.

aiohttp serves it (C-accelerated parser, keep-alive, streaming responses
for the page's Server-Sent Events) on the daemon's own asyncio loop, so the
scrape-time collector reads daemon state without locks. No access log; a
request that is not a GET or HEAD of a known path gets 405/404.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST

#: Seconds a stopping daemon lets open requests (streams) finish.
SHUTDOWN_GRACE = 1.0


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def add_metrics_routes(
    app: web.Application,
    metrics: Callable[[], bytes],
    healthy: Callable[[], tuple[bool, str]],
) -> None:
    """/metrics and /healthz, as they have always answered."""

    async def get_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_healthz(_request: web.Request) -> web.Response:
        ok, why = healthy()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)


async def serve_app(
    listen: str,
    app: web.Application,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled; reports the bound port through `task_status`."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = int(runner.addresses[0][1])
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def serve(
    listen: str,
    metrics: Callable[[], bytes],
    healthy: Callable[[], tuple[bool, str]],
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve /metrics and /healthz only (no page)."""
    app = web.Application()
    add_metrics_routes(app, metrics, healthy)
    await serve_app(listen, app, task_status=task_status)
