"""The `[fleet]` table: absent means one host, exactly as without PostgreSQL.

    [fleet]
    database = "env:FACTORYD_FLEET_DB"   # or "file:/etc/factoryd/fleet.dsn", or a libpq URL
    host = "build-07"                    # default: this machine's host name
    lease = "30s"                        # a claim lapses this long after its last heartbeat
    outage_allowance = { claude-max = 2 } # per pool, what a host may spend alone during
                                          # an outage (default: nothing)

It lives in the config layer so that a bad `[fleet]` table is reported like
every other config problem (file and key, all problems at once) and so
`factoryd check` can show it; the fleet storage (state/fleet/) builds on
these settings. The connection string itself is resolved only when the
daemon connects, so a config check never reads a secret, and no message
here ever repeats the `database` value.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from factoryd.units.durations import DurationError, format_seconds, parse_duration

_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
KEYS = ("database", "host", "lease", "outage_allowance")


class FleetSettingsError(ValueError):
    """A problem with the `[fleet]` table; `key` is its full key path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class FleetSettings:
    #: As written: a libpq URL, `env:NAME` or `file:PATH`.
    database: str
    host: str
    lease: float = 30.0
    outage_allowance: dict[str, float] = field(default_factory=dict)

    @property
    def heartbeat(self) -> float:
        """How often leases are renewed: three chances before one lapses."""
        return self.lease / 3.0

    def shown_database(self) -> str:
        """The `database` setting as it may be printed: a source name, or the
        URL's user@host:port/dbname without its password."""
        if self.database.startswith(("env:", "file:")):
            return self.database
        from psycopg.conninfo import conninfo_to_dict  # only with a [fleet] table

        try:
            parts = conninfo_to_dict(self.database)
        except Exception:
            return "(a connection string that does not parse)"
        user = parts.get("user") or ""
        host = parts.get("host") or "localhost"
        port = parts.get("port") or "5432"
        db = parts.get("dbname") or user or ""
        return f"{str(user) + '@' if user else ''}{host}:{port}/{db}"

    def inline_password(self) -> bool:
        """True when a literal `database` value carries a password (worth a warning)."""
        if self.database.startswith(("env:", "file:")):
            return False
        from psycopg.conninfo import conninfo_to_dict

        try:
            return bool(conninfo_to_dict(self.database).get("password"))
        except Exception:
            return False

    def summary(self) -> str:
        spare = ", ".join(f"{k} {v:g}" for k, v in sorted(self.outage_allowance.items()))
        warning = ""
        if self.inline_password():
            warning = (
                "\n  warning: fleet.database holds a password in the config file; "
                "use 'env:NAME' or 'file:PATH'"
            )
        return (
            f"  fleet: host {self.host}, database {self.shown_database()}, lease "
            f"{format_seconds(self.lease)} (heartbeat every {format_seconds(self.heartbeat)}), "
            f"outage allowance {spare or 'none'}"
        ) + warning


def parse_fleet(table: Any, *, default_host: str | None = None) -> FleetSettings | None:
    """Settings from the `[fleet]` table, or None when there is no such table.
    Raises FleetSettingsError naming the key."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise FleetSettingsError("fleet", "expected a table")
    for key in table:
        if key not in KEYS:
            raise FleetSettingsError(f"fleet.{key}", f"unknown key (known: {', '.join(KEYS)})")
    database = table.get("database")
    if not isinstance(database, str) or not database.strip():
        raise FleetSettingsError(
            "fleet.database", "required: a libpq URL, 'env:NAME' or 'file:PATH'"
        )
    host = table.get("host", default_host or socket.gethostname().split(".")[0])
    if not isinstance(host, str) or not _HOST.match(host):
        raise FleetSettingsError(
            "fleet.host",
            "1-63 letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    try:
        lease = parse_duration(table.get("lease", 30.0))
    except DurationError as exc:
        raise FleetSettingsError("fleet.lease", str(exc)) from None
    if not 3.0 <= lease <= 3600.0:
        raise FleetSettingsError("fleet.lease", "must be between 3s and 1h")
    allowance = table.get("outage_allowance", {})
    if not isinstance(allowance, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
        for v in allowance.values()
    ):
        raise FleetSettingsError(
            "fleet.outage_allowance",
            "expected a table of pool = amount (>= 0, in the pool's unit)",
        )
    return FleetSettings(
        database=database.strip(),
        host=host,
        lease=lease,
        outage_allowance={str(k): float(v) for k, v in allowance.items()},
    )
