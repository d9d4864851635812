"""The journal: one SQLite file (WAL) that survives crashes and reboots.

It is the single durable record of submissions, runs (arm, pid, process
start time, reservation, usage, outcome), task progress (restarts, cron
fires), pool usage, windows and limits, and the soft routing state
(telemetry and quality). Rules:

* Writes are batched: the reconciler hands over the operations of one pass
  and they are committed in one transaction (group commit), off the event
  loop, on the journal's own thread (committer.py). A run's record is
  committed *before* its process is spawned, and a submission before it is
  acknowledged.
* `synchronous=NORMAL` in WAL mode: every commit survives a crash of the
  daemon; submissions are committed with `synchronous=FULL` (an fsync)
  because they are acknowledged to a client and must survive power loss.
* A damaged journal, or one missing where the state dir shows earlier
  use, is refused on open (integrity.py), never silently replaced.
* The schema is versioned (schema.py); the operations a pass hands over are
  built in ops.py. This module opens the file, applies batches and reads
  back what start-up needs; the names of both are re-exported here, so a
  caller imports the journal and nothing else.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factoryd.state import integrity
from factoryd.state.committer import Committer
from factoryd.state.ops import (
    Op,
    RunEnded,
    RunStarted,
    RunStartedAndEnded,
    Stmt,
    op_meta,
    op_pool,
    op_prune,
    op_routing_soft,
    op_run_ended,
    op_run_intent,
    op_run_started,
    op_submission,
    op_submission_state,
    op_task_state,
)
from factoryd.state.schema import SCHEMA_VERSION, JournalError, migrate


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    task: str
    arm: str
    state: str
    pid: int | None
    create_time: float | None
    started_at: float
    reservation: dict[str, Any] | None
    log_path: str | None
    pipe_fds: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class SubmissionRow:
    id: str
    idem_key: str | None
    label: str
    request: dict[str, Any]
    source: str
    state: str
    reason: str


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        integrity.check_present(path)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise integrity.damaged(path, exc) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            integrity.check_integrity(self._db, path)
            migrate(self._db, path)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise integrity.damaged(path, exc) from None
        except JournalError:
            self._db.close()
            raise
        integrity.write_marker(path)
        self._lock = threading.Lock()
        self._committer = Committer()

    # -- writing ----------------------------------------------------------------

    def apply_sync(self, ops: Iterable[Op], *, durable: bool = False) -> None:
        """Run `ops` in one transaction (blocking; for start-up and tests).

        `durable`: fsync before returning (synchronous=FULL) so that the commit
        survives power loss, for what is acknowledged to a client. Otherwise
        (synchronous=NORMAL in WAL mode) a commit survives any crash of the
        daemon, and only the last ones can be lost with the machine's power.
        """
        ops = list(ops)
        if not ops:
            return
        with self._lock:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                cursor = self._db.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    _run_ops(self._db, cursor, ops)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    async def apply(self, ops: list[Op], *, durable: bool = False) -> None:
        """Commit `ops` in one transaction, off the event loop."""
        if ops:
            await self._committer.run(functools.partial(self.apply_sync, ops, durable=durable))

    def close(self) -> None:
        self._committer.close()  # what was handed over is committed first
        with self._lock:
            self._db.close()

    # -- reading (start-up) -------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def live_runs(self) -> list[RunRow]:
        rows = self._db.execute(
            "SELECT id, task, arm, state, pid, create_time, started_at, reservation, log_path, "
            "pipe_fds FROM runs WHERE state IN ('starting', 'running') ORDER BY started_at"
        ).fetchall()
        return [
            RunRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                json.loads(r[7]) if r[7] else None,
                r[8],
                _fds(r[9]),
            )
            for r in rows
        ]

    def _submissions(self, where: str, params: tuple[Any, ...] = ()) -> list[SubmissionRow]:
        """`where` is one of this class's literal conditions; values go in `params`."""
        rows = self._db.execute(
            "SELECT id, idem_key, label, request, source, state, reason FROM submissions "  # noqa: S608
            f"WHERE {where} ORDER BY created_at",
            params,
        ).fetchall()
        return [SubmissionRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6]) for r in rows]

    def open_submissions(self) -> list[SubmissionRow]:
        return self._submissions("state = 'accepted'")

    def submission_by_key(self, idem_key: str) -> SubmissionRow | None:
        return next(iter(self._submissions("idem_key = ?", (idem_key,))), None)

    def task_states(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute(
            "SELECT name, phase, reason, runs, restarts, last_fire, pending_fires, spec_digest "
            "FROM task_state"
        ).fetchall()
        return {
            r[0]: {
                "phase": r[1],
                "reason": r[2],
                "runs": r[3],
                "restarts": r[4],
                "last_fire": r[5],
                "pending_fires": r[6],
                "spec_digest": r[7],
            }
            for r in rows
        }

    def pools(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute(
            "SELECT name, used, window_start, limited_until, limited_reason, strikes FROM pools"
        ).fetchall()
        return {
            r[0]: {
                "used": r[1],
                "window_start": r[2],
                "limited_until": r[3],
                "limited_reason": r[4],
                "strikes": r[5],
            }
            for r in rows
        }

    def routing_soft(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT snapshot FROM routing_soft WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None


def _run_ops(db: sqlite3.Connection, cursor: sqlite3.Cursor, ops: list[Op]) -> None:
    """`ops` in order, on one cursor; neighbours that are the same SQL statement
    (a pass's run intents, its task records) in one `executemany`."""
    i, n = 0, len(ops)
    while i < n:
        op = ops[i]
        if not isinstance(op, Stmt):
            op(db)
            i += 1
            continue
        sql = op.sql
        k = i + 1
        while k < n and isinstance(nxt := ops[k], Stmt) and nxt.sql == sql:
            k += 1
        if k == i + 1:
            cursor.execute(sql, op.values())
        else:
            cursor.executemany(sql, [s.values() for s in ops[i:k] if isinstance(s, Stmt)])
        i = k


def _fds(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    out, err = text.split(",")
    return int(out), int(err)


__all__ = [
    "SCHEMA_VERSION",
    "Journal",
    "JournalError",
    "Op",
    "RunEnded",
    "RunRow",
    "RunStarted",
    "RunStartedAndEnded",
    "Stmt",
    "SubmissionRow",
    "op_meta",
    "op_pool",
    "op_prune",
    "op_routing_soft",
    "op_run_ended",
    "op_run_intent",
    "op_run_started",
    "op_submission",
    "op_submission_state",
    "op_task_state",
]
