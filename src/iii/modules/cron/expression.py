"""Cron expressions as the reference engine reads them, and their fire times (UTC).

The reference parses with the Rust ``cron`` crate (0.15); we accept exactly its language, with its meaning:

* ``sec min hour day-of-month month day-of-week [year]``: 6 or 7 fields separated by whitespace, or one of
  ``@yearly @monthly @weekly @daily @hourly`` (``@weekly`` is Sunday midnight). Five-field Unix expressions are
  refused, as there.
* A field is a comma-separated list of ``*``, a number, a range ``a-b`` (``a <= b``), a step ``x/n`` where ``x``
  is ``*``, a range, or a number (meaning from it to the field's maximum), a name or a range of names
  (``jan``-``dec`` and ``sun``-``sat``, full names too, any case; names only in the month and day-of-week
  fields). ``?`` is ``*`` in the two day fields.
* Values: seconds and minutes 0-59, hours 0-23, day of month 1-31, month 1-12, **day of week 1-7 with 1 =
  Sunday** (Quartz's numbering, which the crate uses: ``1-5`` is Sunday to Thursday, ``0`` is refused), year
  1970-2100. A step is 1 to the field's maximum.
* A day matches when its day of month **and** its day of week match (Unix cron takes either when both are
  restricted; the crate and so the reference take both).

Parsing turns each field into its set of values; :mod:`croniter` then finds fire times over those explicit
sets, so its own (Unix) reading of ranges, steps and day numbers never applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from croniter import CroniterBadDateError, croniter

MONTH_NAMES: Final = {
    **dict.fromkeys(["jan", "january"], 1),
    **dict.fromkeys(["feb", "february"], 2),
    **dict.fromkeys(["mar", "march"], 3),
    **dict.fromkeys(["apr", "april"], 4),
    "may": 5,
    **dict.fromkeys(["jun", "june"], 6),
    **dict.fromkeys(["jul", "july"], 7),
    **dict.fromkeys(["aug", "august"], 8),
    **dict.fromkeys(["sep", "september"], 9),
    **dict.fromkeys(["oct", "october"], 10),
    **dict.fromkeys(["nov", "november"], 11),
    **dict.fromkeys(["dec", "december"], 12),
}
DAY_NAMES: Final = {
    **dict.fromkeys(["sun", "sunday"], 1),
    **dict.fromkeys(["mon", "monday"], 2),
    **dict.fromkeys(["tue", "tues", "tuesday"], 3),
    **dict.fromkeys(["wed", "wednesday"], 4),
    **dict.fromkeys(["thu", "thurs", "thursday"], 5),
    **dict.fromkeys(["fri", "friday"], 6),
    **dict.fromkeys(["sat", "saturday"], 7),
}

CRONITER_MAX_YEAR: Final = 2099
"""croniter's last year; the crate's is 2100, whose fire times we therefore never reach."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    any_allowed: bool = False
    """``?`` is accepted (the day fields)."""


_FIELDS: Final = (
    _Field("seconds", 0, 59),
    _Field("minutes", 0, 59),
    _Field("hours", 0, 23),
    _Field("days of month", 1, 31, any_allowed=True),
    _Field("months", 1, 12, MONTH_NAMES),
    _Field("days of week", 1, 7, DAY_NAMES, any_allowed=True),
    _Field("years", 1970, 2100),
)

_SHORTHANDS: Final = {
    "@yearly": "0 0 0 1 1 * *",
    "@monthly": "0 0 0 1 * * *",
    "@weekly": "0 0 0 * * 1 *",
    "@daily": "0 0 0 * * * *",
    "@hourly": "0 0 * * * * *",
}


class CronExpressionError(ValueError):
    """The expression is not one the reference accepts; the message says why."""


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed expression: ``expression`` (normalized: fields joined by one space) and its fire times."""

    expression: str
    values: tuple[frozenset[int], ...]
    """The seven fields' value sets, in the expression's order (day of week with 1 = Sunday)."""
    _croniter_expression: str | None
    """None: no fire time croniter can reach (only the year 2100)."""

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment`` (an aware datetime), in UTC; None if there is none."""
        times = self._times_after(moment)
        return next(times, None)

    def count_between(self, after: datetime, until: datetime, limit: int) -> int:
        """How many fire times lie in (``after``, ``until``], counting up to ``limit``."""
        count = 0
        for moment in self._times_after(after):
            if moment > until or count >= limit:
                break
            count += 1
        return count

    def _times_after(self, moment: datetime) -> Iterator[datetime]:
        if self._croniter_expression is None:
            return
        times = croniter(
            self._croniter_expression,
            moment.astimezone(UTC),
            ret_type=datetime,
            day_or=False,
            second_at_beginning=True,
            max_years_between_matches=CRONITER_MAX_YEAR - 1970 + 1,
        )
        while True:
            try:
                found = times.get_next()
            except CroniterBadDateError:
                return
            assert isinstance(found, datetime)
            yield found.astimezone(UTC)

    def matches(self, moment: datetime) -> bool:
        """Whether ``moment`` (whole second, any zone) is a fire time."""
        moment = moment.astimezone(UTC)
        weekday = moment.isoweekday() % 7 + 1  # Sunday 1 ... Saturday 7
        actual = (moment.second, moment.minute, moment.hour, moment.day, moment.month, weekday, moment.year)
        return moment.microsecond == 0 and all(v in s for v, s in zip(actual, self.values, strict=True))


