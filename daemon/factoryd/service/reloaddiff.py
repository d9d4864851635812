"""What a reload changes: tasks, arms, pools and templates added, removed, changed.

`factoryd reload` prints it after the daemon applied the file, and
`factoryd reload --dry-run` before (nothing applied). A changed task is
restarted by the reload; an unchanged one is left alone, so the list of
changed tasks is the list of runs a reload will restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from factoryd.config.model import Config


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def _by_name(items: Iterable[_Named]) -> dict[str, Any]:
    return {item.name: item for item in items}


def _compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "changed": sorted(n for n in old.keys() & new.keys() if old[n] != new[n]),
    }


def config_diff(old: Config, new: Config) -> dict[str, dict[str, list[str]]]:
    """Per kind (tasks, arms, pools, templates): names added, removed and changed."""
    return {
        "tasks": _compare(_by_name(old.tasks), _by_name(new.tasks)),
        "arms": _compare(_by_name(old.arms), _by_name(new.arms)),
        "pools": _compare(_by_name(old.pools), _by_name(new.pools)),
        "templates": _compare(old.templates, new.templates),
    }


def render_diff(changes: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    """One line per kind that changed ("no changes" when none did)."""
    lines = []
    for kind, parts in changes.items():
        words = [f"{how} {', '.join(names)}" for how, names in parts.items() if names]
        if words:
            lines.append(f"{kind}: " + "; ".join(words))
    return lines or ["no changes"]
