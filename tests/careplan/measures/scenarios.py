"""The hand-computed scenarios of the measure tests (shared by the careplan, /api/v1 and /fhir tests).

Each function writes one scenario with the Builder; the expected values are worked out in the tests' comments.
"""

from __future__ import annotations

from tests.careplan.measures.fixtures import Builder

ICD10 = "http://hl7.org/fhir/sid/icd-10"
PRIVACY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                       "code": "patient-privacy"}]}


def outcome(code: str) -> dict:
    """Return the Task.output of a coded referral outcome."""
    return {"output": [{"type": {"coding": [{"system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/"
                                                       "SDOHCC-CodeSystemTemporaryCodes", "code": "resulting-activity"}]},
                        "valueCodeableConcept": {"coding": [{"system": OUTCOME_SYSTEM, "code": code}]}}]}


def reason(text: str) -> dict:
    """Return a Task.statusReason."""
    return {"statusReason": {"text": text}}


CONTACTED = {"businessStatus": {"coding": [{"system": "https://careplan.example.org/fhir/CodeSystem/"
                                                      "referral-business-status", "code": "client-contacted"}]}}
OUTCOME_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/referral-outcome"


def identifications(build: Builder) -> None:
    """Patients identified in September (and one in October), with their plans' histories."""
    build.practice("peer-support", "recommended")

    def person(pid, identified, *, gender="female", language="en-CA"):
        build.patient(pid, gender=gender, language=language)
        build.episode(pid, identified)

    person("p1", "2026-09-01")
    build.coordinated("p1", when="2026-09-10")                       # 9 days: numerator
    person("p2", "2026-09-02", language="fr-CA")
    build.coordinated("p2", when="2026-09-20")                       # 18 days: numerator
    person("p3", "2026-09-03", language="fr-CA")
    build.coordinated("p3", when="2026-10-20")                       # 47 days: too late
    person("p4", "2026-09-05", gender="male")                        # no plan at all
    person("p5", "2026-09-08")
    build.coordinated("p5", when="2026-09-08", team_members=1)       # the patient alone: not yet
    build.team("p5", 2, "2026-09-15")                                # 7 days: numerator
    person("p6", "2026-09-10", gender="male")
    build.coordinated("p6", when="2026-09-12", goals=False)          # no goal yet
    build.plan("p6", "2026-10-15")                                   # 35 days: too late
    build.patient("p7", gender="male")
    build.episode("p7", "2026-09-12", status="cancelled")            # declined: excluded
    build.patient("p8", deceased="2026-09-20")
    build.episode("p8", "2026-09-14")                                # died: excluded from measure 1
    person("p9", "2026-09-15", gender="male")
    build.coordinated("p9", when="2026-09-16", status="draft")
    build.plan("p9", "2026-09-25")                                   # activated: 10 days, numerator
    person("p10", "2026-09-20", gender="male", language="fr-CA")
    build.coordinated("p10", when="2026-09-21")                      # 1 day: numerator
    person("p11", "2026-10-05")
    build.coordinated("p11", when="2026-10-06")                      # October's only patient
    person("p12", "2026-11-20")                                      # window still open at LATER (Dec 1)


