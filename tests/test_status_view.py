"""`factoryd status` for a known state: the exact table an operator reads."""

from __future__ import annotations

from pathlib import Path

from daemon_kit import write_config
from factoryd.config.loader import load_config
from factoryd.core.lifecycle import TaskPhase
from factoryd.reconcile.reconciler import Reconciler
from factoryd.reconcile.runstate import Clock
from factoryd.service.status import build_status, render_status

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z

CONFIG = """
[daemon]
state_dir = "{state}"
max_concurrent = 4
metrics_listen = "off"

[[pools]]
name = "plan"
unit = "runs"
limit = 100
window = "5h"

[[pools]]
name = "api"
unit = "usd"
limit = 20

[[arms]]
name = "claude"
cli = "claude"
model = "claude-sonnet-4-5"
pools = ["plan"]

[[arms]]
name = "codex"
cli = "codex"
pools = ["api"]

[[tasks]]
name = "fixer"
arms = ["claude", "codex"]

[[tasks]]
name = "nightly"
kind = "scheduled"
schedule = "0 2 * * *"
timezone = "Europe/Paris"
arms = ["codex"]
"""


def test_status_table_for_a_known_state(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG.replace("{state}", str(tmp_path / "s")))
    rec = Reconciler(load_config(path), clock=Clock(mono=lambda: 50.0, wall=lambda: T))
    rec.last_pass_wall = T
    fixer = rec.tasks["fixer"]
    fixer.phase, fixer.reason = TaskPhase.GAVE_UP, "5 restarts within 600s; last run failed"
    fixer.runs, fixer.restarts, fixer.last_arm = 6, 5, "claude"
    rec.engine.ledger.advance(T)
    rec.engine.ledger.pools["plan"].used = 50
    rec.engine.report_limit("codex", T + 3600, T, "You've hit your usage limit")
    text = render_status(build_status(rec))
    body = text.split("\n", 1)[1]  # the first line carries the pid and the path
    assert body == (
        "runs 0/4  strategy balanced  last pass 2027-01-15T08:00:00Z\n"
        "last reload: none since start\n"
        "\n"
        "TASK     KIND       PHASE    ARM     AGE  RUNS  RESTARTS  REASON"
        "                                   LOG\n"
        "fixer    service    gave_up  claude  -    6     5         5 restarts within 600s;"
        " last run failed  -\n"
        "nightly  scheduled  waiting  -       -    0     0         new; next fire at"
        " 2027-01-16T01:00:00Z   -\n"
        "\n"
        "POOL  USED  RESERVED  LIMIT  UNIT  SCARCITY   RESETS                LIMITED UNTIL\n"
        "plan  50    0         100    runs  x4         2027-01-15T13:00:00Z  -\n"
        "api   0     0         20     usd   exhausted  never                 2027-01-15T09:00:00Z\n"
        "\n"
        "ARM     CLI     HEALTH   RUNNING  SUCCESS  POOLS  UNTIL\n"
        "claude  claude  ok       0        -        plan   -\n"
        "codex   codex   limited  0        -        api    -"
    )
