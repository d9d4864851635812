"""The routing simulator checks itself: agreement, the oracle bound, determinism,
limits held exactly as the live engine holds them, and cancels that teach nothing.

Scenarios here are a day or two of work with a few arms, so the whole file
runs in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from factoryd.cli import main
from factoryd.config.loader import load_config
from factoryd.config.model import Config
from factoryd.core.lesson import lesson
from factoryd.core.outcome import Outcome
from factoryd.routing.engine import RoutingEngine
from factoryd.routing.model import RejectReason
from factoryd.simulate.policies import policy_names
from factoryd.simulate.runner import play, run_scenario
from factoryd.simulate.scenario import Scenario, load_scenario
from factoryd.units.timefmt import parse_iso

CONFIG = """
[daemon]
state_dir = "state"
max_concurrent = 3
metrics_listen = "off"

[routing]
throughput_target = 0.0167
latency_target = "15m"

{pools}

{arms}

[[templates]]
name = "fix"
kind = "oneshot"
type = "debug"
estimated_tokens = 30_000
max_restarts = 1
restart_window = "7d"

[[templates]]
name = "chore"
kind = "oneshot"
type = "boilerplate"
priority = "low"
estimated_tokens = 10_000
max_restarts = 1
restart_window = "7d"
"""

ARM = """
[[arms]]
name = "{name}"
cli = "claude"
pools = [{pools}]
context_window = {ctx}
cost_per_1k_input = {price}
cost_per_1k_output = {price}
"""

POOLS = """
[[pools]]
name = "sub"
unit = "tokens"
limit = 300_000
window = "5h"
anchor = 2026-01-01T00:00:00Z

[[pools]]
name = "api"
unit = "usd"
limit = 50.0
window = "7d"
"""

TRUTH = """
[[truth]]
arm = "{arm}"
type = "*"
success = {success}
tokens = {{ mean = 30000, sd = 8000 }}
duration = {{ mean = "5m", sd = "2m" }}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def three_arms(tmp_path: Path) -> Config:
    arms = "".join(
        [
            ARM.format(name="strong", pools='"sub"', ctx=200_000, price=0.0),
            ARM.format(name="paid", pools='"api"', ctx=200_000, price=0.01),
            ARM.format(name="weak", pools="", ctx=8_000, price=0.0),
        ]
    )
    return load_config(write(tmp_path, "c.toml", CONFIG.format(pools=POOLS, arms=arms)))


def scenario(tmp_path: Path, config: Config, body: str, *, days: int = 1) -> Scenario:
    head = f"""
[simulation]
duration = "{days}d"
drain = "2h"
seeds = 3

[[arrivals]]
template = "fix"
every = "20m"

[[arrivals]]
template = "chore"
every = "30m"
"""
    return load_scenario(write(tmp_path, "s.toml", head + body), config)


def mixed_truth() -> str:
    return "".join(
        TRUTH.format(arm=a, success=p) for a, p in (("strong", 0.9), ("paid", 0.8), ("weak", 0.4))
    )


def test_with_one_arm_every_policy_agrees(tmp_path: Path) -> None:
    arms = ARM.format(name="only", pools="", ctx=100_000, price=0.002)
    config = load_config(write(tmp_path, "c.toml", CONFIG.format(pools="", arms=arms)))
    s = scenario(tmp_path, config, TRUTH.format(arm="only", success=0.7))
    results = run_scenario(config, s, seeds=2)
    assert results.policies == policy_names()
    for seed in range(2):
        seen = {
            (t.succeeded, t.runs, round(t.usd, 9), tuple(sorted(t.outcomes.items())))
            for t in (results.tallies[p][seed] for p in results.policies)
        }
        assert len(seen) == 1, seen
    assert results.tallies["oracle"][0].succeeded > 0


