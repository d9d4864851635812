"""PostgreSQL goes away mid-way: one clear error, backoff, no overspend, nothing lost.

Three hosts reserve a runs pool of 12 and settle what they start while the
server is stopped as if it crashed (immediate mode: WAL recovery on
start). While it is down every reserve fails (no shared work starts) and
settlements go to each host's local outbox; when it is back the outboxes
are replayed and the hosts reserve on until the pool is full.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid

import psycopg
from factoryd.routing.ledger import Refusal
from factoryd.routing.model import RejectReason
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.errors import FleetUnavailable
from factoryd.state.fleet.ledger import SharedLedger
from factoryd.state.fleet.outbox import SettlementOutbox
from fleet_kit import pool

pytest_plugins = ["fleet_fixtures"]

LIMIT = 12


def test_a_restart_mid_way_loses_no_reservation_and_overspends_nothing(
    pg, connect, dsn, tmp_path
) -> None:
    events: dict[str, list[bool]] = {}
    hosts = []
    for i in range(3):
        name = f"h{i}"
        events[name] = []
        db = connect(
            backoff_initial=0.05,
            backoff_max=0.3,
            connect_timeout=2,
            on_change=lambda up, _reason, n=name: events[n].append(up),
        )
        hosts.append((SharedLedger(db, name), SettlementOutbox(tmp_path / f"{name}.db")))
    hosts[0][0].sync_pools([pool("plan", "runs", LIMIT)])
    granted: list[str] = []
    committed: list[str] = []
    failures: dict[str, int] = {h.host: 0 for h, _ in hosts}
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def host(ledger: SharedLedger, outbox: SettlementOutbox, rng: random.Random) -> None:
        try:
            while not stop.is_set():
                outbox.flush(ledger)
                rid = f"{ledger.host}/{uuid.uuid4().hex[:12]}"
                try:
                    got = ledger.reserve("claude", "t", {"plan": 1.0}, ttl=3600, res_id=rid)
                except FleetUnavailable:
                    outbox.rollback(rid)  # the answer may have been lost: release it
                    with lock:
                        failures[ledger.host] += 1
                    time.sleep(0.02)
                    continue
                if isinstance(got, Refusal):
                    assert got.reason is RejectReason.POOL_EXHAUSTED
                    if len(outbox) == 0:
                        return
                    time.sleep(0.02)
                    continue
                with lock:
                    granted.append(rid)
                if rng.random() < 0.6:  # the run ends now; the rest stay in flight
                    with lock:
                        committed.append(rid)
                    try:
                        ledger.commit(rid, {"plan": 1.0})
                    except FleetUnavailable:
                        outbox.commit(rid, {"plan": 1.0})
                time.sleep(0.15)  # a run start is not free
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=host, args=(led, box, random.Random(i)))
        for i, (led, box) in enumerate(hosts)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(granted) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pg.stop("immediate")
    try:
        while min(failures.values()) < 2:  # every host has met the outage
            assert time.monotonic() < deadline, failures
            time.sleep(0.01)
        during = len(granted)
        time.sleep(0.3)
        assert len(granted) == during, "a reservation was granted while the database was down"
    finally:
        pg.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    assert not errors, errors
    for ledger, outbox in hosts:
        outbox.flush(ledger)
        assert len(outbox) == 0
    view = hosts[0][0].view().pools["plan"]
    assert len(granted) == LIMIT
    assert view.used + view.reserved == LIMIT
    # Every settlement made, during the outage or not, was applied exactly once.
    assert view.used == len(committed)
    with psycopg.connect(dsn) as conn:
        held = {r[0] for r in conn.execute("SELECT res_id FROM fleet_holds")}
        settled = {r[0]: r[1] for r in conn.execute("SELECT res_id, kind FROM fleet_settlements")}
    # No granted reservation was lost: each is either committed or still held.
    for rid in granted:
        assert (rid in committed and settled.get(rid) == "commit") or rid in held, rid
    assert held == set(granted) - set(committed)
    # One transition per change: down once, up again once (after the first connect).
    for name, seen in events.items():
        assert seen[:1] == [True] and seen[-1] is True, (name, seen)
        assert all(a != b for a, b in itertools.pairwise(seen)), (name, seen)
        assert False in seen, (name, seen)


def test_an_unreachable_database_fails_fast_and_backs_off(pg) -> None:
    changes: list[tuple[bool, str]] = []
    db = Database(
        pg.url("fleet").replace(f"port={pg.port}", "port=1"),
        backoff_initial=0.5,
        backoff_max=1.0,
        connect_timeout=1,
        on_change=lambda up, why: changes.append((up, why)),
    )
    try:
        started = time.monotonic()
        for _ in range(5):
            try:
                db.ping()
                raise AssertionError("reached a database that is not there")
            except FleetUnavailable as exc:
                assert "\n" not in str(exc)
        assert time.monotonic() - started < 2.0
        assert db.connect_failures == 1  # the other four waited for the backoff
        assert [up for up, _ in changes] == [False] and not db.connected
    finally:
        db.close()
