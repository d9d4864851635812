"""Checking a journal by hand, and salvaging what is readable from a damaged one.

`factoryd journal check` reads the journal in place, read-only (a running
daemon does not mind). `factoryd journal recover` runs only while no daemon
holds the state dir, and never writes to the damaged file: it reads a
copy (SQLite may write to a database it opens, to replay its WAL), copies
every row it can read, table by table, into a new journal with the current
schema, then moves the damaged file aside under a dated name and puts the
new one in its place. Rows on unreadable pages are skipped and counted;
the operator decides, with the kept file, whether anything more is worth
digging for.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factoryd.state import integrity
from factoryd.state.schema import JournalError, known_version, migrate

#: The lock file a running daemon holds for its life (service/lock.py).
DAEMON_LOCK = "daemon.lock"
#: Consecutive unreadable rows after which a table is given up.
MAX_SKIPS = 1000
_SIDE_FILES = ("-wal", "-shm")


@dataclass
class Report:
    """What `check` found or `recover` did, per table."""

    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, int] = field(default_factory=dict)
    kept_as: Path | None = None
    #: No journal and no sign of one: a state dir the daemon has not used yet.
    absent: bool = False

    def summary(self) -> str:
        if self.absent:
            return f"journal {self.path}: none yet (the daemon makes one when it starts)"
        counts = ", ".join(f"{table} {n}" for table, n in self.rows.items())
        lost = sum(self.unreadable.values())
        text = f"journal {self.path}: {sum(self.rows.values())} row(s) ({counts})"
        if lost:
            text += f"; {lost} unreadable spot(s) skipped"
        if self.kept_as is not None:
            text += f"; the damaged file is kept as {self.kept_as}"
        return text


def check(path: Path) -> Report:
    """Open the journal as the daemon would (presence, integrity, schema) and
    count its rows; JournalError in one line if the daemon would refuse it."""
    integrity.check_present(path)
    report = Report(path)
    if not path.exists():  # and no marker: a state dir never used
        report.absent = True
        return report
    # Read-only on the file itself (not a copy): safe beside a running daemon,
    # whose writes SQLite's own locking keeps consistent for this reader.
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        try:
            integrity.check_integrity(db, path)
            known_version(db, path)
            for table in _schema_tables():
                count = f'SELECT count(*) FROM "{table}"'  # noqa: S608 - our own table names
                report.rows[table] = int(db.execute(count).fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise integrity.damaged(path, exc) from None
    return report


def recover(path: Path, now: float | None = None) -> Report:
    """Salvage every readable row of `path` into a new journal that takes its
    place, holding the state dir's daemon lock so no daemon runs meanwhile."""
    try:
        fd = os.open(path.parent / DAEMON_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JournalError(f"journal {path}: cannot lock its state dir ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(
                f"journal {path}: a running factoryd holds its state dir; stop it first"
            ) from None
        return _recover(path, now)
    except (OSError, sqlite3.Error) as exc:
        raise JournalError(f"journal {path}: recovery failed ({exc})") from None
    finally:
        os.close(fd)


def _recover(path: Path, now: float | None) -> Report:
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size == 0:
        marker = integrity.marker_for(path)
        raise JournalError(
            f"journal {path}: nothing to salvage (missing or empty); restore it from a "
            f"backup, or remove {marker} to start with an empty journal"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    fresh = path.with_name(f"{path.name}.salvaged-{stamp}")
    report = Report(path, kept_as=kept)
    with (
        _copy(path) as copy,
        closing(sqlite3.connect(copy)) as src,
        closing(sqlite3.connect(fresh, isolation_level=None)) as dst,
    ):
        dst.execute("PRAGMA journal_mode=WAL")
        migrate(dst, fresh)
        dst.execute("BEGIN IMMEDIATE")
        for table, columns in _schema_tables().items():
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" for _ in columns)
            # our own table and column names, from the schema; values are bound
            insert = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({marks})'  # noqa: S608
            copied = 0
            for row in _readable_rows(src, table, names, report):
                dst.execute(insert, row)
                copied += 1
            report.rows[table] = copied
        dst.execute("COMMIT")
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path.replace(kept)
    for suffix in _SIDE_FILES:
        side = Path(str(path) + suffix)
        if side.exists():
            side.replace(Path(str(kept) + suffix))
    for suffix in _SIDE_FILES:
        Path(str(fresh) + suffix).unlink(missing_ok=True)
    fresh.replace(path)
    integrity.write_marker(path)
    integrity.fsync_dir(path.parent)
    return report


def _schema_tables() -> dict[str, list[str]]:
    """Table -> columns of the current schema (built in memory: never read from
    the damaged file, whose names are not to be trusted in SQL)."""
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as db:
        migrate(db, Path(":memory:"))
        tables = [
            str(r[0])
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            ).fetchall()
        ]
        return {t: [str(r[1]) for r in db.execute(f'PRAGMA table_info("{t}")')] for t in tables}


def _readable_rows(
    src: sqlite3.Connection, table: str, names: str, report: Report
) -> Iterator[tuple[Any, ...]]:
    """Rows of `table` in rowid order, stepping past any that cannot be read."""
    after: int | None = None
    skips = 0
    while skips < MAX_SKIPS:
        where = "" if after is None else " WHERE rowid > ?"
        query = f'SELECT rowid, {names} FROM "{table}"{where} ORDER BY rowid'  # noqa: S608
        try:
            for row in src.execute(query, () if after is None else (after,)):
                after = int(row[0])
                skips = 0
                yield tuple(row[1:])
            return
        except sqlite3.DatabaseError:
            skips += 1
            report.unreadable[table] = report.unreadable.get(table, 0) + 1
            after = (after or 0) + 1


class _copy:
    """A private copy of the journal (and its WAL) in a temporary directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        self._dir = tempfile.TemporaryDirectory(prefix=".journal-copy-", dir=self.path.parent)
        copy = Path(self._dir.name) / "journal.db"
        shutil.copyfile(self.path, copy)
        wal = Path(str(self.path) + "-wal")
        if wal.exists():
            shutil.copyfile(wal, Path(str(copy) + "-wal"))
        return copy

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            self._dir.cleanup()
