"""`[fleet]` settings and where the connection string comes from, secrets kept out of errors."""

from __future__ import annotations

import pytest
from factoryd.state.fleet.db import Database
from factoryd.state.fleet.dsn import describe, inline_password, resolve_dsn
from factoryd.state.fleet.errors import FleetConfigError, FleetUnavailable
from factoryd.state.fleet.settings import parse_fleet
from pg_kit import PASSWORD, SUPERUSER

pytest_plugins = ["fleet_fixtures"]


def test_no_fleet_table_means_no_fleet() -> None:
    assert parse_fleet(None) is None


def test_fleet_settings_defaults_and_errors_name_the_key() -> None:
    got = parse_fleet({"database": "env:FLEET_DB"}, default_host="build-07")
    assert got is not None and (got.host, got.lease, got.heartbeat) == ("build-07", 30.0, 10.0)
    assert got.outage_allowance == {}
    spare = parse_fleet({"database": "env:X", "outage_allowance": {"plan": 2}})
    assert spare is not None and spare.outage_allowance == {"plan": 2.0}
    assert parse_fleet({"database": "file:/x", "host": "b2", "lease": "1m"}).lease == 60.0  # type: ignore[union-attr]
    for table, key in [
        ({}, "fleet.database"),
        ({"database": 5}, "fleet.database"),
        ({"database": "env:X", "lease": "soon"}, "fleet.lease"),
        ({"database": "env:X", "lease": "1s"}, "fleet.lease"),
        ({"database": "env:X", "host": "bad host!"}, "fleet.host"),
        ({"database": "env:X", "hosts": 3}, "fleet.hosts: unknown key"),
        ({"database": "env:X", "outage_allowance": {"plan": -1}}, "fleet.outage_allowance"),
        ({"database": "env:X", "outage_allowance": 2}, "fleet.outage_allowance"),
    ]:
        with pytest.raises(FleetConfigError, match=key):
            parse_fleet(table)


def test_the_connection_string_comes_from_env_or_file(monkeypatch, tmp_path) -> None:
    url = f"postgresql://fleet:{PASSWORD}@db.internal:5433/factory"
    monkeypatch.setenv("FLEET_DB", url)
    assert resolve_dsn("env:FLEET_DB") == url
    secret = tmp_path / "fleet.dsn"
    secret.write_text(url + "\n")
    assert resolve_dsn(f"file:{secret}") == url
    assert describe(url) == "fleet@db.internal:5433/factory"
    assert inline_password(url) and not inline_password("env:FLEET_DB")
    monkeypatch.delenv("FLEET_DB")
    with pytest.raises(FleetConfigError, match="FLEET_DB is not set"):
        resolve_dsn("env:FLEET_DB")
    with pytest.raises(FleetConfigError, match="cannot read"):
        resolve_dsn(f"file:{tmp_path / 'missing'}")
    secret.write_text(f"postgresql://u:{PASSWORD}@h/db?bogus_option=1\n")
    with pytest.raises(FleetConfigError) as err:
        resolve_dsn(f"file:{secret}")
    assert PASSWORD not in str(err.value) and str(secret) in str(err.value)


def test_a_password_from_a_file_opens_tcp_and_a_wrong_one_is_not_echoed(pg, tmp_path) -> None:
    secret = tmp_path / "fleet.dsn"
    secret.write_text(pg.url("fleet", tcp=True) + "\n")
    db = Database(resolve_dsn(f"file:{secret}"))
    try:
        assert db.ping() > 0
    finally:
        db.close()
    wrong = "not-the-" + PASSWORD
    bad = Database(f"postgresql://{SUPERUSER}:{wrong}@127.0.0.1:{pg.port}/fleet")
    try:
        with pytest.raises(FleetUnavailable) as err:
            bad.ping()
        assert wrong not in str(err.value) and "password authentication failed" in str(err.value)
    finally:
        bad.close()
