"""The shared pools' rows and the rules read from them, for the fleet ledger.

Kept apart from ledger.py (the transactions) so that each stays short: the
row as locked, the one lock order every writer uses, the window a row is
in at the database's time, and the in-memory ledger's refusal rules
applied to the fleet's numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from factoryd.routing.ledger import Refusal
from factoryd.routing.model import RejectReason
from factoryd.routing.windows import window_bounds
from factoryd.state.fleet.db import Conn
from factoryd.units.durations import Period
from factoryd.units.timefmt import iso

POOL_COLUMNS = (
    "name, unit, cap, window_months, window_seconds, anchor, limit_backoff, limit_backoff_max, "
    "used, window_start, window_end, limited_until, limited_reason, limited_by, strikes"
)


@dataclass(slots=True)
class PoolRow:
    name: str
    unit: str
    cap: float
    window_months: int
    window_seconds: float
    anchor: float
    limit_backoff: float
    limit_backoff_max: float
    used: float
    window_start: float | None
    window_end: float | None
    limited_until: float | None
    limited_reason: str
    limited_by: str
    strikes: int


@dataclass(frozen=True, slots=True)
class SharedPool:
    """A pool's fleet-wide numbers as of `LedgerView.now`."""

    name: str
    unit: str
    limit: float
    used: float
    reserved: float
    holds: int
    window_start: float | None
    window_end: float | None
    limited_until: float | None
    limited_reason: str
    limited_by: str
    strikes: int

    def remaining(self) -> float:
        return self.limit - self.used - self.reserved


@dataclass(frozen=True, slots=True)
class LedgerView:
    #: The database's clock when the view was read.
    now: float
    pools: dict[str, SharedPool]


def lock_pools(
    conn: Conn, names: Iterable[str], *, holds_of: str | None = None
) -> tuple[dict[str, PoolRow], float]:
    """Lock the named pool rows (and, with `holds_of`, those a reservation holds)
    in name order, the one order every writer uses; returns them and the
    database's clock, read in the same round trip."""
    ordered = sorted(set(names))
    if not ordered and holds_of is None:
        return {}, db_now(conn)
    if holds_of is None:
        cur = conn.execute(
            f"SELECT {POOL_COLUMNS}, fleet_now() FROM fleet_pools "  # noqa: S608
            "WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
            (ordered,),
        )
    else:
        cur = conn.execute(
            f"SELECT {POOL_COLUMNS}, fleet_now() FROM fleet_pools "  # noqa: S608
            "WHERE name = ANY(%s) OR name IN (SELECT pool FROM fleet_holds WHERE res_id = %s) "
            "ORDER BY name FOR UPDATE",
            (ordered, holds_of),
        )
    rows = cur.fetchall()
    if not rows:
        return {}, db_now(conn)
    # The clock is read as each row is produced; the latest reading is the freshest.
    return {str(r[0]): PoolRow(*r[:-1]) for r in rows}, max(float(r[-1]) for r in rows)


def db_now(conn: Conn) -> float:
    row = conn.execute("SELECT fleet_now()").fetchone()
    assert row is not None
    return float(row[0])


def period_of(window: Period | None) -> tuple[int, float]:
    return (0, 0.0) if window is None else (window.months, window.seconds)


def window_of(row: PoolRow, now: float) -> tuple[float | None, float | None]:
    if not row.window_months and not row.window_seconds:
        return None, None
    period = Period(months=row.window_months, seconds=row.window_seconds)
    return window_bounds(row.anchor, period, now)


def refusal(row: PoolRow, reserved: float, amount: float, now: float) -> Refusal | None:
    """The in-memory ledger's refusal rules, on the fleet's numbers."""
    if row.limited_until is not None and now < row.limited_until:
        return Refusal(
            row.name,
            RejectReason.POOL_LIMITED,
            f"pool {row.name} limited until {iso(row.limited_until)}"
            + (f" ({row.limited_reason})" if row.limited_reason else "")
            + (f", reported by {row.limited_by}" if row.limited_by else ""),
        )
    remaining = row.cap - row.used - reserved
    if remaining <= 0:
        return Refusal(
            row.name,
            RejectReason.POOL_EXHAUSTED,
            f"pool {row.name} exhausted fleet-wide ({row.used:.6g} used + {reserved:.6g} "
            f"reserved of {row.cap:.6g} {row.unit}"
            + (f", resets {iso(row.window_end)})" if row.window_end else ")"),
        )
    if amount > remaining:
        return Refusal(
            row.name,
            RejectReason.POOL_INSUFFICIENT,
            f"pool {row.name} cannot afford {amount:.6g} {row.unit} ({remaining:.6g} left)",
        )
    return None
