"""Splitting a run's output into lines for its parser, with memory bounded per run.

A run may print anything, including a line of a gigabyte: the splitter keeps
at most one line (`max_line`) of a run's output in memory, cuts longer lines
and counts them, and hands a flood over as one block of complete lines so the
parser can check a whole read at C speed instead of line by line.
"""

from __future__ import annotations

#: The longest line kept whole; the rest of a longer one is skipped to its newline.
MAX_LINE = 1024 * 1024


class LineSplitter:
    """Bytes in, complete lines out; long lines are cut at `max_line` and counted."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False
        self.truncated = 0

    def feed(self, data: bytes) -> list[bytes]:
        parts = data.split(b"\n")
        tail = parts.pop()  # the unfinished last piece (b"" if data ended a line)
        lines: list[bytes] = []
        if parts:
            first = parts[0]
            if self._skipping:  # the rest of an over-long line: dropped
                self._skipping = False
                parts = parts[1:]
            elif self._buf:
                self._buf += first
                parts[0] = bytes(self._buf)
            self._buf.clear()
            lines = parts
            if lines and max(map(len, lines)) > self.max_line:
                lines = [self._cut(line) for line in lines]
        if not self._skipping:
            self._buf += tail
            if len(self._buf) > self.max_line:
                lines.append(bytes(self._buf[: self.max_line]))
                self._buf.clear()
                self._skipping = True
                self.truncated += 1
        return lines

    def feed_block(self, data: bytes) -> tuple[bytes, int]:
        """Like `feed`, but the complete lines come back joined by newlines, with
        their count: a flood is then checked as one block, never split at all."""
        last = data.rfind(b"\n")
        if (
            last >= 0
            and not self._skipping
            and len(self._buf) + last <= self.max_line  # no line can be over-long
        ):
            if self._buf:  # one copy of the chunk, not three
                block = b"".join((self._buf, memoryview(data)[:last]))
                self._buf.clear()
            else:
                block = data[:last]
            self._buf += data[last + 1 :]
            if len(self._buf) > self.max_line:
                # The unfinished last line is already too long: cut it as `feed` would.
                lines = [block, bytes(self._buf[: self.max_line])]
                self._buf.clear()
                self._skipping = True
                self.truncated += 1
                return b"\n".join(lines), block.count(b"\n") + 2
            return block, block.count(b"\n") + 1
        lines = self.feed(data)
        return b"\n".join(lines), len(lines)

    def _cut(self, line: bytes) -> bytes:
        if len(line) <= self.max_line:
            return line
        self.truncated += 1
        return line[: self.max_line]

    def flush(self) -> bytes | None:
        if self._skipping or not self._buf:
            return None
        tail = bytes(self._buf)
        self._buf.clear()
        return tail
