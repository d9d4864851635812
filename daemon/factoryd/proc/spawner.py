"""The daemon's side of the spawn helper (`spawnhelper.py`): spawns off the loop.

Why: a spawn from the daemon itself (Popen: vfork, then wait for the
child's exec) blocks the event loop until the child has exec'd. Measured in
the daemon under load that wait was 0.5-1 ms per run (the vfork child
waits for a CPU while both cores are busy): more than the loop's own work
for a short run. No thread can take it off the loop (with CPython's GIL
every threaded variant was slower). The helper is a separate, small,
single-threaded process: the loop sends a request (one datagram, the run's
four pipe ends attached) and goes on; the reply (the leader's pid and a
pidfd for it) and, later, the leader's exit status come back through the
loop's readiness callbacks.

The leaders are the helper's children. Everything else about them is as
before: their own session and group, pidfds, the subreaper (the daemon)
for what they orphan. If the helper dies, its leaders are re-parented to
the daemon, which then collects their statuses itself; new spawns go
through Popen on the loop (logged once). A spawn sent but not answered
fails rather than risk starting twice (a leader that did start carries the
run's marker and is killed by the stray sweep once the run is over).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from factoryd.proc.datagrams import Inbox
from factoryd.units.jsontext import dumps

HELPER = Path(__file__).with_name("spawnhelper.py")
#: Larger requests go through Popen: a datagram must fit the socket buffer.
MAX_REQUEST = 128 * 1024
#: The largest message read from the helper: its exit reports are cut to fit
#: (`spawnhelper.EXITS_PER_MESSAGE`), its replies are a few hundred bytes.
RECV_MAX = 64 * 1024
#: How long a spawn may take in the helper before the run is failed (a hung
#: filesystem under the run's directory or executable).
REPLY_TIMEOUT = 60.0
#: A deadline this close is due when the sweep runs (the loop may run a timer
#: up to its clock's resolution early).
SWEEP_SLACK = 0.001


class HelperUnavailable(Exception):
    """The helper is not running: nothing was sent, spawn another way."""


class Spawner:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._replies: dict[int, asyncio.Future[tuple[dict[str, Any], list[int]]]] = {}
        #: Requests not sent yet (id, datagram, descriptors), oldest first.
        self._outbox: deque[tuple[int, bytes, list[int]]] = deque()
        self._waiting_to_send = False
        self._next_id = 0
        self._inbox = Inbox(RECV_MAX, 1)
        #: When each unanswered request fails (loop time), oldest first, and the
        #: one timer that fails them (see `_sweep`).
        self._deadlines: dict[int, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        #: Exit codes reported for leaders still watched (None: not yet).
        self._codes: dict[int, int | None] = {}
        self._waiters: dict[int, Callable[[], None]] = {}
        #: Why the helper is not (or no longer) in use.
        self.failed: str | None = None
        #: Told the pids of the leaders still running when the helper dies: they
        #: are the daemon's children from then on (the reconciler wires this).
        self.on_gone: Callable[[list[int]], None] | None = None

    def start(self, leader_nofile: int | None = None) -> None:
        """Start the helper (from the event loop); on failure note why and go on.
        `leader_nofile`: the descriptor limit the leaders get (the daemon's own
        may have been raised; see fdlimit.py)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-I", "-S", str(HELPER), str(theirs.fileno())]
        if leader_nofile is not None:
            argv.append(str(leader_nofile))
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            self.failed = f"cannot start the spawn helper: {exc}"
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(ours.fileno(), self._on_message)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def available(self) -> bool:
        return self._sock is not None

    @property
    def in_flight(self) -> int:
        """Spawns sent and not answered yet."""
        return len(self._replies)

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        stdin_path: str | None,
        fds: tuple[int, int, int, int],
        record: tuple[str, str] | None = None,
    ) -> tuple[int, int, tuple[int, int], int | None]:
        """(pid, pidfd, the leader's fds for its read ends, its start time in
        clock ticks since boot) of a new leader.

        `record`: (run id, spawn log path): the helper appends the spawn there
        before it answers, so that the record exists as soon as the process does.
        Raises HelperUnavailable (nothing sent), or OSError with the errno of
        the step that failed (`filename` tells the stdin file or the workdir).
        Not cancellable once sent: a leader may exist, the caller must own it.
        """
        if self._sock is None or self._loop is None:
            raise HelperUnavailable(self.failed or "not started")
        self._next_id += 1
        ident = self._next_id
        body: dict[str, Any] = {
            "id": ident,
            "argv": list(argv),
            "env": dict(env),
            "cwd": cwd,
            "stdin": stdin_path,
        }
        if record is not None:
            body["run"], body["log"] = record
        request = dumps(body).encode()
        if len(request) > MAX_REQUEST:
            raise HelperUnavailable("request too large for one datagram")
        future = self._loop.create_future()
        self._replies[ident] = future
        self._outbox.append((ident, request, list(fds)))
        self._send_queued()
        # The deadline is kept in a dict that one loop timer sweeps (no timer
        # per spawn: see `_sweep`); the shield keeps a cancelled caller waiting
        # for the answer, since a leader may exist and must have an owner.
        # Until the request has left the outbox the caller's descriptors stay open.
        self._deadlines[ident] = deadline = self._loop.time() + REPLY_TIMEOUT
        sweeper = self._sweeper
        if sweeper is None or deadline < sweeper.when():
            # (Earlier than the timer only if REPLY_TIMEOUT was lowered meanwhile.)
            if sweeper is not None:
                sweeper.cancel()
            self._sweeper = self._loop.call_at(deadline, self._sweep)
        try:
            with anyio.CancelScope(shield=True):
                reply, attached = await future
        finally:
            self._deadlines.pop(ident, None)
        if "pid" in reply and attached:
            pid = int(reply["pid"])
            out_fd, err_fd = reply["fds"]
            ticks = reply.get("ticks")
            return pid, attached[0], (int(out_fd), int(err_fd)), ticks
        for fd in attached:
            os.close(fd)
        err = int(reply.get("errno") or 0)
        text = os.strerror(err) if err else "failed"
        step = str(reply.get("step", "exec"))
        raise OSError(err, text, {"stdin": stdin_path, "chdir": cwd}.get(step, argv[0]))

    def _send_queued(self) -> None:
        """Send what the outbox holds, in order, as far as the socket takes it.

        A burst of spawns (hundreds at once, or large environments) fills the
        socket faster than the helper reads it: then the rest waits here for
        the socket to be writable again. That is backpressure, not a dead
        helper: taking it for one would fail spawns the helper then starts
        anyway, and their retries would run twice.
        """
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        while self._outbox:
            _ident, request, fds = self._outbox[0]
            try:
                socket.send_fds(sock, [request], fds)
            except BlockingIOError:
                if not self._waiting_to_send:
                    self._waiting_to_send = True
                    loop.add_writer(sock.fileno(), self._send_queued)
                return
            except OSError as exc:
                self._broken(f"spawn helper unreachable: {exc}")
                return
            self._outbox.popleft()
        if self._waiting_to_send:
            self._waiting_to_send = False
            loop.remove_writer(sock.fileno())

    def _unsent(self, ident: int) -> None:
        """Take a request out of the outbox if it is still there (never sent)."""
        for entry in self._outbox:
            if entry[0] == ident:
                self._outbox.remove(entry)
                return

    def _sweep(self) -> None:
        """Fail the requests whose deadline has come, then sleep until the next one's.

        One timer for all spawns in flight instead of one each: a timer per
        spawn was two heap operations, a cancelled handle and, every hundred
        spawns, a rebuild of the loop's timer heap, for a deadline that almost
        never fires. The timer is set at the oldest deadline; answered
        requests leave the dict, so when it fires it usually finds nothing due
        and moves on to the oldest request still waiting (about once per
        REPLY_TIMEOUT while spawns keep coming)."""
        self._sweeper = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time() + SWEEP_SLACK
        for ident in [i for i, when in self._deadlines.items() if when <= now]:
            del self._deadlines[ident]
            self._expire(ident)
        if self._deadlines:
            self._sweeper = loop.call_at(min(self._deadlines.values()), self._sweep)

    def _expire(self, ident: int) -> None:
        """No answer in REPLY_TIMEOUT: the spawn fails; an answer that still comes
        finds nobody waiting, and its leader is killed (see `_on_message`)."""
        self._unsent(ident)
        future = self._replies.pop(ident, None)
        if future is not None and not future.done():
            future.set_exception(
                OSError(0, f"no answer from the spawn helper in {REPLY_TIMEOUT:g}s")
            )

    def exit_code(self, pid: int) -> tuple[bool, int | None]:
        """(known, code) for a leader this helper started. Once the helper is
        gone, the leader is the daemon's child: its status is collected here."""
        code = self._codes.get(pid)
        if code is not None:
            return True, code
        if self._sock is None:
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return True, None
            if got == 0:
                return False, None
            return True, os.waitstatus_to_exitcode(status)
        return False, None

    def when_reported(self, pid: int, callback: Callable[[], None]) -> None:
        """Call `callback` once the helper reports this leader's exit (or is gone)."""
        if self._sock is None or self._codes.get(pid) is not None:
            callback()
        else:
            self._waiters[pid] = callback

    def forget(self, pid: int) -> None:
        self._codes.pop(pid, None)
        self._waiters.pop(pid, None)

    def _on_message(self) -> None:
        while self._sock is not None:
            try:
                data, fds, cut = self._inbox.receive(self._sock)
            except BlockingIOError:
                return
            except OSError as exc:
                self._broken(f"spawn helper gone: {exc}")
                return
            if not data or cut:
                for fd in fds:
                    os.close(fd)
                self._broken("spawn helper exited" if not data else "spawn helper: message cut")
                return
            message = json.loads(data.decode())
            if "exits" in message:
                for pid, code in message["exits"]:
                    if pid in self._codes:
                        self._codes[pid] = int(code)
                        waiter = self._waiters.pop(pid, None)
                        if waiter is not None:
                            waiter()
                continue
            future = self._replies.pop(int(message.get("id", -1)), None)
            if future is None or future.done():
                # An answer nobody waits for any more (the spawn timed out): a
                # leader that started now has no runner, so it goes at once.
                if "pid" in message:
                    with contextlib.suppress(OSError):
                        os.killpg(int(message["pid"]), signal.SIGKILL)
                for fd in fds:
                    os.close(fd)
                continue
            if "pid" in message:
                # Watched from now on: its exit report may follow in this very batch,
                # before the spawning task has even resumed.
                self._codes[int(message["pid"])] = None
            future.set_result((message, fds))

    def _broken(self, why: str) -> None:
        self.failed = why
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            if self._waiting_to_send:
                self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
        self._sock = None
        self._waiting_to_send = False
        unsent = {ident for ident, _, _ in self._outbox}
        self._outbox.clear()
        for ident, future in self._replies.items():
            if not future.done():
                # Never sent: nothing can have started, Popen may take it. Sent:
                # a leader may exist, so the spawn fails (see the module's doc).
                error = HelperUnavailable(why) if ident in unsent else OSError(0, why)
                future.set_exception(error)
        self._replies.clear()
        if self.on_gone is not None:
            self.on_gone([pid for pid, code in self._codes.items() if code is None])
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter()  # the leaders are ours now: their runners collect them

    def close(self) -> None:
        """Stop the helper; its leaders keep running (they are adopted on restart)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._sock is not None:
            self._broken("closed")
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=2)
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
