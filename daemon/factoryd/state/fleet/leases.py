"""This host's own view of its leases, on its monotonic clock.

The database decides who holds a claim, but a host cut off from it (a
partition, a long pause) cannot ask. It must assume the worst: a lease
counts as lost `lease - margin` seconds after the renewal that was *sent*
last and confirmed (the database's lease began no earlier than the send),
and from then the host stops acting on the item: it starts nothing for it
and stops the run it has, because another host may claim it once the
database's lease ends. The margin (a tenth of the lease by default) covers
the host noticing late (its loop's period, scheduling delay) and clock
rate differences; the caller should check `lapsed` at least every
margin / 2. Pure: the caller passes monotonic `now`.
"""

from __future__ import annotations


class LeaseKeeper:
    def __init__(self, lease: float, margin: float | None = None) -> None:
        self.lease = lease
        self.margin = lease / 10.0 if margin is None else margin
        #: item -> (attempt, monotonic instant the lease surely ends).
        self._until: dict[int, tuple[int, float]] = {}

    def claimed(self, item: int, attempt: int, sent_at: float) -> None:
        """A claim (sent at `sent_at`) came back granted."""
        self._until[item] = (attempt, sent_at + self.lease - self.margin)

    def renewed(self, items: set[int], sent_at: float) -> list[int]:
        """A renewal sent at `sent_at` came back with `items` still ours; returns
        the items it did not confirm (lost to another host: stop their runs)."""
        lost = [item for item in self._until if item not in items]
        for item in lost:
            del self._until[item]
        for item in items:
            if item in self._until:
                self._until[item] = (self._until[item][0], sent_at + self.lease - self.margin)
        return lost

    def ended(self, item: int) -> None:
        """The item finished or was released: no lease to keep."""
        self._until.pop(item, None)

    def pairs(self) -> list[tuple[int, int]]:
        """(item, attempt) for the next renewal."""
        return [(item, attempt) for item, (attempt, _) in sorted(self._until.items())]

    def lapsed(self, now: float) -> list[int]:
        """Items whose lease may have lapsed by `now` (no confirmed renewal in time):
        stop acting on them. They are forgotten here; a later renewal cannot
        bring them back, since another host may hold them already."""
        gone = [item for item, (_, until) in self._until.items() if now >= until]
        for item in gone:
            del self._until[item]
        return gone

    def next_deadline(self) -> float | None:
        return min((until for _, until in self._until.values()), default=None)
