from datetime import timedelta

import pytest

from certifier.domain.durations import (
    MAX_DURATION,
    DurationError,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("6h", timedelta(hours=6)),
        ("30s", timedelta(seconds=30)),
        ("1h30m", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("P7D", timedelta(days=7)),
        ("PT6H", timedelta(hours=6)),
        ("P1DT2H3M4S", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("PT0.5S", timedelta(seconds=0.5)),
        ("2w", timedelta(weeks=2)),
        (45, timedelta(seconds=45)),
        ("45", timedelta(seconds=45)),
    ],
)
def test_accepts_short_and_iso_forms(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7 days", "P", "PT", "abc", "-5s", "5x", -3, True])
def test_rejects_what_it_cannot_read_with_the_accepted_forms(text: object) -> None:
    with pytest.raises(DurationError, match=r"duration"):
        parse_duration(text)  # type: ignore[arg-type]


def test_formats_the_two_largest_units_for_excuses() -> None:
    assert format_duration(timedelta(days=3, hours=4, minutes=5)) == "3 d 4 h"
    assert format_duration(timedelta(seconds=45)) == "45 s"
    assert format_duration(timedelta(0)) == "0 s"


@pytest.mark.parametrize("text", ["3000000d", "99999999999d", "P99999999999D", "1" * 400 + "s",
                                  10**400, 1e20, "3651d"])
def test_a_duration_over_ten_years_is_refused_not_an_overflow(text: object) -> None:
    with pytest.raises(DurationError, match="too long"):
        parse_duration(text)


def test_the_longest_duration_accepted_is_ten_years() -> None:
    assert parse_duration("3650d") == MAX_DURATION == timedelta(days=3650)


@pytest.mark.parametrize("value", [{}, [], None, float("nan"), float("inf"), b"7d"])
def test_a_value_that_is_not_text_or_a_finite_number_is_refused(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)
