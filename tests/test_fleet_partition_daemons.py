"""A partition with whole daemons: one host in its own network namespace, its link cut.

Three real daemons share one PostgreSQL; host c runs inside a network
namespace and reaches the server over TCP through a veth pair, the server
listening on the pair's host end (tests/fleet_netns_kit.py). Host c claims
a queue item and runs it, and keeps a service churning on the shared pool.
Then `ip link set ... down` cuts it off without a word (packets vanish).
Expected, read from the daemons' logs, the queue's table and `ps`:

* within the lease, host c gives its claim up (the run stopped) and starts
  no more shared work;
* another host takes the item over as the next attempt and runs it;
* at no instant do two live processes of the one submission exist, and
  the cut-off host's run ended before the other host's began;
* when the link returns, host c reconnects and works on the shared pool
  again, and still only one run of the item is alive.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from daemon_kit import tagged
from factoryd.state.fleet.db import Database
from fleet_host_kit import PY, Host, table, wait_for, when
from fleet_netns_kit import Link, NetnsHost, listen_on_link, tcp_dsn
from pg_kit import PgServer

# CI runs as root with iproute2 installed: there a missing tool fails the test.
pytestmark = [
    pytest.mark.skipif(
        os.environ.get("CI") != "true" and (os.getuid() != 0 or shutil.which("ip") is None),
        reason="needs root and iproute2 (netns)",
    ),
    pytest.mark.timeout(240),
]

LEASE = 3.0
#: Once the link is back, the host is connected again within the longest
#: connect backoff plus one connect (README, "When the database is away"),
#: plus the heartbeat's second while the link is down and slack for a busy CI host.
_DB = Database.__init__.__kwdefaults__ or {}
RECONNECT = _DB["backoff_max"] + _DB["connect_timeout"] + 1.0 + 4.0


@pytest.fixture(scope="module")
def linked() -> Iterator[tuple[PgServer, Link]]:
    """A server of this module's own (its listen addresses change), and the link."""
    with Link() as link:
        pg = PgServer()
        try:
            listen_on_link(pg, link)
            yield pg, link
        finally:
            pg.destroy()


def _body(tag: str, churn: bool) -> str:
    text = (
        table("[[pools]]", name="plan", unit="runs", limit=1000000)
        + table("[[arms]]", name="plan", cli="command", pools=["plan"])
        + table(
            "[[templates]]", name="work", kind="oneshot", restart="on-failure",
            argv=[PY, "-c", "import time; time.sleep(300)"], env={"TEST_TAG": tag},
        )
    )  # fmt: skip
    if churn:
        text += table(
            "[[tasks]]", name="churn", restart="always", max_restarts=100000,
            argv=[PY, "-c", "import time; time.sleep(0.3)"],
            backoff={"initial": "0.1s", "max": "0.1s", "jitter": False},
        )  # fmt: skip
    return text


