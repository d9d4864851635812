"""Three real daemons, separate state dirs, one PostgreSQL: the fleet's pools hold for all.

* a runs-unit pool with limit 12 shared by three hosts and 30 tasks: exactly
  12 runs start in the window, whatever the hosts race for;
* a 429 met by one host holds the pool for the two others within a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psycopg
from fleet_host_kit import (
    FAKE_CLAUDE_429,
    PY,
    Host,
    anchor_an_hour_window,
    table,
    wait_for,
    when,
)
from pg_kit import PgServer

pytest_plugins = ["fleet_fixtures"]


def _hosts(tmp_path: Path, dsn: str, bodies: dict[str, str]) -> list[Host]:
    return [Host(name, tmp_path / name, dsn, body) for name, body in bodies.items()]


def _pool_row(dsn: str, name: str) -> tuple[float, int, str | None]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT used, (SELECT count(*) FROM fleet_holds h WHERE h.pool = p.name "
            "AND h.expires_at > fleet_now()), limited_by FROM fleet_pools p WHERE name = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return float(row[0]), int(row[1]), row[2]


def test_a_shared_runs_pool_of_12_starts_exactly_12_of_30(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    shared = table(
        "[[pools]]", name="plan", unit="runs", limit=12, window="1h",
        anchor=anchor_an_hour_window(),
    ) + table("[[arms]]", name="plan", cli="command", pools=["plan"])  # fmt: skip
    work = [PY, "-c", "import time; time.sleep(1.5)"]
    bodies = {
        host: shared
        + "".join(
            table("[[tasks]]", name=f"job-{i}", kind="oneshot", restart="never", argv=work)
            for i in range(10)
        )
        for host in ("a", "b", "c")
    }
    hosts = _hosts(tmp_path, dsn, bodies)
    try:
        for host in hosts:
            host.start()

        def phases() -> list[dict[str, Any]]:
            return [t for h in hosts for t in h.status()["tasks"]]

        def settled() -> bool:
            done = [t for t in phases() if t["phase"] in ("succeeded", "blocked")]
            return len(done) == 30 and all(
                "exhausted" in t["reason"] for t in done if t["phase"] == "blocked"
            )

        wait_for(lambda: all(h.socket.exists() for h in hosts), 30, "control sockets")
        wait_for(settled, 60, "12 tasks succeeded and 18 blocked on the exhausted pool")
        tasks = phases()
        assert sum(t["phase"] == "succeeded" for t in tasks) == 12
        assert sum(t["phase"] == "blocked" for t in tasks) == 18
        decisions = [e for h in hosts for e in h.events("route.decision")]
        finished = [e for h in hosts for e in h.events("run.finished")]
        assert len(decisions) == 12, [e["task"] for e in decisions]
        assert len(finished) == 12
        assert all(e["outcome"] == "succeeded" for e in finished)
        # Every host got some: the pool was contended, not taken by the first host alone.
        assert sum(1 for h in hosts if h.events("route.decision")) >= 2
        used, holds, _ = _pool_row(dsn, "plan")
        assert (used, holds) == (12.0, 0)
        # Any host shows the whole fleet: every host's heartbeat, the shared pool.
        shown = hosts[1].cli("fleet", "status")
        assert shown.returncode == 0, shown.stderr
        assert "fleet as seen by b (connected)" in shown.stdout
        rows = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip()}
        assert {"a", "b", "c"} <= rows.keys() and "ago" in rows["c"]
        assert rows["plan"].split()[1:5] == ["12", "0", "12", "0"], rows["plan"]
        raw = json.loads(hosts[2].cli("fleet", "status", "--json").stdout)
        assert [h["name"] for h in raw["hosts"]] == ["a", "b", "c"]
        assert all(h["silent_for"] < 15 for h in raw["hosts"])
    finally:
        for host in hosts:
            host.stop()
    for host in hosts:
        assert host.proc is not None and host.proc.returncode == 0, host.log.read_text()[-2000:]


def test_a_429_on_one_host_holds_the_pool_for_the_others_within_a_second(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    fake = tmp_path / "fake-claude"
    fake.write_text(FAKE_CLAUDE_429.format(py=sys.executable))
    fake.chmod(0o755)
    shared = (
        table("[[pools]]", name="max", unit="runs", limit=100000, limit_backoff="15m")
        + table("[[arms]]", name="max-cmd", cli="command", pools=["max"])
        + table("[[arms]]", name="max-claude", cli="claude", executable=str(fake), pools=["max"])
    )
    service = table(
        "[[tasks]]",
        name="work",
        arms=["max-cmd"],
        restart="always",
        max_restarts=100000,
        argv=[PY, "-c", "import time; time.sleep(0.2)"],
        backoff={"initial": "0.1s", "max": "0.1s", "jitter": False},
    )
    # A config task on host a (a submission would go to the fleet's queue, where
    # any host may claim it): host a starts once b and c are busy on the pool.
    hit = table(
        "[[tasks]]", name="hit", arms=["max-claude"], kind="oneshot", restart="never",
        prompt="hello",
    )  # fmt: skip
    hosts = _hosts(tmp_path, dsn, {"a": shared + hit, "b": shared + service, "c": shared + service})
    a, b, c = hosts
    try:
        for host in (b, c):
            host.start()
        for host in (b, c):
            wait_for(lambda h=host: len(h.events("run.finished")) >= 3, 60, f"{host.name} runs")
        a.start()
        hits = wait_for(lambda: a.events("limit.hit"), 30, "host a's 429")
        hit_at = when(hits[0])
        for host in (b, c):
            wait_for(lambda h=host: h.events("route.none"), 10, f"{host.name} blocked")
        for host in (b, c):
            late = [e for e in host.events("route.decision") if when(e) > hit_at + 1.0]
            assert late == [], f"{host.name} still started runs on the held pool"
            none = next(e for e in host.events("route.none") if when(e) > hit_at)
            assert when(none) - hit_at < 1.0 + 0.5  # its next restart, within a second
            assert "limited" in none["rationale"] and "reported by a" in none["rationale"]
        assert _pool_row(dsn, "max")[2] == "a"
        shown = c.cli("fleet", "status").stdout
        assert "limited until" in shown and "by a (API Error: Request rejected (429)" in shown
    finally:
        for host in hosts:
            host.stop()


def test_what_one_host_learns_about_an_arm_every_host_knows(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    body = (
        table("[[pools]]", name="p", unit="runs", limit=100000)
        + table("[[arms]]", name="flaky", cli="command", pools=["p"])
        + table("[[arms]]", name="steady", cli="command", pools=["p"])
    )
    failing = table(
        "[[tasks]]", name="breaks", arms=["flaky"], restart="always", max_restarts=100000,
        argv=[PY, "-c", "raise SystemExit(1)"],
        backoff={"initial": "0.1s", "max": "0.1s", "jitter": False},
    )  # fmt: skip
    a, b = _hosts(tmp_path, dsn, {"a": body + failing, "b": body})
    try:
        a.start()
        b.start()
        wait_for(lambda: len(a.events("run.finished")) >= 5, 60, "host a's failed runs")

        def learned_by_b() -> dict[str, Any] | None:
            done = b.cli("state", "dump")
            if done.returncode != 0:
                return None
            rows = [q for q in json.loads(done.stdout)["quality"] if q["arm"] == "flaky"]
            return rows[0] if rows and rows[0]["n"] >= 5 else None

        row = wait_for(learned_by_b, 30, "host b to know what host a learned")
        assert row["ema"] < 0.2  # every run failed: the fleet knows the arm is bad
        assert not b.events("route.decision")  # b learned it without running anything
    finally:
        a.stop()
        b.stop()
