"""Idle cost: CPU (% of one core), wakeups and RSS of the supervisor process over
WINDOW seconds with 200 idle runs, factoryd vs supervisord.

CPU is read from /proc (psutil cpu_times of the daemon process, children
excluded); wakeups are its voluntary context switches per second.
Target: below supervisord and below 0.5% of a core.
"""

from __future__ import annotations

import time

import psutil
from common import (
    Results,
    Row,
    factoryd_config,
    factoryd_task,
    start_factoryd,
    start_supervisord,
    stop,
    supervisord_config,
    tmpdir,
    wait_until,
)

N_RUNS = 200


def measure(pid: int, window: float) -> tuple[float, float, float]:
    proc = psutil.Process(pid)
    c0, s0 = proc.cpu_times(), proc.num_ctx_switches().voluntary
    time.sleep(window)
    c1, s1 = proc.cpu_times(), proc.num_ctx_switches().voluntary
    cpu = (c1.user + c1.system - c0.user - c0.system) / window
    return cpu, (s1 - s0) / window, proc.memory_info().rss


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
        assert wait_until(lambda: sleepers(daemon.pid) == N_RUNS, 60)
        time.sleep(6)  # let the first descendant scan and soft-state write pass
        return measure(daemon.pid, window)
    finally:
        stop(daemon)


def supervisord(window: float) -> tuple[float, float, float]:
    work = tmpdir("idle-supervisord")
    programs = {f"s{i:03}": ["sleep", "3600"] for i in range(N_RUNS)}
    sup = start_supervisord(supervisord_config(work, programs, startsecs=0))
    try:
        assert wait_until(lambda: sleepers(sup.pid) == N_RUNS, 60)
        time.sleep(6)
        return measure(sup.pid, window)
    finally:
        stop(sup)


def run(results: Results, window: float = 60.0) -> None:
    print(f"idle: {N_RUNS} idle runs, {window:.0f} s window each", flush=True)
    ours = factoryd(window)
    peer = supervisord(window)
    results.add(
        Row(
            "idle",
            "CPU % of one core",
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
            "RSS",
            f"{ours[2] / 2**20:.1f} MiB",
            f"{peer[2] / 2**20:.1f} MiB",
            "-",
            "-",
            None,
        )
    )


if __name__ == "__main__":
    run(Results(), window=15.0)
