"""Reading untrusted TOML tables: typed reads that record problems, never raise.

Every read names its key path (``arms[2].pools[0]``), says what it expected
and what it got, and notes that the key was read, so that whatever is left
unread at the end is reported as an unknown key (with the closest known
key as a hint). config.py builds the daemon's Config on top of this.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Protocol

from factoryd.units.durations import DurationError, parse_duration, parse_size

MAX_COUNT = 100_000
#: No argument, path or environment entry can carry a NUL byte to the kernel.
NUL_MESSAGE = "contains a NUL byte, which no argument, path or environment value can carry"
MAX_AMOUNT = 1e15


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Reporter(Protocol):
    """Where a table's problems go (the loader of one file)."""

    def problem(self, key: str, message: str) -> None: ...


MISSING: Any = object()


class Table:
    """Typed, path-aware reads from one TOML table; records problems, never raises."""

    def __init__(self, owner: Reporter, data: Any, path: str) -> None:
        self.owner = owner
        self.path = path
        self.seen: set[str] = set()
        if not isinstance(data, dict):
            owner.problem(path, f"expected a table, got {describe(data)}")
            data = {}
        self.data: dict[str, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name, MISSING)

    def raw(self, name: str) -> Any:
        return self._get(name)

    def problem(self, name: str, message: str) -> None:
        self.owner.problem(self.key(name), message)

    def string(self, name: str, default: Any = MISSING, choices: Iterable[str] = ()) -> Any:
        value = self._get(name)
        if value is MISSING:
            if default is MISSING:
                self.problem(name, "is required (a string)")
                return None
            return default
        if not isinstance(value, str):
            self.problem(name, f"expected a string, got {describe(value)}")
            return default if default is not MISSING else None
        options = tuple(choices)
        if options and value not in options:
            self.problem(name, f"expected one of {', '.join(options)}; got {value!r}")
            return default if default is not MISSING else None
        if len(value) > 1_000_000:
            self.problem(name, "string is too long (over 1,000,000 characters)")
            return default if default is not MISSING else None
        if "\0" in value:
            self.problem(name, NUL_MESSAGE)
            return default if default is not MISSING else None
        return value

    def name(self, name: str) -> Any:
        value = self.string(name)
        if isinstance(value, str) and not is_name(value):
            self.problem(
                name,
                f"expected a name of letters, digits, '-', '_' or '.' (not only dots), "
                f"got {value!r}",
            )
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(name, f"expected true or false, got {describe(value)}")
            return default
        return value

    def number(
        self,
        name: str,
        default: Any,
        *,
        lo: float = 0.0,
        hi: float = MAX_AMOUNT,
        integer: bool = False,
        exclusive_lo: bool = False,
    ) -> Any:
        value = self._get(name)
        if value is MISSING:
            if default is MISSING:
                self.problem(name, "is required (a number)")
                return None
            return default
        kind = "an integer" if integer else "a number"
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (integer and not isinstance(value, int))
        ):
            self.problem(name, f"expected {kind}, got {describe(value)}")
            return default if default is not MISSING else None
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(name, f"expected a finite number, got {value}")
            return default if default is not MISSING else None
        if value < lo or (exclusive_lo and value == lo) or value > hi:
            low = f"above {lo:g}" if exclusive_lo else f"at least {lo:g}"
            self.problem(name, f"expected {kind} {low} and at most {hi:g}, got {value}")
            return default if default is not MISSING else None
        return value

    def duration(self, name: str, default: Any, *, allow_none: bool = False) -> Any:
        value = self._get(name)
        if value is MISSING:
            return default
        if allow_none and isinstance(value, str) and value in ("none", "off"):
            return None
        try:
            seconds = parse_duration(value) if isinstance(value, str | int | float) else None
        except DurationError as exc:
            self.problem(name, str(exc))
            return default
        if seconds is None:
            self.problem(name, f"expected a duration such as '30s', got {describe(value)}")
            return default
        if seconds > 100 * 365 * 86400:
            self.problem(name, f"duration is too long ({value!r}; at most 100 years)")
            return default
        return seconds

    def size(self, name: str, default: int) -> int:
        value = self._get(name)
        if value is MISSING:
            return default
        try:
            size = parse_size(value) if isinstance(value, str | int) else None
        except DurationError as exc:
            self.problem(name, str(exc))
            return default
        if size is None:
            self.problem(name, f"expected a size such as '16MiB', got {describe(value)}")
            return default
        return size

    def str_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name)
        if value is MISSING:
            return default
        if not isinstance(value, list):
            self.problem(name, f"expected a list of strings, got {describe(value)}")
            return default
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.owner.problem(
                    f"{self.key(name)}[{i}]", f"expected a string, got {describe(item)}"
                )
            elif "\0" in item:
                self.owner.problem(f"{self.key(name)}[{i}]", NUL_MESSAGE)
            else:
                out.append(item)
        return tuple(out)

    def str_map(self, name: str) -> tuple[tuple[str, str], ...]:
        """A table of strings (environment variables, secret sources). Its values
        may be credentials, so no message here ever shows one: only its kind."""
        value = self._get(name)
        if value is MISSING:
            return ()
        if not isinstance(value, dict):
            self.problem(name, f"expected a table of strings, got {kind(value)}")
            return ()
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            if not isinstance(v, str):
                self.owner.problem(f"{self.key(name)}.{k}", f"expected a string, got {kind(v)}")
            elif "\0" in v:
                self.owner.problem(f"{self.key(name)}.{k}", NUL_MESSAGE + " (value not shown)")
            else:
                out.append((k, v))
        return tuple(sorted(out))

    def sub(self, name: str) -> Table:
        value = self._get(name)
        return Table(self.owner, {} if value is MISSING else value, self.key(name))

    def done(self) -> None:
        """Report keys this table does not know, suggesting the nearest known key."""
        for name in self.data:
            if name in self.seen:
                continue
            close = difflib.get_close_matches(name, sorted(self.seen), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.problem(name, f"unknown key{hint}")


def kind(value: Any) -> str:
    """What sort of value this is, without showing it (for values that may be secret)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return type(value).__name__


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return f"a date/time {value}"
    return type(value).__name__


def is_name(value: str) -> bool:
    """Names become path components (logs, work directories): "." and ".." are not names."""
    return (
        bool(value.strip("."))
        and len(value) <= 128
        and all(c.isalnum() or c in "-_." for c in value)
    )
