"""The `factoryd` command line: run, check, route, simulate, status, state, submit, ...

Exit status: 0 success, 1 runtime failure, 2 bad input (config, task, state
file, arguments). Errors are one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from factoryd import __version__
from factoryd.config.loader import load_config, parse_task_override
from factoryd.config.model import Config
from factoryd.config.tomltable import ConfigError
from factoryd.core.lifecycle import RestartBook, attempts_left
from factoryd.routing.engine import RoutingEngine
from factoryd.routing.snapshot import SnapshotError
from factoryd.service import verbs
from factoryd.service.fleetview import add_fleet_parser
from factoryd.units.timefmt import parse_iso

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit 2."""


class RuntimeFailure(Exception):
    """The command was fine but could not be carried out; exit 1."""


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from factoryd.service.preflight import claim

    config = _config(args)
    held = claim(config)  # one daemon per state dir: refused before the heavy imports

    import anyio

    from factoryd.service.boot import configure_logs
    from factoryd.service.daemon import Service
    from factoryd.state.schema import JournalError

    configure_logs(args.log_format or config.daemon.log_format, config.daemon.log_level)
    service = Service(config, state_lock=held)
    try:
        return anyio.run(service.run)
    except JournalError as exc:  # damaged or missing: one line, never a traceback
        raise RuntimeFailure(str(exc)) from None


def _socket(args: argparse.Namespace) -> Path:
    from factoryd.service.verbs import VerbUsage, socket_path

    try:
        path, warning = socket_path(args)  # a config with errors still names it
    except VerbUsage as exc:
        raise UsageError(str(exc)) from None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return path


def _control(args: argparse.Namespace, request: dict[str, Any]) -> Any:
    from factoryd.service.control import ControlError, call

    try:
        return call(_socket(args), request)
    except ControlError as exc:
        raise RuntimeFailure(str(exc)) from None
    except OSError as exc:
        raise RuntimeFailure(f"control socket: {exc}") from None


def cmd_state_dump(args: argparse.Namespace) -> int:
    print(json.dumps(_control(args, {"op": "state_dump"}), indent=2))
    return EXIT_OK


