"""Where log lines are written: one write per turn of the event loop while it runs.

structlog's WriteLogger writes and flushes every line: a run's three lines
(route.decision, run.started, run.finished) were three writes, each a trip
through the text and buffer layers and a system call, in a burst of
hundreds of runs a second. While the reconciler's loop runs, a line logged
on the loop's thread is kept until the end of the loop's current turn and
written with the others of that turn in one write (a turn is a few
milliseconds in a burst, microseconds when idle: tailing the log sees no
difference). Off the loop, or before and after it runs, every line is
written at once, as before.

A line is lost only if the process dies by SIGKILL within the turn that
logged it; leaving the loop, normally or by an exception, writes what is
kept first. A log that cannot be written (a full disk, journald gone) does
not take the daemon down: the lines are counted in `dropped` and the next
write tries again (structlog's logger raised into whatever was logging).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any, TextIO


class LineWriter:
    """A structlog logger: writes each rendered line to `stream`, or gathers it
    for the loop's turn while `per_turn` is in force on the calling thread."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        #: Lines that could not be written (and were given up).
        self.dropped = 0

    def msg(self, message: str) -> None:
        if self._loop_thread == threading.get_ident():
            pending = self._pending
            pending.append(message)
            if len(pending) == 1 and self._loop is not None:
                try:
                    self._loop.call_soon(self.flush)
                except RuntimeError:  # the loop is closing: no later turn
                    self.flush()
            return
        with self._lock:
            self._write(message + "\n", 1)

    log = debug = info = warn = warning = err = error = critical = fatal = exception = msg
    failure = msg

    def flush(self) -> None:
        """Write the lines gathered so far (on the loop's thread)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        text = "\n".join(pending) + "\n"
        with self._lock:
            self._write(text, len(pending))

    def _write(self, text: str, lines: int) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # ValueError: the stream was closed
            self.dropped += lines

    @contextlib.contextmanager
    def per_turn(self) -> Iterator[None]:
        """Gather lines logged on this thread's running loop until each turn ends."""
        loop = asyncio.get_running_loop()
        self.flush()
        self._loop, self._loop_thread = loop, threading.get_ident()
        try:
            yield
        finally:
            self._loop = self._loop_thread = None
            self.flush()

    def __repr__(self) -> str:
        return f"<LineWriter({self._stream!r})>"


class LineWriterFactory:
    """structlog's logger factory: every logger writes through the one LineWriter."""

    def __init__(self, stream: TextIO) -> None:
        self.writer = LineWriter(stream)

    def __call__(self, *_args: Any) -> LineWriter:
        return self.writer
