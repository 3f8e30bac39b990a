"""Each measure of issue 8 against a hand-computed fixture: numerators, denominators, exclusions, suppression."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from careplan import config
from careplan.coordination.errors import NotFound, RuleViolation
from careplan.measures import compute, strata
from careplan.measures.definitions import DEFINITIONS
from careplan.measures.periods import periods_between
from careplan.reminders.models import Reminder
from tests.careplan.measures import scenarios
from tests.careplan.measures.fixtures import Builder, at, day

SEPTEMBER = day("2026-09-01")
LATER = at("2026-12-01")


@pytest.fixture
def build(database) -> Builder:
    return Builder(database)


def Settings(**changes):  # noqa: N802 - reads like the settings class it builds
    """Return careplan's settings with Labour Day (Monday 7 September 2026) as a holiday unless changed."""
    return replace(config.from_env({}), **{"holidays": frozenset({date(2026, 9, 7)}), **changes})


def month(database, measure_id: str, *, start=SEPTEMBER, end=None, stratifier=None, now=LATER, **kwargs):
    return compute.evaluate(database, measure_id=measure_id, period="month", start=start, end=end or start,
                            stratifier=stratifier, now=now, settings=Settings(), **kwargs)


def counts(point: compute.Point) -> tuple:
    return point.numerator, point.denominator, point.value, point.suppressed


# -- definitions and periods ---------------------------------------------------------------------------------------


def test_every_measure_of_the_issue_is_defined_with_its_parts():
    assert len(DEFINITIONS) == 9
    for measure in compute.list_measures():
        assert measure.population and measure.numerator and measure.denominator and measure.exclusions
        assert measure.kind in ("proportion", "continuous")
        assert set(compute.COLLECTORS) == {m.id for m in DEFINITIONS}
    assert [m.kind for m in DEFINITIONS].count("continuous") == 2


def test_weeks_start_on_monday_and_months_are_calendar_months():
    assert periods_between("week", date(2026, 9, 1), date(2026, 9, 14)) == [
        (date(2026, 8, 31), date(2026, 9, 6)), (date(2026, 9, 7), date(2026, 9, 13)),
        (date(2026, 9, 14), date(2026, 9, 20))]
    assert periods_between("month", date(2026, 11, 15), date(2027, 2, 1)) == [
        (date(2026, 11, 1), date(2026, 11, 30)), (date(2026, 12, 1), date(2026, 12, 31)),
        (date(2027, 1, 1), date(2027, 1, 31)), (date(2027, 2, 1), date(2027, 2, 28))]


def test_bad_requests_are_rule_violations(database):
    with pytest.raises(NotFound):
        compute.evaluate(database, measure_id="nope", start=SEPTEMBER, end=SEPTEMBER)
    with pytest.raises(RuleViolation):
        compute.evaluate(database, measure_id="got-help", period="year", start=SEPTEMBER, end=SEPTEMBER)
    with pytest.raises(RuleViolation):
        compute.evaluate(database, measure_id="got-help", start=SEPTEMBER, end=date(2026, 8, 1))
    with pytest.raises(RuleViolation):
        compute.evaluate(database, measure_id="got-help", period="week", start=date(2000, 1, 1), end=SEPTEMBER)
    with pytest.raises(RuleViolation):  # tier is a stratifier of reminders and activities only
        compute.evaluate(database, measure_id="got-help", start=SEPTEMBER, end=SEPTEMBER, stratifier="tier")


# -- small-cell suppression ------------------------------------------------------------------------------------------


def test_cells_of_one_to_four_are_suppressed_and_zero_is_not():
    assert strata.suppressed_cells((0, 0), {}) == (False, set())
    assert strata.suppressed_cells((4, 10), {}) == (True, set())
    assert strata.suppressed_cells((5, 5), {}) == (False, set())
    assert strata.suppressed_cells((None, 3), {}) == (True, set())  # continuous: the count of members
    hidden, cells = strata.suppressed_cells((10, 20), {"a": (0, 10), "b": (10, 10)})
    assert (hidden, cells) == (False, set())


