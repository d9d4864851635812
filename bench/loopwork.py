"""A run's loop work, in-process and repeatable: the daemon's side of trivial runs.

bench/instructions.py counts what this does under callgrind, for N and 2N
runs, and divides the difference by N: instructions per run spent by the
daemon process from "the task wants a run" to "its end is journaled, logged
and counted". Everything on that path is the daemon's real code: the
reconcile loop and its passes, the router, `RunBook`, the real `Runner`
(pipe readers, exit watch, teardown checks, output parser), the journal
(SQLite, group commit in its worker thread), the spawn log, structlog's JSON
lines into a file, the Prometheus metrics, and the spawner's side of the
helper protocol (request encoding, descriptor passing, reply and exit
report parsing).

Only the far side of the helper socket is replaced: an answerer on the same
loop takes each request, closes the run's pipe ends (the leader "ran" and
wrote nothing) and replies at once with a pid that cannot exist (above the
kernel's pid_max) and, in a second message, its exit status 0. Why not the
real daemon under callgrind: a real spawn's kernel work is not counted but
its timing is, and under valgrind's 50x slowdown how exits bunch into passes
changes from run to run, so the count would not repeat. Here the order of
events is fixed, so the count is the same twice.

What is made fixed for that, and why it does not hide per-run work:

* a logical clock that moves 100 us per reading: durations, backoff and the
  soft routing state's 5 s cadence do not depend on how fast valgrind runs
  (at this rate no run reaches the soft state's cadence, which costs one
  record per 5 s, not per run);
* no stray sweep: it runs on a 5 s timer, not per run;
* 16 service tasks restarted at once after each exit (`reset_after = "0s"`),
  so both counts load the same config and only the number of runs differs:
  start-up, config and per-task costs cancel out of the difference.

    python bench/loopwork.py [N]      # run N trivial runs (for profiling)
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))

from factoryd.config.loader import load_config  # noqa: E402
from factoryd.observe import logs  # noqa: E402
from factoryd.observe.metrics import Metrics  # noqa: E402
from factoryd.proc.spawner import Spawner  # noqa: E402
from factoryd.reconcile.reconciler import Reconciler  # noqa: E402
from factoryd.reconcile.runstate import Clock  # noqa: E402
from factoryd.service.daemon import tune_collector  # noqa: E402
from factoryd.service.web.hub import RecordingMetrics  # noqa: E402
from factoryd.state.journal import Journal  # noqa: E402

#: Concurrent runs (the spawn bench's max_concurrent).
TASKS = 16


class LogicalClock:
    """Moves TICK seconds at every reading: time that does not depend on the host."""

    TICK = 1e-4

    def __init__(self) -> None:
        self.now = 1000.0

    def mono(self) -> float:
        self.now += self.TICK
        return self.now

    def wall(self) -> float:
        self.now += self.TICK
        return 1.8e9 + self.now


class NoSweeps:
    next_due = float("inf")

    def sweep(self, runs: Any, now: float) -> None:
        pass


class InstantHelper(Spawner):
    """The daemon's real spawner, talking to an answerer on the same loop instead
    of the helper process: each leader exits at once, without output."""

    def __init__(self) -> None:
        super().__init__()
        self._theirs: socket.socket | None = None
        self._answered = 0
        self._pidfd_stand_in = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        # Pids above pid_max never exist: group checks and kills find nothing.
        self._pid_base = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1000

    def start(self, leader_nofile: int | None = None) -> None:
        del leader_nofile
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        self._sock, self._theirs = ours, theirs
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(ours.fileno(), self._on_message)
        self._loop.add_reader(theirs.fileno(), self._answer)

    @property
    def pid(self) -> int | None:
        return os.getpid() if self._sock is not None else None

    def _answer(self) -> None:
        theirs = self._theirs
        assert theirs is not None
        while True:
            try:
                _data, fds, _flags, _addr = socket.recv_fds(theirs, 256 * 1024, 4)
            except BlockingIOError:
                return
            for fd in fds:  # the leader ran and ended: its pipe ends close
                os.close(fd)
            self._answered += 1
            pid = self._pid_base + self._answered
            # What spawnhelper.py sends, formatted cheaply: only the daemon's side
            # of the exchange is meant to be counted.
            reply = b'{"id": %d, "pid": %d, "fds": [3, 4], "ticks": 100}' % (self._answered, pid)
            socket.send_fds(theirs, [reply], [self._pidfd_stand_in])
            theirs.send(b'{"exits": [[%d, 0]]}' % pid)

    def close(self) -> None:
        super().close()
        if self._theirs is not None:
            asyncio.get_running_loop().remove_reader(self._theirs.fileno())
            self._theirs.close()
            self._theirs = None


def config_text(work: Path) -> str:
    text = (
        f'[daemon]\nstate_dir = "{work / "state"}"\nlog_dir = "{work / "logs"}"\n'
        f'metrics_listen = "off"\nmax_concurrent = {TASKS}\nloop_interval = "1h"\n\n'
        '[[pools]]\nname = "local"\nunit = "runs"\nlimit = 1000000000\n\n'
        '[[arms]]\nname = "local"\ncli = "command"\npools = ["local"]\n\n'
    )
    for i in range(TASKS):
        text += (
            f'[[tasks]]\nname = "t{i:02}"\nargv = ["true"]\nkind = "service"\n'
            'restart = "always"\nmax_restarts = 100000\n'
            'backoff = { initial = "1ms", max = "1ms", jitter = false, reset_after = "0s" }\n\n'
        )
    return text


async def _drive(rec: Reconciler, runs: int) -> None:
    def enough() -> None:
        if not rec.stopping and sum(rt.runs for rt in rec.tasks.values()) >= runs:
            rec.request_stop()

    rec.on_pass.append(enough)
    await rec.run()


def drive(runs: int, *, page: bool = True) -> int:
    """Start `runs` trivial runs, rounded up to a multiple of TASKS (each pass
    starts one per task), and return how many ran."""
    runs = -(-runs // TASKS) * TASKS
    with tempfile.TemporaryDirectory(prefix="factoryd-loopwork-") as tmp:
        work = Path(tmp)
        path = work / "factoryd.toml"
        path.write_text(config_text(work))
        config = load_config(path)
        for directory in (config.daemon.state_dir, config.daemon.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        with (work / "daemon.log").open("w") as log:
            logs.configure("json", stream=log)
            journal = Journal(config.daemon.state_dir / "journal.db")
            clock = LogicalClock()
            rec = Reconciler(
                config,
                metrics=RecordingMetrics() if page else Metrics(),
                journal=journal,
                clock=Clock(mono=clock.mono, wall=clock.wall),
                rng=random.Random(0),
                base_env={"PATH": os.defpath},
                sweeper=NoSweeps(),
            )
            rec.spawner = rec.book.spawner = InstantHelper()
            rec.spawn_log.busy = lambda: rec.spawner.in_flight > 0
            tune_collector()  # as the daemon does before its first pass
            asyncio.run(_drive(rec, runs))
            rec.batch.close()
        return sum(rt.runs for rt in rec.tasks.values())


if __name__ == "__main__":
    print(drive(int(sys.argv[1]) if len(sys.argv) > 1 else 200), "runs")
