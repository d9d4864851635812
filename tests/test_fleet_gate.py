"""The loop's side of the shared ledger, asked ahead (reconcile/fleet.py, fleetwork.py).

Against a real PostgreSQL, with the worker serving in an anyio loop:

* the gate never waits: the first call for a task posts the reserve and
  refuses every arm of the task; after the answer the next call takes the
  fleet's grant under the fleet's id, or its refusal;
* a grant the router no longer wants (it chose another arm) is rolled back
  in the fleet, and so is a grant no start took within `STALE_AFTER`;
* settlements posted from the loop reach the fleet in order (a commit after
  its reserve).
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import structlog
from factoryd.config.fleet import FleetSettings
from factoryd.reconcile import fleetwork
from factoryd.reconcile.fleet import FleetLink
from factoryd.routing.ledger import Refusal, Reservation
from factoryd.state.fleet.store import FleetStore
from fleet_kit import pool

pytest_plugins = ["fleet_fixtures"]


def _res(task: str, arm: str, charges: dict[str, float]) -> Reservation:
    now = time.time()
    return Reservation("r1", arm, task, charges, now, now + 600)


def _link(dsn: str, tmp_path: Path, answers: list[str]) -> tuple[FleetStore, FleetLink]:
    store = FleetStore(FleetSettings(database=dsn, host="h1"), tmp_path)
    store.open("test")
    store.ledger.sync_pools([pool("plan", unit="runs", limit=2)])
    link = FleetLink(store, structlog.get_logger())
    link.ready = True
    link.on_answer = answers.append
    return store, link


async def _settle_down(link: FleetLink) -> None:
    with anyio.fail_after(10):
        while link.work.backlog:
            await anyio.sleep(0.01)


def _live_holds(store: FleetStore) -> list[str]:
    return sorted({str(h["res_id"]) for h in store.ledger.holds()})


def test_the_gate_asks_without_waiting_and_takes_the_answer_on_a_later_call(
    dsn: str, tmp_path: Path
) -> None:
    answers: list[str] = []
    store, link = _link(dsn, tmp_path, answers)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(link.work.serve)
            first = link.gate(_res("t1", "plan", {"plan": 1}))
            assert isinstance(first, Refusal) and "asking the fleet's ledger" in first.detail
            assert link.asking("t1")
            # Every other arm of the task waits for the answer too (none is free).
            other = link.gate(_res("t1", "local", {}))
            assert isinstance(other, Refusal) and "waiting for the fleet's ledger" in other.detail
            await _settle_down(link)
            assert answers == ["t1"] and not link.asking("t1")
            got = link.gate(_res("t1", "plan", {"plan": 1}))
            assert isinstance(got, Reservation) and got.id.startswith("h1/")
            assert _live_holds(store) == [got.id]
            # A second task takes the last unit; a third is refused by the fleet.
            link.gate(_res("t2", "plan", {"plan": 1}))
            link.gate(_res("t3", "plan", {"plan": 1}))
            await _settle_down(link)
            second = link.gate(_res("t2", "plan", {"plan": 1}))
            third = link.gate(_res("t3", "plan", {"plan": 1}))
            assert isinstance(second, Reservation) and isinstance(third, Refusal)
            assert link.refused == 1
            # Settlements posted from the loop reach the fleet.
            link.on_settle(got.id, {"plan": 1})
            link.on_settle(second.id, None)
            await _settle_down(link)
            assert _live_holds(store) == []
            assert store.ledger.view().pools["plan"].used == 1
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        store.close()


def test_grants_no_start_took_are_rolled_back(dsn: str, tmp_path: Path, monkeypatch) -> None:
    store, link = _link(dsn, tmp_path, [])
    monkeypatch.setattr(fleetwork, "STALE_AFTER", 0.2)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(link.work.serve)
            link.gate(_res("t1", "plan", {"plan": 1}))
            link.gate(_res("t2", "plan", {"plan": 1}))
            await _settle_down(link)
            assert len(_live_holds(store)) == 2
            # t1's router now prefers an arm on no pool: the fleet's hold is undone.
            chosen = link.gate(_res("t1", "local", {}))
            assert isinstance(chosen, Reservation) and chosen.charges == {}
            await _settle_down(link)
            assert len(_live_holds(store)) == 1
            # t2 never comes back for its grant (cancelled, say): undone when stale.
            await anyio.sleep(0.3)
            link.after_pass(time.monotonic())
            await _settle_down(link)
            assert _live_holds(store) == []
            assert link.asks.by_task == {}
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        store.close()