def test_a_lone_suppressed_cell_takes_the_next_smallest_with_it():
    # total 20/40 with "c" 2/3 hidden: 40 - 17 - 20 would give c's denominator back, so "b" (17) goes too
    hidden, cells = strata.suppressed_cells((20, 40), {"a": (10, 20), "b": (8, 17), "c": (2, 3)})
    assert (hidden, cells) == (False, {"b", "c"})
    # two hidden cells already protect each other
    hidden, cells = strata.suppressed_cells((20, 40), {"a": (10, 30), "b": (3, 6), "c": (7, 4)})
    assert (hidden, cells) == (False, {"b", "c"})
    # a hidden numerator alone would be recovered from the total numerator too
    hidden, cells = strata.suppressed_cells((12, 30), {"a": (9, 15), "b": (3, 9), "c": (0, 6)})
    assert (hidden, cells) == (False, {"b", "c"})


# -- measures 1 and 2: identification to an active coordinated care plan ---------------------------------------


@pytest.fixture
def identifications(build):
    scenarios.identifications(build)


def test_ccp_within_30_days(database, identifications):
    result = month(database, "ccp-within-30-days", end=date(2026, 11, 30))
    september, october, november = result.points
    # denominator p1-p6, p9, p10 (p7 cancelled, p8 died); numerator p1, p2, p5, p9, p10
    assert counts(september) == (5, 8, 0.625, False)
    assert (september.period_start, september.period_end) == (SEPTEMBER, date(2026, 9, 30))
    assert counts(october) == (None, None, None, True)  # 1 of 1: a small cell
    assert counts(november) == (0, 0, None, False)  # p12 is not assessable yet: nobody to count
    assert result.kind == "proportion" and result.measure.id == "ccp-within-30-days"


def test_ccp_drill_down_lists_numerator_denominator_and_exclusions(database, identifications):
    found = compute.members(database, measure_id="ccp-within-30-days", period="month", period_start=SEPTEMBER,
                            now=LATER)
    assert sorted(m.reference for m in found["numerator"]) == [
        "Patient/p1", "Patient/p10", "Patient/p2", "Patient/p5", "Patient/p9"]
    assert len(found["denominator"]) == 8
    excluded = {m.reference: m.excluded for m in found["excluded"]}
    assert excluded == {"Patient/p7": "episode cancelled", "Patient/p8": "died within 30 days of identification"}
    pending = compute.members(database, measure_id="ccp-within-30-days", period="month",
                              period_start=date(2026, 11, 1), now=LATER)
    assert [m.excluded for m in pending["excluded"]] == ["not yet assessable: the 30 days have not passed"]


def test_ccp_stratified_by_gender_suppresses_small_cells(database, identifications):
    result = month(database, "ccp-within-30-days", stratifier="gender")
    # female: p1, p2, p3, p5 (num p1, p2, p5 = 3); male: p4, p6, p9, p10 (num p9, p10 = 2): both hidden
    assert set(result.strata) == {"female", "male"}
    assert counts(result.strata["female"][0]) == (None, None, None, True)
    assert counts(result.strata["male"][0]) == (None, None, None, True)
    assert counts(result.points[0]) == (5, 8, 0.625, False)


def test_days_to_ccp_is_the_median_of_those_who_got_a_plan(database, identifications):
    result = month(database, "days-to-ccp", end=date(2026, 10, 31))
    # p1 9, p2 18, p3 47, p5 7, p6 35, p9 10, p10 1 -> 1, 7, 9, 10, 18, 35, 47: median 10; p8 (died) had no plan
    september, october = result.points
    assert counts(september) == (None, 7, 10.0, False)
    assert october.suppressed and october.value is None
    assert result.kind == "continuous"


# -- measures 3 to 6: referrals ------------------------------------------------------------------------------------


@pytest.fixture
def referrals(build):
    scenarios.referrals(build)


