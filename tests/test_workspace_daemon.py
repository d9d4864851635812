"""Workspaces inside the daemon: runs in their own worktrees, results kept as branches."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest
from daemon_kit import events, header, running, start_daemon, task, until, write_config
from factoryd.core.lifecycle import TaskPhase
from git_kit import branches, changed_files, git, make_repo, worktrees
from proc_kit import wait_for

pytestmark = pytest.mark.anyio

WRITE = "import os; open(f\"out-{os.environ['FACTORYD_TASK']}.txt\", 'w').write('done\\n')"


def _ws(repo: Path, tmp_path: Path, **extra: object) -> str:
    table = {"repo": str(repo), "ref": "main", "keep": "on-success", **extra}
    return "workspace = " + json.dumps(table).replace('": ', '" = ').replace('{"', '{ "')


async def test_ten_tasks_on_one_repository_each_leave_a_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    text = header(tmp_path)
    for i in range(10):
        text += task(f"t{i}", WRITE, kind="oneshot").rstrip() + "\n" + _ws(repo, tmp_path) + "\n\n"
    async with running(tmp_path, text) as rec:
        await until(
            lambda: all(rec.tasks[f"t{i}"].phase is TaskPhase.SUCCEEDED for i in range(10)),
            60,
            "all ten tasks to succeed",
        )
    names = branches(repo)
    assert len(names) == 10
    for i in range(10):
        [branch] = [b for b in names if b.startswith(f"factoryd/t{i}/")]
        assert changed_files(repo, branch, "main") == [f"out-t{i}.txt"]
    assert worktrees(repo) == [str(repo)]
    assert git(repo, "status", "--porcelain") == ""


async def test_a_failing_after_create_fails_without_charging_the_arm(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    text = header(tmp_path) + task("t", WRITE, kind="oneshot", restart="never").rstrip()
    repo_toml = json.dumps(str(repo))
    text += f'\nworkspace = {{ repo = {repo_toml}, hooks = {{ after_create = ["false"] }} }}\n'
    async with running(tmp_path, text) as rec:
        await until(lambda: rec.tasks["t"].phase is TaskPhase.FAILED, 30, "the task to fail")
        assert "after_create exited 1" in rec.tasks["t"].reason
        assert rec.engine.telemetry.arm("local").consecutive_faults == 0
    assert branches(repo) == [] and worktrees(repo) == [str(repo)]


RELEASE = (
    "import os, pathlib, time\n"
    "pathlib.Path('out.txt').write_text('work\\n')\n"
    "while not os.path.exists(os.environ['RELEASE']):\n"
    "    time.sleep(0.05)\n"
)


def _one_task(tmp_path: Path, repo: Path, keep: str) -> Path:
    text = (
        header(tmp_path)
        + task("fix", RELEASE, kind="oneshot", env={"RELEASE": str(tmp_path / "release")}).rstrip()
    )
    text += f"\nworkspace = {{ repo = {json.dumps(str(repo))}, keep = {json.dumps(keep)} }}\n"
    return write_config(tmp_path, text)


def _working(tmp_path: Path) -> bool:
    return any((tmp_path / "state" / "workspaces").glob("fix-*/out.txt"))


@pytest.mark.parametrize("release_while_down", [False, True])
def test_kill_minus_nine_mid_run_leaves_no_stale_worktree(
    tmp_path: Path, release_while_down: bool
) -> None:
    repo = make_repo(tmp_path / "repo")
    config = _one_task(tmp_path, repo, keep="always")
    first = start_daemon(config, tmp_path / "first.log")
    try:
        wait_for(lambda: _working(tmp_path), timeout=30, what="the run in its worktree")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    if release_while_down:  # the run ends while no daemon watches: recovery sweeps it
        (tmp_path / "release").write_text("")
        wait_for(lambda: not tagged_runs(tmp_path), timeout=15, what="the run to end")
    log2 = tmp_path / "second.log"
    second = start_daemon(config, log2)
    try:
        if not release_while_down:  # adopted; its end commits and removes as usual
            wait_for(
                lambda: any(e.get("event") == "recovery.adopted" for e in events(log2)),
                timeout=30,
                what="the run adopted",
            )
            (tmp_path / "release").write_text("")
        done = "workspace.swept" if release_while_down else "run.finished"
        wait_for(
            lambda: any(e.get("event") == done and e.get("branch") for e in events(log2)),
            timeout=30,
            what=done,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    [branch] = branches(repo)
    assert changed_files(repo, branch, "main") == ["out.txt"]
    assert worktrees(repo) == [str(repo)]
    assert list((tmp_path / "state" / "workspaces").iterdir()) == []


def tagged_runs(tmp_path: Path) -> list[int]:
    """Live processes of the task (they carry the release path in their environment)."""
    release = str(tmp_path / "release")
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("RELEASE") == release:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


async def test_a_real_agent_cli_writes_through_its_tool_into_its_worktree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fake_models import (
        CLI_KEYS,
        CLI_MODELS,
        CLI_URL_SUFFIX,
        TOOL_CONTENT,
        TOOL_FILE,
        FakeModels,
    )
    from test_agents_e2e import cli_path

    cli = "codex"  # its shell tool writes relative to its cwd: the run's worktree
    exe = cli_path(cli)
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("FACTORYD_TEST_PROVIDER_KEY", "sk-fake-workspace")
    models = FakeModels().start()
    try:
        text = header(tmp_path).split("[[arms]]")[0] + (
            f'[[arms]]\nname = "agent"\ncli = "{cli}"\nprovider = "factoryd"\n'
            f'model = "{CLI_MODELS[cli]}"\npools = ["local"]\nexecutable = "{exe}"\n'
            f'base_url = "{models.url("tool", CLI_URL_SUFFIX[cli])}"\n'
            f'secrets = {{ {CLI_KEYS[cli]} = "env:FACTORYD_TEST_PROVIDER_KEY" }}\n\n'
            '[[tasks]]\nname = "agent-fix"\nkind = "oneshot"\nrequires_tools = true\n'
            'prompt = "Please write the file with your tool."\ntimeout = "120s"\n'
            f'workspace = {{ repo = {json.dumps(str(repo))}, keep = "always" }}\n'
        )
        async with running(tmp_path, text) as rec:
            await until(
                lambda: rec.tasks["agent-fix"].phase is TaskPhase.SUCCEEDED,
                150,
                "the agent to finish",
            )
    finally:
        models.stop()
    [branch] = branches(repo)
    assert git(repo, "show", f"{branch}:{TOOL_FILE}") == TOOL_CONTENT.strip()
    assert worktrees(repo) == [str(repo)]
