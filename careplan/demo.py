"""Load clearly synthetic demo data: six months of coordinated care written through the store with back-dated times.

``careplan seed`` calls ``load`` after the catalogue, measures and demo care team are in place, so a first run shows
the product at work: about sixty made-up patients enrolled over the last 26 weeks, their coordinated care plans
(goals, care team, activities from the practice catalogue, progress notes), partner agencies in the directory,
consents, referrals that partners accept, decline, work and close, and mental-health hospitalisations with and
without a seven-day follow-up. Every resource goes through ``careplan.store.service.update_in`` as trusted system
work with ``now`` set to the moment it "happened", so the profile, the referral state machine, the consent rule,
the closing effects and the reminder rules all run, and version histories read like real work.

Deterministic (a fixed random seed, times relative to today's date), idempotent (fixed ids; a database that has the
demo data already is left alone) and written in one transaction (all of it or nothing). Every resource carries the
HTEST tag ("test health data"), so ``_tag=http://terminology.hl7.org/CodeSystem/v3-ActReason|HTEST`` finds it.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import random
from collections.abc import Generator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from careplan import jsonutil
from careplan.coordination import codes
from careplan.db import Database
from careplan.models import utcnow
from careplan.referrals import codes as referral_codes
from careplan.referrals.timeline import CHANGED_BY_EXTENSION
from careplan.reminders.models import Reminder
from careplan.store import repository, service
from careplan.store.records import format_instant
from careplan.validation import validate_resource

log = logging.getLogger(__name__)

RANDOM_SEED = 20260601
PATIENTS = 60
WEEKS = 26
MARKER = ("Patient", "demo-p001")  # written first: a database that has it has the demo data
BASE = codes.BASE
TEST_TAG = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
            "display": "test health data"}
COORDINATORS = ("Practitioner/demo-coordinator", "Practitioner/demo-coordinator-2")
HEALTH_LINK = "Organization/demo-health-link"
HOSPITAL = "Organization/demo-riverside-general"
SERVICE_CATEGORY = f"{BASE}/CodeSystem/service-category"
SOCIAL_NEED_SYSTEM = codes.SOCIAL_NEED_SYSTEM
ROLE_SYSTEM = codes.CARE_TEAM_ROLE_SYSTEM
INCOME_QUINTILE = f"{BASE}/StructureDefinition/income-quintile"
RURALITY = f"{BASE}/StructureDefinition/rurality"
DISABILITY = f"{BASE}/StructureDefinition/disability"
INTERPRETER = "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired"
TIMEZONE = f"{BASE}/StructureDefinition/timezone"
ACCEPTING = f"{BASE}/StructureDefinition/accepting-referrals"
PRACTICE = f"{BASE}/PlanDefinition/"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
TASK_CODE = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}
# Reminders the simulated scheduler has not reached yet: the real one delivers them to the inbox on first start.
UNSENT_WINDOW = timedelta(hours=36)

# Invented names (plants and birds as family names): no real person is meant.
GIVEN = ("Alex", "Sam", "Jordan", "Robin", "Charlie", "Morgan", "Casey", "Jamie", "Noor", "Léa", "Mathis", "Chloé",
         "Amir", "Mei", "Priya", "Tomás", "Ana", "Kofi", "Inès", "Yusuf", "Hana", "Luca", "Élodie", "Ravi")
FAMILY = ("Birch", "Heron", "Willow", "Sparrow", "Cedar", "Finch", "Maple", "Wren", "Aspen", "Plover", "Rowan",
          "Linden", "Kestrel", "Hazel", "Alder", "Tamarack", "Juniper", "Marten", "Loon", "Sumac")
LANGUAGES = (("en-CA", 34), ("fr-CA", 14), ("es", 3), ("ar", 3), ("pa", 2), ("zh", 2), ("tl", 2))
HOUSING_ANSWERS = (("LA31993-1", "I have housing", 50), ("LA31995-6", "I have housing but I am worried about "
                                                                      "losing it", 30),
                   ("LA31994-9", "I do not have housing", 20))
IDENTIFIED_BY = ("Emergency department social worker", "Family physician", "Community mental health team",
                 "Crisis line", "Self-referral at the Health Link office", "Hospital discharge planner")


@dataclass(frozen=True)
class Agency:
    """A partner agency of the demo directory and what it offers."""

    id: str
    name: str | None  # None: the Organization comes with the seeded demo care team
    needs: tuple[str, ...]
    languages: tuple[str, ...]
    area: str
    timezone: str | None
    waitlist: str | None = None


AGENCIES = (
    Agency("demo-housing-first", None, ("housing",), ("en", "fr"), "Riverside", None, "About 6 weeks for a unit"),
    Agency("demo-food-bank", "Northside Community Food Bank (demo partner)", ("food", "income-support"),
           ("en", "fr", "ar"), "Riverside", "America/Toronto"),
    Agency("demo-peer-network", "Peer Recovery Network (demo partner)", ("peer-support", "mental-health"),
           ("en", "fr", "es"), "Riverside", "America/Toronto"),
    Agency("demo-legal-clinic", "Valley Legal and Income Clinic (demo partner)", ("legal", "income-support"),
           ("en", "es", "pa"), "Valley", "America/Winnipeg"),
)
NEEDS = {  # need code: (display, agency, social-need domain of the concern, concern text, goal text)
    "housing": ("Housing", "demo-housing-first", "housing-instability", "Unstable housing",
                "I want a safe place of my own"),
    "food": ("Food", "demo-food-bank", "food-insecurity", "Not enough food at the end of the month",
             "Have enough food every week"),
    "peer-support": ("Peer support", "demo-peer-network", None, "Feels isolated since leaving hospital",
                     "Meet someone who has been through this"),
    "legal": ("Legal help", "demo-legal-clinic", None, "Eviction notice and unpaid benefits",
              "Sort out the eviction notice"),
    "income-support": ("Income support", "demo-legal-clinic", "financial-insecurity", "No income since losing work",
                       "Get the benefits I am entitled to"),
}
# (practice id, cadence in days); the first entry of each patient's plan is always the coordinated plan itself.
PRACTICES = (("coordinated-care-plan-with-patient-goals", 30), ("single-point-of-contact", 14),
             ("case-conference-with-patient", 90), ("customize-approach-trusted-relationships", 14),
             ("screen-for-social-needs", 90), ("trusted-support-person-on-team", 30), ("peer-support", 14),
             ("culturally-safe-care", 30), ("partner-agency-on-care-team", 30))
REFERRAL_PRACTICE = ("warm-handoff-closed-loop-referral", 14)


@dataclass
class DemoSummary:
    """What ``load`` did."""

    loaded: bool = False
    resources: int = 0
    versions: int = 0
    patients: int = 0
    referrals: int = 0


def is_loaded(db: Database) -> bool:
    """Tell whether the demo data is in the database already."""
    with db.reading() as session:
        return repository.head(session, *MARKER) is not None


def load(db: Database, *, now: datetime | None = None, patients: int = PATIENTS) -> DemoSummary:
    """Write the demo data as of now (default: the current time) unless it is there already; return a summary."""
    if is_loaded(db):
        return DemoSummary()
    moment = (now or utcnow()).astimezone(timezone.utc)
    with db.writing(lock_key="careplan-demo-data") as session:
        if repository.head(session, *MARKER) is not None:
            return DemoSummary()  # another seed loaded it meanwhile
        story = _Story(session, moment, random.Random(RANDOM_SEED))
        story.run(patients)
    log.info("demo data: %d resources, %d versions", story.summary.resources, story.summary.versions)
    story.summary.loaded = True
    return story.summary


# -- demo sign-ins ----------------------------------------------------------------------------------------------

# client id (the token subject, so demo-coordinator acts as Practitioner/demo-coordinator), role, organisation
DEMO_USERS = (("demo-coordinator", "coordinator", None, "Demo coordinator Adaeze Okafor (revoke in production)"),
              ("demo-partner", "partner", "Organization/demo-housing-first",
               "Demo partner Housing First Riverside (revoke in production)"))


def ensure_demo_users(db: Database, instance_dir: Path) -> list:
    """Make sure the demo coordinator and partner clients exist, their secrets saved beside the admin's.

    Saved in instance_dir/demo-credentials.json under ``more_clients``; as for the admin client, a saved secret
    that still matches is kept, otherwise the client gets a fresh one, and a client an operator revoked stays so.
    """
    from careplan import seeding
    from careplan.auth import clients
    from careplan.auth.exceptions import UnknownClient

    path = instance_dir / seeding.DEMO_CREDENTIALS_FILE
    try:
        document = jsonutil.loads(path.read_bytes())
    except (OSError, jsonutil.JSONSyntaxError):
        document = {}
    if not isinstance(document, dict):
        document = {}
    saved = {entry.get("client_id"): entry.get("client_secret") for entry in document.get("more_clients") or []
             if isinstance(entry, dict)}
    result, entries = [], []
    for client_id, role, organization, name in DEMO_USERS:
        try:
            existing = clients.get(db, client_id)
        except UnknownClient:
            secret = clients.register(db, client_id=client_id, name=name, role=role,
                                      organization=organization).secret
            action = "created"
        else:
            if existing.revoked:
                result.append(seeding.DemoCredential(client_id, None, "revoked", path))
                continue
            secret = saved.get(client_id)
            if isinstance(secret, str) and clients.secret_matches(db, client_id=client_id, secret=secret):
                action = "kept"
            else:
                secret, action = clients.rotate_secret(db, client_id=client_id), "rotated"
        result.append(seeding.DemoCredential(client_id, secret, action, path))
        entries.append({"client_id": client_id, "client_secret": secret, "role": role,
                        **({"organization": organization} if organization else {})})
    if document.get("more_clients") != entries:
        seeding._write_private(path, jsonutil.dumps({**document, "more_clients": entries}, pretty=True) + "\n")
    return result


# -- the simulation ------------------------------------------------------------------------------------------------

Step = Generator[datetime, None, None]


class _Story:
    """Play each patient's six months as a generator that yields when it next acts, in global time order."""

    def __init__(self, session: Session, now: datetime, rng: random.Random):
        self.session = session
        self.now = now
        self.rng = rng
        self.start = datetime.combine(now.date() - timedelta(weeks=WEEKS), time(0), tzinfo=timezone.utc)
        self.summary = DemoSummary()
        self._queue: list[tuple[datetime, int, Step]] = []
        self._order = itertools.count()
        self._ids = itertools.count(1)
        self._written: set[tuple[str, str]] = set()
        self._chosen: set[str] = set()
        self.clock = self.start

    # -- running -------------------------------------------------------------------------------------------------

    def run(self, patients: int) -> None:
        self.patients = self.summary.patients = patients
        self._directory()
        for number in range(1, patients + 1):
            self.spawn(self._patient(number, patients))
        for number in range(1, 2 * WEEKS + 1):
            self.spawn(self._hospitalisation(number))
        self.spawn(self._unanswered(6, ("housing", "food")))  # overdue: no answer within 2 business days
        self.spawn(self._unanswered(0.4, ("housing", "housing", "housing", "legal")))  # new in the partner inbox
        while self._queue:
            moment, _, step = heapq.heappop(self._queue)
            self.clock = moment
            self._send_due_reminders(moment)
            self._advance(step)

    def spawn(self, step: Step) -> None:
        """Start a story; it runs until its first yield right away (at the current clock)."""
        self._advance(step)

    def _advance(self, step: Step) -> None:
        try:
            moment = next(step)
        except StopIteration:
            return
        if moment <= self.now:  # what would happen after today has not happened
            heapq.heappush(self._queue, (max(moment, self.clock), next(self._order), step))

    def _send_due_reminders(self, moment: datetime) -> None:
        # What the scheduler would have done by then: reminders that fell due went out (the measures count a
        # follow-up only against a reminder that was sent). The last day and a half is left to the real scheduler.
        if moment > self.now - UNSENT_WINDOW:
            return
        self.session.execute(update(Reminder).where(
            Reminder.state == "scheduled", Reminder.due_at <= moment, Reminder.kind != "digest"
        ).values(state="sent", updated_at=moment).execution_options(synchronize_session="fetch"))

    # -- writing -------------------------------------------------------------------------------------------------

    def put(self, resource: dict, when: datetime | None = None) -> dict:
        """Write resource (with its fixed id) as of when (default: the story clock) through the store."""
        moment = when or self.clock
        body = copy.deepcopy(resource)
        meta = {k: v for k, v in (body.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        if not any(t.get("code") == "HTEST" for t in meta.get("tag", [])):
            meta["tag"] = [*meta.get("tag", []), TEST_TAG]
        body["meta"] = meta
        key = (body["resourceType"], body["id"])
        if key not in self._written:
            # Later versions change only values this module sets; validating each one would double the run time.
            validate_resource(body, expected_type=body["resourceType"])
        result = service.update_in(self.session, resource=body, resource_id=body["id"], now=moment)
        if key not in self._written:
            self._written.add(key)
            self.summary.resources += 1
        if not result.unchanged:
            self.summary.versions += 1
        return result.stored.content

    def current(self, resource_type: str, resource_id: str) -> dict:
        """Return the current content of a resource (it may have changed since this story wrote it)."""
        row = repository.head(self.session, resource_type, resource_id)
        return copy.deepcopy(row.content)

    def at(self, day: date | datetime, *, hour: float | None = None) -> datetime:
        """Return a moment on day during office hours (Toronto, roughly: 13:00 to 21:00 UTC)."""
        if isinstance(day, datetime):
            day = day.date()
        hours = hour if hour is not None else self.rng.uniform(13.0, 21.0)
        return datetime.combine(day, time(0), tzinfo=timezone.utc) + timedelta(hours=hours)

    def later(self, moment: datetime, low: float, high: float) -> datetime:
        """Return a moment low to high days after moment, moved to office hours on weekdays."""
        candidate = moment + timedelta(days=self.rng.uniform(low, high))
        while candidate.weekday() >= 5:
            candidate += timedelta(days=1)
        hours = candidate.hour + candidate.minute / 60
        if not 13.0 <= hours <= 21.5:
            candidate = self.at(candidate)
        return max(candidate, moment + timedelta(minutes=5))

    def earlier(self, moment: datetime, low: float, high: float) -> datetime:
        """Return a moment low to high days before moment (never before the story clock), on a weekday."""
        candidate = moment - timedelta(days=self.rng.uniform(low, high))
        while candidate.weekday() >= 5:
            candidate -= timedelta(days=1)
        return max(candidate, self.clock + timedelta(minutes=5))

    # -- the directory --------------------------------------------------------------------------------------------

    def _directory(self) -> None:
        day0 = self.start - timedelta(days=30)
        self.put({"resourceType": "Organization", "id": "demo-riverside-general", "active": True,
                  "name": "Riverside General Hospital (demo)",
                  "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                        "code": "prov"}]}]}, day0)
        self.put({"resourceType": "Practitioner", "id": "demo-coordinator-2", "active": True,
                  "name": [{"family": "Placeholder", "given": ["Sam"], "prefix": ["Mx."]}],
                  "telecom": [{"system": "email", "value": "sam.placeholder@example.org", "use": "work"}]}, day0)
        self.put({"resourceType": "PractitionerRole", "id": "demo-coordinator-2-role", "active": True,
                  "practitioner": {"reference": "Practitioner/demo-coordinator-2"},
                  "organization": {"reference": HEALTH_LINK}, "code": [{"text": "Care coordinator"}]}, day0)
        for agency in AGENCIES:
            if agency.name is not None:
                organization = {"resourceType": "Organization", "id": agency.id, "active": True, "name": agency.name,
                                "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                                "organization-type", "code": "cg",
                                                      "display": "Community Group"}]}],
                                "address": [{"city": agency.area, "state": "ON", "country": "CA"}]}
                if agency.timezone:
                    organization["extension"] = [{"url": TIMEZONE, "valueCode": agency.timezone}]
                self.put(organization, day0)
            self.put({"resourceType": "Location", "id": f"{agency.id}-area", "status": "active",
                      "name": f"{agency.area} catchment area", "mode": "kind",
                      "address": {"city": agency.area, "state": "ON", "country": "CA"}}, day0)
            service_resource = {
                "resourceType": "HealthcareService", "id": f"{agency.id}-service", "active": True,
                "providedBy": {"reference": f"Organization/{agency.id}"},
                "name": f"{(agency.name or 'Housing First Riverside').split(' (')[0]}: "
                        f"{', '.join(NEEDS.get(n, (n.replace('-', ' '),))[0].lower() for n in agency.needs)}",
                "category": [{"coding": [{"system": SERVICE_CATEGORY, "code": need}]} for need in agency.needs],
                "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": c}]} for c in agency.languages],
                "coverageArea": [{"reference": f"Location/{agency.id}-area", "display": agency.area}],
                "eligibility": [{"code": {"text": "Adults 18+ in coordinated care"}}],
                "extension": [{"url": ACCEPTING, "valueBoolean": True}],
            }
            if agency.waitlist:
                service_resource["availabilityExceptions"] = agency.waitlist
            self.put(service_resource, day0)

    # -- one patient ---------------------------------------------------------------------------------------------

    def _patient(self, number: int, total: int) -> Step:
        rng = self.rng
        pid = f"demo-p{number:03d}"
        # Enrolments spread over the 26 weeks, the last ones a few days ago (their plans are still drafts).
        offset = (number - 1) * (WEEKS * 7 - 3) / max(total, 1) + rng.uniform(0, 2.5)
        identified = self.later(self.start + timedelta(days=offset), 0, 0.2)
        yield identified
        coordinator = COORDINATORS[0] if number % 3 else COORDINATORS[1]
        self._enrol(pid, number, identified, coordinator)
        needs = rng.sample(sorted(NEEDS), k=rng.choice((1, 1, 2, 2, 2, 3)))
        if rng.random() < 0.08:
            return  # identified, but the plan never got going (moved away, declined coordinated care)
        drafted = self.later(identified, 1, 9)
        yield drafted
        plan_id, activities = self._draft_plan(pid, number, needs, coordinator, identified)
        late = rng.random() < 0.2
        activated = self.later(identified, 31, 50) if late else self.later(max(drafted, identified + timedelta(
            days=3)), 1, max(2.0, 26 - (drafted - identified).days))
        yield activated
        plan = self.current("CarePlan", plan_id)
        plan["status"] = "active"
        plan["period"] = {"start": activated.date().isoformat()}
        for activity in plan["activity"]:
            activity["detail"]["status"] = "in-progress"
        self.put(plan)
        # referrals for the needs, spread over the first weeks of the plan
        referral_at = activated
        for need in needs:
            referral_at = self.later(referral_at, 0.5, 12)
            self.spawn(self._referral_later(pid, plan_id, need, coordinator, referral_at))
        yield from self._follow_ups(pid, plan_id, activities, activated, coordinator)

    def _enrol(self, pid: str, number: int, identified: datetime, coordinator: str) -> None:
        rng = self.rng
        language = _weighted(rng, LANGUAGES)
        gender = rng.choices(("female", "male", "other", "unknown"), (46, 46, 5, 3))[0]
        age = rng.choice((19, 22, 24, 27, 29, 31, 34, 36, 39, 42, 45, 48, 51, 55, 58, 63, 67, 72))
        born = date(identified.year - age, rng.randint(1, 12), rng.randint(1, 28))
        extensions: list[dict] = [{"url": INCOME_QUINTILE, "valueInteger": rng.choices((1, 2, 3, 4, 5),
                                                                                      (32, 26, 18, 14, 10))[0]},
                                  {"url": RURALITY, "valueCode": rng.choices(("urban", "rural"), (72, 28))[0]}]
        if rng.random() < 0.22:
            extensions.append({"url": DISABILITY, "valueBoolean": True})
        if not language.startswith(("en", "fr")):
            extensions.append({"url": INTERPRETER, "valueBoolean": rng.random() < 0.7})
        patient = {
            "resourceType": "Patient", "id": pid, "extension": extensions,
            "identifier": [{"system": "https://careplan.example.org/demo-mrn", "value": f"DEMO-{number + 100:04d}"}],
            "active": True,
            "name": [{"use": "official", "family": FAMILY[(number * 7) % len(FAMILY)],
                      "given": [GIVEN[(number * 5) % len(GIVEN)]], "suffix": ["(synthetic)"]}],
            "telecom": [{"system": "phone", "value": f"+1-555-01{number:02d}", "use": "mobile"}],
            "gender": gender, "birthDate": born.isoformat(),
            "address": [{"city": "Riverside" if rng.random() < 0.75 else "Valley", "state": "ON", "country": "CA"}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]},
                               "preferred": True}],
            "generalPractitioner": [{"reference": HEALTH_LINK}],
        }
        self.put(patient, identified)
        by = IDENTIFIED_BY[number % len(IDENTIFIED_BY)]
        self.put({
            "resourceType": "EpisodeOfCare", "id": f"{pid}-episode", "status": "active",
            "type": [{"coding": [{"system": codes.EPISODE_TYPE_SYSTEM, "code": codes.EPISODE_TYPE_CODE,
                                  "display": "Coordinated care"}]}],
            "patient": {"reference": f"Patient/{pid}"}, "managingOrganization": {"reference": HEALTH_LINK},
            "period": {"start": identified.date().isoformat()}, "careManager": {"reference": coordinator},
            "extension": [{"url": codes.IDENTIFICATION_EXTENSION, "extension": [
                {"url": "identifiedOn", "valueDate": identified.date().isoformat()},
                {"url": "identifiedBy", "valueString": by},
                {"url": "reason", "valueString": "Repeated emergency visits and unmet social needs"}]}],
        }, identified)
        code, text, _ = _weighted_triple(rng, HOUSING_ANSWERS)
        self._housing(pid, identified, code, text, suffix="intake")

    def _housing(self, pid: str, when: datetime, code: str, text: str, *, suffix: str) -> None:
        self.put({
            "resourceType": "Observation", "id": f"{pid}-housing-{suffix}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "social-history"}]}],
            "code": {"coding": [{"system": LOINC, "code": "71802-3", "display": "Housing status"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": format_instant(when),
            "valueCodeableConcept": {"coding": [{"system": LOINC, "code": code, "display": text}]},
        }, when)

    def _draft_plan(self, pid: str, number: int, needs: list[str], coordinator: str,
                    identified: datetime) -> tuple[str, list[tuple[str, float]]]:
        rng = self.rng
        subject = {"reference": f"Patient/{pid}"}
        participants = [_member("patient", f"Patient/{pid}"), _member("coordinator", coordinator)]
        agencies = sorted({NEEDS[need][1] for need in needs})
        participants += [_member("partner-agency", f"Organization/{agency}") for agency in agencies[:1]]
        if rng.random() < 0.3:
            participants.append(_member("provider", HEALTH_LINK))
        self.put({"resourceType": "CareTeam", "id": f"{pid}-team", "status": "active", "subject": subject,
                  "name": "Coordinated care team", "participant": participants,
                  "managingOrganization": [{"reference": HEALTH_LINK}]})
        for agency in agencies:
            self.put(_consent(f"{pid}-consent-{agency.removeprefix('demo-')}", pid, f"Organization/{agency}",
                              self.clock))
        concerns, goals = [], []
        for index, need in enumerate(needs):
            display, _, domain, concern_text, goal_text = NEEDS[need]
            categories = [{"coding": [{"system": codes.HEALTH_CONCERN[0], "code": codes.HEALTH_CONCERN[1]}]}]
            if domain:
                categories.append({"coding": [{"system": SOCIAL_NEED_SYSTEM, "code": domain}]})
            self.put({"resourceType": "Condition", "id": f"{pid}-concern-{index + 1}", "category": categories,
                      "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                               "condition-clinical", "code": "active"}]},
                      "code": {"text": concern_text}, "subject": subject,
                      "recordedDate": identified.date().isoformat()})
            concerns.append({"reference": f"Condition/{pid}-concern-{index + 1}"})
            target = (self.clock + timedelta(days=rng.randint(45, 150))).date()
            self.put({"resourceType": "Goal", "id": f"{pid}-goal-{index + 1}", "lifecycleStatus": "active",
                      "achievementStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                                  "goal-achievement", "code": "in-progress"}]},
                      "description": {"text": goal_text}, "subject": subject,
                      "expressedBy": {"reference": f"Patient/{pid}"}, "target": [{"dueDate": target.isoformat()}],
                      "addresses": [concerns[-1]]})
            goals.append({"reference": f"Goal/{pid}-goal-{index + 1}"})
        chosen = [PRACTICES[0]] + rng.sample(PRACTICES[1:], k=rng.choice((1, 2, 2, 3)))
        chosen.append(REFERRAL_PRACTICE)
        activities, plan_activities = [], []
        for index, (practice, cadence) in enumerate(chosen):
            activity_id = f"act-{index + 1}"
            referral = practice == REFERRAL_PRACTICE[0]
            performer = f"Organization/{agencies[0]}" if referral else coordinator
            description = ("Warm hand-off to " + ", ".join(NEEDS[n][0].lower() for n in needs) + " partners"
                           if referral else practice.replace("-", " ").capitalize())
            plan_activities.append({"id": activity_id, "detail": {
                "kind": "ServiceRequest" if referral else "Task",
                "instantiatesCanonical": [PRACTICE + practice], "status": "not-started",
                "description": description,
                "scheduledTiming": {"repeat": {"frequency": 1, "period": cadence, "periodUnit": "d"}},
                "performer": [{"reference": performer}]}})
            activities.append((activity_id, float(cadence)))
        plan_id = f"{pid}-plan"
        self.put({
            "resourceType": "CarePlan", "id": plan_id, "meta": {"profile": [codes.CARE_PLAN_PROFILE]},
            "status": "draft", "intent": "plan",
            "category": [{"coding": [{"system": codes.CARE_PLAN_CATEGORY_SYSTEM, "code": codes.COORDINATED_CARE_PLAN,
                                      "display": "Coordinated care plan"}]}],
            "title": "Coordinated care plan", "subject": subject, "author": {"reference": coordinator},
            "careTeam": [{"reference": f"CareTeam/{pid}-team"}], "addresses": concerns, "goal": goals,
            "description": "Built with the patient at the first meetings; synthetic demo data.",
            "activity": plan_activities,
        })
        return plan_id, activities

    def _follow_ups(self, pid: str, plan_id: str, activities: list[tuple[str, float]], activated: datetime,
                    coordinator: str) -> Step:
        """The coordinator's contacts: each one notes the activities that are due, mostly on time."""
        rng = self.rng
        baseline = {activity_id: activated for activity_id, _ in activities}
        cadence = dict(activities)
        while True:
            due = min(baseline[a] + timedelta(days=cadence[a]) for a in baseline)
            if rng.random() < 0.75:
                moment = self.earlier(due, 0.1, 0.9)  # on time: the day before or the day it is due
            else:
                moment = self.later(due, 0.5, 7)
            yield moment
            plan = self.current("CarePlan", plan_id)
            if plan.get("status") != "active":
                return
            noted = False
            for activity in plan.get("activity", []):
                activity_id = activity.get("id")
                detail = activity.get("detail") or {}
                if activity_id not in baseline or detail.get("status") in ("completed", "cancelled", "stopped"):
                    baseline.pop(activity_id, None)
                    continue
                if baseline[activity_id] + timedelta(days=cadence[activity_id] - 5) <= moment:
                    activity.setdefault("progress", []).append(
                        {"time": format_instant(moment), "text": rng.choice(NOTES),
                         "authorReference": {"reference": coordinator}})
                    baseline[activity_id] = moment
                    noted = True
            if not baseline:
                return
            if noted:
                self.put(plan, moment)
            self._review_goals(plan, moment)

    def _review_goals(self, plan: dict, moment: datetime) -> None:
        # Goals whose target date has come are reviewed at the next contact: reached, or given more time.
        for reference in plan.get("goal", []):
            goal = self.current("Goal", reference["reference"].split("/", 1)[1])
            target = date.fromisoformat(goal["target"][0]["dueDate"])
            if goal.get("lifecycleStatus") != "active" or target > moment.date() + timedelta(days=3):
                continue
            if self.rng.random() < 0.85:  # the rest stay due: the worklist shows them as goal reviews
                if self.rng.random() < 0.45:
                    goal["lifecycleStatus"] = "completed"
                    goal["achievementStatus"]["coding"][0]["code"] = "achieved"
                else:
                    goal["achievementStatus"]["coding"][0]["code"] = self.rng.choice(("improving", "worsening",
                                                                                      "no-change"))
                    goal["target"][0]["dueDate"] = (moment.date() + timedelta(days=self.rng.randint(45, 90))
                                                    ).isoformat()
                goal["statusDate"] = moment.date().isoformat()
                self.put(goal, moment)

    # -- referrals -----------------------------------------------------------------------------------------------

    def _referral_later(self, pid: str, plan_id: str, need: str, coordinator: str, when: datetime) -> Step:
        yield when
        yield from self._referral(pid, plan_id, need, coordinator)

    def _unanswered(self, days_ago: float, needs: tuple[str, ...]) -> Step:
        """Referrals the partner has not answered yet: new in its inbox, or (days_ago beyond 2 business days) late."""
        yield self.weekday_before(self.now - timedelta(days=days_ago))
        candidates = iter(range(1, self.patients + 1))
        for need in needs:
            for number in candidates:
                pid = f"demo-p{number:03d}"
                row = repository.head(self.session, "CarePlan", f"{pid}-plan")
                if row is None or row.content.get("status") != "active" or pid in self._chosen or any(
                        a["detail"]["status"] == "completed" for a in row.content["activity"]
                        if a["detail"]["instantiatesCanonical"][0] == PRACTICE + REFERRAL_PRACTICE[0]):
                    continue
                self._chosen.add(pid)
                agency = NEEDS[need][1]
                consent_id = f"{pid}-consent-{agency.removeprefix('demo-')}"
                if repository.head(self.session, "Consent", consent_id) is None:
                    self.put(_consent(consent_id, pid, f"Organization/{agency}", self.clock))
                coordinator = row.content["author"]["reference"]
                yield from self._referral(pid, f"{pid}-plan", need, coordinator, answer=False)
                break

    def weekday_before(self, moment: datetime) -> datetime:
        """Return the latest weekday office-hours moment at or before moment."""
        candidate = moment
        while candidate.weekday() >= 5 or candidate.hour < 13:
            candidate = datetime.combine(candidate.date() - timedelta(days=1), time(0), tzinfo=timezone.utc
                                         ) + timedelta(hours=20, minutes=self.rng.randint(0, 50))
        return candidate

    def _referral(self, pid: str, plan_id: str, need: str, coordinator: str, *, answer: bool = True) -> Step:
        rng = self.rng
        display, agency, *_ = NEEDS[need]
        owner = f"Organization/{agency}"
        number = next(self._ids)
        self.summary.referrals += 1
        sr_id, task_id = f"demo-sr-{number:03d}", f"demo-referral-{number:03d}"
        sent = self.clock
        coding = {"system": SERVICE_CATEGORY, "code": need, "display": display}
        priority = "urgent" if rng.random() < 0.2 else "routine"
        self.put({
            "resourceType": "ServiceRequest", "id": sr_id, "status": "active", "intent": "order",
            "category": [{"coding": [dict(coding)]}], "code": {"coding": [coding]},
            "priority": priority, "subject": {"reference": f"Patient/{pid}"},
            "authoredOn": format_instant(sent), "requester": {"reference": coordinator},
            "performer": [{"reference": owner}, {"reference": f"HealthcareService/{agency}-service"}],
            "reasonCode": [{"text": NEEDS[need][3]}], "basedOn": [{"reference": f"CarePlan/{plan_id}"}],
            "supportingInfo": [{"reference": f"Consent/{pid}-consent-{agency.removeprefix('demo-')}"}],
        })
        plan = self.current("CarePlan", plan_id)
        activity_id = next(a["id"] for a in plan["activity"]
                           if a["detail"]["instantiatesCanonical"][0] == PRACTICE + REFERRAL_PRACTICE[0])
        task: dict = {
            "resourceType": "Task", "id": task_id, "status": "requested", "intent": "order", "code": TASK_CODE,
            "priority": priority, "description": display, "focus": {"reference": f"ServiceRequest/{sr_id}"},
            "for": {"reference": f"Patient/{pid}"}, "authoredOn": format_instant(sent),
            "requester": {"reference": coordinator}, "owner": {"reference": owner},
            "basedOn": [{"reference": f"CarePlan/{plan_id}"}],
            "instantiatesCanonical": PRACTICE + REFERRAL_PRACTICE[0],
            "extension": [{"url": referral_codes.ACTIVITY_ID_EXTENSION, "valueString": activity_id}],
        }
        self._task(task, "requested", coordinator)
        if not answer:
            return
        roll = rng.random()
        if roll < 0.05:  # the partner never answers: the coordinator withdraws it after two weeks
            yield self.later(sent, 12, 16)
            self._task(task, "cancelled", coordinator, statusReason={"text": "No answer from the agency; "
                                                                            "referring elsewhere"})
            return
        late = rng.random() < 0.22
        yield self.later(sent, 2.5, 6) if late else self.later(sent, 0.05, 1.6)
        if roll < 0.17:
            reason = rng.choice(("no-capacity", "not-eligible", "outside-service-area"))
            self._task(task, "rejected", owner, statusReason=referral_codes.decline_reason(reason))
            return
        self._task(task, "accepted", owner)
        accepted = self.clock
        if rng.random() < 0.35:
            yield self.later(accepted, 0.5, 2)
            code = "waitlisted" if need == "housing" else "trying-to-reach-client"
            self._task(task, "accepted", owner, businessStatus=referral_codes.business_status(code))
        yield self.later(accepted, 1, 4) if rng.random() < 0.7 else self.later(accepted, 5, 12)
        self._task(task, "in-progress", owner, businessStatus=referral_codes.business_status("client-contacted"))
        started = self.clock
        yield self.later(started, 5, 35)
        outcome = rng.random()
        if outcome < 0.64:
            self._task(task, "completed", owner, output=[referral_codes.outcome_output("got-help")])
            if need == "housing":
                self._housing(pid, self.clock, "LA31993-1", "I have housing", suffix=f"after-{task_id}")
        elif outcome < 0.74:
            self._task(task, "completed", owner, output=[referral_codes.outcome_output("could-not-contact")])
        elif outcome < 0.84:
            self._task(task, "completed", owner, output=[referral_codes.outcome_output("no-longer-interested")])
        elif outcome < 0.92:
            self._task(task, "on-hold", owner, statusReason={"text": "Client in hospital"})
            yield self.later(self.clock, 7, 20)
            self._task(task, "in-progress", owner)
            yield self.later(self.clock, 5, 15)
            self._task(task, "completed", owner, output=[referral_codes.outcome_output("got-help")])
        else:
            self._task(task, "failed", owner, statusReason={"text": "Client moved out of the service area"})

    def _task(self, task: dict, status: str, by: str, **changes) -> None:
        if status not in ("rejected", "cancelled", "on-hold", "failed"):
            task.pop("statusReason", None)
        task.update(changes, status=status, lastModified=format_instant(self.clock))
        task["extension"] = [e for e in task["extension"] if e["url"] != CHANGED_BY_EXTENSION] + [
            {"url": CHANGED_BY_EXTENSION, "extension": [{"url": "by", "valueReference": {"reference": by}},
                                                        {"url": "at", "valueInstant": format_instant(self.clock)}]}]
        self.put(task)

    # -- hospitalisations -------------------------------------------------------------------------------------------

    def _hospitalisation(self, number: int) -> Step:
        rng = self.rng
        day = rng.uniform(40, WEEKS * 7 - 2)
        admitted = self.at(self.start + timedelta(days=day), hour=rng.uniform(0, 24))
        enrolled = max(1, int(day / (WEEKS * 7 - 3) * self.patients) - 1)  # patients enrolled by then
        pid = f"demo-p{rng.randint(1, enrolled):03d}"
        yield admitted
        if repository.head(self.session, "Patient", pid) is None:
            return
        encounter_id = f"demo-admission-{number:03d}"
        reason = rng.choice((("35489007", "Depressive disorder"), ("58214004", "Schizophrenia"),
                             ("13746004", "Bipolar disorder"), ("66214007", "Substance abuse")))
        encounter = {
            "resourceType": "Encounter", "id": encounter_id, "status": "in-progress",
            "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
            "subject": {"reference": f"Patient/{pid}"}, "serviceProvider": {"reference": HOSPITAL},
            "period": {"start": format_instant(admitted)},
            "reasonCode": [{"coding": [{"system": SNOMED, "code": reason[0], "display": reason[1]}]}],
        }
        self.put(encounter)
        discharged = self.later(admitted, 2, 16)
        yield discharged
        encounter["status"] = "finished"
        encounter["period"]["end"] = format_instant(discharged)
        encounter["hospitalization"] = {"dischargeDisposition": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": "home"}]}}
        self.put(encounter)
        roll = rng.random()
        if roll > 0.85:
            return  # no follow-up at all
        seen = self.later(discharged, 0.5, 5.5) if roll < 0.75 else self.later(discharged, 8.5, 14)
        yield seen
        self.put({"resourceType": "Encounter", "id": f"demo-follow-up-{number:03d}", "status": "finished",
                  "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
                  "type": [{"text": "Post-discharge follow-up visit"}],
                  "subject": {"reference": f"Patient/{pid}"}, "serviceProvider": {"reference": HEALTH_LINK},
                  "period": {"start": format_instant(seen), "end": format_instant(seen + timedelta(minutes=45))}})


NOTES = ("Met in person; going well", "Phone check-in; no new concerns", "Reviewed goals together",
         "Missed the appointment, reached by phone the next day", "Talked through the next steps",
         "Met with the trusted support person present", "Checked in after the partner's visit",
         "Adjusted the plan with the patient")


def _member(role: str, reference: str) -> dict:
    return {"role": [{"coding": [{"system": ROLE_SYSTEM, "code": role}]}], "member": {"reference": reference}}


def _consent(consent_id: str, pid: str, organization: str, when: datetime) -> dict:
    return {"resourceType": "Consent", "id": consent_id, "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{pid}"}, "dateTime": format_instant(when),
            "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]},
            "provision": {"type": "permit", "actor": [{
                "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                     "code": "IRCP"}]},
                "reference": {"reference": organization}}]}}


def _weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _ in choices], [w for _, w in choices])[0]


def _weighted_triple(rng: random.Random, choices: tuple[tuple[str, str, int], ...]) -> tuple[str, str, int]:
    return rng.choices(choices, [w for *_, w in choices])[0]