def test_referral_response_within_sla(database, referrals):
    result = month(database, "referral-response-within-sla")
    # denominator R1, R2, R3, R4, R6, R8, R10 (R5 withdrawn, R7 in error); in time R1, R3, R4, R8, R10
    assert counts(result.points[0]) == (5, 7, 0.7143, False)
    found = compute.members(database, measure_id="referral-response-within-sla", period_start=SEPTEMBER, now=LATER,
                            settings=Settings())
    assert sorted(m.reference for m in found["numerator"]) == ["Task/R1", "Task/R10", "Task/R3", "Task/R4", "Task/R8"]
    assert {m.reference: m.excluded for m in found["excluded"]} == {
        "Task/R5": "withdrawn before a response was due", "Task/R7": "entered in error"}


def test_without_the_holiday_r3_is_late(database, referrals):
    result = compute.evaluate(database, measure_id="referral-response-within-sla", start=SEPTEMBER, end=SEPTEMBER,
                              now=LATER, settings=Settings(holidays=frozenset()))
    assert counts(result.points[0]) == (None, None, None, True)  # a numerator of 4 is a small cell
    found = compute.members(database, measure_id="referral-response-within-sla", period_start=SEPTEMBER, now=LATER,
                            settings=Settings(holidays=frozenset()))
    assert sorted(m.reference for m in found["numerator"]) == ["Task/R1", "Task/R10", "Task/R4", "Task/R8"]


def test_unanswered_referral_is_not_judged_before_it_is_due(database, referrals):
    # R6 was sent on Sunday 20 Sep: the clock starts on Monday 00:00 local, so it is due Wed 23 Sep 00:00 local
    # (04:00 UTC); until then it may still be answered in time
    found = compute.members(database, measure_id="referral-response-within-sla", period_start=SEPTEMBER,
                            now=at("2026-09-23T03:59"), settings=Settings())
    assert "Task/R6" in {m.reference for m in found["excluded"]}
    found = compute.members(database, measure_id="referral-response-within-sla", period_start=SEPTEMBER,
                            now=at("2026-09-23T04:01"), settings=Settings())
    assert "Task/R6" in {m.reference for m in found["denominator"]}


def test_closed_loop_within_30_days(database, referrals):
    result = month(database, "closed-loop-30-days", end=date(2026, 10, 31))
    # denominator R1-R6, R8, R10; closed with a reason or outcome within 30 days: R1, R2, R4, R5, R8
    # (R3 closed after 46 days, R6 and R10 still open after 30)
    assert counts(result.points[0]) == (5, 8, 0.625, False)
    assert result.points[1].suppressed  # R9 alone in October


def test_got_help_rate_is_suppressed_below_five(database, referrals):
    result = month(database, "got-help")
    # R1, R4, R8 of 8: a numerator of 3 is a small cell
    assert counts(result.points[0]) == (None, None, None, True)
    found = compute.members(database, measure_id="got-help", period_start=SEPTEMBER, now=LATER)
    assert sorted(m.reference for m in found["numerator"]) == ["Task/R1", "Task/R4", "Task/R8"]
    assert len(found["denominator"]) == 8


def test_days_to_first_contact_is_a_median(database, referrals):
    result = month(database, "days-to-first-contact")
    # R1 3.0, R3 6.0 (client-contacted), R4 1.5, R8 5.0, R10 1.5 -> median 3.0
    assert counts(result.points[0]) == (None, 5, 3.0, False)


def test_weekly_referral_points(database, referrals):
    result = compute.evaluate(database, measure_id="closed-loop-30-days", period="week", start=SEPTEMBER,
                              end=date(2026, 9, 30), now=LATER, settings=Settings())
    assert [p.period_start for p in result.points] == [date(2026, 8, 31), date(2026, 9, 7), date(2026, 9, 14),
                                                       date(2026, 9, 21), date(2026, 9, 28)]
    # week of 31 Aug: R1, R2, R3; 7 Sep: R4; 14 Sep: R5, R6 (Sunday 20 Sep); 21 Sep: R8, R10 (R7 in error);
    # 28 Sep: nobody
    assert [p.suppressed for p in result.points] == [True, True, True, True, False]
    assert counts(result.points[4]) == (0, 0, None, False)


