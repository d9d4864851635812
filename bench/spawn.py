"""Start 500 trivial runs: factoryd vs a bare Popen loop (the limit) vs supervisord.

Every contender runs the same program, `touch DIR/N`, so completion is read
from the files' modification times, not from anyone's API. Spawn rate is
(N - 1) / (last mtime - first mtime): the daemons' own start-up is not
counted against them. REPS repetitions, the order turning each time; the
rates are medians, the ratios medians of back-to-back pairs (`paired`).
Targets: >= 60% of the bare loop, >= 3x supervisord.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from common import (
    Results,
    Row,
    expect,
    factoryd_config,
    factoryd_task,
    paired,
    ratios,
    start_factoryd,
    start_supervisord,
    stop,
    summary,
    supervisord_config,
    tmpdir,
)

N = 500


def _rate(directory: Path, n: int, timeout: float) -> float:
    # Polled every 50 ms: the rate comes from the files' times, and listing a
    # directory of hundreds of entries every 10 ms took CPU from the contenders.
    expect(
        lambda: len(os.listdir(directory)) >= n,
        timeout,
        f"spawn: {n} runs finished in {directory.name}",
        lambda: len(os.listdir(directory)),
        interval=0.05,
    )
    times = sorted(p.stat().st_mtime_ns for p in directory.iterdir())
    return (n - 1) / ((times[-1] - times[0]) / 1e9)


def bare_loop(n: int = N) -> float:
    marks = tmpdir("bare")
    t0 = time.perf_counter()
    for i in range(n):
        subprocess.Popen(["touch", str(marks / str(i))]).wait()
    return (n - 1) / (time.perf_counter() - t0)


def factoryd(n: int = N) -> float:
    work = tmpdir("spawn-factoryd")
    marks = work / "marks"
    marks.mkdir()
    tasks = [
        factoryd_task(f"t{i}", ["touch", str(marks / str(i))], kind="oneshot") for i in range(n)
    ]
    daemon = start_factoryd(factoryd_config(work, tasks, max_concurrent=16), work / "log")
    try:
        return _rate(marks, n, 120)
    finally:
        stop(daemon)


def supervisord(n: int = N) -> float:
    work = tmpdir("spawn-supervisord")
    marks = work / "marks"
    marks.mkdir()
    programs = {f"t{i}": ["touch", str(marks / str(i))] for i in range(n)}
    config = supervisord_config(work, programs, startsecs=0, autorestart="false")
    sup = start_supervisord(config)
    try:
        return _rate(marks, n, 300)
    finally:
        stop(sup)


def run(results: Results, reps: int = 5) -> None:
    print(f"spawn: {N} trivial runs, {reps} alternating repetitions", flush=True)
    contenders = {"bare": bare_loop, "ours": factoryd, "peer": supervisord}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(reps):
        # The order turns every repetition: none is always first after a pause.
        names = list(contenders)
        for name in names[rep % 3 :] + names[: rep % 3]:
            rates[name].append(contenders[name]())
    bare, ours, peer = rates["bare"], rates["ours"], rates["peer"]
    vs_bare = paired(ours, bare)
    vs_peer = paired(ours, peer)
    results.add(
        Row(
            "spawn",
            "runs/s vs bare Popen loop",
            summary(ours),
            summary(bare),
            f"{vs_bare:.0%} of the bare loop ({ratios(ours, bare, '{:.0%}')})",
            ">= 60%",
            vs_bare >= 0.6,
        )
    )
    results.add(
        Row(
            "spawn",
            "runs/s vs supervisord (startsecs=0)",
            summary(ours),
            summary(peer),
            f"{vs_peer:.1f}x ({ratios(ours, peer, '{:.2f}')})",
            ">= 3x",
            vs_peer >= 3,
        )
    )


if __name__ == "__main__":
    run(Results(), reps=1)
