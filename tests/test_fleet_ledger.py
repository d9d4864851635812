"""The shared pool ledger on a real PostgreSQL: atomic, fleet-wide, on the DB's clock."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from factoryd.routing.ledger import Refusal, Reservation
from factoryd.routing.model import RejectReason
from factoryd.state.fleet.errors import FleetError, FleetSchemaError
from factoryd.state.fleet.ledger import Settled, SharedLedger
from factoryd.state.fleet.schema import SCHEMA_VERSION, migrate
from fleet_kit import pool, shift_clock

pytest_plugins = ["fleet_fixtures"]

HOUR = 3600.0


def hosts(connect, n: int = 3) -> list[SharedLedger]:
    return [SharedLedger(connect(), f"h{i + 1}") for i in range(n)]


def test_schema_is_versioned_and_a_newer_one_is_refused(connect, dsn) -> None:
    db = connect()
    assert migrate(db) == SCHEMA_VERSION  # already migrated by the fixture: nothing to do
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE fleet_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(FleetSchemaError, match="schema version 99"):
        migrate(db)


def test_runs_pool_of_12_shared_by_three_hosts_grants_exactly_12(connect, dsn) -> None:
    ledgers = hosts(connect)
    assert ledgers[0].sync_pools([pool("plan", "runs", 12, window="5h")]) == []
    for ledger in ledgers[1:]:
        assert ledger.sync_pools([pool("plan", "runs", 12, window="5h")]) == []
    granted: list[Reservation] = []
    refused: list[Refusal] = []
    lock = threading.Lock()
    start = threading.Barrier(3)

    def host(ledger: SharedLedger) -> None:
        start.wait()
        for i in range(10):
            got = ledger.reserve("claude", f"{ledger.host}-{i}", {"plan": 1.0}, ttl=HOUR)
            with lock:
                (granted if isinstance(got, Reservation) else refused).append(got)

    threads = [threading.Thread(target=host, args=(led,)) for led in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(granted) == 12 and len(refused) == 18
    assert {r.reason for r in refused} == {RejectReason.POOL_EXHAUSTED}
    assert len({g.task.split("-")[0] for g in granted}) >= 2  # the hosts really competed
    for res in granted:
        assert ledgers[0].commit(res.id, {"plan": 1.0}) is Settled.HELD
    view = ledgers[1].view()
    assert (view.pools["plan"].used, view.pools["plan"].reserved) == (12.0, 0.0)
    assert isinstance(ledgers[2].reserve("claude", "late", {"plan": 1.0}, ttl=HOUR), Refusal)
    # The window resets (on the database's clock): every host may start again.
    first_end = view.pools["plan"].window_end
    assert first_end is not None
    shift_clock(dsn, first_end - view.now + 1.0, *(led.db for led in ledgers))
    after = ledgers[2].reserve("claude", "next-window", {"plan": 1.0}, ttl=HOUR)
    assert isinstance(after, Reservation)
    for ledger in ledgers:
        seen = ledger.view().pools["plan"]
        assert (seen.used, seen.reserved, seen.window_start) == (0.0, 1.0, first_end)


def test_reserve_is_all_or_nothing_across_an_arms_pools(connect) -> None:
    (ledger,) = hosts(connect, 1)
    ledger.sync_pools([pool("a", limit=100), pool("b", limit=10)])
    got = ledger.reserve("arm", "t", {"a": 50.0, "b": 20.0}, ttl=HOUR)
    assert isinstance(got, Refusal) and got.pool == "b"
    assert got.reason is RejectReason.POOL_INSUFFICIENT
    view = ledger.view()
    assert view.pools["a"].reserved == 0.0 and view.pools["b"].reserved == 0.0
    ok = ledger.reserve("arm", "t", {"a": 50.0, "b": 10.0}, ttl=HOUR)
    assert isinstance(ok, Reservation)
    unknown = ledger.reserve("arm", "t", {"nope": 1.0}, ttl=HOUR)
    assert isinstance(unknown, Refusal) and "not in the fleet" in unknown.detail
    # An id rolled back before its reserve arrived (an outbox replay) cannot be reused.
    assert ledger.rollback("h1/reused") is Settled.EXPIRED
    with pytest.raises(FleetError, match="already settled"):
        ledger.reserve("arm", "t", {"a": 1.0}, ttl=HOUR, res_id="h1/reused")
    assert ledger.view().pools["a"].reserved == 50.0


def test_holds_expire_on_the_databases_clock_not_the_hosts(connect, dsn) -> None:
    a, b = hosts(connect, 2)
    a.sync_pools([pool("p", limit=100)])
    # The database's clock runs a day ahead of this host's: the hold is dated by it.
    shift_clock(dsn, 86400.0, a.db, b.db)
    res = a.reserve("arm", "t", {"p": 100.0}, ttl=60.0)
    assert isinstance(res, Reservation)
    assert res.expires_at - res.created_at == 60.0
    assert abs(res.created_at - (time.time() + 86400.0)) < 30
    assert isinstance(b.reserve("arm", "u", {"p": 1.0}, ttl=60.0), Refusal)
    shift_clock(dsn, 86400.0 + 61.0, a.db, b.db)
    assert b.view().pools["p"].reserved == 0.0
    assert isinstance(b.reserve("arm", "u", {"p": 100.0}, ttl=60.0), Reservation)
    assert b.expired_total == 1
    # A lapsed hold's run still used what it reports: the commit records it.
    assert a.commit(res.id, {"p": 7.0}) is Settled.EXPIRED
    assert a.view().pools["p"].used == 7.0


def test_commit_and_rollback_settle_in_pool_units_once(connect) -> None:
    a, b = hosts(connect, 2)
    a.sync_pools([pool("tok", limit=1000), pool("usd", "usd", limit=5.0)])
    res = a.reserve("arm", "t", {"tok": 400.0, "usd": 1.0}, ttl=HOUR)
    assert isinstance(res, Reservation)
    assert a.commit(res.id, {"tok": 250.0, "usd": 0.4}) is Settled.HELD
    # A replay (another host's outbox, a retry after a lost answer) changes nothing.
    assert b.commit(res.id, {"tok": 250.0, "usd": 0.4}) is Settled.DUPLICATE
    assert b.rollback(res.id) is Settled.DUPLICATE
    other = b.reserve("arm", "u", {"tok": 300.0}, ttl=HOUR)
    assert isinstance(other, Reservation)
    assert b.rollback(other.id) is Settled.HELD
    view = a.view()
    assert (view.pools["tok"].used, view.pools["tok"].reserved) == (250.0, 0.0)
    assert view.pools["usd"].used == pytest.approx(0.4)
    assert a.holds() == []


def test_a_limit_seen_by_one_host_holds_the_pool_for_every_host(connect, dsn) -> None:
    a, b, c = hosts(connect)
    a.sync_pools([pool("plan", "runs", 100, limit_backoff=600.0, limit_backoff_max=3000.0)])
    now = a.view().now
    a.hold_limit(["plan"], now + HOUR, "429: usage limit reached")
    for ledger in (b, c):
        got = ledger.reserve("arm", "t", {"plan": 1.0}, ttl=HOUR)
        assert isinstance(got, Refusal) and got.reason is RejectReason.POOL_LIMITED
        assert "reported by h1" in got.detail and "429" in got.detail
    shift_clock(dsn, HOUR + 1.0, a.db, b.db, c.db)
    assert isinstance(c.reserve("arm", "t", {"plan": 1.0}, ttl=HOUR), Reservation)


def test_a_limit_without_reset_time_backs_off_once_per_fleet_strike(connect, dsn) -> None:
    a, b = hosts(connect, 2)
    a.sync_pools([pool("plan", "runs", 100, limit_backoff=600.0, limit_backoff_max=3000.0)])
    now = a.view().now
    first = a.hold_limit_unknown(["plan"], "429")
    assert 599 < first - now < 660
    # B meets the same limit while the pool is held: no second strike.
    assert b.hold_limit_unknown(["plan"], "429") == first
    assert b.view().pools["plan"].strikes == 1
    shift_clock(dsn, 700.0, a.db, b.db)
    second = b.hold_limit_unknown(["plan"], "429")
    assert 1199 < second - b.view().now < 1260  # doubled
    a.clear_strikes(["plan"])
    assert a.view().pools["plan"].strikes == 0


def test_sync_pools_reports_a_disagreeing_spec_and_restarts_the_window(connect) -> None:
    a, b = hosts(connect, 2)
    a.sync_pools([pool("p", limit=100, window="5h")])
    res = a.reserve("arm", "t", {"p": 10.0}, ttl=HOUR)
    assert isinstance(res, Reservation)
    a.commit(res.id, {"p": 10.0})
    assert b.sync_pools([pool("p", limit=100, window="5h")]) == []
    assert b.sync_pools([pool("p", limit=200, window="1h")]) == ["p"]
    seen = a.view().pools["p"]
    assert seen.limit == 200 and seen.window_end is not None
    assert seen.window_end - seen.window_start == HOUR  # type: ignore[operator]
