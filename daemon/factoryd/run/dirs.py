"""Directories made once per daemon, and ahead of need.

A task's kept working directory is needed by every run of the task but
made only once: afterwards a set lookup answers, instead of a mkdir per run
(a directory update the disk journals). `make_ahead` makes a new config's
directories on a helper thread, before the tasks' first starts need them.

The set of directories made is an object the daemon owns (not module
state), and a lock guards it: the helper thread and the loop both use it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path


class MadeDirs:
    """The directories made so far, safe to share between the loop and one helper thread."""

    def __init__(self) -> None:
        self._made: set[Path] = set()
        self._lock = threading.Lock()

    def __contains__(self, path: Path) -> bool:
        with self._lock:
            return path in self._made

    def ensure(self, path: Path) -> None:
        """Create `path` (and its parents) unless it was made already."""
        if path in self:
            return
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._made.add(path)

    def make_ahead(self, paths: Iterable[Path]) -> threading.Thread:
        """Make directories on a helper thread, ahead of their first use.

        The kept working directory of each task in a new config is made here,
        not by the task's first start on the loop (a mkdir is a directory
        update the disk journals: hundreds of microseconds on a busy disk). A
        start that comes first makes its own directory; failures here are
        left for that start to meet and report.
        """
        todo = [p for p in paths if p not in self]

        def work() -> None:
            for path in todo:
                try:
                    self.ensure(path)
                except OSError:
                    continue

        thread = threading.Thread(target=work, name="factoryd-mkdir", daemon=True)
        thread.start()
        return thread


def make_ahead(paths: Iterable[Path], made: MadeDirs | None = None) -> threading.Thread:
    """`MadeDirs.make_ahead` on `made` (a set of its own when None)."""
    return (made or MadeDirs()).make_ahead(paths)
