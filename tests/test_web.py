"""The status page over plain HTTP against a real daemon: data, security, memory bounds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from daemon_kit import factoryd, header, task, write_config
from factoryd.service.web.hub import KEEP_DECISIONS, Hub, RecordingMetrics
from web_kit import live_daemon, request, wait_for

SLEEPER = "import time\nprint('hello from the run', flush=True)\ntime.sleep(300)"


def post(url: str, body: object, **headers: str):
    return request(
        url, "POST", json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    )


def csrf_of(url: str) -> str:
    page = request(url + "/").body.decode()
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_api_status_is_what_status_json_prints(tmp_path: Path) -> None:
    body = task("alpha", SLEEPER) + task("beta", SLEEPER)
    with live_daemon(tmp_path, body) as live:
        wait_for(lambda: live.task("alpha")["phase"] == "running", what="alpha running")
        api = live.status()
        cli = factoryd("status", "--socket", str(live.sock), "--json")
        assert cli.returncode == 0, cli.stderr
        expect = json.loads(cli.stdout)
        assert api.keys() == expect.keys()
        assert [t["name"] for t in api["tasks"]] == [t["name"] for t in expect["tasks"]]
        assert api["tasks"][0].keys() == expect["tasks"][0].keys()
        assert [p["name"] for p in api["pools"]] == [p["name"] for p in expect["pools"]]
        runs = request(live.url + "/api/runs").json()
        assert {r["task"] for r in runs} == {"alpha", "beta"}
        decisions = request(live.url + "/api/decisions").json()
        assert {d["task"] for d in decisions} == {"alpha", "beta"}
        assert all(d["rationale"].startswith("Selected local") for d in decisions)
        assert decisions[0]["ranking"][0]["components"]["task_fit"] >= 0


def test_metrics_and_healthz_still_answer_as_before(tmp_path: Path) -> None:
    with live_daemon(tmp_path, task("alpha", SLEEPER)) as live:
        metrics = request(live.url + "/metrics")
        assert metrics.status == 200
        assert metrics.headers["Content-Type"].startswith("text/plain; version=")
        assert b"factoryd_tasks{" in metrics.body
        assert request(live.url + "/metrics", "HEAD").status == 200
        assert request(live.url + "/metrics", "POST", b"x").status == 405
        assert request(live.url + "/nope").status == 404


def test_log_tail_reads_only_runs_the_daemon_knows(tmp_path: Path) -> None:
    with live_daemon(tmp_path, task("alpha", SLEEPER)) as live:
        wait_for(lambda: live.task("alpha")["run_id"], what="alpha's run")
        run_id = live.task("alpha")["run_id"]
        wait_for(
            lambda: b"hello from the run" in request(f"{live.url}/api/runs/{run_id}/log").body,
            what="the run's first line in its log tail",
        )
        for bad in ("nope", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a" * 300):
            assert request(f"{live.url}/api/runs/{bad}/log").status == 404, bad


def test_actions_need_csrf_and_origin_and_are_logged_with_who(tmp_path: Path) -> None:
    with live_daemon(tmp_path, task("alpha", SLEEPER), web="actions = true") as live:
        wait_for(lambda: live.task("alpha")["phase"] == "running", what="alpha running")
        url = live.url + "/api/actions/cancel"
        origin = live.url
        csrf = csrf_of(live.url)
        # Every action the daemon has a control op for (the operator's verbs included).
        offered = request(live.url + "/api/actions").json()["actions"]
        assert offered == ["restart", "stop", "start", "cancel", "reset", "release"]
        no_token = post(url, {"target": "alpha"}, Origin=origin)
        assert no_token.status == 403 and b"CSRF" in no_token.body
        wrong = post(url, {"target": "alpha"}, Origin=origin, **{"X-CSRF-Token": "x" * 43})
        assert wrong.status == 403
        foreign = post(
            url, {"target": "alpha"}, Origin="http://evil.example", **{"X-CSRF-Token": csrf}
        )
        assert foreign.status == 403 and b"Origin" in foreign.body
        no_origin = post(url, {"target": "alpha"}, **{"X-CSRF-Token": csrf})
        assert no_origin.status == 403
        assert request(url).status == 405  # GET never acts
        assert live.task("alpha")["phase"] == "running"
        missing = post(url, {"target": "ghost"}, Origin=origin, **{"X-CSRF-Token": csrf})
        assert missing.status == 409 and "ghost" in missing.json()["error"]
        junk = request(
            url,
            "POST",
            b"{",
            {"Content-Type": "application/json", "Origin": origin, "X-CSRF-Token": csrf},
        )
        assert junk.status == 400
        ok = post(url, {"target": "alpha"}, Origin=origin, **{"X-CSRF-Token": csrf})
        assert ok.status == 200, ok.body
        wait_for(lambda: live.task("alpha")["phase"] == "cancelled", what="alpha cancelled")
        logged = live.events("web.action")
        done = [e for e in logged if e.get("result") == "done"]
        assert done and done[0]["action"] == "cancel" and done[0]["target"] == "alpha"
        assert done[0]["who"].startswith("loopback@127.0.0.1")
        assert csrf not in live.log.read_text()


def test_with_actions_off_no_action_is_offered_and_a_post_is_refused(tmp_path: Path) -> None:
    with live_daemon(tmp_path, task("alpha", SLEEPER)) as live:
        page = request(live.url + "/").body.decode()
        assert '<meta name="actions" content="">' in page
        assert request(live.url + "/api/actions").json()["actions"] == []
        csrf = csrf_of(live.url)
        refused = post(
            live.url + "/api/actions/cancel",
            {"target": "alpha"},
            Origin=live.url,
            **{"X-CSRF-Token": csrf},
        )
        assert refused.status == 403 and b"actions are off" in refused.body
        wait_for(lambda: live.task("alpha")["phase"] == "running", what="alpha running")


def test_a_dns_rebound_host_cannot_read_a_loopback_page(tmp_path: Path) -> None:
    with live_daemon(tmp_path, task("alpha", SLEEPER)) as live:
        assert request(live.url + "/api/status", headers={"Host": "evil.example"}).status == 403
        assert request(live.url + "/", headers={"Host": f"localhost:{live.port}"}).status == 200


def test_actions_beyond_loopback_without_a_token_refuse_to_start(tmp_path: Path) -> None:
    text = header(tmp_path, metrics_listen="0.0.0.0:0") + task("alpha", SLEEPER)
    config = write_config(tmp_path, text + "\n[web]\nactions = true\n")
    out = factoryd("check", "--config", str(config))
    assert out.returncode != 0
    assert "web.actions" in out.stderr + out.stdout
    assert "token_file" in out.stderr + out.stdout
    run = subprocess.run(
        [sys.executable, "-m", "factoryd", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "token_file" in run.stderr


def test_beyond_loopback_the_page_needs_the_token(tmp_path: Path) -> None:
    secret = "s3cret-" + "x" * 24
    token = tmp_path / "token"
    token.write_text(secret + "\n")
    web = f'actions = true\ntoken_file = "{token}"'
    with live_daemon(tmp_path, task("alpha", SLEEPER), web=web, host="0.0.0.0") as live:
        for path in ("/", "/api/status", "/api/events", "/api/runs"):
            assert request(live.url + path).status == 401, path
        bearer = {"Authorization": f"Bearer {secret}"}
        assert request(live.url + "/api/status", headers=bearer).status == 200
        wrong = {"Authorization": "Bearer " + "y" * len(secret)}
        assert request(live.url + "/api/status", headers=wrong).status == 401
        assert request(live.url + "/?token=nope").status == 401
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(f"{live.url}/?token={secret}", timeout=10) as resp:
            assert resp.status == 200 and resp.url == live.url + "/"
        with opener.open(f"{live.url}/api/status", timeout=10) as resp:
            assert json.loads(resp.read())["tasks"][0]["name"] == "alpha"
        assert request(live.url + "/metrics").status == 200  # Prometheus needs no token
        assert secret not in live.log.read_text()


def test_a_page_beyond_loopback_without_a_token_is_locked(tmp_path: Path) -> None:
    with live_daemon(tmp_path, task("alpha", SLEEPER), host="0.0.0.0") as live:
        locked = request(live.url + "/api/status")
        assert locked.status == 403 and b"token_file" in locked.body
        assert request(live.url + "/metrics").status == 200
        assert live.events("web.locked")


def test_a_page_that_never_reads_costs_the_hub_nothing_but_a_resync() -> None:
    """A client that stops reading holds no backlog: after more decisions than are
    kept it is told to resync, and the hub's memory is the kept decisions only."""
    metrics = RecordingMetrics()

    async def status() -> dict:
        return {"pools": [], "tasks": []}

    async def runs() -> list:
        return []

    hub = Hub(status, runs, metrics, min_interval=0)
    client = hub.subscribe()
    assert client is not None
    for seq in range(1, 3 * KEEP_DECISIONS):
        metrics.recent_decisions.append({"seq": seq, "task": f"t{seq}"})
    resync, kept = hub.decisions_since(client.decision_seq)
    assert resync and len(kept) == KEEP_DECISIONS
    assert len(metrics.recent_decisions) == KEEP_DECISIONS
    asyncio.run(hub.render())
    assert set(hub.views) == {"status", "runs"}
    assert client.dirty == {"status", "runs"}  # a set of view names, never a queue
    others = [hub.subscribe() for _ in range(hub.max_clients + 5)]
    assert others.count(None) == 6
    assert hub.decisions_since(3 * KEEP_DECISIONS - 1) == (False, [])


