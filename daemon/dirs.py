"""Directories made once per process.

A task's log directory and its kept working directory are needed by every
run of the task, but created only by the first: afterwards a set lookup
answers, instead of a mkdir per run (a directory update the disk journals).
"""

from __future__ import annotations

from pathlib import Path

_MADE: set[Path] = set()


def ensure_dir(path: Path) -> None:
    """Create `path` (and its parents) unless this process already did."""
    if path not in _MADE:
        path.mkdir(parents=True, exist_ok=True)
        _MADE.add(path)
