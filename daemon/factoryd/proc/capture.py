"""Output capture: a capped per-run log file and a lossless line feed for the parser.

The parser is called synchronously for every line as the bytes arrive, so
nothing is queued and nothing is lost. Backpressure is the pipe itself: if
an agent writes faster than we read, its `write` blocks, never our loop.
Memory per run is bounded by one read chunk plus one line (`max_line`);
a longer line is cut, counted, and its rest skipped up to the next newline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

from factoryd.proc.linesplit import LineSplitter

READ_CHUNK = 256 * 1024


#: Told when a run's log cannot be written (`error`) and when it can again
#: (None), with the bytes counted as dropped meanwhile: once per run each
#: way, never per chunk. Set by the daemon's wiring (this layer logs nothing).
WriteFailureHook = Callable[[Path, "str | None", int], None]
write_failure_hook: WriteFailureHook | None = None

#: After a failed write, the next attempt waits this long (a full disk is
#: not asked again for every chunk a flooding run writes).
RETRY_AFTER = 1.0


class RunLog:
    """One log file per run, shared by stdout and stderr, capped at `cap` bytes.

    The file is created by the first byte the run writes (or the first note
    factoryd makes about it). A run that prints nothing costs no file: no
    inode, no directory update for the disk to journal (on a busy disk the
    largest part of starting a short command), and no empty file per run of
    a silent cron job. Its directory is made only when the open finds it
    missing, so an operator's cleanup of empty log directories is harmless.

    Output moves from the pipe to the file inside the kernel (`take`:
    splice, then the same bytes read back for the parser), so no byte is
    ever only in the daemon's memory: killed at any instant, each byte the
    run wrote is either in the file or still in the pipe, where the next
    daemon reads it. A write that fails (a full disk) never stops the run:
    its output is still drained from the pipe, counted as dropped, and the
    file is tried again a second later, so logging resumes by itself.
    """

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.cap = cap
        self.written = 0
        self.dropped = 0
        #: Why the file could not be written (the run goes on; bytes are counted).
        self.error: str | None = None
        #: True once the file exists (it was opened at least once).
        self.created = False
        self._fd: int | None = None
        self._pos = 0
        self._capped = False
        self._retry_at = 0.0
        self._failing = False
        self._failed_bytes = 0
        self._splice = True
        #: The file ends inside a line (a daemon killed mid-line, or output in
        #: flight): factoryd's own notes wait for its end, never split it.
        self._mid_line = False
        self._notes: list[bytes] = []

    # -- the file ----------------------------------------------------------

    def _open(self) -> int | None:
        if self._fd is not None:
            return self._fd
        if self._capped or (self._failing and time.monotonic() < self._retry_at):
            return None
        # Not O_APPEND: splice refuses such a file. The offset is ours to keep.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            try:
                fd = os.open(self.path, flags, 0o644)
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, flags, 0o644)
            self._pos = os.fstat(fd).st_size
            self._mid_line = self._pos > 0 and os.pread(fd, 1, self._pos - 1) != b"\n"
        except OSError as exc:
            self._failed(f"cannot write run log {self.path}: {exc.strerror or exc}", 0)
            return None
        self._fd = fd
        self.created = True
        return fd

    def _failed(self, error: str, lost: int) -> None:
        self.dropped += lost
        self._failed_bytes += lost
        self._retry_at = time.monotonic() + RETRY_AFTER
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if not self._failing:
            self._failing = True
            self.error = error
            if write_failure_hook is not None:
                write_failure_hook(self.path, error, 0)

    def _succeeded(self) -> None:
        if self._failing:
            self._failing = False
            if write_failure_hook is not None:
                write_failure_hook(self.path, None, self._failed_bytes)
            self._failed_bytes = 0

    def _put(self, fd: int, data: bytes) -> bool:
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], self._pos + done)
        except OSError as exc:
            self._pos += done
            self._failed(f"cannot write run log {self.path}: {exc.strerror or exc}", 0)
            return False
        self._pos += done
        return True

    def _cap_reached(self) -> None:
        fd = self._fd
        if fd is not None:
            self._put(fd, b"\n[factoryd: log capped; further output is counted, not kept]\n")
        self.close()

    # -- output ------------------------------------------------------------

    def take(self, pipe: int, size: int) -> bytes:
        """Move up to `size` bytes from `pipe` into the log and return them
        (b"" at EOF). Raises BlockingIOError when the pipe has nothing."""
        room = self.cap - self.written
        fd = None
        if room > 0 and self._splice and (self._fd is not None or _pending(pipe)):
            fd = self._open()  # only once there is output: a silent run makes no file
        if fd is not None:
            try:
                moved = os.splice(
                    pipe, fd, min(size, room), offset_dst=self._pos, flags=os.SPLICE_F_NONBLOCK
                )
            except BlockingIOError:
                raise
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self._splice = False  # a file system without splice: read and write
                else:
                    self._failed(f"cannot write run log {self.path}: {exc.strerror or exc}", 0)
            else:
                if moved == 0:
                    return b""
                data = os.pread(fd, moved, self._pos)
                self._pos += moved
                self.written += moved
                self._succeeded()
                self._line_ended(fd, data)
                if self.written >= self.cap:
                    self._cap_reached()
                return data
        data = os.read(pipe, size)
        if data:
            self.write(data)
        return data

    def write(self, data: bytes) -> None:
        if self._capped:
            self.dropped += len(data)
            return
        fd = self._open()
        if fd is None:
            self.dropped += len(data)
            self._failed_bytes += len(data) if self._failing else 0
            return
        room = self.cap - self.written
        keep = data if room >= len(data) else data[: max(room, 0)]
        if keep and not self._put(fd, keep):
            self.dropped += len(data)
            self._failed_bytes += len(data)
            return
        self.written += len(keep)
        self._succeeded()
        if keep:
            self._line_ended(fd, keep)
        if len(keep) < len(data):
            self.dropped += len(data) - len(keep)
            self._cap_reached()

    def _line_ended(self, fd: int, data: bytes) -> None:
        self._mid_line = not data.endswith(b"\n")
        if not self._mid_line and self._notes:
            notes, self._notes = self._notes, []
            self._put(fd, b"".join(notes))

    def note(self, text: str) -> None:
        """A line from factoryd itself, outside the cap (it is small and rare);
        held back while the run's output is inside a line."""
        line = f"[factoryd] {text}\n".encode()
        fd = self._fd if self._fd is not None else self._open()
        if fd is None:
            return
        if self._mid_line:
            self._notes.append(line)
        else:
            self._put(fd, line)

    def close(self) -> None:
        if self._notes and self._fd is not None:  # the line never ended: notes go last
            notes, self._notes = self._notes, []
            self._put(self._fd, b"\n" + b"".join(notes))
        self._capped = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _pending(pipe: int) -> bool:
    """Whether the pipe holds bytes now (at EOF, or on error, it does not)."""
    try:
        buf = fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False
    return int.from_bytes(buf, sys.byteorder) > 0


