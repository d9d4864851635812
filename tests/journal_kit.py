"""Reading a journal back in tests: questions only a test asks.

The daemon reads its journal for start-up alone (journal.Journal); what a
test wants to check afterwards (how many runs, which outcomes) is asked
here, on a separate read-only connection to the same file, so the daemon
carries no readers that only tests call.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any


def _query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql, params).fetchall()


def schema_version(path: Path) -> int:
    return int(_query(path, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0])


def count_runs(path: Path, task: str | None = None) -> int:
    if task is None:
        return int(_query(path, "SELECT count(*) FROM runs")[0][0])
    return int(_query(path, "SELECT count(*) FROM runs WHERE task = ?", (task,))[0][0])


def run_outcomes(path: Path) -> list[tuple[str, str, str | None]]:
    """(run id, task, outcome) for every run, oldest first."""
    return [
        (r[0], r[1], r[2])
        for r in _query(path, "SELECT id, task, outcome FROM runs ORDER BY started_at")
    ]


def submission_state(path: Path, sub_id: str) -> str | None:
    rows = _query(path, "SELECT state FROM submissions WHERE id = ?", (sub_id,))
    return rows[0][0] if rows else None


def count_submissions(path: Path) -> int:
    return int(_query(path, "SELECT count(*) FROM submissions")[0][0])
