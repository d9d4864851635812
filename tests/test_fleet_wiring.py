"""The `[fleet]` table in the config and a real daemon through a database outage.

* no `[fleet]`: nothing of the fleet (nor psycopg) is imported;
* `factoryd check` shows the fleet settings and never the password; a bad
  `[fleet]` is a config problem naming file and key;
* PostgreSQL stopped mid-run: the run already going finishes and its
  settlement waits in the outbox; no new run starts on the shared pool
  beyond the operator's outage allowance; `factoryd_fleet_connected` goes
  0 then 1 with one log event per transition; when the database is back
  every settlement is applied (the fleet's usage equals the runs that ran).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psycopg
from daemon_kit import ROOT, factoryd
from fleet_host_kit import PY, Host, table, wait_for
from pg_kit import PASSWORD, PgServer

pytest_plugins = ["fleet_fixtures"]

BASE = (
    table("[daemon]", state_dir="/tmp/x/state", log_dir="/tmp/x/logs", metrics_listen="off")
    + table("[[pools]]", name="plan", unit="runs", limit=10)
    + table("[[arms]]", name="plan", cli="command", pools=["plan"])
)


def test_no_fleet_table_imports_nothing_of_the_fleet(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(BASE)
    code = (
        "import sys; from factoryd.config.loader import load_config; "
        "import factoryd.service.daemon, factoryd.cli, factoryd.reconcile.reconciler; "
        f"c = load_config({str(config)!r}); assert c.fleet is None; "
        "bad = [m for m in sys.modules if m.startswith(('factoryd.state.fleet', 'psycopg')) "
        "or m in ('factoryd.reconcile.fleet', 'factoryd.reconcile.fleetqueue', "
        "'factoryd.service.fleet', 'factoryd.service.fleetqueue')]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_check_shows_the_fleet_and_never_the_password(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    url = f"postgresql://fleet:{PASSWORD}@db.internal:5433/factory"
    config.write_text(BASE + table("[fleet]", database=url, host="build-07", lease="45s"))
    done = factoryd("check", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "fleet: host build-07, database fleet@db.internal:5433/factory, lease 45s" in done.stdout
    assert "warning: fleet.database holds a password" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    config.write_text(
        BASE + table("[fleet]", database="env:FLEET_DB", outage_allowance={"plan": 2})
    )
    done = factoryd("check", "--config", str(config))
    assert "database env:FLEET_DB" in done.stdout and "outage allowance plan 2" in done.stdout
    assert "warning" not in done.stdout


def test_a_bad_fleet_table_is_a_config_problem_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    for fleet, key in [
        (table("[fleet]", host="build-07"), "fleet.database"),
        (table("[fleet]", database="env:X", lease="1s"), "fleet.lease"),
        (table("[fleet]", database=f"postgresql://u:{PASSWORD}@h/d", hots=3), "fleet.hots"),
    ]:
        config.write_text(BASE + fleet)
        done = factoryd("check", "--config", str(config))
        assert done.returncode == 2
        assert f"{config}: {key}" in done.stderr, done.stderr
        assert PASSWORD not in done.stderr and "Traceback" not in done.stderr


def test_a_database_outage_keeps_runs_and_settlements_and_spends_only_the_allowance(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    body = (
        table("[[pools]]", name="plan", unit="runs", limit=1000)
        + table("[[arms]]", name="plan", cli="command", pools=["plan"])
        + table(
            "[[tasks]]", name="long", kind="oneshot", restart="never",
            argv=[PY, "-c", "import time; time.sleep(4)"],
        )
        + table(
            "[[tasks]]", name="churn", restart="always", max_restarts=100000,
            argv=[PY, "-c", "import time; time.sleep(0.2)"],
            backoff={"initial": "0.1s", "max": "0.1s", "jitter": False},
        )
    )  # fmt: skip
    host = Host(
        "a", tmp_path / "a", dsn, body,
        fleet={"lease": "3s", "outage_allowance": {"plan": 2}},
        daemon={"metrics_listen": "127.0.0.1:0"},
    )  # fmt: skip
    stopped = False
    try:
        host.start()
        wait_for(lambda: host.metric("factoryd_fleet_connected") == 1.0, 30, "connected")
        # The dashboard's fleet panels read metrics a fleet daemon exposes.
        dashboard = json.loads((ROOT / "etc/grafana/factoryd.json").read_text())
        exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
        used = set(re.findall(r"\bfactoryd_fleet_\w+", exprs))
        assert used and all(host.metric(m) is not None for m in used), used
        wait_for(lambda: len(host.events("run.finished")) >= 3, 30, "churn runs")
        pg.stop()
        stopped = True
        wait_for(lambda: host.metric("factoryd_fleet_connected") == 0.0, 15, "disconnected")
        wait_for(lambda: host.events("fleet.settlement_kept"), 15, "a settlement kept")
        # The churn goes on for the allowance (2 runs) and then stops starting.
        wait_for(
            lambda: any("unreachable" in e["rationale"] for e in host.events("route.none")),
            15,
            "the shared pool refused during the outage",
        )
        long_end = wait_for(
            lambda: [e for e in host.events("run.finished") if e["task"] == "long"],
            15,
            "the long run to finish during the outage",
        )
        assert long_end[0]["outcome"] == "succeeded"
        assert len(host.events("fleet.outage_allowance")) == 2
        pg.start()
        stopped = False
        wait_for(lambda: host.metric("factoryd_fleet_connected") == 1.0, 30, "reconnected")
        wait_for(lambda: host.events("fleet.outbox_applied"), 30, "the outbox replayed")
        wait_for(lambda: host.metric("factoryd_fleet_outbox_pending") == 0.0, 30, "outbox empty")
    finally:
        if stopped:
            pg.start()
        host.stop()
    assert len(host.events("fleet.disconnected")) == 1
    assert len(host.events("fleet.connected")) == 2
    # Every run that ran is charged one run, the one the shutdown cancelled too.
    ran = host.events("run.finished")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT used FROM fleet_pools WHERE name = 'plan'").fetchone()
        holds = conn.execute("SELECT count(*) FROM fleet_holds").fetchone()
    assert row is not None and row[0] == len(ran)  # no settlement lost, none twice
    assert holds == (0,)
