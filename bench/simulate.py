"""Every bundled scenario through `factoryd simulate`'s engine: the result tables.

    python bench/simulate.py [--seeds N] [--markdown] [--plots DIR]

Prints, per scenario in scenarios/, each policy's mean and 95% interval over
paired seeds, and the verdict on the default strategy. With --plots (and
matplotlib installed: the bench extra) it draws each scenario's
cost-success plane into DIR. `simulate_section()` returns the same as one
markdown block, for bench/run_all.py to put into bench/RESULTS.md.
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


def run_all(seeds: int | None = None, plots: Path | None = None) -> list[Results]:
    out = []
    for scenario, config_name in SCENARIOS:
        config = load_config(ROOT / "scenarios" / f"{config_name}.toml")
        s = load_scenario(ROOT / "scenarios" / f"{scenario}.toml", config)
        results = run_scenario(config, s, seeds=seeds)
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            plot(results, plots / f"simulate-{scenario}.png")
        out.append(results)
    return out


def simulate_section(seeds: int | None = None, plots: Path | None = None) -> str:
    t0 = time.monotonic()
    results = run_all(seeds, plots)
    lines = [
        "## Routing simulator",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on "
        f"{platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}, in {time.monotonic() - t0:.0f} s. Each cell: mean "
        "± half the 95% interval over paired seeds; USD/success is USD spent per task "
        "succeeded; regret is the oracle's tasks succeeded minus the policy's.",
        "",
    ]
    for r in results:
        lines += [render_table(r, markdown=True), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, help="paired seeds (default: each scenario's)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--plots", type=Path, help="draw each cost-success plane here")
    args = parser.parse_args()
    if args.markdown:
        print(simulate_section(args.seeds, args.plots))
        return
    for r in run_all(args.seeds, args.plots):
        print(render_table(r))
        print()


if __name__ == "__main__":
    main()
