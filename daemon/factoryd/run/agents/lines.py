"""Decoding agent output lines: ANSI noise off, invalid UTF-8 replaced, JSON or not."""

from __future__ import annotations

import json
import re
from typing import Any

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\r")


def clean(line: bytes) -> str:
    """The text of a line without terminal escapes; bad bytes become U+FFFD."""
    return _ANSI.sub(b"", line).decode("utf-8", errors="replace").strip()


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object on this line, or None if it is not one (torn, noise, array)."""
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def get(obj: Any, *path: str, default: Any = None) -> Any:
    """obj[a][b][c] for untrusted JSON; `default` if any step is missing or not a dict."""
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


def number(value: Any) -> int:
    """A token count from untrusted JSON: ints and integral floats, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value == value and value >= 0:  # not NaN
        return int(value)
    return 0


def money(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and value >= 0 else None
