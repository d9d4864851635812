"""Every bundled scenario through `factoryd simulate`'s engine: the result tables.

    python bench/simulate.py [--seeds N] [--scenarios a,b] [--markdown] [--plots DIR]
                             [--write] [--check]

Prints, per scenario in scenarios/, each policy's mean and 95% interval over
paired seeds, and the verdict on the default strategy: issue 17's criterion
computed from the per-seed differences default - baseline (tasks succeeded,
and tasks succeeded per USD) and the share of the oracle's tasks succeeded.
`--check` exits 1 when any scenario's verdict fails, so the claim that the
router wins is a test the bench runs, not a reading of the table. With
--plots (and matplotlib installed: the bench extra) it draws each
scenario's cost-success plane into DIR; --write puts the markdown and the
plots into bench/simulate/. `simulate_section()` returns the markdown, for
bench/run_all.py to put into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "daemon"))

from factoryd.config.loader import load_config  # noqa: E402
from factoryd.simulate.report import plot, render_table  # noqa: E402
from factoryd.simulate.runner import Results, run_scenario  # noqa: E402
from factoryd.simulate.scenario import load_scenario  # noqa: E402

#: Each bundled scenario and the config it runs against.
SCENARIOS = (
    ("subscriptions", "accounts"),
    ("mixed", "models"),
    ("degrading", "accounts"),
    ("outages", "accounts"),
    ("local", "accounts"),
    ("cancels", "accounts"),
)


#: Where --write (and `make bench`) put the section and the plots.
OUT = HERE / "simulate"


def run_all(
    seeds: int | None = None, plots: Path | None = None, only: tuple[str, ...] = ()
) -> list[Results]:
    out = []
    for scenario, config_name in SCENARIOS:
        if only and scenario not in only:
            continue
        config = load_config(ROOT / "scenarios" / f"{config_name}.toml")
        s = load_scenario(ROOT / "scenarios" / f"{scenario}.toml", config)
        results = run_scenario(config, s, seeds=seeds)
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            plot(results, plots / f"simulate-{scenario}.png")
        out.append(results)
    return out


def verdict_lines(results: list[Results]) -> list[str]:
    """One line per scenario: holds, or fails with baseline, metric and by how much."""
    out = []
    for r in results:
        text = r.verdict.sentence() if r.verdict is not None else "no default strategy run"
        out.append(f"{r.scenario} ({r.seeds} seeds): {text}")
    return out


def all_hold(results: list[Results]) -> bool:
    return all(r.verdict is not None and r.verdict.holds for r in results)


def simulate_section(
    seeds: int | None = None,
    plots: Path | None = None,
    results: list[Results] | None = None,
    seconds: float | None = None,
) -> str:
    t0 = time.monotonic()
    if results is None:
        results = run_all(seeds, plots)
    if seconds is None:
        seconds = time.monotonic() - t0
    lines = [
        "## Routing simulator",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on "
        f"{platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}, in {seconds:.0f} s. Each cell: mean "
        "± half the 95% interval over paired seeds; USD/success is USD spent per task "
        "succeeded; regret is the oracle's tasks succeeded minus the policy's.",
        "",
        "### Verdicts",
        "",
        "Issue 17's criterion, computed by `python bench/simulate.py --check`: against "
        "every baseline, the per-seed difference default - baseline (every policy sees "
        "the same arrivals and hidden outcomes per seed), its mean and 95% interval, on "
        "tasks succeeded and on tasks succeeded per USD. It fails when a baseline "
        "succeeds more beyond the interval, or is ahead per USD while the default is "
        "not ahead of it on tasks succeeded, or the default reaches under 90% of the "
        "oracle's tasks succeeded. A baseline cheaper per success that succeeds less "
        "is a trade-off, listed, not a failure.",
        "",
        *(f"- {line}" for line in verdict_lines(results)),
        "",
    ]
    for r in results:
        lines += [render_table(r, markdown=True), ""]
    return "\n".join(lines)


def write_results(seeds: int | None = None) -> str:
    """Run every scenario, write bench/simulate/RESULTS.md and the plots; return the section."""
    section = simulate_section(seeds, OUT)
    (OUT / "RESULTS.md").write_text(section + "\n")
    return section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, help="paired seeds (default: each scenario's)")
    parser.add_argument("--scenarios", help="comma-separated subset of the bundled scenarios")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--plots", type=Path, help="draw each cost-success plane here")
    parser.add_argument("--write", action="store_true", help="write bench/simulate/RESULTS.md")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every verdict holds")
    args = parser.parse_args()
    only = tuple(s.strip() for s in (args.scenarios or "").split(",") if s.strip())
    unknown = [s for s in only if s not in dict(SCENARIOS)]
    if unknown:
        raise SystemExit(
            f"--scenarios: unknown {unknown[0]!r} (known: {', '.join(dict(SCENARIOS))})"
        )
    t0 = time.monotonic()
    plots = OUT if args.write else args.plots
    results = run_all(args.seeds, plots, only)
    if args.write or args.markdown:
        section = simulate_section(results=results, seconds=time.monotonic() - t0)
        if args.write:
            (OUT / "RESULTS.md").write_text(section + "\n")
        print(section)
    else:
        for r in results:
            print(render_table(r))
            print()
        print("\n".join(verdict_lines(results)))
    if args.check and not all_hold(results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
