"""What the status page shows, kept fresh by the daemon's own state changes.

The reconciler calls `Hub.changed` after every pass (a run started or ended,
a command, a reload, the interval); a single flusher task then renders each
view once (JSON bytes) and wakes every open page. Memory stays flat however
long a page stays open: a client holds no queue, only which views changed
since its last write and the sequence number of the last routing decision
it was sent. A client that falls further behind than the kept decisions
gets the whole list again (a resync) instead of a backlog. Pushes are
throttled to one a second so a busy daemon spends its loop on work, not
on pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factoryd.observe.metrics import Metrics
from factoryd.routing.decision import Decision
from factoryd.routing.model import ArmSpec, Usage
from factoryd.units.timefmt import iso

#: Routing decisions kept for the page (the newest first on screen).
KEEP_DECISIONS = 50
#: Runs listed from the journal.
KEEP_RUNS = 40
#: Ranked arms kept per decision (the rest are counted).
KEEP_RANKED = 8
#: Fewest seconds between two pushes to the pages.
MIN_PUSH_INTERVAL = 1.0
#: Points of pool use kept for each pool's sparkline, one per SPARK_EVERY
#: seconds (two hours), sampled whether or not a page is open.
SPARK_POINTS = 120
SPARK_EVERY = 60.0


def compact_decision(d: Decision, seq: int) -> dict[str, Any]:
    """The decision as `factoryd route --json` shows it, ranking cut to a screenful."""
    out = d.to_dict()
    ranking = out.get("ranking", [])
    out["ranked_more"] = max(0, len(ranking) - KEEP_RANKED)
    out["ranking"] = ranking[:KEEP_RANKED]
    out["seq"] = seq
    return out


class RecordingMetrics(Metrics):
    """The daemon's metrics, also keeping the last routing decisions for the page.

    Every decision the reconciler takes passes through `Metrics.decision`;
    keeping the newest here costs one bounded deque. A task that stays
    blocked for the same reason is recorded once, not once per pass.
    """

    def __init__(self) -> None:
        super().__init__()
        self._recent: deque[dict[str, Any]] = deque(maxlen=KEEP_DECISIONS)
        # Rendered when the page reads them, not on the decision's path.
        self._unrendered: deque[tuple[Decision, int]] = deque(maxlen=KEEP_DECISIONS)
        self.decision_seq = 0
        self._last_none: dict[str, str] = {}

    def decision(self, d: Decision, seconds: float) -> None:
        super().decision(d, seconds)
        if d.arm is None:
            why = d.rationale()
            if self._last_none.get(d.task) == why:
                return
            if len(self._last_none) > 10_000:
                self._last_none.clear()
            self._last_none[d.task] = why
        else:
            self._last_none.pop(d.task, None)
        self.decision_seq += 1
        self._unrendered.append((d, self.decision_seq))

    @property
    def recent_decisions(self) -> deque[dict[str, Any]]:
        """The newest decisions as the page shows them, oldest first."""
        while self._unrendered:
            self._recent.append(compact_decision(*self._unrendered.popleft()))
        return self._recent


def read_runs(
    journal: Path, arms: dict[str, ArmSpec], limit: int = KEEP_RUNS
) -> list[dict[str, Any]]:
    """The newest runs from the journal (a read-only connection; WAL lets it
    read beside the daemon's writer). Runs in a worker thread."""
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return []
    try:
        rows = db.execute(
            "SELECT id, task, arm, state, started_at, ended_at, outcome, reason, usage"
            " FROM runs ORDER BY started_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
    out = []
    for run_id, task, arm, state, started, ended, outcome, reason, usage_text in rows:
        tokens, cost = None, None
        if usage_text:
            try:
                raw = json.loads(usage_text)
                usage = Usage(**{k: v for k, v in raw.items() if k in Usage.__dataclass_fields__})
            except (ValueError, TypeError):
                usage = None
            if usage is not None:
                tokens = usage.total_tokens
                cost = usage.cost_usd
                if cost is None and arm in arms:
                    cost = arms[arm].cost_of(usage)
        out.append(
            {
                "id": run_id,
                "task": task,
                "arm": arm,
                "state": state,
                "started_at": iso(started),
                "ended_at": iso(ended) if ended else None,
                "duration": round((ended or time.time()) - started, 3),
                "outcome": outcome,
                "reason": reason or "",
                "tokens": tokens,
                "cost_usd": None if cost is None else round(cost, 6),
            }
        )
    return out


@dataclass(eq=False)
class Client:
    """One open page: what changed since its last write, nothing more."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: set[str] = field(default_factory=set)
    decision_seq: int = 0


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


class Hub:
    """Renders each view once per change and wakes the pages that show it."""

    def __init__(
        self,
        status: Callable[[], Awaitable[dict[str, Any]]],
        runs: Callable[[], Awaitable[list[dict[str, Any]]]],
        metrics: RecordingMetrics,
        *,
        max_clients: int = 32,
        min_interval: float = MIN_PUSH_INTERVAL,
    ) -> None:
        self._status = status
        self._runs = runs
        self.metrics = metrics
        self.max_clients = max_clients
        self.min_interval = min_interval
        self.clients: set[Client] = set()
        self.views: dict[str, bytes] = {}
        #: Each view framed as one SSE event, made once and written to every page.
        self.frames: dict[str, bytes] = {}
        self.spark: dict[str, deque[float]] = {}
        self._dirty = asyncio.Event()
        self._next_sample = 0.0
        self.pushes = 0

    def changed(self) -> None:
        """The reconciler's after-pass hook: cheap, only marks the views stale."""
        self._dirty.set()

    def subscribe(self) -> Client | None:
        if len(self.clients) >= self.max_clients:
            return None
        client = Client()
        client.dirty.update(("status", "runs"))
        self.clients.add(client)
        self._dirty.set()
        return client

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)

    async def render(self) -> None:
        """Refresh every view (also used by the first page before any pass)."""
        status = await self._status()
        now = time.monotonic()
        if now >= self._next_sample:
            self._next_sample = now + SPARK_EVERY
            self._sample(status)
        status["sparklines"] = {name: list(points) for name, points in self.spark.items()}
        self.views["status"] = dumps(status)
        self.views["runs"] = dumps(await self._runs())
        for view in ("status", "runs"):
            self.frames[view] = (
                b"event: " + view.encode() + b"\ndata: " + self.views[view] + b"\n\n"
            )

    def _sample(self, status: dict[str, Any]) -> None:
        for pool in status.get("pools", []):
            limit = pool.get("limit") or 0
            share = (pool["used"] + pool["reserved"]) / limit if limit > 0 else 0.0
            points = self.spark.setdefault(pool["name"], deque(maxlen=SPARK_POINTS))
            points.append(round(min(share, 1.0), 4))

    def decisions_since(self, seq: int) -> tuple[bool, list[dict[str, Any]]]:
        """(resync, decisions after `seq`): a gap bigger than what is kept resyncs."""
        kept = self.metrics.recent_decisions
        if not kept:
            return False, []
        if seq < kept[0]["seq"] - 1:
            return True, list(kept)
        return False, [d for d in kept if d["seq"] > seq]

    async def run(self) -> None:
        """The flusher: one render per burst of changes, at most every `min_interval`."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=SPARK_EVERY)
            self._dirty.clear()
            if self.clients:
                await self.render()
            else:
                # Nobody is looking: render nothing (the runs view reads the journal),
                # let a reader render afresh, and keep only the sparklines' history.
                self.views.clear()
                self.frames.clear()
                if time.monotonic() >= self._next_sample:
                    self._next_sample = time.monotonic() + SPARK_EVERY
                    self._sample(await self._status())
            if self.clients:
                self.pushes += 1
                for client in self.clients:
                    client.dirty.update(("status", "runs"))
                    client.wake.set()
            await asyncio.sleep(self.min_interval)
