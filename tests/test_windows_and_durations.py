"""Durations, sizes and pool reset windows (fixed spans and calendar months)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from factoryd.routing.windows import window_bounds
from factoryd.units.durations import DurationError, Period, parse_duration, parse_period, parse_size


def ts(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("7d", 604800),
        (12, 12.0),
        ("2w", 1209600),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "five minutes", "5x", "1mo", "-3s", "3s junk", True])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)  # type: ignore[arg-type]


def test_periods_and_sizes() -> None:
    assert parse_period("1mo") == Period(months=1)
    assert parse_period("5h") == Period(seconds=18000)
    with pytest.raises(DurationError):
        parse_period("1mo2d")
    assert parse_size("10MiB") == 10 * 1024 * 1024
    assert parse_size("500KB") == 500_000
    assert parse_size(42) == 42


def test_fixed_window_is_aligned_to_anchor() -> None:
    anchor = ts(2026, 1, 1, 3)
    start, end = window_bounds(anchor, Period(seconds=5 * 3600), ts(2026, 1, 2, 0, 30))
    assert (start, end) == (ts(2026, 1, 1, 23), ts(2026, 1, 2, 4))
    before = window_bounds(anchor, Period(seconds=3600), ts(2025, 12, 31, 23, 59))
    assert before == (ts(2025, 12, 31, 23, 0), ts(2026, 1, 1, 0, 0))


def test_month_window_is_calendar_months_and_clamps_the_day() -> None:
    anchor = ts(2026, 1, 31, 9)
    assert window_bounds(anchor, Period(months=1), ts(2026, 2, 10)) == (
        ts(2026, 1, 31, 9),
        ts(2026, 2, 28, 9),
    )
    assert window_bounds(anchor, Period(months=1), ts(2026, 3, 31, 10)) == (
        ts(2026, 3, 31, 9),
        ts(2026, 4, 30, 9),
    )
    assert window_bounds(anchor, Period(months=3), ts(2026, 5, 1)) == (
        ts(2026, 4, 30, 9),
        ts(2026, 7, 31, 9),
    )
