"""Human durations ("90s", "5h", "7d", "1mo") and byte sizes ("10MiB").

Config files speak in these units; the code speaks in seconds and bytes.
Months are calendar months, so they are kept apart from fixed spans: a
"1mo" pool window resets on the same day of every month, not every 30 days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|mo|s|m|h|d|w)")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_FACTOR = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


class DurationError(ValueError):
    """The text is not a duration this module understands."""


@dataclass(frozen=True, slots=True)
class Period:
    """A reset period: either whole calendar months or a fixed number of seconds."""

    months: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.months:
            return f"{self.months}mo"
        return format_seconds(self.seconds)


def parse_duration(text: str | int | float) -> float:
    """Return seconds for "1h30m", "250ms", "2d" or a bare number of seconds.

    Months are refused here: a month is not a fixed number of seconds.
    """
    if isinstance(text, bool):
        raise DurationError("expected a duration such as '30s' or '5m', got a boolean")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"duration must not be negative, got {text}")
        return float(text)
    period = parse_period(text)
    if period.months:
        raise DurationError(f"'{text}': months are only allowed for pool windows")
    return period.seconds


def parse_period(text: str) -> Period:
    """Parse a duration that may also be in calendar months ("1mo")."""
    stripped = text.strip()
    if not stripped:
        raise DurationError("expected a duration such as '30s' or '5m', got an empty string")
    pos = 0
    seconds = 0.0
    months = 0
    for match in _PART.finditer(stripped):
        if stripped[pos : match.start()].strip():
            break
        number, unit = float(match.group(1)), match.group(2)
        if unit == "mo":
            if number != int(number):
                raise DurationError(f"'{text}': months must be whole")
            months += int(number)
        else:
            seconds += number * _UNIT_SECONDS[unit]
        pos = match.end()
    if pos == 0 or stripped[pos:].strip():
        raise DurationError(
            f"'{text}' is not a duration; use a number with a unit "
            "(ms, s, m, h, d, w, mo), e.g. '90s', '5h', '1h30m'"
        )
    if months and seconds:
        raise DurationError(f"'{text}': do not mix months with other units")
    return Period(months=months, seconds=seconds)


def parse_size(text: str | int) -> int:
    """Return bytes for "10MiB", "500KB" or a bare integer."""
    if isinstance(text, bool):
        raise DurationError("expected a size such as '10MiB', got a boolean")
    if isinstance(text, int):
        if text < 0:
            raise DurationError(f"size must not be negative, got {text}")
        return text
    match = _SIZE.match(text)
    if not match:
        raise DurationError(f"'{text}' is not a size; use e.g. '512KiB', '10MiB', '1GB'")
    return int(float(match.group(1)) * _SIZE_FACTOR[match.group(2)])


def format_seconds(seconds: float) -> str:
    """Short human form used in logs and `status`: 0.25s, 42s, 5m3s, 2h0m, 3d4h."""
    if seconds < 0:
        return "-" + format_seconds(-seconds)
    if seconds < 10:
        return f"{seconds:.2g}s" if seconds < 1 else f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60}s"
    if whole < 86400:
        return f"{whole // 3600}h{(whole % 3600) // 60}m"
    return f"{whole // 86400}d{(whole % 86400) // 3600}h"
