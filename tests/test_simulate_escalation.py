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
from factoryd.simulate.runner import play
from test_simulate import mixed_truth, scenario, three_arms


def test_exclusions_after_each_outcome() -> None:
    assert exclusions_after(set(), Outcome.FAILED, "a", alternatives=True) == {"a"}
    assert exclusions_after({"a"}, Outcome.TIMED_OUT, "b", alternatives=True) == {"a", "b"}
    assert exclusions_after({"a"}, Outcome.STALLED, "b", alternatives=True) == {"a", "b"}
    # a task with nowhere else to go retries where it is
    assert exclusions_after(set(), Outcome.FAILED, "a", alternatives=False) == set()
    # a limit excludes the arm either way, as before
    assert exclusions_after(set(), Outcome.LIMITED, "a", alternatives=False) == {"a"}
    # success, and what is not the arm's doing, start over
    for outcome in (Outcome.SUCCEEDED, Outcome.CANCELLED, Outcome.LOST, Outcome.SPAWN_FAILED):
        assert exclusions_after({"a"}, outcome, "b", alternatives=True) == set()


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
