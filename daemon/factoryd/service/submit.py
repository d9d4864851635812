"""Submitted work from the control socket: a request becomes a durable one-shot task.

A request is validated against the config in force before anything is
written; once it is in the journal it is acknowledged, and a restart finds
it there. An idempotency key makes a retried submission return the task it
already created instead of queueing the same work twice. A submission the
journal cannot take (a full disk, an I/O error) is refused with that reason
and never acknowledged; the daemon carries on and takes the next one once
the journal can write again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from factoryd.config.submission import SubmitError, build_spec
from factoryd.run.launch import new_run_id
from factoryd.state import journal as j

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler


class NotJournaled(SubmitError):
    """The request was fine but the journal could not record it: not acknowledged."""


def _not_journaled(exc: BaseException) -> NotJournaled:
    return NotJournaled(
        f"not accepted: the journal could not record it ({exc}); nothing was queued, "
        "retry once the state_dir's disk has room"
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    id: str
    label: str
    duplicate: bool
    #: The submission's journal state ("accepted" until it ends).
    state: str = "accepted"


def _idem_key(request: dict[str, Any]) -> str | None:
    key = request.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 256):
        raise SubmitError("idempotency_key: expected a non-empty string of at most 256 chars")
    if key is not None:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise SubmitError("idempotency_key: not valid Unicode text") from None
    return key


def _duplicate(
    rec: Reconciler, existing: j.SubmissionRow, request: dict[str, Any], key: str
) -> Accepted:
    """A key seen before: the same request gets the task it made; another is a conflict.
    Idempotency keys are not secrets: they are logged."""
    ended = "" if existing.state == "accepted" else f"; it has already ended ({existing.state})"
    if existing.request != request:
        rec.logger.warning(
            "submission.conflict", id=existing.id, idempotency_key=key, state=existing.state
        )
        raise SubmitError(
            f"idempotency key {key!r} was used for a different request "
            f"(submission {existing.id}{ended}); nothing queued"
        )
    rec.logger.info(
        "submission.duplicate", id=existing.id, idempotency_key=key, state=existing.state
    )
    return Accepted(existing.id, existing.label, duplicate=True, state=existing.state)


async def submit(rec: Reconciler, request: dict[str, Any], source: str, where: str) -> Accepted:
    """Validate, journal (committed), then hand to the loop. Raises SubmitError."""
    fleet = rec.fleet
    if fleet is not None and fleet.submit is not None:  # the fleet's durable queue
        accepted: Accepted = await fleet.submit(request, source, where)
        return accepted
    journal = rec.batch.journal
    if journal is None:
        raise SubmitError("submissions need a journal (state_dir)")
    key = _idem_key(request)
    if key is not None:
        try:
            existing = await anyio.to_thread.run_sync(journal.submission_by_key, key)
        except (sqlite3.Error, OSError) as exc:
            raise _not_journaled(exc) from None
        if existing is not None:
            return _duplicate(rec, existing, request, key)
    sub_id = "s-" + new_run_id(rec.clock.wall())
    spec, label = build_spec(rec.config, request, sub_id, where)
    try:
        await journal.apply(
            [j.op_submission(sub_id, key, label, request, source, rec.clock.wall())],
            durable=True,
        )
    except sqlite3.IntegrityError:
        existing = journal.submission_by_key(key) if key else None
        if existing is None or key is None:
            raise _not_journaled(RuntimeError("constraint failed")) from None
        return _duplicate(rec, existing, request, key)
    except (sqlite3.Error, OSError) as exc:
        raise _not_journaled(exc) from None
    except ValueError as exc:  # text SQLite cannot store (lone surrogates): the request's fault
        raise SubmitError(f"the request cannot be stored: {exc}") from None
    await rec.run_in_loop(lambda: rec.table.add_submission(spec, label))
    rec.metrics.submissions.labels(source, "accepted").inc()
    rec.logger.info(
        "submission.accepted", id=sub_id, label=label, source=source, idempotency_key=key
    )
    return Accepted(sub_id, label, duplicate=False)