# -- measure 7: follow-up reminders on time, by tier --------------------------------------------------------------


@pytest.fixture
def reminders(build):
    scenarios.reminders(build)


NOW = at("2026-09-30T12:00")


def test_follow_ups_on_time(database, reminders):
    result = month(database, "follow-ups-on-time", now=NOW)
    # 8 + 6 + 3 = 17 follow-ups due, 6 + 5 + 1 = 12 on time
    assert counts(result.points[0]) == (12, 17, 0.7059, False)


def test_follow_ups_on_time_by_tier_with_complementary_suppression(database, reminders):
    result = month(database, "follow-ups-on-time", stratifier="tier", now=NOW)
    assert counts(result.strata["recommended"][0]) == (6, 8, 0.75, False)
    # emerging (1 of 3) is hidden; promising (5 of 6), the next smallest, is hidden with it so that 17 - 8 cannot
    # be split back into the two
    assert counts(result.strata["emerging"][0]) == (None, None, None, True)
    assert counts(result.strata["promising"][0]) == (None, None, None, True)
    assert counts(result.points[0]) == (12, 17, 0.7059, False)


@pytest.fixture
def sent_ahead(database):
    """Follow-ups whose reminders went out ahead of their due moment (``due_at``) with the due moment in the payload.

    September, by due moment: five done after the reminder went out but before the follow-up was due (on time), one
    done exactly when due (on time), one done after (late), one sent in August and due on 1 September and done
    before it was due (September, on time); one sent in September but due in October; one due this evening, not done.
    """
    def add(key, *, sent, due, done, tier="recommended"):
        with database.writing() as session:
            session.add(Reminder(key=f"follow-up|CarePlan/s|{key}|{due[:10]}", kind="follow-up",
                                 source=f"CarePlan/s#{key}", recipient="Practitioner/c1", patient=None, tier=tier,
                                 due_at=at(sent), done_at=at(done) if done else None, state="sent",
                                 payload={"due": at(due).isoformat(), "care_plan": "CarePlan/s", "activity": key}))
    for n in range(5):
        add(f"between-{n}", sent=f"2026-09-{8 + n:02d}T09:00", due=f"2026-09-{10 + n:02d}T09:00",
            done=f"2026-09-{9 + n:02d}T12:00")
    add("at-due", sent="2026-09-16T09:00", due="2026-09-17T09:00", done="2026-09-17T09:00", tier="promising")
    add("late", sent="2026-09-14T09:00", due="2026-09-15T09:00", done="2026-09-15T10:00", tier="promising")
    add("august-send", sent="2026-08-30T09:00", due="2026-09-01T09:00", done="2026-08-31T16:00")
    add("october-due", sent="2026-09-29T09:00", due="2026-10-01T09:00", done="2026-09-30T08:00")
    add("due-tonight", sent="2026-09-28T18:00", due="2026-09-30T18:00", done=None)


def test_follow_ups_are_on_time_by_their_due_moment_not_the_reminders_send_moment(database, sent_ahead):
    from careplan.measures.compute import members

    result = month(database, "follow-ups-on-time", now=NOW)
    # 8 due in September (the August-sent one included, October's and tonight's not); 7 done by their due moment.
    # Compared with the send moment instead, none of them would be on time (0 of 7, the August one missed).
    assert counts(result.points[0]) == (7, 8, 0.875, False)
    found = members(database, measure_id="follow-ups-on-time", period="month", period_start=SEPTEMBER, now=NOW,
                    settings=Settings())
    on_time = {m.reference.split("#")[1] for m in found["numerator"]}
    assert on_time == {*(f"between-{n}" for n in range(5)), "at-due", "august-send"}
    assert {m.reference.split("#")[1] for m in found["denominator"]} - on_time == {"late"}
    assert [(m.reference.split("#")[1], m.excluded) for m in found["excluded"]] == [
        ("due-tonight", "not yet assessable: not due yet")]  # its reminder went out, but it is not due yet
    assert {m.event for m in found["denominator"]} >= {date(2026, 9, 1), date(2026, 9, 10)}  # placed by due moment
    october = month(database, "follow-ups-on-time", start=date(2026, 10, 1), now=at("2026-10-31T12:00"))
    assert (october.points[0].numerator, october.points[0].denominator) == (None, None)  # 1 of 1: suppressed
    assert october.points[0].suppressed


