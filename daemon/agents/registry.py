"""Which adapter serves which `cli` name."""

from __future__ import annotations

from daemon.agents.base import Adapter
from daemon.agents.claude import ClaudeAdapter
from daemon.agents.codex import CodexAdapter
from daemon.agents.command import CommandAdapter
from daemon.agents.gemini import GeminiAdapter
from daemon.agents.opencode import OpencodeAdapter

ADAPTERS: dict[str, Adapter] = {
    a.cli: a
    for a in (CommandAdapter(), ClaudeAdapter(), CodexAdapter(), GeminiAdapter(), OpencodeAdapter())
}


def adapter_for(cli: str) -> Adapter:
    try:
        return ADAPTERS[cli]
    except KeyError:
        raise LookupError(f"no adapter for cli {cli!r}") from None
