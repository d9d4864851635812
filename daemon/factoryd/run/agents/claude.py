"""Claude Code: `claude -p --output-format stream-json --verbose`.

Account isolation by CLAUDE_CONFIG_DIR, the endpoint by ANTHROPIC_BASE_URL,
and CLAUDE_CODE_MAX_RETRIES=0 so that the daemon, not the CLI, decides
about retries (its own 429 retries last minutes). The prompt goes after
`--` because `--allowedTools` takes several values.

Output: `system/init`, `assistant`, `user` (tool results), `system/api_retry`,
`rate_limit_event` on subscription plans, and a final `result` carrying
usage, `total_cost_usd`, `is_error` and `api_error_status`. On a 429 the
result says `subtype: success` but `is_error: true`: is_error wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factoryd.core.events import Activity, AgentEvent, Completion, LimitHit, UsageReport
from factoryd.routing.model import Usage
from factoryd.run.agents.base import Adapter, JsonLinesParser, LaunchContext, LaunchPlan
from factoryd.run.agents.limits import looks_like_limit
from factoryd.run.agents.lines import get, money, number

EDIT_TOOLS = ("Bash", "Edit", "Write", "Read", "Glob", "Grep")


class ClaudeParser(JsonLinesParser):
    # `system` lines (init, api_retry) are plain activity to the daemon: no marker,
    # so a flood is not scanned for a fifth word.
    markers = (b"result", b"rate_limit", b"limit", b"error")

    def on_object(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "result":
            return self._result(obj)
        if kind == "rate_limit_event":
            info = get(obj, "rate_limit_info", default={})
            status = get(info, "status", default="")
            if status == "rejected":
                until = info.get("resetsAt")
                return [
                    LimitHit(
                        until=float(until) if isinstance(until, int | float) else None,
                        text=f"rate_limit_event rejected ({get(info, 'rateLimitType')})",
                    )
                ]
            return [Activity("rate_limit", str(status))]
        if kind == "assistant":
            for block in get(obj, "message", "content", default=[]) or []:
                text = block.get("text", "") if isinstance(block, dict) else ""
                if isinstance(text, str) and "usage limit reached" in text.lower():
                    return [self.limit(text)]
            return [Activity("assistant")]
        if kind == "user":
            return [Activity("tool_result")]
        if kind == "system":
            return [Activity(str(obj.get("subtype", "system")))]
        return [Activity(str(kind))]

    def _result(self, obj: dict[str, Any]) -> list[AgentEvent]:
        usage = get(obj, "usage", default={})
        events: list[AgentEvent] = [
            UsageReport(
                Usage(
                    input_tokens=number(get(usage, "input_tokens")),
                    output_tokens=number(get(usage, "output_tokens")),
                    cache_read_tokens=number(get(usage, "cache_read_input_tokens")),
                    cache_write_tokens=number(get(usage, "cache_creation_input_tokens")),
                    cost_usd=money(obj.get("total_cost_usd")),
                )
            )
        ]
        text = str(obj.get("result") or "")
        status = obj.get("api_error_status")
        if obj.get("is_error"):
            if status == 429 or looks_like_limit(text):
                events.append(
                    self.limit(text or "429", status if isinstance(status, int) else None)
                )
            reason = text or str(obj.get("terminal_reason") or obj.get("subtype") or "error")
            events.append(Completion(False, reason[:300]))
        else:
            events.append(Completion(True, str(obj.get("terminal_reason") or "completed")))
        return events


class ClaudeAdapter(Adapter):
    cli = "claude"

    def plan(self, ctx: LaunchContext) -> LaunchPlan:
        config = Path(ctx.launch.config_dir or ctx.run_dir / "claude")
        config.mkdir(parents=True, exist_ok=True)
        env = {
            "CLAUDE_CONFIG_DIR": str(config),
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
        if ctx.launch.base_url:
            env["ANTHROPIC_BASE_URL"] = ctx.launch.base_url
        argv = [self.executable(ctx), "-p", "--output-format", "stream-json", "--verbose"]
        if ctx.arm.model:
            argv += ["--model", ctx.arm.model]
        if ctx.task.route.requires_tools:
            argv += ["--permission-mode", "acceptEdits", "--allowedTools", *EDIT_TOOLS]
        argv += [*ctx.launch.args, "--", ctx.prompt or ""]
        return LaunchPlan(argv=tuple(argv), env=env)

    def parser(self, clock: Callable[[], float] = time.time) -> ClaudeParser:
        return ClaudeParser(clock)
