"""Referral service levels: business days in the agency's time zone, milestones from Task history, overdue flags."""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from careplan import config
from careplan.referrals import codes, sla

TORONTO = "America/Toronto"
LOCAL = ZoneInfo(TORONTO)
SETTINGS = config.from_env({})


def local(*parts) -> datetime:
    return datetime(*parts, tzinfo=LOCAL)


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


@pytest.mark.parametrize("sent,days,due", [
    (local(2026, 11, 27, 16, 0), 2, local(2026, 12, 1, 16, 0)),  # Friday 16:00 -> Tuesday 16:00
    (local(2026, 11, 23, 9, 30), 2, local(2026, 11, 25, 9, 30)),  # Monday -> Wednesday
    (local(2026, 11, 28, 10, 0), 2, local(2026, 12, 2, 0, 0)),  # Saturday: counts from Monday's start
    (local(2026, 11, 29, 23, 59), 1, local(2026, 12, 1, 0, 0)),  # Sunday night: Monday is day 0
    (local(2026, 11, 27, 16, 0), 5, local(2026, 12, 4, 16, 0)),  # a full business week
    (local(2026, 11, 25, 8, 0), 0, local(2026, 11, 25, 8, 0)),
])
def test_business_days_skip_weekends_and_keep_the_local_time(sent, days, due):
    assert sla.add_business_days(sent, days, tz=TORONTO) == due
    assert sla.add_business_days(sent, days, tz=TORONTO).tzinfo == timezone.utc


def test_holidays_are_skipped_and_a_send_on_one_waits_for_the_next_business_day():
    holidays = frozenset({date(2026, 12, 25), date(2026, 12, 28)})
    assert sla.add_business_days(local(2026, 12, 24, 10, 0), 2, tz=TORONTO, holidays=holidays) == \
        local(2026, 12, 30, 10, 0)
    assert sla.add_business_days(local(2026, 12, 25, 10, 0), 1, tz=TORONTO, holidays=holidays) == \
        local(2026, 12, 30, 0, 0)


def test_due_times_keep_the_wall_clock_across_daylight_saving_changes():
    # Toronto leaves daylight saving time on 2026-11-01: 16:00 is 20:00Z before and 21:00Z after.
    assert sla.add_business_days(utc(2026, 10, 30, 20, 0), 2, tz=TORONTO) == utc(2026, 11, 3, 21, 0)
    # And enters it on 2026-03-08: 16:00 is 21:00Z before and 20:00Z after.
    assert sla.add_business_days(utc(2026, 3, 6, 21, 0), 2, tz=TORONTO) == utc(2026, 3, 10, 20, 0)


def test_the_agencys_zone_decides_which_day_it_is():
    sent = utc(2026, 11, 27, 23, 30)  # Friday 18:30 in Toronto, already Saturday 00:30 in Paris
    assert sla.add_business_days(sent, 2, tz=TORONTO) == local(2026, 12, 1, 18, 30)
    assert sla.add_business_days(sent, 2, tz="Europe/Paris") == datetime(2026, 12, 2, 0, 0,
                                                                         tzinfo=ZoneInfo("Europe/Paris"))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        sla.add_business_days(datetime(2026, 11, 27, 16, 0), 2, tz=TORONTO)
    with pytest.raises(ValueError):
        sla.add_business_days(local(2026, 11, 27, 16, 0), -1, tz=TORONTO)


def test_timezone_of_an_organization():
    extension = {"url": codes.TIMEZONE_EXTENSION, "valueCode": "America/Vancouver"}
    assert sla.timezone_of({"resourceType": "Organization", "extension": [extension]}) == "America/Vancouver"
    assert sla.timezone_of({"resourceType": "Organization"}) == TORONTO
    assert sla.timezone_of({"extension": [{**extension, "valueCode": "Mars/Olympus"}]}, default="UTC") == "UTC"
    assert sla.timezone_of(None, default="America/Halifax") == "America/Halifax"


def version(number: int, at: str, status: str, **extra) -> dict:
    return {"resourceType": "Task", "id": "t1", "meta": {"versionId": str(number), "lastUpdated": at},
            "status": status, **extra}


