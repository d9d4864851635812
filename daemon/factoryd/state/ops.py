"""Journal operations: each a small closure over one SQL statement and its values.

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

Op = Callable[[sqlite3.Connection], None]


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
    still_ours: Callable[[int], bool] = unreaped_child,
) -> Op:
    """`create_time` None: read it when the op runs (on the journal's thread,
    off the loop), if `still_ours(pid)` says the process is not yet reaped
    (so its pid cannot have been reused) both before and after the read;
    else it stays unknown. The default asks the kernel, so no state of the
    loop's is read from the journal's thread."""
    fds = None if leader_fds is None else f"{leader_fds[0]},{leader_fds[1]}"

    def op(db: sqlite3.Connection) -> None:
        started = create_time
        if started is None and still_ours(pid):
            started = proctime.start_time(pid)
            if started is not None and not still_ours(pid):
                started = None  # reaped meanwhile: the read may be of a reused pid
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
