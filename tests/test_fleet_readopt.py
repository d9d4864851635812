"""A restarted host keeps the queue claims that are still its own, and only those.

* kill -9 of the daemon running a claimed item, started again within the
  lease: the queue still gives it the item (the renewal with its attempt
  number, the fencing token, succeeds), so the run its previous daemon left
  is adopted and goes on: one live run, never a second one anywhere, and
  the item ends `done` at attempt 1.
* (restarted after the lease lapsed and another host claimed the item: the
  old run is stopped; test_fleet_queue_daemons.py proves that case.)
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from pathlib import Path

import psutil
from daemon_kit import tagged
from fleet_host_kit import PY, Host, table, wait_for
from pg_kit import PgServer
from test_fleet_queue_daemons import _items

pytest_plugins = ["fleet_fixtures"]

LEASE = 8.0
RUN = 10.0


def test_a_host_restarted_within_its_lease_keeps_its_claim_and_its_run(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex
    body = (
        table("[[pools]]", name="plan", unit="runs", limit=100000)
        + table("[[arms]]", name="plan", cli="command", pools=["plan"])
        + table(
            "[[templates]]", name="work", kind="oneshot", restart="on-failure",
            argv=[PY, "-c", f"import time; time.sleep({RUN})"], env={"TEST_TAG": tag},
        )
    )  # fmt: skip
    hosts = [
        Host(n, tmp_path / n, dsn, body, fleet={"lease": f"{LEASE:g}s"}) for n in ("a", "b", "c")
    ]
    try:
        for host in hosts:
            host.start()
        wait_for(lambda: all(h.events("fleet.ready") for h in hosts), 30, "three hosts ready")
        done = hosts[1].cli("submit", "--template", "work")
        assert done.returncode == 0, done.stderr
        sub_id = done.stdout.strip()
        (victim,) = wait_for(
            lambda: [h for h in hosts if h.events("run.started")], 30, "the item running"
        )
        (run,) = tagged(tag)
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        victim.start()  # at once: well within the lease
        kept = wait_for(lambda: victim.events("fleet.claims_kept"), 30, "the victim back")
        assert kept[0]["kept"] == 1 and kept[0]["lost"] == 0
        # Recovery adopts right after readopt logged its claims (milliseconds
        # later): wait for its line rather than read the log in between.
        adopted = wait_for(lambda: victim.events("recovery.adopted"), 30, "the run adopted")
        assert [e["task"] for e in adopted] == [sub_id]
        # The run goes on to its natural end, and the item is done at attempt 1.
        wait_for(lambda: _items(dsn)[0][1] == "done", RUN + LEASE + 15, "the item done")
        (item,) = _items(dsn)
        assert item == (sub_id, "done", 1, victim.name)
        assert run.pid not in {p.pid for p in tagged(tag)}  # it ended by itself
        ended = [e for e in victim.events("run.finished") if e.get("task") == sub_id]
        # (An adopted run is not the new daemon's child: its exit status may be unknown.)
        assert len(ended) == 1 and ended[0]["outcome"] in ("succeeded", "exit_unknown"), ended
        # Exactly one run of the item anywhere: no other host started it, and
        # the victim started none after its restart.
        started = [e for h in hosts for e in h.events("route.decision") if e["task"] == sub_id]
        assert len(started) == 1
        assert not [h for h in hosts if h.events("fleet.claim_taken_over")]
        time.sleep(LEASE / 2)  # and none later either
        assert tagged(tag) == []
    finally:
        for host in hosts:
            host.stop()
        for proc in tagged(tag):
            with contextlib.suppress(psutil.Error):
                proc.kill()
