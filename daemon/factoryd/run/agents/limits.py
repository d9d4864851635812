"""Reading usage-limit messages: is this a limit, and when does it reset?

The CLIs say it in many ways (measured on the real binaries and seen in
the wild):

* claude: `Claude AI usage limit reached|1763901600` (epoch seconds),
  `... Your limit will reset at 9am (America/Chicago).`,
  `You've hit your limit · resets 10pm (America/New_York)`;
* codex: `... try again at 3:28 PM.` (the machine's local time),
  `... try again in 3 days 6 hours 57 minutes`, `Try again Aug 18.`,
  `Your workspace is out of credits`;
* gemini: `You have exhausted your daily quota on this model.`;
* any of them: HTTP 429 with a `retry-after` header.

Times named with a zone are local to that zone (not UTC), so they are
built with zoneinfo, which gets DST right; times without a zone are in the
daemon's local zone. `now` is always passed in.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_LIMIT_WORDS = re.compile(
    r"usage limit|rate limit|hit your (?:usage )?limit|exhausted your|quota|out of credits|"
    r"too many requests|\b429\b|resource_exhausted|rate_limit",
    re.I,
)
_EPOCH = re.compile(r"limit reached\|(\d{9,11})")
_ZONED = re.compile(
    r"resets?(?: at)?\s+(\d{1,2})(?::(\d{2}))?\s*([ap]\.?m\.?)?\s*"
    r"\(([A-Za-z_]+(?:/[A-Za-z_+\-]+)*)\)",
    re.I,
)
_AT_CLOCK = re.compile(r"try again at (\d{1,2}):(\d{2})\s*([AP]M)?", re.I)
_IN_SPAN = re.compile(
    r"try again in ((?:\s*\d+\s*(?:days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|[dhms])\b,?)+)",
    re.I,
)
_ON_DATE = re.compile(r"try again (?:on )?([A-Z][a-z]{2,8})\.? (\d{1,2})\b", re.I)
_RETRY_AFTER = re.compile(r"retry[-_ ]after\"?\s*[:=]\s*\"?(\d+(?:\.\d+)?)", re.I)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_SPAN_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def looks_like_limit(text: str) -> bool:
    return bool(_LIMIT_WORDS.search(text))


def reset_time(text: str, now: float, local: tzinfo | None = None) -> float | None:
    """When the limit described by `text` lifts (epoch seconds), if it says."""
    if m := _EPOCH.search(text):
        return float(m.group(1))
    if m := _ZONED.search(text):
        try:
            zone: tzinfo = ZoneInfo(m.group(4))
        except (ZoneInfoNotFoundError, ValueError):
            zone = local or _local()
        return _next_clock(now, zone, _hour(m.group(1), m.group(3)), int(m.group(2) or 0))
    if m := _AT_CLOCK.search(text):
        return _next_clock(now, local or _local(), _hour(m.group(1), m.group(3)), int(m.group(2)))
    if m := _IN_SPAN.search(text):
        seconds = 0
        for amount, unit in re.findall(r"(\d+)\s*([a-z]+)", m.group(1), re.I):
            seconds += int(amount) * _SPAN_UNITS[unit[0].lower()]
        return now + seconds if seconds else None
    if m := _ON_DATE.search(text):
        month = _MONTHS.get(m.group(1)[:3].lower())
        if month is not None:
            return _next_date(now, local or _local(), month, int(m.group(2)))
    if m := _RETRY_AFTER.search(text):
        return now + float(m.group(1))
    return None


def _local() -> tzinfo:
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def _hour(hour: str, meridiem: str | None) -> int:
    h = int(hour) % 24
    if meridiem:
        pm = meridiem.lower().startswith("p")
        h = (h % 12) + (12 if pm else 0)
    return h


def _next_clock(now: float, zone: tzinfo, hour: int, minute: int) -> float:
    """The next instant (after now) at which the wall clock in `zone` reads hour:minute."""
    today = datetime.fromtimestamp(now, tz=zone).date()
    for offset in range(0, 3):
        day = today + timedelta(days=offset)
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if candidate.timestamp() > now:
            return candidate.timestamp()
    return now + 86400.0


def _next_date(now: float, zone: tzinfo, month: int, day: int) -> float | None:
    year = datetime.fromtimestamp(now, tz=zone).year
    for y in (year, year + 1):
        try:
            when = date(y, month, day)
        except ValueError:
            return None
        candidate = datetime(when.year, when.month, when.day, tzinfo=zone)
        if candidate.timestamp() > now:
            return candidate.timestamp()
    return None