def _item(dsn: str) -> tuple[str, int, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT state, attempt, host FROM fleet_queue").fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), str(row[2])


class Census:
    """`ps` every 50 ms: the most live processes of the submission seen at once."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            live = [p for p in tagged(self.tag) if _alive(p)]
            self.most = max(self.most, len(live))
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self) -> Census:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _started(host: Host, task: str) -> list[dict[str, Any]]:
    return [e for e in host.events("run.started") if e.get("task") == task]


def _fleet(
    linked: tuple[PgServer, Link], tmp_path: Path, tag: str, churn: bool, **c_daemon: object
) -> tuple[str, list[Host]]:
    """Hosts a and b on the server's socket, c in the namespace over the veth."""
    pg, link = linked
    dsn = pg.fresh_db()
    fleet = {"lease": f"{LEASE}s"}
    a, b = (Host(n, tmp_path / n, dsn, _body(tag, False), fleet=fleet) for n in ("a", "b"))
    c = NetnsHost(
        "c", tmp_path / "c", tcp_dsn(dsn, pg, link), _body(tag, churn), fleet=fleet,
        daemon={"max_concurrent": 4, **c_daemon}, link=link,
    )  # fmt: skip
    return dsn, [a, b, c]


def _claimed_by_c(dsn: str, hosts: list[Host]) -> str:
    """Start c alone, so that c is the host that claims the item; then a and b."""
    a, b, c = hosts
    c.start()
    wait_for(lambda: c.events("fleet.ready"), 30, "host c ready over the veth")
    done = c.cli("submit", "--template", "work")
    assert done.returncode == 0, done.stderr
    sub_id = done.stdout.strip()
    wait_for(lambda: _started(c, sub_id), 30, "host c running the item")
    a.start()
    b.start()
    wait_for(lambda: a.events("fleet.ready") and b.events("fleet.ready"), 30, "a and b ready")
    assert _item(dsn) == ("claimed", 1, "c")
    return sub_id


def _handover(hosts: list[Host], sub_id: str, cut_at: float) -> None:
    """c's run of the item ended before another host's began, and within the lease."""
    a, b, c = hosts
    moved = wait_for(lambda: _started(a, sub_id) + _started(b, sub_id), LEASE + 15, "a takeover")
    ended = wait_for(
        lambda: [e for e in c.events("run.finished") if e.get("task") == sub_id],
        30,
        "c's run of the item ending",
    )
    overlap = when(ended[0]) - when(moved[0])
    assert overlap <= 0, f"two live runs for {overlap:.2f}s: c's still ran"
    lost = c.events("fleet.claim_lost")
    assert when(lost[0]) - cut_at <= LEASE, "c held its claim past the lease"
    taken = [e for h in (a, b) for e in h.events("fleet.claim_taken_over")]
    assert [(e["id"], e["attempt"], e["lost_by"]) for e in taken] == [(sub_id, 2, "c")]


def _clean_up(hosts: list[Host], link: Link, tag: str) -> None:
    with contextlib.suppress(Exception):
        link.mend()
    for host in hosts:
        host.stop()
    for proc in tagged(tag):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def test_a_cut_off_daemon_gives_its_claim_up_and_the_item_never_runs_twice(
    linked: tuple[PgServer, Link], tmp_path: Path
) -> None:
    link = linked[1]
    tag = uuid.uuid4().hex
    dsn, hosts = _fleet(linked, tmp_path, tag, churn=True)
    c = hosts[2]
    try:
        sub_id = _claimed_by_c(dsn, hosts)
        wait_for(lambda: len(_started(c, "churn")) >= 3, 30, "host c churning on the pool")
        with Census(tag) as census:
            link.cut()
            cut_at = time.time()
            _handover(hosts, sub_id, cut_at)
            # No shared work starts on c once the lease has passed since the cut.
            wait_for(lambda: c.events("fleet.disconnected"), 30, "c noticing the cut")
            time.sleep(LEASE)  # a lease more of the cut, to see that nothing starts
            late = [e for e in _started(c, "churn") if when(e) > cut_at + LEASE]
            assert late == [], "c started shared work while cut off"
            link.mend()
            mended_at = time.time()
            back = wait_for(
                lambda: c.events("fleet.connected")[1:], RECONNECT + 10, "c reconnected"
            )
            took = when(back[0]) - mended_at
            assert took <= RECONNECT, f"c reconnected {took:.1f}s after the link came back"
            wait_for(
                lambda: [e for e in _started(c, "churn") if when(e) > mended_at],
                30,
                "c working on the shared pool again",
            )
            time.sleep(LEASE)  # a lease after the link's return: still one run
        assert census.samples > 20
        assert census.most == 1, f"{census.most} live runs of {sub_id} at once"
        assert len([p for p in tagged(tag) if _alive(p)]) == 1
        assert _item(dsn)[:2] == ("claimed", 2) and _item(dsn)[2] in ("a", "b")
        assert len(_started(c, sub_id)) == 1  # c never ran it again
    finally:
        _clean_up(hosts, link, tag)


def test_a_quiet_cut_off_daemon_notices_its_lapsed_lease_in_time(
    linked: tuple[PgServer, Link], tmp_path: Path
) -> None:
    """The same cut on a host with nothing else to do and the default 5 s loop_interval:
    nothing but the lease deadline itself can wake its loop in time."""
    link = linked[1]
    tag = uuid.uuid4().hex
    dsn, hosts = _fleet(linked, tmp_path, tag, churn=False, loop_interval="5s")
    try:
        sub_id = _claimed_by_c(dsn, hosts)
        with Census(tag) as census:
            link.cut()
            _handover(hosts, sub_id, time.time())
        assert census.most == 1, f"{census.most} live runs of {sub_id} at once"
    finally:
        _clean_up(hosts, link, tag)
