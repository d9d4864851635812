"""Idle cost: CPU (% of one core), wakeups and RSS of the supervisor process over
WINDOW seconds with 200 idle runs, factoryd vs supervisord.

CPU is each thread's time on a CPU in nanoseconds (/proc/PID/task/TID/
schedstat), summed over the supervisor's own processes: supervisord; the
factoryd daemon and its spawn helper (the runs, their children, excluded).
Tick-based counters (utime/stime, 10 ms) resolve 0.017% over a minute, too
coarse to order two figures of about 0.1%. Wakeups are the voluntary context
switches per second of the same processes.
Target: below supervisord and below 0.5% of a core.
"""

from __future__ import annotations

import os
import time

import psutil
from common import (
    Results,
    Row,
    expect,
    factoryd_config,
    factoryd_task,
    start_factoryd,
    start_supervisord,
    stop,
    supervisord_config,
    tmpdir,
)

N_RUNS = 200


def _on_cpu_ns(pid: int) -> int:
    """Nanoseconds the live threads of `pid` have spent on a CPU."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(pids: list[int], window: float) -> tuple[float, float, float]:
    """(CPU share of one core, wakeups/s, RSS) of `pids` together."""
    procs = [psutil.Process(pid) for pid in pids]
    c0 = sum(_on_cpu_ns(pid) for pid in pids)
    s0 = sum(p.num_ctx_switches().voluntary for p in procs)
    time.sleep(window)
    c1 = sum(_on_cpu_ns(pid) for pid in pids)
    s1 = sum(p.num_ctx_switches().voluntary for p in procs)
    rss = sum(p.memory_info().rss for p in procs)
    return (c1 - c0) / 1e9 / window, (s1 - s0) / window, rss


def spawn_helper(pid: int) -> int:
    for child in psutil.Process(pid).children():
        if any("spawnhelper" in part for part in child.cmdline()):
            return child.pid
    raise AssertionError("factoryd runs without its spawn helper")


def sleepers(pid: int) -> int:
    try:
        return sum(1 for c in psutil.Process(pid).children(recursive=True) if c.name() == "sleep")
    except psutil.Error:
        return 0


def factoryd(window: float) -> tuple[float, float, float]:
    work = tmpdir("idle-factoryd")
    tasks = [factoryd_task(f"s{i:03}", ["sleep", "3600"]) for i in range(N_RUNS)]
    daemon = start_factoryd(factoryd_config(work, tasks, max_concurrent=N_RUNS), work / "log")
    try:
        expect(
            lambda: sleepers(daemon.pid) == N_RUNS,
            60,
            f"idle: {N_RUNS} sleep runs under factoryd",
            lambda: sleepers(daemon.pid),
        )
        time.sleep(6)  # let the first descendant scan and soft-state write pass
        return measure([daemon.pid, spawn_helper(daemon.pid)], window)
    finally:
        stop(daemon)


def supervisord(window: float) -> tuple[float, float, float]:
    work = tmpdir("idle-supervisord")
    programs = {f"s{i:03}": ["sleep", "3600"] for i in range(N_RUNS)}
    sup = start_supervisord(supervisord_config(work, programs, startsecs=0))
    try:
        expect(
            lambda: sleepers(sup.pid) == N_RUNS,
            60,
            f"idle: {N_RUNS} sleep programs under supervisord",
            lambda: sleepers(sup.pid),
        )
        time.sleep(6)
        return measure([sup.pid], window)
    finally:
        stop(sup)


def run(results: Results, window: float = 60.0) -> None:
    print(f"idle: {N_RUNS} idle runs, {window:.0f} s window each", flush=True)
    ours = factoryd(window)
    peer = supervisord(window)
    results.add(
        Row(
            "idle",
            "CPU % of one core (factoryd: daemon + spawn helper)",
            f"{ours[0] * 100:.3f}%",
            f"{peer[0] * 100:.3f}%",
            f"{ours[0] / max(peer[0], 1e-9):.2f}x of peer",
            "< peer and < 0.5%",
            ours[0] < peer[0] and ours[0] < 0.005,
        )
    )
    results.add(
        Row(
            "idle",
            "wakeups/s (voluntary ctx switches)",
            f"{ours[1]:.2f}",
            f"{peer[1]:.2f}",
            "-",
            "-",
            None,
        )
    )
    results.add(
        Row(
            "idle",
            "RSS (factoryd: daemon + spawn helper)",
            f"{ours[2] / 2**20:.1f} MiB",
            f"{peer[2] / 2**20:.1f} MiB",
            "-",
            "-",
            None,
        )
    )


if __name__ == "__main__":
    run(Results(), window=15.0)
