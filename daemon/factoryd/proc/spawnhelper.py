"""The spawn helper: a small process that starts run leaders for the daemon.

Run as a script (`python -I -S spawnhelper.py FD [NOFILE]`: NOFILE is the
descriptor limit its leaders get), never imported by the
daemon: it stays small and single-threaded, so its Popen takes the vfork
path cheaply, and its waits for each child's exec happen here instead of on
the daemon's event loop.

Protocol, one datagram each way on a SOCK_SEQPACKET socket:

* request: JSON {id, argv, env, cwd, stdin, run, log} with four descriptors attached
  (the run's stdout and stderr write ends, then their read ends, which the
  leader keeps so that it survives a daemon crash); with `log`, the spawn is
  appended to that spawn log as `RUN PID OUT_FD ERR_FD` before the reply;
* reply: JSON {id, pid, fds} with the leader's pidfd attached (a pidfd
  names the process even once it has exited and been collected, so the
  daemon never confuses it with a reused pid), or {id, errno, step};
* exit report: JSON {exits: [[pid, code], ...]} when leaders end (code as
  Popen gives it: the status, or -N for signal N).

When the daemon's end closes, the helper exits at once and leaves its
children running: they are adopted as after a daemon crash.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same modules, as the type checker finds them
    from factoryd.proc.datagrams import Inbox
    from factoryd.proc.leader_popen import invalid_request, popen_leader
    from factoryd.proc.proctime import start_ticks, stat_fields
    from factoryd.proc.spawnlog import spawn_line
else:
    # Run as a script outside the package (python -I leaves its directory off
    # the path): the modules shared with the daemon are loaded from beside this file.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from datagrams import Inbox
    from leader_popen import invalid_request, popen_leader
    from proctime import start_ticks, stat_fields
    from spawnlog import spawn_line


def start(request: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int], Any]:
    """Start the leader a request asks for; a request that cannot be carried
    out is answered with an errno: that run fails, the helper goes on."""
    try:
        argv = request["argv"]
        env = request["env"]
        cwd = request["cwd"]
        stdin_path = request.get("stdin")
        if not (isinstance(argv, list) and isinstance(env, dict) and isinstance(cwd, str)):
            raise TypeError("argv, env, cwd: expected a list, an object and a string")
        if stdin_path is not None and not isinstance(stdin_path, str):
            raise TypeError("stdin: expected a path")
        problem = invalid_request(argv, env, cwd)
        if problem is not None:
            raise ValueError(problem)
    except (KeyError, TypeError, ValueError) as exc:
        return _refused(exc), [], None
    out_w, err_w, out_r, err_r = fds
    stdin: Any = subprocess.DEVNULL
    if stdin_path:
        # Non-blocking: a FIFO with no writer must not stall every other spawn.
        try:
            stdin = os.open(stdin_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.set_blocking(stdin, True)
        except (OSError, ValueError) as exc:
            return {"errno": getattr(exc, "errno", None) or errno.EINVAL, "step": "stdin"}, [], None
    try:
        proc = popen_leader(
            argv,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=out_w,
            stderr=err_w,
            keep=(out_r, err_r),
        )
    except OSError as exc:
        step = "chdir" if exc.filename == cwd else "exec"
        return {"errno": exc.errno or errno.EINVAL, "step": step}, [], None
    except (ValueError, TypeError) as exc:  # what Popen itself refuses
        return _refused(exc), [], None
    finally:
        if stdin is not subprocess.DEVNULL:
            os.close(stdin)
    log, run = request.get("log"), request.get("run")
    if isinstance(log, str) and isinstance(run, str):
        with contextlib.suppress(ValueError):  # text that cannot be encoded: not recorded
            _record(log, spawn_line(run, proc.pid, (out_r, err_r)))
    pidfd = os.pidfd_open(proc.pid)
    # The start time, read while the leader cannot have been collected: its
    # identity beyond the pid.
    fields = stat_fields(proc.pid)
    ticks = None if fields is None else start_ticks(fields)
    reply = {"pid": proc.pid, "fds": [out_r, err_r], "ticks": ticks}
    return reply, [pidfd], proc


def _refused(exc: BaseException) -> dict[str, Any]:
    return {"errno": errno.EINVAL, "step": "request", "error": str(exc)[:200]}


def _parse(message: bytes) -> dict[str, Any] | None:
    """A request object, or None for anything else (garbage is answered, not fatal)."""
    try:
        request = json.loads(message)
    except (ValueError, RecursionError):
        return None
    return request if isinstance(request, dict) else None


def _record(path: str, line: bytes) -> None:
    """Append the spawn to the daemon's spawn log before anyone hears of it: a
    daemon killed before our reply must still find that this run started (or
    it would be judged never started, and run twice). Opened per line: the
    daemon may have compacted the file (a new inode) since the last one.
    Best effort, as the daemon's own record."""
    # Non-blocking: a FIFO put in its place must not stall the helper.
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # the first spawn: its directory is not there yet
            os.makedirs(os.path.dirname(path), exist_ok=True)  # noqa: PTH103, PTH120
            fd = os.open(path, flags, 0o600)
    except (OSError, ValueError):
        return
    try:
        os.write(fd, line)
    except OSError:
        pass
    finally:
        os.close(fd)


