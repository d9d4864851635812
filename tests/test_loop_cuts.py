"""Guards for the per-run loop cuts: each cheaper path gives what the longer one gave.

A run's loop work was trimmed (bench/instructions.py counts it); these tests
pin the behaviour each trim must keep: output counters that skip a zero still
show their series and count real output; an arm's secrets still reach the run
and the redactor when arms without secrets skip that step; log lines still
scrub credential names inside containers while plain lists skip the walk;
a spec's digest found by identity is the one its content gives;
and the counted route rows run as bench/instructions.py writes them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_kit import header, task, write_config
from factoryd.config.loader import load_config
from factoryd.core.outcome import Outcome, RunResult
from factoryd.observe import logs
from factoryd.observe.logs import REDACTOR
from factoryd.observe.metrics import Metrics
from factoryd.run.launch import build_run
from factoryd.state.batch import spec_digest


def _series(metrics: Metrics, name: str) -> dict[str, float]:
    text = metrics.exposition().decode()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(name + "{")
    }


def test_a_silent_run_shows_its_output_series_at_zero_and_a_chatty_one_counts() -> None:
    metrics = Metrics()
    quiet = RunResult("r1", Outcome.SUCCEEDED, "exit status 0", started=1.0, ended=2.0)
    metrics.run_finished("t", "local", "command", quiet)
    key = 'factoryd_output_bytes_total{cli="command"}'
    assert _series(metrics, "factoryd_output_bytes_total") == {key: 0.0}
    dropped = 'factoryd_output_dropped_bytes_total{cli="command"}'
    assert _series(metrics, "factoryd_output_dropped_bytes_total") == {dropped: 0.0}
    chatty = RunResult(
        "r2",
        Outcome.SUCCEEDED,
        "exit status 0",
        bytes_logged=300,
        bytes_dropped=7,
        parse_errors=2,
    )
    metrics.run_finished("t", "local", "command", chatty)
    metrics.run_finished("t", "local", "command", chatty)
    assert _series(metrics, "factoryd_output_bytes_total") == {key: 600.0}
    assert _series(metrics, "factoryd_output_dropped_bytes_total") == {dropped: 14.0}
    errors = _series(metrics, "factoryd_parser_errors_total")
    assert list(errors.values()) == [4.0]


def test_an_arms_secret_reaches_the_run_and_the_redactor_and_none_is_invented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-loopcut-0123456789abcdef"
    monkeypatch.setenv("FACTORYD_LOOPCUT_KEY", secret)
    text = header(tmp_path) + task("job", "print('hi')")
    text = text.replace(
        'cli = "command"\n',
        'cli = "command"\nsecrets = { LOOPCUT_KEY = "env:FACTORYD_LOOPCUT_KEY" }\n',
        1,
    )
    config = load_config(write_config(tmp_path, text))
    assert config.launch[config.arms[0].name].secrets, "the arm must carry the secret"
    built = build_run(config, config.tasks[0], config.arms[0], "r1", {})
    assert built.spec.env["LOOPCUT_KEY"] == secret
    assert secret not in REDACTOR.scrub_line(f'{{"note": "{secret}"}}')

    plain = load_config(write_config(tmp_path, header(tmp_path) + task("job", "print('hi')")))
    env = build_run(plain, plain.tasks[0], plain.arms[0], "r2", {}).spec.env
    assert "LOOPCUT_KEY" not in env
    assert env["FACTORYD_RUN_ID"] == "r2"


def test_log_lines_scrub_credential_names_inside_lists_and_keep_plain_lists_as_they_are() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    logs.get_logger().info(
        "probe",
        pools=("a", "b"),
        hosts=["h1", 2, None],
        arms=[{"name": "x", "api_token": "abc"}, ["deep", {"password": 1}]],
        settings={"auth": "s3cr3t-value", "n": 1},
    )
    line = json.loads(out.getvalue())
    assert line["pools"] == ["a", "b"] and line["hosts"] == ["h1", 2, None]
    assert line["arms"] == [
        {"name": "x", "api_token": "[redacted]"},
        ["deep", {"password": "[redacted]"}],
    ]
    assert line["settings"] == {"auth": "[redacted]", "n": 1}


def test_the_counted_route_rows_run_as_written() -> None:
    """bench/instructions.py counts these snippets under callgrind; each must run."""
    bench = Path(__file__).resolve().parent.parent / "bench"
    sys.path.insert(0, str(bench))
    try:
        import instructions
    finally:
        sys.path.remove(str(bench))
    assert "daemon=True" in instructions.WORK["route-50-daemon"]
    for name in ("route-50", "route-50-daemon"):
        proc = subprocess.run(
            [sys.executable, "-c", instructions.WORK[name].format(n=3)],
            env={**os.environ, "PYTHONPATH": str(bench)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (name, proc.stderr[-400:])


def test_a_specs_digest_is_the_same_by_identity_by_equality_and_changes_with_it(
    tmp_path: Path,
) -> None:
    first = load_config(write_config(tmp_path, header(tmp_path) + task("job", "print('hi')")))
    again = load_config(write_config(tmp_path, header(tmp_path) + task("job", "print('hi')")))
    other = load_config(write_config(tmp_path, header(tmp_path) + task("job", "print('ho')")))
    spec = first.tasks[0]
    assert spec is not again.tasks[0]
    digest = spec_digest(spec)
    assert spec_digest(spec) == digest == spec_digest(again.tasks[0])
    assert spec_digest(other.tasks[0]) != digest
    assert len(digest) == 16 and int(digest, 16) >= 0
