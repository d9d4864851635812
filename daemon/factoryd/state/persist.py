"""What the reconciler tells the journal, batched per pass.

The reconciler records facts as they happen (a run is about to start, it
started with this pid, it ended; a task changed; the ledger moved); at the
end of each pass `flush` turns them into one journal transaction and then
opens the start gates of the runs recorded in it. Without a journal every
call is cheap bookkeeping and gates open at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from factoryd.run.runner import Gate
from factoryd.state import journal as j

if TYPE_CHECKING:
    from factoryd.core.taskspec import TaskSpec
    from factoryd.proc.spawnlog import SpawnLog
    from factoryd.reconcile.reconciler import Reconciler, TaskRuntime
    from factoryd.routing.ledger import Reservation

#: Telemetry and quality are soft state: written at most this often.
SOFT_STATE_EVERY = 5.0


@functools.lru_cache(maxsize=8192)
def spec_digest(spec: TaskSpec) -> str:
    """A stable digest of a task spec: a restart keeps a task's progress only if
    the spec it was made under is unchanged."""
    return hashlib.sha256(
        json.dumps(plain(spec), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


#: Field names per dataclass type (None: not a dataclass), so that `plain`
#: asks `dataclasses.fields` once per type, not once per object.
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}
_SCALARS = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
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
            tuple(f.name for f in fields(value)) if is_dataclass(cls) else None
        )
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def reservation_dict(res: Reservation | None) -> dict[str, Any] | None:
    if res is None:
        return None
    return {
        "id": res.id,
        "arm": res.arm,
        "task": res.task,
        "charges": res.charges,
        "created_at": res.created_at,
        "expires_at": res.expires_at,
    }


class Store:
    def __init__(self, journal: j.Journal | None, spawn_log: SpawnLog | None = None) -> None:
        self.journal = journal
        self.spawn_log = spawn_log
        #: Runs whose pid is in `_ops`: once committed, their spawn-log lines go.
        self._started: list[str] = []
        self._ops: list[j.Op] = []
        self._intents: list[tuple[j.Op, Gate]] = []
        self._dirty_tasks: set[str] = set()
        self._ledger_dirty = False
        self._soft_due = 0.0
        self._soft_dirty = True
        self.failures = 0

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
        gate = Gate()
        if self.journal is None:
            gate.open()
            return gate
        op = j.op_run_intent(run_id, task, arm, started_at, reservation_dict(reservation), log_path)
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
            self._ops.append(j.op_run_started(run_id, pid, create_time, leader_fds))

    def run_ended(
        self, run_id: str, ended_at: float, outcome: str, reason: str, usage: dict[str, Any] | None
    ) -> None:
        if self.journal is not None:
            self._ops.append(j.op_run_ended(run_id, ended_at, outcome, reason, usage))
            self._ledger_dirty = True
            self._soft_dirty = True  # telemetry and quality moved

    def task(self, name: str) -> None:
        if self.journal is not None:
            self._dirty_tasks.add(name)

    def ledger(self) -> None:
        self._ledger_dirty = True

    def op(self, op: j.Op) -> None:
        if self.journal is not None:
            self._ops.append(op)

    async def flush(self, rec: Reconciler) -> None:
        """Commit everything recorded since the last flush; then open the gates."""
        intents, self._intents = self._intents, []
        if self.journal is None:
            return
        ops = self._ops
        self._ops = []
        started, self._started = self._started, []
        now = rec.clock.wall()
        for name in self._dirty_tasks:
            rt = rec.tasks.get(name)
            if rt is not None:
                ops.append(task_state_op(rt, now))
        self._dirty_tasks.clear()
        if self._ledger_dirty:
            self._ledger_dirty = False
            for name, st in rec.engine.ledger.pools.items():
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
            snap = rec.engine.snapshot(now)
            ops.append(
                j.op_routing_soft(
                    {"version": snap["version"], "arms": snap["arms"], "quality": snap["quality"]},
                    now,
                )
            )
        batch = [op for op, _ in intents] + ops
        try:
            await self.journal.apply(batch)
        except Exception as exc:
            self.failures += 1
            rec.log.error(
                "journal.write_failed",
                error=str(exc),
                runs_not_started=len(intents),
                note="runs are not started unless they are recorded",
            )
            self._ops = ops + self._ops  # retried with the next flush
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


def task_state_op(rt: TaskRuntime, now: float) -> j.Op:
    digest = spec_digest(rt.spec)
    return j.op_task_state(
        rt.name,
        str(rt.phase),
        rt.reason,
        rt.runs,
        rt.restarts,
        rt.last_fire,
        rt.pending_fires,
        now,
        digest,
    )
