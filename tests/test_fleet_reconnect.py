"""After a network blip the fleet link comes back within a bound, however it died.

A TCP proxy between `Database` and PostgreSQL goes silent (bytes are not
forwarded, new connections are held unanswered: a partition as the daemon
sees it). A call in flight on a pooled connection hangs; another caller
needs a second connection, whose connect times out: the link is marked
down (`fleet.disconnected`, shared reservations refused). When the proxy
forwards again, the hung call completes and its connection, alive, goes
back to the free list. From then on every call succeeds on that
connection, so none needs a new one: the link must be marked up again by
the first answer (the CI flake of test_fleet_partition_daemons.py: host c
stayed "disconnected", working, with no second `fleet.connected`).

The LISTEN connection that wakes an idle claimer must notice a dead peer
too: it gets the same keepalives and TCP user timeout as the pool's.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.errors import FleetUnavailable
from factoryd.state.fleet.queue import QueueWaiter
from fleet_host_kit import wait_for
from fleet_proxy_kit import FreezingProxy
from pg_kit import PgServer
from psycopg.conninfo import conninfo_to_dict

pytest_plugins = ["fleet_fixtures"]

#: The bound this test holds the link to once the network is back: the
#: database's own bound is backoff_max + connect_timeout (README, Fleet).
BOUND = 3.0


@pytest.fixture
def proxied(pg: PgServer, dsn: str) -> Iterator[tuple[str, FreezingProxy]]:
    proxy = FreezingProxy(pg.port)
    dbname = str(conninfo_to_dict(dsn)["dbname"])
    url = pg.url(dbname, tcp=True).replace(f":{pg.port}/", f":{proxy.port}/")
    try:
        yield url, proxy
    finally:
        proxy.close()


def test_a_connection_that_outlived_the_outage_marks_the_link_up_again(
    proxied: tuple[str, FreezingProxy],
) -> None:
    url, proxy = proxied
    changes: list[bool] = []
    db = Database(
        url,
        connect_timeout=1.0,
        backoff_initial=0.1,
        backoff_max=0.5,
        on_change=lambda up, _reason: changes.append(up),
    )
    try:
        db.ping()
        assert db.connected and changes == [True]
        proxy.freeze()
        # A call in flight on the pooled connection when the network went silent.
        hung: list[object] = []
        caller = threading.Thread(target=lambda: hung.append(db.ping()), daemon=True)
        caller.start()
        wait_for(lambda: db._open == 1 and not db._idle, 5, "the pooled connection in use")
        # Another caller needs a connection of its own: the connect times out.
        with pytest.raises(FleetUnavailable):
            db.ping()
        assert not db.connected and changes == [True, False]
        proxy.thaw()
        thawed = time.monotonic()
        caller.join(10)
        assert hung, "the call in flight did not complete once the proxy forwarded again"

        def heartbeat() -> bool:
            # What the daemon's heartbeat does every second while the link is down.
            try:
                db.ping()
            except FleetUnavailable:
                return False
            return db.connected

        wait_for(heartbeat, BOUND, "the link marked up again after the network came back")
        assert time.monotonic() - thawed <= BOUND
        assert changes == [True, False, True]
        # Its backoff was reset too: a second connection is opened at once, not refused.
        db.reset()
        db.ping()
        assert db.connects >= 2
    finally:
        proxy.thaw()
        db.close()


def _opt(sock: socket.socket, level: int, name: int) -> int:
    return sock.getsockopt(level, name)


def test_the_listen_connection_notices_a_dead_peer_like_the_pool_does(
    pg: PgServer, dsn: str
) -> None:
    dbname = str(conninfo_to_dict(dsn)["dbname"])
    url = pg.url(dbname, tcp=True)
    db = Database(url, io_timeout=6.0)
    waiter = QueueWaiter(url, io_timeout=6.0)
    try:
        db.ping()
        assert waiter.wait(0.1) is True  # connected (and LISTENing)
        pooled = db._idle[0]
        assert waiter._conn is not None
        for conn in (pooled, waiter._conn):
            fd = conn.pgconn.socket
            sock = socket.socket(fileno=fd)
            try:
                assert _opt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert _opt(sock, socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 6000
                assert _opt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 3
            finally:
                sock.detach()
    finally:
        waiter.close()
        db.close()
