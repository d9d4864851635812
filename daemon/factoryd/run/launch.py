"""Turn (task, routing decision) into a concrete `RunSpec`: argv, env, cwd, files.

The environment is minimal and explicit: only the variables named by
`inherit_env` (daemon-wide plus per task) are copied from the daemon's
own environment; then the arm's `env`, the task's `env`, the arm's secrets
(from the daemon's environment or a file, never logged), the adapter's own
variables, and the run's identity (FACTORYD_RUN_ID, FACTORYD_STATE_DIR,
FACTORYD_TASK, FACTORYD_ARM) that lets the daemon recognise a run's
descendants, even after a restart, and only its own.
With `isolate_home`, HOME, TMPDIR and the XDG directories point into a
per-run directory that is removed when the run ends.
"""

from __future__ import annotations

import functools
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from factoryd.config.model import ArmLaunch, Config
from factoryd.core.taskspec import TaskSpec
from factoryd.observe.logs import REDACTOR
from factoryd.proc.capture import RunLog
from factoryd.proc.process import STATE_DIR_ENV
from factoryd.proc.spawnlog import SpawnLog
from factoryd.proc.tree import RUN_ID_ENV
from factoryd.routing.model import ArmSpec
from factoryd.run.agents.base import LaunchContext
from factoryd.run.agents.registry import adapter_for
from factoryd.run.dirs import MadeDirs
from factoryd.run.promptfile import PromptFileError, read_prompt_file
from factoryd.run.runspec import RunSpec
from factoryd.run.workspace_plan import WorkspaceError, WorkspacePlan
from factoryd.run.workspace_plan import plan as plan_workspace


class LaunchError(Exception):
    """The run cannot be prepared (missing prompt file, unreadable secret, ...)."""


