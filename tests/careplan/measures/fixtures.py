"""Build the measure fixtures: resources written through the store with back-dated version times, reminder rows.

Everything goes through careplan.store.service (so the profile, the referral state machine and the consent rule
apply) with ``now`` set, as if the coordinator and the partner had done each step on that day. The scenarios are
hand-computed in tests/careplan/measures/test_measures.py.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from careplan.db import Database
from careplan.reminders.models import Reminder
from careplan.store import service
from tests import factories

BASE = "https://careplan.example.org/fhir"
TIER_SYSTEM = f"{BASE}/CodeSystem/practice-tier"
CATEGORY = {"coding": [{"system": f"{BASE}/CodeSystem/care-plan-category", "code": "coordinated-care-plan"}]}
PROFILE = f"{BASE}/StructureDefinition/coordinated-care-plan"
OUTCOME_SYSTEM = f"{BASE}/CodeSystem/referral-outcome"
ROLE_SYSTEM = f"{BASE}/CodeSystem/care-team-role"


def at(text: str) -> datetime:
    """Return an aware UTC datetime from 'YYYY-MM-DD' or 'YYYY-MM-DDTHH:MM'."""
    if len(text) == 10:
        text += "T12:00"
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


class Builder:
    """Write fixture resources at chosen moments."""

    def __init__(self, db: Database):
        self.db = db

    def put(self, resource: dict, when: str | datetime) -> dict:
        """Create or revise resource (it has an id) as of when."""
        moment = at(when) if isinstance(when, str) else when
        with self.db.writing() as session:
            return service.update_in(session, resource=resource, resource_id=resource["id"], now=moment).stored.content

    # -- people and the catalogue ---------------------------------------------------------------------------------

    def patient(self, patient_id: str, *, gender: str = "female", birth_date: str = "1990-06-15",
                language: str | None = "en-CA", deceased: str | None = None, extensions: list[dict] | None = None,
                when: str = "2026-01-01") -> dict:
        resource: dict = {"resourceType": "Patient", "id": patient_id, "active": True,
                          "name": [{"family": f"Fixture-{patient_id}"}], "gender": gender, "birthDate": birth_date}
        if language:
            resource["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]},
                                          "preferred": True}]
        if deceased:
            resource["deceasedDateTime"] = deceased
        if extensions:
            resource["extension"] = extensions
        return self.put(resource, when)

    def practice(self, name: str, tier: str | None) -> dict:
        extensions = [{"url": f"{BASE}/StructureDefinition/practice-follow-up-cadence",
                       "valueTiming": {"repeat": {"frequency": 1, "period": 14, "periodUnit": "d"}}}]
        if tier:
            extensions.insert(0, {"url": f"{BASE}/StructureDefinition/practice-tier",
                                  "valueCoding": {"system": TIER_SYSTEM, "code": tier}})
        return self.put({"resourceType": "PlanDefinition", "id": name, "url": f"{BASE}/PlanDefinition/{name}",
                         "name": name.replace("-", "_"), "title": name, "status": "active",
                         "extension": extensions}, "2026-01-01")

    def episode(self, patient_id: str, identified_on: str, *, status: str = "active") -> dict:
        details = [{"url": "identifiedOn", "valueDate": identified_on},
                   {"url": "identifiedBy", "valueString": "ED social worker"}]
        return self.put({
            "resourceType": "EpisodeOfCare", "id": f"eoc-{patient_id}", "status": status,
            "type": [{"coding": [{"system": f"{BASE}/CodeSystem/episode-of-care-type", "code": "coordinated-care"}]}],
            "patient": {"reference": f"Patient/{patient_id}"}, "period": {"start": identified_on},
            "extension": [{"url": f"{BASE}/StructureDefinition/coordinated-care-identification",
                           "extension": details}]}, identified_on)

    # -- care plans -------------------------------------------------------------------------------------------------

    def team(self, patient_id: str, members: int, when: str, *, team_id: str | None = None) -> dict:
        participants = [{"role": [{"coding": [{"system": ROLE_SYSTEM, "code": "patient"}]}],
                         "member": {"reference": f"Patient/{patient_id}"}}]
        participants += [{"role": [{"coding": [{"system": ROLE_SYSTEM, "code": "coordinator"}]}],
                          "member": {"reference": f"Practitioner/coordinator-{n}"}} for n in range(1, members)]
        return self.put({"resourceType": "CareTeam", "id": team_id or f"team-{patient_id}", "status": "active",
                         "subject": {"reference": f"Patient/{patient_id}"}, "participant": participants}, when)

    def goal(self, patient_id: str, when: str, *, goal_id: str | None = None) -> dict:
        return self.put({"resourceType": "Goal", "id": goal_id or f"goal-{patient_id}", "lifecycleStatus": "active",
                         "description": {"text": "Have my own place"},
                         "subject": {"reference": f"Patient/{patient_id}"}}, when)

    def concern(self, patient_id: str, when: str) -> dict:
        return self.put({"resourceType": "Condition", "id": f"concern-{patient_id}",
                         "code": {"text": "No stable housing"}, "subject": {"reference": f"Patient/{patient_id}"}},
                        when)

    def plan(self, patient_id: str, when: str, *, status: str = "active", goals: bool = True,
             activities: list[tuple[str, str]] | None = None, plan_id: str | None = None) -> dict:
        """Write a coordinated CarePlan version; activities are (practice name, detail status)."""
        plan: dict = {
            "resourceType": "CarePlan", "id": plan_id or f"plan-{patient_id}", "meta": {"profile": [PROFILE]},
            "status": status, "intent": "plan", "category": [CATEGORY], "title": "Housing and recovery",
            "subject": {"reference": f"Patient/{patient_id}"}, "author": {"reference": "Practitioner/coordinator-1"},
            "careTeam": [{"reference": f"CareTeam/team-{patient_id}"}],
            "addresses": [{"reference": f"Condition/concern-{patient_id}"}],
            "activity": [{"id": f"act-{index}", "detail": {
                "status": detail_status, "instantiatesCanonical": [f"{BASE}/PlanDefinition/{practice}"],
                "scheduledTiming": {"repeat": {"frequency": 1, "period": 14, "periodUnit": "d"}},
                "performer": [{"reference": "Practitioner/coordinator-1"}]}}
                for index, (practice, detail_status) in enumerate(activities or [("peer-support", "in-progress")])],
        }
        if goals:
            plan["goal"] = [{"reference": f"Goal/goal-{patient_id}"}]
        return self.put(plan, when)

    def coordinated(self, patient_id: str, *, team_members: int = 2, when: str, status: str = "active",
                    goals: bool = True, activities: list[tuple[str, str]] | None = None,
                    plan_id: str | None = None) -> dict:
        """Write the team, goal, concern and plan of a patient at when."""
        self.team(patient_id, team_members, when)
        self.goal(patient_id, when)
        self.concern(patient_id, when)
        return self.plan(patient_id, when, status=status, goals=goals, activities=activities, plan_id=plan_id)

    # -- referrals ----------------------------------------------------------------------------------------------------

    def partner(self, organization_id: str = "harbour", tz: str = "America/Toronto") -> dict:
        return self.put(factories.partner_organization(organization_id, "Harbour Shelter", timezone=tz), "2026-01-01")

    def referral(self, task_id: str, patient_id: str, steps: list[tuple[str, str, dict | None]], *,
                 owner: str = "harbour", intent: str = "order") -> list[dict]:
        """Write a referral Task through its statuses: steps are (when, status, extra elements)."""
        consent_id = f"consent-{patient_id}-{owner}"
        self.put(factories.disclosure_consent(consent_id, patient_id, f"Organization/{owner}"), "2026-01-01")
        self.put({"resourceType": "ServiceRequest", "id": f"sr-{task_id}", "status": "active", "intent": "order",
                  "code": {"text": "Housing"}, "subject": {"reference": f"Patient/{patient_id}"},
                  "performer": [{"reference": f"Organization/{owner}"}]}, steps[0][0])
        written = []
        task: dict = {"resourceType": "Task", "id": task_id, "intent": intent,
                      "focus": {"reference": f"ServiceRequest/sr-{task_id}"},
                      "for": {"reference": f"Patient/{patient_id}"},
                      "owner": {"reference": f"Organization/{owner}"},
                      "requester": {"reference": "Practitioner/coordinator-1"}, "authoredOn": steps[0][0] + ":00Z"}
        for when, status, extra in steps:
            task = {**task, "status": status, **(extra or {})}
            written.append(self.put(task, when))
        return written

    # -- reminders, encounters, messages -----------------------------------------------------------------------------

    def reminder(self, key: str, *, due: str, done: str | None, tier: str | None, patient: str | None = None,
                 kind: str = "follow-up", state: str = "sent") -> None:
        with self.db.writing() as session:
            session.add(Reminder(key=key, kind=kind, source=f"CarePlan/fixture#{key}", recipient="Practitioner/c1",
                                 patient=f"Patient/{patient}" if patient else None, tier=tier, due_at=at(due),
                                 state=state, done_at=at(done) if done else None, payload={}))

    def encounter(self, encounter_id: str, patient_id: str, *, klass: str, start: str, end: str | None = None,
                  status: str = "finished", reason: tuple[str, str] | None = None,
                  diagnosis: str | None = None) -> dict:
        resource: dict = {"resourceType": "Encounter", "id": encounter_id, "status": status,
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
                          "subject": {"reference": f"Patient/{patient_id}"}, "period": {"start": start + ":00Z"}}
        if end:
            resource["period"]["end"] = end + ":00Z"
        if reason:
            resource["reasonCode"] = [{"coding": [{"system": reason[0], "code": reason[1]}]}]
        if diagnosis:
            resource["diagnosis"] = [{"condition": {"reference": f"Condition/{diagnosis}"}}]
        return self.put(resource, end or start)

    def condition(self, condition_id: str, patient_id: str, system: str, code: str) -> dict:
        return self.put({"resourceType": "Condition", "id": condition_id,
                         "code": {"coding": [{"system": system, "code": code}]},
                         "subject": {"reference": f"Patient/{patient_id}"}}, "2026-01-01")

    def contact(self, message_id: str, patient_id: str, sent: str) -> dict:
        return self.put({"resourceType": "Communication", "id": message_id, "status": "completed",
                         "subject": {"reference": f"Patient/{patient_id}"},
                         "recipient": [{"reference": f"Patient/{patient_id}"}],
                         "sender": {"reference": "Practitioner/coordinator-1"}, "sent": sent + ":00Z",
                         "payload": [{"contentString": "Checked in after discharge"}]}, sent)


def day(text: str) -> date:
    """Return the date of 'YYYY-MM-DD'."""
    return date.fromisoformat(text)
