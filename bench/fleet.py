"""Fleet storage on a real PostgreSQL: throughput, claim latency, takeover, overspend.

Starts a throwaway PostgreSQL (tests/pg_kit.py: initdb + pg_ctl in a temp
dir, fsync off as in the tests) and measures, with three clients as three
hosts on one machine:

* reserve + settle per second across three hosts (each op: an all-or-nothing
  reserve on two pools, then its commit), beside the in-memory ledger of one
  host doing the same;
* claim latency with NOTIFY: enqueue on one connection to claim by an idle
  host woken by LISTEN, p50 / p99;
* takeover: a claimer process is killed (-9); time until another host has
  its item (bounded below by the lease);
* overspend under contention: three hosts race reserves on one pool; what
  was granted beyond the limit (must be 0).

Figures, not a timed test. `python bench/fleet.py [--quick]`; `run(results)`
adds rows to bench/run_all.py's table.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import common  # noqa: E402
from factoryd.routing.ledger import PoolLedger, Reservation  # noqa: E402
from factoryd.routing.model import PoolSpec, PoolUnit  # noqa: E402
from factoryd.state.fleet.db import Database  # noqa: E402
from factoryd.state.fleet.ledger import SharedLedger  # noqa: E402
from factoryd.state.fleet.queue import DurableQueue, QueueWaiter  # noqa: E402
from factoryd.state.fleet.schema import migrate  # noqa: E402
from pg_kit import PgServer  # noqa: E402

POOLS = [PoolSpec("tok", PoolUnit.TOKENS, 1e15), PoolSpec("plan", PoolUnit.RUNS, 1e12)]


def _open(dsn: str) -> Database:
    db = Database(dsn)
    migrate(db)
    return db


def round_trips(pg: PgServer, n: int) -> float:
    """Empty transactions (BEGIN; SELECT 1; COMMIT) per second on one connection:
    the machine's floor for any database call, measured in the same run."""
    db = _open(pg.fresh_db())
    t0 = time.perf_counter()
    for _ in range(n):
        db.run(lambda conn: conn.execute("SELECT 1").fetchone())
    rate = n / (time.perf_counter() - t0)
    db.close()
    return rate


def reserve_settle(pg: PgServer, ops: int) -> tuple[float, float]:
    """(fleet ops/s across 3 hosts, one host's in-memory ops/s)."""
    dsn = pg.fresh_db()
    ledgers = [SharedLedger(_open(dsn), f"h{i}") for i in range(3)]
    ledgers[0].sync_pools(POOLS)
    start = threading.Barrier(4)

    def host(ledger: SharedLedger) -> None:
        start.wait()
        for _ in range(ops):
            res = ledger.reserve("arm", "t", {"tok": 1000.0, "plan": 1.0}, ttl=600)
            assert isinstance(res, Reservation)
            ledger.commit(res.id, {"tok": 800.0, "plan": 1.0})

    threads = [threading.Thread(target=host, args=(led,)) for led in ledgers]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    fleet = 3 * ops / (time.perf_counter() - t0)
    for led in ledgers:
        led.db.close()
    return fleet, _in_memory()


def _in_memory() -> float:
    local = PoolLedger(POOLS)
    n = 20000
    t0 = time.perf_counter()
    for i in range(n):
        res = local.reserve("arm", "t", {"tok": 1000.0, "plan": 1.0}, now=float(i), ttl=600)
        assert isinstance(res, Reservation)
        local.commit(res.id, {"tok": 800.0, "plan": 1.0})
    return n / (time.perf_counter() - t0)


def claim_latency(pg: PgServer, items: int) -> list[float]:
    """Seconds from enqueue (committed) to claim by an idle, LISTENing host."""
    dsn = pg.fresh_db()
    producer = DurableQueue(_open(dsn), "producer")
    claimer = DurableQueue(_open(dsn), "idle")
    waiter = QueueWaiter(dsn)
    waiter.wait(0)
    sent: dict[str, float] = {}
    got: list[float] = []
    ready = threading.Event()

    def idle_host() -> None:
        ready.set()
        while len(got) < items:
            for claim in claimer.claim(10):
                got.append(time.perf_counter() - sent[claim.sub_id])
            if len(got) < items:
                waiter.wait(1.0)

    t = threading.Thread(target=idle_host)
    t.start()
    ready.wait()
    for i in range(items):
        time.sleep(0.01)  # let the host go idle again: each claim is a wake-up
        sent[f"s{i}"] = time.perf_counter()
        producer.enqueue(f"s{i}", "t", {})
    t.join()
    waiter.close()
    producer.db.close()
    claimer.db.close()
    return got


