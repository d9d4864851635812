"""kill -9 one of 20 live runs: time until the supervisor has recorded the exit, and
until a replacement is running. p50/p99 over KILLS kills, factoryd vs supervisord.

Timestamps come from each daemon's own log (factoryd's JSON lines, microsecond
precision; supervisord's log, millisecond precision); nothing polls either
daemon's API while measuring. Targets: p99 <= 20 ms to record the exit,
p99 <= 10 ms until the replacement runs (restart backoff 1 ms). A kill whose
exit or replacement never shows fails the benchmark, saying which.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import psutil
from common import (
    BenchFailed,
    Results,
    Row,
    factoryd_config,
    factoryd_task,
    pct,
    start_factoryd,
    start_supervisord,
    stop,
    supervisord_config,
    supervisord_log_lines,
    tmpdir,
    ts,
)

N_RUNS = 20


class LogTail:
    """Incremental reader of a JSON-lines log (a file read, not an API call)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.events = path, 0, []

    def poll(self) -> list[dict]:
        import json

        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        new = []
        for line in data[:cut].splitlines():
            try:
                new.append(json.loads(line))
            except ValueError:
                continue
        self.events.extend(new)
        return new


def factoryd(kills: int, rng: random.Random) -> tuple[list[float], list[float]]:
    work = tmpdir("exit-factoryd")
    tasks = [
        factoryd_task(
            f"s{i:02}",
            ["sleep", "3600"],
            restart="always",
            max_restarts=100000,
            backoff={"initial": "1ms", "max": "1ms", "jitter": False, "reset_after": "1ms"},
        )
        for i in range(N_RUNS)
    ]
    log = work / "log"
    daemon = start_factoryd(factoryd_config(work, tasks, max_concurrent=64), log)
    tail = LogTail(log)
    live: dict[str, tuple[str, int]] = {}  # task -> (run id, pid)
    recorded, replaced = [], []
    try:
        deadline = time.monotonic() + 30
        while len(live) < N_RUNS and time.monotonic() < deadline:
            for e in tail.poll():
                if e.get("event") == "run.started":
                    live[e["task"]] = (e["run_id"], e["pid"])
            time.sleep(0.01)
        if len(live) < N_RUNS:
            raise BenchFailed(
                f"exit: {N_RUNS} runs started within 30 s (saw {len(live)}; log {log})"
            )
        for _ in range(kills):
            task = rng.choice(sorted(live))
            run_id, pid = live[task]
            t_kill = time.time()
            os.kill(pid, signal.SIGKILL)
            finished = started = None
            deadline = time.monotonic() + 10
            while (finished is None or started is None) and time.monotonic() < deadline:
                for e in tail.poll():
                    if e.get("event") == "run.finished" and e.get("run_id") == run_id:
                        finished = ts(e)
                    if e.get("event") == "run.started" and e.get("task") == task:
                        started = ts(e)
                        live[task] = (e["run_id"], e["pid"])
                time.sleep(0.001)
            if finished is None or started is None:
                missing = "exit recorded" if finished is None else "replacement started"
                raise BenchFailed(
                    f"exit: after kill -9 of {task} ({run_id}): {missing} within 10 s"
                )
            recorded.append(finished - t_kill)
            replaced.append(started - t_kill)
            time.sleep(0.05)
    finally:
        stop(daemon)
    return recorded, replaced


def supervisord(kills: int, rng: random.Random) -> tuple[list[float], list[float]]:
    work = tmpdir("exit-supervisord")
    programs = {f"s{i:02}": ["sleep", "3600"] for i in range(N_RUNS)}
    sup = start_supervisord(
        supervisord_config(work, programs, startsecs=0, autorestart="true", startretries=1000)
    )
    recorded, replaced = [], []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kids = [c for c in psutil.Process(sup.pid).children() if c.name() == "sleep"]
            if len(kids) == N_RUNS:
                break
            time.sleep(0.05)
        else:
            raise BenchFailed(f"exit: supervisord started {N_RUNS} programs within 30 s")
        for _ in range(kills):
            kids = [c for c in psutil.Process(sup.pid).children() if c.name() == "sleep"]
            victim = rng.choice(kids)
            seen = len(supervisord_log_lines(work))
            t_kill = time.time()
            victim.kill()
            exited = spawned = None
            deadline = time.monotonic() + 15
            while (exited is None or spawned is None) and time.monotonic() < deadline:
                for stamp, message in supervisord_log_lines(work)[seen:]:
                    if " exited: " in f" {message}" and exited is None:
                        exited = stamp
                    if " spawned: " in f" {message}" and spawned is None:
                        spawned = stamp
                time.sleep(0.005)
            if exited is not None and spawned is not None:
                # supervisord logs with millisecond resolution: floor at 0.
                recorded.append(max(exited - t_kill, 0.0))
                replaced.append(max(spawned - t_kill, 0.0))
            time.sleep(0.05)
    finally:
        stop(sup)
    return recorded, replaced


def run(results: Results, kills: int = 100, peer_kills: int = 30) -> None:
    print(
        f"exit handling: kill -9 one of {N_RUNS} live runs; factoryd {kills} kills, "
        f"supervisord {peer_kills}",
        flush=True,
    )
    rng = random.Random(1)
    ours_rec, ours_rep = factoryd(kills, rng)
    peer_rec, peer_rep = supervisord(peer_kills, rng)
    if not peer_rec:
        raise BenchFailed(f"exit: supervisord logged no exit and respawn in {peer_kills} kills")

    def fmt(samples: list[float]) -> str:
        return (
            f"p50 {pct(samples, 0.5) * 1e3:.1f} ms, p99 {pct(samples, 0.99) * 1e3:.1f} ms "
            f"(n={len(samples)})"
        )

    def ratio(ours: list[float], peer: list[float]) -> str:
        return f"peer/factoryd p50 = {pct(peer, 0.5) / max(pct(ours, 0.5), 1e-6):.2g}x"

    p99 = pct(ours_rec, 0.99)
    results.add(
        Row(
            "exit",
            "kill -9 -> exit recorded",
            fmt(ours_rec),
            fmt(peer_rec),
            ratio(ours_rec, peer_rec),
            "p99 <= 20 ms",
            p99 <= 0.020,
        )
    )
    results.add(
        Row(
            "exit",
            "kill -9 -> replacement running",
            fmt(ours_rep),
            fmt(peer_rep),
            ratio(ours_rep, peer_rep),
            "p99 <= 10 ms",
            pct(ours_rep, 0.99) <= 0.010,
        )
    )


if __name__ == "__main__":
    run(Results(), kills=30, peer_kills=5)
