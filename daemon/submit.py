"""Submitted work: turning a request (template + overrides, or a full spec)
into a durable one-shot task, from the control socket or the spool directory.

A request is validated against the config in force before anything is
written; once it is in the journal it is acknowledged, and a restart finds
it there. An idempotency key makes a retried submission return the task it
already created instead of queueing the same work twice.
"""

from __future__ import annotations

import sqlite3
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from daemon import journal as j
from daemon.config import Config, ConfigError, parse_task_override
from daemon.launch import new_run_id
from daemon.taskspec import TaskSpec

if TYPE_CHECKING:
    from daemon.reconciler import Reconciler

REQUEST_KEYS = {"template", "set", "spec", "idempotency_key", "name"}


class SubmitError(Exception):
    """A request that cannot be accepted; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Accepted:
    id: str
    label: str
    duplicate: bool


def build_spec(
    config: Config, request: dict[str, Any], sub_id: str, where: str
) -> tuple[TaskSpec, str]:
    """Validate a request against `config`; return the task spec and its metric label."""
    unknown = set(request) - REQUEST_KEYS
    if unknown:
        raise SubmitError(f"{where}: unknown request key(s): {', '.join(sorted(unknown))}")
    template = request.get("template")
    if template is not None and not isinstance(template, str):
        raise SubmitError(f"{where}: template: expected a string")
    if "spec" in request:
        if template is not None or "set" in request:
            raise SubmitError(f"{where}: give either spec, or template with set")
        data = request["spec"]
    else:
        if template is None:
            raise SubmitError(f"{where}: give a template (with optional set) or a full spec")
        data = request.get("set", {})
    if not isinstance(data, dict):
        raise SubmitError(f"{where}: expected a table of task keys")
    data = dict(data)
    data.pop("name", None)
    if template is None:
        data.setdefault("kind", "oneshot")
    data["name"] = sub_id
    try:
        spec = parse_task_override(config, data, template=template, where=where)
    except ConfigError as exc:
        raise SubmitError("; ".join(f"{p.key}: {p.message}" for p in exc.problems)) from None
    return spec, template or "adhoc"


def _idem_key(request: dict[str, Any]) -> str | None:
    key = request.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 256):
        raise SubmitError("idempotency_key: expected a non-empty string of at most 256 chars")
    return key


async def submit(rec: Reconciler, request: dict[str, Any], source: str, where: str) -> Accepted:
    """Validate, journal (committed), then hand to the loop. Raises SubmitError."""
    journal = rec.store.journal
    if journal is None:
        raise SubmitError("submissions need a journal (state_dir)")
    key = _idem_key(request)
    if key is not None:
        existing = await anyio.to_thread.run_sync(journal.submission_by_key, key)
        if existing is not None:
            return Accepted(existing.id, existing.label, duplicate=True)
    sub_id = "s-" + new_run_id(rec.clock.wall())
    spec, label = build_spec(rec.config, request, sub_id, where)
    try:
        await journal.apply(
            [j.op_submission(sub_id, key, label, request, source, rec.clock.wall())],
            durable=True,
        )
    except sqlite3.IntegrityError:
        existing = journal.submission_by_key(key) if key else None
        if existing is None:
            raise
        return Accepted(existing.id, existing.label, duplicate=True)
    await rec.call(lambda: rec.add_submission(spec, label))
    rec.metrics.submissions.labels(source, "accepted").inc()
    rec.log.info("submission.accepted", id=sub_id, label=label, source=source, idempotency_key=key)
    return Accepted(sub_id, label, duplicate=False)


def read_spool_file(path: Path) -> dict[str, Any]:
    """A spool file is TOML: request keys (template/set/spec/idempotency_key)."""
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SubmitError(f"{path.name}: invalid UTF-8 at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SubmitError(f"{path.name}: invalid TOML: {exc}") from None
    data.setdefault("idempotency_key", f"spool:{path.name}")
    return data


async def watch_spool(rec: Reconciler, spool: Path, interval: float = 2.0) -> None:
    """Poll the spool directory; accepted files are removed (the journal has them),
    bad ones move to `rejected/` with a `.error` file beside them."""
    spool.mkdir(parents=True, exist_ok=True)
    rejected = spool / "rejected"
    rejected.mkdir(exist_ok=True)
    while True:
        for path in sorted(spool.glob("*.toml")):
            if path.name.startswith("."):
                continue
            await _take(rec, path, rejected)
        await anyio.sleep(interval)


async def _take(rec: Reconciler, path: Path, rejected: Path) -> None:
    try:
        request = read_spool_file(path)
        accepted = await submit(rec, request, "spool", path.name)
    except (SubmitError, OSError) as exc:
        rec.metrics.submissions.labels("spool", "rejected").inc()
        rec.log.warning("spool.rejected", file=path.name, error=str(exc))
        target = rejected / path.name
        try:
            path.replace(target)
            target.with_name(target.name + ".error").write_text(str(exc) + "\n")
        except OSError as move_exc:
            rec.log.error("spool.quarantine_failed", file=path.name, error=str(move_exc))
        return
    rec.log.info("spool.accepted", file=path.name, id=accepted.id, duplicate=accepted.duplicate)
    try:
        path.unlink()
    except OSError as exc:
        rec.log.error("spool.remove_failed", file=path.name, error=str(exc))