def test_the_oracle_is_never_beaten(tmp_path: Path) -> None:
    config = three_arms(tmp_path)
    s = scenario(tmp_path, config, mixed_truth())
    results = run_scenario(config, s, seeds=3)
    oracle = [t.succeeded for t in results.tallies["oracle"]]
    for policy in results.policies:
        mine = [t.succeeded for t in results.tallies[policy]]
        assert all(m <= o for m, o in zip(mine, oracle, strict=True)), (policy, mine, oracle)
    # and the oracle is not trivially tied: some simple rule does worse
    assert min(sum(t.succeeded for t in results.tallies[p]) for p in results.policies) < sum(oracle)


def test_the_same_seed_gives_the_same_result(tmp_path: Path) -> None:
    config = three_arms(tmp_path)
    s = scenario(tmp_path, config, mixed_truth())
    for policy in ("balanced", "random", "oracle"):
        a, b = play(config, s, policy, 7).tally, play(config, s, policy, 7).tally
        assert (a.succeeded, a.runs, a.usd, a.waits, a.pool_use) == (
            b.succeeded,
            b.runs,
            b.usd,
            b.waits,
            b.pool_use,
        )
    other = play(config, s, "balanced", 8).tally
    assert (other.arrived, other.waits) != (a.arrived, a.waits)


def replay(config: Config, trace: list[tuple[Any, ...]]) -> RoutingEngine:
    """Feed the trace's calls, in order, to a fresh engine as the reconciler would."""
    engine = RoutingEngine.from_config(config)
    decisions = {}
    for entry in trace:
        if entry[0] == "route":
            _, now, task, req, exclude, busy, ttl, arm, forced = entry
            if forced is None:  # a baseline found no arm: nothing reached the ledger
                continue
            if forced:  # a baseline: only its accepted arm reached the ledger
                d = engine.route(req, now, force=arm, ttl=ttl)
            else:
                d = engine.route(req, now, exclude=exclude, busy=busy, ttl=ttl)
            assert d.arm == arm, (now, task, d.rationale())
            decisions[task] = d
        else:
            _, now, task, arm, outcome, usage, duration, given, text, held = entry
            engine.settle(
                decisions.pop(task),
                now=now,
                usage=usage,
                ok=outcome is Outcome.SUCCEEDED,
                duration=duration,
                task_type=_type_of(trace, task),
                limited=not lesson(outcome, "command").teaches,
            )
            if outcome is Outcome.LIMITED:
                assert engine.report_limit(arm, given, now, text) == held
    return engine


def _type_of(trace: list[tuple[Any, ...]], task: int) -> str:
    return next(str(e[3].type) for e in trace if e[0] == "route" and e[2] == task)


@pytest.mark.parametrize("reset_in_message", [True, False])
def test_a_provider_limit_below_the_configured_one_is_held_as_the_live_engine_holds_it(
    tmp_path: Path, reset_in_message: bool
) -> None:
    config = three_arms(tmp_path)
    body = mixed_truth() + (
        '\n[[provider_limits]]\npool = "sub"\nlimit = 120_000\nwindow = "5h"\n'
        f"reset_in_message = {str(reset_in_message).lower()}\n"
    )
    s = scenario(tmp_path, config, body)
    trace: list[tuple[Any, ...]] = []
    sim = play(config, s, "balanced", 0, trace=trace)
    hits = [e for e in trace if e[0] == "settle" and e[4] is Outcome.LIMITED]
    assert len(hits) >= 2 and sim.tally.limit_hits == len(hits)
    backoff = next(p for p in config.pools if p.name == "sub").limit_backoff
    for hit in hits:
        now, given, held = hit[1], hit[7], hit[9]
        if reset_in_message:
            # held until the provider's own window ends, as its 429 said
            assert given is not None and held == given > now
            assert (given - parse_iso("2026-01-01T00:00:00Z")) % (5 * 3600) == 0
        else:
            assert given is None and held - now >= backoff
    # the same calls on a fresh engine decide the same arms and hold the same pools
    live = replay(config, trace)
    for name, state in sim.engine.ledger.pools.items():
        mine = live.ledger.pools[name]
        assert (mine.used, mine.limited_until, mine.strikes) == (
            state.used,
            state.limited_until,
            state.strikes,
        )
    # and no run started on the pool while it was held
    for entry in trace:
        if entry[0] == "route" and entry[7] == "strong":
            assert not any(h[1] <= entry[1] < h[9] for h in hits), entry[1]


