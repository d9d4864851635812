"""The journal: one SQLite file (WAL) that survives crashes and reboots.

It is the single durable record of submissions, runs (arm, pid, process
start time, reservation, usage, outcome), task progress (restarts, cron
fires), pool usage, windows and limits, and the soft routing state
(telemetry and quality). Rules:

* Writes are batched: the reconciler hands over the operations of one pass
  and they are committed in one transaction (group commit), off the event
  loop, in a worker thread. A run's record is committed *before* its
  process is spawned, and a submission before it is acknowledged.
* `synchronous=NORMAL` in WAL mode: every commit survives a crash of the
  daemon; submissions are committed with `synchronous=FULL` (an fsync)
  because they are acknowledged to a client and must survive power loss.
* The schema is versioned; `MIGRATIONS[n]` takes version n to n+1, and an
  unknown newer version is refused rather than guessed at.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from factoryd.proc import proctime

Op = Callable[[sqlite3.Connection], None]

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, list[str]] = {
    0: [
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
        """CREATE TABLE submissions (
            id TEXT PRIMARY KEY,
            idem_key TEXT UNIQUE,
            label TEXT NOT NULL,
            request TEXT NOT NULL,
            source TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE INDEX submissions_state ON submissions (state)""",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            task TEXT NOT NULL,
            arm TEXT NOT NULL,
            state TEXT NOT NULL,
            pid INTEGER,
            create_time REAL,
            started_at REAL NOT NULL,
            ended_at REAL,
            outcome TEXT,
            reason TEXT,
            reservation TEXT,
            usage TEXT,
            log_path TEXT,
            pipe_fds TEXT
        )""",
        """CREATE INDEX runs_state ON runs (state)""",
        """CREATE INDEX runs_ended ON runs (ended_at)""",
        """CREATE TABLE task_state (
            name TEXT PRIMARY KEY,
            phase TEXT NOT NULL,
            reason TEXT NOT NULL,
            runs INTEGER NOT NULL,
            restarts INTEGER NOT NULL,
            last_fire REAL,
            pending_fires INTEGER NOT NULL,
            spec_digest TEXT NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            used REAL NOT NULL,
            window_start REAL,
            limited_until REAL,
            limited_reason TEXT NOT NULL,
            strikes INTEGER NOT NULL
        )""",
        """CREATE TABLE routing_soft (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            snapshot TEXT NOT NULL,
            updated_at REAL NOT NULL
        )""",
    ],
}


