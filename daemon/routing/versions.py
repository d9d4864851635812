"""Change counters per arm, shared by everything a cached arm view reads.

Telemetry and observed quality both feed an arm's view (see armview.py).
Each bumps the arm's counter on every change, and a view remembers the
counter it was built at, so the router tells a stale view with one lookup
instead of one per source.
"""

from __future__ import annotations


class ArmVersions:
    __slots__ = ("counts",)

    def __init__(self) -> None:
        #: Read directly by the router's hot loop; written only through `bump`.
        self.counts: dict[str, int] = {}

    def bump(self, arm: str) -> None:
        self.counts[arm] = self.counts.get(arm, 0) + 1

    def of(self, arm: str) -> int:
        return self.counts.get(arm, 0)
