"""Local time, quiet hours and daylight-saving changes of reminder due moments (America/Toronto)."""

from __future__ import annotations

from datetime import date, datetime, time, timezone

import pytest

from careplan.reminders import policy, timing

TORONTO = timing.zone("America/Toronto")


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def test_a_fortnightly_cadence_keeps_the_local_hour_across_the_march_change():
    # 2027-03-07 10:00 EST (15:00Z); clocks spring forward on 2027-03-14; 10:00 EDT on the 21st is 14:00Z.
    start = utc(2027, 3, 7, 15)
    assert timing.add_days(start, 14, tz=TORONTO) == utc(2027, 3, 21, 14)
    assert timing.add_days(start, 14, tz=TORONTO) != start.replace(day=21)  # plain UTC arithmetic would be 11:00


def test_a_cadence_spanning_both_changes_lands_at_the_same_local_time_every_time():
    moment = utc(2027, 2, 28, 15)  # 10:00 EST
    seen = []
    for _ in range(20):  # 20 fortnights: through 2027-03-14 (spring) and 2027-11-07 (fall)
        moment = timing.add_days(moment, 14, tz=TORONTO)
        seen.append(moment.astimezone(TORONTO).time())
    assert set(seen) == {time(10, 0)}
    assert utc(2027, 11, 21, 15) in [timing.add_days(utc(2027, 10, 24, 14), 28, tz=TORONTO)]


def test_a_time_skipped_by_spring_forward_moves_past_the_gap_and_a_repeated_one_takes_the_first():
    assert timing.at_local(date(2027, 3, 14), time(2, 30), tz=TORONTO).astimezone(TORONTO).time() == time(3, 30)
    assert timing.at_local(date(2027, 11, 7), time(1, 30), tz=TORONTO) == utc(2027, 11, 7, 5, 30)  # 01:30 EDT


def test_quiet_hours_push_a_reminder_to_their_end_in_local_time():
    quiet = {"start": time(22, 0), "end": time(7, 0)}
    late = utc(2027, 1, 5, 4)  # 23:00 EST on the 4th
    assert timing.out_of_quiet_hours(late, tz=TORONTO, **quiet) == utc(2027, 1, 5, 12)  # 07:00 EST on the 5th
    early = utc(2027, 7, 5, 9)  # 05:00 EDT
    assert timing.out_of_quiet_hours(early, tz=TORONTO, **quiet) == utc(2027, 7, 5, 11)  # 07:00 EDT
    noon = utc(2027, 7, 5, 16)
    assert timing.out_of_quiet_hours(noon, tz=TORONTO, **quiet) == noon
    lunch = {"start": time(12, 0), "end": time(13, 0)}
    assert timing.out_of_quiet_hours(noon, tz=TORONTO, **lunch) == utc(2027, 7, 5, 17)


def test_quiet_hours_ending_on_the_night_of_the_change_use_the_new_offset():
    # Quiet 22:00-07:00; 23:00 EST on 2027-03-13 moves to 07:00 EDT on the 14th, which is 11:00Z (not 12:00Z).
    assert timing.out_of_quiet_hours(utc(2027, 3, 14, 4), tz=TORONTO, start=time(22), end=time(7)) == utc(
        2027, 3, 14, 11)


def test_due_at_applies_the_lead_then_quiet_hours():
    base = utc(2027, 3, 1, 3)  # 22:00 EST on 2027-02-28
    due = timing.due_at(base, days=14, lead_days=2, tz=TORONTO, quiet_start=time(21), quiet_end=time(8))
    assert due == utc(2027, 3, 13, 13)  # 12 local days later at 22:00 is quiet: 08:00 EST on 03-13


def test_the_default_policy_favours_recommended_practices(monkeypatch):
    for name in ("CAREPLAN_REMINDER_LEAD_DAYS_RECOMMENDED", "CAREPLAN_REMINDER_ESCALATE_AFTER_MISSES_EMERGING"):
        monkeypatch.delenv(name, raising=False)
    current = policy.current()
    assert current.lead("recommended") > current.lead("promising") > current.lead("emerging") == current.lead(None)
    assert current.misses("recommended") < current.misses("promising") < current.misses("emerging")
    monkeypatch.setenv("CAREPLAN_REMINDER_LEAD_DAYS_RECOMMENDED", "5")
    monkeypatch.setenv("CAREPLAN_REMINDER_ESCALATE_AFTER_MISSES_EMERGING", "7")
    assert policy.current().lead("recommended") == 5 and policy.current().misses("emerging") == 7


def test_a_bad_time_of_day_or_zone_is_refused_or_replaced():
    with pytest.raises(ValueError):
        timing.parse_hhmm("7:30")
    assert timing.zone("Mars/Olympus").key == timing.DEFAULT_TIMEZONE
    assert not timing.is_timezone("../etc/passwd")


def test_the_latest_daily_time_is_today_or_yesterday():
    after, before = utc(2027, 1, 5, 13), utc(2027, 1, 5, 12)  # 08:00 and 07:00 EST
    assert timing.latest_daily(after, time(7, 30), tz=TORONTO) == (date(2027, 1, 5), utc(2027, 1, 5, 12, 30))
    assert timing.latest_daily(before, time(7, 30), tz=TORONTO) == (date(2027, 1, 4), utc(2027, 1, 4, 12, 30))
