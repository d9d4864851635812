"""Reset times from limit messages, with an injected clock, across zones and DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from factoryd.run.agents.limits import looks_like_limit, reset_time

PARIS = ZoneInfo("Europe/Paris")


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def test_epoch_form() -> None:
    assert reset_time("Claude AI usage limit reached|1763901600", utc(2025, 11, 23)) == 1763901600


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Chicago is UTC-6 in winter: 9am there is 15:00 UTC.
        (utc(2026, 1, 15, 12, 0), utc(2026, 1, 15, 15, 0)),
        # and UTC-5 in summer: 14:00 UTC.
        (utc(2026, 7, 15, 12, 0), utc(2026, 7, 15, 14, 0)),
        # Already past 9am there: tomorrow.
        (utc(2026, 7, 15, 20, 0), utc(2026, 7, 16, 14, 0)),
        # The night clocks go back (2026-11-01): 9am CST, not CDT.
        (utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 15, 0)),
    ],
)
def test_named_zone_is_local_to_that_zone(now: float, expected: float) -> None:
    text = "Claude usage limit reached. Your limit will reset at 9am (America/Chicago)."
    assert reset_time(text, now) == expected


def test_dst_spring_forward_in_new_york() -> None:
    # 2026-03-08: clocks jump from 2am EST to 3am EDT. 10pm that day is EDT (UTC-4).
    text = "You've hit your limit · resets 10pm (America/New_York)"
    assert reset_time(text, utc(2026, 3, 8, 6, 0)) == utc(2026, 3, 9, 2, 0)
    assert reset_time(text, utc(2026, 3, 7, 12, 0)) == utc(2026, 3, 8, 3, 0)  # still EST


def test_codex_clock_time_is_in_the_local_zone() -> None:
    text = "You've hit your usage limit. Upgrade to Pro or try again at 3:28 PM."
    # Paris is UTC+1 in winter: 15:28 there is 14:28 UTC.
    assert reset_time(text, utc(2026, 1, 10, 9, 0), PARIS) == utc(2026, 1, 10, 14, 28)
    # After 15:28 local: the next day.
    assert reset_time(text, utc(2026, 1, 10, 15, 0), PARIS) == utc(2026, 1, 11, 14, 28)
    # Across the change to summer time (2026-03-29): UTC+2 the next day.
    assert reset_time(text, utc(2026, 3, 28, 16, 0), PARIS) == utc(2026, 3, 29, 13, 28)


def test_codex_relative_span() -> None:
    text = "You've hit your usage limit. Try again in 3 days 6 hours 57 minutes."
    now = utc(2026, 5, 1)
    assert reset_time(text, now) == now + 3 * 86400 + 6 * 3600 + 57 * 60


def test_codex_date_form() -> None:
    text = "You've hit your usage limit. Try again Aug 18."
    assert (
        reset_time(text, utc(2026, 8, 1), PARIS) == datetime(2026, 8, 18, tzinfo=PARIS).timestamp()
    )
    assert (
        reset_time(text, utc(2026, 9, 1), PARIS) == datetime(2027, 8, 18, tzinfo=PARIS).timestamp()
    )


def test_retry_after_header() -> None:
    now = utc(2026, 5, 1)
    assert reset_time('"retry-after": "30"', now) == now + 30
    assert reset_time("Retry-After: 120", now) == now + 120


@pytest.mark.parametrize(
    "text",
    [
        "Your workspace is out of credits",
        "You have exhausted your daily quota on this model.",
        "exceeded retry limit, last status: 429 Too Many Requests",
        "API Error: Request rejected (429) · Number of requests exceeded",
    ],
)
def test_limits_without_a_time_are_still_limits(text: str) -> None:
    assert looks_like_limit(text)
    assert reset_time(text, utc(2026, 5, 1)) is None


@pytest.mark.parametrize("text", ["compiled 42 files", "All tests passed", "limit the scope"])
def test_ordinary_output_is_not_a_limit(text: str) -> None:
    assert not looks_like_limit(text)
