"""One run's log: its tail, then what is appended, as Server-Sent Events.

The log file is found from the daemon's own records (the live run, else the
journal), never from a path in the request. Growth is read by checking the
file's size twice a second on the server, only while a page follows it;
nothing is kept per follower but an offset.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
DEFAULT_TAIL = 16 * 1024
MAX_TAIL = 256 * 1024
#: Most bytes sent in one event while following.
MAX_CHUNK = 64 * 1024
FOLLOW_EVERY = 0.5


def log_path(rec: Reconciler, journal: Path, run_id: str) -> Path | None:
    if not RUN_ID.match(run_id):
        return None
    run = rec.runs.get(run_id)
    if run is not None and run.log_path:
        return Path(run.log_path)
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT log_path FROM runs WHERE id = ?", (run_id,)).fetchone()
    except sqlite3.Error:
        row = None
    finally:
        db.close()
    return Path(row[0]) if row and row[0] else None


def read_tail(path: Path, size: int) -> tuple[str, int]:
    """The last `size` bytes (from a line start when cut) and the end offset."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        start = max(0, end - size)
        f.seek(start)
        data = f.read(end - start)
    if start > 0:
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else data
    return data.decode("utf-8", "replace"), end


def sse(event: str, text: str) -> bytes:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return (f"event: {event}\n" + "".join(f"data: {ln}\n" for ln in lines) + "\n").encode()


async def follow(resp: web.StreamResponse, path: Path, size: int) -> web.StreamResponse:
    """Write the tail to an open event stream, then each append, until the page leaves.

    A run's log is created by its first byte, so a page may follow a run
    before its log exists: that is an empty log, followed until it appears.
    Only a log that existed and then went away (pruned) ends the stream.
    """
    seen = True
    try:
        text, offset = await asyncio.to_thread(read_tail, path, size)
    except FileNotFoundError:
        text, offset, seen = "", 0, False
    except OSError as exc:
        await resp.write(sse("gone", f"cannot read the log: {exc.strerror}"))
        return resp
    await resp.write(sse("tail", text))
    idle = 0.0
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        await asyncio.sleep(FOLLOW_EVERY)
        try:
            now = path.stat().st_size
            seen = True
        except FileNotFoundError:
            if seen:
                await resp.write(sse("gone", "the log is gone (the run was pruned)"))
                return resp
            now = 0
        except OSError as exc:
            await resp.write(sse("gone", f"cannot read the log: {exc.strerror}"))
            return resp
        if now < offset:
            offset = 0  # truncated or replaced: start over
        if now == offset:
            idle += FOLLOW_EVERY
            if idle >= 15.0:
                idle = 0.0
                await resp.write(b": keep-alive\n\n")
            continue
        idle = 0.0
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(min(now - offset, MAX_CHUNK))
        except OSError:
            continue  # gone between stat and open: the next round says so
        offset += len(data)
        text = decoder.decode(data)
        if text:
            await resp.write(sse("append", text))
