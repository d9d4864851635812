"""Directories made once per process, and ahead of need.

A task's kept working directory is needed by every run of the task but
made only once: afterwards a set lookup answers, instead of a mkdir per run
(a directory update the disk journals). `make_ahead` makes a new config's
directories on a helper thread, before the tasks' first starts need them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

_MADE: set[Path] = set()


def ensure_dir(path: Path) -> None:
    """Create `path` (and its parents) unless this process already did."""
    if path not in _MADE:
        path.mkdir(parents=True, exist_ok=True)
        _MADE.add(path)


def make_ahead(paths: Iterable[Path]) -> threading.Thread:
    """Make directories on a helper thread, ahead of their first use.

    The kept working directory of each task in a new config is made here,
    not by the task's first start on the loop (a mkdir is a directory update
    the disk journals: hundreds of microseconds on a busy disk). A start
    that comes first makes its own directory; failures here are left for
    that start to meet and report.
    """
    todo = [p for p in paths if p not in _MADE]

    def work() -> None:
        for path in todo:
            try:
                ensure_dir(path)
            except OSError:
                continue

    thread = threading.Thread(target=work, name="factoryd-mkdir", daemon=True)
    thread.start()
    return thread