def main(fd: int) -> None:
    daemon = os.getppid()
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when runs stop
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, subprocess.Popen[bytes]] = {}
    # Tells, without reading, whether the daemon has closed its end (requests it
    # sent before that are still queued for us to read).
    hangup = select.poll()
    hangup.register(sock, select.POLLRDHUP)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                try:
                    message, fds, truncated = _INBOX.receive(sock)
                except OSError:
                    os._exit(0)
                if not message:
                    os._exit(0)  # the daemon is gone; the runs are not ours to stop
                request = None if truncated else _parse(message)
                if os.getppid() != daemon or hangup.poll(0):
                    # The daemon died, or gave up on us and closed its end, with
                    # this request still queued: it has failed (or a new daemon
                    # has judged never started) this spawn, and may retry it.
                    # Starting it now could run it twice.
                    os._exit(0)
                attached: list[int]
                if request is None:
                    why = "longer than 1 MiB" if truncated else "not a JSON object"
                    reply, attached, proc = _refused(ValueError(why)), [], None
                elif len(fds) == FDS_PER_REQUEST:
                    reply, attached, proc = start(request, fds)
                else:
                    reply, attached, proc = {"errno": errno.EINVAL, "step": "fds"}, [], None
                for received in fds:
                    os.close(received)
                if proc is not None:
                    children[proc.pid] = proc
                ident = None if request is None else request.get("id")
                # Only the daemon's own ids go back (an int): its reader trusts them.
                reply["id"] = ident if type(ident) is int else -1
                _send(sock, json.dumps(reply).encode(), attached)
                for sent in attached:
                    os.close(sent)
            else:
                while True:
                    try:
                        if not os.read(wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
        _collect(sock, children)


#: The largest request read (the daemon sends at most 128 KiB: `spawner.MAX_REQUEST`;
#: a longer datagram is cut and refused), and the fds that come with one.
REQUEST_MAX = 1 << 20
FDS_PER_REQUEST = 4
#: Requests are read into one buffer for the helper's life (datagrams.py says why:
#: a new 1 MiB object per request was about half the helper's time per spawn).
_INBOX = Inbox(REQUEST_MAX, FDS_PER_REQUEST)


def _send(sock: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    try:
        socket.send_fds(sock, [data], fds or [])
    except OSError:
        os._exit(0)  # the daemon is gone; its runs are not ours to stop


def _collect(sock: socket.socket, children: dict[int, subprocess.Popen[bytes]]) -> None:
    """Report every child that has ended (SIGCHLD may merge several exits), in
    one message: a burst of short runs costs one send and one wakeup."""
    ended: list[list[int]] = []
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        proc = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if proc is not None:
            proc.returncode = code
        ended.append([pid, code])
    for message in exit_messages(ended):
        _send(sock, message)


#: Exits per report: a datagram must fit what the daemon reads at once
#: (`spawner.RECV_MAX`, 64 KiB; ~20 bytes an exit) however many leaders end.
EXITS_PER_MESSAGE = 1024


def exit_messages(ended: list[list[int]]) -> list[bytes]:
    """The exit reports for `ended` ([pid, code] pairs), at most
    EXITS_PER_MESSAGE in each."""
    return [
        json.dumps({"exits": ended[i : i + EXITS_PER_MESSAGE]}).encode()
        for i in range(0, len(ended), EXITS_PER_MESSAGE)
    ]


if __name__ == "__main__":
    if len(sys.argv) > 2:
        # The daemon raised its own descriptor limit; the leaders get the one it
        # started with (see fdlimit.py).
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(int(sys.argv[2]), hard), hard))
    main(int(sys.argv[1]))
