"""The operator's control operations: logs, show, wait, stop, start, restart, release,
reload (with what it changes), and reset for submissions too.

Each handler answers one control-socket request. What changes state runs
inside the loop (reconcile/operator.py, through the command queue); what
only reads answers on the spot, from memory or from the journal's history
(state/history.py, on a worker thread). Actions are logged with who asked:
the peer's uid and pid from SO_PEERCRED, which the control socket adds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from factoryd.config.loader import load_config
from factoryd.config.model import Config
from factoryd.config.submission import SubmitError, build_spec
from factoryd.config.tomltable import ConfigError
from factoryd.core.lifecycle import TERMINAL
from factoryd.reconcile import operator
from factoryd.service import control
from factoryd.service.reloaddiff import config_diff
from factoryd.service.status import build_status
from factoryd.state import history
from factoryd.state import journal as j

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler

#: Longest one `wait` request blocks; the client asks again until its own timeout.
WAIT_CHUNK = 20.0


def _name(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value or len(value) > 512:
        raise control.ControlError(f'this request needs "{key}": NAME')
    return value


def handlers(rec: Reconciler, loader: Callable[[], Config]) -> dict[str, control.Handler]:
    """The operator's ops, for the control socket; `loader` reloads (as SIGHUP)."""

    def journal_path() -> Path:
        journal = rec.batch.journal
        if journal is None:
            raise control.ControlError("this daemon keeps no journal (no history)")
        return journal.path

    async def read(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, journal_path(), *args)

    async def in_loop(fn: Callable[[], Any]) -> Any:
        try:
            return await rec.run_in_loop(fn)
        except operator.OperatorError as exc:
            raise control.ControlError(str(exc)) from None

    def who(req: dict[str, Any]) -> dict[str, Any]:
        peer = operator.Who.of(req)
        return {"uid": peer.uid, "pid": peer.pid}

    async def logs(req: dict[str, Any]) -> Any:
        target = _name(req, "target")
        rt = rec.tasks.get(target)
        if rt is not None:
            run = rec.runs.get(rt.run) if rt.run else None
            if run is not None:
                return _log_answer(target, run.run_id, run.log_path, live=True, phase=rt.phase)
            if rt.last_log:
                return _log_answer(target, None, rt.last_log, live=False, phase=rt.phase)
        for run in rec.runs.values():
            if run.run_id == target:
                return _log_answer(run.task, run.run_id, run.log_path, live=True, phase=None)
        found = await read(history.run, target)
        if found is None:
            last = await read(history.runs_of, target, 1)
            found = last[0] if last else None
        if found is None:
            if rt is not None:
                return _log_answer(target, None, None, live=False, phase=rt.phase)
            raise control.ControlError(f"no task, submission or run named {target!r}")
        phase = rt.phase if rt is not None else None
        return _log_answer(
            found["task"], found["run_id"], found["log_path"], live=False, phase=phase
        )

    async def show(req: dict[str, Any]) -> Any:
        target = _name(req, "target")
        limit = req.get("limit", 20)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise control.ControlError("limit: expected a whole number from 1 to 1000")
        rt = rec.tasks.get(target)
        answer: dict[str, Any] = {"name": target, "task": None, "submission": None}
        if rt is not None:
            run = rec.runs.get(rt.run) if rt.run else None
            answer["task"] = {
                "kind": str(rt.spec.kind),
                "source": rt.source,
                "label": rt.label,
                "phase": str(rt.phase),
                "reason": rt.reason,
                "held": target in rec.table.held,
                "runs": rt.runs,
                "restarts": rt.restarts,
                "arm": run.arm if run else rt.last_arm,
                "run_id": run.run_id if run else None,
                "pid": run.pid if run else None,
                "log_path": rt.last_log,
            }
        if rec.batch.journal is not None:
            answer["submission"] = await read(history.submission, target)
            if answer["submission"]:
                del answer["submission"]["request"]  # may carry env values: not shown
            answer["runs"] = await read(history.runs_of, target, limit)
            if rt is None and answer["submission"] is None:
                found = await read(history.run, target)
                if found is not None:
                    return {"name": target, "run": found}
                answer["journal_task"] = await read(history.task_state, target)
        else:
            answer["runs"] = []
        if rt is None and not answer["submission"] and not answer.get("journal_task"):
            raise control.ControlError(f"no task, submission or run named {target!r}")
        return answer

    async def end_state(target: str) -> dict[str, Any] | None:
        rt = rec.tasks.get(target)
        if rt is not None:
            done = rt.phase in TERMINAL and rt.run is None
            return {"done": done, "phase": str(rt.phase), "reason": rt.reason}
        sub = await read(history.submission, target)
        if sub is None:
            return None
        return {"done": sub["state"] != "accepted", "phase": sub["state"], "reason": sub["reason"]}

    async def wait(req: dict[str, Any]) -> Any:
        target = _name(req, "id")
        timeout = req.get("timeout", WAIT_CHUNK)
        if not isinstance(timeout, int | float) or timeout < 0:
            raise control.ControlError("timeout: expected seconds (a number, 0 or more)")
        deadline = time.monotonic() + min(float(timeout), WAIT_CHUNK)
        while True:
            state = await end_state(target)
            if state is None:
                raise control.ControlError(f"no task or submission named {target!r}")
            if state["done"] or time.monotonic() >= deadline:
                break
            await anyio.sleep(0.05)
        if state["done"] and rec.batch.journal is not None:
            runs = await read(history.runs_of, target, 1)
            state["last_run"] = runs[0] if runs else None
        return {"id": target, **state}

    async def stop(req: dict[str, Any]) -> Any:
        name = _name(req, "task")
        result = await in_loop(lambda: operator.hold(rec, name))
        rec.logger.info("operator.stop", task=name, **who(req))
        return result

    async def start(req: dict[str, Any]) -> Any:
        name = _name(req, "task")
        result = await in_loop(lambda: operator.start(rec, name))
        rec.logger.info("operator.start", task=name, **who(req))
        return result

    async def restart(req: dict[str, Any]) -> Any:
        name = _name(req, "task")
        result = await in_loop(lambda: operator.restart(rec, name))
        rec.logger.info("operator.restart", task=name, run_id=result["stopping_run"], **who(req))
        return result

    async def release(req: dict[str, Any]) -> Any:
        name = _name(req, "name")

        def lift() -> dict[str, Any]:
            lifted = operator.release(rec.engine, name, rec.clock.wall())
            rec.batch.routing_changed()
            rec.wake("command")
            return lifted

        result = await in_loop(lift)
        rec.logger.warning("operator.release", target=name, lifted=result, **who(req))
        return result

    async def reset(req: dict[str, Any]) -> Any:
        name = _name(req, "task")
        if await rec.run_in_loop(lambda: rec.table.reset(name)):
            rec.logger.info("operator.reset", task=name, **who(req))
            return {"task": name, "reset": True}
        journal = rec.batch.journal
        sub = None if journal is None else await read(history.submission, name)
        if journal is None or sub is None:
            raise control.ControlError(f"no task or submission named {name!r}")
        try:
            spec, label = build_spec(rec.config, sub["request"], name, f"submission {name}")
        except SubmitError as exc:
            raise control.ControlError(f"cannot run {name} again: {exc}") from None
        await journal.apply(
            [j.op_submission_state(name, "accepted", "reset by operator", rec.clock.wall())],
            durable=True,
        )
        await rec.run_in_loop(lambda: rec.table.add_submission(spec, label))
        rec.logger.info("operator.reset", task=name, submission=True, **who(req))
        return {"task": name, "reset": True, "submission": True}

    async def reload(req: dict[str, Any]) -> Any:
        if req.get("dry_run"):
            try:
                config = await anyio.to_thread.run_sync(load_config, rec.config.path)
            except ConfigError as exc:
                return {"ok": False, "dry_run": True, "errors": [str(p) for p in exc.problems]}
            return {"ok": True, "dry_run": True, "changes": config_diff(rec.config, config)}

        def apply() -> dict[str, Any]:
            old = rec.config
            result = dict(rec.reload_now(loader))
            if result["ok"]:
                result["changes"] = config_diff(old, rec.config)
            return result

        rec.logger.info("operator.reload", **who(req))
        return {"dry_run": False, **await rec.run_in_loop(apply)}

    async def status(_req: dict[str, Any]) -> Any:
        result = build_status(rec)
        result["recent"] = list(rec.table.recent)
        if rec.batch.journal is not None:
            result["finished"] = await read(history.finished_submissions, 10)
        return result

    return {
        "status": status,
        "logs": logs,
        "show": show,
        "wait": wait,
        "stop": stop,
        "start": start,
        "restart": restart,
        "release": release,
        "reset": reset,
        "reload": reload,
    }


def _log_answer(
    task: str, run_id: str | None, path: Path | str | None, *, live: bool, phase: Any
) -> dict[str, Any]:
    if run_id is None and path is not None:
        run_id = Path(path).stem  # a run's log is LOG_DIR/TASK/RUN_ID.log
    return {
        "task": task,
        "run_id": run_id,
        "log_path": None if path is None else str(path),
        "live": live,
        "phase": None if phase is None else str(phase),
    }
