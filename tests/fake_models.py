"""A fake model provider on 127.0.0.1 that the real agent CLIs can talk to.

One stdlib HTTP server serves the four wire protocols the CLIs use:

* OpenAI chat completions, streamed (opencode):  POST .../v1/chat/completions
* OpenAI Responses, streamed (codex):             POST .../v1/responses
* Anthropic Messages, streamed or not (claude):   POST .../v1/messages
* Gemini generateContent / streamGenerateContent: POST .../v1beta/models/M:...

Behaviour is chosen by a path prefix `/m/<mode>/...`:

* `text`: answer with a short text and fixed token counts (`USAGE`);
* `tool`: first call a file-writing tool offered in the request (its name
  and argument names are read from the request's tool schemas, so the
  server follows whatever the CLI offers), then answer with text;
* `429`: every request fails with HTTP 429 in the provider's own JSON shape
  and a `retry-after` header;
* `hang`: accept the request, send nothing, never finish.

Every request is recorded (`requests`) so tests can see what the CLI sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Token counts every successful response reports, per request.
USAGE = {"input": 1234, "output": 56, "cached": 0, "reasoning": 0}
TEXT = "Done: the answer is 42."
TOOL_FILE = "factoryd-tool-output.txt"
TOOL_CONTENT = "written by the agent through its own tool\n"
RETRY_AFTER = 1

#: How each real CLI is pointed at this server: a model id it accepts, the
#: variable its key goes in, and what to append to the server's URL.
CLI_MODELS = {
    "claude": "claude-sonnet-4-5",
    "codex": "gpt-5-codex",
    "gemini": "gemini-2.5-pro",
    "opencode": "fake-model",
}
CLI_KEYS = {
    "claude": "ANTHROPIC_API_KEY",
    "codex": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "opencode": "FACTORYD_PROVIDER_KEY",
}
CLI_URL_SUFFIX = {"claude": "", "codex": "/v1", "gemini": "", "opencode": "/v1"}


@dataclass
class Recorded:
    method: str
    path: str
    body: Any


@dataclass
class FakeModels:
    """The server; `url(mode)` is the base URL to give a CLI."""

    host: str = "127.0.0.1"
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    hang: threading.Event = field(default_factory=threading.Event)

    def start(self) -> FakeModels:
        models = self

        class Handler(_Handler):
            owner = models

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def url(self, mode: str, suffix: str = "") -> str:
        return f"http://{self.host}:{self.port}/m/{mode}{suffix}"

    def stop(self) -> None:
        self.hang.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def model_calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and _is_model_call(r.path)]


def _is_model_call(path: str) -> bool:
    lowered = path.lower()
    calls = ("/chat/completions", "/responses", "/messages", "generatecontent")
    return any(k in lowered for k in calls) and "count_tokens" not in lowered


class _Handler(BaseHTTPRequestHandler):
    owner: FakeModels
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        return

    # -- plumbing -------------------------------------------------------------

    def _body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return raw.decode(errors="replace")

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _too_many(self, payload: Any) -> None:
        """HTTP 429 in the provider's own error shape, with a retry-after header."""
        self._json(429, payload, {"retry-after": str(RETRY_AFTER)})

    def _sse_start(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def _sse(self, payload: Any, event: str | None = None) -> None:
        chunk = ""
        if event:
            chunk += f"event: {event}\n"
        chunk += f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"
        self.wfile.write(chunk.encode())
        self.wfile.flush()

    def do_GET(self) -> None:
        self.owner.requests.append(Recorded("GET", self.path, None))
        if self.path.rstrip("/").endswith("/models"):
            self._json(
                200,
                {"object": "list", "data": [{"id": "fake-model", "object": "model"}], "models": []},
            )
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self._body()
        self.owner.requests.append(Recorded("POST", self.path, body))
        match = re.match(r"^/m/([^/]+)(/.*)$", self.path)
        mode, rest = (match.group(1), match.group(2)) if match else ("text", self.path)
        if "count_tokens" in rest:
            self._json(200, {"input_tokens": USAGE["input"]})
            return
        if mode == "hang" and _is_model_call(rest):
            self.owner.hang.wait(600)
            return
        if "/chat/completions" in rest:
            self._openai_chat(mode, body)
        elif rest.split("?")[0].endswith("/responses"):
            self._openai_responses(mode, body)
        elif "/messages" in rest:
            self._anthropic(mode, body)
        elif "generateContent" in rest or "GenerateContent" in rest:
            self._gemini(mode, body, streaming="stream" in rest.lower())
        elif "countTokens" in rest:
            self._json(200, {"totalTokens": USAGE["input"]})
        else:
            self._json(404, {"error": {"message": f"fake server has no {rest}"}})

    # -- deciding what to answer ----------------------------------------------

    @staticmethod
    def _tool_turn_done(messages_text: str) -> bool:
        """True once the conversation already carries a tool result."""
        return TOOL_FILE in messages_text and ("tool" in messages_text.lower())

    def _plan(self, mode: str, body: Any, tools: list[dict[str, Any]]) -> tuple[str, Any]:
        """('text', None) or ('tool', (name, arguments))."""
        if mode != "tool":
            return "text", None
        text = json.dumps(body)
        if _count_tool_results(body) > 0:
            return "text", None
        call = _write_call(tools, text)
        return ("tool", call) if call else ("text", None)

    # -- OpenAI chat completions (opencode) -----------------------------------

    def _openai_chat(self, mode: str, body: Any) -> None:
        if mode == "429":
            self._too_many(
                {
                    "error": {
                        "message": "Rate limit reached for requests",
                        "type": "rate_limit_exceeded",
                        "code": "rate_limit",
                    }
                }
            )
            return
        tools = [t.get("function", t) for t in (body or {}).get("tools", [])]
        kind, call = self._plan(mode, body, tools)
        usage = {
            "prompt_tokens": USAGE["input"],
            "completion_tokens": USAGE["output"],
            "total_tokens": USAGE["input"] + USAGE["output"],
        }
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": (body or {}).get("model", "fake"),
        }
        if not (body or {}).get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": TEXT}
            if kind == "tool":
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": call[0], "arguments": json.dumps(call[1])},
                        }
                    ],
                }
            self._json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if kind == "tool" else "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        self._sse_start()
        if kind == "tool":
            self._sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "role": "assistant",
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": "call_1",
                                        "type": "function",
                                        "function": {"name": call[0], "arguments": ""},
                                    }
                                ],
                            },
                            "finish_reason": None,
                        }
                    ],
                }
            )
            self._sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {"index": 0, "function": {"arguments": json.dumps(call[1])}}
                                ]
                            },
                            "finish_reason": None,
                        }
                    ],
                }
            )
            self._sse(
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
            )
        else:
            self._sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": TEXT},
                            "finish_reason": None,
                        }
                    ],
                }
            )
            self._sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._sse({**base, "choices": [], "usage": usage})
        self._sse("[DONE]")

    # -- OpenAI Responses (codex) -------------------------------------------------

    def _openai_responses(self, mode: str, body: Any) -> None:
        if mode == "429":
            self._too_many(
                {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "rate_limit_exceeded",
                        "code": "rate_limit_exceeded",
                    }
                }
            )
            return
        tools = [t.get("function", t) for t in (body or {}).get("tools", [])]
        kind, call = self._plan(mode, body, tools)
        rid = "resp_fake"
        self._sse_start()
        self._sse(
            {"type": "response.created", "response": {"id": rid, "status": "in_progress"}},
            "response.created",
        )
        if kind == "tool":
            item = {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": call[0],
                "arguments": json.dumps(call[1]),
                "status": "completed",
            }
        else:
            item = {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
            }
            self._sse(
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {**item, "content": [], "status": "in_progress"},
                },
                "response.output_item.added",
            )
            self._sse(
                {
                    "type": "response.output_text.delta",
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": TEXT,
                },
                "response.output_text.delta",
            )
        self._sse(
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            "response.output_item.done",
        )
        self._sse(
            {
                "type": "response.completed",
                "response": {
                    "id": rid,
                    "status": "completed",
                    "output": [item],
                    "usage": {
                        "input_tokens": USAGE["input"],
                        "input_tokens_details": {"cached_tokens": USAGE["cached"]},
                        "output_tokens": USAGE["output"],
                        "output_tokens_details": {"reasoning_tokens": USAGE["reasoning"]},
                        "total_tokens": USAGE["input"] + USAGE["output"],
                    },
                },
            },
            "response.completed",
        )

    # -- Anthropic Messages (claude) ------------------------------------------------

    def _anthropic(self, mode: str, body: Any) -> None:
        if mode == "429":
            self._too_many(
                {
                    "type": "error",
                    "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"},
                }
            )
            return
        tools = (body or {}).get("tools", []) or []
        kind, call = self._plan(mode, body, tools)
        model = (body or {}).get("model", "claude-sonnet-4-5")
        usage = {
            "input_tokens": USAGE["input"],
            "output_tokens": USAGE["output"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if kind == "tool":
            content = [{"type": "tool_use", "id": "toolu_fake1", "name": call[0], "input": call[1]}]
        else:
            content = [{"type": "text", "text": TEXT}]
        stop = "tool_use" if kind == "tool" else "end_turn"
        if not (body or {}).get("stream"):
            self._json(
                200,
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                },
            )
            return
        self._sse_start()
        self._sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {**usage, "output_tokens": 1},
                },
            },
            "message_start",
        )
        if kind == "tool":
            self._sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_fake1",
                        "name": call[0],
                        "input": {},
                    },
                },
                "content_block_start",
            )
            self._sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(call[1])},
                },
                "content_block_delta",
            )
        else:
            self._sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
            self._sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": TEXT},
                },
                "content_block_delta",
            )
        self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self._sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": USAGE["output"]},
            },
            "message_delta",
        )
        self._sse({"type": "message_stop"}, "message_stop")

    # -- Gemini (gemini) ------------------------------------------------------------

    def _gemini(self, mode: str, body: Any, streaming: bool) -> None:
        if mode == "429":
            self._too_many(
                {
                    "error": {
                        "code": 429,
                        "status": "RESOURCE_EXHAUSTED",
                        "message": "You have exhausted your daily quota on this model.",
                    }
                }
            )
            return
        tools = []
        for group in (body or {}).get("tools", []) or []:
            tools.extend(group.get("functionDeclarations", []) or [])
        kind, call = self._plan(mode, body, tools)
        if kind == "tool":
            parts = [{"functionCall": {"name": call[0], "args": call[1]}}]
        else:
            parts = [{"text": TEXT}]
        payload = {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": USAGE["input"],
                "candidatesTokenCount": USAGE["output"],
                "totalTokenCount": USAGE["input"] + USAGE["output"],
            },
            "modelVersion": "gemini-fake",
        }
        if not streaming:
            self._json(200, payload)
            return
        self._sse_start()
        self._sse(payload)