def test_operator_cancels_do_not_move_quality(tmp_path: Path) -> None:
    config = three_arms(tmp_path)
    cancel_all = (
        '\n[[events]]\nat = "0s"\ntype = "operator_cancel"\nfraction = 1.0\nrestart = false\n'
    )
    s = scenario(tmp_path, config, mixed_truth() + cancel_all)
    sim = play(config, s, "balanced", 0)
    # Every run is cancelled unless the provider's limit ended it first (a paced
    # router fills the subscription's window; a limit teaches nothing either).
    outcomes = sim.tally.outcomes
    assert set(outcomes) <= {"cancelled", "limited"}
    assert outcomes["cancelled"] > 10 * outcomes["limited"]
    assert outcomes["cancelled"] + outcomes["limited"] == sim.tally.runs
    assert sim.engine.quality.stats == {}
    assert all(not t.buckets for t in sim.engine.telemetry.arms.values())


def test_simulate_command_prints_the_json_the_issue_asks_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = three_arms(tmp_path)
    scenario(tmp_path, config, mixed_truth())
    argv = [
        "simulate",
        "--config",
        str(tmp_path / "c.toml"),
        "--scenario",
        str(tmp_path / "s.toml"),
    ]
    assert (
        main([*argv, "--seeds", "2", "--policies", "balanced,cheapest_first,oracle", "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["scenario"] == "s" and out["seeds"] == 2
    assert set(out["policies"]) == {"balanced", "cheapest_first", "oracle"}
    for figures in out["policies"].values():
        for key in ("succeeded", "usd", "limit_hits", "wasted_runs", "wait_p95_s", "never_done"):
            lo, hi = figures[key]["ci95"]
            assert lo <= figures[key]["mean"] <= hi
    assert main([*argv, "--seeds", "1", "--policies", "balanced,oracle"]) == 0
    table = capsys.readouterr().out
    assert "balanced (default)" in table and "oracle" in table


def test_a_bad_scenario_is_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    three_arms(tmp_path)
    write(
        tmp_path,
        "s.toml",
        '[simulation]\nduraton = "1d"\n[[arrivals]]\ntemplate = "nope"\nevery = "1h"\n',
    )
    argv = ["simulate", "-c", str(tmp_path / "c.toml"), "--scenario", str(tmp_path / "s.toml")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("simulation.duraton: unknown key; did you mean 'duration'?" in e for e in err)
    assert any("no template named 'nope'" in e for e in err)
    assert all(e.startswith("error: ") for e in err)


def test_a_limit_storm_refuses_every_run_on_its_pool(tmp_path: Path) -> None:
    config = three_arms(tmp_path)
    storm = '\n[[events]]\nat = "0s"\ntype = "limit_storm"\npool = "sub"\nfor = "1d"\n'
    trace: list[tuple[Any, ...]] = []
    play(
        config, scenario(tmp_path, config, mixed_truth() + storm), "static_priority", 0, trace=trace
    )
    on_strong = [e for e in trace if e[0] == "settle" and e[3] == "strong"]
    assert on_strong and all(e[4] is Outcome.LIMITED for e in on_strong)
    live = replay(config, trace)
    assert live.ledger.pools["sub"].strikes == len(on_strong)
    d = live.route(
        next(e[3] for e in trace if e[0] == "route"), on_strong[-1][1] + 1, force="strong"
    )
    assert d.arm is None and d.rejections[0].reason is RejectReason.POOL_LIMITED
