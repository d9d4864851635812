"""The durable queue on a real PostgreSQL: SKIP LOCKED claims, leases, fencing, NOTIFY."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from factoryd.state.fleet.queue import DurableQueue, QueueWaiter
from fleet_kit import shift_clock

pytest_plugins = ["fleet_fixtures"]

ROOT = Path(__file__).resolve().parent.parent


def test_enqueue_is_idempotent_and_claims_carry_a_fencing_token(connect) -> None:
    q = DurableQueue(connect(), "h1", lease=30)
    first = q.enqueue("s1", "build", {"argv": ["make"]}, idem_key="k1")
    again = q.enqueue("s2", "build", {"argv": ["make"]}, idem_key="k1")
    assert first.created and not again.created and again.sub_id == "s1"
    (claim,) = q.claim(5)
    assert (claim.sub_id, claim.attempt, claim.lost_by) == ("s1", 1, None)
    assert claim.request == {"argv": ["make"]}
    assert q.claim() == []
    assert q.finish(claim.item, claim.attempt, outcome="succeeded")
    assert q.items(["done"])[0]["outcome"] == "succeeded"


def test_two_claimers_never_get_the_same_item(connect) -> None:
    producer = DurableQueue(connect(), "p")
    for i in range(200):
        producer.enqueue(f"s{i}", "t", {"n": i})
    got: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    start = threading.Barrier(3)

    def claimer(name: str) -> None:
        q = DurableQueue(connect(), name)
        start.wait()
        while batch := q.claim(3):
            got[name].extend(c.item for c in batch)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    everything = [i for items in got.values() for i in items]
    assert len(everything) == 200 and len(set(everything)) == 200
    assert sum(1 for items in got.values() if items) >= 2


def test_a_stale_token_can_neither_renew_nor_finish(connect, dsn) -> None:
    a = DurableQueue(connect(), "a", lease=30)
    b = DurableQueue(connect(), "b", lease=30)
    a.enqueue("s1", "t", {})
    (mine,) = a.claim()
    assert b.claim() == []  # the lease holds
    assert a.renew([(mine.item, mine.attempt)]) == {mine.item}
    shift_clock(dsn, 31.0, a.db, b.db)  # a's host paused past its lease
    (theirs,) = b.claim()
    assert (theirs.item, theirs.attempt, theirs.lost_by) == (mine.item, 2, "a")
    assert a.renew([(mine.item, mine.attempt)]) == set()
    assert not a.finish(mine.item, mine.attempt, outcome="succeeded")
    assert not a.release(mine.item, mine.attempt)
    assert b.finish(theirs.item, theirs.attempt, outcome="succeeded")
    (row,) = a.items(["done"])
    assert (row["host"], row["attempt"]) == ("b", 2)


def test_a_lapsed_lease_renewed_before_anyone_claims_is_kept(connect, dsn) -> None:
    a = DurableQueue(connect(), "a", lease=30)
    a.enqueue("s1", "t", {})
    (mine,) = a.claim()
    shift_clock(dsn, 31.0, a.db)
    assert a.renew([(mine.item, mine.attempt)]) == {mine.item}
    assert DurableQueue(connect(), "b").claim() == []


CLAIMER = """
import sys, time
sys.path.insert(0, sys.argv[3])
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.queue import DurableQueue
q = DurableQueue(Database(sys.argv[1]), "doomed", lease=float(sys.argv[2]))
claims = []
while not claims:
    claims = q.claim()
print(claims[0].item, claims[0].attempt, flush=True)
while True:  # the heartbeat, until kill -9
    q.renew([(c.item, c.attempt) for c in claims])
    time.sleep(float(sys.argv[2]) / 4)
"""


def test_a_killed_claimers_item_is_claimed_by_another_after_the_lease(connect, dsn) -> None:
    lease = 1.5
    q = DurableQueue(connect(), "survivor", lease=lease)
    q.enqueue("s1", "t", {})
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, dsn, str(lease), str(ROOT / "daemon")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        item, attempt = map(int, proc.stdout.readline().split())
        assert attempt == 1
        # Alive and heartbeating: its lease keeps being renewed past the first one.
        until = time.monotonic() + 2 * lease
        while time.monotonic() < until:
            assert q.claim() == []
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        proc.kill()
        proc.wait()
    deadline = killed_at + lease + 5
    while not (claims := q.claim()):
        assert time.monotonic() < deadline, "the dead host's item was never reclaimed"
        time.sleep(0.05)
    took = time.monotonic() - killed_at
    (claim,) = claims
    assert (claim.item, claim.attempt, claim.lost_by) == (item, 2, "doomed")
    assert took <= lease + 1.0


def test_notify_wakes_a_waiting_claimer_at_once(connect, dsn) -> None:
    waiter = QueueWaiter(dsn)
    q = DurableQueue(connect(), "idle")
    try:
        assert waiter.wait(0.0)  # first call: connected, claim what is already there
        assert not waiter.wait(0.2)  # nothing queued: the timeout (polling) ends the wait
        woke: list[float] = []

        def sleeper() -> None:
            if waiter.wait(30.0):
                woke.append(time.monotonic())

        t = threading.Thread(target=sleeper)
        t.start()
        time.sleep(0.2)  # let it block in LISTEN (the wake must come from NOTIFY)
        sent = time.monotonic()
        DurableQueue(connect(), "submitter").enqueue("s1", "t", {})
        t.join(timeout=10)
        assert woke and woke[0] - sent < 0.5
        assert [c.sub_id for c in q.claim()] == ["s1"]
    finally:
        waiter.close()


def test_a_released_item_is_claimable_again_and_cancel_withdraws(connect) -> None:
    a = DurableQueue(connect(), "a")
    a.enqueue("s1", "t", {})
    a.enqueue("s2", "t", {})
    first = a.claim()[0]
    assert a.release(first.item, first.attempt, "no room")
    again = DurableQueue(connect(), "b").claim(2)
    assert [(c.sub_id, c.lost_by) for c in again] == [("s1", None), ("s2", None)]
    assert again[0].attempt == 2
    assert a.cancel("s2")
    assert not DurableQueue(connect(), "b").renew([(again[1].item, again[1].attempt)])


def test_a_host_gone_mid_transaction_does_not_keep_its_row_locks(connect) -> None:
    q = DurableQueue(connect(), "b")
    q.enqueue("s1", "t", {})
    vanished = connect(io_timeout=1.0)
    with vanished.connection() as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT id FROM fleet_queue FOR UPDATE")  # then the host is gone
        assert q.claim() == []  # the locked row is skipped while its session lives
        deadline = time.monotonic() + 10
        while not (claims := q.claim()):
            assert time.monotonic() < deadline, "the vanished session kept its lock"
            time.sleep(0.05)
        assert claims[0].sub_id == "s1"
