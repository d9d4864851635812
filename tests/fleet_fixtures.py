"""The fleet tests' fixtures (a pytest plugin: `pytest_plugins = ["fleet_fixtures"]`):
one PostgreSQL per session, a fresh schema per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.schema import migrate
from pg_kit import PgServer, shared_server


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
