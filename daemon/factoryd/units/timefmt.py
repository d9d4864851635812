"""One way to print wall-clock instants: RFC 3339 in UTC, second precision."""

from __future__ import annotations

import functools
from datetime import UTC, datetime


def iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _iso_second(int(ts))


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    # Routing prints the same few reset times into many rejection reasons.
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    """Epoch seconds from an RFC 3339 string; a missing offset means UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def iso_ms(ts: float) -> str:
    """RFC 3339 with milliseconds, for snapshots that must round-trip."""
    stamp = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
