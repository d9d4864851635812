"""Read a task's `prompt_file` without trusting it to be a file.

A prompt path may name anything: a FIFO (an open for reading would wait for
a writer forever), a device (/dev/zero never ends), a socket, a symlink to
any of these, or a sparse file of a gigabyte. Only regular files are read:
the path is checked with stat before it is opened (opening a device can have
effects of its own), and again with fstat on the descriptor, opened
non-blocking, so that what is read is what was checked. The size cap
(`[daemon] prompt_max_bytes`) is checked before any byte is read, and the
read itself stops one byte past the cap (a file that grows meanwhile).

The caller runs this on a worker thread: a slow disk never stalls the loop.
Every refusal is a `PromptFileError` whose message names the file and says
what is wrong, in one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class PromptFileError(Exception):
    """The prompt file cannot be used; the message names it and says why."""


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str | None:
    """None for a regular file, else what the path is."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check(path: str, st: os.stat_result, max_bytes: int) -> None:
    kind = _kind(st.st_mode)
    if kind is not None:
        raise PromptFileError(f"prompt_file {path} is {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise PromptFileError(
            f"prompt_file {path} is {st.st_size} bytes, over prompt_max_bytes ({max_bytes})"
        )


def read_prompt_file(path: str, max_bytes: int) -> str:
    """The prompt file's text; raise PromptFileError for anything but a small
    regular UTF-8 text file without NUL bytes."""
    try:
        _check(path, Path(path).stat(), max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise PromptFileError(f"cannot read prompt_file {path}: {exc.strerror}") from None
    try:
        _check(path, os.fstat(fd), max_bytes)
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise PromptFileError(f"cannot read prompt_file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise PromptFileError(f"prompt_file {path} grew over prompt_max_bytes while read")
    if b"\0" in data:
        raise PromptFileError(f"prompt_file {path} holds a NUL byte (an argv cannot carry it)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"prompt_file {path} is not UTF-8 text (byte {exc.start})") from None
