"""The operator's verbs on the command line: show, wait, stop, start, restart, release,
reload and reset, each a request on the control socket, each with `--json`.

Exit status, for every verb here: 0 done, 1 the daemon is unreachable or
refused (no such task, ...; the reason is printed), 2 bad arguments.
`wait` adds 3 (its --timeout passed first) and 4 (the task ended without
succeeding); `reload` exits 1 when the file has errors (nothing applied).

The socket is found from --socket, or from --config read leniently: a
config with errors still names its control socket (the daemon keeps
running on the config it loaded), so `status` and the other verbs keep
working while the file on disk is being fixed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factoryd.config.files import MAX_CONFIG_BYTES, read_regular_file
from factoryd.config.loader import load_config
from factoryd.config.tomltable import ConfigError
from factoryd.service import logtail
from factoryd.service.control import ControlError, call
from factoryd.service.reloaddiff import render_diff
from factoryd.units.durations import format_seconds, parse_duration
from factoryd.units.timefmt import iso

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_TIMEOUT, EXIT_UNSUCCESSFUL = 0, 1, 2, 3, 4


#: For `--help` and the man page.
EXIT_STATUS = (
    "Exit status: 0 done; 1 runtime failure (daemon unreachable, request refused, no arm "
    "chosen by route, reload with errors); 2 bad input (arguments, config, state file); "
    "wait adds 3 (its --timeout passed) and 4 (the task ended without succeeding)."
)


class VerbUsage(Exception):
    """Bad arguments: one line, exit 2."""


def socket_path(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The control socket, and a warning when the config file has errors."""
    if getattr(args, "socket", None):
        return Path(args.socket), None
    if not getattr(args, "config", None):
        raise VerbUsage("give --config FILE (to find the control socket) or --socket PATH")
    try:
        return load_config(args.config).daemon.control_socket, None
    except ConfigError as exc:
        path = _lenient_socket(Path(args.config))
        if path is None:
            raise
        return path, (
            f"{args.config} has {len(exc.problems)} error(s) (`factoryd check` lists them); "
            f"using its control socket {path}"
        )


def _lenient_socket(config: Path) -> Path | None:
    """`control_socket` (or `state_dir`/control.sock) from a config that does not load."""
    try:  # a FIFO or /dev/zero named as the config must not hang or fill memory
        text = read_regular_file(config, MAX_CONFIG_BYTES).decode("utf-8", "replace")
    except ConfigError:
        return None
    daemon: dict[str, Any] = {}
    try:
        data = tomllib.loads(text)
        if isinstance(data.get("daemon"), dict):
            daemon = data["daemon"]
    except (tomllib.TOMLDecodeError, RecursionError):  # broken, or nested past reason
        for key in ("control_socket", "state_dir"):
            found = re.search(rf'^\s*{key}\s*=\s*"([^"\n]+)"', text, re.MULTILINE)
            if found:
                daemon[key] = found.group(1)
    base = config.resolve().parent

    def path_of(value: Any) -> Path | None:
        if not isinstance(value, str) or not value:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    state = path_of(daemon.get("state_dir", "state"))
    return path_of(daemon.get("control_socket")) or (state / "control.sock" if state else None)


def request(args: argparse.Namespace, req: dict[str, Any], timeout: float = 30.0) -> Any:
    path, warning = socket_path(args)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return call(path, req, timeout)


def _out(args: argparse.Namespace, result: Any, text: str) -> None:
    print(json.dumps(result, indent=2) if args.json else text)


def cmd_status(args: argparse.Namespace) -> int:
    from factoryd.service.status import render_status

    r = request(args, {"op": "status"})
    _out(args, r, "" if args.json else render_status(r, ControlError))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    r = request(args, {"op": "cancel", "id": args.id})
    _out(args, r, f"{args.id} cancelled")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    r = request(args, {"op": "stop", "task": args.task})
    how = f"; stopping run {r['stopping_run']}" if r["stopping_run"] else ""
    _out(args, r, f"{args.task} stopped (until `factoryd start {args.task}`){how}")
    return EXIT_OK


