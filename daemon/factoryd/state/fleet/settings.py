"""The `[fleet]` table: absent means one host, exactly as without PostgreSQL.

    [fleet]
    database = "env:FACTORYD_FLEET_DB"   # or "file:/etc/factoryd/fleet.dsn", or a libpq URL
    host = "build-07"                    # default: this machine's host name
    lease = "30s"                        # a claim lapses this long after its last heartbeat
    outage_allowance = { claude-max = 2 } # per pool, what a host may spend alone during
                                          # an outage (default: nothing)

The config loader hands the table to `parse_fleet`; errors name the key.
The connection string itself is resolved only when the daemon connects
(`dsn.resolve_dsn`), so a config check never reads a secret.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from factoryd.state.fleet.errors import FleetConfigError
from factoryd.units.durations import DurationError, parse_duration

_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
KEYS = ("database", "host", "lease", "outage_allowance")


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


def parse_fleet(table: Mapping[str, Any] | None, *, default_host: str | None = None) -> (
    FleetSettings | None
):  # fmt: skip
    """Settings from the `[fleet]` table, or None when there is no such table."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise FleetConfigError("fleet: expected a table")
    for key in table:
        if key not in KEYS:
            raise FleetConfigError(f"fleet.{key}: unknown key (known: {', '.join(KEYS)})")
    database = table.get("database")
    if not isinstance(database, str) or not database.strip():
        raise FleetConfigError("fleet.database: required: a libpq URL, 'env:NAME' or 'file:PATH'")
    host = table.get("host", default_host or socket.gethostname().split(".")[0])
    if not isinstance(host, str) or not _HOST.match(host):
        raise FleetConfigError(
            "fleet.host: 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )
    try:
        lease = parse_duration(table.get("lease", 30.0))
    except DurationError as exc:
        raise FleetConfigError(f"fleet.lease: {exc}") from None
    if not 3.0 <= lease <= 3600.0:
        raise FleetConfigError("fleet.lease: must be between 3s and 1h")
    allowance = table.get("outage_allowance", {})
    if not isinstance(allowance, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
        for v in allowance.values()
    ):
        raise FleetConfigError(
            "fleet.outage_allowance: expected a table of pool = amount (>= 0, in the pool's unit)"
        )
    return FleetSettings(
        database=database.strip(),
        host=host,
        lease=lease,
        outage_allowance={str(k): float(v) for k, v in allowance.items()},
    )
