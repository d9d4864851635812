"""Memory: RSS of factoryd (the daemon and its spawn helper, as processes of
their own, journal on) after 5,000 and 10,000 completed runs, and the growth
between the two. Target <= 80 MB, growth < 5%.

50 services restart `true` with a 1 ms backoff, so runs come and go as fast
as they can. Completed runs are counted in the journal (SQLite in WAL mode
takes a reader beside the daemon's writer), not through the daemon. The two
RSS figures are added: pages the processes share (the interpreter) count
twice, so the sum errs high.
"""

from __future__ import annotations

import sqlite3

import psutil
from common import (
    Results,
    Row,
    expect,
    factoryd_config,
    factoryd_task,
    start_factoryd,
    stop,
    tmpdir,
)
from idle import spawn_helper


def _ended(journal: str) -> int:
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1.0) as db:
            return int(db.execute("SELECT COUNT(*) FROM runs WHERE state = 'ended'").fetchone()[0])
    except sqlite3.Error:
        return 0


def rss_at(marks: tuple[int, ...] = (5000, 10000)) -> dict[int, tuple[int, int]]:
    """(daemon RSS, helper RSS) when the journal holds each mark of ended runs."""
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
    daemon = start_factoryd(factoryd_config(work, tasks, max_concurrent=16), work / "log")
    journal = str(work / "state" / "journal.db")
    seen: dict[int, tuple[int, int]] = {}
    try:
        expect(lambda: _ended(journal) > 0, 60, "memory: a first run ended")
        me, helper = psutil.Process(daemon.pid), psutil.Process(spawn_helper(daemon.pid))
        for mark in marks:
            expect(
                lambda m=mark: _ended(journal) >= m,
                600,
                f"memory: {mark} runs ended",
                lambda: _ended(journal),
                interval=0.2,
            )
            seen[mark] = (me.memory_info().rss, helper.memory_info().rss)
    finally:
        stop(daemon)
    return seen


def run(results: Results) -> None:
    print("memory: RSS after 5,000 and 10,000 completed runs", flush=True)
    seen = rss_at()
    a, b = sum(seen[5000]), sum(seen[10000])
    daemon, helper = seen[10000]
    growth = (b - a) / a
    results.add(
        Row(
            "memory",
            "RSS after 10,000 runs (daemon + spawn helper)",
            f"{b / 2**20:.1f} MiB ({daemon / 2**20:.1f} + {helper / 2**20:.1f})",
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
