"""The `command` CLI: any program from an argv list. No parser; exit status and
output activity are all it reports."""

from __future__ import annotations

from factoryd.run.agents.base import Adapter, LaunchContext, LaunchPlan

PLACEHOLDERS = ("{prompt}", "{model}", "{task}", "{run_id}", "{workdir}")


def expand(argv: tuple[str, ...], ctx: LaunchContext) -> tuple[str, ...]:
    """Substitute the documented placeholders inside argv elements (no shell, no format())."""
    values = {
        "{prompt}": ctx.prompt or "",
        "{model}": ctx.arm.model,
        "{task}": ctx.task.name,
        "{run_id}": ctx.run_id,
        "{workdir}": ctx.workdir,
    }
    out = []
    for arg in argv:
        for key, value in values.items():
            if key in arg:
                arg = arg.replace(key, value)
        out.append(arg)
    return tuple(out)


class CommandAdapter(Adapter):
    cli = "command"

    def plan(self, ctx: LaunchContext) -> LaunchPlan:
        argv = ctx.task.argv or ctx.launch.argv
        if not argv:
            raise ValueError(f"task {ctx.task.name} has no argv for command arm {ctx.arm.name}")
        stdin = None
        if ctx.task.stdin_prompt and ctx.prompt is not None:
            path = ctx.run_dir / "prompt.txt"
            path.write_text(ctx.prompt)
            stdin = str(path)
        return LaunchPlan(argv=expand(argv, ctx), stdin_path=stdin)
