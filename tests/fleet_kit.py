"""Fixtures for the fleet tests: one PostgreSQL per session, a database per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from factoryd.routing.model import PoolSpec, PoolUnit
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.schema import migrate
from factoryd.units.durations import parse_period
from pg_kit import PgServer, set_db_clock, shared_server


@pytest.fixture(scope="session")
def pg() -> PgServer:
    return shared_server()


@pytest.fixture
def dsn(pg: PgServer) -> str:
    return pg.fresh_db()


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[..., Database]]:
    """Open Databases on this test's database (one per simulated host); all closed after."""
    opened: list[Database] = []

    def open_one(**kw: object) -> Database:
        db = Database(dsn, **kw)  # type: ignore[arg-type]
        migrate(db)
        opened.append(db)
        return db

    yield open_one
    for db in opened:
        db.close()


def shift_clock(dsn: str, offset: float, *dbs: Database) -> None:
    """Move the database's clock by `offset` s (from now on) for these connections."""
    set_db_clock(dsn, offset)
    for db in dbs:
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
