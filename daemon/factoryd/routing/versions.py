"""Change counters per arm, shared by everything a cached arm view reads.

Telemetry and observed quality both feed an arm's view (see armview.py).
Each bumps the arm's counter on every change, so a view remembers the
counter it was built at and tells it is stale with one lookup. The names
of changed arms are also kept in a short log, so a reader that knows where
it stopped reading asks "which arms changed since?" instead of checking
every arm (see standings.py).
"""

from __future__ import annotations

#: Changes kept in the log; a reader further behind re-checks every arm.
LOG_LIMIT = 4096


class ArmVersions:
    __slots__ = ("_base", "_log", "counts")

    def __init__(self) -> None:
        #: Read directly by the router's hot path; written only through `bump`.
        self.counts: dict[str, int] = {}
        self._log: list[str] = []
        self._base = 0

    def bump(self, arm: str) -> None:
        counts, log = self.counts, self._log
        counts[arm] = counts.get(arm, 0) + 1
        if len(log) >= LOG_LIMIT:
            self._base += len(log)
            log.clear()
        log.append(arm)

    def of(self, arm: str) -> int:
        return self.counts.get(arm, 0)

    @property
    def position(self) -> int:
        """How many changes there have been; pass it to `changed_since` later."""
        return self.changes(-1)[1]  # before any change: the log is not copied

    def changes(self, since: int) -> tuple[list[str] | None, int]:
        """(`changed_since(since)`, the position now) in one call, as the router
        asks on every decision: the one definition of both."""
        log, base = self._log, self._base
        end = base + len(log)
        if since < base:  # never read (negative), or too long ago
            return None, end
        return log[since - base :], end

    def changed_since(self, position: int) -> list[str] | None:
        """Arms changed after `position` (with repeats); None if that is too long ago
        (or for a negative position: never read)."""
        return self.changes(position)[0]