CLAIMER = """
import sys, time
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.queue import DurableQueue
q = DurableQueue(Database(sys.argv[1]), "doomed", lease=float(sys.argv[2]))
claims = []
while not claims:
    claims = q.claim()
print("claimed", flush=True)
while True:
    q.renew([(c.item, c.attempt) for c in claims])
    time.sleep(float(sys.argv[2]) / 3)
"""


def takeover(pg: PgServer, lease: float) -> float:
    """Seconds from kill -9 of a host holding an item to another host claiming it."""
    dsn = pg.fresh_db()
    survivor = DurableQueue(_open(dsn), "survivor", lease=lease)
    survivor.enqueue("s1", "t", {})
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, dsn, str(lease)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
    time.sleep(lease)  # it has renewed at least twice
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.perf_counter()
    proc.wait()
    while not survivor.claim():
        time.sleep(0.02)  # the polling fallback: a lapse sends no NOTIFY
    took = time.perf_counter() - killed
    survivor.db.close()
    return took


def overspend(pg: PgServer, limit: int, attempts: int) -> tuple[int, int]:
    """(granted, limit) when three hosts race `attempts` reserves each."""
    dsn = pg.fresh_db()
    ledgers = [SharedLedger(_open(dsn), f"h{i}") for i in range(3)]
    ledgers[0].sync_pools([PoolSpec("plan", PoolUnit.RUNS, float(limit))])
    granted = [0, 0, 0]
    start = threading.Barrier(3)

    def host(i: int) -> None:
        start.wait()
        for _ in range(attempts):
            if isinstance(ledgers[i].reserve("arm", "t", {"plan": 1.0}, ttl=600), Reservation):
                granted[i] += 1

    threads = [threading.Thread(target=host, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for led in ledgers:
        led.db.close()
    return sum(granted), limit


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run(results: common.Results, quick: bool = False) -> None:
    print("fleet (PostgreSQL, 3 hosts on one machine)", flush=True)
    pg = PgServer()
    try:
        floor = round_trips(pg, 500 if quick else 2000)
        results.add(common.Row("fleet", "empty transactions /s (1 client; the floor)",
                               f"{floor:.0f}", "-", "-", "-"))  # fmt: skip
        fleet, local = reserve_settle(pg, 200 if quick else 1000)
        results.add(common.Row("fleet", "reserve + settle /s (3 hosts, 2 pools)",
                               f"{fleet:.0f}", f"{local:.0f} (1 host, in memory)",
                               f"{fleet / local:.3f}", "-"))  # fmt: skip
        lat = claim_latency(pg, 50 if quick else 200)
        results.add(common.Row("fleet", "claim latency with NOTIFY p50 / p99",
                               f"{pct(lat, 0.5) * 1e3:.2f} / {pct(lat, 0.99) * 1e3:.2f} ms", "-",
                               "-", "p99 < 100 ms", pct(lat, 0.99) < 0.1))  # fmt: skip
        lease = 2.0
        took = [takeover(pg, lease) for _ in range(1 if quick else 3)]
        results.add(common.Row("fleet", f"host death to work elsewhere (lease {lease:.0f}s)",
                               common.summary(took, unit=" s"), "-", "-", "< lease + 5 s",
                               max(took) < lease + 5))  # fmt: skip
        granted, limit = overspend(pg, 100, 100)
        results.add(common.Row("fleet", "overspend under contention (3 x 100 on 100)",
                               str(granted - limit), "-", "-", "0", granted == limit))  # fmt: skip
    finally:
        pg.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    run(common.Results(), quick=parser.parse_args().quick)


if __name__ == "__main__":
    main()
