"""`factoryd simulate`: load a config and a scenario, play them, print the answer.

Kept apart from cli.py so the command line stays a thin list of verbs; every
problem comes back as a `SimulateError` (one line) or a ConfigError.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from factoryd.config.loader import load_config
from factoryd.simulate.report import plot, render_table
from factoryd.simulate.runner import Results, check_policies, run_scenario
from factoryd.simulate.scenario import load_scenario


class SimulateError(Exception):
    """Bad input for the simulator; printed as one line."""


def simulate_results(
    config_path: str,
    scenario_path: str,
    *,
    seeds: int | None = None,
    policies: Sequence[str] = (),
    as_json: bool = False,
    plot_path: str | None = None,
) -> tuple[str, Results]:
    """The text `factoryd simulate` prints and the results it was made from
    (`--check` exits by `results.verdict`)."""
    if seeds is not None and not 1 <= seeds <= 1000:
        raise SimulateError(f"--seeds: expected 1 to 1000, got {seeds}")
    try:
        names = check_policies([p.strip() for p in policies if p.strip()])
    except ValueError as exc:
        raise SimulateError(f"--policies: {exc}") from None
    config = load_config(config_path)
    scenario = load_scenario(scenario_path, config)
    results = run_scenario(config, scenario, seeds=seeds, policies=names)
    if plot_path:
        try:
            plot(results, plot_path)
        except (RuntimeError, OSError) as exc:
            raise SimulateError(f"--plot: {exc}") from None
    if as_json:
        return json.dumps(results.as_dict(), indent=2), results
    return render_table(results), results
