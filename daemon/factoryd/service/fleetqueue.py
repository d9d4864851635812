"""The daemon's side of the fleet's durable queue: submit, claim, renew, finish.

Imported only with a `[fleet]` table. With one, `factoryd submit` (and the
spool) on any host validates the request against this host's config and
enqueues it in PostgreSQL, committed before the answer; nothing goes to the
local journal's submissions. Every host then claims what it has room for:

* the claimer waits on LISTEN (a new item wakes it at once) or polls every
  `min(lease / 3, 5 s)` (leases that lapse by time send no notification),
  and claims up to its free slots with `FOR UPDATE SKIP LOCKED`;
* claims enter the loop as one-shot tasks (reconcile/fleetqueue.py), which
  also keeps each claim's lease deadline on this host's monotonic clock;
* the heartbeat renews every claim with its attempt number (the fencing
  token) and stops the runs of items the queue did not confirm;
* a task that ended is finished in the queue with its attempt; during an
  outage the finish waits in the outbox;
* at shutdown, claimed items whose run did not start go back to the queue.

Database calls run in worker threads; queue state is touched on the loop.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
import psycopg
from structlog.typing import FilteringBoundLogger

from factoryd.config.submission import SubmitError, build_spec
from factoryd.core.outcome import Outcome
from factoryd.reconcile.fleet import FleetLink
from factoryd.reconcile.fleetqueue import QueueBook
from factoryd.reconcile.reconciler import Reconciler
from factoryd.run.launch import new_run_id
from factoryd.service.submit import Accepted
from factoryd.state.fleet.errors import FleetError
from factoryd.state.fleet.queue import Claim
from factoryd.state.fleet.store import FleetStore

TROUBLE = (FleetError, psycopg.Error)
#: At most this many items per claim call.
CLAIM_BATCH = 16
#: Threads for the service's database calls (the claimer's LISTEN wait holds one).
THREADS = 8
T = TypeVar("T")


class QueueService:
    def __init__(
        self, rec: Reconciler, store: FleetStore, link: FleetLink, logger: FilteringBoundLogger
    ) -> None:
        self.rec = rec
        self.store = store
        self.lease = store.settings.lease
        self.book = QueueBook(rec, self.lease, logger)
        self.logger = logger
        link.queue = self.book
        link.submit = self.submit
        #: The fleet's own threads: calls a silent database holds (up to its
        #: timeouts) never take the threads the rest of the daemon needs.
        self.threads = anyio.CapacityLimiter(THREADS)

    async def in_thread(self, fn: Callable[..., T], *args: Any, abandon: bool = False) -> T:
        """Run a database call in one of the fleet's threads."""
        return await anyio.to_thread.run_sync(
            fn, *args, limiter=self.threads, abandon_on_cancel=abandon
        )

    # -- submitting ------------------------------------------------------------------

    async def submit(self, request: dict[str, Any], source: str, where: str) -> Accepted:
        """Validate against this host's config, then enqueue (committed) for the fleet."""
        rec = self.rec
        key = request.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not key or len(key) > 256):
            raise SubmitError("idempotency_key: expected a non-empty string of at most 256 chars")
        sub_id = "s-" + new_run_id(rec.clock.wall())
        _, label = build_spec(rec.config, request, sub_id, where)
        try:
            json.dumps(request)
        except (TypeError, ValueError) as exc:
            raise SubmitError(f"the request cannot be stored: {exc}") from None
        try:
            got = await self.in_thread(
                lambda: self.store.queue.enqueue(
                    sub_id, label, request, idem_key=key, source=source
                )
            )
        except TROUBLE as exc:
            first = " ".join(str(exc).split())[:200]
            raise SubmitError(f"not accepted: the fleet's queue is unreachable ({first})") from None
        rec.metrics.submissions.labels(source, "accepted").inc()
        rec.logger.info(
            "submission.accepted",
            id=got.sub_id,
            label=label,
            source=source,
            idempotency_key=key,
            fleet_item=got.item,
            duplicate=not got.created,
        )
        return Accepted(got.sub_id, label, duplicate=not got.created)

    # -- claiming ----------------------------------------------------------------------

    async def claimer(self) -> None:
        """Claim while there is room; sleep on LISTEN (or poll) when there is not."""
        waiter = self.store.waiter()
        poll = min(self.lease / 3.0, 5.0)
        try:
            while True:
                await self.finish_ended()
                room = min(self.book.room(), CLAIM_BATCH)
                if room > 0 and not self.rec.stopping:
                    sent = time.monotonic()
                    try:
                        claims = await self.in_thread(self.store.queue.claim, room)
                    except TROUBLE:
                        claims = []
                    if claims:
                        await self.rec.run_in_loop(partial(self._take, claims, sent))
                        if len(claims) == room:
                            continue  # perhaps more waiting
                try:
                    await self.in_thread(waiter.wait, poll, abandon=True)
                except TROUBLE:
                    await anyio.sleep(min(poll, 1.0))
        finally:
            waiter.close()

    def _take(self, claims: list[Claim], sent: float) -> None:
        for claim in claims:
            self.book.take(claim, sent)

    async def renew(self) -> None:
        """The heartbeat's renewal: stop what the queue no longer gives this host."""
        pairs = self.book.pairs()
        sent = time.monotonic()
        ours = await self.in_thread(self.store.heartbeat, pairs)
        await self.rec.run_in_loop(lambda: self.book.confirmed(pairs, ours, sent))

    async def finish_ended(self) -> None:
        ended, self.book.ended = self.book.ended, []
        for end in ended:
            finish = partial(
                self.store.queue.finish,
                end.item,
                end.attempt,
                failed=end.failed,
                outcome=end.outcome,
                reason=end.reason,
            )
            try:
                done = await self.in_thread(finish)
            except TROUBLE:
                self.store.outbox.finish(
                    end.item, end.attempt, failed=end.failed, outcome=end.outcome,
                    reason=end.reason,
                )  # fmt: skip
                continue
            self.logger.info(
                "fleet.finished", item=end.item, attempt=end.attempt, outcome=end.outcome,
                accepted=done,
            )  # fmt: skip

    async def readopt(self, wait: float) -> int:
        """Before recovery: the claims the previous daemon on this host held and
        that the queue still gives this host (renewed with their attempt, the
        fencing token) become tasks again, so recovery adopts their live runs
        (or lets the task's policy judge a run that died). A claim the queue
        no longer confirms is left out: its run is stopped as an orphan."""
        sent = time.monotonic()

        def held() -> tuple[list[Claim], set[int]]:
            mine = self.store.queue.mine()
            return mine, self.store.queue.renew([(c.item, c.attempt) for c in mine])

        claims: list[Claim] = []
        ours: set[int] = set()
        with anyio.move_on_after(wait):
            try:
                claims, ours = await self.in_thread(held, abandon=True)
            except TROUBLE as exc:
                self.logger.warning("fleet.readopt_failed", error=" ".join(str(exc).split())[:200])
        kept = 0
        for claim in claims:
            if claim.item in ours:
                self.book.take(claim, sent)
                kept += 1
        if claims:
            self.logger.info("fleet.claims_kept", kept=kept, lost=len(claims) - kept)
        return kept

    def stop_orphans(self) -> None:
        """After a restart: runs adopted from the previous daemon whose task came
        from the queue and whose claim `readopt` could not confirm are no longer
        this host's (the claim lapsed and was taken, or may be): stop them, so
        the item runs once, wherever it is claimed next."""
        for run in list(self.rec.runs.values()):
            if self.rec.tasks.get(run.task) is None:
                self.rec.book.stop(
                    run, Outcome.CANCELLED, "fleet: its queue claim did not survive the restart"
                )

    async def shutdown(self) -> None:
        """Finish what ended; give back claims whose run never started."""
        with anyio.CancelScope(shield=True):
            await self.finish_ended()
            for item, attempt in self.book.release_all():
                with contextlib.suppress(*TROUBLE):  # else the lease lapses by itself
                    await self.in_thread(
                        self.store.queue.release, item, attempt, "host shutting down"
                    )
