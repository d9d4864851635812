"""One host's handle on the fleet's storage: the seam the daemon wires in.

`FleetStore.open()` connects, creates or migrates the schema and registers
the host; then the daemon uses `ledger` (reserve and settle on shared
pools, report limits), `queue` (enqueue, claim, renew, finish), `learning`
(outcomes per arm and task type), `once` (fleet-wide fires and services),
`heartbeat()` (host liveness and lease renewal in one call, every
`settings.heartbeat` seconds), `waiter()` (a LISTEN connection that wakes
an idle claimer), `outbox` (settlements made during an outage, replayed by
`flush()`) and `allowance` (what the operator lets this host spend alone
during an outage). Every call may raise
`FleetUnavailable`; none blocks longer than the connect timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from factoryd.config.fleet import FleetSettings
from factoryd.state.fleet.allowance import OutageAllowance
from factoryd.state.fleet.db import Conn, Database
from factoryd.state.fleet.dsn import resolve_dsn
from factoryd.state.fleet.hosts import HostRegistry
from factoryd.state.fleet.learning import SharedLearning
from factoryd.state.fleet.ledger import SharedLedger
from factoryd.state.fleet.once import FleetOnce
from factoryd.state.fleet.outbox import SettlementOutbox
from factoryd.state.fleet.queue import DurableQueue, QueueWaiter
from factoryd.state.fleet.schema import migrate


class FleetStore:
    def __init__(
        self,
        settings: FleetSettings,
        state_dir: Path,
        *,
        on_change: Callable[[bool, str], None] | None = None,
        quality_alpha: float = 0.3,
    ) -> None:
        self.settings = settings
        self.dsn = resolve_dsn(settings.database)
        self.db = Database(self.dsn, on_change=on_change)
        host = settings.host
        self.ledger = SharedLedger(self.db, host)
        self.queue = DurableQueue(self.db, host, settings.lease)
        self.hosts = HostRegistry(self.db, host)
        self.learning = SharedLearning(self.db, host, quality_alpha)
        self.once = FleetOnce(self.db, host, settings.lease)
        self.outbox = SettlementOutbox(state_dir / "fleet-outbox.db")
        self.allowance = OutageAllowance(settings.outage_allowance)

    def open(self, version: str = "", info: dict[str, Any] | None = None) -> None:
        """Migrate the schema and register this host (at start; retried on FleetUnavailable)."""
        migrate(self.db)
        self.hosts.register(version, info)

    def heartbeat(self, claims: Iterable[tuple[int, int]]) -> set[int]:
        """Say this host is alive and renew its claims; returns the items still ours."""
        self.hosts.heartbeat()
        return self.queue.renew(claims)

    def flush(self) -> int:
        """Replay the outbox (after an outage); returns how many settlements applied."""
        return self.outbox.flush(self.ledger, self.queue)

    def waiter(self) -> QueueWaiter:
        return QueueWaiter(self.dsn, self.db.connect_timeout, self.db.io_timeout)

    def status(self) -> dict[str, Any]:
        """Everything `factoryd fleet status` shows, as plain data."""
        view = self.ledger.view()

        def claims(conn: Conn) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT id, sub_id, label, host, attempt, lease_until - fleet_now() "
                "FROM fleet_queue WHERE state = 'claimed' ORDER BY host, id"
            ).fetchall()
            keys = ("item", "sub_id", "label", "host", "attempt", "lease_left")
            return [dict(zip(keys, r, strict=True)) for r in rows]

        queued = self.db.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM fleet_queue WHERE state = 'queued'"
            ).fetchone()
        )
        return {
            "now": view.now,
            "hosts": [_row(h) for h in self.hosts.hosts()],
            "claims": self.db.run(claims),
            "queued": int(queued[0]) if queued else 0,
            "pools": {name: _row(p) for name, p in sorted(view.pools.items())},
            "holds": self.ledger.holds(),
            "outbox": len(self.outbox),
        }

    def close(self) -> None:
        self.db.close()
        self.outbox.close()


def _row(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}
