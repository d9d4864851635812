"""Config validation: every problem names the file, the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_kit import ROOT, factoryd
from factoryd.config.loader import load_config, parse_config
from factoryd.config.tomltable import ConfigError

EXAMPLE = ROOT / "etc" / "factoryd.toml"

BASE = """
[[pools]]
name = "p"
unit = "runs"
limit = 10

[[arms]]
name = "local"
cli = "command"
pools = ["p"]

[[tasks]]
name = "t"
argv = ["true"]
"""


def problems(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "f.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [f"{p.key}: {p.message}" for p in exc.value.problems]


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert {t.name for t in config.tasks} >= {"heartbeat", "flaky", "report"}
    assert all(a.cli == "command" for a in config.arms if a.enabled)


def test_minimal_config_parses(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(BASE)
    config = load_config(path)
    assert config.daemon.state_dir == tmp_path / "state"
    assert config.tasks[0].argv == ("true",)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            '[[arms]]\nname = "x"\ncli = "command"\npools = ["nope"]\nargv=["a"]',
            "arms[1].pools[0]: no pool named 'nope'",
        ),
        (
            '[[pools]]\nname = "q"\nunit = "tokens"\nlimit = -5',
            "pools[1].limit: expected a number above 0",
        ),
        (
            '[[pools]]\nname = "q"\nunit = "bananas"\nlimit = 5',
            "pools[1].unit: expected one of tokens, runs, usd",
        ),
        (
            '[[pools]]\nname = "q"\nunit = "runs"\nlimit = 5\nwindow = "5 fortnights"',
            "pools[1].window: '5 fortnights' is not a duration",
        ),
        (
            '[[tasks]]\nname = "u"\nargv = ["x"]\ntimeout = "soon"',
            "tasks[1].timeout: 'soon' is not a duration",
        ),
        (
            '[[tasks]]\nname = "u"\nargv = ["x"]\nkind = "scheduled"\nschedule = "61 * * * *"',
            "tasks[1].schedule: not a valid cron expression",
        ),
        (
            '[[tasks]]\nname = "u"\nargv = ["x"]\ntimezone = "Mars/Olympus"',
            "tasks[1].timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            '[[tasks]]\nname = "u"\narms = ["ghost"]\nargv=["x"]',
            "tasks[1].arms[0]: no arm named 'ghost'",
        ),
        ('[[tasks]]\nname = "u"', "tasks[1].argv: is required: arm 'local' is a command arm"),
        ('[[tasks]]\nname = "t"\nargv = ["x"]', "tasks[1].name: duplicate task name 't'"),
        ('[daemon]\nmax_concurrent = "lots"', "daemon.max_concurrent: expected an integer"),
        ("[daemon]\nmax_concurrent = 10000000", "daemon.max_concurrent: expected an integer"),
        ('[routing]\nstrategy = "vibes"', "routing.strategy: expected one of balanced"),
        (
            "[routing.weights]\ntask_fitt = 0.3",
            "routing.weights.task_fitt: unknown key; did you mean 'task_fit'?",
        ),
        ('[daemon]\nstate_dri = "x"', "daemon.state_dri: unknown key; did you mean 'state_dir'?"),
        ("wat = 1", "wat: unknown key"),
        (
            '[[tasks]]\nname = "u"\nargv = ["x"]\nrestart = "sometimes"',
            "tasks[1].restart: expected one of always, on-failure, never",
        ),
        (  # a name is a path component: ".." would escape the log and work dirs
            '[[tasks]]\nname = ".."\nargv = ["x"]',
            "tasks[1].name: expected a name of letters, digits",
        ),
    ],
)
def test_each_problem_names_key_and_expectation(
    tmp_path: Path, snippet: str, expected: str
) -> None:
    found = problems(BASE + "\n" + snippet, tmp_path)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        BASE + '\n[daemon]\nmax_concurrent = 0\nloop_interval = "x"\nbogus = 1\n', tmp_path
    )
    assert len(found) == 3


def test_syntax_error_and_invalid_utf8_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    with pytest.raises(ConfigError) as exc:
        parse_config(b"[daemon\n", path)
    assert str(path) in str(exc.value) and "invalid TOML" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse_config(b'[daemon]\nlog_dir = "\xff\xfe"\n', path)
    assert "line 2" in str(exc.value) and "invalid UTF-8" in str(exc.value)


def test_check_prints_summary_and_exits_zero() -> None:
    out = factoryd("check", "--config", str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    assert "3 task(s)" in out.stdout and "pool(s)" in out.stdout and "arm(s)" in out.stdout


def test_check_reports_errors_with_file_and_key_and_exits_two(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(
        BASE + '\n[[arms]]\nname = "y"\ncli = "command"\npools = ["p", "zz"]\nargv = ["a"]\n'
    )
    out = factoryd("check", "--config", str(path))
    assert out.returncode == 2
    assert f"{path}: arms[1].pools[1]: no pool named 'zz'" in out.stderr
    assert "Traceback" not in out.stderr


def test_check_on_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    out = factoryd("check", "--config", str(tmp_path / "absent.toml"))
    assert out.returncode == 2 and "cannot read" in out.stderr and "Traceback" not in out.stderr
