"""Fleet-wide tasks, a host's own lease deadlines, the outage allowance, migrations, pruning."""

from __future__ import annotations

import psycopg
from factoryd.state.fleet.allowance import OutageAllowance
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.leases import LeaseKeeper
from factoryd.state.fleet.ledger import Settled, SharedLedger
from factoryd.state.fleet.once import FleetOnce
from factoryd.state.fleet.queue import DurableQueue
from factoryd.state.fleet.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from fleet_kit import pool, shift_clock

pytest_plugins = ["fleet_fixtures"]


def test_a_scheduled_fire_runs_once_per_fleet(connect) -> None:
    hosts = [FleetOnce(connect(), f"h{i}") for i in range(3)]
    due = 1_800_000_000.0
    assert [h.claim_fire("nightly", due) for h in hosts] == [True, False, False]
    assert hosts[2].claim_fire("nightly", due + 86400)  # the next fire is anyone's


def test_a_service_runs_on_one_host_and_moves_when_it_dies(connect, dsn) -> None:
    a, b = FleetOnce(connect(), "a", lease=30), FleetOnce(connect(), "b", lease=30)
    mine = a.hold("indexer")
    assert mine is not None and mine.attempt == 1
    assert b.hold("indexer") is None
    assert a.hold("indexer", mine.attempt) is not None  # renewed
    shift_clock(dsn, 31.0, a.db, b.db)  # a stopped renewing (dead, or cut off)
    moved = b.hold("indexer")
    assert moved is not None and (moved.attempt, moved.took_from) == (2, "a")
    assert a.hold("indexer", mine.attempt) is None  # a, back, must stop its copy
    assert b.let_go("indexer", moved.attempt)
    assert a.hold("indexer") is not None  # let go: free at once


def test_a_restarted_host_takes_its_own_service_back_at_once(connect) -> None:
    first = FleetOnce(connect(), "a").hold("indexer")
    again = FleetOnce(connect(), "a").hold("indexer")  # the next daemon on host a
    assert first is not None and again is not None
    assert (again.attempt, again.took_from) == (2, "a")


def test_a_cut_off_host_gives_up_its_claims_after_the_lease_by_its_own_clock() -> None:
    keeper = LeaseKeeper(lease=30.0)
    keeper.claimed(7, attempt=1, sent_at=100.0)
    keeper.claimed(8, attempt=3, sent_at=100.0)
    assert keeper.pairs() == [(7, 1), (8, 3)]
    assert keeper.renewed({7}, sent_at=110.0) == [8]  # 8 was taken by another host
    # The database's lease ends no earlier than 140; the host gives up a margin before.
    assert keeper.next_deadline() == 137.0
    assert keeper.lapsed(136.9) == []
    # The database is unreachable: no renewal confirms 7 in time.
    assert keeper.lapsed(137.0) == [7] and keeper.pairs() == []
    assert keeper.renewed({7}, sent_at=141.0) == []  # too late to come back


def test_the_outage_allowance_is_bounded_and_its_usage_reaches_the_fleet(connect) -> None:
    allowance = OutageAllowance({"plan": 2.0})
    first, second = allowance.reserve({"plan": 1.0}), allowance.reserve({"plan": 1.0})
    assert first and second and allowance.reserve({"plan": 1.0}) is None
    assert allowance.reserve({"other": 1.0}) is None  # no allowance: nothing
    ledger = SharedLedger(connect(), "h")
    ledger.sync_pools([pool("plan", "runs", 10)])
    assert ledger.commit(first, {"plan": 1.0}) is Settled.EXPIRED  # never held, still counted
    assert ledger.view().pools["plan"].used == 1.0
    allowance.reset()
    assert allowance.reserve({"plan": 2.0})


def test_an_older_schema_is_migrated_in_place(dsn) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:  # a database made by version 1
        conn.execute("CREATE TABLE fleet_meta (key text PRIMARY KEY, value text)")
        for statement in MIGRATIONS[0]:
            conn.execute(statement.encode())
        conn.execute("INSERT INTO fleet_meta VALUES ('schema_version', '1')")
        conn.execute(
            "INSERT INTO fleet_queue (sub_id, label, request, state, created_at, updated_at) "
            "VALUES ('old', 't', '{}', 'queued', 0, 0)"
        )
    db = Database(dsn)
    try:
        assert migrate(db) == 1 and migrate(db) == SCHEMA_VERSION
        assert [c.sub_id for c in DurableQueue(db, "h").claim()] == ["old"]
        assert FleetOnce(db, "h").claim_fire("t", 1.0)
    finally:
        db.close()


def test_old_settlements_and_ended_items_are_pruned(connect, dsn) -> None:
    db = connect()
    ledger, queue = SharedLedger(db, "h"), DurableQueue(db, "h")
    ledger.sync_pools([pool("p")])
    res = ledger.reserve("x", "t", {"p": 1.0}, ttl=60)
    ledger.rollback(res.id)  # type: ignore[union-attr]
    queue.enqueue("s1", "t", {})
    claim = queue.claim()[0]
    queue.finish(claim.item, claim.attempt)
    assert ledger.prune_settlements(3600) == 0 and queue.prune(3600) == 0
    shift_clock(dsn, 7200.0, db)
    assert ledger.prune_settlements(3600) == 1 and queue.prune(3600) == 1