def referrals(build: Builder) -> None:
    """Referrals to one agency in Toronto (2 business days to respond; Labour Day, Monday 7 September, is off)."""
    build.partner("harbour", "America/Toronto")
    for pid, gender in (("r1", "female"), ("r2", "female"), ("r3", "male"), ("r4", "female"), ("r5", "male"),
                        ("r6", "male"), ("r7", "female"), ("r8", "female"), ("r9", "male"), ("r10", "female")):
        build.patient(pid, gender=gender)
    # R1: sent Tue 1 Sep 10:00 local, due Thu 3 Sep 10:00; accepted in time; contact after 3 days; got help
    build.referral("R1", "r1", [("2026-09-01T14:00", "requested", None), ("2026-09-02T14:00", "accepted", None),
                                ("2026-09-04T14:00", "in-progress", None),
                                ("2026-09-20T14:00", "completed", outcome("got-help"))])
    # R2: declined late (due Thu 3 Sep 14:00 UTC, declined Fri 4 Sep), with a reason: closed loop
    build.referral("R2", "r2", [("2026-09-01T14:00", "requested", None),
                                ("2026-09-04T15:00", "rejected", reason("No capacity"))])
    # R3: sent Fri 4 Sep; Labour Day pushes the due time to Wed 9 Sep 10:00 local; accepted Tue 8 Sep 16:00 local
    build.referral("R3", "r3", [("2026-09-04T14:00", "requested", None), ("2026-09-08T20:00", "accepted", None),
                                ("2026-09-10T14:00", "accepted", CONTACTED),
                                ("2026-10-20T14:00", "completed", {**CONTACTED, **outcome("could-not-contact")})])
    # R4: accepted next day, contact after 1.5 days, got help on 25 Sep
    build.referral("R4", "r4", [("2026-09-10T14:00", "requested", None), ("2026-09-11T13:00", "accepted", None),
                                ("2026-09-12T02:00", "in-progress", None),
                                ("2026-09-25T14:00", "completed", outcome("got-help"))])
    # R5: withdrawn by the coordinator before the partner had to answer
    build.referral("R5", "r5", [("2026-09-15T14:00", "requested", None),
                                ("2026-09-16T14:00", "cancelled", reason("Patient moved"))])
    # R6: never answered
    build.referral("R6", "r6", [("2026-09-20T14:00", "requested", None)])
    # R7: entered in error
    build.referral("R7", "r7", [("2026-09-21T14:00", "requested", None),
                                ("2026-09-22T14:00", "entered-in-error", None)])
    # R8: drafted in August, sent Fri 25 Sep (due Tue 29 Sep), accepted Mon, contact after 5 days, got help
    build.referral("R8", "r8", [("2026-08-25T14:00", "draft", None), ("2026-09-25T14:00", "requested", None),
                                ("2026-09-28T14:00", "accepted", None), ("2026-09-30T14:00", "in-progress", None),
                                ("2026-10-02T14:00", "completed", outcome("got-help"))])
    # R9: October
    build.referral("R9", "r9", [("2026-10-05T14:00", "requested", None)])
    # R10: accepted in time, contact after 1.5 days, still in progress
    build.referral("R10", "r10", [("2026-09-22T14:00", "requested", None), ("2026-09-23T14:00", "accepted", None),
                                  ("2026-09-24T02:00", "in-progress", None)])


def reminders(build: Builder) -> None:
    """September follow-ups: recommended 6 of 8 on time, promising 5 of 6, emerging 1 of 3, plus exclusions."""
    def add(tier, due, done, **kwargs):
        add.n += 1
        build.reminder(f"r{add.n}", due=due, done=done, tier=tier, **kwargs)
    add.n = 0
    for n in range(6):
        add("recommended", f"2026-09-{n + 2:02d}", f"2026-09-{n + 1:02d}")
    add("recommended", "2026-09-10", "2026-09-11")  # a day late
    add("recommended", "2026-09-12T09:00", None)  # never done
    add("recommended", "2026-09-12T09:00", None, state="cancelled")  # excluded
    add("recommended", "2026-09-30T18:00", None)  # not due yet at NOW: excluded
    add("recommended", "2026-09-05", "2026-09-05", kind="goal-review")  # another kind
    for n in range(5):
        add("promising", f"2026-09-{n + 10:02d}T10:00", f"2026-09-{n + 10:02d}T10:00")  # done at the due time
    add("promising", "2026-09-20", "2026-09-25")
    add("emerging", "2026-09-03", "2026-09-01")
    add("emerging", "2026-09-04", "2026-09-06")
    add("emerging", "2026-09-05", None)
    add("recommended", "2026-10-03", "2026-10-01")  # October


