"""The status page's routes: the page, its assets, /api/ JSON, the event streams, actions.

Everything answers on the daemon's event loop from the daemon's own state:
/api/status is what the control socket's `status` op (and so `status
--json`) returns; actions call the same control handlers the socket does,
so the page can do nothing the socket cannot, and offers only the actions
this daemon has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from factoryd.observe.logs import get_logger
from factoryd.service import control
from factoryd.service.web.hub import Client, Hub, dumps
from factoryd.service.web.logtail import DEFAULT_TAIL, MAX_TAIL, follow, log_path, read_tail
from factoryd.service.web.security import COOKIE, Guard

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler

#: Every action the page knows, in the order it shows them; each is offered
#: only when the daemon has a control op of the same name.
ACTIONS = ("restart", "stop", "start", "cancel", "reset", "release")
ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}
MAX_BODY = 4096
HEARTBEAT = 15.0


def asset(name: str) -> bytes:
    return resources.files("factoryd.service.web").joinpath("static", name).read_bytes()


class Page:
    def __init__(
        self,
        rec: Reconciler,
        hub: Hub,
        guard: Guard,
        handlers: dict[str, control.Handler],
        journal: Path,
    ) -> None:
        self.rec = rec
        self.hub = hub
        self.guard = guard
        self.handlers = handlers
        self.journal = journal
        self.log = get_logger()
        self.offered = [a for a in ACTIONS if a in handlers] if guard.actions else []
        self._assets = {name: asset(name) for name in ASSETS}
        #: Open event streams, ended when the daemon stops (they never end alone).
        self._streams: set[asyncio.Task[Any]] = set()
        self._index = asset("index.html").decode()

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/static/{name}", self.static)
        r.add_get("/api/status", self.api_status)
        r.add_get("/api/runs", self.api_runs)
        r.add_get("/api/decisions", self.api_decisions)
        r.add_get("/api/runs/{run_id}/log", self.api_log)
        r.add_get("/api/runs/{run_id}/log/stream", self.api_log_stream)
        r.add_get("/api/events", self.api_events)
        r.add_get("/api/actions", self.api_actions)
        r.add_post("/api/actions/{action}", self.api_act)
        r.add_get("/favicon.ico", self.favicon)
        app.on_shutdown.append(self._end_streams)

    async def _end_streams(self, _app: web.Application) -> None:
        for task in list(self._streams):
            task.cancel()

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
            task.add_done_callback(self._streams.discard)
        return resp

    async def favicon(self, _request: web.Request) -> web.Response:
        return web.Response(status=204)

    # -- page ----------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        token = request.query.get("token")
        if token is not None and self.guard.token is not None:
            # One visit with ?token= sets the cookie, then the URL loses it.
            if not self.guard.token_matches(token):
                raise web.HTTPUnauthorized(text="wrong token\n")
            resp = web.HTTPSeeOther("/")
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            raise resp
        self.guard.check_read(request)
        html = self._index.replace("{{csrf}}", self.guard.csrf).replace(
            "{{actions}}", ",".join(self.offered)
        )
        return web.Response(
            text=html,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._assets:
            raise web.HTTPNotFound(text="no such asset\n")
        return web.Response(
            body=self._assets[name],
            content_type=ASSETS[name],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    # -- JSON ----------------------------------------------------------------

    async def _fresh(self, view: str) -> bytes:
        if view not in self.hub.views:
            await self.hub.render()
        return self.hub.views[view]

    async def api_status(self, request: web.Request) -> web.Response:
        self.guard.check_read(request)
        body = dumps(await self.handlers["status"]({"op": "status"}))
        return web.Response(body=body, content_type="application/json")

    async def api_runs(self, request: web.Request) -> web.Response:
        self.guard.check_read(request)
        return web.Response(body=await self._fresh("runs"), content_type="application/json")

    async def api_decisions(self, request: web.Request) -> web.Response:
        self.guard.check_read(request)
        _, decisions = self.hub.decisions_since(0)
        return web.Response(body=dumps(decisions), content_type="application/json")

    async def api_actions(self, request: web.Request) -> web.Response:
        self.guard.check_read(request)
        return web.json_response({"actions": self.offered, "known": list(ACTIONS)})

    # -- logs ----------------------------------------------------------------

    def _log_path(self, request: web.Request) -> tuple[Path, int]:
        self.guard.check_read(request)
        path = log_path(self.rec, self.journal, request.match_info["run_id"])
        if path is None:
            raise web.HTTPNotFound(text="no run with that id (or it kept no log)\n")
        try:
            size = int(request.query.get("bytes", DEFAULT_TAIL))
        except ValueError:
            raise web.HTTPBadRequest(text="bytes must be a number\n") from None
        return path, max(1, min(size, MAX_TAIL))

    async def api_log(self, request: web.Request) -> web.Response:
        path, size = self._log_path(request)
        try:
            text, _ = await asyncio.to_thread(read_tail, path, size)
        except OSError as exc:
            raise web.HTTPNotFound(text=f"cannot read the log: {exc.strerror}\n") from None
        return web.Response(text=text, content_type="text/plain")

    async def api_log_stream(self, request: web.Request) -> web.StreamResponse:
        path, size = self._log_path(request)
        resp = await self._stream(request)
        with contextlib.suppress(ConnectionResetError):  # the page went away
            await follow(resp, path, size)
        return resp

    # -- live ----------------------------------------------------------------

    async def api_events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: `status` and `runs` (whole views, the latest only)
        and `decisions` (new ones; `decisions-reset` with all kept after a gap)."""
        self.guard.check_read(request)
        client = self.hub.subscribe()
        if client is None:
            raise web.HTTPServiceUnavailable(text="too many pages open\n")
        try:
            resp = await self._stream(request)
            with contextlib.suppress(ConnectionResetError):  # the page went away
                await self._events(resp, client)
        finally:
            self.hub.unsubscribe(client)
        return resp

    async def _events(self, resp: web.StreamResponse, client: Client) -> None:
        await resp.write(b"retry: 2000\n\n")
        if "status" not in self.hub.views:
            await self.hub.render()
        first = True
        while True:
            client.wake.clear()  # before reading what changed: a later change re-sets it
            dirty, client.dirty = client.dirty, set()
            for view in ("status", "runs"):
                if view in dirty and view in self.hub.frames:
                    await resp.write(self.hub.frames[view])  # shared bytes, no copy per page
            resync, fresh = self.hub.decisions_since(client.decision_seq)
            if fresh or first:
                name = b"decisions-reset" if resync or first else b"decisions"
                await resp.write(b"event: " + name + b"\ndata: " + dumps(fresh) + b"\n\n")
                if fresh:
                    client.decision_seq = fresh[-1]["seq"]
            first = False
            try:
                await asyncio.wait_for(client.wake.wait(), HEARTBEAT)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")

    # -- actions -------------------------------------------------------------

    async def api_act(self, request: web.Request) -> web.Response:
        self.guard.check_read(request)
        self.guard.check_action(request)
        action = request.match_info["action"]
        if action not in self.offered:
            raise web.HTTPNotFound(text=f"this daemon has no {action!r} action\n")
        raw = await request.content.read(MAX_BODY + 1)
        try:
            body = json.loads(raw) if len(raw) <= MAX_BODY else None
        except ValueError:
            body = None
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target or len(target) > 200:
            raise web.HTTPBadRequest(text='send {"target": NAME}\n')
        who = self.guard.who(request)
        request_ = {"op": action, "task": target, "id": target, "pool": target, "name": target}
        try:
            result: Any = await self.handlers[action](request_)
        except control.ControlError as exc:
            self.log.warning("web.action", action=action, target=target, who=who, error=str(exc))
            return web.json_response({"ok": False, "error": str(exc)}, status=409)
        self.log.info("web.action", action=action, target=target, who=who, result="done")
        self.hub.changed()
        return web.json_response({"ok": True, "result": result})
