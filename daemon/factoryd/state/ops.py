"""Journal operations: each one SQL statement and its values (a `Stmt`, or a closure).

The reconciler builds them during a pass, without touching SQLite, and the
journal applies a pass's worth in one transaction off the loop. Keeping them
as values (not methods on the journal) is what makes group commit possible:
a batch can be built, inspected in tests, and committed whole or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from factoryd.proc import proctime
from factoryd.proc.tree import unreaped_child
from factoryd.units.jsontext import dumps

Op = Callable[[sqlite3.Connection], None]


class Stmt:
    """One SQL statement and its values: an `Op` like any other, which the journal
    also sees through, so that a run of neighbours with the same SQL (a pass's
    run intents, its task records) goes to SQLite as one `executemany` on one
    cursor instead of a cursor and a call each."""

    __slots__ = ("params", "sql")

    def __init__(self, sql: str, params: tuple[Any, ...]) -> None:
        self.sql = sql
        self.params = params

    def values(self) -> tuple[Any, ...]:
        return self.params

    def __call__(self, db: sqlite3.Connection) -> None:
        db.execute(self.sql, self.values())


_RUN_INTENT = (
    "INSERT INTO runs (id, task, arm, state, started_at, reservation, log_path) "
    "VALUES (?, ?, ?, 'starting', ?, ?, ?)"
)
_RUN_STARTED = (
    "UPDATE runs SET state = 'running', pid = ?, create_time = ?, pipe_fds = ? WHERE id = ?"
)
_RUN_ENDED = (
    "UPDATE runs SET state = 'ended', ended_at = ?, outcome = ?, reason = ?, usage = ? WHERE id = ?"
)
_RUN_STARTED_AND_ENDED = (
    "UPDATE runs SET state = 'ended', pid = ?, create_time = ?, pipe_fds = ?, "
    "ended_at = ?, outcome = ?, reason = ?, usage = ? WHERE id = ?"
)


class RunStarted(Stmt):
    """A run's pid (`op_run_started`): its process start time, if unknown, is
    read when the statement's values are taken, on the journal's thread."""

    __slots__ = ("create_time", "pid", "run_id", "still_ours")

    def __init__(
        self,
        run_id: str,
        pid: int,
        create_time: float | None,
        fds: str | None,
        still_ours: Callable[[int], bool],
    ) -> None:
        self.sql, self.params = _RUN_STARTED, (fds,)
        self.run_id = run_id
        self.pid = pid
        self.create_time = create_time
        self.still_ours = still_ours

    def started(self) -> tuple[Any, ...]:
        """(pid, create_time, pipe_fds), the start time read now if unknown."""
        started = self.create_time
        pid = self.pid
        if started is None and self.still_ours(pid):
            started = proctime.start_time(pid)
            if started is not None and not self.still_ours(pid):
                started = None  # reaped meanwhile: the read may be of a reused pid
        return (pid, started, self.params[0])

    def values(self) -> tuple[Any, ...]:
        return (*self.started(), self.run_id)


class RunEnded(Stmt):
    """A run's end (`op_run_ended`): values (ended_at, outcome, reason, usage, id)."""

    __slots__ = ("run_id",)

    def __init__(self, run_id: str, params: tuple[Any, ...]) -> None:
        self.sql, self.params = _RUN_ENDED, params
        self.run_id = run_id


class RunStartedAndEnded(Stmt):
    """A run whose pid and end are in the same batch: one UPDATE instead of two
    (the row ends as the two would leave it, in the same transaction)."""

    __slots__ = ("ended", "start")

    def __init__(self, start: RunStarted, ended: RunEnded) -> None:
        self.sql, self.params = _RUN_STARTED_AND_ENDED, ()
        self.start = start
        self.ended = ended

    def values(self) -> tuple[Any, ...]:
        return (*self.start.started(), *self.ended.params)


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
    return Stmt(
        _RUN_INTENT,
        (
            run_id,
            task,
            arm,
            started_at,
            dumps(reservation) if reservation else None,
            log_path,
        ),
    )


def op_run_started(
    run_id: str,
    pid: int,
    create_time: float | None,
    leader_fds: tuple[int, int] | None = None,
    still_ours: Callable[[int], bool] = unreaped_child,
) -> RunStarted:
    """`create_time` None: read it when the op runs (on the journal's thread,
    off the loop), if `still_ours(pid)` says the process is not yet reaped
    (so its pid cannot have been reused) both before and after the read;
    else it stays unknown. The default asks the kernel, so no state of the
    loop's is read from the journal's thread."""
    fds = None if leader_fds is None else f"{leader_fds[0]},{leader_fds[1]}"
    return RunStarted(run_id, pid, create_time, fds, still_ours)


def op_run_ended(
    run_id: str, ended_at: float, outcome: str, reason: str, usage: dict[str, Any] | None
) -> RunEnded:
    return RunEnded(run_id, (ended_at, outcome, reason, dumps(usage) if usage else None, run_id))


_TASK_STATE = (
    "INSERT INTO task_state (name, phase, reason, runs, restarts, last_fire, "
    "pending_fires, spec_digest, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET phase = excluded.phase, reason = excluded.reason, "
    "runs = excluded.runs, restarts = excluded.restarts, last_fire = excluded.last_fire, "
    "pending_fires = excluded.pending_fires, spec_digest = excluded.spec_digest, "
    "updated_at = excluded.updated_at"
)


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
    return Stmt(
        _TASK_STATE,
        (name, phase, reason, runs, restarts, last_fire, pending_fires, spec_digest, now),
    )


_POOL = (
    "INSERT INTO pools (name, used, window_start, limited_until, limited_reason, strikes) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET used = excluded.used, "
    "window_start = excluded.window_start, limited_until = excluded.limited_until, "
    "limited_reason = excluded.limited_reason, strikes = excluded.strikes"
)


def op_pool(
    name: str,
    used: float,
    window_start: float | None,
    limited_until: float | None,
    limited_reason: str,
    strikes: int,
) -> Op:
    return Stmt(_POOL, (name, used, window_start, limited_until, limited_reason, strikes))


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
