"""Run workspaces with real git: a worktree per run, its work kept as a commit on a branch."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from factoryd.core.outcome import Outcome
from factoryd.core.workspace_spec import Hook, Hooks, Keep, WorkspaceSpec
from factoryd.run.gitcmd import Git
from factoryd.run.workspace import Workspaces
from factoryd.run.workspace_plan import plan
from git_kit import branches, changed_files, git, make_repo, worktrees

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"README": "hello\n", "src/app.py": "print(1)\n"})


def _ws(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "state" / "workspace-records")


def _spec(repo: Path, tmp_path: Path, **kw: object) -> WorkspaceSpec:
    return WorkspaceSpec(repo=str(repo), ref="main", root=str(tmp_path / "ws"), **kw)  # type: ignore[arg-type]


def _one_run(
    ws: Workspaces,
    spec: WorkspaceSpec,
    task: str,
    run_id: str,
    tmp_path: Path,
    outcome: Outcome = Outcome.SUCCEEDED,
    write: dict[str, str] | None = None,
):  # type: ignore[no-untyped-def]
    p = plan(spec, task, run_id, "arm-a", tmp_path / "state")
    log = tmp_path / "logs" / f"{run_id}.log"
    created = ws.create(p, env=ENV, log_path=log)
    assert created.ok, created.reason
    for name, text in (write or {}).items():
        (p.path / name).write_text(text)
    return p, created, ws.finish(p, outcome, "exit 0", env=ENV, log_path=log)


def test_ten_concurrent_runs_on_one_repository_each_leave_their_own_commit(
    tmp_path: Path, repo: Path
) -> None:
    ws = _ws(tmp_path)
    spec = _spec(repo, tmp_path, keep=Keep.ALWAYS)
    main_head = git(repo, "rev-parse", "HEAD")
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    seen_dirs: set[str] = set()

    def run(i: int) -> None:
        try:
            p = plan(spec, "fix", f"run{i:02d}", "arm-a", tmp_path / "state")
            created = ws.create(p, env=ENV, log_path=None)
            assert created.ok, created.reason
            seen_dirs.add(str(p.path))
            (p.path / f"out-{i}.txt").write_text(f"run {i}\n")
            (p.path / "README").write_text(f"edited by {i}\n")
            results[i] = ws.finish(p, Outcome.SUCCEEDED, "exit 0", env=ENV, log_path=None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(seen_dirs) == 10  # no two runs shared a working tree
    assert branches(repo) == [f"factoryd/fix/run{i:02d}" for i in range(10)]
    for i in range(10):
        done = results[i]
        branch = f"factoryd/fix/run{i:02d}"
        assert done.kept and done.changed and done.branch == branch  # type: ignore[attr-defined]
        assert git(repo, "rev-parse", branch) == done.commit  # type: ignore[attr-defined]
        assert changed_files(repo, branch, main_head) == ["README", f"out-{i}.txt"]
        assert git(repo, "show", f"{branch}:README") == f"edited by {i}"
        body = git(repo, "log", "-1", "--format=%an <%ae>%n%B", branch)
        assert body.startswith("factoryd <factoryd@localhost>\nfactoryd: fix run")
        assert f"Factoryd-Run: run{i:02d}" in body and "Factoryd-Arm: arm-a" in body
    assert worktrees(repo) == [str(repo)]
    assert list((tmp_path / "ws").iterdir()) == []
    assert list((tmp_path / "state" / "workspace-records").iterdir()) == []
    assert git(repo, "rev-parse", "HEAD") == main_head
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert (repo / "README").read_text() == "hello\n"


def test_keep_on_success_drops_a_failed_runs_branch_and_keeps_a_good_one(
    tmp_path: Path, repo: Path
) -> None:
    ws, spec = _ws(tmp_path), _spec(repo, tmp_path, keep=Keep.ON_SUCCESS)
    _, _, bad = _one_run(ws, spec, "t", "r1", tmp_path, Outcome.FAILED, {"x": "1"})
    _, _, good = _one_run(ws, spec, "t", "r2", tmp_path, Outcome.SUCCEEDED, {"y": "2"})
    assert not bad.kept and bad.changed
    assert bad.event_fields()["branch_kept"] is False  # named, and said to be gone
    assert good.event_fields() | {"commit": None} == {
        "branch": "factoryd/t/r2",
        "commit": None,
        "branch_kept": True,
        "changed": True,
        "workspace_problems": None,
        "workspace_left_at": None,
    }
    assert branches(repo) == ["factoryd/t/r2"]
    assert worktrees(repo) == [str(repo)]


@pytest.mark.parametrize(
    ("keep", "outcome", "kept"),
    [
        (Keep.ALWAYS, Outcome.FAILED, True),
        (Keep.NEVER, Outcome.SUCCEEDED, False),
        (Keep.ON_SUCCESS, Outcome.TIMED_OUT, False),
    ],
)
def test_keep_policy(tmp_path: Path, repo: Path, keep: Keep, outcome: Outcome, kept: bool) -> None:
    ws = _ws(tmp_path)
    _, _, done = _one_run(ws, _spec(repo, tmp_path, keep=keep), "t", "r1", tmp_path, outcome)
    assert done.kept is kept
    assert branches(repo) == (["factoryd/t/r1"] if kept else [])


def test_what_the_agent_committed_and_what_it_left_both_end_on_the_branch(
    tmp_path: Path, repo: Path
) -> None:
    ws, spec = _ws(tmp_path), _spec(repo, tmp_path, keep=Keep.ALWAYS)
    p = plan(spec, "t", "r1", "arm-a", tmp_path / "state")
    created = ws.create(p, env=ENV, log_path=None)
    assert created.ok
    (p.path / "committed.txt").write_text("by the agent\n")
    git(p.path, "add", "committed.txt")
    git(p.path, "commit", "--quiet", "-m", "agent's own commit")
    (p.path / "left.txt").write_text("not committed\n")
    done = ws.finish(p, Outcome.SUCCEEDED, "exit 0", env=ENV, log_path=None)
    log = git(repo, "log", "--format=%s", f"{created.base}..factoryd/t/r1").splitlines()
    assert log == ["factoryd: t run r1 on arm-a", "agent's own commit"]
    assert changed_files(repo, done.commit or "", created.base or "") == [
        "committed.txt",
        "left.txt",
    ]


def test_an_agent_that_changed_nothing_leaves_the_branch_at_its_base(
    tmp_path: Path, repo: Path
) -> None:
    ws = _ws(tmp_path)
    _, created, done = _one_run(ws, _spec(repo, tmp_path, keep=Keep.ALWAYS), "t", "r1", tmp_path)
    assert not done.changed and done.commit == created.base == git(repo, "rev-parse", "main")


def test_author_and_message_are_configurable(tmp_path: Path, repo: Path) -> None:
    spec = _spec(
        repo,
        tmp_path,
        keep=Keep.ALWAYS,
        author_name="Build Bot",
        author_email="bot@example.org",
        message="{task}: automated fix by {arm} ({outcome})",
    )
    _one_run(_ws(tmp_path), spec, "lint", "r1", tmp_path, write={"f": "1"})
    out = git(repo, "log", "-1", "--format=%an <%ae>|%cn|%s", "factoryd/lint/r1")
    assert out == "Build Bot <bot@example.org>|Build Bot|lint: automated fix by arm-a (succeeded)"


def test_hooks_run_in_order_in_the_worktree_with_their_output_in_the_run_log(
    tmp_path: Path, repo: Path
) -> None:
    order = tmp_path / "order"

    def hook(name: str) -> Hook:
        script = (
            f"echo {name} $FACTORYD_HOOK $FACTORYD_BRANCH; pwd >> {order}; echo {name} >> {order}"
        )
        return Hook(("sh", "-c", script), timeout=30)

    hooks = Hooks(*(hook(n) for n in ("after_create", "before_run", "after_run", "before_remove")))
    spec = _spec(repo, tmp_path, keep=Keep.ALWAYS, hooks=hooks)
    p, created, done = _one_run(_ws(tmp_path), spec, "t", "r1", tmp_path, write={"f": "1"})
    assert [h.name for h in created.hooks] == ["after_create", "before_run"]
    assert [h.name for h in done.hooks] == ["after_run", "before_remove"]
    lines = order.read_text().splitlines()
    assert lines[1::2] == ["after_create", "before_run", "after_run", "before_remove"]
    assert set(lines[0::2]) == {str(p.path)}
    log = (tmp_path / "logs" / "r1.log").read_text()
    positions = [log.index(f"{n} {n} factoryd/t/r1\n") for n in lines[1::2]]
    assert positions == sorted(positions)
    assert "[factoryd] hook before_remove exited 0" in log


def test_a_failing_after_create_fails_the_run_without_charging_the_arm(
    tmp_path: Path, repo: Path
) -> None:
    ws = _ws(tmp_path)
    hooks = Hooks(after_create=Hook(("sh", "-c", "echo npm ERR; exit 3"), timeout=30))
    p = plan(_spec(repo, tmp_path, hooks=hooks), "t", "r1", "arm-a", tmp_path / "state")
    log = tmp_path / "r1.log"
    created = ws.create(p, env=ENV, log_path=log)
    assert not created.ok and created.arm_fault is False
    assert created.reason == "workspace: workspace hook after_create exited 3"
    assert "npm ERR" in log.read_text()
    assert not p.path.exists() and branches(repo) == [] and worktrees(repo) == [str(repo)]
    assert list(ws.records_dir.iterdir()) == []


def test_a_failing_before_run_fails_closed_too(tmp_path: Path, repo: Path) -> None:
    hooks = Hooks(before_run=Hook(("definitely-not-a-program-x",), timeout=30))
    p = plan(_spec(repo, tmp_path, hooks=hooks), "t", "r1", "arm-a", tmp_path / "state")
    created = _ws(tmp_path).create(p, env=ENV, log_path=None)
    assert not created.ok and not created.arm_fault
    assert "before_run could not start: no such program" in created.reason
    assert branches(repo) == [] and not p.path.exists()


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("no-such-branch", "ref 'no-such-branch' names no commit"), ("main", "is not a git")],
)
def test_creation_failures_fail_closed_with_a_clear_reason(
    tmp_path: Path, repo: Path, ref: str, expected: str
) -> None:
    target = repo if ref != "main" else tmp_path / "plain-dir"
    target.mkdir(exist_ok=True)
    spec = WorkspaceSpec(repo=str(target), ref=ref, root=str(tmp_path / "ws"))
    created = _ws(tmp_path).create(plan(spec, "t", "r1", "a", tmp_path), env=ENV, log_path=None)
    assert not created.ok and expected in created.reason and "\n" not in created.reason


def test_success_check_is_the_verdict(tmp_path: Path, repo: Path) -> None:
    check = Hooks(after_run=Hook(("sh", "-c", "test -f fixed"), timeout=30))
    spec = _spec(repo, tmp_path, keep=Keep.ON_SUCCESS, hooks=check, success_check=True)
    ws = _ws(tmp_path)
    _, _, unfixed = _one_run(ws, spec, "t", "r1", tmp_path, Outcome.SUCCEEDED, {"other": "1"})
    assert unfixed.outcome is Outcome.FAILED
    assert unfixed.reason == "success_check failed: after_run exited 1"
    _, _, fixed = _one_run(ws, spec, "t", "r2", tmp_path, Outcome.FAILED, {"fixed": "1"})
    assert fixed.outcome is Outcome.SUCCEEDED and fixed.reason.startswith("success_check passed")
    assert branches(repo) == ["factoryd/t/r2"]  # on-success follows the verdict
    _, _, late = _one_run(ws, spec, "t", "r3", tmp_path, Outcome.TIMED_OUT, {"fixed": "1"})
    assert late.outcome is Outcome.TIMED_OUT  # unfinished work is not judged


def test_a_hook_that_overruns_is_killed_with_its_group(tmp_path: Path, repo: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    hooks = Hooks(
        before_run=Hook(("sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"), timeout=0.5)
    )
    p = plan(_spec(repo, tmp_path, hooks=hooks), "t", "r1", "a", tmp_path / "state")
    created = _ws(tmp_path).create(p, env=ENV, log_path=None)
    assert not created.ok and "before_run timed out after" in created.reason
    assert created.seconds < 10
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _dead(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _dead(pid)


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever inherited it (not us) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_task_name_with_dotdot_cannot_leave_the_root(tmp_path: Path, repo: Path) -> None:
    root = tmp_path / "ws"
    ws = _ws(tmp_path)
    for task in ("../../escape", "..", "a/../../b", "/etc/passwd", "x\n../y", ".git"):
        p = plan(_spec(repo, tmp_path, keep=Keep.ALWAYS), task, "r1", "arm", tmp_path / "state")
        assert p.path.parent == root and p.path.resolve().parent == root.resolve()
        created = ws.create(p, env=ENV, log_path=None)
        assert created.ok, created.reason
        assert (root / p.path.name / "README").is_file()
        ws.finish(p, Outcome.SUCCEEDED, "", env=ENV, log_path=None)
        git(repo, "branch", "-D", p.branch)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["repo", "state", "ws"]


def test_a_preexisting_path_or_symlink_is_refused(tmp_path: Path, repo: Path) -> None:
    p = plan(_spec(repo, tmp_path), "t", "r1", "a", tmp_path / "state")
    p.path.parent.mkdir(parents=True)
    p.path.symlink_to(tmp_path / "elsewhere")
    created = _ws(tmp_path).create(p, env=ENV, log_path=None)
    assert not created.ok and "already exists" in created.reason
    assert not (tmp_path / "elsewhere").exists() and p.path.is_symlink()


def test_stale_worktrees_of_a_crashed_daemon_are_swept(tmp_path: Path, repo: Path) -> None:
    spec = _spec(repo, tmp_path, keep=Keep.ALWAYS)
    before = _ws(tmp_path)
    dead = plan(spec, "t", "dead", "a", tmp_path / "state")
    alive = plan(spec, "t", "alive", "a", tmp_path / "state")
    assert before.create(dead, env=ENV, log_path=None).ok
    assert before.create(alive, env=ENV, log_path=None).ok
    (dead.path / "half-done.txt").write_text("work in progress\n")
    # A worktree whose directory vanished (git's own record only): prune cleans it.
    vanished = tmp_path / "other"
    git(repo, "worktree", "add", "--quiet", "--detach", str(vanished), "main")
    subprocess.run(["rm", "-rf", str(vanished)], check=True)

    after = _ws(tmp_path)  # the restarted daemon
    report = after.sweep(live={"alive"})
    assert report.skipped == ["alive"] and report.pruned == [str(repo)]
    [done] = report.finished
    assert done.outcome is Outcome.LOST and done.kept
    assert changed_files(repo, "factoryd/t/dead", "main") == ["half-done.txt"]
    assert worktrees(repo) == [str(repo), str(alive.path)]
    assert not dead.path.exists()
    recorded = after.recorded("alive")
    assert recorded == alive  # an adopted run finishes with the plan it started with
    after.finish(alive, Outcome.EXIT_UNKNOWN, "", env=ENV, log_path=None)
    assert worktrees(repo) == [str(repo)]
    assert after.sweep(live=set()).finished == []


def test_git_lock_files_are_waited_for(tmp_path: Path, repo: Path) -> None:
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    (repo / "new.txt").write_text("x")
    threading.Timer(0.3, lock.unlink).start()
    g = Git(env=ENV)
    g.run(repo, "add", "new.txt")
    assert g.lock_retries > 0
    assert "new.txt" in git(repo, "diff", "--cached", "--name-only")


def test_a_commit_that_fails_leaves_the_worktree_and_its_work_in_place(
    tmp_path: Path, repo: Path
) -> None:
    ws = _ws(tmp_path)
    p = plan(_spec(repo, tmp_path, keep=Keep.NEVER), "t", "r1", "a", tmp_path / "state")
    assert ws.create(p, env=ENV, log_path=None).ok
    (p.path / "precious.txt").write_text("the agent's work\n")
    index = Path(git(p.path, "rev-parse", "--git-dir")) / "index"
    index.write_bytes(b"not an index")  # the agent broke its index
    done = ws.finish(p, Outcome.SUCCEEDED, "exit 0", env=ENV, log_path=None)
    assert done.left_at == str(p.path) and done.kept
    assert done.problems and done.problems[0].startswith("commit failed: git add failed:")
    assert (p.path / "precious.txt").read_text() == "the agent's work\n"
    assert branches(repo) == ["factoryd/t/r1"]  # keep = never does not drop unsaved work
    assert ws.records.read("r1")["phase"] == "left"  # type: ignore[index]
    # Once repaired, the next start's sweep saves it and cleans up.
    index.unlink()
    git(p.path, "reset", "--quiet")
    [swept] = ws.sweep(live=set()).finished
    assert swept.left_at is None and not swept.kept  # keep = never, work now committed first
    assert worktrees(repo) == [str(repo)] and ws.records.read("r1") is None


def test_the_sweep_settles_by_the_outcome_recovery_gave(tmp_path: Path, repo: Path) -> None:
    spec = _spec(repo, tmp_path, keep=Keep.ON_SUCCESS)
    before = _ws(tmp_path)
    for run_id in ("ended-ok", "lost"):
        p = plan(spec, "t", run_id, "a", tmp_path / "state")
        assert before.create(p, env=ENV, log_path=None).ok
        (p.path / f"{run_id}.txt").write_text("done\n")
    report = _ws(tmp_path).sweep(live=(), outcomes={"ended-ok": Outcome.SUCCEEDED})
    assert sorted((f.branch, f.outcome, f.kept) for f in report.finished) == [
        ("factoryd/t/ended-ok", Outcome.SUCCEEDED, True),
        ("factoryd/t/lost", Outcome.LOST, False),
    ]
    assert branches(repo) == ["factoryd/t/ended-ok"] and worktrees(repo) == [str(repo)]


def test_unreadable_records_are_reported_not_fatal(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    ws.records_dir.mkdir(parents=True)
    (ws.records_dir / "junk.json").write_text("{not json")
    (ws.records_dir / "odd.json").write_text('{"spec": 1}')
    report = ws.sweep(live=set())
    assert len(report.problems) == 2 and report.finished == []
    assert all("unreadable workspace record" in p for p in report.problems)


def test_the_readme_example_an_agent_fixes_a_failing_test(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "calc",
        {
            "calc.py": "def add(a, b):\n    return a - b\n",
            "test_calc.py": (
                "import unittest\nfrom calc import add\n\n"
                "class T(unittest.TestCase):\n"
                "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
            ),
        },
    )
    tests = Hook(("python3", "-m", "unittest", "-q"), timeout=60)
    spec = _spec(
        repo, tmp_path, keep=Keep.ON_SUCCESS, hooks=Hooks(after_run=tests), success_check=True
    )
    ws = _ws(tmp_path)

    def agent_run(run_id: str, fix: bool):  # type: ignore[no-untyped-def]
        p = plan(spec, "fix-calc", run_id, "claude-sonnet", tmp_path / "state")
        log = tmp_path / "logs" / f"{run_id}.log"
        assert ws.create(p, env=ENV, log_path=log).ok
        if fix:  # what the agent does through its edit tool
            (p.path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
        # the agent exits 0 either way: only the tests say whether it fixed anything
        return ws.finish(p, Outcome.SUCCEEDED, "exit 0", env=ENV, log_path=log), log

    fixed, _ = agent_run("r1", fix=True)
    assert fixed.outcome is Outcome.SUCCEEDED and fixed.kept
    assert "return a + b" in git(repo, "show", "factoryd/fix-calc/r1:calc.py")
    # the commit holds the agent's change, not what the tests left behind
    assert changed_files(repo, "factoryd/fix-calc/r1", "main") == ["calc.py"]
    idle, log = agent_run("r2", fix=False)
    assert idle.outcome is Outcome.FAILED and not idle.kept
    assert idle.reason == "success_check failed: after_run exited 1"
    assert "AssertionError: -1 != 5" in log.read_text()
    assert branches(repo) == ["factoryd/fix-calc/r1"]
    assert (repo / "calc.py").read_text().endswith("a - b\n")  # main is untouched
