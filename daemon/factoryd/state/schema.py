"""The journal's tables and the migrations that build them, one version at a time.

Kept apart from the journal's reading and writing so that a schema change is
one reviewable diff: `MIGRATIONS[n]` takes version n to n+1, and a journal
from a newer factoryd is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

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


def schema_version(db: sqlite3.Connection) -> int:
    """The version a journal is at (0: nothing created yet)."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def known_version(db: sqlite3.Connection, path: Path) -> int:
    """The journal's version, refusing one from a newer factoryd (changing nothing)."""
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}, newer than this factoryd "
            f"understands ({SCHEMA_VERSION}); upgrade factoryd"
        )
    return version


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the journal at `path` to `SCHEMA_VERSION`, each step in its own transaction."""
    version = known_version(db, path)
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
