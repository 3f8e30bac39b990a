"""Measure 7: a follow-up done before its reminder went out counts as on time, a withdrawn one does not count."""

from __future__ import annotations

from datetime import date

from careplan.config import from_env
from careplan.measures import compute
from careplan.reminders.models import Reminder
from tests.careplan.measures.fixtures import at

SETTINGS = from_env({})


def _reminder(database, key: str, *, state: str, due: str, done: str | None) -> None:
    with database.writing() as session:
        session.add(Reminder(key=f"follow-up|CarePlan/e|{key}", kind="follow-up", source=f"CarePlan/e#{key}",
                             recipient="Practitioner/c1", patient=None, tier="emerging", due_at=at(due),
                             done_at=at(done) if done else None, state=state,
                             payload={"due": at(due).isoformat(), "care_plan": "CarePlan/e", "activity": key}))


def test_done_before_the_reminder_went_out_is_on_time_and_withdrawn_ones_are_left_out(database):
    # Rules cancel the scheduled reminder when the follow-up is done first (done_at set), and also when the
    # activity or plan is closed (done_at empty): only the second is an exclusion.
    for n in range(5):
        _reminder(database, f"early-{n}", state="cancelled", due=f"2026-09-{10 + n:02d}", done=f"2026-09-0{1 + n}")
    _reminder(database, "late", state="sent", due="2026-09-20", done="2026-09-22")
    _reminder(database, "withdrawn", state="cancelled", due="2026-09-21", done=None)
    result = compute.evaluate(database, measure_id="follow-ups-on-time", period="month", start=date(2026, 9, 1),
                              end=date(2026, 9, 30), stratifier=None, now=at("2026-10-15"), settings=SETTINGS)
    point = result.points[0]
    assert (point.numerator, point.denominator) == (5, 6)
    found = compute.members(database, measure_id="follow-ups-on-time", period="month",
                            period_start=date(2026, 9, 1), now=at("2026-10-15"), settings=SETTINGS)
    assert [(m.reference, m.excluded) for m in found["excluded"]] == [("CarePlan/e#withdrawn", "cancelled")]