class JournalError(Exception):
    """The journal cannot be opened or used; the message says what to do."""


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
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"journal {path}: {exc} (move the file aside to start afresh; "
                "it is the only record of queued work)"
            ) from None
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    def _migrate(self) -> None:
        db = self._db
        has_meta = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        version = 0
        if has_meta:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {version}, newer than this factoryd "
                f"understands ({SCHEMA_VERSION}); upgrade factoryd"
            )
        while version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                version += 1
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(version),),
                )
                db.execute("COMMIT")
            except Exception:
                db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

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
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for op in ops:
                        op(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    async def apply(self, ops: list[Op], *, durable: bool = False) -> None:
        """Commit `ops` in one transaction, off the event loop."""
        if ops:
            await anyio.to_thread.run_sync(
                functools.partial(self.apply_sync, ops, durable=durable), limiter=self._limiter
            )

    def close(self) -> None:
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

    def submission(self, sub_id: str) -> SubmissionRow | None:
        return next(iter(self._submissions("id = ?", (sub_id,))), None)

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

    def count_runs(self, task: str | None = None) -> int:
        if task is None:
            return int(self._db.execute("SELECT count(*) FROM runs").fetchone()[0])
        return int(
            self._db.execute("SELECT count(*) FROM runs WHERE task = ?", (task,)).fetchone()[0]
        )

    def run_outcomes(self) -> list[tuple[str, str, str | None]]:
        return [
            tuple(r)
            for r in self._db.execute(
                "SELECT id, task, outcome FROM runs ORDER BY started_at"
            ).fetchall()
        ]


def _fds(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    out, err = text.split(",")
    return int(out), int(err)


# -- operations (built by the reconciler, applied in batches) ------------------


def op_meta(key: str, value: str) -> Op:
    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    return op


def op_run_intent(
    run_id: str,
    task: str,
    arm: str,
    started_at: float,
    reservation: dict[str, Any] | None,
    log_path: str,
) -> Op:
    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO runs (id, task, arm, state, started_at, reservation, log_path) "
            "VALUES (?, ?, ?, 'starting', ?, ?, ?)",
            (
                run_id,
                task,
                arm,
                started_at,
                json.dumps(reservation) if reservation else None,
                log_path,
            ),
        )

    return op


def op_run_started(
    run_id: str,
    pid: int,
    create_time: float | None,
    leader_fds: tuple[int, int] | None = None,
    still_ours: Callable[[int], bool] = lambda pid: False,
) -> Op:
    """`create_time` None: read it when the op runs (on the journal's thread,
    off the loop), if `still_ours(pid)` says the process is not yet reaped
    (so its pid cannot have been reused); else it stays unknown."""
    fds = None if leader_fds is None else f"{leader_fds[0]},{leader_fds[1]}"

    def op(db: sqlite3.Connection) -> None:
        started = create_time
        if started is None and still_ours(pid):
            started = proctime.start_time(pid)
        db.execute(
            "UPDATE runs SET state = 'running', pid = ?, create_time = ?, pipe_fds = ? "
            "WHERE id = ?",
            (pid, started, fds, run_id),
        )

    return op


def op_run_ended(
    run_id: str, ended_at: float, outcome: str, reason: str, usage: dict[str, Any] | None
) -> Op:
    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE runs SET state = 'ended', ended_at = ?, outcome = ?, reason = ?, usage = ? "
            "WHERE id = ?",
            (ended_at, outcome, reason, json.dumps(usage) if usage else None, run_id),
        )

    return op


def op_task_state(
    name: str,
    phase: str,
    reason: str,
    runs: int,
    restarts: int,
    last_fire: float | None,
    pending_fires: int,
    now: float,
    spec_digest: str,
) -> Op:
    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO task_state (name, phase, reason, runs, restarts, last_fire, "
            "pending_fires, spec_digest, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET phase = excluded.phase, reason = excluded.reason, "
            "runs = excluded.runs, restarts = excluded.restarts, last_fire = excluded.last_fire, "
            "pending_fires = excluded.pending_fires, spec_digest = excluded.spec_digest, "
            "updated_at = excluded.updated_at",
            (name, phase, reason, runs, restarts, last_fire, pending_fires, spec_digest, now),
        )

    return op


def op_pool(
    name: str,
    used: float,
    window_start: float | None,
    limited_until: float | None,
    limited_reason: str,
    strikes: int,
) -> Op:
    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO pools (name, used, window_start, limited_until, limited_reason, strikes) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET used = excluded.used, "
            "window_start = excluded.window_start, limited_until = excluded.limited_until, "
            "limited_reason = excluded.limited_reason, strikes = excluded.strikes",
            (name, used, window_start, limited_until, limited_reason, strikes),
        )

    return op


def op_routing_soft(snapshot: dict[str, Any], now: float) -> Op:
    text = json.dumps(snapshot)

    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO routing_soft (id, snapshot, updated_at) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot, "
            "updated_at = excluded.updated_at",
            (text, now),
        )

    return op


def op_submission(
    sub_id: str, idem_key: str | None, label: str, request: dict[str, Any], source: str, now: float
) -> Op:
    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO submissions (id, idem_key, label, request, source, state, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, 'accepted', ?, ?)",
            (sub_id, idem_key, label, json.dumps(request), source, now, now),
        )

    return op


def op_submission_state(sub_id: str, state: str, reason: str, now: float) -> Op:
    def op(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE submissions SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
            (state, reason, now, sub_id),
        )

    return op


def op_prune(before: float) -> Op:
    def op(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM runs WHERE state = 'ended' AND ended_at < ?", (before,))
        db.execute(
            "DELETE FROM submissions WHERE state != 'accepted' AND updated_at < ?", (before,)
        )

    return op
