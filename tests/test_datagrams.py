"""Datagrams and their descriptors read into one kept buffer (proc/datagrams.py).

Both ends of the spawn helper's socket read this way; a message must come out
whole with its descriptors, one longer than the buffer must be said to be cut
(never parsed as if whole), and a reused buffer must not leak one message's
bytes into the next."""

from __future__ import annotations

import os
import socket

from factoryd.proc.datagrams import Inbox


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def test_a_message_comes_whole_with_its_descriptors() -> None:
    ours, theirs = _pair()
    r, w = os.pipe()
    try:
        inbox = Inbox(4096, 1)
        socket.send_fds(theirs, [b'{"id": 1, "pid": 42}'], [w])
        data, fds, cut = inbox.receive(ours)
        assert data == b'{"id": 1, "pid": 42}' and not cut and len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        os.close(fds[0])
        assert os.read(r, 100) == b"through the passed descriptor"
        theirs.send(b"short")  # the buffer is reused: nothing of the last message shows
        assert inbox.receive(ours) == (b"short", [], False)
    finally:
        for end in (ours, theirs):
            end.close()
        os.close(r)
        os.close(w)


def test_a_message_longer_than_the_buffer_is_said_to_be_cut() -> None:
    ours, theirs = _pair()
    try:
        inbox = Inbox(1024, 1)
        theirs.send(b"x" * 5000)
        data, fds, cut = inbox.receive(ours)
        assert cut and data == b"x" * 1024 and fds == []
        theirs.send(b"next")  # the rest was discarded with the datagram
        assert inbox.receive(ours) == (b"next", [], False)
    finally:
        ours.close()
        theirs.close()


def test_an_empty_read_means_the_other_end_is_gone() -> None:
    ours, theirs = _pair()
    inbox = Inbox(64, 1)
    theirs.close()
    try:
        assert inbox.receive(ours) == (b"", [], False)
    finally:
        ours.close()
