"""`factoryd logs`: print the end of a run's log, and follow a task across its restarts.

The daemon says which file (the task's current run, else its last one, or
the run asked for); the client reads it directly, on the same host, as the
daemon's user (the control socket is 0600). A run's log is created by its
first byte, so a missing file is a run that printed nothing yet.

With `-f` on a task, the client asks the daemon again whenever the file
stops growing: when a new run has started (a restart, a cron fire), it says
so on stderr and follows the new run's log from its first line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

#: How often a follower looks for new output, and asks which run is current.
POLL = 0.1
ASK_EVERY = 0.5


def tail_bytes(path: Path, lines: int) -> tuple[bytes, int]:
    """The last `lines` lines of a file and the offset where it ended."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            if lines == 0:
                return b"", end
            pos, data = end, b""
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return b"", 0
    parts = data.split(b"\n")
    if data.endswith(b"\n"):
        parts = parts[:-1]
    kept = parts[-lines:] if lines else []
    return b"".join(p + b"\n" for p in kept), end


class _Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out: BinaryIO = sys.stdout.buffer

    def write(self, run_id: str | None, data: bytes) -> None:
        if not data:
            return
        if self.as_json:
            for line in data.decode("utf-8", "replace").splitlines():
                print(json.dumps({"run_id": run_id, "line": line}), flush=True)
            return
        self.out.write(data)
        self.out.flush()


def logs(args: argparse.Namespace, ask: Callable[[dict[str, Any]], Any]) -> int:
    info = ask({"op": "logs", "target": args.target})
    printer = _Printer(args.json)
    path = Path(info["log_path"]) if info["log_path"] else None
    if path is None:
        print(f"{args.target}: no run has a log yet", file=sys.stderr)
    elif not path.exists() and not args.follow:
        print(
            f"{args.target}: run {info['run_id'] or ''} printed nothing ({path})", file=sys.stderr
        )
    data, offset = tail_bytes(path, args.lines) if path else (b"", 0)
    printer.write(info["run_id"], data)
    if not args.follow:
        return 0
    whole_task = info["run_id"] != args.target
    with contextlib.suppress(KeyboardInterrupt):
        _follow(args, ask, printer, info, path, offset, whole_task)
    return 0


def _follow(
    args: argparse.Namespace,
    ask: Callable[[dict[str, Any]], Any],
    printer: _Printer,
    info: dict[str, Any],
    path: Path | None,
    offset: int,
    whole_task: bool,
) -> None:
    run_id = info["run_id"]
    asked = time.monotonic()
    while True:
        if path is not None:
            try:
                with path.open("rb") as f:
                    if os.fstat(f.fileno()).st_size < offset:
                        offset = 0  # truncated: start over
                    f.seek(offset)
                    data = f.read(1 << 20)
            except FileNotFoundError:
                data = b""
            if data:
                offset += len(data)
                printer.write(run_id, data)
                continue
        if not whole_task:
            time.sleep(POLL)
            continue
        if time.monotonic() - asked >= ASK_EVERY:
            asked = time.monotonic()
            now = ask({"op": "logs", "target": args.target})
            new_path = Path(now["log_path"]) if now["log_path"] else None
            if new_path is not None and new_path != path:
                print(
                    f"==> {args.target}: run {now['run_id'] or '?'} ({new_path}) <==",
                    file=sys.stderr,
                    flush=True,
                )
                path, offset, run_id = new_path, 0, now["run_id"]
                continue
        time.sleep(POLL)
