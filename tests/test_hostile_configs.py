"""Configs and submissions as an attacker or a careless operator writes them.

`check` answers in one line, at once, whatever the path names (a FIFO, a
device, a huge file, 100,000 nested brackets); values the kernel cannot
carry to a program (NUL bytes, `=` in an environment name, an empty
program) are refused where they are read, naming file and key; and no
error ever shows a secret or an environment value.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from daemon_kit import factoryd
from factoryd.config.files import MAX_CONFIG_BYTES
from factoryd.config.loader import load_config, parse_config
from factoryd.config.submission import SubmitError, build_spec
from factoryd.config.tomltable import ConfigError

GOOD = """\
[daemon]
state_dir = "state"
metrics_listen = "off"

[[arms]]
name = "local"
cli = "command"

[[templates]]
name = "job"
argv = ["true"]

[[tasks]]
name = "svc"
argv = ["sleep", "60"]
"""

PATH = Path("/etc/factoryd/hostile.toml")


def one_problem(text: str) -> tuple[str, str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text.encode(), PATH)
    problems = exc.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    assert problems[0].file == str(PATH)
    return problems[0].key, problems[0].message


def check_one_line(path: Path) -> str:
    started = time.monotonic()
    out = factoryd("check", "--config", str(path))
    assert time.monotonic() - started < 20  # it answers; it does not hang
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr[:500]
    assert "Traceback" not in out.stderr
    return lines[0]


# -- what the path names ---------------------------------------------------------


def test_check_on_a_fifo_answers_in_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    line = check_one_line(fifo)
    assert str(fifo) in line and "not a regular file (a FIFO)" in line


def test_check_on_a_symlink_to_a_fifo_answers_in_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    link = tmp_path / "config.toml"
    link.symlink_to(tmp_path / "fifo")
    assert "a FIFO" in check_one_line(link)


def test_check_on_dev_zero_answers_in_one_line() -> None:
    assert "not a regular file (a character device)" in check_one_line(Path("/dev/zero"))


def test_check_on_a_directory_answers_in_one_line(tmp_path: Path) -> None:
    assert "a directory" in check_one_line(tmp_path)


def test_an_oversized_config_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with big.open("wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ConfigError, match="too large"):
        load_config(big)


@pytest.mark.parametrize(
    "nested",
    ["x = " + "[" * 100_000, "x = " + "{a = " * 100_000, "x = " + "[" * 100_000 + "]" * 100_000],
    ids=["arrays", "inline-tables", "balanced-arrays"],
)
def test_deep_nesting_is_one_problem_within_a_second(nested: str) -> None:
    started = time.monotonic()
    key, message = one_problem(nested)
    assert time.monotonic() - started < 1.0
    assert key == "(syntax)"
    assert "nested too deeply" in message or "invalid TOML" in message


def test_check_on_deep_nesting_prints_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 100_000)
    assert f"{path}: (syntax): " in check_one_line(path)


# -- what the kernel cannot carry ---------------------------------------------------


@pytest.mark.parametrize(
    ("original", "replacement", "key"),
    [
        ('argv = ["sleep", "60"]', 'argv = ["sleep", "6\\u00000"]', "tasks[0].argv[1]"),
        ('argv = ["sleep", "60"]', 'argv = ["", "60"]', "tasks[0].argv[0]"),
        ('argv = ["sleep", "60"]', 'argv = ["  "]', "tasks[0].argv[0]"),
        (
            'argv = ["sleep", "60"]',
            'argv = ["true"]\nenv = { "A=B" = "x" }',
            'tasks[0].env."A=B"',
        ),
        (
            'argv = ["sleep", "60"]',
            'argv = ["true"]\nenv = { A = "x\\u0000y" }',
            "tasks[0].env.A",
        ),
        (
            'argv = ["sleep", "60"]',
            'argv = ["true"]\nprompt = "do \\u0000 this"',
            "tasks[0].prompt",
        ),
        (
            'argv = ["sleep", "60"]',
            'argv = ["true"]\ninherit_env = ["PATH", "X=1"]',
            "tasks[0].inherit_env[1]",
        ),
        (
            'argv = ["sleep", "60"]',
            'argv = ["true"]\nworkdir = "/tmp/\\u0000"',
            "tasks[0].workdir",
        ),
        ('cli = "command"', 'cli = "command"\nargv = ["", "x"]', "arms[0].argv[0]"),
        ('cli = "command"', 'cli = "command"\nexecutable = ""', "arms[0].executable"),
        ('metrics_listen = "off"', 'metrics_listen = "off"\ninherit_env = ["="]', "daemon"),
        ('state_dir = "state"', 'state_dir = "st\\u0000ate"', "daemon.state_dir"),
    ],
    ids=[
        "nul-in-argv",
        "empty-program",
        "blank-program",
        "equals-in-env-name",
        "nul-in-env-value",
        "nul-in-prompt",
        "equals-in-inherit-env",
        "nul-in-workdir",
        "empty-arm-program",
        "empty-arm-executable",
        "equals-in-daemon-inherit-env",
        "nul-in-state-dir",
    ],
)
def test_what_execve_cannot_carry_is_refused_naming_the_key(
    original: str, replacement: str, key: str
) -> None:
    got, message = one_problem(GOOD.replace(original, replacement, 1))
    assert got.startswith(key), (got, message)
    assert "x\0y" not in message


def test_a_submission_with_a_nul_byte_is_refused_naming_the_key() -> None:
    config = parse_config(GOOD.encode(), PATH)
    for data, key in (
        ({"argv": ["echo", "a\0b"]}, "argv[1]"),
        ({"argv": [""]}, "argv[0]"),
        ({"argv": ["true"], "env": {"K=V": "x"}}, "env"),
        ({"argv": ["true"], "prompt": "\0"}, "prompt"),
    ):
        with pytest.raises(SubmitError) as exc:
            build_spec(config, {"spec": data}, "sub-1", "socket")
        assert key in str(exc.value)
    with pytest.raises(SubmitError, match="argv"):
        build_spec(config, {"template": "job", "set": {"argv": ["a\0"]}}, "sub-2", "socket")


# -- what must never be shown -----------------------------------------------------------

SECRET = "sk-live-9f8e7d6c5b4a"


@pytest.mark.parametrize(
    ("replacement", "key"),
    [
        (f'secrets = {{ API_KEY = "{SECRET}" }}', "arms[0].secrets.API_KEY"),
        (f'secrets = "{SECRET}"', "arms[0].secrets"),
        ("secrets = { API_KEY = 98765432123 }", "arms[0].secrets.API_KEY"),
        ("env = { TOKEN = 98765432123 }", "arms[0].env.TOKEN"),
        (f'env = "{SECRET}"', "arms[0].env"),
        (f'secrets = {{ "API=KEY" = "env:{SECRET}" }}', 'arms[0].secrets."API=KEY"'),
    ],
    ids=[
        "inline-secret",
        "secrets-as-string",
        "secret-number",
        "env-number",
        "env-string",
        "bad-name",
    ],
)
def test_errors_about_secrets_and_env_values_name_the_key_never_the_value(
    replacement: str, key: str
) -> None:
    got, message = one_problem(GOOD.replace('cli = "command"', f'cli = "command"\n{replacement}'))
    assert got == key
    assert SECRET not in message and "98765432123" not in message


def test_check_does_not_print_an_inline_secret(tmp_path: Path) -> None:
    path = tmp_path / "leaky.toml"
    path.write_text(
        GOOD.replace('cli = "command"', f'cli = "command"\nsecrets = {{ K = "{SECRET}" }}')
    )
    line = check_one_line(path)
    assert "arms[0].secrets.K" in line and SECRET not in line


# -- the route command's inputs ---------------------------------------------------------


def test_route_answers_hostile_state_files_and_task_json_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "factoryd.toml"
    config.write_text(GOOD)
    fifo = tmp_path / "state.fifo"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    for args, expected in (
        (("--task", "svc", "--state", str(fifo)), "not a regular file (a FIFO)"),
        (("--task", "svc", "--state", "/dev/zero"), "a character device"),
        (("--task", "svc", "--state", str(deep)), "nested too deeply"),
        (("--task-json", "[" * 100_000), "--task-json: nested too deeply"),
    ):
        out = factoryd("route", "--config", str(config), *args)
        assert out.returncode == 2, (args, out.stderr[-300:])
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, out.stderr[-300:])
