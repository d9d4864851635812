"""The fleet's durable queue: any host submits, any host with room claims.

The shape is the one PostgreSQL job queues settled on (procrastinate,
pgqueuer, Oban): a claim is one `UPDATE ... FROM (SELECT ... FOR UPDATE
SKIP LOCKED)`, so claimers never wait on each other and never get the same
item; a claim is a lease on the database's clock, renewed by the holder's
heartbeat; an item whose lease lapsed (its host died, paused or lost the
network) is claimable again by any host.

Every claim bumps the item's `attempt`, which is the fencing token: renew
and finish must quote it, and are refused once another host claimed the
item, so a host that lost its lease cannot act on the item again. A renew
with the current token succeeds even after the lease lapsed, as long as no
other host claimed the item meanwhile (nothing was taken from anyone).

`enqueue` and `release` NOTIFY `CHANNEL` in their transaction (delivered
on commit); `QueueWaiter` LISTENs, so idle hosts claim at once, and falls
back to its timeout (polling) when notifications are lost, e.g. while its
connection was being re-established, or for leases that lapse by time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from factoryd.state.fleet.db import Conn, Database, open_session
from factoryd.state.fleet.errors import FleetUnavailable

CHANNEL = "factoryd_fleet_queue"


@dataclass(frozen=True, slots=True)
class Claim:
    item: int
    sub_id: str
    label: str
    request: dict[str, Any]
    #: The fencing token: quote it to renew or finish.
    attempt: int
    #: The lease's end on the database's clock.
    lease_until: float
    #: The host whose lease on this item lapsed (its run is `lost`), if any.
    lost_by: str | None


@dataclass(frozen=True, slots=True)
class Enqueued:
    item: int
    sub_id: str
    #: False when the idempotency key (or id) was already queued: nothing new.
    created: bool


class DurableQueue:
    def __init__(self, db: Database, host: str, lease: float = 30.0) -> None:
        self.db = db
        self.host = host
        self.lease = lease

    def enqueue(
        self,
        sub_id: str,
        label: str,
        request: Mapping[str, Any],
        *,
        idem_key: str | None = None,
        source: str = "",
        priority: int = 0,
    ) -> Enqueued:
        """Queue a submission (committed before this returns) and wake idle hosts."""

        def op(conn: Conn) -> Enqueued:
            row = conn.execute(
                "INSERT INTO fleet_queue (sub_id, idem_key, label, request, source, priority, "
                "state, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, 'queued', fleet_now(), fleet_now()) "
                "ON CONFLICT DO NOTHING RETURNING id",
                (sub_id, idem_key, label, json.dumps(dict(request)), source, priority),
            ).fetchone()
            if row is not None:
                conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
                return Enqueued(int(row[0]), sub_id, True)
            first = conn.execute(
                "SELECT id, sub_id FROM fleet_queue WHERE sub_id = %s OR idem_key = %s "
                "ORDER BY id LIMIT 1",
                (sub_id, idem_key),
            ).fetchone()
            assert first is not None
            return Enqueued(int(first[0]), str(first[1]), False)

        return self.db.run(op)

    def claim(self, limit: int = 1) -> list[Claim]:
        """Take up to `limit` items (queued, or claimed with a lapsed lease)."""

        def op(conn: Conn) -> list[Claim]:
            rows = conn.execute(
                "WITH c AS (SELECT id, state AS was, host AS had FROM fleet_queue "
                "  WHERE state = 'queued' OR (state = 'claimed' AND lease_until <= fleet_now()) "
                "  ORDER BY priority DESC, id FOR UPDATE SKIP LOCKED LIMIT %s) "
                "UPDATE fleet_queue q SET state = 'claimed', attempt = q.attempt + 1, host = %s, "
                "  lease_until = fleet_now() + %s, updated_at = fleet_now() "
                "FROM c WHERE q.id = c.id "
                "RETURNING q.id, q.sub_id, q.label, q.request, q.attempt, q.lease_until, "
                "  c.was, c.had",
                (limit, self.host, self.lease),
            ).fetchall()
            return sorted(
                (
                    Claim(int(r[0]), str(r[1]), str(r[2]), dict(r[3]), int(r[4]), float(r[5]),
                          str(r[7]) if r[6] == "claimed" else None)
                    for r in rows
                ),
                key=lambda c: c.item,
            )  # fmt: skip

        return self.db.run(op)

    def mine(self) -> list[Claim]:
        """The items the queue says this host has claimed (after a restart: the
        previous daemon's claims, to renew before its runs are adopted)."""

        def op(conn: Conn) -> list[Claim]:
            rows = conn.execute(
                "SELECT id, sub_id, label, request, attempt, lease_until FROM fleet_queue "
                "WHERE state = 'claimed' AND host = %s ORDER BY id",
                (self.host,),
            ).fetchall()
            return [
                Claim(int(r[0]), str(r[1]), str(r[2]), dict(r[3]), int(r[4]), float(r[5]), None)
                for r in rows
            ]

        return self.db.run(op)

    def renew(self, claims: Iterable[tuple[int, int]]) -> set[int]:
        """Extend the leases of (item, attempt) pairs; returns the items still ours.

        An item missing from the answer was claimed by another host (or
        finished or cancelled): its run must be stopped, not reported.
        """
        pairs = list(claims)
        if not pairs:
            return set()

        def op(conn: Conn) -> set[int]:
            rows = conn.execute(
                "UPDATE fleet_queue q SET lease_until = fleet_now() + %s, updated_at = fleet_now() "
                "FROM unnest(%s::bigint[], %s::int[]) AS t(id, attempt) "
                "WHERE q.id = t.id AND q.attempt = t.attempt AND q.host = %s "
                "AND q.state = 'claimed' RETURNING q.id",
                (self.lease, [p[0] for p in pairs], [p[1] for p in pairs], self.host),
            ).fetchall()
            return {int(r[0]) for r in rows}

        return self.db.run(op)

    def finish(
        self, item: int, attempt: int, *, failed: bool = False, outcome: str = "", reason: str = ""
    ) -> bool:
        """Record the item's end; False (nothing written) if the token is stale."""
        return self._end(item, attempt, "failed" if failed else "done", outcome, reason)

    def release(self, item: int, attempt: int, reason: str = "") -> bool:
        """Give a claimed item back (no room after all, shutting down): queued again."""
        return self._end(item, attempt, "queued", "", reason)

    def _end(self, item: int, attempt: int, state: str, outcome: str, reason: str) -> bool:
        def op(conn: Conn) -> bool:
            row = conn.execute(
                "UPDATE fleet_queue SET state = %s, outcome = %s, reason = %s, "
                "lease_until = NULL, updated_at = fleet_now() "
                "WHERE id = %s AND attempt = %s AND host = %s AND state = 'claimed' RETURNING id",
                (state, outcome, reason, item, attempt, self.host),
            ).fetchone()
            if row is not None and state == "queued":
                conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            return row is not None

        return self.db.run(op)

    def cancel(self, sub_id: str, reason: str = "cancelled") -> bool:
        """Withdraw a queued or claimed item (a claimed one's holder loses it)."""
        return self.db.run(
            lambda conn: (
                conn.execute(
                    "UPDATE fleet_queue SET state = 'cancelled', reason = %s, lease_until = NULL, "
                    "updated_at = fleet_now() WHERE sub_id = %s AND state IN ('queued', 'claimed') "
                    "RETURNING id",
                    (reason, sub_id),
                ).fetchone()
                is not None
            )
        )

    def items(self, states: Iterable[str] = ("queued", "claimed")) -> list[dict[str, Any]]:
        """Items in `states`, oldest first (for status and tests)."""
        keys = ("item", "sub_id", "label", "state", "attempt", "host", "lease_until", "outcome")

        def op(conn: Conn) -> list[dict[str, Any]]:
            cur = conn.execute(
                "SELECT id, sub_id, label, state, attempt, host, lease_until, outcome "
                "FROM fleet_queue WHERE state = ANY(%s) ORDER BY id",
                (list(states),),
            )
            return [dict(zip(keys, r, strict=True)) for r in cur]

        return self.db.run(op)

    def prune(self, older_than: float) -> int:
        """Forget ended items older than `older_than` seconds."""
        return self.db.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM fleet_queue WHERE state IN ('done', 'failed', 'cancelled') "
                    "AND updated_at < fleet_now() - %s",
                    (older_than,),
                ).rowcount
            )
        )


class QueueWaiter:
    """A LISTEN connection of its own: `wait` returns as soon as work is queued.

    It only ever reads, so without keepalives a peer that vanished (a
    partition, a server host that died) would leave it waiting on a dead
    socket for good, every notification lost: it gets the pool's socket
    options (db.open_session), and a dead peer fails `wait` within
    `io_timeout`, which reconnects on the next call."""

    def __init__(self, dsn: str, connect_timeout: float = 5.0, io_timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def wait(self, timeout: float) -> bool:
        """True if woken (or just reconnected: notifications may have been missed,
        so claim now); False when `timeout` passed quietly. Raises
        FleetUnavailable when the database cannot be reached."""
        fresh = self._conn is None
        try:
            if self._conn is None:
                self._conn = open_session(self.dsn, self.connect_timeout, self.io_timeout)
                self._conn.execute(f"LISTEN {CHANNEL}")
            if fresh:
                return True
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                return True
            return False
        except psycopg.Error as exc:
            self.close()
            raise FleetUnavailable(f"fleet queue listener: {type(exc).__name__}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