def _toml_value(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise UsageError(f"--set {text[:40]}...: nested too deeply") from None


def cmd_submit(args: argparse.Namespace) -> int:
    from factoryd.config.files import MAX_CONFIG_BYTES, read_regular_file
    from factoryd.config.loader import parse_toml

    if args.file:
        raw = read_regular_file(Path(args.file), MAX_CONFIG_BYTES)
        try:
            data = parse_toml(raw.decode("utf-8"), args.file)
        except UnicodeDecodeError as exc:
            raise UsageError(f"{args.file}: cannot read: {exc}") from None
        request: dict[str, Any] = (
            data if {"template", "spec", "set"} & set(data) else {"spec": data}
        )
    else:
        overrides: dict[str, Any] = {}
        for item in args.set or ():
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--set {item!r}: expected KEY=VALUE")
            overrides[key.strip()] = _toml_value(value.strip())
        request = {"template": args.template, "set": overrides}
    if args.idempotency_key:
        request["idempotency_key"] = args.idempotency_key
    result = _control(args, {"op": "submit", **request})
    note = " (already submitted)" if result.get("duplicate") else ""
    if result.get("duplicate") and result.get("state", "accepted") != "accepted":
        note = f" (already submitted; it has ended: {result['state']})"
    print(f"{result['id']}{note}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from factoryd.reconcile.armsecrets import missing_secrets

    config = _config(args)
    print(config.summary())
    for arm, what in missing_secrets(config, os.environ).items():
        # The daemon's environment may differ; there the arm would be unavailable.
        print(f"warning: arm {arm}: {what} (the daemon keeps it out: secret_missing)")
    return EXIT_OK


def _journal_path(args: argparse.Namespace) -> Path:
    return _config(args).daemon.state_dir / "journal.db"


def cmd_journal_check(args: argparse.Namespace) -> int:
    from factoryd.state import salvage
    from factoryd.state.schema import JournalError

    try:
        report = salvage.check(_journal_path(args))
    except JournalError as exc:
        raise RuntimeFailure(str(exc)) from None
    print(report.summary() if report.absent else f"{report.summary()}: OK")
    return EXIT_OK


def cmd_journal_recover(args: argparse.Namespace) -> int:
    from factoryd.state import salvage
    from factoryd.state.schema import JournalError

    try:
        report = salvage.recover(_journal_path(args))
    except JournalError as exc:
        raise RuntimeFailure(str(exc)) from None
    print(f"recovered {report.summary()}")
    return EXIT_OK


#: A routing state snapshot is a few megabytes for hundreds of arms.
MAX_STATE_BYTES = 64 * 1024 * 1024


def _read_json(path: str, what: str) -> Any:
    from factoryd.config.files import read_regular_file

    try:
        if path == "-":
            text = sys.stdin.read()
        else:  # a regular file of bounded size: never a FIFO that hangs or /dev/zero
            text = read_regular_file(Path(path), MAX_STATE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read {what}: {exc}") from None
    except ConfigError as exc:  # not a regular file, too large, unreadable
        raise UsageError(f"{path}: cannot read {what}: {exc.problems[0].message}") from None
    return _json(text, f"{path}: {what}")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply") from None


def cmd_route(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.task is not None:
        spec = next((t for t in config.tasks if t.name == args.task), None)
        if spec is None:
            spec = config.templates.get(args.task)
        if spec is None:
            known = ", ".join([t.name for t in config.tasks] + list(config.templates))
            raise UsageError(f"--task: no task or template named {args.task!r} (known: {known})")
    else:
        data = _json(args.task_json, "--task-json")
        if not isinstance(data, dict):
            raise UsageError("--task-json: expected a JSON object of task attributes")
        data.setdefault("name", "adhoc")
        spec = parse_task_override(
            config, data, template=None, where="--task-json", route_only=True
        )
    engine = RoutingEngine.from_config(config)
    now = time.time()
    if args.state:
        try:
            taken = engine.load_snapshot(_read_json(args.state, "state"))
        except SnapshotError as exc:
            raise UsageError(f"{args.state}: {exc}") from None
        if taken is not None and args.now is None:
            now = taken
    if args.now is not None:
        try:
            now = parse_iso(args.now)
        except ValueError:
            raise UsageError(f"--now: expected an RFC 3339 time, got {args.now!r}") from None
    # as the daemon routes the task's first run, with its whole restart budget
    # ahead; with --exclude (a later run) the budget left is unknown
    left = None if args.exclude else attempts_left(spec, RestartBook.empty(), now)
    req = replace(spec.route, attempts_left=left)
    decision = engine.route(req, now, exclude=args.exclude or (), force=args.force)
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
    else:
        print(decision.render())
    return EXIT_OK if decision.arm else EXIT_FAIL


def cmd_simulate(args: argparse.Namespace) -> int:
    from factoryd.simulate.command import SimulateError, simulate_results

    try:
        text, results = simulate_results(
            args.config, args.scenario, seeds=args.seeds, as_json=args.json,
            policies=(args.policies or "").split(","), plot_path=args.plot,
        )  # fmt: skip
    except SimulateError as exc:
        raise UsageError(str(exc)) from None
    print(text)
    failed = args.check and (results.verdict is None or not results.verdict.holds)
    return EXIT_FAIL if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factoryd",
        description="Keep CLI coding agents running, routed by policy.",
        epilog=verbs.EXIT_STATUS,
    )
    parser.add_argument("--version", action="version", version=f"factoryd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("--config", "-c", required=True)
    p.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=None,
        help="override [daemon].log_format",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config and print a summary")
    p.add_argument("--config", "-c", required=True)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("journal", help="check a stopped daemon's journal, or salvage it")
    journal_sub = p.add_subparsers(dest="journal_command", required=True)
    jp = journal_sub.add_parser("check", help="integrity and row counts (exit 1 if damaged)")
    jp.add_argument("--config", "-c", required=True)
    jp.set_defaults(func=cmd_journal_check)
    jp = journal_sub.add_parser(
        "recover", help="salvage readable rows into a new journal; the damaged one is kept"
    )
    jp.add_argument("--config", "-c", required=True)
    jp.set_defaults(func=cmd_journal_recover)

    p = sub.add_parser("route", help="explain the routing decision for a task, running nothing")
    p.add_argument("--config", "-c", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", help="a task or template name from the config")
    which.add_argument("--task-json", help="task attributes as a JSON object")
    p.add_argument("--state", help="a routing state snapshot (JSON; '-' for stdin)")
    p.add_argument("--now", help="decide as of this RFC 3339 time (default: the snapshot's)")
    p.add_argument("--exclude", action="append", help="an arm to leave out (repeatable)")
    p.add_argument("--force", help="route to this arm only, still checking it")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.set_defaults(func=cmd_route)

    def control_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="config file (to find the control socket)")
        p.add_argument("--socket", help="control socket path (overrides --config)")

    add_fleet_parser(sub, control_args, _control)  # `factoryd fleet status`

    p = sub.add_parser("state", help="routing state of the running daemon")
    state_sub = p.add_subparsers(dest="state_command", required=True)
    dump = state_sub.add_parser("dump", help="print the snapshot that `route --state` reads")
    control_args(dump)
    dump.set_defaults(func=cmd_state_dump)

    p = sub.add_parser("submit", help="queue a one-shot task (durable before this returns)")
    control_args(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--template", "-t", help="a [[templates]] name from the config")
    what.add_argument("--file", "-f", help="a TOML task spec (or template/set/spec request)")
    p.add_argument(
        "--set",
        "-s",
        action="append",
        metavar="KEY=VALUE",
        help='override a task key (TOML value, e.g. argv=["make","test"])',
    )
    p.add_argument("--idempotency-key", "-k", help="a retried submit with this key runs once")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("simulate", help="play a scenario against the router, baselines, oracle")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--scenario", required=True, help="a scenario TOML (see scenarios/)")
    p.add_argument("--seeds", type=int, help="paired seeds (default: the scenario's)")
    p.add_argument("--policies", help="comma-separated policies (default: all)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the cost-success plane")
    p.add_argument("--check", action="store_true", help="exit 1 unless the default's verdict holds")
    p.set_defaults(func=cmd_simulate)

    verbs.register(sub, control_args)  # status cancel logs show wait stop start restart reset ...
    verbs.register_completion(sub, parser)
    return parser


def _internal_error(exc: BaseException) -> int:
    """A bug reached the top: one line, the traceback kept in a debug log."""
    import os
    import tempfile
    import traceback

    where = Path(tempfile.gettempdir()) / f"factoryd-debug-{os.getuid()}.log"
    text = "".join(traceback.format_exception(exc))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(where, flags, 0o600)
        with os.fdopen(fd, "a", errors="backslashreplace") as f:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()}\n{text}")
        pointer = f"the traceback is in {where}"
    except OSError:
        pointer = "set FACTORYD_DEBUG=1 to see the traceback"
    if os.environ.get("FACTORYD_DEBUG"):
        sys.stderr.write(text)
    first = (str(exc).splitlines() or [""])[0][:160]
    print(f"error: internal error: {type(exc).__name__} {first}; {pointer}", file=sys.stderr)
    return EXIT_FAIL


def main(argv: Sequence[str] | None = None) -> int:
    from factoryd.service.preflight import StartupError

    for stream in (sys.stdout, sys.stderr):  # names that are not UTF-8 print escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `factoryd logs ... | head`: the reader had enough
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # the last guard: no traceback reaches a user
        return _internal_error(exc)
