"""Referral service levels (issue 6): response and first-contact deadlines in business days, in the agency's zone.

Public names: ``add_business_days(start, days, *, tz, holidays)``, ``is_business_day(day, holidays)``,
``milestones(versions) -> Milestones``, ``status(task, versions, *, now, settings, tz=None) -> SlaStatus``,
``timezone_of(organization, *, default)``, ``parse_holidays(text)``.

A deadline keeps the local wall-clock time of the send: a referral sent on Friday at 16:00 with 2 business days
is due on Tuesday at 16:00 local time, whatever the UTC offset did over the weekend (DST). A send on a weekend or
holiday counts from the start (00:00 local) of the next business day. Settings (careplan.config.Settings):
``sla_response_business_days`` (2), ``sla_contact_business_days`` (5), ``holidays`` (frozenset of dates),
``default_timezone`` (America/Toronto).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from careplan.referrals import codes
from careplan.search.dates import parse_range

DEFAULT_TIMEZONE = "America/Toronto"
RESPONDED = frozenset({"accepted", "rejected", "in-progress", "on-hold", "completed", "failed"})
CONTACTED = frozenset({"in-progress", "completed"})
SENT = frozenset({"requested", "received"})
FINAL = frozenset({"rejected", "cancelled", "completed", "failed", "entered-in-error"})


@dataclass(frozen=True)
class Milestones:
    """When a referral was first sent, answered (accepted or declined), first contacted and closed (UTC)."""

    sent_at: datetime | None
    responded_at: datetime | None
    first_contact_at: datetime | None
    closed_at: datetime | None


@dataclass(frozen=True)
class SlaStatus:
    """The response and first-contact deadlines of a referral, and whether each is missed as of now."""

    response_due: datetime | None
    response_overdue: bool
    contact_due: datetime | None
    contact_overdue: bool


def is_business_day(day: date, holidays: frozenset[date] = frozenset()) -> bool:
    """Tell whether day is a weekday that is not a holiday."""
    return day.weekday() < 5 and day not in holidays


def add_business_days(start: datetime, days: int, *, tz: str, holidays: frozenset[date] = frozenset()) -> datetime:
    """Return start plus days business days in zone tz, as an aware UTC datetime."""
    if start.tzinfo is None:
        raise ValueError("add_business_days needs an aware datetime")
    if days < 0:
        raise ValueError("add_business_days counts forward only")
    zone = ZoneInfo(tz)
    local = start.astimezone(zone)
    day, clock = local.date(), local.time().replace(tzinfo=None)
    if not is_business_day(day, holidays):
        # Sent outside business days: the clock starts when the next business day begins.
        while not is_business_day(day, holidays):
            day += timedelta(days=1)
        clock = time(0, 0)
    for _ in range(days):
        day += timedelta(days=1)
        while not is_business_day(day, holidays):
            day += timedelta(days=1)
    # Same wall-clock time on the due day; zoneinfo resolves a time skipped or repeated by DST with fold=0.
    return datetime.combine(day, clock, tzinfo=zone).astimezone(timezone.utc)


def parse_holidays(text: str | None) -> frozenset[date]:
    """Parse comma-separated ISO dates (CAREPLAN_HOLIDAYS); raise ValueError on a bad one."""
    return frozenset(date.fromisoformat(part.strip()) for part in (text or "").split(",") if part.strip())


def timezone_of(organization: dict | None, *, default: str = DEFAULT_TIMEZONE) -> str:
    """Return the IANA zone an Organization declares in the timezone extension, else default."""
    for extension in (organization or {}).get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == codes.TIMEZONE_EXTENSION:
            name = extension.get("valueCode")
            if isinstance(name, str) and _known_zone(name):
                return name
    return default


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def milestones(versions: list[dict]) -> Milestones:
    """Return a referral Task's milestones from its versions (any order; deletions as None are skipped)."""
    ordered = sorted((v for v in versions if isinstance(v, dict)), key=_version_number)
    sent = responded = contacted = closed = None
    for version in ordered:
        status = version.get("status")
        at = _last_updated(version)
        if sent is None and status in SENT:
            sent = at
        if responded is None and status in RESPONDED:
            responded = at
        if contacted is None and (status in CONTACTED or _contacted(version)):
            contacted = at
        if closed is None and status in FINAL:
            closed = at
    return Milestones(sent, responded, contacted, closed)


def status(task: dict, versions: list[dict], *, now: datetime, settings, tz: str | None = None) -> SlaStatus:
    """Return the deadlines of a referral and whether they are missed at now; tz defaults to the settings' zone."""
    marks = milestones(versions or [task])
    if marks.sent_at is None:
        return SlaStatus(None, False, None, False)
    zone = tz or getattr(settings, "default_timezone", DEFAULT_TIMEZONE)
    holidays = getattr(settings, "holidays", frozenset())
    response_due = add_business_days(marks.sent_at, getattr(settings, "sla_response_business_days", 2),
                                     tz=zone, holidays=holidays)
    contact_due = add_business_days(marks.sent_at, getattr(settings, "sla_contact_business_days", 5),
                                    tz=zone, holidays=holidays)
    # A closed referral (declined, cancelled, completed...) no longer waits for anything.
    waiting = marks.closed_at is None and task.get("status") not in FINAL
    return SlaStatus(
        response_due=response_due,
        response_overdue=waiting and marks.responded_at is None and now > response_due,
        contact_due=contact_due,
        contact_overdue=waiting and marks.first_contact_at is None and now > contact_due,
    )


def _contacted(task: dict) -> bool:
    concept = task.get("businessStatus") or {}
    return any(isinstance(c, dict) and c.get("code") == "client-contacted"
               and c.get("system", codes.BUSINESS_STATUS_SYSTEM) == codes.BUSINESS_STATUS_SYSTEM
               for c in concept.get("coding") or [])


def _version_number(version: dict) -> tuple[int, datetime]:
    raw = (version.get("meta") or {}).get("versionId")
    number = int(raw) if isinstance(raw, str) and raw.isdigit() else 0
    return number, _last_updated(version) or datetime.min.replace(tzinfo=timezone.utc)


def _last_updated(version: dict) -> datetime | None:
    raw = (version.get("meta") or {}).get("lastUpdated")
    if not isinstance(raw, str):
        return None
    try:
        return parse_range(raw)[0]
    except ValueError:
        return None
