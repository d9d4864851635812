"""Which adapter serves which `cli` name."""

from __future__ import annotations

from factoryd.run.agents.base import Adapter
from factoryd.run.agents.claude import ClaudeAdapter
from factoryd.run.agents.codex import CodexAdapter
from factoryd.run.agents.command import CommandAdapter
from factoryd.run.agents.gemini import GeminiAdapter
from factoryd.run.agents.opencode import OpencodeAdapter

ADAPTERS: dict[str, Adapter] = {
    a.cli: a
    for a in (CommandAdapter(), ClaudeAdapter(), CodexAdapter(), GeminiAdapter(), OpencodeAdapter())
}


def adapter_for(cli: str) -> Adapter:
    try:
        return ADAPTERS[cli]
    except KeyError:
        raise LookupError(f"no adapter for cli {cli!r}") from None
