"""Helpers for the fleet tests: pool specs and moving the database's clock."""

from __future__ import annotations

from factoryd.routing.model import PoolSpec, PoolUnit
from factoryd.state.fleet.db import Database
from factoryd.units.durations import parse_period
from pg_kit import with_db_clock


def shift_clock(dsn: str, offset: float, *dbs: Database) -> None:
    """Move the database's clock by `offset` s (from now on) for these connections."""
    for db in dbs:
        db.dsn = with_db_clock(dsn, offset)
        db.reset()


def pool(name: str, unit: str = "tokens", limit: float = 1000, window: str | None = None,
         **kw: object) -> PoolSpec:  # fmt: skip
    return PoolSpec(
        name=name,
        unit=PoolUnit(unit),
        limit=limit,
        window=parse_period(window) if window else None,
        **kw,  # type: ignore[arg-type]
    )
