"""opencode: `opencode run --format json -m PROVIDER/MODEL -- PROMPT`.

With `base_url`, the provider is defined inline (OPENCODE_CONFIG_CONTENT)
as an OpenAI-compatible endpoint whose key comes from the arm's first
secret variable, with the arm's prices (per million tokens) so that the
cost opencode reports is the cost routing charges. Auto-update and the
models.dev fetch are off; XDG directories point at the account dir or the
run's own.

Output (NDJSON): `step_start`, `text`, `tool_use`, `step_finish` with the
step's `tokens` and `cost` (per step: they are added up), and `error` with
`data.statusCode`, `data.isRetryable` and the response headers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factoryd.core.events import Activity, AgentEvent, Completion, LimitHit, UsageReport
from factoryd.routing.model import Usage
from factoryd.run.agents.base import Adapter, JsonLinesParser, LaunchContext, LaunchPlan
from factoryd.run.agents.limits import looks_like_limit
from factoryd.run.agents.lines import get, money, number


class OpencodeParser(JsonLinesParser):
    markers = (b"step_finish", b"error", b"limit", b"429")

    def on_object(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "step_finish":
            tokens = get(obj, "part", "tokens", default={})
            reason = str(get(obj, "part", "reason", default=""))
            # "tool-calls" means another step follows; anything else ends the run.
            done: list[AgentEvent] = (
                [] if reason == "tool-calls" else [Completion(True, f"finished: {reason}")]
            )
            return [
                *done,
                UsageReport(
                    Usage(
                        input_tokens=number(get(tokens, "input")),
                        output_tokens=number(get(tokens, "output")),
                        reasoning_tokens=number(get(tokens, "reasoning")),
                        cache_read_tokens=number(get(tokens, "cache", "read")),
                        cache_write_tokens=number(get(tokens, "cache", "write")),
                        cost_usd=money(get(obj, "part", "cost")),
                    ),
                    cumulative=False,
                ),
            ]
        if kind == "error":
            data = get(obj, "error", "data", default={})
            message = str(
                get(data, "message", default="") or get(obj, "error", "name", default="error")
            )
            status = get(data, "statusCode")
            events: list[AgentEvent] = []
            if status == 429 or looks_like_limit(message):
                retry_after = get(data, "responseHeaders", "retry-after")
                until = None
                if isinstance(retry_after, str) and retry_after.replace(".", "", 1).isdigit():
                    until = self.clock() + float(retry_after)
                hit = self.limit(message, status if isinstance(status, int) else None)
                events.append(LimitHit(until=until or hit.until, text=hit.text, status=hit.status))
            events.append(Completion(False, message[:300]))
            return events
        return [Activity(str(kind))]


class OpencodeAdapter(Adapter):
    cli = "opencode"

    def plan(self, ctx: LaunchContext) -> LaunchPlan:
        base = Path(ctx.launch.config_dir) if ctx.launch.config_dir else ctx.run_dir / "opencode"
        env = {
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "XDG_CONFIG_HOME": str(base / "config"),
            "XDG_DATA_HOME": str(base / "data"),
            "XDG_CACHE_HOME": str(base / "cache"),
            "XDG_STATE_HOME": str(base / "state"),
        }
        provider = ctx.arm.provider or "factoryd"
        config: dict[str, Any] = {"autoupdate": False, "share": "disabled"}
        if ctx.task.route.requires_tools:
            config["permission"] = {"edit": "allow", "bash": "allow"}
        if ctx.launch.base_url:
            key = next((var for var, _ in ctx.launch.secrets), "")
            config["provider"] = {
                provider: {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": provider,
                    "options": {
                        "baseURL": ctx.launch.base_url,
                        **({"apiKey": f"{{env:{key}}}"} if key else {}),
                    },
                    "models": {
                        ctx.arm.model: {
                            "name": ctx.arm.model,
                            "cost": {
                                "input": ctx.arm.cost_per_1k_input * 1000,
                                "output": ctx.arm.cost_per_1k_output * 1000,
                            },
                        }
                    },
                }
            }
        env["OPENCODE_CONFIG_CONTENT"] = json.dumps(config)
        argv = [self.executable(ctx), "run", "--format", "json"]
        if ctx.arm.model:
            argv += ["-m", f"{provider}/{ctx.arm.model}"]
        argv += [*ctx.launch.args, "--", ctx.prompt or ""]
        return LaunchPlan(argv=tuple(argv), env=env)

    def parser(self, clock: Callable[[], float] = time.time) -> OpencodeParser:
        return OpencodeParser(clock)
