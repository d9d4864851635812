"""Fleet-wide config tasks (`fleet = "once"`) with three real daemons on one database.

* config: `fleet = "once"` needs a `[fleet]` table, takes only "once", only
  on a scheduled task or a service, never in a submission; each a one-line
  error naming the key;
* a schedule firing every 3 s, configured on all three hosts, runs once per
  due time across the fleet;
* a service configured on all three hosts runs on exactly one; when that
  host dies (kill -9 of the daemon and its runs), another runs it within
  lease + 5 s, and still only one runs;
* a host where an operator stopped the service never takes it over when
  its holder dies, until `factoryd start`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import psycopg
import pytest
from daemon_kit import tagged
from factoryd.config.loader import parse_config, parse_task_override
from factoryd.config.tomltable import ConfigError
from fleet_host_kit import PY, Host, table, wait_for, when
from pg_kit import PgServer

pytest_plugins = ["fleet_fixtures"]

LEASE = 3.0
ARM = table("[[arms]]", name="local", cli="command")
FLEET = '[fleet]\ndatabase = "env:FLEET_DB"\n'


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f'{ARM}[[tasks]]\nname = "t"\nargv = ["true"]\nfleet = "once"\n',
         'tasks[0].fleet: "once" needs a [fleet] table'),
        (f'{FLEET}{ARM}[[tasks]]\nname = "t"\nargv = ["true"]\nfleet = "twice"\n',
         "tasks[0].fleet: expected one of once; got 'twice'"),
        (f'{FLEET}{ARM}[[tasks]]\nname = "t"\nkind = "oneshot"\nargv = ["true"]\nfleet = "once"\n',
         'tasks[0].fleet: "once" is for a scheduled task or a service'),
        (f'{FLEET}{ARM}[[tasks]]\nname = "t"\nargv = ["true"]\nfleet = 1\n',
         "tasks[0].fleet: expected a string, got number 1"),
    ],
)  # fmt: skip
def test_fleet_once_config_errors_are_one_line_and_name_the_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("factoryd.toml"))
    shown = str(info.value)
    assert error in shown and "\n" not in shown.strip(), shown


def test_fleet_once_is_read_for_services_and_schedules_and_refused_in_submissions() -> None:
    text = (
        f'{FLEET}{ARM}[[tasks]]\nname = "svc"\nargv = ["true"]\nfleet = "once"\n'
        '[[tasks]]\nname = "cron"\nkind = "scheduled"\nschedule = "*/5 * * * *"\n'
        'argv = ["true"]\nfleet = "once"\n[[tasks]]\nname = "mine"\nargv = ["true"]\n'
    )
    config = parse_config(text, Path("factoryd.toml"))
    assert [t.fleet for t in config.tasks] == ["once", "once", None]
    with pytest.raises(ConfigError, match="fleet: only a configured task may be fleet-wide"):
        parse_task_override(
            config, {"argv": ["true"], "fleet": "once"}, template=None, where="submission"
        )


def _hosts(tmp_path: Path, dsn: str, body: str) -> list[Host]:
    return [Host(n, tmp_path / n, dsn, body, fleet={"lease": f"{LEASE:g}s"}) for n in "abc"]


def test_a_fleet_wide_schedule_fires_once_per_due_time_across_three_hosts(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    body = ARM + table(
        "[[tasks]]", name="tick", kind="scheduled", schedule="* * * * * */3", fleet="once",
        arms=["local"], argv=[PY, "-c", "pass"], missed="skip",
    )  # fmt: skip
    hosts = _hosts(tmp_path, dsn, body)
    try:
        for host in hosts:
            host.start()
        wait_for(lambda: all(h.events("fleet.ready") for h in hosts), 30, "three hosts ready")
        time.sleep(10)
        cutoff = time.time() - 2.0  # fires older than this have all been decided
    finally:
        for host in hosts:
            host.stop()
    claimed = [
        (e["due"], h.name)
        for h in hosts
        for e in h.events("fleet.fire_claimed")
        if e.get("task") == "tick"
    ]
    runs = [
        (h.name, when(e))
        for h in hosts
        for e in h.events("route.decision")
        if e.get("task") == "tick"
    ]
    dues = Counter(due for due, _ in claimed)
    assert len(dues) >= 3, f"only {len(dues)} fires in 10 s"
    assert all(n == 1 for n in dues.values()), f"a fire claimed twice: {dues}"
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT due, host FROM fleet_fires WHERE task = 'tick' AND due < %s", (cutoff,)
        ).fetchall()
    assert rows, "no fire recorded in the database"
    # Every fire in the database ran exactly once, on the host that claimed it.
    for due, host in rows:
        on = [name for name, at in runs if due <= at < due + 2.5]
        assert on == [host], f"the fire at {due} ran on {on}, claimed by {host}"
    # Every host saw every fire come due; only one ran each.
    for h in hosts:
        assert len([e for e in h.events("cron.fire") if e.get("task") == "tick"]) >= 3, h.name


def test_a_fleet_wide_service_runs_on_one_host_and_moves_when_it_dies(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex
    body = ARM + table(
        "[[tasks]]", name="svc", fleet="once", arms=["local"],
        argv=[PY, "-c", "import time; time.sleep(600)"], env={"TEST_TAG": tag},
    )  # fmt: skip
    hosts = _hosts(tmp_path, dsn, body)

    def running() -> list[Host]:
        return [
            h
            for h in hosts
            if h.proc is not None
            and h.proc.poll() is None
            and len(h.events("route.decision")) > len(h.events("run.finished"))
        ]

    try:
        for host in hosts:
            host.start()
        wait_for(lambda: all(h.events("fleet.ready") for h in hosts), 30, "three hosts ready")
        wait_for(lambda: len(tagged(tag)) == 1, 30, "the service running")
        time.sleep(LEASE * 2)  # two leases later: still exactly one copy
        assert len(tagged(tag)) == 1
        (holder,) = running()
        assert len(holder.events("fleet.once_held")) == 1
        others = [h for h in hosts if h is not holder]
        assert not any(h.events("route.decision") for h in others)
        # The holder's host dies: its daemon and its run.
        assert holder.proc is not None
        victims = [psutil.Process(holder.proc.pid), *tagged(tag)]
        for proc in victims:
            proc.kill()
        holder.proc.wait()
        wait_for(lambda: not tagged(tag), 10, "the dead host's run gone")
        died_at = time.time()
        started = wait_for(
            lambda: [e for h in others for e in h.events("route.decision")],
            LEASE + 15,
            "the service on another host",
        )
        moved = when(started[0]) - died_at
        print(f"the service ran on another host {moved:.2f}s after its host died (lease {LEASE}s)")
        assert moved <= LEASE + 5.0
        took = [e for h in others for e in h.events("fleet.once_held")]
        assert len(took) == 1 and took[0]["took_from"] == holder.name
        time.sleep(LEASE * 2)
        assert len(tagged(tag)) == 1
        assert len([e for h in others for e in h.events("route.decision")]) == 1
    finally:
        for host in hosts:
            host.stop()
        for proc in tagged(tag):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def test_a_host_where_an_operator_stopped_the_service_never_takes_it_over(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex
    body = ARM + table(
        "[[tasks]]", name="svc", fleet="once", arms=["local"],
        argv=[PY, "-c", "import time; time.sleep(600)"], env={"TEST_TAG": tag},
    )  # fmt: skip
    a, b = _hosts(tmp_path, dsn, body)[:2]
    try:
        a.start()
        wait_for(lambda: len(tagged(tag)) == 1, 30, "the service running on a")
        b.start()
        wait_for(lambda: b.events("fleet.ready"), 30, "host b ready")
        done = b.cli("stop", "svc")
        assert done.returncode == 0, done.stderr
        assert a.proc is not None
        for proc in [psutil.Process(a.proc.pid), *tagged(tag)]:
            proc.kill()
        a.proc.wait()
        time.sleep(LEASE * 2 + 1)  # the lease has lapsed: b may take it, but must not
        assert not b.events("fleet.once_held") and not b.events("route.decision")
        assert tagged(tag) == []
        done = b.cli("start", "svc")  # the operator lets it run here again
        assert done.returncode == 0, done.stderr
        wait_for(lambda: len(tagged(tag)) == 1, LEASE + 10, "the service running on b")
        assert b.events("fleet.once_held")[0]["took_from"] == "a"
    finally:
        for host in (a, b):
            host.stop()
        for proc in tagged(tag):
            with contextlib.suppress(psutil.Error):
                proc.kill()
