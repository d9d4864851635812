"""Memory: RSS of the daemon after 5,000 and 10,000 completed runs (real processes,
journal on), and the growth between the two. Target <= 80 MB, growth < 5%.

In-process so that RSS is the daemon's alone; 50 services restart `true` with a
1 ms backoff, so runs come and go as fast as they can.
"""

from __future__ import annotations

import io

import anyio
import psutil
from common import Results, Row, factoryd_config, factoryd_task, tmpdir

from daemon.config import load_config
from daemon.journal import Journal
from daemon.logs import configure
from daemon.reconciler import Reconciler


def rss_at(marks: tuple[int, ...] = (5000, 10000)) -> dict[int, int]:
    configure("json", "warning", stream=io.StringIO())
    work = tmpdir("memory")
    tasks = [
        factoryd_task(
            f"s{i:02}",
            ["true"],
            restart="always",
            max_restarts=10**5,
            backoff={"initial": "1ms", "max": "1ms", "reset_after": "1ms"},
        )
        for i in range(50)
    ]
    config = load_config(factoryd_config(work, tasks, max_concurrent=16))
    config.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    rec = Reconciler(config, journal=Journal(config.daemon.state_dir / "journal.db"))
    me = psutil.Process()
    seen: dict[int, int] = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rec.run)
            for mark in marks:
                with anyio.fail_after(300):
                    while sum(rt.runs for rt in rec.tasks.values()) < mark:
                        await anyio.sleep(0.05)
                seen[mark] = me.memory_info().rss
            rec.request_stop()

    anyio.run(main)
    return seen


def run(results: Results) -> None:
    print("memory: RSS after 5,000 and 10,000 completed runs", flush=True)
    seen = rss_at()
    a, b = seen[5000], seen[10000]
    growth = (b - a) / a
    results.add(
        Row(
            "memory",
            "RSS after 10,000 runs",
            f"{b / 2**20:.1f} MiB",
            "-",
            "-",
            "<= 80 MB",
            b <= 80e6,
        )
    )
    results.add(
        Row(
            "memory",
            "RSS growth 5,000 -> 10,000 runs",
            f"{growth:+.1%}",
            f"{a / 2**20:.1f} -> {b / 2**20:.1f} MiB",
            "-",
            "< 5%",
            growth < 0.05,
        )
    )


if __name__ == "__main__":
    run(Results())