#: A read this large means the run floods its pipe (64 KiB by default, and
#: never returned whole: pages are partly filled). The pipe is then grown to
#: PIPE_SIZE, so a chatty agent costs fewer wakeups and reads. Lazily,
#: because growing a pipe costs a syscall that most runs never need.
FLOODING = 1 << 15
PIPE_SIZE = 1 << 20


def widen_pipe(fd: int) -> None:
    """Grow the pipe to PIPE_SIZE, or leave it (over fs.pipe-max-size for this
    user, or too many pipe pages in use)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


#: Freed heap the allocator keeps instead of handing back to the kernel, and the
#: size from which it maps a block of its own: above a read chunk plus a line.
HEAP_KEEP = 4 << 20
HEAP_MMAP_FROM = 2 << 20
_heap_kept = False


def keep_heap() -> None:
    """Let glibc keep a few MiB of freed heap, once per process, from the first flood.

    A flood is read in chunks of READ_CHUNK, and each chunk is two buffers of
    that size (the bytes read back from the log, the block of lines). With
    glibc's default thresholds their memory went back to the kernel after
    every chunk and was faulted in again, zeroed, for the next: a third of
    the daemon's CPU time for a flood was those page faults. The knob is
    process-wide and bounded (HEAP_KEEP of free heap at most); a daemon whose
    runs never flood never turns it. Without glibc (musl) nothing changes.
    """
    global _heap_kept
    if _heap_kept:
        return
    _heap_kept = True
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, HEAP_MMAP_FROM)  # M_MMAP_THRESHOLD (fixed: no dynamic threshold)
    mallopt(-1, HEAP_KEEP)  # M_TRIM_THRESHOLD


class PipeReader:
    """Reads one pipe to EOF from the event loop's readiness callbacks.

    No task per stream: when the pipe is readable the loop calls `_readable`,
    which reads one chunk, writes it to the log and hands its complete lines
    over, then returns; a flooding run so takes turns with every other ready
    descriptor, and a quiet one costs nothing between its writes. (A task
    per pipe waiting with anyio.wait_readable cost two task switches and a
    dozen anyio calls per read: a sixth of the loop at high spawn rates.)
    """

    def __init__(
        self,
        fd: int,
        log: RunLog,
        on_lines: Callable[[bytes, int], None],
        on_data: Callable[[], None],
        *,
        armed: bool = True,
    ) -> None:
        self._fd = fd
        self._log = log
        self._on_lines = on_lines
        self._on_data = on_data
        self._splitter = LineSplitter()
        self._widened = False
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._armed = False
        if armed:
            self.arm()

    def arm(self) -> None:
        """Read from the loop's readiness callbacks from now on. A reader made
        unarmed reads only when asked (`poll`): a run that ends within
        moments is read to EOF after its exit without its pipe ever entering
        the loop's epoll set (two registrations and two removals per run
        spared); the runner arms its readers after ARM_READERS_AFTER, so a
        longer run's output waits at most that long in its pipe."""
        if not self._armed and not self._done.done():
            self._armed = True
            self._loop.add_reader(self._fd, self._readable)

    @property
    def done(self) -> bool:
        """EOF was read (or reading was stopped)."""
        return self._done.done()

    async def wait(self) -> None:
        """Until EOF (or `stop`); the reader itself is never cancelled by a waiter."""
        self.arm()
        await asyncio.shield(self._done)

    def stop(self) -> None:
        """Stop reading now (the fd stays open: its owner closes it)."""
        self._end(None)

    def poll(self, reads: int = 4) -> bool:
        """Read what the pipe holds now, without waiting (at most `reads` chunks);
        True once EOF is read. The leader's exit is often reported before the
        loop has read the EOF of its pipes: reading them here spares the run
        the clean-up and drain wait that open pipes call for."""
        for _ in range(reads):
            if self._done.done() or not self._read_once():
                break
        return self._done.done()

    def _readable(self) -> None:
        self._read_once()

    def _read_once(self) -> bool:
        """Read one chunk and hand it on; False if the pipe had nothing to read."""
        try:
            # Pipe to file in the kernel: a kill -9 never finds bytes only here.
            data = self._log.take(self._fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        try:
            if not data:
                tail = self._splitter.flush()
                if tail is not None:
                    self._on_lines(tail, 1)
                self._end(None)
                return True
            if len(data) >= FLOODING and not self._widened:
                self._widened = True
                widen_pipe(self._fd)
                keep_heap()
            self._on_data()
            block, count = self._splitter.feed_block(data)
            if count:
                self._on_lines(block, count)
        except Exception as exc:  # surfaces in `wait`, not as a loop callback error
            self._end(exc)
        return True

    def _end(self, exc: Exception | None) -> None:
        if self._done.done():
            return
        if self._armed:
            self._loop.remove_reader(self._fd)
        if exc is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(exc)
