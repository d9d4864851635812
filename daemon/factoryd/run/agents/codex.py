"""Codex CLI: `codex exec --json --skip-git-repo-check -- PROMPT`.

Account isolation by CODEX_HOME. With `base_url`, the provider is defined
by `-c` overrides (no file in the account dir is touched) with its own
request and stream retries at 0: the daemon decides about retries.

Output (JSONL): `thread.started`, `turn.started`, `item.started/completed`
(agent_message, command_execution, and `error` items that are warnings),
`turn.completed` whose usage is a running total for the thread (so it
replaces, never adds), `turn.failed`, and `error`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factoryd.core.events import Activity, AgentEvent, Completion, UsageReport
from factoryd.routing.model import Usage
from factoryd.run.agents.base import Adapter, JsonLinesParser, LaunchContext, LaunchPlan
from factoryd.run.agents.limits import looks_like_limit
from factoryd.run.agents.lines import get, number


class CodexParser(JsonLinesParser):
    markers = (b"turn.", b"error", b"limit", b"429")

    def on_object(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "turn.completed":
            usage = get(obj, "usage", default={})
            return [
                UsageReport(
                    Usage(
                        input_tokens=number(get(usage, "input_tokens")),
                        output_tokens=number(get(usage, "output_tokens")),
                        cache_read_tokens=number(get(usage, "cached_input_tokens")),
                        cache_write_tokens=number(get(usage, "cache_write_input_tokens")),
                        reasoning_tokens=number(get(usage, "reasoning_output_tokens")),
                    ),
                    cumulative=True,
                ),
                Completion(True, "turn completed"),
            ]
        if kind in ("turn.failed", "error"):
            message = str(get(obj, "error", "message", default="") or obj.get("message") or "")
            events: list[AgentEvent] = []
            if looks_like_limit(message):
                events.append(self.limit(message, 429 if "429" in message else None))
            if kind == "turn.failed":
                events.append(Completion(False, message[:300] or "turn failed"))
            return events or [Activity("error", message[:200])]
        if kind in ("item.started", "item.completed", "item.updated"):
            item = get(obj, "item", default={})
            item_type = str(get(item, "type", default="item"))
            if item_type == "error":
                message = str(get(item, "message", default=""))
                if looks_like_limit(message):
                    return [self.limit(message)]
            return [Activity(item_type)]
        return [Activity(str(kind))]


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class CodexAdapter(Adapter):
    cli = "codex"

    def plan(self, ctx: LaunchContext) -> LaunchPlan:
        home = Path(ctx.launch.config_dir or ctx.run_dir / "codex-home")
        home.mkdir(parents=True, exist_ok=True)  # codex refuses a CODEX_HOME that is missing
        env = {"CODEX_HOME": str(home)}
        argv = [self.executable(ctx), "exec", "--json", "--skip-git-repo-check"]
        if ctx.arm.model:
            argv += ["-m", ctx.arm.model]
        if ctx.launch.base_url:
            name = ctx.arm.provider or "factoryd"
            key = next((var for var, _ in ctx.launch.secrets), "OPENAI_API_KEY")
            prefix = f"model_providers.{name}"
            for override in (
                f"model_provider={_toml(name)}",
                f"{prefix}.name={_toml(name)}",
                f"{prefix}.base_url={_toml(ctx.launch.base_url)}",
                f"{prefix}.env_key={_toml(key)}",
                f'{prefix}.wire_api="responses"',
                f"{prefix}.request_max_retries=0",
                f"{prefix}.stream_max_retries=0",
            ):
                argv += ["-c", override]
        sandbox = "workspace-write" if ctx.task.route.requires_tools else "read-only"
        argv += ["-c", 'approval_policy="never"', "-c", f"sandbox_mode={_toml(sandbox)}"]
        argv += [*ctx.launch.args, "--", ctx.prompt or ""]
        return LaunchPlan(argv=tuple(argv), env=env)

    def parser(self, clock: Callable[[], float] = time.time) -> CodexParser:
        return CodexParser(clock)
