"""Hosts and heartbeats, fleet-wide learning, the router's mirror and the status view."""

from __future__ import annotations

import json

from factoryd.config.fleet import FleetSettings
from factoryd.routing.ledger import PoolLedger, Reservation
from factoryd.routing.model import RejectReason
from factoryd.routing.quality import QualityTracker
from factoryd.state.fleet.hosts import HostRegistry
from factoryd.state.fleet.learning import ArmOutcome, SharedLearning, as_quality
from factoryd.state.fleet.ledger import SharedLedger
from factoryd.state.fleet.mirror import FLEET_HOLD, mirror_into
from factoryd.state.fleet.queue import DurableQueue
from factoryd.state.fleet.store import FleetStore
from fleet_kit import pool, shift_clock

pytest_plugins = ["fleet_fixtures"]


def test_hosts_show_their_last_heartbeat_and_claims(connect, dsn) -> None:
    a_db, b_db = connect(), connect()
    a, b = HostRegistry(a_db, "a"), HostRegistry(b_db, "b")
    a.register("0.1.0", {"slots": 4})
    b.register("0.1.0")
    DurableQueue(a_db, "a").enqueue("s1", "t", {})
    DurableQueue(a_db, "a").claim()
    shift_clock(dsn, 40.0, a_db, b_db)
    a.heartbeat()
    rows = {h.name: h for h in b.hosts()}
    assert rows["a"].silent_for < 5 and rows["b"].silent_for >= 40
    assert (rows["a"].claimed, rows["b"].claimed) == (1, 0)
    assert rows["a"].info == {"slots": 4} and rows["a"].version == "0.1.0"
    assert b.forget("a") and [h.name for h in b.hosts()] == ["b"]
    a.heartbeat()  # a forgotten host that is alive comes back
    assert {h.name for h in b.hosts()} == {"a", "b"}


def test_a_bad_arm_found_by_one_host_is_seen_by_all(connect) -> None:
    one = SharedLearning(connect(), "h1")
    two = SharedLearning(connect(), "h2")
    one.record([ArmOutcome("cheap", "debug", False, 12.0, 900)] * 3)
    two.record([ArmOutcome("cheap", "debug", False, 5.0), ArmOutcome("good", "debug", True, 30.0)])
    seen = SharedLearning(connect(), "h3").view()
    cheap = seen[("cheap", "debug")]
    assert (cheap.ok, cheap.failed, cheap.tokens, cheap.ema, cheap.last_host) == (
        0, 4, 2700, 0.0, "h2",
    )  # fmt: skip
    assert seen[("good", "debug")].ok_seconds == 30.0
    tracker = QualityTracker()
    for arm, kind, ema, n in as_quality(seen):
        tracker.restore(arm, kind, ema, n)
    assert tracker.observed("cheap", "debug") == 0.0  # below every floor: avoided
    assert tracker.observed("good", "debug") is None  # one run is not yet evidence


def test_the_router_sees_the_fleets_scarcity_and_limits(connect) -> None:
    a, b = SharedLedger(connect(), "a"), SharedLedger(connect(), "b")
    # No window: a 5 h window anchored at the epoch put the real clock inside
    # its last hour a fifth of the time, where use-it-or-lose-it halves the
    # multiplier and this test failed by the hour of day.
    a.sync_pools([pool("plan", "runs", 10)])
    for i in range(3):
        res = b.reserve("x", f"t{i}", {"plan": 2.0}, ttl=600)
        assert isinstance(res, Reservation)
        if i == 0:
            b.commit(res.id, {"plan": 2.0})
    local = PoolLedger([pool("plan", "runs", 10)])
    view = a.view()
    assert mirror_into(local, view) == []
    state = local.pools["plan"]
    assert (state.used, state.reserved, state.holds) == (2.0, 4.0, {FLEET_HOLD: 4.0})
    assert local.multiplier("plan", view.now) == (4 / 10) ** -2
    b.hold_limit(["plan"], view.now + 600, "429")
    mirror_into(local, a.view())
    refusal = local.refusal({"plan": 1.0}, view.now + 1)
    assert refusal is not None and refusal.reason is RejectReason.POOL_LIMITED


def test_the_store_opens_migrates_registers_and_reports_status(dsn, tmp_path) -> None:
    store = FleetStore(FleetSettings(database=dsn, host="alpha", lease=30), tmp_path)
    try:
        store.open("0.1.0")
        store.ledger.sync_pools([pool("plan", "runs", 5)])
        held = store.ledger.reserve("x", "t", {"plan": 1.0}, ttl=60)
        assert isinstance(held, Reservation)
        store.queue.enqueue("s1", "build", {})
        store.queue.enqueue("s2", "build", {})
        (claim,) = store.queue.claim()
        assert store.heartbeat([(claim.item, claim.attempt)]) == {claim.item}
        status = store.status()
        json.dumps(status)  # plain data, ready for the control socket
        assert [h["name"] for h in status["hosts"]] == ["alpha"]
        assert [(c["host"], c["sub_id"]) for c in status["claims"]] == [("alpha", "s1")]
        assert status["queued"] == 1 and status["outbox"] == 0
        assert status["pools"]["plan"]["reserved"] == 1.0
        assert [h["res_id"] for h in status["holds"]] == [held.id]
    finally:
        store.close()
