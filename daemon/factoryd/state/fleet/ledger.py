"""The fleet's pool ledger in PostgreSQL: one budget, seen and spent by every host.

Counting locally and syncing later lets N hosts spend N budgets (the real
limit becomes limit x hosts). Here every check-and-reserve is one
transaction on the shared rows:

* reserve is all-or-nothing across the arm's pools: the pool rows are
  locked `FOR UPDATE` in name order (every writer locks in that order, so
  two reserves never deadlock), the live holds are summed, and the holds
  are inserted only if every pool can take its charge;
* holds expire on the database's clock (`fleet_now()`), so a host whose
  clock is off neither keeps nor drops a hold early, and a lost host's
  holds lapse by themselves (no leak);
* commit and rollback settle in pool units and are idempotent per
  reservation (`fleet_settlements`), so a host replaying its outbox after
  an outage never charges twice;
* windows are rolled under the row lock by whichever host first sees the
  reset, and stored, so all hosts read the same window;
* a limit reported by any host is stored on the pool and refuses every
  host's reserve until its time.

Refusals are values (`routing.ledger.Refusal`), as in the in-memory ledger,
so the router can move on to its next arm.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum

from factoryd.routing.ledger import Refusal, Reservation
from factoryd.routing.model import PoolSpec, RejectReason
from factoryd.state.fleet.db import Conn, Database
from factoryd.state.fleet.errors import FleetError
from factoryd.state.fleet.pools import (
    POOL_COLUMNS,
    LedgerView,
    PoolRow,
    SharedPool,
    db_now,
    lock_pools,
    period_of,
    refusal,
    window_of,
)


class _AlreadySettled(Exception):
    """Raised inside a settlement's transaction to roll it back."""


class Settled(StrEnum):
    """What a commit or rollback found."""

    HELD = "held"  # the hold was live and is released
    EXPIRED = "expired"  # the hold had lapsed (usage is still recorded on commit)
    DUPLICATE = "duplicate"  # this reservation was settled before: nothing changed


