"""The real agent CLIs (installed from npm at pinned versions by scripts/install-agents),
driven by the real reconciler against the fake model server on 127.0.0.1.

For each CLI, four tasks run side by side:

* `success`: a text answer; the tokens and cost the daemon records are the
  ones the server sent (and, for CLIs that report no cost, what the arm's
  prices make of those tokens);
* `tool`: the agent calls its own file-writing tool; the file appears in
  the task's workdir;
* `requeue`: its preferred arm gets HTTP 429; the run ends `limited`, the
  arm's pool is held, and the task moves to its other arm and succeeds
  without using its restart budget;
* `stall`: the server never answers; the stall timeout ends the run and no
  process is left behind.

Without npm (or the CLIs) these tests skip with the reason; with CI=true a
missing CLI fails them.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import anyio
import pytest
from daemon_kit import running, tagged, until
from factoryd.core.lifecycle import TaskPhase
from fake_models import (
    CLI_KEYS,
    CLI_MODELS,
    CLI_URL_SUFFIX,
    TOOL_CONTENT,
    TOOL_FILE,
    USAGE,
    FakeModels,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("FACTORYD_AGENTS_BIN", ROOT / "agents" / "node_modules" / ".bin"))

PRICE_IN, PRICE_OUT = 0.003, 0.015  # USD per 1k tokens
COST = USAGE["input"] / 1000 * PRICE_IN + USAGE["output"] / 1000 * PRICE_OUT

pytestmark = pytest.mark.anyio


def cli_path(cli: str) -> Path:
    path = BIN / cli
    if not path.exists():
        reason = f"{cli} is not installed at {path} (run scripts/install-agents; needs npm)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def models():
    server = FakeModels().start()
    yield server
    server.stop()


def config(tmp_path: Path, cli: str, models: FakeModels, tag: str) -> str:
    exe = cli_path(cli)
    work = tmp_path / "work"
    work.mkdir()
    lines = [
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
log_dir = "{tmp_path / "logs"}"
metrics_listen = "off"
max_concurrent = 10
inherit_env = ["PATH", "LANG"]

[[pools]]
name = "primary"
unit = "runs"
limit = 100

[[pools]]
name = "secondary"
unit = "runs"
limit = 100

[[pools]]
name = "spend"
unit = "usd"
limit = 100
"""
    ]

    def arm(name: str, mode: str, pools: list[str]) -> str:
        return f"""
[[arms]]
name = "{name}"
cli = "{cli}"
provider = "factoryd"
model = "{CLI_MODELS[cli]}"
pools = {json.dumps(pools)}
executable = "{exe}"
base_url = "{models.url(mode, CLI_URL_SUFFIX[cli])}"
secrets = {{ {CLI_KEYS[cli]} = "env:FACTORYD_TEST_PROVIDER_KEY" }}
cost_per_1k_input = {PRICE_IN}
cost_per_1k_output = {PRICE_OUT}
"""

    def task(name: str, arms: list[str], **extra: object) -> str:
        out = (
            f'\n[[tasks]]\nname = "{name}"\nkind = "oneshot"\narms = {json.dumps(arms)}\n'
            f'prompt = "Please do it. WORKDIR={work}"\nworkdir = "{work}"\n'
            f'timeout = "120s"\nenv = {{ TEST_TAG = "{tag}" }}\n'
        )
        for key, value in extra.items():
            out += f"{key} = {json.dumps(value)}\n"
        return out

    lines += [
        arm("ok", "text", ["spend"]),
        arm("tools", "tool", ["secondary"]),
        arm("limited", "429", ["primary"]),
        arm("fallback", "text", ["secondary"]),
        arm("silent", "hang", ["secondary"]),
        task("success", ["ok"]),
        task("tool", ["tools"], requires_tools=True),
        task("requeue", ["limited", "fallback"], max_restarts=0),
        task("stall", ["silent"], stall_timeout="4s", restart="never"),
    ]
    return "".join(lines)


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini", "opencode"])
async def test_real_cli_end_to_end(
    cli: str, tmp_path: Path, models: FakeModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex
    monkeypatch.setenv("FACTORYD_TEST_PROVIDER_KEY", "sk-fake-" + tag[:8])
    text = config(tmp_path, cli, models, tag)
    async with running(tmp_path, text) as rec:
        names = ("success", "tool", "requeue", "stall")
        await until(
            lambda: all(
                rec.tasks[n].phase in (TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.GAVE_UP)
                for n in names
            ),
            timeout=150,
            what=f"{cli}: four tasks to finish",
        )
        tasks = {n: rec.tasks[n] for n in names}
        m = rec.metrics
        ledger = rec.engine.ledger

        # success: tokens and cost recorded are the server's
        assert tasks["success"].phase is TaskPhase.SUCCEEDED, tasks["success"].reason
        assert m.tokens.labels("ok", "input")._value.get() == USAGE["input"]
        assert m.tokens.labels("ok", "output")._value.get() == USAGE["output"]
        assert m.cost.labels("ok")._value.get() == pytest.approx(COST)
        assert ledger.pools["spend"].used == pytest.approx(COST)

        # tool: the agent wrote the file through its own tool
        assert tasks["tool"].phase is TaskPhase.SUCCEEDED, tasks["tool"].reason
        written = tmp_path / "work" / TOOL_FILE
        assert written.read_text().strip() == TOOL_CONTENT.strip()

        # requeue: limited on the 429 arm, then succeeded on the other, no restart spent
        rq = tasks["requeue"]
        assert rq.phase is TaskPhase.SUCCEEDED, rq.reason
        assert rq.runs == 2 and rq.restarts == 0 and rq.last_arm == "fallback"
        assert m.runs_finished.value("requeue", "limited", "limited") == 1
        assert m.limit_hits.labels("limited", "primary")._value.get() == 1
        assert ledger.pools["primary"].limited_until is not None

        # stall: ended by the stall timeout
        assert tasks["stall"].last_outcome == "stalled", tasks["stall"].reason
        assert m.stalls.labels("stall")._value.get() == 1

        # the server really was called by the CLI, with our prompt
        assert any("WORKDIR=" in json.dumps(r.body) for r in models.model_calls())
        assert not rec.runs
    # Nothing the agents started outlives them.
    with anyio.fail_after(10):
        while tagged(tag):
            await anyio.sleep(0.05)
