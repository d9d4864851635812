"""Gemini CLI: `gemini -o stream-json -m MODEL --prompt=PROMPT`.

HOME is the account (its `.gemini/` holds auth and settings); without a
`config_dir` each run gets its own, with settings that select API-key auth
and one attempt per request (the daemon decides about retries). TMPDIR is
per run because the CLI drops error reports there. The workspace is
trusted explicitly (else exit 55). `--prompt=` keeps a prompt that starts
with `-` from being read as a flag.

Output: `init`, `message`, `tool_use`, `tool_result`, `error`, and a final
`result` with `status` and `stats`. A 429 goes to stderr with exit status
173 (HTTP status mod 256), so stderr is scanned for limits.
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

SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "general": {"maxAttempts": 1, "disableAutoUpdate": True},
    "telemetry": {"enabled": False},
    "privacy": {"usageStatisticsEnabled": False},
}


class GeminiParser(JsonLinesParser):
    markers = (b"result", b"error", b"quota", b"limit", b"429")

    scan_stderr = True

    def on_object(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "result":
            stats = get(obj, "stats", default={})
            events: list[AgentEvent] = [
                UsageReport(
                    Usage(
                        input_tokens=number(get(stats, "input_tokens")),
                        output_tokens=number(get(stats, "output_tokens")),
                        cache_read_tokens=number(get(stats, "cached")),
                    )
                )
            ]
            if obj.get("status") == "success":
                events.append(Completion(True, "success"))
            else:
                message = str(get(obj, "error", "message", default="") or "error")
                if looks_like_limit(message):
                    events.append(self.limit(message))
                events.append(Completion(False, message[:300]))
            return events
        if kind == "error":
            message = str(obj.get("message") or get(obj, "error", "message", default=""))
            if looks_like_limit(message):
                return [self.limit(message)]
            return [Activity("error", message[:200])]
        return [Activity(str(kind))]


class GeminiAdapter(Adapter):
    cli = "gemini"

    def plan(self, ctx: LaunchContext) -> LaunchPlan:
        home = Path(ctx.launch.config_dir) if ctx.launch.config_dir else ctx.run_dir / "gemini"
        settings = home / ".gemini" / "settings.json"
        if not settings.exists():
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text(json.dumps(SETTINGS, indent=2))
        tmp = ctx.run_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {"HOME": str(home), "TMPDIR": str(tmp), "GEMINI_CLI_TRUST_WORKSPACE": "true"}
        if ctx.launch.base_url:
            env["GOOGLE_GEMINI_BASE_URL"] = ctx.launch.base_url
        argv = [self.executable(ctx), "-o", "stream-json"]
        if ctx.arm.model:
            argv += ["-m", ctx.arm.model]
        if ctx.task.route.requires_tools:
            argv += ["--approval-mode", "yolo"]
        argv += [*ctx.launch.args, f"--prompt={ctx.prompt or ''}"]
        return LaunchPlan(argv=tuple(argv), env=env)

    def parser(self, clock: Callable[[], float] = time.time) -> GeminiParser:
        return GeminiParser(clock)
