"""What a run's workspace adds to its start, beside a plain `git worktree add`.

A repository of 10,000 files (1,000 directories of 10 small files, one
commit). Each repetition, in alternating order, times:

- plain: `git worktree add -b BRANCH PATH main`, the least a worktree per
  run can cost;
- factoryd: `Workspaces.create` (record, `rev-parse` of the ref, worktree
  add under the repository's admin lock, checkout, record), exactly what a
  run's start waits for when its task has a `workspace`.

Measured twice: on tmpfs, where what is timed is git's work and
factoryd's own, and on the disk, where a checkout's 10,000 file creations
dominate (and a shared machine's disk adds its noise). Both are cleaned
up untimed; `finish` (commit of one changed file, worktree removal, branch
kept) is timed too, for the end of a run. Then 10 creates
at once from 10 threads (a burst of runs on one repository), beside 10
plain `git worktree add` at once, whose failures are counted: git writes a
new worktree's administrative files unlocked, and that is why factoryd
serializes that step per repository.

    python bench/worktree.py [--reps N] [--files N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "daemon"))

from common import Results, Row, paired, ratios, summary, tmpdir  # noqa: E402
from factoryd.core.outcome import Outcome  # noqa: E402
from factoryd.core.workspace_spec import Keep, WorkspaceSpec  # noqa: E402
from factoryd.run.gitcmd import Git  # noqa: E402
from factoryd.run.workspace import Workspaces  # noqa: E402
from factoryd.run.workspace_plan import plan  # noqa: E402

ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
    "LC_ALL": "C",
}


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=ENV, capture_output=True, check=False
    )


def make_repo(path: Path, files: int) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    for i in range(files):
        d = path / f"pkg{i // 10:04d}"
        if i % 10 == 0:
            d.mkdir()
        (d / f"mod{i % 10}.py").write_text(f"VALUE = {i}\n")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "initial")
    return path


def plain_add(repo: Path, path: Path, branch: str) -> float:
    t0 = time.perf_counter()
    done = git(repo, "worktree", "add", "--quiet", "-b", branch, str(path), "main")
    elapsed = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    return elapsed


def plain_cleanup(repo: Path, path: Path, branch: str) -> None:
    git(repo, "worktree", "remove", "--force", str(path))
    git(repo, "branch", "-D", branch)


def run(results: Results, reps: int = 7, files: int = 10_000) -> None:
    """On tmpfs (git's and factoryd's own work, no disk noise), then on the disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        work = Path(tempfile.mkdtemp(prefix="factoryd-bench-worktree-", dir=shm))
        try:
            measure(results, work, reps, files, "tmpfs")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    measure(results, tmpdir("worktree"), reps, files, "disk")


def measure(results: Results, work: Path, reps: int, files: int, where: str) -> None:
    print(f"worktree: a repository of {files} files on {where}", flush=True)
    repo = make_repo(work / "repo", files)
    ws = Workspaces(work / "records", Git(env=ENV))
    spec = WorkspaceSpec(repo=str(repo), ref="main", root=str(work / "ws"), keep=Keep.ALWAYS)
    ours: list[float] = []
    peers: list[float] = []
    finishes: list[float] = []
    for i in range(reps):
        for contender in ("plain", "ours") if i % 2 == 0 else ("ours", "plain"):
            if contender == "plain":
                path = work / "plain" / f"p{i}"
                peers.append(plain_add(repo, path, f"plain/{i}"))
                plain_cleanup(repo, path, f"plain/{i}")
                continue
            p = plan(spec, "bench", f"r{i}", "arm", work)
            t0 = time.perf_counter()
            created = ws.create(p, env=ENV, log_path=None)
            ours.append(time.perf_counter() - t0)
            assert created.ok, created.reason
            (p.path / "pkg0000" / "mod0.py").write_text("VALUE = -1\n")
            t0 = time.perf_counter()
            done = ws.finish(p, Outcome.SUCCEEDED, "", env=ENV, log_path=None)
            finishes.append(time.perf_counter() - t0)
            assert done.changed and done.kept
    ratio = paired(ours, peers)
    results.add(
        Row(
            "worktree",
            f"start of a run, {files} files on {where} (create vs plain worktree add)",
            summary(ours, 1000, " ms"),
            summary(peers, 1000, " ms"),
            f"{ratio:.2f}x ({ratios(ours, peers, '{:.2f}')})",
            "<= 1.25x",
            ratio <= 1.25,
        )
    )
    results.add(
        Row(
            "worktree",
            f"end of a run on {where} (commit 1 file, remove worktree, keep branch)",
            summary(finishes, 1000, " ms"),
            "-",
            "-",
            "-",
        )
    )
    burst(results, repo, ws, spec, work, where)


def burst(
    results: Results, repo: Path, ws: Workspaces, spec: WorkspaceSpec, work: Path, where: str
) -> None:
    """10 at once: factoryd's creates, then 10 plain `git worktree add` at once."""
    failures: list[str] = []

    def ours(i: int) -> None:
        created = ws.create(plan(spec, "burst", f"b{i}", "arm", work), env=ENV, log_path=None)
        if not created.ok:
            failures.append(created.reason)

    def plain(i: int) -> None:
        done = git(repo, "worktree", "add", "--quiet", "-b", f"pb/{i}", str(work / f"pb{i}"))
        if done.returncode != 0:
            failures.append(done.stderr.decode(errors="replace").strip())

    walls = {}
    failed = {}
    for name, fn in (("ours", ours), ("plain", plain)):
        threads = [threading.Thread(target=fn, args=(i,)) for i in range(10)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        walls[name] = time.perf_counter() - t0
        failed[name] = len(failures)
        failures.clear()
    results.add(
        Row(
            "worktree",
            f"10 creates at once on one repository on {where}: wall time (failures)",
            f"{walls['ours'] * 1000:.0f} ms ({failed['ours']} failed)",
            f"{walls['plain'] * 1000:.0f} ms ({failed['plain']} failed)",
            f"{walls['ours'] / walls['plain']:.2f}x",
            "0 failures",
            failed["ours"] == 0,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    results = Results()
    t0 = time.monotonic()
    run(results, reps=args.reps, files=args.files)
    print(f"worktree bench: {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