def _count_tool_results(body: Any) -> int:
    """How many tool results the conversation already carries, whatever the protocol."""
    text = json.dumps(body)
    return (
        text.count('"role": "tool"')
        + text.count('"type": "tool_result"')
        + text.count('"functionResponse"')
        + text.count('"type": "function_call_output"')
    )


def _write_call(
    tools: list[dict[str, Any]], conversation: str
) -> tuple[str, dict[str, Any]] | None:
    """Pick the CLI's file-writing tool and fill in its arguments from its schema."""
    by_name = {t.get("name", ""): t for t in tools if isinstance(t, dict)}
    for name in ("write", "Write", "write_file", "WriteFile", "create_file"):
        tool = by_name.get(name)
        if tool is None:
            continue
        schema = (
            tool.get("parameters")
            or tool.get("input_schema")
            or tool.get("parametersJsonSchema")
            or {}
        )
        props = set((schema.get("properties") or {}).keys())
        path_key = next(
            (k for k in ("filePath", "file_path", "absolute_path", "path") if k in props),
            "file_path",
        )
        content_key = next((k for k in ("content", "contents", "text") if k in props), "content")
        cwd = _workdir(conversation)
        target = f"{cwd}/{TOOL_FILE}" if cwd else TOOL_FILE
        return name, {path_key: target, content_key: TOOL_CONTENT}
    for name in ("shell", "exec_command", "bash", "Bash", "run_shell_command"):
        tool = by_name.get(name)
        if tool is None:
            continue
        schema = (
            tool.get("parameters")
            or tool.get("input_schema")
            or tool.get("parametersJsonSchema")
            or {}
        )
        props = schema.get("properties") or {}
        cwd = _workdir(conversation) or "."
        script = f"printf '%s\\n' '{TOOL_CONTENT.strip()}' > {cwd}/{TOOL_FILE}"
        key = "cmd" if "cmd" in props else "command"
        args: dict[str, Any] = {key: script}
        if props.get(key, {}).get("type") == "array":
            args[key] = ["bash", "-lc", script]
        if "workdir" in props:
            args["workdir"] = cwd
        return name, args
    return None


def _workdir(conversation: str) -> str | None:
    """The run's workdir, which the tests put in the prompt as WORKDIR=<path>."""
    match = re.search(r"WORKDIR=(/[^\s\"'\\]+)", conversation)
    return match.group(1) if match else None