def adoption(build: Builder) -> None:
    for name, tier in (("rec-a", "recommended"), ("rec-b", "recommended"), ("rec-c", "recommended"),
                       ("pro", "promising"), ("eme", "emerging"), ("untiered", None)):
        build.practice(name, tier)
    for pid in ("a", "b", "c", "d"):
        build.patient(pid)
    build.coordinated("a", when="2026-09-05", activities=[
        ("rec-a", "in-progress"), ("rec-b", "not-started"), ("rec-c", "scheduled"), ("pro", "in-progress"),
        ("eme", "on-hold"), ("rec-a", "cancelled")])
    build.coordinated("b", when="2026-09-10", activities=[
        ("rec-a", "in-progress"), ("rec-b", "in-progress"), ("pro", "not-started"), ("untiered", "in-progress"),
        ("eme", "completed")])
    build.coordinated("c", when="2026-09-15", status="draft", activities=[
        ("rec-a", "in-progress"), ("rec-b", "in-progress"), ("rec-c", "in-progress")])
    build.plan("c", "2026-10-03", activities=[("rec-a", "in-progress"), ("rec-b", "in-progress"),
                                              ("rec-c", "in-progress")])
    build.coordinated("d", when="2026-09-01", activities=[("rec-a", "in-progress")])
    build.plan("d", "2026-09-20", status="completed", activities=[("rec-a", "completed")])


def discharges(build: Builder) -> None:
    for pid in ("h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"):
        build.patient(pid, deceased="2026-09-12T10:00:00Z" if pid == "h7" else None)
    build.condition("dx-h2", "h2", "http://snomed.info/sct", "35489007")  # depressive disorder
    mh = (ICD10, "F32.1")

    def stay(eid, pid, start, end, **kwargs):
        build.encounter(eid, pid, klass="IMP", start=start, end=end, **kwargs)

    # h1: discharged 3 Sep, community visit on 8 Sep: numerator
    stay("e1", "h1", "2026-09-01T10:00", "2026-09-03T10:00", reason=mh)
    build.encounter("v1", "h1", klass="AMB", start="2026-09-08T10:00", end="2026-09-08T11:00")
    # h2 (diagnosis by reference): discharged 4 Sep, coordinator call on 11 Sep (day 7): numerator
    stay("e2", "h2", "2026-09-02T10:00", "2026-09-04T16:00", diagnosis="dx-h2")
    build.contact("c2", "h2", "2026-09-11T20:00")
    # h3: self-harm, discharged 5 Sep, visit only on the same day: does not count
    stay("e3", "h3", "2026-09-04T10:00", "2026-09-05T08:00", reason=(ICD10, "X61"))
    build.encounter("v3", "h3", klass="AMB", start="2026-09-05T15:00", end="2026-09-05T16:00")
    # h4: discharged 10 Sep, visit on day 8: too late
    stay("e4", "h4", "2026-09-08T10:00", "2026-09-10T10:00", reason=mh)
    build.encounter("v4", "h4", klass="AMB", start="2026-09-18T10:00", end="2026-09-18T11:00")
    # h5: discharged 12 Sep, virtual visit on 14 Sep: numerator
    stay("e5", "h5", "2026-09-11T10:00", "2026-09-12T10:00", reason=(ICD10, "F10.2"))
    build.encounter("v5", "h5", klass="VR", start="2026-09-14T10:00", end="2026-09-14T10:30")
    # h6: discharged 14 Sep, readmitted 16 Sep (excluded), discharged again 20 Sep, seen 22 Sep: numerator
    stay("e6a", "h6", "2026-09-13T10:00", "2026-09-14T10:00", reason=mh)
    stay("e6b", "h6", "2026-09-16T10:00", "2026-09-20T10:00", reason=mh)
    build.encounter("v6", "h6", klass="HH", start="2026-09-22T10:00", end="2026-09-22T11:00")
    # h7: died two days after discharge: excluded
    stay("e7", "h7", "2026-09-08T10:00", "2026-09-10T10:00", reason=mh)
    # h8: a knee operation, not a mental-health stay: not in the population
    stay("e8", "h8", "2026-09-08T10:00", "2026-09-10T10:00", reason=(ICD10, "S83.2"))
    # h9: discharged 28 Sep, followed up by ED visit only: not a follow-up; emergency does not count
    stay("e9", "h9", "2026-09-25T10:00", "2026-09-28T10:00", reason=mh)
    build.encounter("v9", "h9", klass="EMER", start="2026-09-29T10:00", end="2026-09-29T12:00")
    # h1 again: discharged 24 Sep, followed up by a phone call on 26 Sep: numerator
    stay("e10", "h1", "2026-09-22T10:00", "2026-09-24T10:00", reason=mh)
    build.contact("c10", "h1", "2026-09-26T09:00")
