"""What the journal remembers, read for the operator: runs, submissions, task progress.

`factoryd show`, `logs`, `wait` and `status` read the journal's history
from here, through a read-only connection of their own (the WAL lets it
read while the daemon writes), off the event loop; nothing here writes.
Rows come back as plain dicts, ready for JSON.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

_RUN_COLUMNS = "id, task, arm, state, started_at, ended_at, outcome, reason, usage, log_path"


@contextmanager
def _reader(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)) as db:
        yield db


def _run(row: tuple[Any, ...]) -> dict[str, Any]:
    usage = json.loads(row[8]) if row[8] else None
    tokens = None
    cost = None
    if isinstance(usage, dict):
        tokens = sum(
            int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens", "reasoning_tokens")
        )
        cost = usage.get("cost", usage.get("cost_usd"))
    ended = row[5]
    return {
        "run_id": row[0],
        "task": row[1],
        "arm": row[2],
        "state": row[3],
        "started_at": row[4],
        "ended_at": ended,
        "duration": None if ended is None else round(ended - row[4], 3),
        "outcome": row[6],
        "reason": row[7],
        "tokens": tokens,
        "cost": cost,
        "usage": usage,
        "log_path": row[9],
    }


def runs_of(path: Path, task: str, limit: int = 20) -> list[dict[str, Any]]:
    """A task's runs, newest first."""
    with _reader(path) as db:
        rows = db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE task = ? "  # noqa: S608
            "ORDER BY started_at DESC LIMIT ?",
            (task, limit),
        ).fetchall()
    return [_run(r) for r in rows]


def run(path: Path, run_id: str) -> dict[str, Any] | None:
    with _reader(path) as db:
        row = db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?",  # noqa: S608
            (run_id,),
        ).fetchone()
    return None if row is None else _run(row)


def _submission(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "request": json.loads(row[8]),
        "id": row[0],
        "idempotency_key": row[1],
        "template": row[2],
        "source": row[3],
        "state": row[4],
        "reason": row[5],
        "created_at": row[6],
        "updated_at": row[7],
    }


_SUB_COLUMNS = "id, idem_key, label, source, state, reason, created_at, updated_at, request"


def submission(path: Path, sub_id: str) -> dict[str, Any] | None:
    with _reader(path) as db:
        row = db.execute(
            f"SELECT {_SUB_COLUMNS} FROM submissions WHERE id = ?",  # noqa: S608
            (sub_id,),
        ).fetchone()
    return None if row is None else _submission(row)


def finished_submissions(path: Path, limit: int = 10) -> list[dict[str, Any]]:
    """The last submissions that ended, newest first, each with its last run's arm,
    outcome and cost."""
    with _reader(path) as db:
        rows = db.execute(
            f"SELECT {_SUB_COLUMNS} FROM submissions WHERE state != 'accepted' "  # noqa: S608
            "ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        out = []
        for row in rows:
            sub = _submission(row)
            del sub["request"]
            last = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE task = ? "  # noqa: S608
                "ORDER BY started_at DESC LIMIT 1",
                (sub["id"],),
            ).fetchone()
            run_ = None if last is None else _run(last)
            sub["arm"] = run_["arm"] if run_ else None
            sub["outcome"] = run_["outcome"] if run_ else None
            sub["cost"] = run_["cost"] if run_ else None
            out.append(sub)
    return out


def task_state(path: Path, name: str) -> dict[str, Any] | None:
    with _reader(path) as db:
        row = db.execute(
            "SELECT phase, reason, runs, restarts, updated_at FROM task_state WHERE name = ?",
            (name,),
        ).fetchone()
    if row is None:
        return None
    return {
        "phase": row[0],
        "reason": row[1],
        "runs": row[2],
        "restarts": row[3],
        "updated_at": row[4],
    }
