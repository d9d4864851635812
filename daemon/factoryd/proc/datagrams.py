"""A datagram and the descriptors that came with it, read into one buffer kept for good.

Both ends of the spawn helper's socket read this way: the helper its
requests, the daemon the helper's answers and exit reports. socket.recv_fds
makes a new bytes object of the largest size asked for on every message
(1 MiB per request in the helper, 64 KiB per answer in the daemon) and then
shrinks it: the allocator maps and unmaps, and a debug build also fills it,
for messages of a few hundred bytes. Reading into a buffer made once copies
only what arrived. The helper runs outside the package and loads this file
from beside its own, so it imports nothing from the package.
"""

from __future__ import annotations

import array
import mmap
import socket


class Inbox:
    """Reads datagrams of up to `size` bytes with up to `max_fds` descriptors."""

    def __init__(self, size: int, max_fds: int) -> None:
        #: Anonymous memory: a page is only resident once a message has reached it.
        self._buffer = mmap.mmap(-1, size)
        self._fd_space = socket.CMSG_SPACE(max_fds * array.array("i").itemsize)

    def receive(self, sock: socket.socket) -> tuple[bytes, list[int], bool]:
        """One datagram: (its bytes, the descriptors attached, whether it was cut
        to the buffer's size). Raises what `recvmsg_into` raises (BlockingIOError
        on a non-blocking socket with nothing to read)."""
        size, ancillary, flags, _addr = sock.recvmsg_into([self._buffer], self._fd_space)
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        cut = bool(flags & socket.MSG_TRUNC)
        with memoryview(self._buffer) as view:
            return bytes(view[:size]), list(fds), cut
