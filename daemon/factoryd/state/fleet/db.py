"""Connections to the fleet's PostgreSQL, with backoff and one error type.

Every fleet operation is a short transaction run by `Database.run`. What
the daemon needs from this layer, and why it is hand-written rather than a
connection pool library:

* failing fast: while the database is down an operation raises
  `FleetUnavailable` at once (the loop must never block on a dead server),
  and a new connection is attempted only when the backoff allows (0.2 s
  doubling to 10 s, jittered, so a dozen hosts do not reconnect in step);
* knowing the state: `connected` and one `on_change` call per transition,
  which the daemon turns into `factoryd_fleet_connected` and one log event.
  A failed connect marks the link down, and any answer marks it up again,
  a new connection's or one that survived the blip in the free list (with
  it in the list, nobody may need a new connection for a long while); so
  the link is back within `backoff_max + connect_timeout` of the network;
* a broken connection is dropped, never handed out again;
* over TCP, a server that stops answering (a partition) fails the call
  after `io_timeout` (TCP user timeout and keepalives) instead of hanging,
  and the server ends a session left idle inside a transaction after as
  long, so a vanished host's row locks do not block the fleet.

Connections are kept in a small free list (one per concurrent caller, up to
`max_connections`), each in autocommit mode so that `run` owns the
transaction boundaries. Any thread may call `run`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from factoryd.state.fleet.dsn import describe, secret_of
from factoryd.state.fleet.errors import FleetUnavailable

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]


class Database:
    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int = 4,
        connect_timeout: float = 5.0,
        io_timeout: float = 10.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        on_change: Callable[[bool, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dsn = dsn
        self.where = describe(dsn)
        self._secret = secret_of(dsn)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_change = on_change
        self._clock = clock
        self._idle: list[Conn] = []
        self._open = 0
        self._cond = threading.Condition()
        self._connected: bool | None = None
        self._delay = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self._closed = False
        #: How many connections were opened, and how many attempts failed.
        self.connects = 0
        self.connect_failures = 0

    # -- state ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self._connected)

    def _transition(self, connected: bool, reason: str) -> None:
        with self._cond:
            changed = self._connected is not connected
            self._connected = connected
        if changed and self.on_change is not None:
            self.on_change(connected, reason)

    def _scrub(self, text: str) -> str:
        line = " ".join(str(text).split())
        if self._secret:
            line = line.replace(self._secret, "***")
        return line[:300]

    # -- connections -----------------------------------------------------------

    def _connect(self) -> Conn:
        now = self._clock()
        with self._cond:
            if now < self._retry_at:
                raise FleetUnavailable(
                    f"fleet database {self.where} unreachable ({self._last_error}); "
                    f"next attempt in {self._retry_at - now:.1f}s"
                )
        try:
            conn = open_session(self.dsn, self.connect_timeout, self.io_timeout)
        except psycopg.Error as exc:
            reason = self._scrub(str(exc)) or type(exc).__name__
            with self._cond:
                self.connect_failures += 1
                self._delay = min(self.backoff_max, max(self.backoff_initial, self._delay * 2))
                self._retry_at = self._clock() + self._delay * random.uniform(0.5, 1.0)  # noqa: S311
                self._last_error = reason
            self._transition(False, reason)
            raise FleetUnavailable(f"fleet database {self.where} unreachable: {reason}") from None
        with self._cond:
            self.connects += 1
        self._answered("connected")
        return conn

    def _answered(self, reason: str) -> None:
        """The database answered: the link is up and the backoff starts over."""
        with self._cond:
            self._delay = 0.0
            self._retry_at = 0.0
        self._transition(True, reason)

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A healthy connection for the duration of the block (autocommit mode)."""
        if self._closed:
            raise FleetUnavailable(f"fleet database {self.where}: closed")
        conn = self._acquire()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            self._release(conn, broken=not ok and (conn.closed or conn.broken))

    def _acquire(self) -> Conn:
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._open < self.max_connections:
                    self._open += 1
                    break
                self._cond.wait()
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _release(self, conn: Conn, *, broken: bool) -> None:
        if broken or conn.closed or self._closed:
            conn.close()
            with self._cond:
                self._open -= 1
                self._cond.notify()
            return
        with self._cond:
            self._idle.append(conn)
            self._cond.notify()

    def _drop_idle(self) -> None:
        """The server went away: every idle connection is dead too."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    # -- operations ----------------------------------------------------------

    def run(self, fn: Callable[[Conn], T]) -> T:
        """Run `fn` in one transaction; database trouble becomes FleetUnavailable."""
        try:
            with self.connection() as conn, conn.transaction():
                result = fn(conn)
        except FleetUnavailable:
            raise
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            reason = self._scrub(str(exc)) or type(exc).__name__
            if isinstance(exc, psycopg.InterfaceError) or _is_disconnect(exc):
                self._drop_idle()
                self._transition(False, reason)
            raise FleetUnavailable(f"fleet database {self.where}: {reason}") from None
        if self._connected is not True:
            # Marked down by another caller's failed connect while this call's
            # connection survived the blip: no new connect may ever be needed
            # (the free list has this one), so its answer is what brings the
            # link back up (and reopens the shared pools' gate).
            self._answered("answered")
        return result

    def ping(self) -> float:
        """Round trip to the database; returns its clock (epoch seconds)."""
        return self.run(
            lambda conn: float(_one(conn.execute("SELECT extract(epoch FROM clock_timestamp())")))
        )

    def reset(self) -> None:
        """Close the idle connections, so the next operations start new sessions."""
        self._drop_idle()

    def close(self) -> None:
        self._closed = True
        self._drop_idle()


def open_session(dsn: str, connect_timeout: float, io_timeout: float) -> Conn:
    """A new autocommit session whose dead peer is noticed within `io_timeout`.

    Over TCP, a peer that vanished (a partition, a dead server host) fails
    the call after io_timeout instead of hanging it: TCP user timeout for
    data not acknowledged, keepalives for a connection waiting to read (an
    idle pooled one, or the LISTEN one). The server's side of the same rule:
    a session whose host vanished in the middle of a transaction must not
    keep its row locks (a claim, a pool) until the server's keepalive
    notices hours later. Raises psycopg.Error.
    """
    conn: Conn = psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=max(1, round(connect_timeout)),
        application_name="factoryd",
        tcp_user_timeout=round(io_timeout * 1000),
        keepalives=1,
        keepalives_idle=max(1, round(io_timeout / 2)),
        keepalives_interval=max(1, round(io_timeout / 6)),
        keepalives_count=3,
    )
    try:
        ms = str(max(1000, round(io_timeout * 1000)))
        conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false), "
            "set_config('tcp_user_timeout', %s, false), "
            "set_config('tcp_keepalives_idle', %s, false)",
            (ms, ms, str(max(1, round(io_timeout / 2)))),
        )
    except BaseException:
        conn.close()
        raise
    return conn


def _is_disconnect(exc: psycopg.Error) -> bool:
    sqlstate = exc.sqlstate or ""
    # Class 08: connection exceptions; 57P0x: the server is shutting down.
    return sqlstate == "" or sqlstate.startswith("08") or sqlstate.startswith("57P0")


def _one(cur: psycopg.Cursor[tuple[Any, ...]]) -> Any:
    row = cur.fetchone()
    assert row is not None
    return row[0]
