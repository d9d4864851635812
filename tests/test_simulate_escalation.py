"""Escalation after a failure: the next run of a task avoids the arm that just failed it.

The rule is one pure function shared by the reconciler and the simulator
(core.lifecycle.exclusions_after); the simulator showed that without it a
router that misjudges an arm loses tasks by retrying them where they fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factoryd.core.lifecycle import exclusions_after
from factoryd.core.outcome import Outcome
from factoryd.routing.model import ArmSpec
from factoryd.simulate.runner import play
from test_simulate import mixed_truth, scenario, three_arms


def test_exclusions_after_each_outcome() -> None:
    arms = {n: ArmSpec(name=n, cli="command") for n in ("a", "b")}
    alone = {"a": arms["a"], "b": ArmSpec(name="b", cli="command", enabled=False)}

    def after(exclude: set[str], outcome: Outcome, arm: str, **kw: Any) -> set[str]:
        return exclusions_after(
            exclude, outcome, arm, allowed=kw.get("allowed", ()), arms=kw.get("arms", arms)
        )

    assert after(set(), Outcome.FAILED, "a") == {"a"}
    assert after({"a"}, Outcome.TIMED_OUT, "b") == {"a", "b"}
    assert after({"a"}, Outcome.STALLED, "b") == {"a", "b"}
    # a task with nowhere else to go retries where it is: its own choice of
    # arms, or the only enabled one
    assert after(set(), Outcome.FAILED, "a", allowed=("a",)) == set()
    assert after(set(), Outcome.FAILED, "a", arms=alone) == set()
    # a limit excludes the arm either way, as before
    assert after(set(), Outcome.LIMITED, "a", allowed=("a",)) == {"a"}
    # success, and what is not the arm's doing, start over
    for outcome in (Outcome.SUCCEEDED, Outcome.CANCELLED, Outcome.LOST, Outcome.SPAWN_FAILED):
        assert after({"a"}, outcome, "b") == set()


def test_the_simulator_retries_a_failed_task_on_another_arm(tmp_path: Path) -> None:
    config = three_arms(tmp_path)
    trace: list[tuple[Any, ...]] = []
    play(config, scenario(tmp_path, config, mixed_truth()), "balanced", 0, trace=trace)
    failed: dict[int, str] = {}
    retried = 0
    for entry in trace:
        if entry[0] == "settle":
            task, arm, outcome = entry[2], entry[3], entry[4]
            if outcome is Outcome.FAILED:
                failed[task] = arm
            else:
                failed.pop(task, None)
        elif entry[0] == "route" and entry[2] in failed and entry[7] is not None:
            assert failed[entry[2]] in entry[4]  # the failed arm was excluded
            assert entry[7] != failed[entry[2]]
            retried += 1
    assert retried > 5


def test_each_run_tells_the_router_how_many_attempts_its_task_has_left(tmp_path: Path) -> None:
    config = three_arms(tmp_path)  # max_restarts = 1: two attempts
    trace: list[tuple[Any, ...]] = []
    play(config, scenario(tmp_path, config, mixed_truth()), "balanced", 0, trace=trace)
    failures: dict[int, int] = {}
    seen: set[int | None] = set()
    for entry in trace:
        if entry[0] == "settle":
            if entry[4] in (Outcome.FAILED, Outcome.TIMED_OUT, Outcome.STALLED):
                failures[entry[2]] = failures.get(entry[2], 0) + 1
        elif entry[7] is not None:
            left = entry[3].attempts_left
            assert left == 1 - failures.get(entry[2], 0), entry
            seen.add(left)
    assert seen == {1, 0}
