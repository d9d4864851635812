"""What one reconcile pass tells the journal: a batch, committed at the pass's end.

The loop records facts as they happen (a run is about to start, it started
with this pid, it ended; a task changed; the ledger moved); at the end of
each pass `flush` turns them into one journal transaction and only then
opens the start gates of the runs recorded in it, so that no run starts
before its record is committed (group commit). Without a journal every
call is cheap bookkeeping and gates open at once.

The batch knows nothing of the loop: `flush` is handed what it must read
(the task records to write, the ledger, the routing soft state).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from structlog.typing import FilteringBoundLogger

from factoryd.core.taskspec import TaskSpec
from factoryd.proc.spawnlog import SpawnLog
from factoryd.routing.ledger import PoolLedger, Reservation
from factoryd.routing.snapshot import reservation_record
from factoryd.run.runspec import Gate
from factoryd.state import journal as j

#: Telemetry and quality are soft state: written at most this often.
SOFT_STATE_EVERY = 5.0


def spec_digest(spec: TaskSpec) -> str:
    """A stable digest of a task spec: a restart keeps a task's progress only if
    the spec it was made under is unchanged. Asked for once per run (its task's
    record), for the same spec object run after run: found by identity first,
    since hashing a spec walks all its fields."""
    known = _DIGEST_OF.get(id(spec))
    if known is not None and known[0] is spec:
        return known[1]
    digest = _digest(spec)
    if len(_DIGEST_OF) > 8192:
        _DIGEST_OF.clear()
    _DIGEST_OF[id(spec)] = (spec, digest)  # the spec is held: its id stays its own
    return digest


_DIGEST_OF: dict[int, tuple[TaskSpec, str]] = {}


@functools.lru_cache(maxsize=8192)
def _digest(spec: TaskSpec) -> str:
    return hashlib.sha256(
        json.dumps(jsonable(spec), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


#: Fields per dataclass type (None: not a dataclass), so that `jsonable` asks
#: `dataclasses.fields` once per type, not once per object: (name, the value it
#: is left out at). A field left out of comparison (a cache) is not part of what
#: a value is: left out. A field added after journals existed is marked
#: `metadata={"digest": "omit_default"}` and left out at its default, so a spec
#: that does not use it keeps the digest it had before the field existed (an
#: upgrade must not make every task look changed and forget its progress).
_FIELD_NAMES: dict[type, tuple[tuple[str, Any], ...] | None] = {}
_NEVER = object()
_SCALARS = (str, int, float, bool, type(None))


def jsonable(value: Any) -> Any:
    """What `dataclasses.asdict` gives for JSON, without its deep copies (it is
    called for every new task's first journal record, and asdict costs ~100 us
    per spec)."""
    cls = value.__class__
    if cls in _SCALARS:
        return value
    try:
        names = _FIELD_NAMES[cls]
    except KeyError:
        names = _FIELD_NAMES[cls] = (
            tuple(
                (f.name, f.default if f.metadata.get("digest") == "omit_default" else _NEVER)
                for f in fields(value)
                if f.compare
            )
            if is_dataclass(cls)
            else None
        )
    if names is not None:
        return {
            name: jsonable(v) for name, omit in names if (v := getattr(value, name)) is not omit
        }
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class JournalBatch:
    """The journal writes of one reconcile pass, and the start gates they hold."""

    def __init__(self, journal: j.Journal | None, spawn_log: SpawnLog | None = None) -> None:
        self.journal = journal
        self.spawn_log = spawn_log
        #: Runs whose pid is in `_ops`: once committed, their spawn-log lines go.
        self._started: list[str] = []
        self._ops: list[j.Op] = []
        #: Where in `_ops` each run's pid record is, while its end may yet join it.
        self._started_at: dict[str, int] = {}
        self._intents: list[tuple[j.Op, Gate]] = []
        self._dirty_tasks: set[str] = set()
        self._ledger_dirty = False
        self._soft_due = 0.0
        self._soft_dirty = True

    @property
    def enabled(self) -> bool:
        return self.journal is not None

    def run_intent(
        self,
        run_id: str,
        task: str,
        arm: str,
        started_at: float,
        reservation: Reservation | None,
        log_path: str,
    ) -> Gate:
        """Record that a run is about to start; its gate opens once that is committed."""
        gate = Gate()
        if self.journal is None:
            gate.open()
            return gate
        res = None if reservation is None else reservation_record(reservation)
        op = j.op_run_intent(run_id, task, arm, started_at, res, log_path)
        self._intents.append((op, gate))
        self._ledger_dirty = True
        return gate

    def run_started(
        self,
        run_id: str,
        pid: int,
        create_time: float | None,
        leader_fds: tuple[int, int] | None = None,
    ) -> None:
        if self.journal is not None:
            self._started.append(run_id)
            self._started_at[run_id] = len(self._ops)
            self._ops.append(j.op_run_started(run_id, pid, create_time, leader_fds))

    def run_ended(self, op: j.Op) -> None:
        """A run's end record (made by settlement); telemetry and the ledger moved.
        A run that started and ended within the pass (a short one) has its pid
        and its end written by one UPDATE, in its pid record's place."""
        if self.journal is None:
            return
        self._ledger_dirty = True
        self._soft_dirty = True
        if isinstance(op, j.RunEnded):
            at = self._started_at.pop(op.run_id, -1)
            start = self._ops[at] if 0 <= at < len(self._ops) else None
            if isinstance(start, j.RunStarted) and start.run_id == op.run_id:
                self._ops[at] = j.RunStartedAndEnded(start, op)
                return
        self._ops.append(op)

    def routing_changed(self) -> None:
        """Pools or arm telemetry changed outside a run (an operator's release)."""
        self._ledger_dirty = True
        self._soft_dirty = True
        self._soft_due = 0.0

    def task(self, name: str) -> None:
        if self.journal is not None:
            self._dirty_tasks.add(name)

    def op(self, op: j.Op) -> None:
        if self.journal is not None:
            self._ops.append(op)

    async def flush(
        self,
        now: float,
        *,
        task_op: Callable[[str, float], j.Op | None],
        ledger: PoolLedger,
        soft_state: Callable[[float], dict[str, Any]],
        log: FilteringBoundLogger,
    ) -> None:
        """Commit everything recorded since the last flush; then open the gates.

        `task_op(name, now)`: the record of a changed task (None: it is gone);
        `soft_state(now)`: telemetry and quality, written at most every
        SOFT_STATE_EVERY seconds.
        """
        intents, self._intents = self._intents, []
        if self.journal is None:
            return
        ops = self._ops
        self._ops = []
        self._started_at.clear()
        started, self._started = self._started, []
        for name in self._dirty_tasks:
            op = task_op(name, now)
            if op is not None:
                ops.append(op)
        self._dirty_tasks.clear()
        if self._ledger_dirty:
            self._ledger_dirty = False
            for name, st in ledger.pools.items():
                ops.append(
                    j.op_pool(
                        name,
                        st.used,
                        st.window_start,
                        st.limited_until,
                        st.limited_reason,
                        st.strikes,
                    )
                )
        if self._soft_dirty and now >= self._soft_due:
            self._soft_due = now + SOFT_STATE_EVERY
            self._soft_dirty = False
            ops.append(j.op_routing_soft(soft_state(now), now))
        batch = [op for op, _ in intents] + ops
        try:
            await self.journal.apply(batch)
        except Exception as exc:
            log.error(
                "journal.write_failed",
                error=str(exc),
                runs_not_started=len(intents),
                note="runs are not started unless they are recorded",
            )
            self._ops = ops + self._ops  # retried with the next flush
            self._started_at.clear()  # its indices moved: those runs' ends are not merged
            self._started = started + self._started
            for _, gate in intents:
                gate.open(ok=False, error=f"journal write failed: {exc}")
            return
        for _, gate in intents:
            gate.open()
        if self.spawn_log is not None and started:
            self.spawn_log.journaled(started)

    def close(self) -> None:
        if self.spawn_log is not None:
            self.spawn_log.close()
        if self.journal is not None:
            self.journal.close()
