"""Reading a config file that may be anything: a FIFO, a device, a huge file.

`check` and reload must answer in one line and at once whatever the path
names. A FIFO would block a plain read forever and /dev/zero would fill
memory, so the file is opened without blocking, checked to be a regular
file on the open descriptor (no window for a swap between check and read),
and read only up to a size cap that no real config comes near.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from factoryd.config.tomltable import ConfigError, Problem

#: A config is a few kilobytes; 4 MiB leaves room for generated ones.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes;
    else ConfigError with one problem naming the file."""

    def refuse(message: str) -> ConfigError:
        return ConfigError([Problem(str(path), "(file)", message)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"not a regular file ({_file_kind(st.st_mode)}); give a regular file")
        if st.st_size > limit:
            raise refuse(f"too large ({st.st_size} bytes; at most {limit})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while we read
            raise refuse(f"too large (over {limit} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"
