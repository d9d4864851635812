"""Scrape cost of /metrics with 100 tasks x 20 arms x 10 pools.

Populates every metric family as a busy daemon would (each task has run on
3 arms with 3 outcomes, rejections on every arm, tokens of every kind), then
times (a) rendering the exposition on the loop and (b) a full HTTP GET over
loopback, and prints medians beside the target (<= 10 ms median).

    python bench/scrape.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import anyio
from factoryd.config.loader import load_config
from factoryd.observe.scrape import StateCollector
from factoryd.reconcile.reconciler import Reconciler
from factoryd.routing.model import RouteRequest, Usage
from factoryd.service import http


def config_text(state: Path) -> str:
    parts = [f'[daemon]\nstate_dir = "{state}"\nmetrics_listen = "off"\n']
    for p in range(10):
        parts.append(
            f'[[pools]]\nname = "pool{p}"\nunit = "{["tokens", "runs", "usd"][p % 3]}"\n'
            f'limit = 1000000\nwindow = "5h"\n'
        )
    for a in range(20):
        parts.append(
            f'[[arms]]\nname = "arm{a}"\ncli = "command"\n'
            f'pools = ["pool{a % 10}", "pool{(a + 3) % 10}"]\n'
        )
    for t in range(100):
        parts.append(f'[[tasks]]\nname = "task{t:03}"\nargv = ["true"]\n')
    return "\n".join(parts)


def build() -> Reconciler:
    state = Path(tempfile.mkdtemp())
    path = state / "f.toml"
    path.write_text(config_text(state))
    rec = Reconciler(load_config(path))
    m = rec.metrics
    now = time.time()
    for t in range(100):
        task = f"task{t:03}"
        for a in (t % 20, (t + 7) % 20, (t + 13) % 20):
            arm = f"arm{a}"
            m.runs_started.add((task, arm), 5)
            for outcome in ("succeeded", "failed", "timed_out"):
                m.runs_finished.add((task, arm, outcome))
        m.run_duration.labels(task).observe(42.0)
        m.restarts.labels(task).inc()
        d = rec.engine.route(RouteRequest(task=task, estimated_tokens=1000), now)
        m.decision(d, 1e-4)
        rec.engine.settle(
            d,
            now=now,
            usage=Usage(input_tokens=900, output_tokens=100),
            ok=True,
            duration=40.0,
            task_type="generation",
        )
    for a in range(20):
        for kind in ("input", "output", "cache_read", "cache_write", "reasoning"):
            m.tokens.labels(f"arm{a}", kind).inc(1000)
        for reason in ("pool_exhausted", "backoff", "limited", "at_capacity"):
            m.rejections.labels(f"arm{a}", reason).inc()
        m.cost.labels(f"arm{a}").inc(1.5)
        m.limit_hits.labels(f"arm{a}", f"pool{a % 10}").inc()
    m.add_state_collector(
        StateCollector(
            lambda: rec.engine,
            rec.table.phase_counts,
            rec.book.run_states,
            rec.table.blocked_by_label,
        )
    )
    return rec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    rec = build()
    body = rec.metrics.exposition()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    render = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        rec.metrics.exposition()
        render.append(time.perf_counter() - t0)

    port_box: list[int] = []
    ready = threading.Event()

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                http.serve, "127.0.0.1:0", rec.metrics.exposition, lambda: (True, "ok")
            )
            port_box.append(port)
            ready.set()
            await anyio.sleep(3600)

    threading.Thread(target=lambda: anyio.run(serve), daemon=True).start()
    ready.wait(10)
    url = f"http://127.0.0.1:{port_box[0]}/metrics"
    scrape = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
        scrape.append(time.perf_counter() - t0)
    print(f"exposition: {series} series, {len(body) / 1024:.0f} KiB")
    print(
        f"render on the loop: median {statistics.median(render) * 1e3:.2f} ms "
        f"(min {min(render) * 1e3:.2f}, max {max(render) * 1e3:.2f})"
    )
    print(
        f"HTTP GET /metrics:  median {statistics.median(scrape) * 1e3:.2f} ms "
        f"(min {min(scrape) * 1e3:.2f}, max {max(scrape) * 1e3:.2f})"
    )
    print("target: <= 10 ms median")


if __name__ == "__main__":
    main()