# -- measure 8: practice adoption -------------------------------------------------------------------------------


@pytest.fixture
def adoption(build):
    scenarios.adoption(build)


def test_practice_adoption_snapshots_active_plans_at_month_end(database, adoption):
    result = month(database, "practice-adoption", end=date(2026, 10, 31))
    september, october = result.points
    # 30 Sep: a has rec x3, pro, eme (the cancelled one left out); b has rec x2, pro, untiered (completed left out);
    # c is a draft and d completed: 5 recommended of 9
    assert counts(september) == (5, 9, 0.5556, False)
    # 31 Oct: c is active with 3 more recommended: 8 of 12
    assert counts(october) == (8, 12, 0.6667, False)


def test_practice_adoption_by_tier_is_each_tiers_share(database, adoption):
    result = month(database, "practice-adoption", end=date(2026, 10, 31), stratifier="tier")
    assert [counts(p) for p in result.strata["recommended"]] == [(5, 9, 0.5556, False), (8, 12, 0.6667, False)]
    for tier in ("promising", "emerging", "none"):  # 2, 1 and 1 activities: small cells
        assert all(p.suppressed for p in result.strata[tier]), tier


# -- measure 9: seven-day follow-up after a mental-health or addictions hospitalisation ---------------------------


@pytest.fixture
def discharges(build):
    scenarios.discharges(build)


def test_seven_day_follow_up_after_hospitalisation(database, discharges):
    result = month(database, "follow-up-7-days-after-hospitalisation")
    # denominator e1, e2, e3, e4, e5, e6b, e9, e10 (e6a readmitted, e7 died, e8 not MHA); numerator e1, e2, e5,
    # e6b, e10
    assert counts(result.points[0]) == (5, 8, 0.625, False)
    found = compute.members(database, measure_id="follow-up-7-days-after-hospitalisation", period_start=SEPTEMBER,
                            now=LATER)
    assert sorted(m.reference for m in found["numerator"]) == [
        "Encounter/e1", "Encounter/e10", "Encounter/e2", "Encounter/e5", "Encounter/e6b"]
    assert {m.reference: m.excluded for m in found["excluded"]} == {
        "Encounter/e6a": "readmitted within 7 days (the later discharge is the index)",
        "Encounter/e7": "died within 7 days of discharge"}


def test_recent_discharge_waits_for_its_seven_days(database, discharges):
    found = compute.members(database, measure_id="follow-up-7-days-after-hospitalisation", period_start=SEPTEMBER,
                            now=at("2026-10-01T12:00"))
    assert {m.reference for m in found["excluded"]} >= {"Encounter/e9"}


def test_no_encounter_data_gives_empty_points(database):
    result = month(database, "follow-up-7-days-after-hospitalisation")
    assert counts(result.points[0]) == (0, 0, None, False)


# -- equity strata ------------------------------------------------------------------------------------------------