def test_a_missing_chromium_fails_in_ci_and_says_how_to_install(monkeypatch) -> None:
    import web_kit

    monkeypatch.setattr(web_kit, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install-system-deps"):
        web_kit.need_chromium()


@pytest.mark.anyio
async def test_pages_opening_streaming_and_leaving_leave_the_heap_flat(tmp_path: Path) -> None:
    """Many pushes to pages that come and go: the Python heap the daemon keeps
    (traced, after a collection) does not grow with them."""
    import gc
    import http.client
    import tracemalloc

    import anyio
    from aiohttp import web as aioweb
    from factoryd.config.loader import load_config
    from factoryd.reconcile.reconciler import Reconciler
    from factoryd.service import http as fhttp
    from factoryd.service.status import build_status
    from factoryd.service.web.security import Guard
    from factoryd.service.web.server import Page

    body = "".join(task(f"t{i:02}", SLEEPER) for i in range(40))
    rec = Reconciler(load_config(write_config(tmp_path, header(tmp_path) + body)))

    async def status(_req: dict | None = None) -> dict:
        return build_status(rec)

    async def runs() -> list:
        return []

    hub = Hub(status, runs, RecordingMetrics(), min_interval=0.02)
    guard = Guard(listen="127.0.0.1:0", token=None, actions=False)
    page = Page(rec, hub, guard, {"status": status}, tmp_path / "no-journal.db")
    app = aioweb.Application()
    page.add_routes(app)

    def read_events(port: int, seconds: float) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/events")
        resp = conn.getresponse()
        got, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            got += len(resp.read1(65536))
        conn.close()
        return got

    async def pages(port: int, n: int) -> int:
        results: list[int] = []

        async def one() -> None:
            results.append(await anyio.to_thread.run_sync(read_events, port, 0.4))

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
            while True:  # the views go stale as a busy loop makes them
                hub.changed()
                await anyio.sleep(0.01)
                if len(results) == n:
                    tg.cancel_scope.cancel()
        return sum(results)

    tracemalloc.start()
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(fhttp.serve_app, "127.0.0.1:0", app)
            tg.start_soon(hub.run)
            for _ in range(3):  # warm up: first views, thread pool, connections
                await pages(port, 4)
            await anyio.sleep(0.1)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            sent = 0
            for _ in range(8):
                sent += await pages(port, 4)
            await anyio.sleep(0.1)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tg.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    assert sent > 20 * len(hub.views["status"]), "the pages were not streamed to"
    assert not hub.clients
    assert after - before < 256 * 1024, f"the heap grew {after - before} bytes"


def test_the_pushed_status_adds_sparklines_and_quality_per_task_type(tmp_path: Path) -> None:
    import http.client

    with live_daemon(tmp_path, task("quick", "pass")) as live:
        wait_for(lambda: live.task("quick")["runs"] >= 2, what="two runs of quick")
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        conn.request("GET", "/api/events")
        resp = conn.getresponse()
        assert resp.headers["Content-Type"] == "text/event-stream"
        buf = b""
        deadline = time.monotonic() + 20
        status: dict = {}
        while time.monotonic() < deadline and not status.get("quality", {}).get("local"):
            buf += resp.read1(65536)
            for block in buf.split(b"\n\n"):
                if block.startswith(b"event: status\ndata: "):
                    status = json.loads(block.split(b"data: ", 1)[1])
            buf = buf[buf.rfind(b"\n\n") + 2 :] if b"\n\n" in buf else buf
        conn.close()
        assert status["quality"]["local"]["generation"]["n"] >= 1
        assert status["sparklines"]["local"]
        assert status["tasks"][0]["name"] == "quick"


def test_web_listen_moves_the_page_off_the_metrics_port(tmp_path: Path) -> None:
    from daemon_kit import free_port

    port = free_port()
    with live_daemon(tmp_path, task("alpha", SLEEPER), web=f'listen = "127.0.0.1:{port}"') as live:
        assert request(live.url + "/").status == 404
        assert request(live.url + "/api/status").status == 404
        assert request(live.url + "/metrics").status == 200
        page = f"http://127.0.0.1:{port}"
        assert b'name="csrf-token"' in request(page + "/").body
        assert request(page + "/api/status").json()["tasks"][0]["name"] == "alpha"
        assert request(page + "/metrics").status == 404
        listening = live.events("web.listening")
        assert listening and listening[0]["port"] == port
