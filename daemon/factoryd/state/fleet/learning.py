"""What the fleet has learned about each arm, per task type, from every host's runs.

A bad arm found by one host must be avoided by all, so run outcomes are
added into one row per (arm, task type): success and failure counts,
seconds of successful runs, tokens, and a success average updated in
arrival order (the same exponential average the in-memory quality tracker
keeps, with the same `alpha`). A host sends a pass's outcomes as one
batch, in key order, so two hosts' batches never deadlock, and reads the
whole table back to seed its router's quality (`as_quality`).
Operator actions, shutdowns, limits and lost runs are not outcomes: the
caller sends only what the arm did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from factoryd.state.fleet.db import Conn, Database


@dataclass(frozen=True, slots=True)
class ArmOutcome:
    arm: str
    task_type: str
    ok: bool
    duration: float
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Learned:
    ok: int
    failed: int
    ok_seconds: float
    tokens: int
    ema: float
    last_at: float
    last_host: str

    @property
    def runs(self) -> int:
        return self.ok + self.failed


class SharedLearning:
    def __init__(self, db: Database, host: str, alpha: float = 0.3) -> None:
        self.db = db
        self.host = host
        self.alpha = alpha

    def record(self, outcomes: Iterable[ArmOutcome]) -> None:
        """Add a batch of outcomes in one transaction."""
        batch = sorted(outcomes, key=lambda o: (o.arm, o.task_type))
        if not batch:
            return
        a = self.alpha

        def op(conn: Conn) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO fleet_learning AS l (arm, task_type, ok, failed, ok_seconds, "
                    "tokens, ema, last_at, last_host) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, fleet_now(), %s) "
                    "ON CONFLICT (arm, task_type) DO UPDATE SET ok = l.ok + excluded.ok, "
                    "failed = l.failed + excluded.failed, "
                    "ok_seconds = l.ok_seconds + excluded.ok_seconds, "
                    "tokens = l.tokens + excluded.tokens, "
                    "ema = %s * excluded.ema + (1 - %s) * l.ema, "
                    "last_at = excluded.last_at, last_host = excluded.last_host",
                    [
                        (o.arm, o.task_type, int(o.ok), int(not o.ok),
                         o.duration if o.ok else 0.0, o.tokens, float(o.ok), self.host, a, a)
                        for o in batch
                    ],
                )  # fmt: skip

        self.db.run(op)

    def view(self) -> dict[tuple[str, str], Learned]:
        """Everything the fleet learned, keyed by (arm, task type)."""

        def op(conn: Conn) -> dict[tuple[str, str], Learned]:
            rows = conn.execute(
                "SELECT arm, task_type, ok, failed, ok_seconds, tokens, ema, last_at, last_host "
                "FROM fleet_learning"
            ).fetchall()
            return {
                (str(r[0]), str(r[1])): Learned(int(r[2]), int(r[3]), float(r[4]), int(r[5]),
                                                float(r[6]), float(r[7]), str(r[8]))
                for r in rows
            }  # fmt: skip

        return self.db.run(op)


def as_quality(view: dict[tuple[str, str], Learned]) -> list[tuple[str, str, float, int]]:
    """(arm, task type, ema, n) rows for `QualityTracker.restore`."""
    return [(arm, kind, row.ema, row.runs) for (arm, kind), row in sorted(view.items())]