def test_strata_read_equity_dimensions_where_fhir_keeps_them(database, build):
    race = {"url": strata.RACE_EXTENSION, "extension": [
        {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2054-5",
                                               "display": "Black or African American"}}]}
    quintile = {"url": strata.EQUITY_EXTENSIONS["income-quintile"], "valueInteger": 1}
    build.patient("s1", birth_date="2008-10-01", language="fr-CA", extensions=[race, quintile])
    build.put({"resourceType": "Observation", "id": "housing-1", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "71802-3"}]},
               "subject": {"reference": "Patient/s1"}, "effectiveDateTime": "2026-08-01",
               "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA31994-9"}]}},
              "2026-08-01")
    build.put({"resourceType": "Observation", "id": "rural-1", "status": "final",
               "code": {"coding": [{"system": strata.EQUITY_SYSTEM, "code": "rurality"}]},
               "subject": {"reference": "Patient/s1"}, "effectiveDateTime": "2026-08-01", "valueString": "rural"},
              "2026-08-01")
    with database.reading() as session:
        facts = strata.load_facts(session, ["s1", "missing"])
    on = date(2026, 9, 15)
    values = {s.id: strata.value_of(s.id, facts.get("s1"), on=on, tier="emerging") for s in strata.STRATIFIERS}
    assert values == {"age-band": "0-17", "gender": "female", "gender-identity": "unknown", "language": "fr",
                      "interpreter": "unknown", "housing": "not-housed", "race": "Black or African American",
                      "ethnicity": "unknown", "income-quintile": "Q1", "rurality": "rural", "disability": "unknown",
                      "tier": "emerging"}
    assert strata.value_of("age-band", facts["s1"], on=date(2026, 10, 1)) == "18-24"
    assert strata.value_of("language", None, on=on) == "unknown"


def test_strata_from_extensions_and_conditions(database, build):
    extensions = [
        {"url": strata.GENDER_IDENTITY_EXTENSIONS[1], "extension": [{"url": "value", "valueCodeableConcept": {
            "coding": [{"system": "http://snomed.info/sct", "code": "446141000124107"}]}}]},
        {"url": strata.INTERPRETER_EXTENSION, "valueBoolean": True},
        {"url": strata.EQUITY_EXTENSIONS["disability"], "valueBoolean": True},
        {"url": strata.EQUITY_EXTENSIONS["rurality"], "valueCode": "remote"},
        {"url": strata.ETHNICITY_EXTENSION, "extension": [
            {"url": "ombCategory", "valueCoding": {"code": "2135-2", "display": "Hispanic or Latino"}},
            {"url": "ombCategory", "valueCoding": {"code": "2186-5", "display": "Not Hispanic or Latino"}}]},
    ]
    build.patient("s2", birth_date="1950", language=None, extensions=extensions)
    build.put({"resourceType": "Condition", "id": "need-s2", "subject": {"reference": "Patient/s2"},
               "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                              "code": "active"}]},
               "category": [{"coding": [{"system": strata.SOCIAL_NEED_SYSTEMS[0], "code": "homelessness"}]}],
               "code": {"text": "Sleeping rough"}}, "2026-08-01")
    with database.reading() as session:
        facts = strata.load_facts(session, ["s2"])["s2"]
    on = date(2026, 9, 15)
    assert {s: strata.value_of(s, facts, on=on) for s in (
        "age-band", "gender-identity", "interpreter", "disability", "rurality", "ethnicity", "housing", "language",
        "tier")} == {"age-band": "65+", "gender-identity": "446141000124107", "interpreter": "yes",
                     "disability": "yes", "rurality": "remote", "ethnicity": "multiple", "housing": "not-housed",
                     "language": "unknown", "tier": "none"}


def test_the_service_level_runs_in_the_agencys_time_zone(database, build):
    # Sent Sat 19 Sep 04:30 UTC: Friday 21:30 in Vancouver (due Tue 21:30 PDT = Wed 04:30 UTC), but Saturday in
    # Toronto (the clock starts Monday 00:00: due Wed 00:00 EDT = Wed 04:00 UTC). Answered Wed 23 Sep 04:15 UTC.
    build.partner("coast", "America/Vancouver")
    build.put({"resourceType": "Organization", "id": "lakeside", "name": "Lakeside (no zone: the default)"},
              "2026-01-01")
    for task, owner in (("V1", "coast"), ("T1", "lakeside")):
        build.patient(f"p-{task}")
        build.referral(task, f"p-{task}", [("2026-09-19T04:30", "requested", None),
                                           ("2026-09-23T04:15", "accepted", None)], owner=owner)
    found = compute.members(database, measure_id="referral-response-within-sla", period_start=SEPTEMBER, now=LATER,
                            settings=Settings())
    assert {m.reference: m.in_numerator for m in found["denominator"]} == {"Task/V1": True, "Task/T1": False}
