"""The fleet's durable queue with three real daemons: submit anywhere, run once somewhere.

* submissions to one host are claimed by the hosts with room, each runs
  exactly once and is finished in the queue;
* kill -9 of the host running a claimed item: another host runs it within
  lease + 5 s, exactly once; the killed host, restarted, stops the run it
  left behind and does not run the item again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import psutil
import psycopg
from daemon_kit import tagged
from fleet_host_kit import PY, Host, table, wait_for, when
from pg_kit import PgServer

pytest_plugins = ["fleet_fixtures"]

LEASE = 3.0


def _body(tag: str, seconds: float) -> str:
    return (
        table("[[pools]]", name="plan", unit="runs", limit=100000)
        + table("[[arms]]", name="plan", cli="command", pools=["plan"])
        + table(
            "[[templates]]", name="work", kind="oneshot", restart="on-failure",
            argv=[PY, "-c", f"import time; time.sleep({seconds})"], env={"TEST_TAG": tag},
        )
    )  # fmt: skip


def _hosts(tmp_path: Path, dsn: str, body: str, **daemon: object) -> list[Host]:
    return [
        Host(n, tmp_path / n, dsn, body, fleet={"lease": f"{LEASE}s"}, daemon=dict(daemon))
        for n in ("a", "b", "c")
    ]


def _items(dsn: str) -> list[tuple[str, str, int, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT sub_id, state, attempt, host FROM fleet_queue ORDER BY id")
        return [(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]


def _gone(pid: int) -> bool:
    """The process ended. In a full test run the test process may be a subreaper
    (other tests make it one): the killed daemon's orphans are then its children,
    and an ended one stays a zombie until reaped here."""
    try:
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def test_submissions_to_one_host_run_once_each_across_the_fleet(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex
    hosts = _hosts(tmp_path, dsn, _body(tag, 1.0), max_concurrent=2)
    try:
        for host in hosts:
            host.start()
        wait_for(lambda: all(h.events("fleet.ready") for h in hosts), 30, "three hosts ready")
        ids = []
        for _ in range(6):
            done = hosts[0].cli("submit", "--template", "work")
            assert done.returncode == 0, done.stderr
            ids.append(done.stdout.strip())
        wait_for(lambda: [s for _, s, _, _ in _items(dsn)] == ["done"] * 6, 60, "six items done")
        started = [e["task"] for h in hosts for e in h.events("route.decision")]
        assert sorted(started) == sorted(ids)  # each ran exactly once
        # Two slots per host: the six items cannot all have run on the host submitted to.
        assert len({h for _, _, _, h in _items(dsn)}) >= 2
        assert all(attempt == 1 for _, _, attempt, _ in _items(dsn))
        assert not any(h.events("submission.accepted") and h.name != "a" for h in hosts)
    finally:
        for host in hosts:
            host.stop()


def test_kill_9_of_a_host_moves_its_claim_once_and_it_does_not_run_again(
    pg: PgServer, dsn: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex
    hosts = _hosts(tmp_path, dsn, _body(tag, 120.0))
    try:
        for host in hosts:
            host.start()
        wait_for(lambda: all(h.events("fleet.ready") for h in hosts), 30, "three hosts ready")
        done = hosts[1].cli("submit", "--template", "work")
        assert done.returncode == 0, done.stderr
        sub_id = done.stdout.strip()
        first = wait_for(
            lambda: [h for h in hosts if h.events("run.started")], 30, "the item running"
        )
        assert len(first) == 1
        victim = first[0]
        others = [h for h in hosts if h is not victim]
        assert victim.proc is not None
        orphan_pids = {p.pid for p in tagged(tag)}
        assert orphan_pids
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = time.time()

        def moved() -> list[dict[str, object]]:
            return [e for h in others for e in h.events("run.started")]

        started = wait_for(moved, LEASE + 15, "the item running on another host")
        assert when(started[0]) - killed_at <= LEASE + 5.0
        claimed = [e for h in others for e in h.events("fleet.claim_taken_over")]
        assert len(claimed) == 1 and claimed[0]["lost_by"] == victim.name
        assert claimed[0]["attempt"] == 2 and claimed[0]["id"] == sub_id
        # The killed host comes back: the run it left behind is stopped, not kept.
        victim.start()
        wait_for(lambda: len(victim.events("fleet.ready")) == 2, 30, "the victim back")
        wait_for(lambda: all(_gone(p) for p in orphan_pids), 30, "the orphan stopped")
        time.sleep(LEASE)  # a lease later: still one run, on the new host
        assert len(moved()) == 1
        assert len(tagged(tag)) == 1  # the run on the host that took the item over
        restarted = victim.events("route.decision")
        assert len(restarted) == 1  # only its first run, before the kill
        (item,) = _items(dsn)
        assert item[1:3] == ("claimed", 2) and item[3] != victim.name
    finally:
        for host in hosts:
            host.stop()
        for proc in tagged(tag):
            with contextlib.suppress(psutil.Error):
                proc.kill()
