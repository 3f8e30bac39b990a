"""Reporting periods (ISO weeks from Monday, calendar months; UTC) and FHIR date parsing for the measures."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

PERIODS = ("week", "month")
MAX_PERIODS = 260  # five years of weeks: enough for a run chart, bounded work per request


def first_of(period: str, day: date) -> date:
    """Return the first day of the week (Monday) or month containing day."""
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"period must be one of {', '.join(PERIODS)}")


def next_start(period: str, start: date) -> date:
    """Return the first day of the period after the one starting on start."""
    if period == "week":
        return start + timedelta(days=7)
    return date(start.year + (start.month == 12), start.month % 12 + 1, 1)


def periods_between(period: str, start: date, end: date) -> list[tuple[date, date]]:
    """Return (first day, last day) of every period from the one containing start to the one containing end."""
    if end < start:
        raise ValueError("end is before start")
    result = []
    current = first_of(period, start)
    while current <= end:
        following = next_start(period, current)
        result.append((current, following - timedelta(days=1)))
        if len(result) > MAX_PERIODS:
            raise ValueError(f"at most {MAX_PERIODS} periods per request; shorten the range")
        current = following
    return result


def start_of_day(day: date) -> datetime:
    """Return midnight UTC at the start of day."""
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def end_of_day(day: date) -> datetime:
    """Return the last instant of day in UTC (exclusive bound: midnight of the next day)."""
    return start_of_day(day + timedelta(days=1))


def parse_instant(text: str | None) -> datetime | None:
    """Parse a FHIR date, dateTime or instant to an aware UTC datetime (a bare date is its UTC midnight)."""
    if not isinstance(text, str) or len(text) < 4:
        return None
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=timezone.utc)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=timezone.utc)
        if len(text) == 10:
            return start_of_day(date.fromisoformat(text))
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_date(text: str | None) -> date | None:
    """Parse a FHIR date or dateTime to its UTC date."""
    parsed = parse_instant(text)
    return parsed.date() if parsed else None