HISTORY = [
    version(4, "2026-11-30T15:00:00Z", "accepted", businessStatus=codes.business_status("client-contacted")),
    version(1, "2026-11-26T14:00:00Z", "draft"),
    version(2, "2026-11-27T21:00:00Z", "requested"),
    version(3, "2026-11-30T14:00:00Z", "accepted"),
    version(5, "2026-12-01T09:00:00Z", "in-progress"),
    version(6, "2026-12-02T09:00:00Z", "completed"),
]


def test_milestones_from_history_in_any_order():
    marks = sla.milestones(HISTORY + [None])
    assert marks == sla.Milestones(sent_at=utc(2026, 11, 27, 21), responded_at=utc(2026, 11, 30, 14),
                                   first_contact_at=utc(2026, 11, 30, 15), closed_at=utc(2026, 12, 2, 9))
    assert sla.milestones(HISTORY[1:2]) == sla.Milestones(None, None, None, None)


def test_status_flags_a_referral_nobody_answered():
    sent = HISTORY[1:3]  # draft, then sent Friday 2026-11-27 16:00 Toronto
    due = sla.status(sent[-1], sent, now=utc(2026, 12, 1, 20, 59), settings=SETTINGS)
    assert due.response_due == local(2026, 12, 1, 16, 0) and due.contact_due == local(2026, 12, 4, 16, 0)
    assert not due.response_overdue and not due.contact_overdue
    late = sla.status(sent[-1], sent, now=utc(2026, 12, 1, 21, 1), settings=SETTINGS)
    assert late.response_overdue and not late.contact_overdue
    assert sla.status(sent[-1], sent, now=utc(2026, 12, 7), settings=SETTINGS).contact_overdue


def test_status_after_answers_and_closure():
    answered = HISTORY[1:4]
    later = utc(2026, 12, 10)
    status = sla.status(answered[-1], answered, now=later, settings=SETTINGS)
    assert not status.response_overdue and status.contact_overdue
    contacted = sorted(HISTORY[:4], key=lambda v: int(v["meta"]["versionId"]))
    assert not sla.status(contacted[-1], contacted, now=later, settings=SETTINGS).contact_overdue
    declined = HISTORY[1:3] + [version(3, "2026-12-09T09:00:00Z", "rejected")]
    status = sla.status(declined[-1], declined, now=later, settings=SETTINGS)
    assert not status.response_overdue and not status.contact_overdue
    draft = HISTORY[1]
    assert sla.status(draft, [draft], now=later, settings=SETTINGS) == sla.SlaStatus(None, False, None, False)


def test_status_uses_the_configured_days_holidays_and_zone():
    settings = config.from_env({"CAREPLAN_SLA_RESPONSE_BUSINESS_DAYS": "1", "CAREPLAN_SLA_CONTACT_BUSINESS_DAYS": "3",
                                "CAREPLAN_HOLIDAYS": "2026-11-30", "CAREPLAN_DEFAULT_TIMEZONE": "America/Vancouver"})
    assert settings.holidays == frozenset({date(2026, 11, 30)})
    sent = HISTORY[1:3]  # Friday 13:00 in Vancouver; Monday is a holiday
    status = sla.status(sent[-1], sent, now=utc(2026, 12, 1), settings=settings)
    vancouver = ZoneInfo("America/Vancouver")
    assert status.response_due == datetime(2026, 12, 1, 13, 0, tzinfo=vancouver)
    assert status.contact_due == datetime(2026, 12, 3, 13, 0, tzinfo=vancouver)
    assert sla.status(sent[-1], sent, now=utc(2026, 12, 1), settings=settings, tz=TORONTO).response_due == \
        local(2026, 12, 1, 16, 0)


@pytest.mark.parametrize("name,value", [("CAREPLAN_HOLIDAYS", "2026-13-01"), ("CAREPLAN_HOLIDAYS", "Christmas"),
                                        ("CAREPLAN_DEFAULT_TIMEZONE", "Mars/Olympus"),
                                        ("CAREPLAN_SLA_RESPONSE_BUSINESS_DAYS", "two"),
                                        ("CAREPLAN_SLA_CONTACT_BUSINESS_DAYS", "0")])
def test_bad_settings_are_refused_at_start(name, value):
    with pytest.raises(config.ConfigError) as raised:
        config.from_env({name: value})
    assert name in str(raised.value)


def test_defaults():
    assert (SETTINGS.sla_response_business_days, SETTINGS.sla_contact_business_days) == (2, 5)
    assert SETTINGS.holidays == frozenset() and SETTINGS.default_timezone == TORONTO
