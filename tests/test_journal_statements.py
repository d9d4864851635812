"""A pass's journal writes, made with fewer statements, leave the rows they did.

The journal sends neighbouring operations with the same SQL (a pass's run
intents, its task records) as one `executemany`, and a run whose pid and end
fall in the same pass is written by one UPDATE (ops.RunStartedAndEnded).
These check that the rows are what the separate statements left, that a
failing statement still takes the whole batch back, and that a batch retried
after a failed write still records every run.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import structlog
from factoryd.routing.ledger import PoolLedger
from factoryd.state import journal as j
from factoryd.state.batch import JournalBatch
from factoryd.state.journal import Journal

COLUMNS = "id, state, pid, create_time, pipe_fds, ended_at, outcome, reason, usage"


def _runs(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT {COLUMNS} FROM runs ORDER BY id").fetchall()  # noqa: S608


def _tasks(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT name, phase, runs FROM task_state ORDER BY name").fetchall()


def _task_op(name: str, now: float) -> j.Op:
    return j.op_task_state(name, "running", "", 1, 0, None, 0, now, "d")


class Recording(Journal):
    """The journal, keeping the batches it was handed (and failing when told)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[list[j.Op]] = []
        self.fail = False

    def apply_sync(self, ops: Any, *, durable: bool = False) -> None:
        ops = list(ops)
        self.batches.append(ops)
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error (test)")
        super().apply_sync(ops, durable=durable)


async def _flush(batch: JournalBatch, now: float) -> None:
    await batch.flush(
        now,
        task_op=_task_op,
        ledger=PoolLedger([]),
        soft_state=lambda _now: {},
        log=structlog.get_logger(),
    )


def _separately(path: Path, ops: list[j.Op]) -> None:
    """`ops` one statement each, the way the journal applied them before."""
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")
        for op in ops:
            if isinstance(op, j.RunStartedAndEnded):
                db.execute(op.start.sql, op.start.values())
                db.execute(op.ended.sql, op.ended.values())
            elif isinstance(op, j.Stmt):
                db.execute(op.sql, op.values())
            else:
                op(db)
        db.execute("COMMIT")


@pytest.mark.anyio
async def test_a_run_started_and_ended_in_one_pass_is_one_update_with_the_same_row(
    tmp_path: Path,
) -> None:
    journal = Recording(tmp_path / "a" / "journal.db")
    batch = JournalBatch(journal)
    for i in range(3):
        batch.run_intent(f"r{i}", "t", "a", 100.0 + i, None, f"r{i}.log")
    batch.task("t")
    await _flush(batch, 1.0)
    assert (
        sum(isinstance(op, j.Stmt) and "INSERT INTO runs" in op.sql for op in journal.batches[0])
        == 3
    )
    batch.run_started("r0", 4000, 12.5, (7, 8))  # ends in this pass
    batch.run_started("r1", 4001, 13.5)  # ends in the next
    batch.run_ended(j.op_run_ended("r0", 200.0, "succeeded", "exit 0", {"cost": 0.5}))
    batch.run_ended(j.op_run_ended("r2", 201.0, "spawn_failed", "no pid", None))  # never started
    await _flush(batch, 2.0)
    batch.run_ended(j.op_run_ended("r1", 202.0, "failed", "exit 1", None))
    await _flush(batch, 3.0)
    merged = [op for op in journal.batches[1] if isinstance(op, j.RunStartedAndEnded)]
    assert len(merged) == 1 and merged[0].start.run_id == "r0"
    assert not any(isinstance(op, j.RunEnded) and op.run_id == "r0" for op in journal.batches[1])
    journal.close()

    # The same facts, one statement each, in a journal of their own.
    other = Journal(tmp_path / "b" / "journal.db")
    other.close()
    for ops in journal.batches:
        _separately(tmp_path / "b" / "journal.db", ops)
    rows = _runs(tmp_path / "a" / "journal.db")
    assert rows == _runs(tmp_path / "b" / "journal.db")
    assert rows[0] == (
        "r0",
        "ended",
        4000,
        12.5,
        "7,8",
        200.0,
        "succeeded",
        "exit 0",
        '{"cost": 0.5}',
    )
    assert rows[1][:3] == ("r1", "ended", 4001) and rows[2][:2] == ("r2", "ended")


def test_neighbours_of_one_statement_keep_their_order_among_other_ops(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    seen: list[int] = []

    def closure(db: sqlite3.Connection) -> None:
        seen.append(db.execute("SELECT COUNT(*) FROM task_state").fetchone()[0])

    journal.apply_sync(
        [_task_op("a", 1.0), _task_op("b", 1.0), closure, _task_op("c", 1.0), closure]
    )
    # A later record of the same task, next to the first: the later one wins.
    journal.apply_sync(
        [_task_op("a", 2.0), j.op_task_state("a", "failed", "x", 9, 1, None, 0, 2.0, "d")]
    )
    journal.close()
    assert seen == [2, 3]
    assert _tasks(tmp_path / "journal.db") == [
        ("a", "failed", 9),
        ("b", "running", 1),
        ("c", "running", 1),
    ]


def test_a_failing_statement_in_a_group_takes_the_whole_batch_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.apply_sync([j.op_run_intent("r0", "t", "a", 1.0, None, "")])
    with pytest.raises(sqlite3.IntegrityError):
        journal.apply_sync(
            [
                _task_op("a", 1.0),
                j.op_run_intent("r1", "t", "a", 1.0, None, ""),
                j.op_run_intent("r0", "t", "a", 1.0, None, ""),  # a second r0: refused
            ]
        )
    journal.close()
    assert [r[0] for r in _runs(tmp_path / "journal.db")] == ["r0"]
    assert _tasks(tmp_path / "journal.db") == []


@pytest.mark.anyio
async def test_a_batch_retried_after_a_failed_write_still_records_every_run(
    tmp_path: Path,
) -> None:
    journal = Recording(tmp_path / "journal.db")
    batch = JournalBatch(journal)
    for run in ("r0", "r1"):
        batch.run_intent(run, "t", "a", 1.0, None, "")
    await _flush(batch, 1.0)
    batch.run_started("r0", 4000, 1.5)
    batch.run_started("r1", 4001, 1.5)
    journal.fail = True
    await _flush(batch, 2.0)  # refused: its ops wait for the next flush
    journal.fail = False
    batch.run_ended(j.op_run_ended("r0", 3.0, "succeeded", "", None))
    await _flush(batch, 3.0)
    journal.close()
    rows = {r[0]: r for r in _runs(tmp_path / "journal.db")}
    assert rows["r0"][:3] == ("r0", "ended", 4000) and rows["r0"][6] == "succeeded"
    assert rows["r1"][:3] == ("r1", "running", 4001)


def test_records_json_is_json_dumps_byte_for_byte_and_refuses_as_it_does() -> None:
    from factoryd.state.ops import dumps

    values: list[Any] = [
        {"id": "r", "charges": {"p": 1.0}, "created_at": 1800001000.1234, "n": None},
        {"t": 'caf\u00e9 "q" \\', "l": [1, (2, 3.5)], "nan": float("nan"), "b": True},
        [1, 2],
        {},
    ]
    for value in values:
        assert dumps(value) == json.dumps(value)
    circular: dict[str, Any] = {}
    circular["me"] = circular
    with pytest.raises(ValueError, match="Circular"):
        dumps(circular)
    with pytest.raises(TypeError):
        dumps({"x": object()})
