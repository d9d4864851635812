"""PostgreSQL restarted under three busy daemons, no allowance: no overspend, nothing lost.

Three real daemons share a runs pool of 40. Each runs one long task (it
ends when the test says so) and a service that churns one-second runs on
the pool. Mid-run the server is stopped as if it crashed (immediate mode:
WAL recovery on start); while it is down the long runs are let go, and
then the server is started again. Read from logs, /metrics and the tables:

* the runs already going keep going: each host's long run ends `succeeded`
  during the outage, and its settlement is kept in the host's outbox;
* no run starts on the shared pool while the database is away (no
  allowance was configured), each host refusing with `unreachable`;
* `factoryd_fleet_connected` reads 0 during the outage and 1 after, with
  exactly one `fleet.disconnected` and one more `fleet.connected` per host;
* after the restart the outboxes are applied and the churn fills the pool:
  the fleet's used amount is exactly the limit and exactly the runs that
  ran on all hosts together (no overspend, no settlement lost or doubled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from fleet_host_kit import PY, Host, anchor_an_hour_window, table, wait_for, when
from pg_kit import PgServer

pytest_plugins = ["fleet_fixtures"]
pytestmark = pytest.mark.timeout(240)

LIMIT = 40


def _body(flag: Path) -> str:
    wait = f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)"
    return (
        table(
            "[[pools]]", name="plan", unit="runs", limit=LIMIT, window="1h",
            anchor=anchor_an_hour_window(),
        )
        + table("[[arms]]", name="plan", cli="command", pools=["plan"])
        + table("[[tasks]]", name="long", kind="oneshot", restart="never", argv=[PY, "-c", wait])
        + table(
            "[[tasks]]", name="churn", restart="always", max_restarts=100000,
            argv=[PY, "-c", "import time; time.sleep(1.0)"],
            backoff={"initial": "0.1s", "max": "0.1s", "jitter": False},
        )
    )  # fmt: skip


def _pool(dsn: str) -> tuple[float, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT used, (SELECT count(*) FROM fleet_holds) FROM fleet_pools WHERE name = 'plan'"
        ).fetchone()
    assert row is not None
    return float(row[0]), int(row[1])


def _of(host: Host, event: str, task: str) -> list[dict[str, Any]]:
    return [e for e in host.events(event) if e.get("task") == task]


def test_a_postgres_restart_mid_run_overspends_nothing_and_loses_no_settlement(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    flag = tmp_path / "let-the-long-runs-end"
    hosts = [
        Host(n, tmp_path / n, dsn, _body(flag), fleet={"lease": "3s"},
             daemon={"metrics_listen": "127.0.0.1:0"})
        for n in ("a", "b", "c")
    ]  # fmt: skip
    down = False
    try:
        for host in hosts:
            host.start()
        for host in hosts:
            wait_for(lambda h=host: h.metric("factoryd_fleet_connected") == 1.0, 30, "connected")
            wait_for(lambda h=host: _of(h, "run.finished", "churn"), 30, f"{host.name} churning")
            assert len(_of(host, "run.started", "long")) == 1
        used, holds = _pool(dsn)
        assert used + holds <= LIMIT - 9, "the pool filled before the outage: start sooner"
        pg.stop("immediate")
        down = True
        for host in hosts:
            wait_for(lambda h=host: h.metric("factoryd_fleet_connected") == 0.0, 15, "disconnected")
            wait_for(
                lambda h=host: any("unreachable" in e["rationale"] for e in h.events("route.none")),
                15,
                f"{host.name} refusing the shared pool",
            )  # fmt: skip
        flag.touch()
        for host in hosts:
            wait_for(lambda h=host: _of(h, "run.finished", "long"), 15, f"{host.name}'s long run")
            wait_for(lambda h=host: h.events("fleet.settlement_kept"), 15, "a settlement kept")
        pg.start()
        down = False
        for host in hosts:
            wait_for(lambda h=host: h.metric("factoryd_fleet_connected") == 1.0, 30, "reconnected")
            wait_for(lambda h=host: h.events("fleet.outbox_applied"), 30, "the outbox replayed")
        wait_for(lambda: _pool(dsn) == (LIMIT, 0), 60, "the churn filling the pool, all settled")
    finally:
        if down:
            pg.start()
        for host in hosts:
            host.stop()
    for host in hosts:
        # The run already going kept going and ended well during the outage.
        (long_end,) = _of(host, "run.finished", "long")
        (gone,) = host.events("fleet.disconnected")
        (_, back) = host.events("fleet.connected")
        assert long_end["outcome"] == "succeeded"
        assert when(gone) < when(long_end) < when(back)
        # Nothing started on the shared pool between losing and regaining the database.
        during = [e for e in host.events("route.decision") if when(gone) <= when(e) <= when(back)]
        assert during == [], f"{host.name} started {len(during)} runs while the database was away"
        assert sum(e["settlements"] for e in host.events("fleet.outbox_applied")) >= 1
    ran = sum(len(h.events("run.finished")) for h in hosts)
    assert _pool(dsn) == (LIMIT, 0)
    assert ran == LIMIT  # every run charged once: nothing lost, nothing twice, no overspend
