"""`factoryd route`: explain a decision offline, optionally from a state snapshot."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from daemon_kit import factoryd
from factoryd.config.loader import load_config
from factoryd.routing.engine import RoutingEngine
from factoryd.routing.model import RouteRequest, Usage
from routing_kit import T0

CONFIG = """
[[pools]]
name = "plan"
unit = "runs"
limit = 10
window = "5h"

[[pools]]
name = "api"
unit = "usd"
limit = 5

[[arms]]
name = "sub"
cli = "claude"
model = "claude-sonnet-4-5"
pools = ["plan"]
context_window = 200000

[[arms]]
name = "key"
cli = "codex"
model = "gpt-5"
pools = ["api"]
cost_per_1k_input = 0.001
cost_per_1k_output = 0.004

[[arms]]
name = "old"
cli = "gemini"
enabled = false

[[tasks]]
name = "fix"
type = "debug"
estimated_tokens = 20000
"""


def route(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "f.toml"
    cfg.write_text(CONFIG)
    return factoryd("route", "--config", str(cfg), *args)


def test_explains_ranking_components_and_rejections(tmp_path: Path) -> None:
    out = route(tmp_path, "--task", "fix")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "chosen: sub" in text
    assert "fit" in text and "scarcity" in text
    assert "fit<=" in text  # the bound the quality floor is checked against
    assert "old" in text and "disabled" in text
    assert "Selected sub for task fix" in text


def test_an_escalation_says_it_ranks_by_fit(tmp_path: Path) -> None:
    plain = json.loads(route(tmp_path, "--task", "fix", "--json").stdout)
    assert plain["by_fit"] is False
    out = route(tmp_path, "--task", "fix", "--exclude", "key")
    assert out.returncode == 0, out.stderr
    assert "Escalation: ranked by task fit first, then score" in out.stdout


def test_json_output_carries_each_component(tmp_path: Path) -> None:
    out = route(tmp_path, "--task", "fix", "--json")
    d = json.loads(out.stdout)
    assert d["arm"] == "sub"
    assert [r["arm"] for r in d["ranking"]] == ["sub", "key"]
    assert set(d["ranking"][0]["components"]) >= {
        "task_fit",
        "fit_upper",
        "cost_floor",
        "throughput",
        "latency",
        "consumption",
        "effective_cost",
        "scarcity",
    }
    assert d["rejections"] == [{"arm": "old", "reason": "disabled", "detail": "disabled in config"}]


def test_state_snapshot_from_an_engine_replays_the_same_decision(tmp_path: Path) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text(CONFIG)
    engine = RoutingEngine.from_config(load_config(cfg))
    req = RouteRequest(task="fix", type="debug", estimated_tokens=20000)
    for _ in range(7):  # fill the plan so that the API key wins
        d = engine.route(req, T0)
        engine.settle(d, now=T0, usage=Usage(), ok=True, duration=30, task_type="debug")
    live = engine.route(req, T0)
    engine.ledger.rollback(live.reservation.id)
    state = tmp_path / "state.json"
    state.write_text(json.dumps(engine.snapshot(T0)))
    out = route(tmp_path, "--task", "fix", "--state", str(state), "--json")
    replay = json.loads(out.stdout)
    assert replay["arm"] == live.arm == "key"
    assert [r["score"] for r in replay["ranking"]] == [c.score for c in live.candidates]


def test_task_json_routes_adhoc_attributes(tmp_path: Path) -> None:
    out = route(tmp_path, "--task-json", '{"type": "planning", "arms": ["key"]}', "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["arm"] == "key"


def test_limit_in_state_keeps_the_arm_out(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    state.write_text(
        json.dumps(
            {
                "version": 1,
                "taken_at": "2026-11-22T10:00:00Z",
                "pools": {
                    "plan": {
                        "used": 0,
                        "limited_until": "2026-11-22T14:00:00Z",
                        "limited_reason": "Claude AI usage limit reached",
                    }
                },
            }
        )
    )
    out = route(tmp_path, "--task", "fix", "--state", str(state))
    assert "chosen: key" in out.stdout
    assert "pool plan limited until 2026-11-22T14:00:00Z" in out.stdout


def test_bad_inputs_are_clear_errors_not_tracebacks(tmp_path: Path) -> None:
    bad_state = tmp_path / "bad.json"
    bad_state.write_text('{"version": 1, "pools": {"plan": {"used": "lots"}}}')
    unknown_pool = tmp_path / "unknown.json"
    unknown_pool.write_text('{"version": 1, "pools": {"nope": {}}}')
    cases = [
        (("--task", "nope"), "no task or template named 'nope'"),
        (("--task-json", "{not json"), "--task-json: not valid JSON"),
        (("--task-json", '{"type": "poetry"}'), "type: expected one of"),
        (("--task", "fix", "--state", str(bad_state)), "state.pools.plan.used: expected a number"),
        (("--task", "fix", "--state", str(unknown_pool)), "no pool named 'nope' in the config"),
        (("--task", "fix", "--state", str(tmp_path / "missing.json")), "cannot read state"),
        (("--task", "fix", "--now", "yesterday"), "--now: expected an RFC 3339 time"),
    ]
    for args, message in cases:
        out = route(tmp_path, *args)
        assert out.returncode == 2, (args, out.stdout)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
