"""Where the fleet's database is: a libpq URL, or `env:NAME` / `file:PATH`.

A password must not sit in a config file that is world-readable, checked
in, or printed by `factoryd config`: the `database` key may instead name an
environment variable (systemd's EnvironmentFile=) or a file (a secret
mounted by the orchestrator) that holds the connection string. Whatever
the source, only `describe()`'s password-free summary ever reaches a log
or an error message.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from factoryd.state.fleet.errors import FleetConfigError

_MAX_FILE = 64 * 1024


def resolve_dsn(spec: str, *, key: str = "fleet.database") -> str:
    """The connection string `spec` stands for, checked to parse as libpq conninfo."""
    if not isinstance(spec, str) or not spec.strip():
        raise FleetConfigError(f"{key}: expected a libpq URL, 'env:NAME' or 'file:PATH'")
    spec = spec.strip()
    if spec.startswith("env:"):
        name = spec[4:]
        if not name:
            raise FleetConfigError(f"{key}: 'env:' needs a variable name")
        value = os.environ.get(name)
        if not value or not value.strip():
            raise FleetConfigError(f"{key}: environment variable {name} is not set or empty")
        dsn, source = value.strip(), f"environment variable {name}"
    elif spec.startswith("file:"):
        path = Path(spec[5:])
        try:
            with path.open("rb") as fh:
                raw = fh.read(_MAX_FILE + 1)
        except OSError as exc:
            raise FleetConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
        if len(raw) > _MAX_FILE:
            raise FleetConfigError(f"{key}: {path} is larger than 64 KiB")
        try:
            dsn = raw.decode().strip()
        except UnicodeDecodeError:
            raise FleetConfigError(f"{key}: {path} is not UTF-8 text") from None
        if not dsn:
            raise FleetConfigError(f"{key}: {path} is empty")
        source = str(path)
    else:
        dsn, source = spec, "the config"
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # The parser's message may quote the string, password included.
        raise FleetConfigError(
            f"{key}: the connection string from {source} is not a libpq URL or conninfo"
        ) from None
    return dsn


def inline_password(spec: str) -> bool:
    """True when a literal `database` value carries a password (worth a warning)."""
    if spec.startswith(("env:", "file:")):
        return False
    try:
        return bool(conninfo_to_dict(spec).get("password"))
    except psycopg.ProgrammingError:
        return False


def describe(dsn: str) -> str:
    """user@host:port/dbname, for logs; never the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable connection string)"
    user = parts.get("user") or ""
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    db = parts.get("dbname") or user or ""
    return f"{str(user) + '@' if user else ''}{host}:{port}/{db}"


def secret_of(dsn: str) -> str | None:
    """The password in `dsn`, so error text can be scrubbed of it."""
    try:
        value = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(value) if value else None
