"""Settlements made while the fleet's database was away, kept on local disk.

Runs already going keep going through a database outage, and when they
end their settlement (commit or rollback of the pool hold, the queue
item's end) must not be lost: it is appended here, in a small SQLite file
in the state dir (fsync'd, so it survives a crash of the host too), and
replayed in order by `flush` once the database answers again. Replays are
safe to repeat: the shared ledger settles a reservation once
(`fleet_settlements`), and a queue item's end is fenced by its attempt
number. A reserve whose answer was lost goes here as a rollback, so a
hold the host never learned of is released, not left to lapse.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factoryd.state.fleet.errors import FleetUnavailable
from factoryd.state.fleet.ledger import SharedLedger
from factoryd.state.fleet.queue import DurableQueue

KINDS = ("commit", "rollback", "finish")


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    kind: str
    key: str
    payload: dict[str, Any]


class SettlementOutbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "kind TEXT NOT NULL, key TEXT NOT NULL, payload TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    def commit(self, res_id: str, actual: dict[str, float]) -> None:
        self._add("commit", res_id, {"actual": actual})

    def rollback(self, res_id: str) -> None:
        self._add("rollback", res_id, {})

    def finish(
        self, item: int, attempt: int, *, failed: bool = False, outcome: str = "", reason: str = ""
    ) -> None:
        self._add(
            "finish",
            str(item),
            {"attempt": attempt, "failed": failed, "outcome": outcome, "reason": reason},
        )

    def _add(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO outbox (kind, key, payload) VALUES (?, ?, ?)",
                (kind, key, json.dumps(payload)),
            )

    def pending(self) -> list[Pending]:
        with self._lock:
            rows = self._db.execute("SELECT seq, kind, key, payload FROM outbox ORDER BY seq")
            return [Pending(r[0], r[1], r[2], json.loads(r[3])) for r in rows.fetchall()]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def flush(self, ledger: SharedLedger, queue: DurableQueue | None = None) -> int:
        """Replay pending settlements in order; stop at the first that cannot reach
        the database (it stays, with all after it). Returns how many were applied."""
        applied = 0
        for entry in self.pending():
            try:
                if entry.kind == "commit":
                    ledger.commit(entry.key, entry.payload["actual"])
                elif entry.kind == "rollback":
                    ledger.rollback(entry.key)
                elif entry.kind == "finish" and queue is not None:
                    p = entry.payload
                    queue.finish(
                        int(entry.key),
                        int(p["attempt"]),
                        failed=bool(p["failed"]),
                        outcome=str(p["outcome"]),
                        reason=str(p["reason"]),
                    )
                else:
                    continue
            except FleetUnavailable:
                break
            with self._lock:
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (entry.seq,))
            applied += 1
        return applied

    def close(self) -> None:
        with self._lock:
            self._db.close()
