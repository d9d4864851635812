"""Which adapter serves which `cli` name."""

from __future__ import annotations

from daemon.agents.base import Adapter
from daemon.agents.command import CommandAdapter

_ADAPTERS: dict[str, Adapter] = {"command": CommandAdapter()}


def adapter_for(cli: str) -> Adapter:
    try:
        return _ADAPTERS[cli]
    except KeyError:
        raise LookupError(f"no adapter for cli {cli!r}") from None


def register(adapter: Adapter) -> None:
    _ADAPTERS[adapter.cli] = adapter
