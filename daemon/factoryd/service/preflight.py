"""Start-up checks: refuse to start, in one line, before anything is touched.

A daemon that adopts the previous one's runs and only then finds that it
cannot bind its metrics port, write its state dir or open its journal has
already changed the world it then abandons. Everything that can be known
up front is checked here, before the state dir is locked, the journal
opened, a run adopted or a process spawned; each problem is one line that
names the config key or the file and says what to do. These are runtime
failures (exit 1); a config that does not parse stays a usage error (2).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import tempfile
from pathlib import Path

from factoryd.config.model import Config
from factoryd.service import lock
from factoryd.service.lock import StateLock


class StartupError(Exception):
    """The daemon cannot start; one line for the operator (exit status 1)."""


def _writable_dir(path: Path, key: str) -> None:
    """`path` exists (made if missing) and a file can be created in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"[daemon].{key} {path}: cannot create it ({exc.strerror or exc}); "
            "make it a writable directory or set another one"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".factoryd-probe-"):
            pass
    except OSError as exc:
        raise StartupError(
            f"[daemon].{key} {path}: not writable ({exc.strerror or exc}); "
            "give the daemon's user write access, or set another directory"
        ) from None


def _journal_openable(path: Path) -> None:
    """An existing journal must be a regular file the daemon can read and write.

    Only "cannot open" is judged here; what is inside is the journal's business.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"journal {path}: cannot open it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise StartupError(
            f"journal {path}: not a regular file; move it aside (it is not a journal)"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise StartupError(
            f"journal {path}: cannot open it for reading and writing ({exc.strerror or exc}); "
            "give the daemon's user access to it (it is the only record of queued work)"
        ) from None
    os.close(fd)


def _port_free(listen: str) -> None:
    """The metrics address can be bound now (the server binds it moments later)."""
    try:
        host, _, port_text = listen.rpartition(":")  # as the HTTP server reads it
        host, port = host.strip("[]"), int(port_text)
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (ValueError, OSError) as exc:
        raise StartupError(f"[daemon].metrics_listen {listen!r}: cannot resolve: {exc}") from None
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(
                        f"[daemon].metrics_listen {listen}: address already in use; stop what "
                        'listens there, or set another HOST:PORT (or "off")'
                    ) from None
                raise StartupError(
                    f"[daemon].metrics_listen {listen}: cannot listen there "
                    f'({exc.strerror or exc}); set another HOST:PORT (or "off")'
                ) from None


def claim(config: Config) -> StateLock:
    """Check what can be checked, and lock the state dir, or raise StartupError.

    The state dir comes first (the lock lives in it), then the lock: a second
    daemon is told who holds the dir rather than that its port is taken.
    """
    daemon = config.daemon
    _writable_dir(daemon.state_dir, "state_dir")
    try:
        held = lock.acquire(daemon.state_dir)
    except lock.StateDirLocked as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(
            f"[daemon].state_dir {daemon.state_dir}: cannot lock {lock.LOCK_NAME} "
            f"({exc.strerror or exc}); it must be a regular file the daemon can write"
        ) from None
    try:
        _writable_dir(daemon.log_dir, "log_dir")
        _writable_dir(daemon.control_socket.parent, "control_socket")
        if daemon.spool_dir is not None:
            _writable_dir(daemon.spool_dir, "spool_dir")
        _journal_openable(daemon.state_dir / "journal.db")
        if daemon.metrics_listen != "off":
            _port_free(daemon.metrics_listen)
    except BaseException:
        held.release()
        raise
    return held
