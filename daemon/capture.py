"""Output capture: a capped per-run log file and a lossless line feed for the parser.

The parser is called synchronously for every line as the bytes arrive, so
nothing is queued and nothing is lost. Backpressure is the pipe itself: if
an agent writes faster than we read, its `write` blocks, never our loop.
Memory per run is bounded by one read chunk plus one line (`max_line`);
a longer line is cut, counted, and its rest skipped up to the next newline.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import anyio

READ_CHUNK = 256 * 1024
MAX_LINE = 1024 * 1024


class RunLog:
    """One log file per run, shared by stdout and stderr, capped at `cap` bytes."""

    def __init__(self, path: Path, cap: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.cap = cap
        self.written = 0
        self.dropped = 0
        self._file: BinaryIO | None = path.open("ab", buffering=0)

    def write(self, data: bytes) -> None:
        if self._file is None:
            self.dropped += len(data)
            return
        room = self.cap - self.written
        if room >= len(data):
            self._file.write(data)
            self.written += len(data)
            return
        if room > 0:
            self._file.write(data[:room])
            self.written += room
        self.dropped += len(data) - max(room, 0)
        self._file.write(b"\n[factoryd: log capped; further output is counted, not kept]\n")
        self._file.close()
        self._file = None

    def note(self, text: str) -> None:
        """A line from factoryd itself, outside the cap (it is small and rare)."""
        if self._file is not None:
            self._file.write(f"[factoryd] {text}\n".encode())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LineSplitter:
    """Bytes in, complete lines out; long lines are cut at `max_line` and counted."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False
        self.truncated = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                self._buf += data[start:nl]
                lines.append(bytes(self._buf))
            self._buf.clear()
            start = nl + 1
        if not self._skipping:
            self._buf += data[start:]
            if len(self._buf) > self.max_line:
                lines.append(bytes(self._buf[: self.max_line]))
                self._buf.clear()
                self._skipping = True
                self.truncated += 1
        return lines

    def flush(self) -> bytes | None:
        if self._skipping or not self._buf:
            return None
        tail = bytes(self._buf)
        self._buf.clear()
        return tail


async def pump(
    fd: int,
    log: RunLog,
    on_line: Callable[[bytes], None],
    on_data: Callable[[], None],
) -> None:
    """Read `fd` to EOF: every chunk to the log, every line to `on_line`."""
    splitter = LineSplitter()
    while True:
        # Waiting before every read also yields to the loop, so a flood on
        # one run cannot starve the others or the reconciler.
        await anyio.wait_readable(fd)
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            continue
        except OSError:
            break
        if not data:
            break
        on_data()
        log.write(data)
        for line in splitter.feed(data):
            on_line(line)
    tail = splitter.flush()
    if tail is not None:
        on_line(tail)


def close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