#: Run ids need uniqueness, not secrecy: a generator seeded once from the OS
#: gives their random part without a system call per run.
_ID_RANDOM = random.Random(os.urandom(16))  # noqa: S311 - ids, not secrets
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique across restarts: milliseconds in base 36 plus randomness."""
    ms = int((now if now is not None else time.time()) * 1000)
    out = ""
    while ms:
        ms, rem = divmod(ms, 36)
        out = _BASE36[rem] + out
    return f"{out}-{_ID_RANDOM.getrandbits(24):06x}"


def read_secret(source: str) -> str:
    kind, _, ref = source.partition(":")
    if kind == "env":
        value = os.environ.get(ref)
        if value is None:
            raise LaunchError(f"secret variable {ref} is not set in the daemon's environment")
        return value
    try:
        return Path(ref).read_text().strip()
    except OSError as exc:
        raise LaunchError(f"cannot read secret file {ref}: {exc.strerror}") from None


def resolve_secrets(launch: ArmLaunch) -> dict[str, str]:
    if not launch.secrets:  # most arms have none: nothing to read or register
        return {}
    values = {var: read_secret(source) for var, source in launch.secrets}
    REDACTOR.add(values.values())
    return values


@dataclass(frozen=True, slots=True)
class BuiltRun:
    """A run ready to start: its spec, its own directory (None: it has none), its log."""

    spec: RunSpec
    run_dir: Path | None
    log_path: Path
    #: The run's worktree and branch, made by `Workspaces.create` after the
    #: decision and slot (in the run's task, on a worker thread), not here.
    workspace: WorkspacePlan | None = None
    #: The environment of workspace hooks: the run's, without the arm's
    #: secrets or the adapter's variables (hooks are the operator's programs).
    hook_env: dict[str, str] | None = None


@functools.lru_cache(maxsize=4096)
def task_workdir(state_dir: Path, task: str) -> Path:
    """Where a command task without a `workdir` runs, run after run (remembered:
    a task's runs all ask for the same path)."""
    return state_dir / "work" / _safe(task)


@functools.lru_cache(maxsize=64)
def _runs_dir(state_dir: Path) -> Path:
    return state_dir / "runs"


@functools.lru_cache(maxsize=4096)
def _task_log_dir(log_dir: Path, task: str) -> Path:
    return log_dir / _safe(task)


def _runs_in_kept_dir(task: TaskSpec, arm: ArmSpec, keep_workdir: bool) -> bool:
    return (
        keep_workdir
        and task.workdir is None
        and arm.cli == "command"
        and not task.isolate_home
        and not task.stdin_prompt
    )


def kept_workdirs(config: Config) -> list[Path]:
    """The kept directories the config's enabled tasks can run in (see `build_run`),
    so that they can be made ahead of the first run, off the loop."""
    arms = {arm.name: arm for arm in config.arms}
    found = []
    for task in config.tasks:
        candidates = [arms[a] for a in task.route.arms if a in arms] or config.arms
        if task.enabled and any(_runs_in_kept_dir(task, arm, True) for arm in candidates):
            found.append(task_workdir(config.daemon.state_dir, task.name))
    return found


def build_run(
    config: Config,
    task: TaskSpec,
    arm: ArmSpec,
    run_id: str,
    base_env: dict[str, str],
    spawn_log: SpawnLog | None = None,
    *,
    keep_workdir: bool = True,
    made: MadeDirs | None = None,
    prompt: str | None = None,
) -> BuiltRun:
    """Build everything a Runner needs; raise LaunchError with a reason an operator reads.

    `keep_workdir`: a command task without a workdir runs in its own kept
    directory (tasks from the config); False gives it a directory per run,
    removed after it (submissions: one-off tasks, whose directories would
    otherwise pile up). `made`: the directories the daemon made already.
    `prompt`: the task's prompt file, already read (None: read it here).
    """
    launch = config.launch.get(arm.name, ArmLaunch())
    runs_dir = _runs_dir(config.daemon.state_dir)
    # A run directory (HOME, TMPDIR, prompt file, agent config, default
    # workdir) is made for runs that put files there: agents, isolated homes,
    # prompts on stdin. A plain command without a workdir runs in its task's
    # own directory, made once and kept: a stable place like any supervisor's,
    # where its files survive the run, and no mkdir + rmtree per run (over
    # 1 ms on a slow disk, the largest cost of a short run).
    workspace = None
    if task.workspace is not None:
        try:
            workspace = plan_workspace(
                task.workspace, task.name, run_id, arm.name, config.daemon.state_dir
            )
        except WorkspaceError as exc:
            raise LaunchError(str(exc)) from None
    kept = workspace is None and _runs_in_kept_dir(task, arm, keep_workdir)
    has_workdir = task.workdir is not None or workspace is not None
    needs_dir = not kept and (
        task.isolate_home or task.stdin_prompt or arm.cli != "command" or not has_workdir
    )
    # Isolated homes and prompts on stdin always need it (`kept` excludes them).
    run_dir = runs_dir / run_id if needs_dir else None
    default_workdir = run_dir or task_workdir(config.daemon.state_dir, task.name)
    try:
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
        elif task.workdir is None:
            (made or MadeDirs()).ensure(default_workdir)
    except OSError as exc:
        raise LaunchError(
            f"cannot create run directory {run_dir or default_workdir}: {exc.strerror}"
        ) from None
    if prompt is None:
        prompt = task.prompt
    if prompt is None and task.prompt_file is not None:
        try:  # the loop reads it ahead on a worker thread (PromptReads); others here
            prompt = read_prompt_file(task.prompt_file, config.daemon.prompt_max_bytes)
        except PromptFileError as exc:
            raise LaunchError(str(exc)) from None
    workdir = str(workspace.path) if workspace else task.workdir or str(default_workdir)
    env = {k: base_env[k] for k in (*config.daemon.inherit_env, *task.inherit_env) if k in base_env}
    hook_env = {**env, **dict(task.env)} if workspace else None
    env.update(launch.env)
    env.update(task.env)
    if workspace is not None:
        env.update(FACTORYD_WORKSPACE=str(workspace.path), FACTORYD_BRANCH=workspace.branch)
    if task.isolate_home and run_dir is not None:
        home = run_dir / "home"
        tmp = run_dir / "tmp"
        for d in (
            home,
            tmp,
            home / ".config",
            home / ".cache",
            home / ".local" / "share",
            home / ".local" / "state",
        ):
            d.mkdir(parents=True, exist_ok=True)
        env.update(
            HOME=str(home),
            TMPDIR=str(tmp),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_DATA_HOME=str(home / ".local" / "share"),
            XDG_STATE_HOME=str(home / ".local" / "state"),
        )
    env.update(resolve_secrets(launch))
    ctx = LaunchContext(
        run_id=run_id,
        task=task,
        arm=arm,
        launch=launch,
        prompt=prompt,
        workdir=workdir,
        runs_dir=runs_dir,
    )
    adapter = adapter_for(arm.cli)
    try:
        plan = adapter.plan(ctx)
    except (ValueError, OSError) as exc:
        raise LaunchError(str(exc)) from None
    env.update(plan.env)
    env.update(
        {
            RUN_ID_ENV: run_id,
            STATE_DIR_ENV: str(config.daemon.state_dir),
            "FACTORYD_TASK": task.name,
            "FACTORYD_ARM": arm.name,
        }
    )
    log_path = _task_log_dir(config.daemon.log_dir, task.name) / f"{run_id}.log"
    spec = _run_spec(
        config,
        run_id,
        task.name,
        arm,
        log_path,
        task,
        argv=plan.argv,
        env=env,
        cwd=workdir,
        stdin_path=plan.stdin_path,
        spawn_log=spawn_log,
    )
    return BuiltRun(
        spec=spec,
        run_dir=run_dir,
        log_path=log_path,
        workspace=workspace,
        hook_env=hook_env,
    )


def adopted_run_spec(
    config: Config,
    run_id: str,
    task_name: str,
    arm: ArmSpec,
    log_path: Path,
    task: TaskSpec | None,
) -> RunSpec:
    """The spec of a run a previous daemon started: enough to watch it (its log,
    its parser, its timeouts), nothing to start it with."""
    return _run_spec(config, run_id, task_name, arm, log_path, task, argv=(), env={}, cwd="/")


def _run_spec(
    config: Config,
    run_id: str,
    task_name: str,
    arm: ArmSpec,
    log_path: Path,
    task: TaskSpec | None,
    *,
    argv: tuple[str, ...],
    env: dict[str, str],
    cwd: str,
    stdin_path: str | None = None,
    spawn_log: SpawnLog | None = None,
) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        task=task_name,
        arm=arm.name,
        cli=arm.cli,
        argv=argv,
        env=env,
        cwd=cwd,
        log=RunLog(log_path, config.daemon.run_log_max_bytes),
        parser=adapter_for(arm.cli).parser(),
        stdin_path=stdin_path,
        timeout=task.timeout if task else None,
        stall_timeout=task.stall_timeout if task else None,
        stop_grace=task.stop_grace if task else 10.0,
        spawn_log=spawn_log,
    )


def remove_run_dir(path: Path) -> None:
    try:
        path.rmdir()  # the common case: a command run left its workdir empty
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


#: A name every character of which `_safe` keeps (the usual case: asked in C).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    if _PLAIN_NAME.fullmatch(name):
        return name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"
