"""A host cut off from the database stops acting on its claim within the lease.

The cut-off host runs in a network namespace of its own and reaches
PostgreSQL over TCP on that namespace's loopback, through a small relay to
the server's Unix socket (a Unix socket crosses namespaces; a TCP link
through `lo` can be cut). `ip link set lo down` is the partition. The host
keeps its own lease deadlines (LeaseKeeper) on its monotonic clock and
renews from a heartbeat thread, as the daemon will. Expected: it stops
its run before the lease ends in the database, another host then claims
the item as a new attempt, and when the link returns the stale token's
finish is refused: never two live runs of one item.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from factoryd.state.fleet.queue import DurableQueue
from psycopg.conninfo import conninfo_to_dict

pytest_plugins = ["fleet_fixtures"]

ROOT = Path(__file__).resolve().parent.parent

# CI runs as root with iproute2 installed (scripts/install-system-deps): there a
# missing namespace tool is a failure, never a quiet skip.
pytestmark = pytest.mark.skipif(
    os.environ.get("CI") != "true" and (os.getuid() != 0 or shutil.which("ip") is None),
    reason="needs root and iproute2 (netns)",
)

HOST = r"""
import json, socket, sys, threading, time
sys.path.insert(0, sys.argv[1])
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.errors import FleetUnavailable
from factoryd.state.fleet.leases import LeaseKeeper
from factoryd.state.fleet.queue import DurableQueue

unix_path, rest, lease = sys.argv[2], sys.argv[3], float(sys.argv[4])

def emit(**kw):
    print(json.dumps({**kw, "t": time.time()}), flush=True)

def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()

def relay():
    while True:
        conn, _ = srv.accept()
        up = socket.socket(socket.AF_UNIX)
        up.connect(unix_path)
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()

threading.Thread(target=relay, daemon=True).start()
dsn = f"host=127.0.0.1 port={srv.getsockname()[1]} {rest}"
db = Database(dsn, io_timeout=0.5, connect_timeout=1, backoff_initial=0.1, backoff_max=0.3)
q = DurableQueue(db, "cutoff", lease=lease)
keeper = LeaseKeeper(lease)
lock = threading.Lock()
while True:
    sent = time.monotonic()
    claims = q.claim()
    if claims:
        break
    time.sleep(0.05)
claim = claims[0]
keeper.claimed(claim.item, claim.attempt, sent)
emit(ev="claimed", item=claim.item, attempt=claim.attempt)
stop = threading.Event()

def heartbeat():
    while not stop.is_set():
        with lock:
            pairs = keeper.pairs()
        sent = time.monotonic()
        try:
            ours = q.renew(pairs)
        except FleetUnavailable:
            emit(ev="unreachable")
        else:
            with lock:
                for item in keeper.renewed(ours, sent):
                    emit(ev="stopped", item=item, why="taken")
        stop.wait(lease / 4)

threading.Thread(target=heartbeat, daemon=True).start()
running = True
while running:
    with lock:
        for item in keeper.lapsed(time.monotonic()):
            emit(ev="stopped", item=item, why="lease")
            running = False
    time.sleep(0.02)
stop.set()
sys.stdin.readline()  # the link is back
while True:
    try:
        emit(ev="finish", ok=q.finish(claim.item, claim.attempt, outcome="succeeded"))
        break
    except FleetUnavailable:
        time.sleep(0.1)
"""


def ns(name: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, *argv], check=True)


def test_a_partitioned_host_stops_before_another_takes_over_and_cannot_finish(
    pg, connect, dsn
) -> None:
    lease = 2.0
    survivor = DurableQueue(connect(), "survivor", lease=lease)
    survivor.enqueue("s1", "t", {})
    name = f"fleetcut{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    proc = None
    try:
        ns(name, "ip", "link", "set", "lo", "up")
        parts = conninfo_to_dict(dsn)
        rest = f"user={parts['user']} dbname={parts['dbname']} options='{parts['options']}'"
        unix = str(pg.root / f".s.PGSQL.{pg.port}")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", HOST, str(ROOT / "daemon"),
             unix, rest, str(lease)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None

        events: list[dict] = []

        def read() -> None:
            for line in proc.stdout:
                events.append(json.loads(line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def next_event(kind: str, timeout: float = 30.0) -> dict:
            end = time.monotonic() + timeout
            while True:
                found = [e for e in events if e["ev"] == kind]
                if found:
                    return found[0]
                assert time.monotonic() < end, f"no {kind} event; the host said {events}"
                time.sleep(0.02)

        claimed = next_event("claimed")
        assert claimed["attempt"] == 1
        ns(name, "ip", "link", "set", "lo", "down")
        cut_at = time.time()
        deadline = time.monotonic() + lease + 5
        while not (taken := survivor.claim()):
            assert time.monotonic() < deadline, f"no other host took the claim over: {events}"
            time.sleep(0.05)
        taken_at = time.time()
        stopped = next_event("stopped")
        assert stopped["item"] == claimed["item"] and stopped["why"] == "lease"
        assert stopped["t"] <= taken_at, "two live runs: it still ran when the item moved"
        assert stopped["t"] - cut_at <= lease + 0.5
        assert (taken[0].attempt, taken[0].lost_by) == (2, "cutoff")
        ns(name, "ip", "link", "set", "lo", "up")
        proc.stdin.write("up\n")
        proc.stdin.flush()
        assert next_event("finish")["ok"] is False
        assert survivor.finish(taken[0].item, taken[0].attempt, outcome="succeeded")
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", name], check=False)
