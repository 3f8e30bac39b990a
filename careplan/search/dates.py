"""Parse FHIR date search values into the UTC range their precision implies."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DATE = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
MAX_UTC = datetime.max.replace(tzinfo=timezone.utc)


def parse_range(value: str) -> tuple[datetime, datetime]:
    """Return (low, high) in UTC for a FHIR date/dateTime/instant; raise ValueError when malformed."""
    match = _DATE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a FHIR date or dateTime")
    parts = match.groupdict()
    try:
        return _range(parts)
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a valid date") from None


def _range(parts: dict) -> tuple[datetime, datetime]:
    year = int(parts["year"])
    tz = _zone(parts["tz"])
    if parts["month"] is None:
        low = datetime(year, 1, 1, tzinfo=tz)
        return _utc(low), _end(datetime(year + 1, 1, 1, tzinfo=tz) if year < 9999 else None)
    month = int(parts["month"])
    if parts["day"] is None:
        low = datetime(year, month, 1, tzinfo=tz)
        last = (year, month) == (9999, 12)
        following = None if last else datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
        return _utc(low), _end(following)
    day = int(parts["day"])
    if parts["hour"] is None:
        low = datetime(year, month, day, tzinfo=tz)
        return _utc(low), _end(low + timedelta(days=1))
    hour, minute = int(parts["hour"]), int(parts["minute"])
    if parts["second"] is None:
        low = datetime(year, month, day, hour, minute, tzinfo=tz)
        return _utc(low), _end(low + timedelta(minutes=1))
    second = int(parts["second"])
    fraction = parts["fraction"]
    if fraction is None:
        low = datetime(year, month, day, hour, minute, second, tzinfo=tz)
        return _utc(low), _end(low + timedelta(seconds=1))
    digits = fraction[1:]
    low = datetime(year, month, day, hour, minute, second, int((digits + "000000")[:6]), tzinfo=tz)
    if len(digits) >= 6:
        return _utc(low), _utc(low)
    return _utc(low), _end(low + timedelta(microseconds=10 ** (6 - len(digits))))


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def _zone(text: str | None) -> timezone:
    # A value without a zone is read as UTC: the server has no better knowledge of the sender's zone.
    if not text or text == "Z":
        return timezone.utc
    sign = 1 if text[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


def _end(following: datetime | None) -> datetime:
    if following is None:
        return MAX_UTC
    return _utc(following - timedelta(microseconds=1))
