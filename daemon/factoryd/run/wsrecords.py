"""The daemon's own record of the workspaces it made: one small JSON file each.

`git worktree prune` forgets worktrees whose directories are gone, but a
crashed daemon leaves directories that are still there, with uncommitted
work in them, and git cannot tell which of a repository's worktrees are
ours. So every workspace has a record, written (atomically, by rename)
before git touches anything and removed last: it names the repository,
the worktree, the branch, the phase reached and, once the run ended, its
outcome. A restarted daemon's sweep reads them; nothing else does.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from factoryd.core.workspace_spec import Hook, Hooks, Keep, WorkspaceSpec

VERSION = 1


class Records:
    """`DIR/RUN_ID.json` per workspace; reads never raise, they return None."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def write(self, run_id: str, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(run_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": VERSION, **data}))
        tmp.replace(path)

    def read(self, run_id: str) -> dict[str, Any] | None:
        return _load(self.path(run_id))

    def drop(self, run_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(run_id).unlink()

    def all(self) -> list[tuple[Path, dict[str, Any] | None]]:
        """Every record, oldest name first; an unreadable one comes with None."""
        try:
            paths = sorted(self.dir.glob("*.json"))
        except OSError:
            return []
        return [(path, _load(path)) for path in paths]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def spec_to_dict(spec: WorkspaceSpec) -> dict[str, Any]:
    return asdict(spec)


def spec_from_dict(data: dict[str, Any]) -> WorkspaceSpec:
    """Raises KeyError, TypeError or ValueError on a record that is not ours."""
    fields = dict(data)
    raw_hooks = fields.pop("hooks", None) or {}
    hooks = Hooks(
        **{
            name: Hook(tuple(str(a) for a in h["argv"]), float(h["timeout"])) if h else None
            for name, h in raw_hooks.items()
        }
    )
    return WorkspaceSpec(**{**fields, "keep": Keep(fields["keep"]), "hooks": hooks})
