"""[[tasks]] and [[templates]]: what should run, and submitted tasks' bases.

A task reads the same keys whether it is configured, a template, or a
submission overriding a template (`base`), so one reader serves all three
and their errors name keys the same way.
"""

from __future__ import annotations

import zoneinfo

from croniter import croniter

from factoryd.config.context import LoadContext
from factoryd.config.execargs import check_env_names, check_name_list, check_program
from factoryd.config.model import ArmLaunch
from factoryd.config.tomltable import MAX_COUNT, Table
from factoryd.config.workspace import read_workspace
from factoryd.core.taskspec import Backoff, MissedPolicy, RestartPolicy, TaskKind, TaskSpec
from factoryd.routing.model import ArmSpec, Priority, RouteRequest, TaskType


def read_task(
    ctx: LoadContext,
    t: Table,
    arms: dict[str, ArmSpec],
    launch: dict[str, ArmLaunch],
    base: TaskSpec | None = None,
    *,
    template: bool = False,
) -> TaskSpec | None:
    name = t.name("name") if base is None else t.string("name", base.name)
    kind_default = base.kind.value if base else "service"
    kind = t.string("kind", kind_default, tuple(k.value for k in TaskKind))
    schedule = t.string("schedule", base.schedule if base else None)
    tz = t.string("timezone", base.timezone if base else "UTC")
    if isinstance(tz, str):
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            t.problem("timezone", f"unknown time zone {tz!r} (use an IANA name like Europe/Paris)")
    if kind == "scheduled" and not schedule:
        t.problem("schedule", "is required for a scheduled task (a cron expression)")
    if schedule is not None and kind != "scheduled":
        t.problem("schedule", 'only scheduled tasks take a schedule (set kind = "scheduled")')
    if isinstance(schedule, str) and not croniter.is_valid(schedule):
        t.problem("schedule", f"not a valid cron expression: {schedule!r}")
    r0 = base.route if base else None
    allowed = t.str_list("arms", r0.arms if r0 else ())
    for i, arm_name in enumerate(allowed):
        if arm_name not in arms and arm_name not in ctx.declared_arms:
            ctx.problem(
                f"{t.key('arms')}[{i}]",
                f"no arm named {arm_name!r} (known: {', '.join(arms) or 'none'})",
            )
    effort = t.string("effort", r0.effort if r0 else None)
    route = RouteRequest(
        task=name if isinstance(name, str) else "?",
        type=TaskType(
            t.string("type", str(r0.type) if r0 else "generation", tuple(x.value for x in TaskType))
        ),
        priority=Priority(
            t.string(
                "priority",
                str(r0.priority) if r0 else "normal",
                tuple(p.value for p in Priority),
            )
        ),
        estimated_tokens=t.number(
            "estimated_tokens", r0.estimated_tokens if r0 else 0, hi=1e12, integer=True
        ),
        requires_tools=t.boolean("requires_tools", r0.requires_tools if r0 else False),
        requires_vision=t.boolean("requires_vision", r0.requires_vision if r0 else False),
        complexity=float(t.number("complexity", r0.complexity if r0 else 0.0, hi=1.0)),
        effort=effort,
        arms=allowed,
        min_quality=t.number("min_quality", r0.min_quality if r0 else None, hi=1.0),
    )
    prompt = t.string("prompt", base.prompt if base else None)
    prompt_file = ctx.opt_path(t, "prompt_file") or (base.prompt_file if base else None)
    if prompt is not None and "prompt_file" in t.data:
        t.problem("prompt_file", "give either prompt or prompt_file, not both")
    argv = t.str_list("argv") if "argv" in t.data else (base.argv if base else None)
    if t.data.get("argv") == []:
        t.problem("argv", "must not be empty")
    check_program(t, "argv", argv)
    b0 = base.backoff if base else Backoff()
    bt = t.sub("backoff")
    backoff = Backoff(
        initial=bt.duration("initial", b0.initial),
        max=bt.duration("max", b0.max),
        jitter=bt.boolean("jitter", b0.jitter),
        reset_after=bt.duration("reset_after", b0.reset_after),
    )
    if backoff.initial is not None and backoff.max is not None and backoff.max < backoff.initial:
        bt.problem("max", "must not be shorter than backoff.initial")
    bt.done()
    default_restart = (
        base.restart.value if base else ("always" if kind == "service" else "on-failure")
    )
    workdir = ctx.opt_path(t, "workdir") or (base.workdir if base else None)
    workspace = read_workspace(
        t, base=base.workspace if base else None, resolve=lambda p: str(ctx.path_of(p))
    )
    if workspace is not None and workdir is not None:
        t.problem("workspace", "give either workdir or workspace (its worktree is the workdir)")
    own_env = t.str_map("env")
    check_env_names(t, "env", [var for var, _ in own_env])
    env = own_env or (base.env if base else ())
    inherit_env = t.str_list("inherit_env", base.inherit_env if base else ())
    check_name_list(t, "inherit_env", inherit_env)
    fleet = None if template else t.string("fleet", base.fleet if base else None, ("once",))
    if fleet is not None and schedule is None and kind != "service":
        t.problem("fleet", '"once" is for a scheduled task or a service')
    spec = TaskSpec(
        name=name if isinstance(name, str) else "?",
        kind=TaskKind(kind or "service"),
        route=route,
        prompt=prompt,
        prompt_file=prompt_file,
        argv=argv,
        workdir=workdir,
        env=env,
        inherit_env=inherit_env,
        timeout=t.duration("timeout", base.timeout if base else None, allow_none=True),
        stall_timeout=t.duration(
            "stall_timeout", base.stall_timeout if base else None, allow_none=True
        ),
        restart=RestartPolicy(
            t.string("restart", default_restart, tuple(r.value for r in RestartPolicy))
        ),
        max_restarts=t.number(
            "max_restarts", base.max_restarts if base else 5, hi=MAX_COUNT, integer=True
        ),
        restart_window=t.duration("restart_window", base.restart_window if base else 600.0),
        backoff=backoff,
        stop_grace=t.duration("stop_grace", base.stop_grace if base else 10.0),
        isolate_home=t.boolean("isolate_home", base.isolate_home if base else False),
        stdin_prompt=t.boolean("stdin_prompt", base.stdin_prompt if base else False),
        schedule=schedule,
        timezone=tz or "UTC",
        missed=MissedPolicy(
            t.string(
                "missed",
                base.missed.value if base else "once",
                tuple(m.value for m in MissedPolicy),
            )
        ),
        missed_cap=t.number(
            "missed_cap", base.missed_cap if base else 10, lo=1, hi=10_000, integer=True
        ),
        enabled=t.boolean("enabled", base.enabled if base else True),
        workspace=workspace,
        fleet=fleet,
    )
    for key, value in (("timeout", spec.timeout), ("stall_timeout", spec.stall_timeout)):
        if value == 0:
            t.problem(key, "must be longer than zero (or 'none')")
    # A task that may land on a `command` arm needs a program to run.
    candidates = [arms[a] for a in allowed if a in arms] or list(arms.values())
    if not template and spec.argv is None:
        for arm in candidates:
            if arm.cli == "command" and launch.get(arm.name, ArmLaunch()).argv is None:
                t.problem(
                    "argv",
                    f"is required: arm {arm.name!r} is a command arm without argv",
                )
                break
    t.done()
    return spec
