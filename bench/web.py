"""The status page's cost: /metrics scrape time with pages open and streaming vs
without, and the daemon's RSS while pages stream from 200 tasks changing state.

Part A (in process, bench/scrape.py's 100 tasks x 20 arms x 10 pools): the
page's app serves /metrics; a ticker marks the views stale every 100 ms (a
busy reconcile loop), and N clients read /api/events. Scrapes alternate in
blocks with and without the clients, on the same loop, in the same run.

Part B (a real `factoryd run`): 200 `sleep` tasks restarting all the time;
in alternating 10 s blocks, N pages stream /api/events and one follows a
run's log, or none; /metrics is scraped twice a second throughout. Prints
the daemon's RSS after the first streaming block and at the end.

Part C (with --rss SECONDS): two daemons one after the other, without pages
and with pages connected throughout, their RSS every 15 s: whether pages
add memory, separated from the daemon's own warm-up.

    python bench/web.py [--seconds 60] [--clients 3] [--rounds 200] [--rss 240]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import anyio  # noqa: E402
import psutil  # noqa: E402
import scrape  # noqa: E402
from aiohttp import web  # noqa: E402
from common import PY, ROOT, tmpdir  # noqa: E402
from factoryd.service import http as fhttp  # noqa: E402
from factoryd.service.status import build_status  # noqa: E402
from factoryd.service.web.hub import Hub, RecordingMetrics  # noqa: E402
from factoryd.service.web.security import Guard  # noqa: E402
from factoryd.service.web.server import Page  # noqa: E402


class Reader(threading.Thread):
    """One open page: reads an event stream until told to stop; counts bytes."""

    def __init__(self, port: int, path: str = "/api/events") -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.bytes = 0
        self.events = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", self.path)
        resp = conn.getresponse()
        while not self.stop.is_set():
            try:
                chunk = resp.read1(65536)
            except (OSError, http.client.HTTPException):
                break  # the daemon stopped
            if not chunk:
                break
            self.bytes += len(chunk)
            self.events += chunk.count(b"\nevent: ") + chunk.startswith(b"event: ")
        conn.close()


def get(conn: http.client.HTTPConnection, path: str) -> float:
    t0 = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return time.perf_counter() - t0


def ms(samples: list[float]) -> str:
    p90 = sorted(samples)[int(len(samples) * 0.9)]
    return f"median {statistics.median(samples) * 1e3:.2f} ms (p90 {p90 * 1e3:.2f})"


def part_a(rounds: int, clients: int) -> None:
    rec = scrape.build()
    box: list[int] = []
    ready = threading.Event()

    async def serve() -> None:
        async def status(_req: dict | None = None) -> dict:
            return build_status(rec)

        async def runs() -> list:
            return []

        metrics = RecordingMetrics()
        hub = Hub(lambda: status(), runs, metrics)
        guard = Guard(listen="127.0.0.1:0", token=None, actions=False)
        page = Page(rec, hub, guard, {"status": status}, Path("/nonexistent/journal.db"))
        app = web.Application()
        fhttp.add_metrics_routes(app, rec.metrics.exposition, lambda: (True, "ok"))
        page.add_routes(app)

        async def ticker() -> None:
            while True:
                hub.changed()
                await asyncio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            box.append(await tg.start(fhttp.serve_app, "127.0.0.1:0", app))
            tg.start_soon(hub.run)
            tg.start_soon(ticker)
            ready.set()
            await anyio.sleep_forever()

    threading.Thread(target=lambda: anyio.run(serve), daemon=True).start()
    ready.wait(10)
    port = box[0]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    quiet: list[float] = []
    streaming: list[float] = []
    readers: list[Reader] = []
    block = max(10, rounds // 10)
    pushed = 0
    for i in range(0, rounds, block):
        on = (i // block) % 2 == 1
        if on and not readers:
            readers = [Reader(port) for _ in range(clients)]
            for r in readers:
                r.start()
            time.sleep(0.5)
        if not on and readers:
            for r in readers:
                r.stop.set()
                pushed += r.bytes
            readers = []
            time.sleep(0.6)
        for _ in range(block):
            (streaming if on else quiet).append(get(conn, "/metrics"))
    for r in readers:
        r.stop.set()
        pushed += r.bytes
    print("A. in process, bench/scrape.py's state (100 tasks x 20 arms x 10 pools)")
    print(f"   GET /metrics, no page open:            {ms(quiet)}")
    print(f"   GET /metrics, {clients} pages streaming:      {ms(streaming)}")
    print(f"   pages received {pushed / 1024:.0f} KiB of events meanwhile")


def start_busy_daemon() -> tuple[psutil.Popen, int, Path]:
    """A real daemon with 200 `sleep` tasks that restart for as long as it runs."""
    work = tmpdir("web")
    port = scrape_free_port()
    text = (
        f'[daemon]\nstate_dir = "{work / "state"}"\nlog_dir = "{work / "logs"}"\n'
        f'metrics_listen = "127.0.0.1:{port}"\nmax_concurrent = 200\nloop_interval = "5s"\n\n'
        '[[pools]]\nname = "local"\nunit = "runs"\nlimit = 1000000000\nwindow = "5h"\n\n'
        '[[arms]]\nname = "local"\ncli = "command"\npools = ["local"]\n\n'
    )
    for i in range(200):
        text += (
            f'[[tasks]]\nname = "t{i:03}"\nargv = ["sleep", "{5 + i % 6}"]\n'
            'max_restarts = 100000\nbackoff = { initial = "1s", max = "2s" }\n\n'
        )
    config = work / "factoryd.toml"
    config.write_text(text)
    log = work / "daemon.log"
    proc = psutil.Popen(
        [PY, "-m", "factoryd", "run", "--config", str(config), "--log-format", "json"],
        stdout=log.open("wb"),
        stderr=log.open("ab"),
        cwd=ROOT,
    )
    return proc, port, log


def stop(proc: psutil.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except psutil.TimeoutExpired:
        proc.kill()


def part_c(seconds: float, clients: int) -> None:
    """RSS over time of two daemons, one without pages and one with pages
    connected throughout (no reconnects), one after the other."""
    print(f"C. daemon RSS (MiB) every 15 s, 200 tasks restarting, {seconds:.0f} s each")
    for pages in (0, clients):
        proc, port, _ = start_busy_daemon()
        try:
            wait_up(port)
            readers = [Reader(port) for _ in range(pages)]
            for r in readers:
                r.start()
            t0, line = time.monotonic(), []
            while time.monotonic() - t0 < seconds:
                time.sleep(15.0)
                line.append(f"{proc.memory_info().rss / 2**20:.1f}")
            got = sum(r.bytes for r in readers)
            for r in readers:
                r.stop.set()
            print(f"   {pages} pages ({got / 1024:.0f} KiB pushed): {' '.join(line)}")
        finally:
            stop(proc)


def part_b(seconds: float, clients: int) -> None:
    proc, port, log = start_busy_daemon()
    try:
        conn = wait_up(port)
        status = json.loads(fetch(conn, "/api/status"))
        run_id = next(t["run_id"] for t in status["tasks"] if t["run_id"])
        quiet: list[float] = []
        streaming: list[float] = []
        rss: list[tuple[float, int]] = []
        events = got = 0
        t0 = time.monotonic()
        block = 10.0
        while time.monotonic() - t0 < seconds:
            on = int((time.monotonic() - t0) // block) % 2 == 1
            readers = []
            if on:
                readers = [Reader(port) for _ in range(clients)]
                readers.append(Reader(port, f"/api/runs/{run_id}/log/stream"))
                for r in readers:
                    r.start()
            end = t0 + (int((time.monotonic() - t0) // block) + 1) * block
            while time.monotonic() < min(end, t0 + seconds):
                (streaming if on else quiet).append(get_sleep(conn, "/metrics", 0.5))
                rss.append((time.monotonic() - t0, proc.memory_info().rss))
            for r in readers:
                r.stop.set()
                events += r.events
                got += r.bytes
        started = sum(
            1 for line in log.read_text(errors="replace").splitlines() if '"run.started"' in line
        )
        first = next(m for t, m in rss if t >= 2 * block)
        print(
            f"B. real daemon, 200 tasks, {seconds:.0f} s, {block:.0f} s blocks alternating "
            f"no page / {clients} pages + 1 log tail"
        )
        print(f"   GET /metrics, no page open:     {ms(quiet)}")
        print(f"   GET /metrics, pages streaming:  {ms(streaming)}")
        print(f"   runs started: {started}; events pushed: {events} ({got / 1024:.0f} KiB)")
        print(
            f"   daemon RSS: {first / 2**20:.1f} MiB after the first streaming block, "
            f"{rss[-1][1] / 2**20:.1f} MiB at the end (max {max(m for _, m in rss) / 2**20:.1f})"
        )
    finally:
        stop(proc)


def scrape_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            if get(conn, "/healthz") < 10:
                time.sleep(2.0)  # let the first runs start
                return conn
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the daemon did not come up")


def fetch(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    return conn.getresponse().read()


def get_sleep(conn: http.client.HTTPConnection, path: str, pause: float = 1.0) -> float:
    took = get(conn, path)
    time.sleep(pause)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument(
        "--rss", type=float, default=0.0, help="also run part C for this many seconds per daemon"
    )
    args = parser.parse_args()
    part_a(args.rounds, args.clients)
    part_b(args.seconds, args.clients)
    if args.rss:
        part_c(args.rss, args.clients)
    print("target: scrape median <= 10 ms (bench/scrape.py); RSS flat while pages stream")


if __name__ == "__main__":
    main()
