"""One config file being read: where its problems go and how its paths resolve.

Each section reader (settings, pools and arms, tasks) takes this context,
so that every problem names the same file, relative paths are taken from
the config file's folder, and a name declared anywhere in the file (even
invalidly) does not cascade into a second error where it is referenced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factoryd.config.tomltable import MISSING, Problem, Table, describe


def declared(tables: list[Table]) -> set[str]:
    """The names a list of tables declares, valid or not."""
    return {t.data["name"] for t in tables if isinstance(t.data.get("name"), str)}


class LoadContext:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []
        #: Names declared in the file, valid or not: references to them do not
        #: cascade into a second error when the declaration itself is bad.
        self.declared_pools: set[str] = set()
        self.declared_arms: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(str(self.path), key, message))

    def path_of(self, text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def opt_path(self, t: Table, name: str) -> str | None:
        value = t.string(name, None)
        return None if value is None else str(self.path_of(value))

    def items(self, root: Table, name: str) -> list[Table]:
        value = root.raw(name)
        if value is MISSING:
            return []
        if not isinstance(value, list):
            root.problem(name, f"expected an array of tables ([[{name}]]), got {describe(value)}")
            return []
        return [Table(self, v, f"{name}[{i}]") for i, v in enumerate(value)]

    def unique(self, tables: list[Table], values: list[Any], what: str) -> None:
        seen: dict[str, int] = {}
        for table, value in zip(tables, values, strict=True):
            if not isinstance(value, str):
                continue
            if value in seen:
                table.problem(
                    "name", f"duplicate {what} name {value!r} (also {what}s[{seen[value]}])"
                )
            else:
                seen[value] = len(seen)
