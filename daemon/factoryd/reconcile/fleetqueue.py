"""The loop's side of the fleet's durable queue: claimed items become one-shot tasks.

Imported only with a `[fleet]` table. The service's claimer (service/fleet.py)
talks to the database off the loop; everything here runs on the loop, the
one owner of task and run state, so the lease bookkeeping needs no lock:

* `room`: how many more items this host can take (free run slots, minus
  claims not started yet);
* `take`: a claimed item enters the task table as a submission, fenced by
  its attempt number. An item taken over from a host whose lease lapsed is
  the previous attempt's `lost` run: a task whose restart policy is `never`
  ends there (failed, `lost`); any other runs again;
* `confirmed` / `lapsed`: a heartbeat that did not confirm an item, or a
  lease that may have run out without a confirmed renewal, means another
  host may own the item now: the run is stopped and the item is not
  reported (the database would refuse the stale token anyway);
* `ended`: items whose task reached a final phase, for the claimer to
  finish in the queue with the attempt it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from factoryd.config.submission import SubmitError, build_spec
from factoryd.core.lifecycle import TERMINAL, TaskPhase
from factoryd.core.taskspec import RestartPolicy
from factoryd.state.fleet.leases import LeaseKeeper
from factoryd.state.fleet.queue import Claim

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler


@dataclass(frozen=True, slots=True)
class Ended:
    item: int
    attempt: int
    failed: bool
    outcome: str
    reason: str


@dataclass(slots=True)
class _Held:
    item: int
    attempt: int
    sub_id: str


class QueueBook:
    def __init__(self, rec: Reconciler, lease: float, logger: FilteringBoundLogger) -> None:
        self.rec = rec
        self.logger = logger
        self.keeper = LeaseKeeper(lease)
        #: Claimed items by submission id (the task's name).
        self.held: dict[str, _Held] = {}
        #: Items to finish in the queue (taken by the claimer).
        self.ended: list[Ended] = []

    def room(self) -> int:
        rec = self.rec
        waiting = sum(
            1
            for h in self.held.values()
            if (rt := rec.tasks.get(h.sub_id)) is not None and rt.run is None
        )
        return max(0, rec.config.daemon.max_concurrent - len(rec.runs) - waiting)

    def take(self, claim: Claim, sent_at: float) -> None:
        """A claim came back granted (on the loop, right after the claim call)."""
        self.keeper.claimed(claim.item, claim.attempt, sent_at)
        where = f"fleet queue item {claim.item}"
        try:
            spec, label = build_spec(self.rec.config, claim.request, claim.sub_id, where)
        except SubmitError as exc:
            self.logger.warning("fleet.claim_rejected", item=claim.item, error=str(exc))
            self._end(claim.item, claim.attempt, True, "rejected", str(exc))
            return
        fields = {"item": claim.item, "id": claim.sub_id, "attempt": claim.attempt}
        if claim.lost_by is not None:
            self.logger.warning("fleet.claim_taken_over", lost_by=claim.lost_by, **fields)
            if spec.restart is RestartPolicy.NEVER:
                reason = f"its run on {claim.lost_by} was lost and restart = never"
                self._end(claim.item, claim.attempt, True, "lost", reason)
                return
        self.held[claim.sub_id] = _Held(claim.item, claim.attempt, claim.sub_id)
        self.rec.table.add_submission(spec, label)
        self.logger.info("fleet.claimed", label=label, **fields)

    def pairs(self) -> list[tuple[int, int]]:
        return self.keeper.pairs()

    def next_deadline(self) -> float | None:
        """When (monotonic) the soonest held lease may lapse. The loop sleeps no longer:
        a quiet host that waited for its next `loop_interval` pass would stop a
        lapsed claim's run seconds after another host started it."""
        return self.keeper.next_deadline()

    def confirmed(self, sent: list[tuple[int, int]], ours: set[int], sent_at: float) -> None:
        """A renewal of `sent` came back with `ours` still this host's."""
        for item, attempt in sent:
            if item in ours:
                self.keeper.claimed(item, attempt, sent_at)
            else:
                self._lose(item, "the queue no longer gives this host the item")

    def each_pass(self, now_m: float) -> None:
        """Stop runs whose lease may have lapsed; collect items whose task ended."""
        for item in self.keeper.lapsed(now_m):
            self._lose(item, "its lease lapsed without a confirmed renewal")
        table = self.rec.table
        for sub_id, held in list(self.held.items()):
            rt = table.tasks.get(sub_id)
            if rt is None:  # ended and forgotten this pass: its record says how
                del self.held[sub_id]
                done = next((r for r in table.recent if r["id"] == sub_id), None)
                phase = str(done["phase"]) if done else "forgotten"
                reason = str(done["reason"]) if done else ""
                self._end(held.item, held.attempt, phase != "succeeded", phase, reason)
                continue
            if rt.phase in TERMINAL and rt.run is None:
                del self.held[sub_id]
                failed = rt.phase is not TaskPhase.SUCCEEDED
                outcome = rt.last_outcome or str(rt.phase)
                self._end(held.item, held.attempt, failed, outcome, rt.reason)

    def _end(self, item: int, attempt: int, failed: bool, outcome: str, reason: str) -> None:
        self.keeper.ended(item)
        self.ended.append(Ended(item, attempt, failed, outcome, reason[:300]))

    def _lose(self, item: int, why: str) -> None:
        self.keeper.ended(item)
        held = next((h for h in self.held.values() if h.item == item), None)
        if held is None:
            return
        del self.held[held.sub_id]
        self.logger.warning("fleet.claim_lost", item=item, id=held.sub_id, reason=why)
        self.rec.table.cancel(held.sub_id, f"fleet: {why}; another host may run it")

    def release_all(self) -> list[tuple[int, int]]:
        """Shutting down: items whose task has not started go back to the queue."""
        out = []
        for sub_id, held in list(self.held.items()):
            rt = self.rec.tasks.get(sub_id)
            if rt is not None and rt.run is None and rt.phase not in TERMINAL:
                del self.held[sub_id]
                self.keeper.ended(held.item)
                out.append((held.item, held.attempt))
        return out
