"""Run every benchmark (factoryd and its peer side by side) and write bench/RESULTS.md.

    python bench/run_all.py [--quick] [--skip-simulate] [--skip-slow]

`--quick` shortens the idle window and the kill counts (for a smoke run);
RESULTS.md always says which it was. `--skip-simulate` quotes the simulator's
last written results instead of running the scenarios again (they take
minutes and do not depend on the machine: the same seeds give the same
figures). `--skip-slow` leaves out the slower machine's emulation
(bench/slow_machine.py: the spawn, route and exit rows again under a debug
CPython, which needs Debian's python3.11-dbg).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
import exit_latency  # noqa: E402
import fleet  # noqa: E402
import fleet_daemons  # noqa: E402
import idle  # noqa: E402
import instructions  # noqa: E402
import memory  # noqa: E402
import orphans  # noqa: E402
import output  # noqa: E402
import scale  # noqa: E402
import simulate  # noqa: E402
import slow_machine  # noqa: E402
import spawn  # noqa: E402
import worktree  # noqa: E402


def table(rows: list[common.Row]) -> list[str]:
    """RESULTS.md's table of rows, a target missed in bold."""
    out = [
        "| bench | metric | factoryd | peer | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        out.append(
            f"| {r.bench} | {r.metric} | {r.ours} | {r.peer} | {r.ratio} | {r.target} | {met} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--skip-simulate",
        action="store_true",
        help="quote bench/simulate/RESULTS.md as it is (written by `bench/simulate.py --write`)",
    )
    parser.add_argument(
        "--skip-slow",
        action="store_true",
        help="leave out bench/slow_machine.py (the targets under a debug CPython)",
    )
    args = parser.parse_args()
    results = common.Results()
    slow_results = common.Results()
    slow_machine_line = ""
    t0 = time.monotonic()
    try:
        spawn.run(results, reps=2 if args.quick else 7)
        exit_latency.run(
            results, kills=30 if args.quick else 100, peer_kills=10 if args.quick else 30
        )
        idle.run(results, window=20.0 if args.quick else 60.0)
        scale.run(results)
        instructions.run(results, decisions=100 if args.quick else 300)
        memory.run(results)
        output.run(results, reps=2 if args.quick else 3)
        orphans.run(results)
        fleet.run(results, quick=args.quick)
        fleet_daemons.run(results, quick=args.quick)
        worktree.run(results, reps=3 if args.quick else 7)
        if not args.skip_slow:
            slow_machine_line = slow_machine.run(slow_results, quick=args.quick)
    except common.BenchFailed as exc:
        raise SystemExit(f"benchmark failed: {exc}") from None
    elapsed = time.monotonic() - t0
    lines = [
        "# factoryd benchmark results",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {common.machine()}, "
        f"in {elapsed / 60:.1f} min{' (--quick)' if args.quick else ''}. "
        "Peer: supervisord 4.3.0 (and a bare Popen loop), measured in the same run, "
        "alternating where the benchmark repeats. Figures are medians [min..max] unless "
        "marked; spawn ratios are medians of back-to-back pairs (each repetition's ratio "
        "is listed); written by `python bench/run_all.py`.",
        "",
        *table(results.rows),
    ]
    if slow_results.rows:
        lines += [
            "",
            "## The slower machine, emulated",
            "",
            "The spawn, route and exit rows again, every contender under CPython's debug build "
            "(bench/slow_machine.py says why and how it was calibrated): "
            f"{slow_machine_line}.",
            "",
            *table(slow_results.rows),
        ]
    # The router against baselines and a hindsight oracle, on the bundled scenarios.
    if args.skip_simulate:
        lines += ["", (HERE / "simulate" / "RESULTS.md").read_text().rstrip("\n")]
    else:
        lines += ["", simulate.write_results(3 if args.quick else None)]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
