"""Cron expressions: the reference's language and meaning (the Rust cron crate), and fire times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iii.modules.cron.expression import CronExpressionError, CronSchedule, parse

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * * *", MONDAY, at(2024, 1, 1, 0, 0, 1)),
        ("* * * * * *", at(2024, 1, 1, 0, 0, 0) + timedelta(microseconds=500_000), at(2024, 1, 1, 0, 0, 1)),
        ("0 0 0 * * 1", MONDAY, at(2024, 1, 7)),  # 1 is Sunday
        ("0 0 0 * * 7", MONDAY, at(2024, 1, 6)),  # 7 is Saturday
        ("0 0 0 * * SUN", MONDAY, at(2024, 1, 7)),
        ("0 0 0 * * sunday", MONDAY, at(2024, 1, 7)),
        ("@weekly", MONDAY, at(2024, 1, 7)),
        ("@daily", MONDAY, at(2024, 1, 2)),
        ("@hourly", MONDAY, at(2024, 1, 1, 1)),
        ("@monthly", MONDAY, at(2024, 2, 1)),
        ("@yearly", MONDAY, at(2025, 1, 1)),
        ("0 0 0 13 * 6", MONDAY, at(2024, 9, 13)),  # Friday the 13th: day of month AND day of week
        ("0 0 0 13 * Fri", MONDAY, at(2024, 9, 13)),
        ("0 0 9-17 * * 2-6", at(2024, 1, 6, 18), at(2024, 1, 8, 9)),  # Saturday evening -> Monday 9:00
        ("0 0 9-17 * * Mon-Fri", at(2024, 1, 5, 17, 30), at(2024, 1, 8, 9)),
        ("0 */5 * * * *", MONDAY, at(2024, 1, 1, 0, 5)),
        ("5/20 * * * * *", at(2024, 1, 1, 0, 0, 6), at(2024, 1, 1, 0, 0, 25)),
        ("10-40/15 * * * * *", at(2024, 1, 1, 0, 0, 26), at(2024, 1, 1, 0, 0, 40)),
        ("0 0 0 * * */2", MONDAY, at(2024, 1, 2)),  # 1,3,5,7: Sunday, Tuesday, Thursday, Saturday
        ("0 0 0 1 1 ? 2024/2", MONDAY, at(2026, 1, 1)),
        ("0 0 0 ? JAN-mar,Dec * 2024", at(2024, 3, 31), at(2024, 12, 1)),
        ("  0   30 9,12  *  * *  ", MONDAY, at(2024, 1, 1, 9, 30)),
        ("0 0 0 29 2 * *", MONDAY, at(2024, 2, 29)),
        ("0 0 0 29 2 * *", at(2024, 3, 1), at(2028, 2, 29)),
        ("0 0 0 30 2 *", MONDAY, None),
        ("0 0 0 * * * 2020", MONDAY, None),
        ("0 0 0 * * * 2100", MONDAY, None),  # the crate's last year; croniter's is 2099
    ],
)
def test_fire_times_are_the_references(expression: str, after: datetime, expected: datetime | None) -> None:
    assert parse(expression).next_after(after) == expected


def test_the_expression_is_kept_normalized() -> None:
    assert parse("  0   30 9,12  *  * *  ").expression == "0 30 9,12 * * *"
    assert parse("@daily").expression == "@daily"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("* * * * *", "expected 6 or 7 fields"),
        ("* * * * * * * *", "expected 6 or 7 fields"),
        ("", "expected 6 or 7 fields"),
        ("@every 5s", "expected 6 or 7 fields"),
        ("0 0 0 * * 0", "days of week must be between 1 and 7"),
        ("60 * * * * *", "seconds must be between 0 and 59"),
        ("* * 24 * * *", "hours must be between 0 and 23"),
        ("* * * 0 * *", "days of month must be between 1 and 31"),
        ("* * * * 13 *", "months must be between 1 and 12"),
        ("* * * * * * 1969", "years must be between 1970 and 2100"),
        ("*/0 * * * * *", "step must be between 1 and 59"),
        ("*/60 * * * * *", "step must be between 1 and 59"),
        ("0 0 0 * * Wed/4", "a step needs"),
        ("0 0 0 * jan-3 *", "is not a range"),
        ("0 0 0 5-1 * *", "ends before it starts"),
        ("mon * * * * *", "take no names"),
        ("0 0 0 * * Funday", "not a valid name"),
        ("0 0 0 * Sun *", "not a valid name"),
        ("1, * * * * *", "empty item"),
        ("? * * * * *", "is not a value"),
        ("0 0 0 L * *", "take no names"),
        ("0 0 0 * * 5#3", "is not a value"),
        ("0 0 0 * * \uff15", "is not a value"),  # a full-width digit five is not a number
        ("H * * * * *", "take no names"),
        ("1/2/3 * * * * *", "is not a number"),
    ],
)
def test_what_the_reference_refuses_is_refused_with_the_reason(expression: str, reason: str) -> None:
    with pytest.raises(CronExpressionError, match=reason):
        parse(expression)


# --- fire times against an independent search --------------------------------------------------------------


def _first_fire_by_search(schedule: CronSchedule, after: datetime, days: int) -> datetime | None:
    """The first fire time after ``after`` within ``days`` days, by walking the calendar: no croniter."""
    seconds, minutes, hours, days_of_month, months, days_of_week, years = schedule.values
    day: date = after.date()
    for _ in range(days):
        weekday = day.isoweekday() % 7 + 1
        if day.day in days_of_month and day.month in months and weekday in days_of_week and day.year in years:
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    for second in sorted(seconds):
                        candidate = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)
                        if candidate > after:
                            return candidate
        day += timedelta(days=1)
    return None


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    item = st.one_of(
        st.just("*"),
        number.map(str),
        st.tuples(number, number).map(lambda pair: f"{min(pair)}-{max(pair)}"),
        st.tuples(st.sampled_from(["*", str(low)]), st.integers(1, high)).map(lambda pair: f"{pair[0]}/{pair[1]}"),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


expressions = st.tuples(
    _field(0, 59), _field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12), _field(1, 7), st.sampled_from(["", "*"])
).map(lambda fields: " ".join(fields).strip())


@settings(max_examples=300, deadline=None)
@given(
    expression=expressions,
    after=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1)).map(
        lambda moment: moment.replace(tzinfo=UTC)
    ),
)
def test_fire_times_agree_with_a_calendar_search(expression: str, after: datetime) -> None:
    schedule = parse(expression)
    found = schedule.next_after(after)
    # Any day-of-month and day-of-week sets that meet do so within 28 years (the calendar's cycle).
    expected = _first_fire_by_search(schedule, after, days=366 * 28 + 7)
    assert found == expected
    if found is not None:
        assert schedule.matches(found)