def parse(expression: str) -> CronSchedule:
    """Parse ``expression`` as the reference does; raises :class:`CronExpressionError` with the reason."""
    stripped = expression.strip()
    fields = _SHORTHANDS.get(stripped, stripped).split()
    if len(fields) not in (6, 7):
        raise CronExpressionError(
            f"expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), got {len(fields)}"
        )
    values = tuple(_parse_field(text, field) for text, field in zip(fields, _FIELDS, strict=False))
    if len(values) == 6:
        values += (_all(_FIELDS[6]),)
    normalized = stripped if stripped in _SHORTHANDS else " ".join(fields)
    return CronSchedule(normalized, values, _for_croniter(values))


def _all(field: _Field) -> frozenset[int]:
    return frozenset(range(field.low, field.high + 1))


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronExpressionError(f"empty item in {field.name} field {text!r}")
        values |= _parse_item(item, field)
    return frozenset(values)


def _parse_item(item: str, field: _Field) -> set[int]:
    if "/" in item:
        base, _, step_text = item.partition("/")
        if not step_text.isdigit() or not step_text.isascii():
            raise CronExpressionError(f"{field.name}: step {step_text!r} is not a number")
        step = int(step_text)
        if not 1 <= step <= field.high:
            raise CronExpressionError(f"{field.name}: step must be between 1 and {field.high} ({step} given)")
        if base.isdigit() and base.isascii():
            start = _check(int(base), field)
            return set(range(start, field.high + 1, step))
        if _is_name(base):
            raise CronExpressionError(f"{field.name}: a step needs *, a number or a range before '/' ({item!r})")
        return set(sorted(_parse_range(base, field))[::step])
    return _parse_range(item, field)


def _parse_range(text: str, field: _Field) -> set[int]:
    """``*``, ``?``, a number, a name, or a range of numbers or of names."""
    if text == "*" or (text == "?" and field.any_allowed):
        return set(_all(field))
    if text.isdigit() and text.isascii():
        return {_check(int(text), field)}
    if _is_name(text):
        return {_name(text, field)}
    start_text, dash, end_text = text.partition("-")
    if dash:
        if start_text.isdigit() and end_text.isdigit() and start_text.isascii() and end_text.isascii():
            start, end = int(start_text), int(end_text)
        elif _is_name(start_text) and _is_name(end_text):
            start, end = _name(start_text, field), _name(end_text, field)
        else:
            raise CronExpressionError(f"{field.name}: {text!r} is not a range")
        _check(start, field)
        _check(end, field)
        if start > end:
            raise CronExpressionError(f"{field.name}: range {text!r} ends before it starts")
        return set(range(start, end + 1))
    raise CronExpressionError(f"{field.name}: {text!r} is not a value, a range or a step")


def _is_name(text: str) -> bool:
    return text.isascii() and text.isalpha()


def _name(text: str, field: _Field) -> int:
    if field.names is None:
        raise CronExpressionError(f"{field.name} take no names ({text!r} given)")
    value = field.names.get(text.lower())
    if value is None:
        raise CronExpressionError(f"{field.name}: {text!r} is not a valid name")
    return value


def _check(value: int, field: _Field) -> int:
    if not field.low <= value <= field.high:
        raise CronExpressionError(f"{field.name} must be between {field.low} and {field.high} ({value} given)")
    return value


def _for_croniter(values: tuple[frozenset[int], ...]) -> str | None:
    """croniter's seconds-first expression for explicit value sets (its day of week counts Sunday as 0)."""
    parts = []
    for index, (field, chosen) in enumerate(zip(_FIELDS, values, strict=True)):
        if chosen == _all(field):
            parts.append("*")
            continue
        if field.name == "days of week":
            chosen = frozenset(day - 1 for day in chosen)
        elif index == 6:
            chosen = frozenset(year for year in chosen if year <= CRONITER_MAX_YEAR)
            if not chosen:
                return None
        parts.append(",".join(str(value) for value in sorted(chosen)))
    if parts[6] == "*":
        parts.pop()
    return " ".join(parts)
