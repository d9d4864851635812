"""Figures that do not depend on the machine: instructions, counted by callgrind.

Timings move with the machine (a slower core, a busy neighbour); an
instruction count under `valgrind --tool=callgrind` repeats exactly for the
same code, interpreter and inputs, so a regression shows whatever the
machine's speed. Each figure is the difference of two runs of the same
script, one doing N more units of work than the other, divided by N: start-up
and import costs cancel out.

    python bench/instructions.py [--decisions N] [--runs N]

Figures: instructions per routing decision (10 and 50 arms over 10 pools,
with its settlement, as bench/route.py times them; at 50 arms also as the
daemon takes it, with its metrics, web-page record and log fields), and a
run's loop work:
the daemon process's instructions per trivial run, from the task wanting a
run to its end journaled, logged and counted (loopwork.py drives the real
reconciler, runner, journal, logs and metrics in-process, with the far side
of the spawn helper answering at once; its docstring says why that and not
the daemon itself). A spawn is not compared: its cost is in the kernel,
which callgrind does not count.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import PY, BenchFailed, Results, Row  # noqa: E402

#: The work one unit stands for, as a script that does it `n` times.
WORK = {
    "route-10": "import route; route.time_decisions(route.build(10), {n})",
    "route-50": "import route; route.time_decisions(route.build(50), {n})",
    # The same decision as the daemon takes it: metrics and the web page's record
    # beside it, and the route.decision log line's fields (score, rejections).
    "route-50-daemon": "import route; route.time_decisions(route.build(50), {n}, daemon=True)",
    # The daemon's side of N trivial runs, in-process (see loopwork.py for why).
    "run-loop": "import loopwork; loopwork.drive({n})",
}


def count(snippet: str) -> int:
    """Instructions callgrind counts for the whole of `python -c snippet`."""
    with tempfile.TemporaryDirectory(prefix="factoryd-ic-") as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(HERE)}
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                PY,
                "-c",
                snippet,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise BenchFailed(
                f"instructions: callgrind failed ({proc.returncode}): {proc.stderr[-400:]}"
            )
        m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        if m is None:
            raise BenchFailed("instructions: callgrind wrote no instruction total")
        return int(m.group(1))


def per_unit(name: str, n: int) -> float:
    """Instructions per unit of `name`: (count at 2n - count at n) / n (for the
    run loop, n a multiple of loopwork.TASKS: it runs whole passes)."""
    small = count(WORK[name].format(n=n))
    large = count(WORK[name].format(n=2 * n))
    return (large - small) / n


def run(results: Results, decisions: int = 300, runs: int = 96) -> None:
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (apt-get install valgrind); skipped")
        return
    print("instructions: counting under callgrind (exact, machine-independent)")
    for arms in (10, 50):
        ic = per_unit(f"route-{arms}", decisions)
        results.add(
            Row(
                "instructions",
                f"route decision + settle, {arms} arms x 10 pools",
                f"{ic:,.0f}",
                "-",
                "-",
                "a regression shows as a rise",
            )
        )
    ic = per_unit("route-50-daemon", decisions)
    results.add(
        Row(
            "instructions",
            "route decision + settle, 50 arms x 10 pools, as the daemon takes it "
            "(metrics, web record, log fields)",
            f"{ic:,.0f}",
            "-",
            "-",
            "a regression shows as a rise",
        )
    )
    ic = per_unit("run-loop", runs)
    results.add(
        Row(
            "instructions",
            "a run's loop work (daemon side: route, spawn request, exit, settle, journal, "
            "log lines, metrics)",
            f"{ic:,.0f}",
            "-",
            "-",
            "a regression shows as a rise",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--runs", type=int, default=96, help="a multiple of 16")
    args = parser.parse_args()
    results = Results()
    run(results, args.decisions, args.runs)
    del results  # each row was printed as it was added


if __name__ == "__main__":
    main()
