"""The fleet's hosts: who is there, since when, and when each was last heard of.

Each daemon registers at start and heartbeats (at a third of its lease,
with its lease renewals) so `factoryd fleet status` can show every host's
last heartbeat by the database's clock, what it has claimed, and which
hosts look dead (silent for longer than a lease).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from factoryd.state.fleet.db import Conn, Database


@dataclass(frozen=True, slots=True)
class HostRow:
    name: str
    started_at: float
    last_seen: float
    #: Seconds since the last heartbeat, on the database's clock.
    silent_for: float
    pid: int
    version: str
    info: dict[str, Any]
    #: Queue items this host holds a claim on.
    claimed: int


class HostRegistry:
    def __init__(self, db: Database, host: str) -> None:
        self.db = db
        self.host = host

    def register(self, version: str = "", info: Mapping[str, Any] | None = None) -> None:
        """This daemon (re)started: a new `started_at`, and its first heartbeat."""
        self.db.run(
            lambda conn: conn.execute(
                "INSERT INTO fleet_hosts (name, started_at, last_seen, pid, version, info) "
                "VALUES (%s, fleet_now(), fleet_now(), %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at, "
                "last_seen = excluded.last_seen, pid = excluded.pid, version = excluded.version, "
                "info = excluded.info",
                (self.host, os.getpid(), version, json.dumps(dict(info or {}))),
            )
        )

    def heartbeat(self, info: Mapping[str, Any] | None = None) -> float:
        """Record that this host is alive; returns the database's clock."""

        def op(conn: Conn) -> float:
            if info is None:
                row = conn.execute(
                    "UPDATE fleet_hosts SET last_seen = fleet_now() WHERE name = %s "
                    "RETURNING last_seen",
                    (self.host,),
                ).fetchone()
            else:
                row = conn.execute(
                    "UPDATE fleet_hosts SET last_seen = fleet_now(), info = %s WHERE name = %s "
                    "RETURNING last_seen",
                    (json.dumps(dict(info)), self.host),
                ).fetchone()
            if row is None:  # forgotten by an operator: come back
                row = conn.execute(
                    "INSERT INTO fleet_hosts (name, started_at, last_seen, pid) "
                    "VALUES (%s, fleet_now(), fleet_now(), %s) RETURNING last_seen",
                    (self.host, os.getpid()),
                ).fetchone()
            assert row is not None
            return float(row[0])

        return self.db.run(op)

    def hosts(self) -> list[HostRow]:
        def op(conn: Conn) -> list[HostRow]:
            rows = conn.execute(
                "SELECT h.name, h.started_at, h.last_seen, fleet_now() - h.last_seen, h.pid, "
                "h.version, h.info, (SELECT count(*) FROM fleet_queue q "
                "  WHERE q.host = h.name AND q.state = 'claimed') "
                "FROM fleet_hosts h ORDER BY h.name"
            ).fetchall()
            return [
                HostRow(str(r[0]), float(r[1]), float(r[2]), float(r[3]), int(r[4]), str(r[5]),
                        dict(r[6]), int(r[7]))
                for r in rows
            ]  # fmt: skip

        return self.db.run(op)

    def forget(self, name: str) -> bool:
        """Remove a decommissioned host from the list (its claims lapse by lease)."""
        return self.db.run(
            lambda conn: (
                conn.execute("DELETE FROM fleet_hosts WHERE name = %s", (name,)).rowcount > 0
            )
        )