def cmd_start(args: argparse.Namespace) -> int:
    r = request(args, {"op": "start", "task": args.task})
    if not r["started"]:
        text = f"{args.task} is already running (run {r['running']})"
    else:
        text = f"{args.task} started ({r['phase']})"
    _out(args, r, text)
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    r = request(args, {"op": "restart", "task": args.task})
    if r["stopping_run"]:
        text = f"{args.task}: stopping run {r['stopping_run']}; a new run starts when it ends"
    else:
        text = f"{args.task}: starting now"
    _out(args, r, text)
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    r = request(args, {"op": "reset", "task": args.task})
    _out(args, r, f"{'submission' if r.get('submission') else 'task'} {args.task} reset")
    return EXIT_OK


def cmd_release(args: argparse.Namespace) -> int:
    r = request(args, {"op": "release", "name": args.name})
    if r["kind"] == "pool":
        was = f"limited until {r['limited_until']}" if r["limited_until"] else "not limited"
        text = f"pool {args.name} released (was {was}; {r['strikes']} strike(s) cleared)"
    else:
        held = [f"limited until {r['limited_until']}"] if r["limited_until"] else []
        held += [f"resting until {r['backoff_until']}"] if r["backoff_until"] else []
        text = f"arm {args.name} released (was {', '.join(held) or 'available'})"
        if r["pools_still_limited"]:
            text += f"; its pools still limited: {', '.join(r['pools_still_limited'])}"
    _out(args, r, text)
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    r = request(args, {"op": "reload", "dry_run": args.dry_run})
    if not r["ok"]:
        lines = [f"error: {e}" for e in r["errors"]]
        lines.append("nothing applied: the daemon keeps its running config")
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print("\n".join(lines), file=sys.stderr)
        return EXIT_FAIL
    head = "would change" if args.dry_run else "reloaded"
    _out(args, r, "\n".join([f"{head}:", *("  " + line for line in render_diff(r["changes"]))]))
    return EXIT_OK


def _money(value: Any) -> str:
    return "-" if value is None else f"${value:.4f}"


