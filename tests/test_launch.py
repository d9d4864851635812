"""Where a run works (a config task's kept directory, a submission's per-run one), and its id."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from daemon_kit import header, running, task, until, write_config
from factoryd.config.loader import load_config
from factoryd.config.model import Config
from factoryd.core.lifecycle import TaskPhase
from factoryd.run import launch
from factoryd.run.dirs import make_ahead
from factoryd.run.launch import build_run, kept_workdirs, new_run_id, remove_run_dir, task_workdir


def _config(tmp_path: Path, **task_keys: object) -> Config:
    text = header(tmp_path) + task("job", "print('hi')", **task_keys)
    return load_config(write_config(tmp_path, text))


def test_a_command_task_without_workdir_runs_in_its_kept_task_directory(tmp_path: Path) -> None:
    config = _config(tmp_path)
    spec, arm = config.tasks[0], config.arms[0]
    first = build_run(config, spec, arm, "r1", {})
    second = build_run(config, spec, arm, "r2", {})
    expected = task_workdir(config.daemon.state_dir, "job")
    assert first.spec.cwd == second.spec.cwd == str(expected)
    assert expected.is_dir()
    assert first.run_dir is None and second.run_dir is None  # nothing to remove after a run
    (expected / "output.txt").write_text("kept")  # a run's files stay for the next one
    assert build_run(config, spec, arm, "r3", {}).spec.cwd == str(expected)
    assert (expected / "output.txt").read_text() == "kept"


def test_run_ids_sort_by_time_and_do_not_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_790_000_000.0
    ids = [new_run_id(now + i / 1000) for i in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert [i.split("-")[0] for i in ids] == sorted(i.split("-")[0] for i in ids)
    stamp, rand = ids[0].split("-")
    assert stamp.isalnum() and len(rand) == 6 and int(rand, 16) >= 0
    # Within one millisecond the 24 random bits tell runs apart (a pass starts a
    # few per millisecond); seeded here, so that the test cannot flake.
    monkeypatch.setattr(launch, "_ID_RANDOM", random.Random(7))
    assert len({new_run_id(now) for _ in range(50)}) == 50


def test_a_submitted_task_gets_a_directory_per_run_removed_after_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    spec, arm = config.tasks[0], config.arms[0]
    prepared = build_run(config, spec, arm, "r1", {}, keep_workdir=False)
    assert prepared.run_dir is not None and prepared.spec.cwd == str(prepared.run_dir)
    assert prepared.run_dir.is_dir()
    (prepared.run_dir / "scratch").write_text("x")
    remove_run_dir(prepared.run_dir)
    assert not prepared.run_dir.exists()


def test_an_explicit_workdir_is_used_as_is(tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    config = _config(tmp_path, workdir=str(work))
    prepared = build_run(config, config.tasks[0], config.arms[0], "r1", {}, keep_workdir=False)
    assert prepared.spec.cwd == str(work) and prepared.run_dir is None


def test_kept_directories_are_made_ahead_for_command_tasks_only(tmp_path: Path) -> None:
    text = (
        header(tmp_path)
        + task("plain", "print(1)")
        + task("elsewhere", "print(1)", workdir=str(tmp_path))
        + task("isolated", "print(1)", isolate_home=True)
        + task("off", "print(1)", enabled=False)
    )
    config = load_config(write_config(tmp_path, text))
    assert kept_workdirs(config) == [task_workdir(config.daemon.state_dir, "plain")]
    make_ahead(kept_workdirs(config)).join(timeout=30)
    assert task_workdir(config.daemon.state_dir, "plain").is_dir()
    assert not task_workdir(config.daemon.state_dir, "isolated").exists()


@pytest.mark.anyio
async def test_start_up_makes_every_kept_directory_before_the_first_run(tmp_path: Path) -> None:
    # 1000 scheduled tasks that will not fire today, and one run that counts (a
    # shell: it starts in a millisecond) the kept directories beside its own.
    text = header(tmp_path) + (
        '[[tasks]]\nname = "counter"\nkind = "oneshot"\nrestart = "never"\n'
        'argv = ["sh", "-c", "ls .. | wc -l"]\n\n'
    )
    for i in range(1000):
        text += task(f"later{i}", "print(1)", kind="scheduled", schedule="0 0 1 1 *")
    async with running(tmp_path, text) as rec:
        await until(lambda: rec.tasks["counter"].phase is TaskPhase.SUCCEEDED, what="the count")
        logs = list((tmp_path / "logs" / "counter").glob("*.log"))
        assert len(logs) == 1 and logs[0].read_text().split() == ["1001"]


@pytest.mark.parametrize(
    "name", ["nightly-build_2.x", "a b", "../etc", "émile", "tâche/ü", "", "-", "x\nY", "日本"]
)
def test_a_task_name_is_made_safe_for_a_path_as_character_by_character(name: str) -> None:
    """`_safe` answers plain names without a step per character: the same answer."""
    slow = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"
    assert launch._safe(name) == slow
    assert "/" not in launch._safe(name) and launch._safe(name)
