"""When a reminder falls due for its recipient: local wall-clock arithmetic, quiet hours, daylight-saving changes.

Every function takes and returns timezone-aware datetimes; results are UTC. Cadences are added in the recipient's
local calendar (a fortnightly 10:00 check-in stays at 10:00 across a daylight-saving change), and a moment inside
the recipient's quiet hours moves to their end.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "America/Toronto"
# A due date without a time of day (a goal's target date, a plan's start date) falls due at the start of work.
WORKDAY_START = time(9, 0)
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def zone(name: str | None, *, default: str = DEFAULT_TIMEZONE) -> ZoneInfo:
    """Return the IANA time zone name, or default when name is missing or unknown."""
    for candidate in (name, default, DEFAULT_TIMEZONE):
        if candidate and is_timezone(candidate):
            return ZoneInfo(candidate)
    return ZoneInfo("UTC")


def is_timezone(name: str) -> bool:
    """Tell whether name is an IANA time zone this system knows."""
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_hhmm(text: str | None) -> time | None:
    """Return the local time a "HH:MM" string names, None for None; raise ValueError when malformed."""
    if text is None:
        return None
    match = _HHMM.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a time of day like 07:30")
    return time(int(match.group(1)), int(match.group(2)))


def utc(moment: datetime) -> datetime:
    """Return moment in UTC; a naive moment is taken as UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_instant(text: str, *, tz: ZoneInfo) -> datetime:
    """Return the UTC moment of a FHIR date or dateTime; a date or offset-less time is local to tz."""
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    if len(text) == 10:
        return at_local(date.fromisoformat(text), WORKDAY_START, tz=tz)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return at_local(moment.date(), moment.time(), tz=tz)
    return utc(moment)


def at_local(day: date, clock: time, *, tz: ZoneInfo) -> datetime:
    """Return the UTC moment of a local date and time (a time a DST change skips lands just after the gap)."""
    # fold=0 reads a skipped 02:30 with the offset before the change, i.e. 03:30 after it; a repeated 01:30 is the
    # first of the two.
    return datetime.combine(day, clock, tzinfo=tz).astimezone(timezone.utc)


def add_days(start: datetime, days: float, *, tz: ZoneInfo) -> datetime:
    """Return start plus days on the local calendar of tz (whole days keep the wall-clock time), in UTC."""
    local = utc(start).astimezone(tz)
    whole = int(days // 1) if days >= 0 else -int((-days) // 1)
    rest = timedelta(days=days - whole)
    shifted = at_local(local.date() + timedelta(days=whole), local.time().replace(tzinfo=None), tz=tz)
    return shifted + rest


def in_quiet_hours(moment: datetime, *, tz: ZoneInfo, start: time | None, end: time | None) -> bool:
    """Tell whether moment falls in the local quiet hours [start, end) (they may span midnight)."""
    if start is None or end is None or start == end:
        return False
    clock = utc(moment).astimezone(tz).time().replace(tzinfo=None)
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def out_of_quiet_hours(moment: datetime, *, tz: ZoneInfo, start: time | None, end: time | None) -> datetime:
    """Return moment, or the end of the quiet hours it falls in (same or next local day), in UTC."""
    if not in_quiet_hours(moment, tz=tz, start=start, end=end):
        return utc(moment)
    local = utc(moment).astimezone(tz)
    day = local.date()
    if start > end and local.time().replace(tzinfo=None) >= start:
        day += timedelta(days=1)  # quiet from 22:00 to 07:00: 23:00 moves to tomorrow 07:00
    return at_local(day, end, tz=tz)


def due_at(base: datetime, *, days: float, lead_days: float = 0, tz: ZoneInfo, quiet_start: time | None = None,
           quiet_end: time | None = None) -> datetime:
    """Return when a reminder days after base falls due: local-calendar days, less the lead, out of quiet hours."""
    moment = add_days(base, days - lead_days, tz=tz)
    return out_of_quiet_hours(moment, tz=tz, start=quiet_start, end=quiet_end)


def latest_daily(now: datetime, clock: time, *, tz: ZoneInfo) -> tuple[date, datetime]:
    """Return the local date and UTC moment of the latest daily clock time at or before now in tz."""
    today = utc(now).astimezone(tz).date()
    for day in (today, today - timedelta(days=1), today - timedelta(days=2)):
        moment = at_local(day, clock, tz=tz)
        if moment <= utc(now):
            return day, moment
    raise AssertionError("a daily time always occurs within two days")
