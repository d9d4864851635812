"""A damaged or missing journal is refused, never silently replaced.

The journal is the only record of accepted work. SQLite would happily
create a new, empty database where the old one was deleted or truncated
to zero bytes, and the daemon would then forget every queued submission
without a word. So:

* When a journal is first created, a marker is written beside it
  (`journal.db.created`). A state dir with the marker but no journal, or a
  zero-length one, shows earlier use: the daemon refuses to start.
* On open, SQLite's `quick_check` runs (a few milliseconds for a journal
  kept small by pruning). A file that is not a database, or one whose
  pages are damaged, is refused in one line naming the path.

Each refusal says what to do: restore the file, or salvage what is
readable with `factoryd journal recover` (salvage.py), which keeps the
damaged file beside the new one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from pathlib import Path

from factoryd.state.schema import JournalError

MARKER_SUFFIX = ".created"
RECOVER_HINT = (
    "run `factoryd journal recover --config FILE` to salvage what is readable "
    "into a new journal (the damaged file is kept)"
)


def marker_for(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def check_present(path: Path) -> None:
    """Refuse a journal that is not a regular file, or is missing or empty
    where the marker shows that one existed."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise JournalError(f"journal {path}: cannot open it ({exc.strerror or exc})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise JournalError(
            f"journal {path}: not a regular file; move it aside (it is not a journal)"
        )
    if st is not None and st.st_size > 0:
        return
    marker = marker_for(path)
    if not marker.exists():
        return  # a new state dir: the journal is created
    what = "missing" if st is None else "empty (zero bytes)"
    raise JournalError(
        f"journal {path} is {what}, but this state dir has held a journal "
        f"({marker} {_since(marker)}); restore it from a backup, or, to start with an "
        f"empty journal and lose the work it recorded, remove {marker}"
    )


def _since(marker: Path) -> str:
    try:
        return marker.read_text(errors="replace").strip()[:80] or "exists"
    except OSError:
        return "exists"


def check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """SQLite's own quick check of every page; JournalError in one line if it fails."""
    rows = db.execute("PRAGMA quick_check").fetchall()
    if rows and rows[0][0] == "ok":
        return
    first = str(rows[0][0]).splitlines()[0] if rows else "no answer"
    more = f" and {len(rows) - 1} more problem(s)" if len(rows) > 1 else ""
    raise JournalError(f"journal {path}: damaged ({first[:120]}{more}); {RECOVER_HINT}")


def damaged(path: Path, exc: sqlite3.DatabaseError) -> JournalError:
    """An SQLite error met while opening, as the one line an operator reads."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return JournalError(f"journal {path}: cannot be used ({detail}); {RECOVER_HINT}")


def write_marker(path: Path) -> None:
    """Note that this state dir has a journal (once; best effort, made durable)."""
    marker = marker_for(path)
    if marker.exists():
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = marker.with_name(marker.name + ".tmp")
    with contextlib.suppress(OSError):
        with tmp.open("w") as f:
            f.write(f"since {stamp}\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(marker)
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
