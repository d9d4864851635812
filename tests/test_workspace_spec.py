"""The `workspace` setting: how it is read (problems by key path), named and decided."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from factoryd.config.tomltable import Table
from factoryd.config.workspace import read_workspace
from factoryd.core.outcome import Outcome
from factoryd.core.workspace_spec import (
    Hook,
    Keep,
    WorkspaceSpec,
    branch_name,
    checked_outcome,
    dir_name,
    keeps_branch,
    pattern_problem,
    ref_problem,
)
from hypothesis import given
from hypothesis import strategies as st


class Collect:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")


def read(text: str, base: WorkspaceSpec | None = None) -> tuple[WorkspaceSpec | None, list[str]]:
    owner = Collect()
    task = Table(owner, tomllib.loads(text), "tasks[0]")
    spec = read_workspace(task, base=base, resolve=lambda p: str(Path("/etc/factoryd") / p))
    return spec, owner.problems


def test_the_issue_example_reads_with_defaults() -> None:
    spec, problems = read(
        'workspace = { repo = "/srv/src/app", ref = "main", keep = "on-success" }'
    )
    assert problems == []
    assert spec == WorkspaceSpec(repo="/srv/src/app", ref="main", keep=Keep.ON_SUCCESS)


def test_a_full_table_with_both_hook_forms() -> None:
    spec, problems = read(
        """
        [workspace]
        repo = "src/app"
        branch = "agents/{arm}/{task}-{run_id}"
        keep = "always"
        root = "ws"
        author = "Build Bot <bot@example.org>"
        message = "{task}: {outcome}"
        success_check = true
        [workspace.hooks]
        after_create = ["npm", "ci"]
        after_run = { argv = ["npm", "test"], timeout = "15m" }
        before_remove = { argv = ["git", "push", "origin", "HEAD"] }
        """
    )
    assert problems == []
    assert spec is not None
    assert (spec.repo, spec.root) == ("/etc/factoryd/src/app", "/etc/factoryd/ws")
    assert (spec.author_name, spec.author_email) == ("Build Bot", "bot@example.org")
    assert spec.hooks.after_create == Hook(("npm", "ci"))
    assert spec.hooks.after_run == Hook(("npm", "test"), 900.0)
    assert spec.hooks.before_run is None and spec.success_check and spec.keep is Keep.ALWAYS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workspace = {}", "tasks[0].workspace.repo: is required (a string)"),
        ('workspace = "/srv/app"', "tasks[0].workspace: expected a table"),
        (
            'workspace = { repo = "/r", keep = "sometimes" }',
            "tasks[0].workspace.keep: expected one of always, on-success, never; got 'sometimes'",
        ),
        (
            'workspace = { repo = "/r", branch = "ai/{task}" }',
            "tasks[0].workspace.branch: must contain {run_id}",
        ),
        (
            'workspace = { repo = "/r", branch = "ai..x/{run_id}" }',
            "tasks[0].workspace.branch: gives an invalid branch name",
        ),
        (
            'workspace = { repo = "/r", ref = "--upload-pack=x" }',
            "tasks[0].workspace.ref: expected a commit, branch or tag name",
        ),
        (
            'workspace = { repo = "/r", author = "bot" }',
            "tasks[0].workspace.author: expected 'Name <email>', got 'bot'",
        ),
        (
            'workspace = { repo = "/r", success_check = true }',
            "tasks[0].workspace.success_check: needs hooks.after_run",
        ),
        (
            'workspace = { repo = "/r", hooks = { after_run = "make test" } }',
            "tasks[0].workspace.hooks.after_run: expected an argv list",
        ),
        (
            'workspace = { repo = "/r", hooks = { before_run = [] } }',
            "tasks[0].workspace.hooks.before_run: must not be empty",
        ),
        (
            'workspace = { repo = "/r", hooks = { before_run = [" "] } }',
            "tasks[0].workspace.hooks.before_run: must not be empty",
        ),
        (
            'workspace = { repo = "/r", hooks = { after_run = { argv = ["t"], timeout = "x" } } }',
            "tasks[0].workspace.hooks.after_run.timeout:",
        ),
        (
            'workspace = { repo = "/r", hooks = { after_create = { timeout = "1m" } } }',
            "tasks[0].workspace.hooks.after_create.argv: is required",
        ),
        (
            'workspace = { repo = "/r", hooks = { after_crate = ["x"] } }',
            "tasks[0].workspace.hooks.after_crate: unknown key; did you mean 'after_create'?",
        ),
        (
            'workspace = { repo = "/r", kep = "never" }',
            "tasks[0].workspace.kep: unknown key; did you mean 'keep'?",
        ),
    ],
)
def test_mistakes_are_named_by_key_path(text: str, expected: str) -> None:
    _, problems = read(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_template_workspace_is_inherited_overridden_or_turned_off() -> None:
    base, _ = read('workspace = { repo = "/r", keep = "never", hooks = { before_run = ["x"] } }')
    assert read("", base)[0] == base
    over, problems = read('workspace = { keep = "always" }', base)
    assert problems == [] and over is not None and base is not None
    assert (over.repo, over.keep, over.hooks) == ("/r", Keep.ALWAYS, base.hooks)
    assert read("workspace = false", base) == (None, [])


@given(st.text(max_size=300))
def test_no_task_name_makes_a_path_outside_the_root_or_a_bad_ref(task: str) -> None:
    name = dir_name(task, "0abc-123def")
    assert "/" not in name and "\0" not in name and name not in (".", "..")
    assert not name.startswith(".") and len(name) <= 80
    branch = branch_name("factoryd/{task}/{run_id}", task, "0abc-123def", "arm")
    assert ref_problem(branch) is None, branch


def test_long_names_stay_distinct() -> None:
    a, b = "x" * 200 + "a", "x" * 200 + "b"
    assert dir_name(a, "r") != dir_name(b, "r")


def test_pattern_checks() -> None:
    assert pattern_problem("factoryd/{task}/{run_id}") is None
    assert pattern_problem("{run_id}.lock") is not None


@pytest.mark.parametrize(
    ("outcome", "passed", "expected"),
    [
        (Outcome.SUCCEEDED, False, Outcome.FAILED),
        (Outcome.FAILED, True, Outcome.SUCCEEDED),
        (Outcome.EXIT_UNKNOWN, True, Outcome.SUCCEEDED),
        (Outcome.TIMED_OUT, True, Outcome.TIMED_OUT),
        (Outcome.LIMITED, False, Outcome.LIMITED),
    ],
)
def test_success_check_judges_only_runs_that_finished(
    outcome: Outcome, passed: bool, expected: Outcome
) -> None:
    assert checked_outcome(outcome, "exit 0", passed, "after_run exited 1")[0] is expected


def test_keep_decisions() -> None:
    assert keeps_branch(Keep.ON_SUCCESS, Outcome.SUCCEEDED)
    assert not keeps_branch(Keep.ON_SUCCESS, Outcome.LOST)
    assert keeps_branch(Keep.ALWAYS, Outcome.FAILED)
    assert not keeps_branch(Keep.NEVER, Outcome.SUCCEEDED)
