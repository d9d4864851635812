"""A configured task's duration series exists from adoption, at zero, and its
first run adds to that same series (made once, not again at the run's end)."""

from __future__ import annotations

from factoryd.core.outcome import Outcome, RunResult
from factoryd.observe.metrics import Metrics
from prometheus_client import generate_latest


def _count(metrics: Metrics, task: str) -> str | None:
    prefix = f'factoryd_run_duration_seconds_count{{task="{task}"}} '
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :]
    return None


def test_a_prepared_task_is_scraped_at_zero_before_its_first_run() -> None:
    metrics = Metrics()
    assert _count(metrics, "build") is None
    metrics.prepare_tasks(["build", "lint"])
    assert _count(metrics, "build") == "0.0" and _count(metrics, "lint") == "0.0"
    result = RunResult("r1", Outcome.SUCCEEDED, "", started=1.0, ended=3.5)
    metrics.run_finished("build", "local", "command", result)
    assert _count(metrics, "build") == "1.0"
    metrics.prepare_tasks(["build"])  # a reload: the series keeps its count
    assert _count(metrics, "build") == "1.0"
