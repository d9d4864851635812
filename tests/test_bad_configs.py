"""200+ generated bad configs: each gives one clear error naming the file and the key,
never a traceback; through SIGHUP the running config stays in place."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from daemon_kit import count_events, factoryd, start_daemon, tagged, write_config
from factoryd.config.loader import parse_config
from factoryd.config.tomltable import ConfigError
from proc_kit import wait_for

BASE = """\
[daemon]
state_dir = "state"
max_concurrent = 4
loop_interval = "5s"
metrics_listen = "off"
log_format = "json"
run_log_max_bytes = "16MiB"
inherit_env = ["PATH"]

[routing]
strategy = "balanced"
max_staleness = "10m"
reservation_ttl = "2h"
session_token_budget = 5000000

[routing.weights]
task_fit = 0.35

[[pools]]
name = "plan"
unit = "runs"
limit = 100
window = "5h"
scarcity_k = 2
anchor = 2026-01-01T00:00:00Z

[[arms]]
name = "local"
cli = "command"
pools = ["plan"]
rates = { plan = 1.0 }
context_window = 100000
cost_per_1k_input = 0.003
max_complexity = 0.9
enabled = true

[[tasks]]
name = "job"
kind = "service"
argv = ["true"]
timeout = "1m"
stall_timeout = "30s"
restart = "on-failure"
max_restarts = 3
backoff = { initial = "1s", max = "10s" }
priority = "normal"
type = "debug"
complexity = 0.5
estimated_tokens = 1000
env = { A = "b" }
"""

# (key as it appears in BASE, the key path reported, bad replacement values)
REPLACEABLE = [
    (
        "max_concurrent = 4",
        "daemon.max_concurrent",
        ['"four"', "0", "-1", "10000000000", "1.5", "true", "[4]"],
    ),
    (
        'loop_interval = "5s"',
        "daemon.loop_interval",
        ['"5 parsecs"', '"-5s"', '""', '"1mo"', "true", '"10ms"', '"100000000d"'],
    ),
    ('metrics_listen = "off"', "daemon.metrics_listen", ['"nowhere"', "9464", '"host:99999"']),
    ('log_format = "json"', "daemon.log_format", ['"xml"', "1"]),
    ('run_log_max_bytes = "16MiB"', "daemon.run_log_max_bytes", ['"16 megs"', "-1", "true"]),
    ('inherit_env = ["PATH"]', "daemon.inherit_env", ['"PATH"', "[1]"]),
    ('strategy = "balanced"', "routing.strategy", ['"greedy"', "1", "[]"]),
    ('max_staleness = "10m"', "routing.max_staleness", ['"ten minutes"', "[]", '"2mo"']),
    ('reservation_ttl = "2h"', "routing.reservation_ttl", ['"2 hours"', "true"]),
    ("session_token_budget = 5000000", "routing.session_token_budget", ["0", '"5M"', "1.5"]),
    ("task_fit = 0.35", "routing.weights.task_fit", ['"high"', "-1", "1e300", "nan"]),
    ('unit = "runs"', "pools[0].unit", ['"dollars"', "3", "true"]),
    ("limit = 100", "pools[0].limit", ['"lots"', "0", "-5", "1e300", "inf", "[100]"]),
    ('window = "5h"', "pools[0].window", ['"5 hours"', "5", '"0s"', '"1mo3d"', '"x"']),
    ("scarcity_k = 2", "pools[0].scarcity_k", ["-1", "100", '"two"']),
    ("anchor = 2026-01-01T00:00:00Z", "pools[0].anchor", ['"yesterday"', "5", "true"]),
    ('cli = "command"', "arms[0].cli", ['"bash"', "1", '"Claude"']),
    ('pools = ["plan"]', "arms[0].pools", ['"plan"', "[1]", '["plan", "plan"]']),
    (
        "rates = { plan = 1.0 }",
        "arms[0].rates",
        ['{ plan = "x" }', "{ other = 1.0 }", "{ plan = -1 }", "3"],
    ),
    ("context_window = 100000", "arms[0].context_window", ['"big"', "-1", "1.5"]),
    ("cost_per_1k_input = 0.003", "arms[0].cost_per_1k_input", ['"cheap"', "-0.1"]),
    ("max_complexity = 0.9", "arms[0].max_complexity", ["1.5", '"high"', "-0.1"]),
    ("enabled = true", "arms[0].enabled", ['"yes"', "1"]),
    ('kind = "service"', "tasks[0].kind", ['"daemon"', "2"]),
    ('argv = ["true"]', "tasks[0].argv", ['"true"', "[]", "true"]),
    (
        'timeout = "1m"',
        "tasks[0].timeout",
        ['"one minute"', '"-1m"', "[]", "0", '"2mo"', '"none please"'],
    ),
    ('stall_timeout = "30s"', "tasks[0].stall_timeout", ['"30 secs"', "false", '"1y"', "0"]),
    ('restart = "on-failure"', "tasks[0].restart", ['"sometimes"', "1", "true"]),
    ("max_restarts = 3", "tasks[0].max_restarts", ['"3"', "-3", "3.5", "10000000000"]),
    (
        'backoff = { initial = "1s", max = "10s" }',
        "tasks[0].backoff",
        [
            '{ initial = "x", max = "10s" }',
            '{ initial = "10s", max = "1s" }',
            '{ initial = "1s", maxx = "10s" }',
            '"1s"',
        ],
    ),
    ('priority = "normal"', "tasks[0].priority", ['"urgent"', "5"]),
    ('type = "debug"', "tasks[0].type", ['"poetry"', "0"]),
    ("complexity = 0.5", "tasks[0].complexity", ["2", '"hard"', "-1"]),
    ("estimated_tokens = 1000", "tasks[0].estimated_tokens", ["-5", "1.5", '"lots"', "1e20"]),
    ('env = { A = "b" }', "tasks[0].env", ['"A=b"', "{ A = 1 }"]),
]

TABLE_ANCHORS = ["[daemon]", "[routing]", "[routing.weights]", "[[pools]]", "[[arms]]", "[[tasks]]"]
TABLE_PATHS = ["daemon", "routing", "routing.weights", "pools[0]", "arms[0]", "tasks[0]"]


def cases() -> list[tuple[str, bytes, str]]:
    out: list[tuple[str, bytes, str]] = []
    for original, key, values in REPLACEABLE:
        for value in values:
            name = original.split(" =")[0]
            text = BASE.replace(original, f"{name} = {value}", 1)
            out.append((f"{key}={value}", text.encode(), key))
    for anchor, path in zip(TABLE_ANCHORS, TABLE_PATHS, strict=True):
        for typo in (
            "colour",
            "statedir",
            "max_concurent",
            "limt",
            "timout",
            "x",
            "enabledd",
            "namee",
            "Arms",
        ):
            text = BASE.replace(anchor, f"{anchor}\n{typo} = 1", 1)
            out.append((f"unknown {path}.{typo}", text.encode(), f"{path}.{typo}"))
    for cron in (
        "61 * * * *",
        "* * *",
        "every day",
        "@sometimes",
        "* * * * * * * *",
        "0 25 * * *",
        "*/0 * * * *",
    ):
        text = BASE.replace('kind = "service"', 'kind = "scheduled"', 1).replace(
            "[[tasks]]", f'[[tasks]]\nschedule = "{cron}"', 1
        )
        out.append((f"cron {cron}", text.encode(), "tasks[0].schedule"))
    for tz in ("Mars/Olympus", "UTC+25", "Europe/Pariss", "", "../../etc/passwd"):
        text = BASE.replace("[[tasks]]", f'[[tasks]]\ntimezone = "{tz}"', 1)
        out.append((f"timezone {tz}", text.encode(), "tasks[0].timezone"))
    out.append(
        (
            "dangling pool",
            BASE.replace('pools = ["plan"]', 'pools = ["plan", "ghost"]', 1).encode(),
            "arms[0].pools[1]",
        )
    )
    out.append(
        (
            "dangling arm",
            BASE.replace('argv = ["true"]', 'argv = ["true"]\narms = ["nobody"]', 1).encode(),
            "tasks[0].arms[0]",
        )
    )
    out.append(
        (
            "dangling rate",
            BASE.replace(
                "rates = { plan = 1.0 }", "rates = { plan = 1.0, ghost = 2.0 }", 1
            ).encode(),
            "arms[0].rates.ghost",
        )
    )
    out.append(
        (
            "duplicate task",
            (BASE + '\n[[tasks]]\nname = "job"\nargv = ["true"]\n').encode(),
            "tasks[1].name",
        )
    )
    out.append(
        (
            "duplicate pool",
            (BASE + '\n[[pools]]\nname = "plan"\nunit = "runs"\nlimit = 1\n').encode(),
            "pools[1].name",
        )
    )
    out.append(
        (
            "bad name",
            BASE.replace('name = "job"', 'name = "job with spaces"', 1).encode(),
            "tasks[0].name",
        )
    )
    out.append(
        (
            "huge string",
            BASE.replace(
                'argv = ["true"]', f'argv = ["true"]\nprompt = "{"x" * 1_000_001}"', 1
            ).encode(),
            "tasks[0].prompt",
        )
    )
    for pos in (0, 10, len(BASE) // 2, len(BASE) - 3):
        raw = BASE.encode()
        out.append((f"invalid utf-8 at {pos}", raw[:pos] + b"\xff\xfe" + raw[pos:], "(line"))
    for junk in (
        "[daemon",
        "x = = 1",
        "[[tasks]\n",
        "a = [1,",
        'b = "unterminated',
        "= 3",
        "[daemon]\n[daemon]",
        "c = 1\nc = 2",
        "d = 1979-13-45",
    ):
        out.append((f"syntax {junk!r}", (BASE + "\n" + junk + "\n").encode(), "(syntax)"))
    return out


CASES = cases()


def test_there_are_at_least_two_hundred() -> None:
    assert len(CASES) >= 200


@pytest.mark.parametrize(("label", "raw", "key"), CASES, ids=[c[0][:60] for c in CASES])
def test_each_bad_config_gives_one_clear_error(label: str, raw: bytes, key: str) -> None:
    path = Path("/etc/factoryd/generated.toml")
    with pytest.raises(ConfigError) as exc:
        parse_config(raw, path)
    problems = exc.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.file == str(path)
    assert problem.key.startswith(key), (problem.key, key)
    assert problem.message and "Traceback" not in problem.message
    assert str(problem).startswith(f"{path}: {problem.key}: ")


def test_the_cli_prints_them_without_traceback(tmp_path: Path) -> None:
    for i, (_, raw, key) in enumerate(CASES[:: len(CASES) // 10]):
        path = tmp_path / f"bad{i}.toml"
        path.write_bytes(raw)
        out = factoryd("check", "--config", str(path))
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {key}")
        assert "Traceback" not in out.stderr


def test_sighup_with_bad_configs_keeps_the_running_one(tmp_path: Path) -> None:
    tag = "hup-" + tmp_path.name
    good = (
        BASE.replace('state_dir = "state"', f'state_dir = "{tmp_path / "state"}"')
        .replace('argv = ["true"]', 'argv = ["sleep", "600"]')
        .replace('env = { A = "b" }', f'env = {{ TEST_TAG = "{tag}" }}')
    )
    path = write_config(tmp_path, good)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(path, log)
    try:
        wait_for(lambda: len(tagged(tag)) == 1, timeout=20, what="the job")
        pid = tagged(tag)[0].pid
        picks = CASES[5::40][:5]
        for i, (_, raw, _) in enumerate(picks, start=1):
            path.write_bytes(raw)
            daemon.send_signal(signal.SIGHUP)
            wait_for(
                lambda i=i: count_events(log, "config.reload_failed") == i,
                timeout=30,  # a deadline, not a wait: a loaded 2-core host took over 10 s once
                what="reload",
            )
        assert [p.pid for p in tagged(tag)] == [pid]  # untouched
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