class SharedLedger:
    def __init__(self, db: Database, host: str) -> None:
        self.db = db
        self.host = host
        #: Lapsed holds this host's transactions removed (each counted once fleet-wide).
        self.expired_total = 0

    # -- configuration ---------------------------------------------------------

    def sync_pools(self, specs: Iterable[PoolSpec]) -> list[str]:
        """Write this host's pool specs; return the pools whose fleet spec differed.

        The last host to start or reload decides a pool's spec; a difference
        means the hosts' configs disagree, which the caller should log.
        """
        specs = sorted(specs, key=lambda s: s.name)

        def op(conn: Conn) -> list[str]:
            rows, now = lock_pools(conn, [s.name for s in specs])
            changed: list[str] = []
            for spec in specs:
                months, seconds = period_of(spec.window)
                old = rows.get(spec.name)
                if old is None:
                    conn.execute(
                        "INSERT INTO fleet_pools (name, unit, cap, window_months, window_seconds, "
                        "anchor, limit_backoff, limit_backoff_max, spec_by, updated_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (name) DO NOTHING",
                        (spec.name, str(spec.unit), spec.limit, months, seconds, spec.anchor,
                         spec.limit_backoff, spec.limit_backoff_max, self.host, now),
                    )  # fmt: skip
                    continue
                same_window = (old.window_months, old.window_seconds, old.anchor) == (
                    months, seconds, spec.anchor,
                )  # fmt: skip
                old_rest = (old.unit, old.cap, old.limit_backoff, old.limit_backoff_max)
                new_rest = (str(spec.unit), spec.limit, spec.limit_backoff, spec.limit_backoff_max)
                if same_window and old_rest == new_rest:
                    continue
                changed.append(spec.name)
                conn.execute(
                    "UPDATE fleet_pools SET unit = %s, cap = %s, window_months = %s, "
                    "window_seconds = %s, anchor = %s, limit_backoff = %s, limit_backoff_max = %s, "
                    "window_start = CASE WHEN %s THEN window_start END, "
                    "window_end = CASE WHEN %s THEN window_end END, spec_by = %s, updated_at = %s "
                    "WHERE name = %s",
                    (str(spec.unit), spec.limit, months, seconds, spec.anchor, spec.limit_backoff,
                     spec.limit_backoff_max, same_window, same_window, self.host, now, spec.name),
                )  # fmt: skip
            return changed

        return self.db.run(op)

    # -- reserving ---------------------------------------------------------------

    def reserve(
        self,
        arm: str,
        task: str,
        charges: Mapping[str, float],
        ttl: float,
        *,
        res_id: str | None = None,
    ) -> Reservation | Refusal:
        """Hold `charges` on every pool or on none; the hold lapses `ttl` s from now
        on the database's clock. `res_id` lets a caller name the reservation before
        asking, so that an answer lost to an outage can still be rolled back."""
        rid = res_id or f"{self.host}/{uuid.uuid4().hex[:16]}"
        charges = dict(charges)

        def op(conn: Conn) -> Reservation | Refusal:
            rows, now = lock_pools(conn, charges)
            self._roll(conn, rows.values(), now)
            reserved = self._live_holds(conn, list(rows), now)
            for pool, amount in charges.items():
                row = rows.get(pool)
                if row is None:
                    return Refusal(
                        pool, RejectReason.POOL_EXHAUSTED, f"pool {pool} is not in the fleet"
                    )
                refused = refusal(row, reserved.get(pool, 0.0), amount, now)
                if refused is not None:
                    return refused
            added = conn.execute(
                "INSERT INTO fleet_holds (res_id, pool, amount, arm, task, host, created_at, "
                "expires_at) SELECT %s, p, a, %s, %s, %s, %s, %s "
                "FROM unnest(%s::text[], %s::float8[]) AS t(p, a) "
                "WHERE NOT EXISTS (SELECT 1 FROM fleet_settlements WHERE res_id = %s)",
                (rid, arm, task, self.host, now, now + ttl, list(charges), list(charges.values()),
                 rid),
            ).rowcount  # fmt: skip
            if charges and added == 0:
                # A hold under a settled id could never be settled again.
                raise FleetError(f"reservation id {rid} was already settled; ids must be new")
            return Reservation(rid, arm, task, charges, created_at=now, expires_at=now + ttl)

        return self.db.run(op)

    def commit(self, res_id: str, actual: Mapping[str, float]) -> Settled:
        """Release the hold and record `actual` usage (even if the hold had lapsed)."""
        return self._settle(res_id, "commit", dict(actual))

    def rollback(self, res_id: str) -> Settled:
        """Release the hold without usage (the run never started)."""
        return self._settle(res_id, "rollback", {})

    def _settle(self, res_id: str, kind: str, actual: dict[str, float]) -> Settled:
        def op(conn: Conn) -> Settled:
            charged = {p: a for p, a in actual.items() if a > 0}
            rows, now = lock_pools(conn, charged, holds_of=res_id)
            self._roll(conn, rows.values(), now)
            live = conn.execute(
                "WITH gone AS (DELETE FROM fleet_holds WHERE res_id = %s RETURNING expires_at) "
                "SELECT count(*) FILTER (WHERE expires_at > %s) FROM gone",
                (res_id, now),
            ).fetchone()
            held = bool(live and live[0])
            used = {p: a for p, a in charged.items() if p in rows}
            if used:
                conn.execute(
                    "UPDATE fleet_pools SET used = used + t.a, updated_at = %s "
                    "FROM unnest(%s::text[], %s::float8[]) AS t(p, a) WHERE name = t.p",
                    (now, list(used), list(used.values())),
                )
            first = conn.execute(
                "INSERT INTO fleet_settlements (res_id, kind, host, actual, held, at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (res_id) DO NOTHING RETURNING 1",
                (res_id, kind, self.host, json.dumps(actual), held, now),
            ).fetchone()
            if first is None:
                raise _AlreadySettled  # undo the above: this reservation was settled before
            return Settled.HELD if held else Settled.EXPIRED

        try:
            return self.db.run(op)
        except _AlreadySettled:
            return Settled.DUPLICATE

    # -- limits ------------------------------------------------------------------

    def hold_limit(self, pools: Iterable[str], until: float, reason: str) -> None:
        """A provider said these pools are exhausted until `until` (epoch s): every
        host's reserve on them is refused until then."""
        names = sorted(set(pools))

        def op(conn: Conn) -> None:
            lock_pools(conn, names)
            conn.execute(
                "UPDATE fleet_pools SET limited_until = %s, limited_reason = %s, limited_by = %s, "
                "updated_at = fleet_now() WHERE name = ANY(%s) "
                "AND (limited_until IS NULL OR limited_until < %s)",
                (until, reason, self.host, names, until),
            )

        self.db.run(op)

    def hold_limit_unknown(self, pools: Iterable[str], reason: str) -> float:
        """A limit without a reset time: hold each pool for its backoff (doubling per
        strike). A pool already held is not struck again: the other hosts' runs that
        meet the same limit started before the hold and teach nothing new.
        Returns the latest hold's end on the database's clock."""
        names = sorted(set(pools))

        def op(conn: Conn) -> float:
            rows, now = lock_pools(conn, names)
            latest = now
            for row in rows.values():
                if row.limited_until is not None and row.limited_until > now:
                    latest = max(latest, row.limited_until)
                    continue
                hold = min(row.limit_backoff * 2**row.strikes, row.limit_backoff_max)
                conn.execute(
                    "UPDATE fleet_pools SET limited_until = %s, limited_reason = %s, "
                    "limited_by = %s, strikes = strikes + 1, updated_at = %s WHERE name = %s",
                    (now + hold, reason, self.host, now, row.name),
                )
                latest = max(latest, now + hold)
            return latest

        return self.db.run(op)

    def clear_strikes(self, pools: Iterable[str]) -> None:
        """A run succeeded on these pools: the next unknown limit starts small again."""
        names = sorted(set(pools))

        def op(conn: Conn) -> None:
            rows, _ = lock_pools(conn, names)
            struck = [r.name for r in rows.values() if r.strikes]
            if struck:
                conn.execute("UPDATE fleet_pools SET strikes = 0 WHERE name = ANY(%s)", (struck,))

        self.db.run(op)

    # -- reading -----------------------------------------------------------------

    def view(self) -> LedgerView:
        """Every pool's shared numbers (no locks: a consistent snapshot)."""

        def op(conn: Conn) -> LedgerView:
            now = db_now(conn)
            rows = [PoolRow(*r) for r in conn.execute(f"SELECT {POOL_COLUMNS} FROM fleet_pools")]  # noqa: S608
            holds = {
                str(r[0]): (float(r[1]), int(r[2]))
                for r in conn.execute(
                    "SELECT pool, sum(amount), count(*) FROM fleet_holds "
                    "WHERE expires_at > %s GROUP BY pool",
                    (now,),
                )
            }
            pools = {}
            for row in rows:
                start, end = window_of(row, now)
                used = row.used if start == row.window_start or row.window_start is None else 0.0
                reserved, count = holds.get(row.name, (0.0, 0))
                limited = row.limited_until if (row.limited_until or 0) > now else None
                pools[row.name] = SharedPool(
                    row.name, row.unit, row.cap, used, reserved, count, start, end, limited,
                    row.limited_reason if limited else "", row.limited_by if limited else "",
                    row.strikes,
                )  # fmt: skip
            return LedgerView(now, pools)

        return self.db.run(op)

    def holds(self) -> list[dict[str, object]]:
        """Live holds, oldest first (for `factoryd fleet status`)."""

        def op(conn: Conn) -> list[dict[str, object]]:
            cur = conn.execute(
                "SELECT res_id, pool, amount, arm, task, host, created_at, expires_at "
                "FROM fleet_holds WHERE expires_at > fleet_now() ORDER BY created_at, res_id, pool"
            )
            keys = ("res_id", "pool", "amount", "arm", "task", "host", "created_at", "expires_at")
            return [dict(zip(keys, r, strict=True)) for r in cur]

        return self.db.run(op)

    def prune_settlements(self, older_than: float) -> int:
        """Forget settlements older than `older_than` s (longer than any outbox lives)."""
        return self.db.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM fleet_settlements WHERE at < fleet_now() - %s", (older_than,)
                ).rowcount
            )
        )

    # -- helpers -----------------------------------------------------------------

    def _roll(self, conn: Conn, rows: Iterable[PoolRow], now: float) -> None:
        """Move locked pools into the window that contains `now`, once for the fleet."""
        for row in rows:
            start, end = window_of(row, now)
            if start is None or (row.window_start == start and row.window_end == end):
                continue
            if row.window_start is not None and start != row.window_start:
                row.used = 0.0
            row.window_start, row.window_end = start, end
            conn.execute(
                "UPDATE fleet_pools SET used = %s, window_start = %s, window_end = %s "
                "WHERE name = %s",
                (row.used, start, end, row.name),
            )

    def _live_holds(self, conn: Conn, pools: list[str], now: float) -> dict[str, float]:
        """Drop the pools' lapsed holds and sum the live ones, in one round trip."""
        cur = conn.execute(
            "WITH gone AS (DELETE FROM fleet_holds WHERE pool = ANY(%(p)s) "
            "  AND expires_at <= %(now)s RETURNING 1) "
            "SELECT NULL, (SELECT count(*) FROM gone)::float8 "
            "UNION ALL SELECT pool, sum(amount) FROM fleet_holds "
            "  WHERE pool = ANY(%(p)s) AND expires_at > %(now)s GROUP BY pool",
            {"p": pools, "now": now},
        )
        sums: dict[str, float] = {}
        for pool, value in cur:
            if pool is None:
                self.expired_total += int(value)
            else:
                sums[str(pool)] = float(value)
        return sums