def render_show(r: dict[str, Any]) -> str:
    if "run" in r:
        run = r["run"]
        return "\n".join(f"{k}: {'-' if v is None else v}" for k, v in run.items() if k != "usage")
    lines = []
    t, sub = r.get("task"), r.get("submission")
    if t:
        lines.append(
            f"{r['name']}  {t['kind']} ({t['source']})  {t['phase']}: {t['reason']}"
            + ("  [held by operator]" if t["held"] else "")
        )
        lines.append(
            f"runs {t['runs']}  restarts {t['restarts']}  arm {t['arm'] or '-'}  "
            f"run {t['run_id'] or '-'}  pid {t['pid'] or '-'}"
        )
        lines.append(f"log {t['log_path'] or '-'}")
    elif r.get("journal_task"):
        jt = r["journal_task"]
        lines.append(f"{r['name']}  (not in the daemon now) {jt['phase']}: {jt['reason']}")
    if sub:
        lines.append(
            f"submission: template {sub['template']}  state {sub['state']}"
            + (f" ({sub['reason']})" if sub["reason"] else "")
            + f"  submitted {iso(sub['created_at'])}"
            + (f"  key {sub['idempotency_key']}" if sub["idempotency_key"] else "")
        )
    runs = r.get("runs") or []
    lines.append("")
    if not runs:
        lines.append("no runs in the journal")
        return "\n".join(lines)
    head = ["RUN", "OUTCOME", "ARM", "STARTED", "DURATION", "TOKENS", "COST", "REASON", "LOG"]
    rows = [
        [
            x["run_id"],
            x["outcome"] or x["state"],
            x["arm"],
            iso(x["started_at"]),
            "-" if x["duration"] is None else format_seconds(x["duration"]),
            "-" if x["tokens"] is None else str(x["tokens"]),
            _money(x["cost"]),
            (x["reason"] or "-")[:50],
            x["log_path"] or "-",
        ]
        for x in runs
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    for row in [head, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    lines += [_workspace_line(x) for x in runs if x.get("workspace")]
    return "\n".join(lines)


def _workspace_line(run: dict[str, Any]) -> str:
    ws = run["workspace"]
    kept = "kept" if ws.get("branch_kept") else "deleted by its keep policy"
    commit = (ws.get("commit") or "-")[:12]
    return f"{run['run_id']}: workspace branch {ws.get('branch')} at {commit} ({kept})"


def cmd_show(args: argparse.Namespace) -> int:
    r = request(args, {"op": "show", "target": args.target, "limit": args.limit})
    _out(args, r, render_show(r) if not args.json else "")
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    try:
        limit = None if args.timeout is None else parse_duration(args.timeout)
    except ValueError as exc:
        raise VerbUsage(f"--timeout: {exc}") from None
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        left = 20.0 if deadline is None else max(0.0, deadline - time.monotonic())
        r = request(args, {"op": "wait", "id": args.id, "timeout": min(left, 20.0)}, left + 15.0)
        if r["done"] or (deadline is not None and time.monotonic() >= deadline):
            break
    if not r["done"]:
        _out(args, r, f"{args.id} is still {r['phase']} ({r['reason']})")
        return EXIT_TIMEOUT
    last = r.get("last_run") or {}
    extra = f"; last run {last['run_id']} on {last['arm']}" if last else ""
    _out(args, r, f"{args.id} {r['phase']}: {r['reason']}{extra}")
    return EXIT_OK if r["phase"] == "succeeded" else EXIT_UNSUCCESSFUL


def cmd_logs(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise VerbUsage("-n: expected 0 or more lines")
    return logtail.logs(args, lambda req: request(args, req))


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except VerbUsage as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ControlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAIL
        except BrokenPipeError:
            raise  # the reader of stdout went away: main ends quietly
        except OSError as exc:
            print(f"error: control socket: {exc}", file=sys.stderr)
            return EXIT_FAIL

    return run


def register_completion(sub: Any, root: argparse.ArgumentParser) -> None:
    """`factoryd completion bash|zsh`: a completion script generated from the parser
    (shtab), so it never lags behind the verbs."""

    def cmd(args: argparse.Namespace) -> int:
        import shtab

        print(shtab.complete(root, shell=args.shell))
        return EXIT_OK

    help = "print a shell completion script (bash: source it; zsh: put it on $fpath as _factoryd)"
    p = sub.add_parser("completion", help=help, description=help)
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=cmd)


def register(
    sub: Any, control_args: Callable[[argparse.ArgumentParser], None]
) -> dict[str, argparse.ArgumentParser]:
    """Add the verbs to the `factoryd` parser's subcommands."""
    made = {}

    def verb(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help)
        control_args(p)
        p.add_argument("--json", action="store_true", help="print the answer as JSON")
        p.set_defaults(func=_guard(fn))
        made[name] = p
        return p

    verb("status", cmd_status, "show tasks, pools and arms of the running daemon")
    p = verb("cancel", cmd_cancel, "cancel a submitted (or any) task; stops its run")
    p.add_argument("id")
    p = verb("logs", cmd_logs, "print a run's output log (the task's current or last run)")
    p.add_argument("target", metavar="TASK|RUN_ID")
    p.add_argument("-n", "--lines", type=int, default=20, help="last N lines (default 20)")
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing, across restarts of the task"
    )
    p = verb("show", cmd_show, "a task or submission and its run history from the journal")
    p.add_argument("target", metavar="TASK|ID|RUN_ID")
    p.add_argument("--limit", type=int, default=20, help="runs to show (default 20)")
    p = verb("wait", cmd_wait, "block until a submission ends; exit status by its outcome")
    p.add_argument("id")
    p.add_argument("--timeout", help="give up after this long (e.g. 30s, 5m): exit 3")
    p = verb("stop", cmd_stop, "stop a task and hold it stopped (across restarts) until start")
    p.add_argument("task", metavar="TASK|ID")
    p = verb("start", cmd_start, "lift a stop hold; run a task that ended again")
    p.add_argument("task", metavar="TASK|ID")
    p = verb("restart", cmd_restart, "stop the current run and start a new one now")
    p.add_argument("task", metavar="TASK|ID")
    p = verb("reset", cmd_reset, "let a task or submission that gave up, failed or ended run again")
    p.add_argument("task", metavar="TASK|ID")
    p = verb("release", cmd_release, "lift a pool's limit hold or an arm's cooldown now")
    p.add_argument("name", metavar="POOL|ARM")
    p = verb("reload", cmd_reload, "reload the config file and print what changed")
    p.add_argument("--dry-run", action="store_true", help="only print what would change")
    return made
